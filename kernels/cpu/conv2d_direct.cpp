// Direct 3x3 same convolution on AVX-512; see conv2d_direct.h for why and how.
#include "kernels/cpu/conv2d_direct.h"

#include <algorithm>

#include "kernels/cpu/parallel.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace nl::cpu {

namespace {
constexpr int64_t kVec = 16;   // floats per AVX-512 vector
constexpr int64_t kBlock = 8;  // output channels per register block
constexpr int64_t kTaps = 9;

// The shape the kernel handles: 3x3, stride 1, padding 1, output as large as the input, rows of
// whole vectors, an even number of vectors per image (two per register tile) and output channels
// in blocks of 8.
bool shape_ok(int64_t H, int64_t W, int64_t cout) {
  return W % kVec == 0 && (H * (W / kVec)) % 2 == 0 && cout % kBlock == 0 && cout > 0;
}
}  // namespace

#if defined(__AVX512F__)
namespace {

// Zero-bordered copy of sample n of x: [cin][H + 2][W + 2] (+ kVec floats of zeroed slack). The
// interior is overwritten by the copy, so only the border is zeroed: one pass over the buffer.
void pad_sample(const float* x, int64_t n, int64_t cin, int64_t H, int64_t W, float* xp) {
  const int64_t Wp = W + 2, plane = (H + 2) * Wp;
  for (int64_t c = 0; c < cin; ++c) {
    float* xc = xp + c * plane;
    std::fill(xc, xc + Wp, 0.0f);                    // top row
    std::fill(xc + (H + 1) * Wp, xc + plane, 0.0f);  // bottom row
    for (int64_t h = 0; h < H; ++h) {
      float* row = xc + (h + 1) * Wp;
      const float* src = x + ((n * cin + c) * H + h) * W;
      row[0] = 0.0f;
      std::copy(src, src + W, row + 1);
      row[W + 1] = 0.0f;
    }
  }
  std::fill(xp + cin * plane, xp + cin * plane + kVec, 0.0f);
}

// y[n] = conv(x[n]) for samples of `cin` channels; wpk is the packed filter
// [cout / 8][cin][9][8] (8 consecutive floats = the 8 output channels of a block).
void direct_conv(int64_t N, int64_t cin, int64_t cout, int64_t H, int64_t W, const float* x, const float* wpk,
                 const float* bias, float* y) {
  const int64_t Wp = W + 2, plane = (H + 2) * Wp, nv = W / kVec, vectors = H * nv;
  parallel_for(N, 1, [&](int64_t n0, int64_t n1) {
    // The zero-bordered copy of one sample (+ slack: a tile's loads end at column W + 1).
    float* xp = thread_scratch(0, static_cast<size_t>(cin * plane + kVec));
    for (int64_t n = n0; n < n1; ++n) {
      pad_sample(x, n, cin, H, W, xp);
      float* yn = y + n * cout * H * W;
      for (int64_t kb = 0; kb < cout / kBlock; ++kb) {
        const float* wb = wpk + kb * cin * kTaps * kBlock;
        for (int64_t j = 0; j < vectors; j += 2) {
          // Two vectors of 16 output pixels: vector j and j + 1 of the image in row-major order.
          const int64_t h0 = j / nv, w0 = (j % nv) * kVec, h1 = (j + 1) / nv, w1 = ((j + 1) % nv) * kVec;
          __m512 acc0[kBlock], acc1[kBlock];
#pragma GCC unroll 8
          for (int kk = 0; kk < kBlock; ++kk) acc0[kk] = _mm512_setzero_ps(), acc1[kk] = _mm512_setzero_ps();
          for (int64_t c = 0; c < cin; ++c) {
            const float* xc = xp + c * plane;
            const float* wc = wb + c * kTaps * kBlock;
#pragma GCC unroll 3
            for (int r = 0; r < 3; ++r) {
              const float* row0 = xc + (h0 + r) * Wp + w0;
              const float* row1 = xc + (h1 + r) * Wp + w1;
#pragma GCC unroll 3
              for (int s = 0; s < 3; ++s) {
                const __m512 a0 = _mm512_loadu_ps(row0 + s), a1 = _mm512_loadu_ps(row1 + s);
                const float* wt = wc + (r * 3 + s) * kBlock;
#pragma GCC unroll 8
                for (int kk = 0; kk < kBlock; ++kk) {
                  const __m512 b = _mm512_set1_ps(wt[kk]);
                  acc0[kk] = _mm512_fmadd_ps(a0, b, acc0[kk]);
                  acc1[kk] = _mm512_fmadd_ps(a1, b, acc1[kk]);
                }
              }
            }
          }
#pragma GCC unroll 8
          for (int kk = 0; kk < kBlock; ++kk) {
            const int64_t k = kb * kBlock + kk;
            const __m512 bk = _mm512_set1_ps(bias ? bias[k] : 0.0f);
            _mm512_storeu_ps(yn + (k * H + h0) * W + w0, _mm512_add_ps(acc0[kk], bk));
            _mm512_storeu_ps(yn + (k * H + h1) * W + w1, _mm512_add_ps(acc1[kk], bk));
          }
        }
      }
    }
  });
}

}  // namespace

