// Optimizer steps on the GPU (same formulas as kernels/cpu/optim.cpp).
#include "kernels/cuda/cuda_common.h"
#include "normlab/core/kernel/stubs.h"

namespace nl::cuda {

__global__ void sgd_step_kernel(SgdParams p, float* param, const float* grad, float* buf) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < p.n;
       i += int64_t(gridDim.x) * blockDim.x) {
    float d = grad[i] + p.weight_decay * param[i];
    if (p.momentum != 0.0f) {
      buf[i] = p.first_step ? d : p.momentum * buf[i] + (1.0f - p.dampening) * d;
      d = p.nesterov ? d + p.momentum * buf[i] : buf[i];
    }
    param[i] -= p.lr * d;
  }
}

__global__ void adam_step_kernel(AdamParams p, float* param, const float* grad, float* m, float* v) {
  const float step = p.lr / p.bias_correction1, sqrt_bc2 = sqrtf(p.bias_correction2);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < p.n;
       i += int64_t(gridDim.x) * blockDim.x) {
    float g = grad[i];
    if (p.decoupled)
      param[i] *= 1.0f - p.lr * p.weight_decay;
    else
      g += p.weight_decay * param[i];
    m[i] = p.beta1 * m[i] + (1.0f - p.beta1) * g;
    v[i] = p.beta2 * v[i] + (1.0f - p.beta2) * g * g;
    param[i] -= step * m[i] / (sqrtf(v[i]) / sqrt_bc2 + p.eps);
  }
}

void sgd_step(const SgdParams& p, float* param, const float* grad, float* buf) {
  NL_MODEL_OP("sgd_step", 5 * p.n, 20 * p.n);
  if (p.n > 0) NL_LAUNCH(sgd_step_kernel, grid_for(p.n, 256, 1024), 256, 0, p, param, grad, buf);
}
void adam_step(const AdamParams& p, float* param, const float* grad, float* m, float* v) {
  NL_MODEL_OP("adam_step", 12 * p.n, 28 * p.n);
  if (p.n > 0) NL_LAUNCH(adam_step_kernel, grid_for(p.n, 256, 1024), 256, 0, p, param, grad, m, v);
}

void register_optim_kernels() {
  sgd_step_stub.set(DeviceType::CUDA, &sgd_step);
  adam_step_stub.set(DeviceType::CUDA, &adam_step);
}

}  // namespace nl::cuda
