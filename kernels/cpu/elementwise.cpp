// add, mul, sum, relu and dropout, forward and backward.
#include <algorithm>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "kernels/cpu/eigen_types.h"
#include "kernels/philox.h"
#include "kernels/stubs.h"

namespace nl::cpu {

void add_fwd(int64_t n, const float* a, const float* b, float* y) {
  VecMap(y, n) = CVecMap(a, n) + CVecMap(b, n);
}

void mul_fwd(int64_t n, const float* a, const float* b, float* y) {
  VecMap(y, n) = CVecMap(a, n).cwiseProduct(CVecMap(b, n));
}

void sum_fwd(int64_t n, const float* x, float* y) {
  // Accumulate in double: losses and gradient checks sum many terms of mixed sign.
  y[0] = static_cast<float>(CVecMap(x, n).cast<double>().sum());
}

void sum_bwd(int64_t n, const float* dy, float* dx) { VecMap(dx, n).setConstant(dy[0]); }

void relu_fwd(int64_t n, const float* x, float* y) { VecMap(y, n) = CVecMap(x, n).cwiseMax(0.0f); }

void relu_bwd(int64_t n, const float* y, const float* dy, float* dx) {
  // y > 0 exactly where x > 0, so the output is as good as the input for the mask.
  VecMap(dx, n) = (CVecMap(y, n).array() > 0.0f).select(CVecMap(dy, n), 0.0f);
}

namespace {

// Philox4x32-10 for kBlocks consecutive counter blocks at once: the same arithmetic as
// philox4x32_10, laid out as arrays so the compiler vectorises across blocks.
constexpr int kBlocks = 16;

#if defined(__AVX512F__)
// 32x32 -> 64-bit products of 16 lanes, split into high and low halves. _mm512_mul_epu32
// multiplies the even 32-bit lanes, so the odd lanes are shifted down and done separately.
inline void mulhilo16(__m512i a, __m512i k, __m512i& hi, __m512i& lo) {
  const __m512i even = _mm512_mul_epu32(a, k);
  const __m512i odd = _mm512_mul_epu32(_mm512_srli_epi64(a, 32), k);
  hi = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(even, 32), odd);
  lo = _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
}
#endif

void philox_blocks(uint64_t seed, uint64_t first_block, uint32_t out[4][kBlocks]) {
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
#if defined(__AVX512F__)
  alignas(64) uint32_t lo_words[kBlocks], hi_words[kBlocks];
  for (int b = 0; b < kBlocks; ++b) {
    const uint64_t blk = first_block + static_cast<uint64_t>(b);
    lo_words[b] = static_cast<uint32_t>(blk), hi_words[b] = static_cast<uint32_t>(blk >> 32);
  }
  __m512i c0 = _mm512_load_si512(lo_words), c1 = _mm512_load_si512(hi_words);
  __m512i c2 = _mm512_setzero_si512(), c3 = _mm512_setzero_si512();
  const __m512i m0 = _mm512_set1_epi32(static_cast<int>(0xD2511F53u));
  const __m512i m1 = _mm512_set1_epi32(static_cast<int>(0xCD9E8D57u));
  for (int round = 0; round < 10; ++round) {
    __m512i hi0, lo0, hi1, lo1;
    mulhilo16(c0, m0, hi0, lo0);
    mulhilo16(c2, m1, hi1, lo1);
    const __m512i n0 = _mm512_xor_si512(_mm512_xor_si512(hi1, c1), _mm512_set1_epi32(static_cast<int>(k0)));
    const __m512i n2 = _mm512_xor_si512(_mm512_xor_si512(hi0, c3), _mm512_set1_epi32(static_cast<int>(k1)));
    c0 = n0, c1 = lo1, c2 = n2, c3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  _mm512_storeu_si512(out[0], c0);
  _mm512_storeu_si512(out[1], c1);
  _mm512_storeu_si512(out[2], c2);
  _mm512_storeu_si512(out[3], c3);
#else
  for (int b = 0; b < kBlocks; ++b) {
    const uint64_t blk = first_block + static_cast<uint64_t>(b);
    Philox4x32 r = philox4x32_10({{static_cast<uint32_t>(blk), static_cast<uint32_t>(blk >> 32), 0u, 0u}}, k0, k1);
    for (int l = 0; l < 4; ++l) out[l][b] = r.v[l];
  }
#endif
}

}  // namespace

void dropout_fwd(const DropoutParams& p, const float* x, float* y) {
  const float scale = 1.0f / (1.0f - p.p);
  // Keep element i when its uniform draw is >= p, compared in the integer domain; element i is
  // lane i % 4 of block offset + i / 4 (kernels/philox.h).
  const uint32_t threshold = philox_keep_threshold(p.p);
  uint32_t r[4][kBlocks];
  for (int64_t base = 0; base < p.n; base += 4 * kBlocks) {
    philox_blocks(p.seed, p.offset + static_cast<uint64_t>(base) / 4, r);
    const int64_t count = std::min<int64_t>(4 * kBlocks, p.n - base);
    for (int64_t j = 0; j < count; ++j) {
      y[base + j] = (r[j % 4][j / 4] >> 8) >= threshold ? x[base + j] * scale : 0.0f;
    }
  }
}

void dropout_bwd(const DropoutParams& p, const float* dy, float* dx) {
  // The same (seed, offset, i) draws as forward reproduce the mask bit for bit.
  dropout_fwd(p, dy, dx);
}

}  // namespace nl::cpu