namespace {
bool same3x3(const Conv2dParams& p) {
  return p.R == 3 && p.S == 3 && p.stride_h == 1 && p.stride_w == 1 && p.pad_h == 1 && p.pad_w == 1 &&
         p.P == p.H && p.Q == p.W;
}
constexpr int64_t kWeightChunk = 8;  // samples per partial dW

}  // namespace

void conv3x3_direct_bwd_weight(const Conv2dParams& p, const float* x, const float* dy, float* dw) {
  const int64_t H = p.H, W = p.W, Wp = W + 2, plane = (H + 2) * Wp, nv = W / kVec;
  const int64_t KC9 = p.K * p.C * kTaps, chunks = (p.N + kWeightChunk - 1) / kWeightChunk;
  float* part = thread_scratch(2, static_cast<size_t>(chunks * KC9));
  parallel_for(p.N, kWeightChunk, [&](int64_t n0, int64_t n1) {
    // One sample's padded planes and dy planes (~10 KiB per channel pair) stay in L1 while a
    // (c, k pair) block sweeps them; the block's 18 vector accumulators live in `acc` (L2)
    // between samples and are reduced across lanes once per chunk.
    float* xp = thread_scratch(0, static_cast<size_t>(p.C * plane + kVec));
    float* acc = thread_scratch(1, static_cast<size_t>(KC9 * kVec));
    for (int64_t n = n0; n < n1; ++n) {
      pad_sample(x, n, p.C, H, W, xp);
      for (int64_t c = 0; c < p.C; ++c) {
        const float* xc = xp + c * plane;
        for (int64_t k = 0; k < p.K; k += 2) {
          float* a0 = acc + ((k * p.C + c) * kTaps) * kVec;
          float* a1 = acc + (((k + 1) * p.C + c) * kTaps) * kVec;
          __m512 acc0[kTaps], acc1[kTaps];
#pragma GCC unroll 9
          for (int t = 0; t < kTaps; ++t) {
            acc0[t] = n == n0 ? _mm512_setzero_ps() : _mm512_loadu_ps(a0 + t * kVec);
            acc1[t] = n == n0 ? _mm512_setzero_ps() : _mm512_loadu_ps(a1 + t * kVec);
          }
          const float* d0 = dy + ((n * p.K + k) * H) * W;
          const float* d1 = d0 + H * W;
          for (int64_t h = 0; h < H; ++h) {
            for (int64_t v = 0; v < nv; ++v) {
              const __m512 g0 = _mm512_loadu_ps(d0 + h * W + v * kVec);
              const __m512 g1 = _mm512_loadu_ps(d1 + h * W + v * kVec);
#pragma GCC unroll 3
              for (int r = 0; r < 3; ++r) {
                const float* row = xc + (h + r) * Wp + v * kVec;
#pragma GCC unroll 3
                for (int s = 0; s < 3; ++s) {
                  __m512 xv = _mm512_loadu_ps(row + s);
                  // One load feeding both FMAs: without this GCC folds the load into each.
                  __asm__("" : "+v"(xv));
                  acc0[r * 3 + s] = _mm512_fmadd_ps(g0, xv, acc0[r * 3 + s]);
                  acc1[r * 3 + s] = _mm512_fmadd_ps(g1, xv, acc1[r * 3 + s]);
                }
              }
            }
          }
#pragma GCC unroll 9
          for (int t = 0; t < kTaps; ++t) {
            _mm512_storeu_ps(a0 + t * kVec, acc0[t]);
            _mm512_storeu_ps(a1 + t * kVec, acc1[t]);
          }
        }
      }
    }
    float* out = part + (n0 / kWeightChunk) * KC9;
    for (int64_t i = 0; i < KC9; ++i) out[i] = _mm512_reduce_add_ps(_mm512_loadu_ps(acc + i * kVec));
  });
  for (int64_t i = 0; i < KC9; ++i) {
    float a = part[i];
    for (int64_t ch = 1; ch < chunks; ++ch) a += part[ch * KC9 + i];
    dw[i] = a;
  }
}

