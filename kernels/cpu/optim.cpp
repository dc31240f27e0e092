// Optimizer steps with torch.optim's semantics, updating parameters and state in place.
#include <cmath>

#include "normlab/core/kernel/stubs.h"

namespace nl::cpu {

// torch.optim.SGD:
//   d = grad + weight_decay * param
//   buf = d on the first step, else momentum * buf + (1 - dampening) * d
//   d = nesterov ? d + momentum * buf : buf
//   param -= lr * d
void sgd_step(const SgdParams& p, float* param, const float* grad, float* buf) {
  for (int64_t i = 0; i < p.n; ++i) {
    float d = grad[i] + p.weight_decay * param[i];
    if (p.momentum != 0.0f) {
      buf[i] = p.first_step ? d : p.momentum * buf[i] + (1.0f - p.dampening) * d;
      d = p.nesterov ? d + p.momentum * buf[i] : buf[i];
    }
    param[i] -= p.lr * d;
  }
}

// torch.optim.Adam / AdamW:
//   Adam:  g = grad + wd * param           AdamW: param *= 1 - lr * wd, g = grad
//   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//   param -= lr * (m / bc1) / (sqrt(v / bc2) + eps)
void adam_step(const AdamParams& p, float* param, const float* grad, float* m, float* v) {
  const float step = p.lr / p.bias_correction1;
  const float sqrt_bc2 = std::sqrt(p.bias_correction2);
  for (int64_t i = 0; i < p.n; ++i) {
    float g = grad[i];
    if (p.decoupled) {
      param[i] *= 1.0f - p.lr * p.weight_decay;
    } else {
      g += p.weight_decay * param[i];
    }
    m[i] = p.beta1 * m[i] + (1.0f - p.beta1) * g;
    v[i] = p.beta2 * v[i] + (1.0f - p.beta2) * g * g;
    param[i] -= step * m[i] / (std::sqrt(v[i]) / sqrt_bc2 + p.eps);
  }
}

// Registration: a kernel whose signature drifts from its stub fails to compile here.
void register_optim_kernels() {
  sgd_step_stub.set(DeviceType::CPU, &sgd_step);
  adam_step_stub.set(DeviceType::CPU, &adam_step);
}

}  // namespace nl::cpu
