// One SGD step with PyTorch's semantics (torch.optim.SGD):
//   d = grad + weight_decay * param
//   buf = d on the first step, else momentum * buf + (1 - dampening) * d
//   d = nesterov ? d + momentum * buf : buf
//   param -= lr * d
#include "kernels/stubs.h"

namespace nl::cpu {

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

}  // namespace nl::cpu