bool conv3x3_direct_fwd_ok(const Conv2dParams& p) { return same3x3(p) && shape_ok(p.H, p.W, p.K); }
bool conv3x3_direct_bwd_data_ok(const Conv2dParams& p) { return same3x3(p) && shape_ok(p.H, p.W, p.C); }
bool conv3x3_direct_bwd_weight_ok(const Conv2dParams& p) {
  return same3x3(p) && p.W % kVec == 0 && p.K % 2 == 0 && p.K > 0;
}

void conv3x3_direct_fwd(const Conv2dParams& p, const float* x, const float* w, const float* bias, float* y) {
  // [K/8][C][9][8] from [K][C][9].
  float* wpk = thread_scratch(2, static_cast<size_t>(p.K * p.C * kTaps));
  for (int64_t k = 0; k < p.K; ++k)
    for (int64_t c = 0; c < p.C; ++c)
      for (int64_t t = 0; t < kTaps; ++t)
        wpk[((k / kBlock * p.C + c) * kTaps + t) * kBlock + k % kBlock] = w[(k * p.C + c) * kTaps + t];
  direct_conv(p.N, p.C, p.K, p.H, p.W, x, wpk, bias, y);
}

void conv3x3_direct_bwd_data(const Conv2dParams& p, const float* w, const float* dy, float* dx) {
  // dx = conv(dy, W') with W'[c, k, t] = W[k, c, 8 - t] (flipped taps, channel axes swapped),
  // packed as [C/8][K][9][8].
  float* wpk = thread_scratch(2, static_cast<size_t>(p.K * p.C * kTaps));
  for (int64_t c = 0; c < p.C; ++c)
    for (int64_t k = 0; k < p.K; ++k)
      for (int64_t t = 0; t < kTaps; ++t)
        wpk[((c / kBlock * p.K + k) * kTaps + t) * kBlock + c % kBlock] =
            w[(k * p.C + c) * kTaps + (kTaps - 1 - t)];
  direct_conv(p.N, p.K, p.C, p.H, p.W, dy, wpk, nullptr, dx);
}

#else  // no AVX-512: im2col + GEMM serves every shape

bool conv3x3_direct_fwd_ok(const Conv2dParams&) { return false; }
bool conv3x3_direct_bwd_data_ok(const Conv2dParams&) { return false; }
bool conv3x3_direct_bwd_weight_ok(const Conv2dParams&) { return false; }
void conv3x3_direct_bwd_weight(const Conv2dParams&, const float*, const float*, float*) {}
void conv3x3_direct_fwd(const Conv2dParams&, const float*, const float*, const float*, float*) {}
void conv3x3_direct_bwd_data(const Conv2dParams&, const float*, const float*, float*) {}

#endif

}  // namespace nl::cpu
