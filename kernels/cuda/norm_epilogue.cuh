#pragma once
// The fused epilogue of the normalisation kernels (kernels/cuda/norm.cu): ReLU or TLU, dropout with its
// byte mask, the residual add, and the masked gradient that reaches a norm in backward; plus the
// vector load/store helpers they share. Every norm variant's kernels apply the same epilogue.
#include <cstdint>

#include "kernels/cuda/cuda_common.h"
#include "normlab/core/kernel/philox.h"
#include "normlab/core/kernel/stubs.h"

namespace nl::cuda {

__device__ __forceinline__ float gamma_at(const float* g, int64_t c) { return g ? g[c] : 1.0f; }
__device__ __forceinline__ float beta_at(const float* b, int64_t c) { return b ? b[c] : 0.0f; }

// ---------------------------------------------------------------------------------- epilogue
//
// y = residual + dropout(act(pre)) and the byte mask, on 4 consecutive elements starting at flat
// index i (i % 4 == 0): one Philox call gives the 4 draws (element i + l is lane l of block
// offset + i / 4, as everywhere), one float4/uchar4 store each. kVec: the pointers are 16-byte
// aligned and the 4 elements are in memory together, so vector loads and stores are legal.
// The mask, the residual and the output are each touched once here: evict-first (load_stream,
// store_stream), so they do not evict the x that a second pass re-reads from L2.
struct Epilogue {
  const float* residual;
  uint8_t* mask;
  uint32_t threshold;
  float keep_scale;
};

__host__ inline Epilogue make_epilogue(const NormParams& p, const float* residual, uint8_t* mask) {
  const bool drop = p.dropout > 0.0f;
  return {residual, mask, drop ? philox_keep_threshold(p.dropout) : 0u,
          drop ? 1.0f / (1.0f - p.dropout) : 1.0f};
}

// tau: the elements' channel's TLU threshold (read only when p.tlu). A TLU-clamped element takes
// the value tau and mask 2 (its gradient goes to tau), a passing one mask 1, a dropped one 0.
__device__ __forceinline__ void epilogue4(const NormParams& p, const Epilogue& e, int64_t i, float v[4],
                                          float tau = 0.0f) {
  if (p.relu || p.tlu || p.dropout > 0.0f) {
    Philox4x32 r = {{0u, 0u, 0u, 0u}};
    if (p.dropout > 0.0f) {
      const uint64_t block = p.offset + uint64_t(p.index_base + i) / 4;  // index_base % 4 == 0 here
      r = philox4x32_10({{uint32_t(block), uint32_t(block >> 32), 0u, 0u}}, uint32_t(p.seed),
                        uint32_t(p.seed >> 32));
    }
    unsigned char m[4];
    for (int l = 0; l < 4; ++l) {
      const bool keep = p.dropout <= 0.0f || (r.v[l] >> 8) >= e.threshold;
      if (p.tlu) {
        const bool pass = v[l] > tau;
        m[l] = keep ? (pass ? 1 : 2) : 0;
        v[l] = keep ? (pass ? v[l] : tau) * e.keep_scale : 0.0f;
      } else {
        const bool pass = (!p.relu || v[l] > 0.0f) && keep;
        m[l] = pass;
        v[l] = pass ? v[l] * e.keep_scale : 0.0f;
      }
    }
    store_stream(reinterpret_cast<uchar4*>(e.mask + i), make_uchar4(m[0], m[1], m[2], m[3]));
  }
  if (e.residual) {
    const float4 rv = load_stream(reinterpret_cast<const float4*>(e.residual + i));
    v[0] += rv.x, v[1] += rv.y, v[2] += rv.z, v[3] += rv.w;
  }
}

__device__ __forceinline__ float epilogue1(const NormParams& p, const Epilogue& e, int64_t i, float v,
                                           float tau = 0.0f) {
  if (p.relu || p.tlu || p.dropout > 0.0f) {
    const bool keep =
        p.dropout <= 0.0f || (philox_bits(p.seed, p.offset, uint64_t(p.index_base + i)) >> 8) >= e.threshold;
    if (p.tlu) {
      const bool pass = v > tau;
      store_stream(e.mask + i, uint8_t(keep ? (pass ? 1 : 2) : 0));
      v = keep ? (pass ? v : tau) * e.keep_scale : 0.0f;
    } else {
      const bool pass = (!p.relu || v > 0.0f) && keep;
      store_stream(e.mask + i, uint8_t(pass));
      v = pass ? v * e.keep_scale : 0.0f;
    }
  }
  return e.residual ? v + load_stream(e.residual + i) : v;
}

// The gradient that reaches the norm: (mask == 1) * dy / (1 - dropout), or dy without a mask.
__device__ __forceinline__ float masked_dy(const float* dy, const uint8_t* mask, float keep_scale,
                                           int64_t i) {
  return mask ? (mask[i] == 1 ? dy[i] * keep_scale : 0.0f) : dy[i];
}
// TLU's share: (mask == 2) * dy / (1 - dropout).
__device__ __forceinline__ float clamped_dy(const float* dy, const uint8_t* mask, float keep_scale,
                                            int64_t i) {
  return mask[i] == 2 ? dy[i] * keep_scale : 0.0f;
}
__device__ __forceinline__ void masked_dy4(const float* dy, const uint8_t* mask, float keep_scale, int64_t i,
                                           float g[4]) {
  const float4 d = load_vec(reinterpret_cast<const float4*>(dy + i));
  g[0] = d.x, g[1] = d.y, g[2] = d.z, g[3] = d.w;
  if (!mask) return;
  const uchar4 m = load_vec(reinterpret_cast<const uchar4*>(mask + i));
  g[0] = m.x == 1 ? g[0] * keep_scale : 0.0f;
  g[1] = m.y == 1 ? g[1] * keep_scale : 0.0f;
  g[2] = m.z == 1 ? g[2] * keep_scale : 0.0f;
  g[3] = m.w == 1 ? g[3] * keep_scale : 0.0f;
}

__device__ __forceinline__ void load4(const float* x, int64_t i, float v[4]) {
  const float4 a = load_vec(reinterpret_cast<const float4*>(x + i));
  v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w;
}
// Outputs (y, dx): written once, read by the next op, evict-first.
__device__ __forceinline__ void store4(float* y, int64_t i, const float v[4]) {
  store_stream(reinterpret_cast<float4*>(y + i), make_float4(v[0], v[1], v[2], v[3]));
}

}  // namespace nl::cuda
