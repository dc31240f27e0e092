// add, mul, sum, relu and dropout, forward and backward.
#include <algorithm>

#include "kernels/cpu/eigen_types.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cpu/philox_cpu.h"
#include "normlab/core/kernel/stubs.h"

namespace nl::cpu {

// Elementwise ops are memory-bound; pieces of 16K elements (64 KiB per operand) are large enough
// to amortise the fork and small enough to split a 128-image activation across threads.
constexpr int64_t kGrain = 1 << 14;

void add_fwd(int64_t n, const float* a, const float* b, float* y) {
  parallel_for(n, kGrain, [&](int64_t i0, int64_t i1) {
    VecMap(y + i0, i1 - i0) = CVecMap(a + i0, i1 - i0) + CVecMap(b + i0, i1 - i0);
  });
}

void mul_fwd(int64_t n, const float* a, const float* b, float* y) {
  parallel_for(n, kGrain, [&](int64_t i0, int64_t i1) {
    VecMap(y + i0, i1 - i0) = CVecMap(a + i0, i1 - i0).cwiseProduct(CVecMap(b + i0, i1 - i0));
  });
}

void sum_fwd(int64_t n, const float* x, float* y) {
  // Accumulate in double: losses and gradient checks sum many terms of mixed sign.
  y[0] = static_cast<float>(CVecMap(x, n).cast<double>().sum());
}

void sum_bwd(int64_t n, const float* dy, float* dx) { VecMap(dx, n).setConstant(dy[0]); }

void nonfinite_count(const NonfiniteParams& p, int32_t* counts) {
  for (int t = 0; t < p.count; ++t) {
    // x - x is 0 for finite x and NaN for NaN and +-Inf: one compare per element, vectorised.
    counts[t] =
        static_cast<int32_t>((CVecMap(p.x[t], p.n[t]) - CVecMap(p.x[t], p.n[t])).array().isNaN().count());
  }
}

void relu_fwd(int64_t n, const float* x, float* y) {
  parallel_for(n, kGrain, [&](int64_t i0, int64_t i1) {
    VecMap(y + i0, i1 - i0) = CVecMap(x + i0, i1 - i0).cwiseMax(0.0f);
  });
}

void relu_bwd(int64_t n, const float* y, const float* dy, float* dx) {
  // y > 0 exactly where x > 0, so the output is as good as the input for the mask.
  parallel_for(n, kGrain, [&](int64_t i0, int64_t i1) {
    VecMap(dx + i0, i1 - i0) =
        (CVecMap(y + i0, i1 - i0).array() > 0.0f).select(CVecMap(dy + i0, i1 - i0), 0.0f);
  });
}

void dropout_fwd(const DropoutParams& p, const float* x, float* y) {
  const float scale = 1.0f / (1.0f - p.p);
  const uint32_t threshold = philox_keep_threshold(p.p);
  parallel_for(p.n, kGrain, [&](int64_t i0, int64_t i1) {
    auto* keep = reinterpret_cast<uint8_t*>(thread_scratch(0, static_cast<size_t>(kGrain / 4)));
    dropout_keep_bytes(p.seed, p.offset, threshold, i0, i1 - i0, keep);
    for (int64_t i = i0; i < i1; ++i) y[i] = keep[i - i0] ? x[i] * scale : 0.0f;
  });
}

void dropout_bwd(const DropoutParams& p, const float* dy, float* dx) {
  // The same (seed, offset, i) draws as forward reproduce the mask bit for bit.
  dropout_fwd(p, dy, dx);
}

// Registration: a kernel whose signature drifts from its stub fails to compile here.
void register_elementwise_kernels() {
  add_fwd_stub.set(DeviceType::CPU, &add_fwd);
  mul_fwd_stub.set(DeviceType::CPU, &mul_fwd);
  sum_fwd_stub.set(DeviceType::CPU, &sum_fwd);
  sum_bwd_stub.set(DeviceType::CPU, &sum_bwd);
  nonfinite_count_stub.set(DeviceType::CPU, &nonfinite_count);
  relu_fwd_stub.set(DeviceType::CPU, &relu_fwd);
  relu_bwd_stub.set(DeviceType::CPU, &relu_bwd);
  dropout_fwd_stub.set(DeviceType::CPU, &dropout_fwd);
  dropout_bwd_stub.set(DeviceType::CPU, &dropout_bwd);
}

}  // namespace nl::cpu
