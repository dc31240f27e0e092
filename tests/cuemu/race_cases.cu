// Planted races for the race-check build (NORMLAB_RACECHECK, `make test-race`): one process per
// case, registered in ctest with the report it must (or must not) produce, under every thread
// order. Each racy kernel is a bug the plain emulator cannot see in some or every order; its
// twin is the correct version and must run clean.
//
//   race_cases <case>     cases: block-sum-plain block-sum-atomic no-barrier barrier
//                                across-blocks shuffle-no-fence syncwarp-fence
//                                cp-async-reuse cp-async-barrier
#include <cstdio>
#include <cstring>
#include <string>

#include "kernels/cuda/cuda_common.h"
#include "tests/cuda/primitive_kernels.cuh"

namespace {

// A block reduction whose warps all add into scratch[0] with a plain `+=`: lost updates on a
// GPU; under cuemu every thread runs alone between barriers, so the sum always came out right.
__global__ void block_sum_kernel(bool atomic, float* out) {
  NL_DYN_SHARED(float, scratch);
  if (threadIdx.x == 0) scratch[0] = 0.0f;
  __syncthreads();
  float v = 1.0f;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if (threadIdx.x % 32 == 0) {
    if (atomic)
      atomicAdd(&scratch[0], v);
    else
      scratch[0] += v;
  }
  __syncthreads();
  if (threadIdx.x == 0) out[blockIdx.x] = scratch[0];
}

// Each thread publishes its id and reads its neighbour's; without the barrier a read-before-write
// race, which the plain emulator shows only in an order that runs the reader first.
__global__ void neighbour_kernel(bool with_barrier, float* out) {
  NL_DYN_SHARED(float, s);
  const int t = threadIdx.x;
  s[t] = float(t);
  if (with_barrier) __syncthreads();
  out[t] = s[(t + 1) % blockDim.x];
}

// Every block's thread 0 accumulates into out[0] with a plain `+=` instead of writing a partial
// per block: a race between blocks in global memory.
__global__ void across_blocks_kernel(float* out) {
  if (threadIdx.x == 0) out[0] += 1.0f;
}

// Lanes publish to shared memory and read a neighbour's slot after a shuffle: a shuffle is not a
// memory fence, so this is a race; with __syncwarp it is not.
__global__ void shuffle_fence_kernel(bool syncwarp, float* out) {
  NL_DYN_SHARED(float, s);
  const int lane = threadIdx.x;
  s[lane] = float(lane);
  const float v = __shfl_down_sync(0xffffffffu, float(lane), 1);
  if (syncwarp) __syncwarp();
  out[lane] = v + s[(lane + 1) % 32];
}

// The cp.async pipeline of tests/cuda/primitive_kernels.cuh over 3 tiles, with or without the
// barrier before a buffer is copied into again (called, not launched: cuemu's kernels are plain
// functions, and the report then names this file's kernel).
__global__ void cp_async_reuse_kernel(const float* in, float* out, bool reuse_barrier) {
  nl::cuda::test::cp_async_pipeline_kernel(in, out, 3, true, reuse_barrier);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: race_cases <case>\n");
    return 2;
  }
  const std::string c = argv[1];
  float* d = nullptr;
  if (cudaMalloc(reinterpret_cast<void**>(&d), 64 * sizeof(float)) != cudaSuccess) return 1;
  cudaMemset(d, 0, 64 * sizeof(float));
  if (c == "block-sum-plain" || c == "block-sum-atomic")
    NL_LAUNCH(block_sum_kernel, 2, 128, sizeof(float), c == "block-sum-atomic", d);
  else if (c == "no-barrier" || c == "barrier")
    NL_LAUNCH(neighbour_kernel, 1, 64, 64 * sizeof(float), c == "barrier", d);
  else if (c == "across-blocks")
    NL_LAUNCH(across_blocks_kernel, 8, 32, 0, d);
  else if (c == "shuffle-no-fence" || c == "syncwarp-fence")
    NL_LAUNCH(shuffle_fence_kernel, 1, 32, 32 * sizeof(float), c == "syncwarp-fence", d);
  else if (c == "cp-async-reuse" || c == "cp-async-barrier") {
    // A cp.async pipeline that copies into a buffer other lanes may still be reading (no barrier
    // between their reads and the next copy into it), and its correct twin.
    float *in = nullptr, *sums = nullptr;  // 3 tiles in, 3 x 32 sums out
    if (cudaMalloc(reinterpret_cast<void**>(&in), 3 * 128 * sizeof(float)) != cudaSuccess ||
        cudaMalloc(reinterpret_cast<void**>(&sums), 3 * 32 * sizeof(float)) != cudaSuccess)
      return 1;
    cudaMemset(in, 0, 3 * 128 * sizeof(float));
    NL_LAUNCH(cp_async_reuse_kernel, 1, 32, 2 * 128 * sizeof(float), static_cast<const float*>(in), sums,
              c == "cp-async-barrier");
    cudaDeviceSynchronize();
    cudaFree(in);
    cudaFree(sums);
  } else {
    std::fprintf(stderr, "race_cases: unknown case '%s'\n", c.c_str());
    return 2;
  }
  if (cudaDeviceSynchronize() != cudaSuccess) return 1;
  float h[2];
  cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost);
  std::printf("race_cases %s: ran, out[0] = %g\n", c.c_str(), double(h[0]));
  cudaFree(d);
  return 0;
}
