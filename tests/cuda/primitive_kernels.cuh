#pragma once
// Kernels that exercise cuda_common.h's warp-level primitives (mma.sync, ldmatrix, cp.async), one
// warp each: tests/cuemu/test_cuemu.cu runs them under cuemu against CPU references, and
// scripts/check-nvcc.sh compiles them for sm_80 and sm_90 (tests/cuda/primitives_nvcc.cu), so
// the inline PTX is checked by ptxas as well.
#include "kernels/cuda/cuda_common.h"

namespace nl::cuda::test {

// D (16 x 8) = A (16 x 8) * B (8 x 8) + C, all row-major in global memory; round: to_tf32 on
// A and B (else their FP32 bits go in, of which the tensor core reads the upper 19).
__global__ void mma_m16n8k8_kernel(const float* a, const float* b, const float* c, float* d, bool round) {
  const int lane = int(threadIdx.x % 32), g = lane / 4, t = lane % 4;
  auto bits = [&](float v) {
    if (round) return to_tf32(v);
    uint32_t u;
    memcpy(&u, &v, 4);
    return u;
  };
  const uint32_t af[4] = {bits(a[g * 8 + t]), bits(a[(g + 8) * 8 + t]), bits(a[g * 8 + t + 4]),
                          bits(a[(g + 8) * 8 + t + 4])};
  const uint32_t bf[2] = {bits(b[t * 8 + g]), bits(b[(t + 4) * 8 + g])};
  const float cf[4] = {c[g * 8 + 2 * t], c[g * 8 + 2 * t + 1], c[(g + 8) * 8 + 2 * t],
                       c[(g + 8) * 8 + 2 * t + 1]};
  float df[4];
  mma_m16n8k8_tf32(df, af, bf, cf);
  d[g * 8 + 2 * t] = df[0], d[g * 8 + 2 * t + 1] = df[1];
  d[(g + 8) * 8 + 2 * t] = df[2], d[(g + 8) * 8 + 2 * t + 1] = df[3];
}

// Four 8 x 4-word matrices (128 words) staged in shared memory; lane L gives the address of row
// L % 8 of matrix L / 8 and writes what ldmatrix_x4 hands it to out[4 L .. 4 L + 3].
__global__ void ldmatrix_kernel(const uint32_t* src, uint32_t* out) {
  NL_DYN_SHARED(uint32_t, s);
  const unsigned lane = threadIdx.x % 32;
  for (unsigned i = lane; i < 128; i += 32) s[i] = src[i];
  __syncthreads();
  uint32_t r[4];
  ldmatrix_x4(r, s + (lane / 8) * 32 + (lane % 8) * 4);
  for (int j = 0; j < 4; ++j) out[lane * 4 + j] = r[j];
}

// A two-stage pipeline over `tiles` tiles of 128 floats: while tile k is summed from shared
// memory, tile k + 1 is in flight (cp.async, one 16-byte copy per lane and tile). Lane i writes
// the sum of lane (i + 1) % 32's four floats of each tile (another lane's copy: the barrier after
// the wait matters). wait = false leaves out cp.async.wait_group, reuse_barrier = false the barrier
// before a buffer is copied into again: the two bugs a pipeline must not have (the first gives
// wrong sums under cuemu, the second a race report in the race-check build).
__global__ void cp_async_pipeline_kernel(const float* in, float* out, int tiles, bool wait,
                                         bool reuse_barrier) {
  NL_DYN_SHARED(float, s);  // [2][128]
  const unsigned lane = threadIdx.x % 32;
  cp_async_16(s + lane * 4, in + lane * 4);
  cp_async_commit();
  for (int k = 0; k < tiles; ++k) {
    float* cur = s + (k % 2) * 128;
    if (k + 1 < tiles) cp_async_16(s + ((k + 1) % 2) * 128 + lane * 4, in + (k + 1) * 128 + lane * 4);
    cp_async_commit();  // an empty group on the last tile keeps the count of groups in step
    if (wait) cp_async_wait<1>();
    __syncthreads();
    const float* q = cur + ((lane + 1) % 32) * 4;
    out[k * 32 + lane] = q[0] + q[1] + q[2] + q[3];
    if (reuse_barrier) __syncthreads();  // every lane has read `cur` before it is copied into again
  }
  if (wait) cp_async_wait<0>();
}

}  // namespace nl::cuda::test
