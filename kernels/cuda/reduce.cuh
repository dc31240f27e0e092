#pragma once
// Block-wide reductions: warp shuffles, then one value per warp through shared memory. The
// order of additions is fixed by the thread layout, so results are deterministic run to run.
#include "kernels/cuda/cuda_common.h"

namespace nl::cuda {

__device__ __forceinline__ float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Sum of v over the block; every thread gets the result. `scratch` holds >= 32 floats of shared
// memory. blockDim.x must be a multiple of 32. The trailing barrier lets callers reuse scratch.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  v = warp_sum(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float total = 0.0f;
  for (int w = 0; w < warps; ++w) total += scratch[w];  // same order in every thread
  __syncthreads();
  return total;
}

// Two sums at once (one barrier pair instead of two).
__device__ __forceinline__ void block_sum2(float& a, float& b, float* scratch) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  a = warp_sum(a);
  b = warp_sum(b);
  if (lane == 0) scratch[warp] = a, scratch[32 + warp] = b;
  __syncthreads();
  float ta = 0.0f, tb = 0.0f;
  for (int w = 0; w < warps; ++w) ta += scratch[w], tb += scratch[32 + w];
  __syncthreads();
  a = ta;
  b = tb;
}

}  // namespace nl::cuda
