#pragma once
// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11): a
// counter-based generator, so element i of a random tensor is a pure function of
// (seed, offset, i). CPU and CUDA kernels therefore draw identical dropout masks, and a backward
// pass can recompute a mask instead of storing it.
#include <cstdint>

#if defined(__CUDACC__)
#define NL_HD __host__ __device__ __forceinline__
#else
#define NL_HD inline
#endif

namespace nl {

struct Philox4x32 {
  uint32_t v[4];
};

NL_HD uint32_t philox_mulhilo(uint32_t a, uint32_t b, uint32_t* hi) {
  uint64_t p = static_cast<uint64_t>(a) * b;
  *hi = static_cast<uint32_t>(p >> 32);
  return static_cast<uint32_t>(p);
}

NL_HD Philox4x32 philox4x32_10(Philox4x32 ctr, uint32_t k0, uint32_t k1) {
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, hi1;
    uint32_t lo0 = philox_mulhilo(0xD2511F53u, ctr.v[0], &hi0);
    uint32_t lo1 = philox_mulhilo(0xCD9E8D57u, ctr.v[2], &hi1);
    ctr = {{hi1 ^ ctr.v[1] ^ k0, lo1, hi0 ^ ctr.v[3] ^ k1, lo0}};
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return ctr;
}

// The 32 random bits for element i of a draw that starts at counter block `offset`:
// element i uses lane i % 4 of block offset + i / 4.
NL_HD uint32_t philox_bits(uint64_t seed, uint64_t offset, uint64_t i) {
  uint64_t block = offset + i / 4;
  Philox4x32 ctr = {{static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32), 0u, 0u}};
  Philox4x32 r = philox4x32_10(ctr, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  // A select chain, not r.v[i % 4]: a dynamic index would put r in local memory on the GPU.
  const uint64_t lane = i % 4;
  return lane == 0 ? r.v[0] : lane == 1 ? r.v[1] : lane == 2 ? r.v[2] : r.v[3];
}

// Uniform in [0, 1) with 24 random bits: every value is exactly representable in float.
NL_HD float philox_uniform(uint64_t seed, uint64_t offset, uint64_t i) {
  return static_cast<float>(philox_bits(seed, offset, i) >> 8) * (1.0f / 16777216.0f);
}

// Dropout keeps element i when philox_uniform(...) >= p, i.e. when its top 24 bits reach
// ceil(p * 2^24): the integer form lets kernels skip the float conversion.
NL_HD uint32_t philox_keep_threshold(float p) {
  double t = static_cast<double>(p) * 16777216.0;
  uint32_t f = static_cast<uint32_t>(t);
  return static_cast<double>(f) < t ? f + 1 : f;
}

}  // namespace nl
