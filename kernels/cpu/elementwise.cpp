// add, mul, sum, relu and dropout, forward and backward.
#include "kernels/cpu/eigen_types.h"
#include "kernels/philox.h"
#include "kernels/stubs.h"

namespace nl::cpu {

void add_fwd(int64_t n, const float* a, const float* b, float* y) {
  VecMap(y, n) = CVecMap(a, n) + CVecMap(b, n);
}

void mul_fwd(int64_t n, const float* a, const float* b, float* y) {
  VecMap(y, n) = CVecMap(a, n).cwiseProduct(CVecMap(b, n));
}

void sum_fwd(int64_t n, const float* x, float* y) {
  // Accumulate in double: losses and gradient checks sum many terms of mixed sign.
  y[0] = static_cast<float>(CVecMap(x, n).cast<double>().sum());
}

void sum_bwd(int64_t n, const float* dy, float* dx) { VecMap(dx, n).setConstant(dy[0]); }

void relu_fwd(int64_t n, const float* x, float* y) { VecMap(y, n) = CVecMap(x, n).cwiseMax(0.0f); }

void relu_bwd(int64_t n, const float* y, const float* dy, float* dx) {
  // y > 0 exactly where x > 0, so the output is as good as the input for the mask.
  VecMap(dx, n) = (CVecMap(y, n).array() > 0.0f).select(CVecMap(dy, n), 0.0f);
}

void dropout_fwd(const DropoutParams& p, const float* x, float* y) {
  const float scale = 1.0f / (1.0f - p.p);
  for (int64_t i = 0; i < p.n; ++i) {
    bool keep = philox_uniform(p.seed, p.offset, static_cast<uint64_t>(i)) >= p.p;
    y[i] = keep ? x[i] * scale : 0.0f;
  }
}

void dropout_bwd(const DropoutParams& p, const float* dy, float* dx) {
  // The same (seed, offset, i) draws as forward reproduce the mask bit for bit.
  dropout_fwd(p, dy, dx);
}

}  // namespace nl::cpu
