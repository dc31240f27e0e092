// log-softmax and NLL loss on the GPU, forward and backward.
#include "kernels/cuda/cuda_common.h"
#include "kernels/cuda/reduce.cuh"
#include "normlab/core/kernel/stubs.h"

namespace nl::cuda {

// ---------------------------------------------------------------------------------- kernels

// One warp per row: the classifier rows are short (10 classes here).
__global__ void log_softmax_fwd_kernel(int64_t M, int64_t C, const float* x, float* y) {
  const int64_t row = blockIdx.x * int64_t(blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= M) return;  // whole warps leave together: M rows map to whole warps
  const float* xr = x + row * C;
  float mx = -INFINITY;
  for (int64_t c = lane; c < C; c += 32) mx = fmaxf(mx, xr[c]);
  for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
  float s = 0.0f;
  for (int64_t c = lane; c < C; c += 32) s += expf(xr[c] - mx);
  s = warp_sum(s);
  const float lse = mx + logf(s);
  for (int64_t c = lane; c < C; c += 32) y[row * C + c] = xr[c] - lse;
}

__global__ void log_softmax_bwd_kernel(int64_t M, int64_t C, const float* y, const float* dy, float* dx) {
  const int64_t row = blockIdx.x * int64_t(blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= M) return;
  float s = 0.0f;
  for (int64_t c = lane; c < C; c += 32) s += dy[row * C + c];
  s = warp_sum(s);
  for (int64_t c = lane; c < C; c += 32) dx[row * C + c] = dy[row * C + c] - expf(y[row * C + c]) * s;
}

// A bad target makes the loss NaN and is recorded in *bad as (index << 32 | value): atomicMin
// keeps the first bad index whichever thread finds it, so the report is deterministic.
__global__ void nll_loss_fwd_kernel(int64_t M, int64_t C, const float* logp, const int32_t* target,
                                    float* loss, unsigned long long* bad) {
  NL_DYN_SHARED(float, scratch);
  float s = 0.0f;
  for (int64_t i = threadIdx.x; i < M; i += blockDim.x) {
    const int32_t t = target[i];
    if (t >= 0 && t < C) {
      s += logp[i * C + t];
    } else {
      s = NAN;
      atomicMin(bad, (static_cast<unsigned long long>(i) << 32) | static_cast<uint32_t>(t));
    }
  }
  s = block_sum(s, scratch);
  if (threadIdx.x == 0) loss[0] = -s / float(M);
}

__global__ void nll_loss_bwd_kernel(int64_t M, int64_t C, const int32_t* target, const float* dloss,
                                    float* dlogp) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < M * C;
       i += int64_t(gridDim.x) * blockDim.x)
    dlogp[i] = (i % C == target[i / C]) ? -dloss[0] / float(M) : 0.0f;  // a bad target matches no column
}

// ---------------------------------------------------------------------------------- launchers

namespace {
constexpr int kRowsPerBlock = 8;  // warps per block
}

void log_softmax_fwd(int64_t M, int64_t C, const float* x, float* y) {
  NL_MODEL_OP("log_softmax", 4 * M * C, 8 * M * C);
  if (M > 0)
    NL_LAUNCH(log_softmax_fwd_kernel, unsigned(ceil_div(M, kRowsPerBlock)), 32 * kRowsPerBlock, 0, M, C, x,
              y);
}
void log_softmax_bwd(int64_t M, int64_t C, const float* y, const float* dy, float* dx) {
  NL_MODEL_OP("log_softmax_bwd", 4 * M * C, 12 * M * C);
  if (M > 0)
    NL_LAUNCH(log_softmax_bwd_kernel, unsigned(ceil_div(M, kRowsPerBlock)), 32 * kRowsPerBlock, 0, M, C, y,
              dy, dx);
}
void nll_loss_fwd(int64_t M, int64_t C, const float* logp, const int32_t* target, float* loss) {
  NL_MODEL_OP("nll_loss", M, 8 * M + 4);
  NL_LAUNCH(nll_loss_fwd_kernel, 1, 256, 32 * sizeof(float), M, C, logp, target, loss,
            class_index_check_slot("nll_loss", C));
}
void nll_loss_bwd(int64_t M, int64_t C, const int32_t* target, const float* dloss, float* dlogp) {
  NL_MODEL_OP("nll_loss_bwd", M, 4 * M * C + 4 * M + 4);
  NL_LAUNCH(nll_loss_bwd_kernel, grid_for(M * C), 256, 0, M, C, target, dloss, dlogp);
}

// ---------------------------------------------------------------------------------- registration

void register_loss_kernels() {
  log_softmax_fwd_stub.set(DeviceType::CUDA, &log_softmax_fwd);
  log_softmax_bwd_stub.set(DeviceType::CUDA, &log_softmax_bwd);
  nll_loss_fwd_stub.set(DeviceType::CUDA, &nll_loss_fwd);
  nll_loss_bwd_stub.set(DeviceType::CUDA, &nll_loss_bwd);
}

}  // namespace nl::cuda
