// add, mul, sum, relu and dropout on the GPU, forward and backward.
#include "kernels/cuda/cuda_common.h"
#include "kernels/cuda/reduce.cuh"
#include "normlab/core/kernel/philox.h"
#include "normlab/core/kernel/stubs.h"

namespace nl::cuda {

// ---------------------------------------------------------------------------------- kernels

#define NL_GRID_STRIDE(i, n)                                                \
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < (n); \
       i += int64_t(gridDim.x) * blockDim.x)

__global__ void add_kernel(int64_t n, const float* a, const float* b, float* y) {
  NL_GRID_STRIDE(i, n) y[i] = a[i] + b[i];
}
__global__ void mul_kernel(int64_t n, const float* a, const float* b, float* y) {
  NL_GRID_STRIDE(i, n) y[i] = a[i] * b[i];
}
__global__ void relu_fwd_kernel(int64_t n, const float* x, float* y) {
  NL_GRID_STRIDE(i, n) y[i] = fmaxf(x[i], 0.0f);
}
__global__ void relu_bwd_kernel(int64_t n, const float* y, const float* dy, float* dx) {
  NL_GRID_STRIDE(i, n) dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}
__global__ void broadcast_kernel(int64_t n, const float* scalar, float* dx) {
  NL_GRID_STRIDE(i, n) dx[i] = scalar[0];
}

// One block sums everything: a fixed thread-to-element mapping keeps the result deterministic.
__global__ void sum_kernel(int64_t n, const float* x, float* y) {
  NL_DYN_SHARED(float, scratch);
  float acc = 0.0f;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) acc += x[i];
  acc = block_sum(acc, scratch);
  if (threadIdx.x == 0) y[0] = acc;
}

// One block per tensor (blockIdx.x), a fixed mapping, no atomics: counts[t] is written once,
// whole. The guard checks parameters and gradients (thousands to millions of elements), where
// one block per tensor over 30-60 tensors is plenty.
// Dynamic shared memory (256 ints), not a static __shared__ array: cuemu gives each block its own
// poisoned buffer only for the dynamic one (a static array is one function-static copy that the
// race check rightly saw two blocks write).
__global__ void nonfinite_count_kernel(NonfiniteParams p, int32_t* counts) {
  NL_DYN_SHARED(int32_t, part);
  const int t = blockIdx.x;
  const float* x = p.x[t];
  int32_t c = 0;
  for (int64_t i = threadIdx.x; i < p.n[t]; i += blockDim.x) c += isfinite(x[i]) ? 0 : 1;
  part[threadIdx.x] = c;
  __syncthreads();
  for (unsigned s = 128; s > 0; s >>= 1) {
    if (threadIdx.x < s) part[threadIdx.x] += part[threadIdx.x + s];
    __syncthreads();  // every level reads what the previous one wrote
  }
  if (threadIdx.x == 0) counts[t] = part[0];
}

// Each thread draws one Philox block (4 elements); the mask is a pure function of
// (seed, offset, i), so forward and backward agree and the CPU backend draws the same mask.
__global__ void dropout_kernel(DropoutParams p, const float* x, float* y) {
  const float scale = 1.0f / (1.0f - p.p);
  const uint32_t threshold = philox_keep_threshold(p.p);
  NL_GRID_STRIDE(blk, (p.n + 3) / 4) {
    const uint64_t c = p.offset + static_cast<uint64_t>(blk);
    Philox4x32 r = philox4x32_10({{static_cast<uint32_t>(c), static_cast<uint32_t>(c >> 32), 0u, 0u}},
                                 static_cast<uint32_t>(p.seed), static_cast<uint32_t>(p.seed >> 32));
    for (int l = 0; l < 4; ++l) {
      const int64_t i = blk * 4 + l;
      if (i < p.n) y[i] = (r.v[l] >> 8) >= threshold ? x[i] * scale : 0.0f;
    }
  }
}

// ---------------------------------------------------------------------------------- launchers

namespace {
constexpr int kThreads = 256;
}  // namespace

void add_fwd(int64_t n, const float* a, const float* b, float* y) {
  NL_MODEL_OP("add", n, 12 * n);
  if (n > 0) NL_LAUNCH(add_kernel, grid_for(n), kThreads, 0, n, a, b, y);
}
void mul_fwd(int64_t n, const float* a, const float* b, float* y) {
  NL_MODEL_OP("mul", n, 12 * n);
  if (n > 0) NL_LAUNCH(mul_kernel, grid_for(n), kThreads, 0, n, a, b, y);
}
void sum_fwd(int64_t n, const float* x, float* y) {
  NL_MODEL_OP("sum", n, 4 * n + 4);
  NL_LAUNCH(sum_kernel, 1, 1024, 64 * sizeof(float), n, x, y);
}
void sum_bwd(int64_t n, const float* dy, float* dx) {
  NL_MODEL_OP("sum_bwd", 0, 4 * n + 4);
  if (n > 0) NL_LAUNCH(broadcast_kernel, grid_for(n), kThreads, 0, n, dy, dx);
}
void nonfinite_count(const NonfiniteParams& p, int32_t* counts) {
  [[maybe_unused]] int64_t total = 0;
  for (int t = 0; t < p.count; ++t) total += p.n[t];
  NL_MODEL_OP("nonfinite_count", total, 4 * total + 4 * p.count);
  if (p.count > 0) NL_LAUNCH(nonfinite_count_kernel, p.count, 256, 256 * sizeof(int32_t), p, counts);
}
void relu_fwd(int64_t n, const float* x, float* y) {
  NL_MODEL_OP("relu", n, 8 * n);
  if (n > 0) NL_LAUNCH(relu_fwd_kernel, grid_for(n), kThreads, 0, n, x, y);
}
void relu_bwd(int64_t n, const float* y, const float* dy, float* dx) {
  NL_MODEL_OP("relu_bwd", n, 12 * n);
  if (n > 0) NL_LAUNCH(relu_bwd_kernel, grid_for(n), kThreads, 0, n, y, dy, dx);
}
void dropout_fwd(const DropoutParams& p, const float* x, float* y) {
  NL_MODEL_OP("dropout", p.n, 8 * p.n);
  if (p.n > 0) NL_LAUNCH(dropout_kernel, grid_for((p.n + 3) / 4), kThreads, 0, p, x, y);
}
void dropout_bwd(const DropoutParams& p, const float* dy, float* dx) { dropout_fwd(p, dy, dx); }

// ---------------------------------------------------------------------------------- registration

void register_elementwise_kernels() {
  add_fwd_stub.set(DeviceType::CUDA, &add_fwd);
  mul_fwd_stub.set(DeviceType::CUDA, &mul_fwd);
  sum_fwd_stub.set(DeviceType::CUDA, &sum_fwd);
  sum_bwd_stub.set(DeviceType::CUDA, &sum_bwd);
  nonfinite_count_stub.set(DeviceType::CUDA, &nonfinite_count);
  relu_fwd_stub.set(DeviceType::CUDA, &relu_fwd);
  relu_bwd_stub.set(DeviceType::CUDA, &relu_bwd);
  dropout_fwd_stub.set(DeviceType::CUDA, &dropout_fwd);
  dropout_bwd_stub.set(DeviceType::CUDA, &dropout_bwd);
}

}  // namespace nl::cuda
