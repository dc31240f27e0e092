// max-pool and global average pool on the GPU, forward and backward.
#include "kernels/cuda/cuda_common.h"
#include "kernels/cuda/reduce.cuh"
#include "normlab/core/kernel/stubs.h"

namespace nl::cuda {

// ---------------------------------------------------------------------------------- kernels

// One thread per output; the first maximum in row-major window order wins, as on the CPU.
__global__ void max_pool2d_fwd_kernel(Pool2dParams p, const float* x, float* y, int32_t* argmax) {
  const int64_t total = p.N * p.C * p.P * p.Q;
  for (int64_t o = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; o < total;
       o += int64_t(gridDim.x) * blockDim.x) {
    const int64_t plane = o / (p.P * p.Q), oh = o / p.Q % p.P, ow = o % p.Q;
    const float* xp = x + plane * p.H * p.W;
    int64_t best_i = oh * p.stride * p.W + ow * p.stride;
    float best = xp[best_i];
    for (int64_t kh = 0; kh < p.kernel; ++kh)
      for (int64_t kw = 0; kw < p.kernel; ++kw) {
        const int64_t i = (oh * p.stride + kh) * p.W + ow * p.stride + kw;
        if (xp[i] > best) best = xp[i], best_i = i;
      }
    y[o] = best;
    argmax[o] = static_cast<int32_t>(best_i);
  }
}

// One thread per input element gathers from the windows that cover it: no atomics, so the
// result does not depend on thread order even when windows overlap.
__global__ void max_pool2d_bwd_kernel(Pool2dParams p, const float* dy, const int32_t* argmax, float* dx) {
  const int64_t total = p.N * p.C * p.H * p.W;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t plane = i / (p.H * p.W), h = i / p.W % p.H, w = i % p.W, local = h * p.W + w;
    // Output rows whose window [oh * stride, oh * stride + kernel) contains h.
    // (std::min is host-only under nvcc, hence the conditionals.)
    const int64_t oh_lo = h >= p.kernel ? (h - p.kernel) / p.stride + 1 : 0;
    const int64_t oh_hi = h / p.stride < p.P - 1 ? h / p.stride : p.P - 1;
    const int64_t ow_lo = w >= p.kernel ? (w - p.kernel) / p.stride + 1 : 0;
    const int64_t ow_hi = w / p.stride < p.Q - 1 ? w / p.stride : p.Q - 1;
    float acc = 0.0f;
    for (int64_t oh = oh_lo; oh <= oh_hi; ++oh)
      for (int64_t ow = ow_lo; ow <= ow_hi; ++ow) {
        const int64_t o = plane * p.P * p.Q + oh * p.Q + ow;
        if (argmax[o] == local) acc += dy[o];
      }
    dx[i] = acc;
  }
}

// One block per (n, c) plane.
__global__ void global_avg_pool_fwd_kernel(int64_t HxW, const float* x, float* y) {
  NL_DYN_SHARED(float, scratch);
  const float* xp = x + blockIdx.x * HxW;
  float s = 0.0f;
  for (int64_t i = threadIdx.x; i < HxW; i += blockDim.x) s += xp[i];
  s = block_sum(s, scratch);
  if (threadIdx.x == 0) y[blockIdx.x] = s / float(HxW);
}

__global__ void global_avg_pool_bwd_kernel(int64_t NC, int64_t HxW, const float* dy, float* dx) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < NC * HxW;
       i += int64_t(gridDim.x) * blockDim.x)
    dx[i] = dy[i / HxW] / float(HxW);
}

// ---------------------------------------------------------------------------------- launchers

namespace {
constexpr int kThreads = 256;
}  // namespace

void max_pool2d_fwd(const Pool2dParams& p, const float* x, float* y, int32_t* argmax) {
  NL_MODEL_OP("max_pool2d", p.N * p.C * p.H * p.W, 4 * p.N * p.C * (p.H * p.W + 2 * p.P * p.Q));
  NL_LAUNCH(max_pool2d_fwd_kernel, grid_for(p.N * p.C * p.P * p.Q), kThreads, 0, p, x, y, argmax);
}
void max_pool2d_bwd(const Pool2dParams& p, const float* dy, const int32_t* argmax, float* dx) {
  NL_MODEL_OP("max_pool2d_bwd", 0, 4 * p.N * p.C * (p.H * p.W + 2 * p.P * p.Q));
  NL_LAUNCH(max_pool2d_bwd_kernel, grid_for(p.N * p.C * p.H * p.W), kThreads, 0, p, dy, argmax, dx);
}
void global_avg_pool_fwd(int64_t NC, int64_t HxW, const float* x, float* y) {
  NL_MODEL_OP("global_avg_pool", NC * HxW, 4 * NC * (HxW + 1));
  if (NC > 0) NL_LAUNCH(global_avg_pool_fwd_kernel, unsigned(NC), 64, 32 * sizeof(float), HxW, x, y);
}
void global_avg_pool_bwd(int64_t NC, int64_t HxW, const float* dy, float* dx) {
  NL_MODEL_OP("global_avg_pool_bwd", 0, 4 * NC * (HxW + 1));
  NL_LAUNCH(global_avg_pool_bwd_kernel, grid_for(NC * HxW), kThreads, 0, NC, HxW, dy, dx);
}

// ---------------------------------------------------------------------------------- registration

void register_pooling_kernels() {
  max_pool2d_fwd_stub.set(DeviceType::CUDA, &max_pool2d_fwd);
  max_pool2d_bwd_stub.set(DeviceType::CUDA, &max_pool2d_bwd);
  global_avg_pool_fwd_stub.set(DeviceType::CUDA, &global_avg_pool_fwd);
  global_avg_pool_bwd_stub.set(DeviceType::CUDA, &global_avg_pool_bwd);
}

}  // namespace nl::cuda
