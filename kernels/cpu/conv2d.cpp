// conv2d forward and backward (data, weight, bias) as im2col + Eigen GEMM, one sample at a time.
#include <algorithm>
#include <vector>

#include "kernels/cpu/eigen_types.h"
#include "kernels/stubs.h"

namespace nl::cpu {
namespace {

bool is_pointwise(const Conv2dParams& p) {
  return p.R == 1 && p.S == 1 && p.stride_h == 1 && p.stride_w == 1 && p.pad_h == 0 && p.pad_w == 0;
}

// Output columns [lo, hi) whose input column ow * stride - pad + s lies inside [0, W).
void valid_range(int64_t s, int64_t stride, int64_t pad, int64_t W, int64_t Q, int64_t& lo,
                 int64_t& hi) {
  // ow * stride >= pad - s  and  ow * stride <= W - 1 + pad - s
  const int64_t a = pad - s, b = W - 1 + pad - s;
  lo = a <= 0 ? 0 : (a + stride - 1) / stride;
  hi = b < 0 ? 0 : std::min(Q, b / stride + 1);
  if (hi < lo) hi = lo;
}

// col [C*R*S, P*Q]: row (c, r, s) holds the input pixel each output position sees through
// filter tap (r, s) of channel c, zero where the tap falls into the padding. The valid column
// range is computed once per tap so the inner loop has no bounds checks.
void im2col(const Conv2dParams& p, const float* x, float* col) {
  const int64_t PQ = p.P * p.Q;
  for (int64_t c = 0; c < p.C; ++c) {
    const float* xc = x + c * p.H * p.W;
    for (int64_t r = 0; r < p.R; ++r) {
      for (int64_t s = 0; s < p.S; ++s) {
        float* row = col + ((c * p.R + r) * p.S + s) * PQ;
        int64_t lo, hi;
        valid_range(s, p.stride_w, p.pad_w, p.W, p.Q, lo, hi);
        for (int64_t oh = 0; oh < p.P; ++oh) {
          const int64_t ih = oh * p.stride_h - p.pad_h + r;
          float* out = row + oh * p.Q;
          if (ih < 0 || ih >= p.H) {
            std::fill(out, out + p.Q, 0.0f);
            continue;
          }
          std::fill(out, out + lo, 0.0f);
          const float* in = xc + ih * p.W - p.pad_w + s;
          if (p.stride_w == 1) {
            std::copy(in + lo, in + hi, out + lo);
          } else {
            for (int64_t ow = lo; ow < hi; ++ow) out[ow] = in[ow * p.stride_w];
          }
          std::fill(out + hi, out + p.Q, 0.0f);
        }
      }
    }
  }
}

// The adjoint of im2col: scatters-adds every column entry back to its input pixel.
void col2im(const Conv2dParams& p, const float* col, float* dx) {
  const int64_t PQ = p.P * p.Q;
  std::fill(dx, dx + p.C * p.H * p.W, 0.0f);
  for (int64_t c = 0; c < p.C; ++c) {
    float* dxc = dx + c * p.H * p.W;
    for (int64_t r = 0; r < p.R; ++r) {
      for (int64_t s = 0; s < p.S; ++s) {
        const float* row = col + ((c * p.R + r) * p.S + s) * PQ;
        int64_t lo, hi;
        valid_range(s, p.stride_w, p.pad_w, p.W, p.Q, lo, hi);
        for (int64_t oh = 0; oh < p.P; ++oh) {
          const int64_t ih = oh * p.stride_h - p.pad_h + r;
          if (ih < 0 || ih >= p.H) continue;
          float* out = dxc + ih * p.W - p.pad_w + s;
          const float* in = row + oh * p.Q;
          for (int64_t ow = lo; ow < hi; ++ow) out[ow * p.stride_w] += in[ow];
        }
      }
    }
  }
}

}  // namespace

void conv2d_fwd(const Conv2dParams& p, const float* x, const float* w, const float* bias, float* y) {
  const int64_t CRS = p.C * p.R * p.S, PQ = p.P * p.Q;
  const bool pointwise = is_pointwise(p);
  std::vector<float> col(pointwise ? 0 : static_cast<size_t>(CRS * PQ));
  CMapR W(w, p.K, CRS);
  for (int64_t n = 0; n < p.N; ++n) {
    const float* xn = x + n * p.C * p.H * p.W;
    if (!pointwise) im2col(p, xn, col.data());
    CMapR X(pointwise ? xn : col.data(), CRS, PQ);
    MapR Y(y + n * p.K * PQ, p.K, PQ);
    Y.noalias() = W * X;
    if (bias) Y.colwise() += CVecMap(bias, p.K);
  }
}

void conv2d_bwd(const Conv2dParams& p, const float* x, const float* w, const float* dy, float* dx,
                float* dw, float* dbias) {
  const int64_t CRS = p.C * p.R * p.S, PQ = p.P * p.Q;
  const bool pointwise = is_pointwise(p);
  std::vector<float> col(pointwise || !dw ? 0 : static_cast<size_t>(CRS * PQ));
  std::vector<float> dcol(pointwise || !dx ? 0 : static_cast<size_t>(CRS * PQ));
  CMapR W(w, p.K, CRS);
  if (dw) MapR(dw, p.K, CRS).setZero();
  if (dbias) VecMap(dbias, p.K).setZero();
  for (int64_t n = 0; n < p.N; ++n) {
    const float* xn = x + n * p.C * p.H * p.W;
    CMapR dY(dy + n * p.K * PQ, p.K, PQ);
    if (dw) {
      if (!pointwise) im2col(p, xn, col.data());
      CMapR X(pointwise ? xn : col.data(), CRS, PQ);
      MapR(dw, p.K, CRS).noalias() += dY * X.transpose();
    }
    if (dbias) VecMap(dbias, p.K) += dY.rowwise().sum();
    if (dx) {
      float* dxn = dx + n * p.C * p.H * p.W;
      if (pointwise) {
        MapR(dxn, CRS, PQ).noalias() = W.transpose() * dY;
      } else {
        MapR(dcol.data(), CRS, PQ).noalias() = W.transpose() * dY;
        col2im(p, dcol.data(), dxn);
      }
    }
  }
}

void linear_fwd(const LinearParams& p, const float* x, const float* w, const float* bias,
                float* y) {
  MapR Y(y, p.M, p.N);
  Y.noalias() = CMapR(x, p.M, p.K) * CMapR(w, p.N, p.K).transpose();
  if (bias) Y.rowwise() += CVecMap(bias, p.N).transpose();
}

void linear_bwd(const LinearParams& p, const float* x, const float* w, const float* dy, float* dx,
                float* dw, float* dbias) {
  CMapR dY(dy, p.M, p.N);
  if (dx) MapR(dx, p.M, p.K).noalias() = dY * CMapR(w, p.N, p.K);
  if (dw) MapR(dw, p.N, p.K).noalias() = dY.transpose() * CMapR(x, p.M, p.K);
  if (dbias) VecMap(dbias, p.N) = dY.colwise().sum().transpose();
}

}  // namespace nl::cpu
