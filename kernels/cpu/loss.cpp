// log-softmax and negative log-likelihood, forward and backward.
#include <cmath>

#include "kernels/cpu/eigen_types.h"
#include "normlab/core/kernel/stubs.h"
#include "normlab/core/error.h"

namespace nl::cpu {

void log_softmax_fwd(int64_t M, int64_t C, const float* x, float* y) {
  for (int64_t i = 0; i < M; ++i) {
    const float* xr = x + i * C;
    float mx = xr[0];
    for (int64_t c = 1; c < C; ++c) mx = std::max(mx, xr[c]);
    double s = 0.0;  // shifted by the max, so exp never overflows
    for (int64_t c = 0; c < C; ++c) s += std::exp(static_cast<double>(xr[c] - mx));
    const float lse = mx + static_cast<float>(std::log(s));
    for (int64_t c = 0; c < C; ++c) y[i * C + c] = xr[c] - lse;
  }
}

void log_softmax_bwd(int64_t M, int64_t C, const float* y, const float* dy, float* dx) {
  for (int64_t i = 0; i < M; ++i) {
    double s = 0.0;
    for (int64_t c = 0; c < C; ++c) s += dy[i * C + c];
    for (int64_t c = 0; c < C; ++c)
      dx[i * C + c] = dy[i * C + c] - std::exp(y[i * C + c]) * static_cast<float>(s);
  }
}

void nll_loss_fwd(int64_t M, int64_t C, const float* logp, const int32_t* target, float* loss) {
  double s = 0.0;
  for (int64_t i = 0; i < M; ++i) {
    NL_CHECK(target[i] >= 0 && target[i] < C, "nll_loss: target[", i, "] = ", target[i],
             " is not a class index in [0, ", C, ")");
    s += logp[i * C + target[i]];
  }
  loss[0] = static_cast<float>(-s / static_cast<double>(M));
}

void nll_loss_bwd(int64_t M, int64_t C, const int32_t* target, const float* dloss, float* dlogp) {
  MapR(dlogp, M, C).setZero();
  const float g = -dloss[0] / static_cast<float>(M);
  for (int64_t i = 0; i < M; ++i)
    if (target[i] >= 0 && target[i] < C) dlogp[i * C + target[i]] = g;  // forward refused the rest
}

// Registration: a kernel whose signature drifts from its stub fails to compile here.
void register_loss_kernels() {
  log_softmax_fwd_stub.set(DeviceType::CPU, &log_softmax_fwd);
  log_softmax_bwd_stub.set(DeviceType::CPU, &log_softmax_bwd);
  nll_loss_fwd_stub.set(DeviceType::CPU, &nll_loss_fwd);
  nll_loss_bwd_stub.set(DeviceType::CPU, &nll_loss_bwd);
}

}  // namespace nl::cpu
