// max-pool and global average pool, forward and backward. Threads take whole planes.
#include <immintrin.h>

#include "kernels/cpu/eigen_types.h"
#include "kernels/cpu/parallel.h"
#include "normlab/core/kernel/stubs.h"

namespace nl::cpu {

// The network's pool, 2x2 with stride 2: the window's four values compared with selects in the
// generic loop's order (strict '>', so the first maximum wins, as PyTorch's), without the generic
// loop's data-dependent branches; with AVX-512, 16 windows at a time.
void max_pool2x2_fwd(const Pool2dParams& p, const float* x, float* y, int32_t* argmax) {
  parallel_for(p.N * p.C, 64, [&](int64_t b, int64_t e) {
    const int32_t W = static_cast<int32_t>(p.W);
    for (int64_t plane = b; plane < e; ++plane) {
      for (int64_t oh = 0; oh < p.P; ++oh) {
        const float* __restrict r0 = x + plane * p.H * p.W + 2 * oh * p.W;
        const float* __restrict r1 = r0 + p.W;
        float* __restrict yo = y + plane * p.P * p.Q + oh * p.Q;
        int32_t* __restrict ao = argmax + plane * p.P * p.Q + oh * p.Q;
        const int32_t row = static_cast<int32_t>(2 * oh) * W;
        int64_t ow = 0;
#if defined(__AVX512F__)
        // 16 windows at a time: even and odd columns of both rows split out of 32 loaded floats
        // (the compiler does not vectorise the stride-2 loads itself).
        const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
        for (; ow + 16 <= p.Q; ow += 16) {
          const __m512 r0a = _mm512_loadu_ps(r0 + 2 * ow), r0b = _mm512_loadu_ps(r0 + 2 * ow + 16);
          const __m512 r1a = _mm512_loadu_ps(r1 + 2 * ow), r1b = _mm512_loadu_ps(r1 + 2 * ow + 16);
          const __m512 a = _mm512_permutex2var_ps(r0a, even, r0b), b1 = _mm512_permutex2var_ps(r0a, odd, r0b);
          const __m512 c = _mm512_permutex2var_ps(r1a, even, r1b), d = _mm512_permutex2var_ps(r1a, odd, r1b);
          __m512 m = a;
          __m512i off = _mm512_setzero_si512();
          __mmask16 k = _mm512_cmp_ps_mask(b1, m, _CMP_GT_OQ);
          m = _mm512_mask_mov_ps(m, k, b1), off = _mm512_mask_mov_epi32(off, k, _mm512_set1_epi32(1));
          k = _mm512_cmp_ps_mask(c, m, _CMP_GT_OQ);
          m = _mm512_mask_mov_ps(m, k, c), off = _mm512_mask_mov_epi32(off, k, _mm512_set1_epi32(W));
          k = _mm512_cmp_ps_mask(d, m, _CMP_GT_OQ);
          m = _mm512_mask_mov_ps(m, k, d), off = _mm512_mask_mov_epi32(off, k, _mm512_set1_epi32(W + 1));
          _mm512_storeu_ps(yo + ow, m);
          // Window i's first pixel: row + 2 (ow + i), and `even` holds 2i.
          const __m512i first = _mm512_add_epi32(_mm512_set1_epi32(row + static_cast<int32_t>(2 * ow)), even);
          _mm512_storeu_si512(ao + ow, _mm512_add_epi32(first, off));
        }
#endif
        for (; ow < p.Q; ++ow) {
          const float a = r0[2 * ow], b1 = r0[2 * ow + 1], c = r1[2 * ow], d = r1[2 * ow + 1];
          float m = a;
          int32_t off = 0;
          const bool gb = b1 > m;
          m = gb ? b1 : m, off = gb ? 1 : off;
          const bool gc = c > m;
          m = gc ? c : m, off = gc ? W : off;
          const bool gd = d > m;
          m = gd ? d : m, off = gd ? W + 1 : off;
          yo[ow] = m;
          ao[ow] = row + static_cast<int32_t>(2 * ow) + off;
        }
      }
    }
  });
}

void max_pool2d_fwd(const Pool2dParams& p, const float* x, float* y, int32_t* argmax) {
  if (p.kernel == 2 && p.stride == 2) return max_pool2x2_fwd(p, x, y, argmax);
  parallel_for(p.N * p.C, 64, [&](int64_t b, int64_t e) {
    for (int64_t plane = b; plane < e; ++plane) {
      const float* xp = x + plane * p.H * p.W;
      for (int64_t oh = 0; oh < p.P; ++oh) {
        for (int64_t ow = 0; ow < p.Q; ++ow) {
          int64_t h0 = oh * p.stride, w0 = ow * p.stride;
          int64_t best_i = h0 * p.W + w0;
          float best = xp[best_i];
          // Strict '>' keeps the first maximum in row-major window order, as PyTorch does.
          for (int64_t kh = 0; kh < p.kernel; ++kh)
            for (int64_t kw = 0; kw < p.kernel; ++kw) {
              int64_t i = (h0 + kh) * p.W + (w0 + kw);
              if (xp[i] > best) best = xp[i], best_i = i;
            }
          int64_t o = plane * p.P * p.Q + oh * p.Q + ow;
          y[o] = best;
          argmax[o] = static_cast<int32_t>(best_i);
        }
      }
    }
  });
}

void max_pool2d_bwd(const Pool2dParams& p, const float* dy, const int32_t* argmax, float* dx) {
  parallel_for(p.N * p.C, 64, [&](int64_t b, int64_t e) {
    VecMap(dx + b * p.H * p.W, (e - b) * p.H * p.W).setZero();
    // += because windows overlap when stride < kernel.
    for (int64_t plane = b; plane < e; ++plane)
      for (int64_t o = 0; o < p.P * p.Q; ++o)
        dx[plane * p.H * p.W + argmax[plane * p.P * p.Q + o]] += dy[plane * p.P * p.Q + o];
  });
}

void global_avg_pool_fwd(int64_t NC, int64_t HxW, const float* x, float* y) {
  VecMap(y, NC) = CMapR(x, NC, HxW).rowwise().mean();
}

void global_avg_pool_bwd(int64_t NC, int64_t HxW, const float* dy, float* dx) {
  MapR(dx, NC, HxW).colwise() = CVecMap(dy, NC) / static_cast<float>(HxW);
}

// Registration: a kernel whose signature drifts from its stub fails to compile here.
void register_pooling_kernels() {
  max_pool2d_fwd_stub.set(DeviceType::CPU, &max_pool2d_fwd);
  max_pool2d_bwd_stub.set(DeviceType::CPU, &max_pool2d_bwd);
  global_avg_pool_fwd_stub.set(DeviceType::CPU, &global_avg_pool_fwd);
  global_avg_pool_bwd_stub.set(DeviceType::CPU, &global_avg_pool_bwd);
}

}  // namespace nl::cpu
