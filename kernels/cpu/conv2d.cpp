// conv2d forward and backward (data, weight, bias) as im2col + Eigen GEMM over groups of samples.
//
// The network's convs have few output channels (K <= 64) and small images (down to 8x8), so one
// sample's GEMM is too small for Eigen to run well. Samples are therefore taken in groups whose
// columns sit side by side, [C*R*S, g*P*Q] with g*P*Q >= kMinCols: the GEMMs get long, and a
// group is also the unit a thread takes (whole samples: no two threads write one output).
// Backward-weight sums over samples, so each group sums into its own partial dW, and partials
// are added in group order afterwards: results do not depend on the thread count.
#include <algorithm>

#include "kernels/cpu/conv2d_direct.h"
#include "kernels/cpu/eigen_types.h"
#include "kernels/cpu/parallel.h"
#include "normlab/core/kernel/stubs.h"

namespace nl::cpu {
namespace {

constexpr int64_t kMinCols = 1024;

bool is_pointwise(const Conv2dParams& p) {
  return p.R == 1 && p.S == 1 && p.stride_h == 1 && p.stride_w == 1 && p.pad_h == 0 && p.pad_w == 0;
}

int64_t group_size(const Conv2dParams& p) {
  const int64_t PQ = std::max<int64_t>(p.P * p.Q, 1);
  return std::clamp<int64_t>(kMinCols / PQ, 1, std::max<int64_t>(p.N, 1));
}

// Output columns [lo, hi) whose input column ow * stride - pad + s lies inside [0, W).
void valid_range(int64_t s, int64_t stride, int64_t pad, int64_t W, int64_t Q, int64_t& lo, int64_t& hi) {
  // ow * stride >= pad - s  and  ow * stride <= W - 1 + pad - s
  const int64_t a = pad - s, b = W - 1 + pad - s;
  lo = a <= 0 ? 0 : (a + stride - 1) / stride;
  hi = b < 0 ? 0 : std::min(Q, b / stride + 1);
  if (hi < lo) hi = lo;
}

// "Same" convolutions (stride 1, output as large as the input) make each im2col row a copy of
// the input plane shifted by d = (r - pad_h) * W + (s - pad_w): one contiguous copy of the valid
// rows, then the columns that fall into the left/right padding (which the flat copy filled with
// pixels of the neighbouring row) are zeroed. Much faster than row-by-row copies of 8-32 floats.
// The zeroing loops here cover 1 to 32 floats; GCC would turn each into a memset call, which
// costs more than the stores.
#define NL_NO_MEMSET_CALLS __attribute__((optimize("no-tree-loop-distribute-patterns")))

bool is_same_stride1(const Conv2dParams& p) {
  return p.stride_h == 1 && p.stride_w == 1 && p.P == p.H && p.Q == p.W;
}

// Rows [oh0, oh1) of the output whose input row oh + r - pad_h lies inside [0, H).
void valid_rows(const Conv2dParams& p, int64_t r, int64_t& oh0, int64_t& oh1) {
  oh0 = std::clamp<int64_t>(p.pad_h - r, 0, p.P);
  oh1 = std::clamp<int64_t>(p.H + p.pad_h - r, oh0, p.P);
}

NL_NO_MEMSET_CALLS void im2col_same(const Conv2dParams& p, const float* x, float* col, int64_t ld) {
  const int64_t HW = p.H * p.W;
  for (int64_t c = 0; c < p.C; ++c) {
    const float* xc = x + c * HW;
    for (int64_t r = 0; r < p.R; ++r) {
      int64_t oh0, oh1;
      valid_rows(p, r, oh0, oh1);
      for (int64_t s = 0; s < p.S; ++s) {
        float* __restrict row = col + ((c * p.R + r) * p.S + s) * ld;
        const int64_t d = (r - p.pad_h) * p.W + (s - p.pad_w);
        int64_t lo, hi;
        valid_range(s, 1, p.pad_w, p.W, p.Q, lo, hi);
        // Flat positions [a, b) whose source index lies inside the plane.
        const int64_t a = std::max(oh0 * p.Q, -d), b = std::min(oh1 * p.Q, HW - d);
        for (int64_t i = 0; i < a; ++i) row[i] = 0.0f;
        const float* __restrict src = xc + d;
        for (int64_t i = a; i < b; ++i) row[i] = src[i];
        for (int64_t i = std::max(a, b); i < p.P * p.Q; ++i) row[i] = 0.0f;
        for (int64_t oh = oh0; oh < oh1; ++oh) {
          for (int64_t ow = 0; ow < lo; ++ow) row[oh * p.Q + ow] = 0.0f;
          for (int64_t ow = hi; ow < p.Q; ++ow) row[oh * p.Q + ow] = 0.0f;
        }
      }
    }
  }
}

// The adjoint of im2col_same. The entries that belong to padding are zeroed in col first (they
// are gradients of the padding, thrown away), so one flat shifted add per row is exact. col is
// scratch, so modifying it is fine.
NL_NO_MEMSET_CALLS void col2im_same(const Conv2dParams& p, float* col, int64_t ld, float* dx) {
  const int64_t HW = p.H * p.W;
  // With an odd filter centred by the padding, the centre tap covers the whole plane with no
  // shift: it initialises dx (no separate zero pass), the other taps add to it.
  const bool centred = p.R == 2 * p.pad_h + 1 && p.S == 2 * p.pad_w + 1;
  if (!centred) std::fill(dx, dx + p.C * HW, 0.0f);
  for (int64_t c = 0; c < p.C; ++c) {
    float* dxc = dx + c * HW;
    if (centred) {
      const float* __restrict centre = col + ((c * p.R + p.pad_h) * p.S + p.pad_w) * ld;
      for (int64_t i = 0; i < HW; ++i) dxc[i] = centre[i];
    }
    for (int64_t r = 0; r < p.R; ++r) {
      int64_t oh0, oh1;
      valid_rows(p, r, oh0, oh1);
      for (int64_t s = 0; s < p.S; ++s) {
        if (centred && r == p.pad_h && s == p.pad_w) continue;
        float* __restrict row = col + ((c * p.R + r) * p.S + s) * ld;
        const int64_t d = (r - p.pad_h) * p.W + (s - p.pad_w);
        int64_t lo, hi;
        valid_range(s, 1, p.pad_w, p.W, p.Q, lo, hi);
        for (int64_t oh = oh0; oh < oh1; ++oh) {
          for (int64_t ow = 0; ow < lo; ++ow) row[oh * p.Q + ow] = 0.0f;
          for (int64_t ow = hi; ow < p.Q; ++ow) row[oh * p.Q + ow] = 0.0f;
        }
        const int64_t a = std::max(oh0 * p.Q, -d), b = std::min(oh1 * p.Q, HW - d);
        float* __restrict dst = dxc + d;
        for (int64_t i = a; i < b; ++i) dst[i] += row[i];
      }
    }
  }
}

// col rows of length P*Q at stride ld: row (c, r, s) holds the input pixel each output position
// sees through filter tap (r, s) of channel c, zero where the tap falls into the padding. The
// valid column range is computed once per tap so the inner loops have no bounds checks; plain
// loops rather than memcpy/memset, which cost a call per 8 to 32 floats here.
NL_NO_MEMSET_CALLS void im2col(const Conv2dParams& p, const float* x, float* col, int64_t ld) {
  if (is_same_stride1(p)) return im2col_same(p, x, col, ld);
  for (int64_t c = 0; c < p.C; ++c) {
    const float* xc = x + c * p.H * p.W;
    for (int64_t r = 0; r < p.R; ++r) {
      for (int64_t s = 0; s < p.S; ++s) {
        float* row = col + ((c * p.R + r) * p.S + s) * ld;
        int64_t lo, hi;
        valid_range(s, p.stride_w, p.pad_w, p.W, p.Q, lo, hi);
        for (int64_t oh = 0; oh < p.P; ++oh) {
          const int64_t ih = oh * p.stride_h - p.pad_h + r;
          float* __restrict out = row + oh * p.Q;
          if (ih < 0 || ih >= p.H) {
            for (int64_t ow = 0; ow < p.Q; ++ow) out[ow] = 0.0f;
            continue;
          }
          for (int64_t ow = 0; ow < lo; ++ow) out[ow] = 0.0f;
          const float* __restrict in = xc + ih * p.W - p.pad_w + s;
          if (p.stride_w == 1) {
            for (int64_t ow = lo; ow < hi; ++ow) out[ow] = in[ow];
          } else {
            for (int64_t ow = lo; ow < hi; ++ow) out[ow] = in[ow * p.stride_w];
          }
          for (int64_t ow = hi; ow < p.Q; ++ow) out[ow] = 0.0f;
        }
      }
    }
  }
}

// The adjoint of im2col: scatter-adds every column entry back to its input pixel (dx = col^T).
void col2im(const Conv2dParams& p, float* col, int64_t ld, float* dx) {
  if (is_same_stride1(p)) return col2im_same(p, col, ld, dx);
  std::fill(dx, dx + p.C * p.H * p.W, 0.0f);
  for (int64_t c = 0; c < p.C; ++c) {
    float* dxc = dx + c * p.H * p.W;
    for (int64_t r = 0; r < p.R; ++r) {
      for (int64_t s = 0; s < p.S; ++s) {
        const float* row = col + ((c * p.R + r) * p.S + s) * ld;
        int64_t lo, hi;
        valid_range(s, p.stride_w, p.pad_w, p.W, p.Q, lo, hi);
        for (int64_t oh = 0; oh < p.P; ++oh) {
          const int64_t ih = oh * p.stride_h - p.pad_h + r;
          if (ih < 0 || ih >= p.H) continue;
          float* __restrict out = dxc + ih * p.W - p.pad_w + s;
          const float* __restrict in = row + oh * p.Q;
          if (p.stride_w == 1) {
            for (int64_t ow = lo; ow < hi; ++ow) out[ow] += in[ow];
          } else {
            for (int64_t ow = lo; ow < hi; ++ow) out[ow * p.stride_w] += in[ow];
          }
        }
      }
    }
  }
}

// gather_rows: [samples][rows][cols] sample-major memory to a [rows][samples * cols] group
// matrix; scatter_rows the reverse.
void gather_rows(const float* src, float* dst, int64_t samples, int64_t rows, int64_t cols) {
  for (int64_t n = 0; n < samples; ++n)
    for (int64_t r = 0; r < rows; ++r)
      std::copy(src + (n * rows + r) * cols, src + (n * rows + r + 1) * cols,
                dst + r * samples * cols + n * cols);
}
void scatter_rows(const float* src, float* dst, int64_t samples, int64_t rows, int64_t cols) {
  for (int64_t n = 0; n < samples; ++n)
    for (int64_t r = 0; r < rows; ++r)
      std::copy(src + r * samples * cols + n * cols, src + r * samples * cols + (n + 1) * cols,
                dst + (n * rows + r) * cols);
}

// The column matrix of samples [n0, n1) as [C*R*S, (n1 - n0)*P*Q]: x itself for one pointwise
// sample, else built in the calling thread's scratch `slot` (im2col, or a gather for 1x1).
const float* group_columns(const Conv2dParams& p, const float* x, int64_t n0, int64_t n1, int slot) {
  const int64_t CRS = p.C * p.R * p.S, PQ = p.P * p.Q, CHW = p.C * p.H * p.W, cols = (n1 - n0) * PQ;
  const bool pointwise = is_pointwise(p);
  if (pointwise && n1 - n0 == 1) return x + n0 * CHW;
  float* col = thread_scratch(slot, static_cast<size_t>(CRS * cols));
  if (pointwise)
    gather_rows(x + n0 * CHW, col, n1 - n0, CRS, PQ);
  else
    for (int64_t n = n0; n < n1; ++n) im2col(p, x + n * CHW, col + (n - n0) * PQ, cols);
  return col;
}

}  // namespace

void conv2d_fwd(const Conv2dParams& p, const float* x, const float* w, const float* bias, float* y) {
  if (conv3x3_direct_fwd_ok(p)) return conv3x3_direct_fwd(p, x, w, bias, y);
  const int64_t CRS = p.C * p.R * p.S, PQ = p.P * p.Q;
  const int64_t g = group_size(p);
  CMapR W(w, p.K, CRS);
  parallel_for(p.N, g, [&](int64_t n0, int64_t n1) {
    const int64_t ns = n1 - n0, cols = ns * PQ;
    const float* X = group_columns(p, x, n0, n1, 0);
    if (ns == 1) {
      MapR(y + n0 * p.K * PQ, p.K, PQ).noalias() = W * CMapR(X, CRS, PQ);
    } else {
      float* out = thread_scratch(1, static_cast<size_t>(p.K * cols));
      MapR(out, p.K, cols).noalias() = W * CMapR(X, CRS, cols);
      scatter_rows(out, y + n0 * p.K * PQ, ns, p.K, PQ);
    }
    if (bias)
      for (int64_t n = n0; n < n1; ++n) MapR(y + n * p.K * PQ, p.K, PQ).colwise() += CVecMap(bias, p.K);
  });
}

void conv2d_bwd(const Conv2dParams& p, const float* x, const float* w, const float* dy, float* dx, float* dw,
                float* dbias) {
  if (dx && conv3x3_direct_bwd_data_ok(p)) {
    conv3x3_direct_bwd_data(p, w, dy, dx);
    if (dw || dbias) conv2d_bwd(p, x, w, dy, nullptr, dw, dbias);
    return;
  }
  if (dw && conv3x3_direct_bwd_weight_ok(p)) {
    conv3x3_direct_bwd_weight(p, x, dy, dw);
    if (dx || dbias) conv2d_bwd(p, x, w, dy, dx, nullptr, dbias);
    return;
  }
  const int64_t CRS = p.C * p.R * p.S, PQ = p.P * p.Q, KCRS = p.K * CRS, CHW = p.C * p.H * p.W;
  const bool pointwise = is_pointwise(p);
  const int64_t g = group_size(p), groups = (p.N + g - 1) / g;
  // Per-group partial dW, owned by the calling thread and reused across calls.
  float* part_w = dw ? thread_scratch(2, static_cast<size_t>(groups * KCRS)) : nullptr;
  CMapR W(w, p.K, CRS);
  // Only dbias left (the direct kernels did dx and dW): no group matrices to build.
  if (dw || dx)
    parallel_for(p.N, g, [&](int64_t n0, int64_t n1) {
      const int64_t ns = n1 - n0, cols = ns * PQ, grp = n0 / g;
      // dY of the group as [K, cols].
      const float* dY = dy + n0 * p.K * PQ;
      if (ns > 1) {
        float* buf = thread_scratch(0, static_cast<size_t>(p.K * cols));
        gather_rows(dy + n0 * p.K * PQ, buf, ns, p.K, PQ);
        dY = buf;
      }
      if (dw) {
        const float* X = group_columns(p, x, n0, n1, 1);
        MapR(part_w + grp * KCRS, p.K, CRS).noalias() =
            CMapR(dY, p.K, cols) * CMapR(X, CRS, cols).transpose();
      }
      if (dx) {
        if (pointwise && ns == 1) {
          MapR(dx + n0 * CHW, CRS, PQ).noalias() = W.transpose() * CMapR(dY, p.K, PQ);
        } else {
          float* dcol = thread_scratch(3, static_cast<size_t>(CRS * cols));
          MapR(dcol, CRS, cols).noalias() = W.transpose() * CMapR(dY, p.K, cols);
          if (pointwise)
            scatter_rows(dcol, dx + n0 * CHW, ns, CRS, PQ);
          else
            for (int64_t n = n0; n < n1; ++n) col2im(p, dcol + (n - n0) * PQ, cols, dx + n * CHW);
        }
      }
    });
  if (dw) {
    VecMap out(dw, KCRS);
    out = CVecMap(part_w, KCRS);
    for (int64_t c = 1; c < groups; ++c) out += CVecMap(part_w + c * KCRS, KCRS);
  }
  if (dbias) {
    // Summed per channel over samples in order, apart from the GEMMs.
    for (int64_t k = 0; k < p.K; ++k) {
      double a = 0.0;
      for (int64_t n = 0; n < p.N; ++n) a += CVecMap(dy + (n * p.K + k) * PQ, PQ).sum();
      dbias[k] = static_cast<float>(a);
    }
  }
}

void linear_fwd(const LinearParams& p, const float* x, const float* w, const float* bias, float* y) {
  MapR Y(y, p.M, p.N);
  Y.noalias() = CMapR(x, p.M, p.K) * CMapR(w, p.N, p.K).transpose();
  if (bias) Y.rowwise() += CVecMap(bias, p.N).transpose();
}

void linear_bwd(const LinearParams& p, const float* x, const float* w, const float* dy, float* dx, float* dw,
                float* dbias) {
  CMapR dY(dy, p.M, p.N);
  if (dx) MapR(dx, p.M, p.K).noalias() = dY * CMapR(w, p.N, p.K);
  if (dw) MapR(dw, p.N, p.K).noalias() = dY.transpose() * CMapR(x, p.M, p.K);
  if (dbias) VecMap(dbias, p.N) = dY.colwise().sum().transpose();
}

// Registration: a kernel whose signature drifts from its stub fails to compile here.
void register_conv_kernels() {
  conv2d_fwd_stub.set(DeviceType::CPU, &conv2d_fwd);
  conv2d_bwd_stub.set(DeviceType::CPU, &conv2d_bwd);
  linear_fwd_stub.set(DeviceType::CPU, &linear_fwd);
  linear_bwd_stub.set(DeviceType::CPU, &linear_bwd);
}

}  // namespace nl::cpu
