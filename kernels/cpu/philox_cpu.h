#pragma once
// Philox4x32-10 on the CPU, 16 counter blocks (64 draws) at a time, and the dropout keep-mask
// built from it. Element i of a draw starting at counter block `offset` uses lane i % 4 of block
// offset + i / 4 (normlab/core/kernel/philox.h), exactly as the CUDA kernels draw it, so masks agree bit
// for bit across devices.
#include <algorithm>
#include <cstdint>
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__BMI2__)
#include <immintrin.h>
#define NL_PHILOX_AVX512 1
#endif

#include "normlab/core/kernel/philox.h"

namespace nl::cpu {

constexpr int kPhiloxBlocks = 16;  // blocks per call: 64 draws

#if defined(NL_PHILOX_AVX512)
// GCC 12 flags the intrinsics' own _mm512_undefined_* placeholders as uninitialised (GCC bug
// 105593); nothing here reads an undefined value.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
// 32x32 -> 64-bit products of 16 lanes, split into high and low halves. _mm512_mul_epu32
// multiplies the even 32-bit lanes, so the odd lanes are shifted down and done separately.
inline void philox_mulhilo16(__m512i a, __m512i k, __m512i& hi, __m512i& lo) {
  const __m512i even = _mm512_mul_epu32(a, k);
  const __m512i odd = _mm512_mul_epu32(_mm512_srli_epi64(a, 32), k);
  hi = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(even, 32), odd);
  lo = _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
}

// Lane l of block first_block + b lands in c[l], 32-bit lane b.
inline void philox16(uint64_t seed, uint64_t first_block, __m512i c[4]) {
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  const __m512i step = _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7);
  const __m512i b_lo = _mm512_add_epi64(_mm512_set1_epi64(static_cast<long long>(first_block)), step);
  const __m512i b_hi = _mm512_add_epi64(b_lo, _mm512_set1_epi64(8));
  // Low and high words of the 16 64-bit block numbers, as two vectors of 16 x 32 bits.
  const __m512i idx_lo = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i idx_hi = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  __m512i c0 = _mm512_permutex2var_epi32(b_lo, idx_lo, b_hi);
  __m512i c1 = _mm512_permutex2var_epi32(b_lo, idx_hi, b_hi);
  __m512i c2 = _mm512_setzero_si512(), c3 = _mm512_setzero_si512();
  const __m512i m0 = _mm512_set1_epi32(static_cast<int>(0xD2511F53u));
  const __m512i m1 = _mm512_set1_epi32(static_cast<int>(0xCD9E8D57u));
  for (int round = 0; round < 10; ++round) {
    __m512i hi0, lo0, hi1, lo1;
    philox_mulhilo16(c0, m0, hi0, lo0);
    philox_mulhilo16(c2, m1, hi1, lo1);
    const __m512i n0 = _mm512_xor_si512(_mm512_xor_si512(hi1, c1), _mm512_set1_epi32(static_cast<int>(k0)));
    const __m512i n2 = _mm512_xor_si512(_mm512_xor_si512(hi0, c3), _mm512_set1_epi32(static_cast<int>(k1)));
    c0 = n0, c1 = lo1, c2 = n2, c3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  c[0] = c0, c[1] = c1, c[2] = c2, c[3] = c3;
}

// Bit j set: draw j of the 64 starting at block first_block is kept (its top 24 bits >= threshold).
inline uint64_t philox_keep_bits64(uint64_t seed, uint64_t first_block, uint32_t threshold) {
  __m512i c[4];
  philox16(seed, first_block, c);
  const __m512i t = _mm512_set1_epi32(static_cast<int>(threshold));
  uint64_t bits = 0;
  for (int l = 0; l < 4; ++l) {
    const uint64_t m = _mm512_cmpge_epu32_mask(_mm512_srli_epi32(c[l], 8), t);
    bits |= _pdep_u64(m, 0x1111111111111111ull << l);  // lane l of block b is draw 4b + l
  }
  return bits;
}
#pragma GCC diagnostic pop
#else
inline uint64_t philox_keep_bits64(uint64_t seed, uint64_t first_block, uint32_t threshold) {
  uint64_t bits = 0;
  for (int b = 0; b < kPhiloxBlocks; ++b) {
    const uint64_t blk = first_block + static_cast<uint64_t>(b);
    const Philox4x32 r =
        philox4x32_10({{static_cast<uint32_t>(blk), static_cast<uint32_t>(blk >> 32), 0u, 0u}},
                      static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
    for (int l = 0; l < 4; ++l) bits |= static_cast<uint64_t>((r.v[l] >> 8) >= threshold) << (4 * b + l);
  }
  return bits;
}
#endif

// keep[j] = 1 if element begin + j of the draw (seed, offset) survives dropout, else 0, for
// j in [0, count). begin need not be aligned: windows start at multiples of 4 elements.
inline void dropout_keep_bytes(uint64_t seed, uint64_t offset, uint32_t threshold, int64_t begin,
                               int64_t count, uint8_t* keep) {
  const int64_t end = begin + count;
  for (int64_t w = begin & ~int64_t{3}; w < end; w += 4 * kPhiloxBlocks) {
    const uint64_t bits = philox_keep_bits64(seed, offset + static_cast<uint64_t>(w) / 4, threshold);
    const int64_t lo = std::max(begin, w), hi = std::min(end, w + 4 * kPhiloxBlocks);
    const uint64_t sub = bits >> (lo - w);
#if defined(NL_PHILOX_AVX512)
    const int64_t n = hi - lo;
    const __mmask64 store = n == 64 ? ~__mmask64{0} : (__mmask64{1} << n) - 1;
    _mm512_mask_storeu_epi8(keep + (lo - begin), store, _mm512_maskz_mov_epi8(sub, _mm512_set1_epi8(1)));
#else
    for (int64_t e = lo; e < hi; ++e) keep[e - begin] = static_cast<uint8_t>((sub >> (e - lo)) & 1u);
#endif
  }
}

}  // namespace nl::cpu
