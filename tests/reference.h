#pragma once
// Naive loop references in double precision, written straight from the definitions and sharing
// no code with the kernels they check.
#include <algorithm>
#include <cmath>
#include <functional>
#include <vector>
#include <tuple>
#include <utility>

#include "helpers.h"  // to_double
#include "normlab/core/tensor.h"

namespace nl::test::ref {

using Vec = std::vector<double>;

// Convolution forward, and backward when dy is given (dx, dw, dbias), over NCHW/KCRS vectors.
struct ConvRef {
  Vec y, dx, dw, db;
};
inline ConvRef conv2d_fwd_bwd(const Vec& x, const Vec& w, const Vec* b, const Vec* dy, int64_t N, int64_t C,
                              int64_t H, int64_t W, int64_t K, int64_t R, int64_t S, int64_t stride,
                              int64_t pad) {
  const int64_t P = (H + 2 * pad - R) / stride + 1, Q = (W + 2 * pad - S) / stride + 1;
  ConvRef r;
  r.y.assign(N * K * P * Q, 0.0);
  if (dy) r.dx.assign(x.size(), 0.0), r.dw.assign(w.size(), 0.0), r.db.assign(K, 0.0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k)
      for (int64_t p = 0; p < P; ++p)
        for (int64_t q = 0; q < Q; ++q) {
          const int64_t o = ((n * K + k) * P + p) * Q + q;
          double acc = b ? (*b)[k] : 0.0;
          if (dy) r.db[k] += (*dy)[o];
          for (int64_t c = 0; c < C; ++c)
            for (int64_t i = 0; i < R; ++i)
              for (int64_t j = 0; j < S; ++j) {
                const int64_t ih = p * stride - pad + i, iw = q * stride - pad + j;
                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                const int64_t xi = ((n * C + c) * H + ih) * W + iw, wi = ((k * C + c) * R + i) * S + j;
                acc += x[xi] * w[wi];
                if (dy) r.dx[xi] += (*dy)[o] * w[wi], r.dw[wi] += (*dy)[o] * x[xi];
              }
          r.y[o] = acc;
        }
  return r;
}

inline Vec conv2d(const Tensor& x, const Tensor& w, const Tensor* b, int64_t stride, int64_t pad) {
  const Vec bias = b ? to_double(*b) : Vec();
  return conv2d_fwd_bwd(to_double(x), to_double(w), b ? &bias : nullptr, nullptr, x.size(0), x.size(1),
                        x.size(2), x.size(3), w.size(0), w.size(2), w.size(3), stride, pad)
      .y;
}

// A normalisation over the sets given by set_of(n, c), with gamma/beta per channel:
// y = act(xhat * gamma_c + beta_c) + residual, act = relu or identity; with dy, the backward
// (dx, dgamma, dbeta) from the definitions. mean and var are the sets' biased statistics.
struct NormRef {
  Vec y, dx, dgamma, dbeta, dtau, mean, var;
};
// What the plain set-statistics definition leaves out.
struct NormRefExtras {
  // Batch Renorm: (set, batch mean, batch variance) -> (r, d), constants to the gradient:
  // xhat becomes r * xhat + d.
  std::function<std::pair<double, double>(int64_t, double, double)> renorm;
  const Vec* tau = nullptr;  // TLU max(pre, tau[c]) as the activation (FRN)
};
inline NormRef normalize_fwd_bwd(const Vec& x, int64_t N, int64_t C, int64_t HW, int64_t sets,
                                 const std::function<int64_t(int64_t, int64_t)>& set_of, const Vec* gamma,
                                 const Vec* beta, const Vec* dy, double eps, bool relu = false,
                                 const Vec* residual = nullptr, bool center = true,
                                 const NormRefExtras& ex = {}) {
  NormRef r;
  Vec sum(sets, 0.0), sq(sets, 0.0), cnt(sets, 0.0);
  auto at = [&](int64_t n, int64_t c, int64_t i) { return (n * C + c) * HW + i; };
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < HW; ++i) sum[set_of(n, c)] += x[at(n, c, i)], cnt[set_of(n, c)] += 1;
  // Without centering (RMSNorm) the "mean" is 0 and the variance is the mean square.
  for (int64_t s = 0; s < sets; ++s) sum[s] = center ? sum[s] / cnt[s] : 0.0;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < HW; ++i) {
        const double d = x[at(n, c, i)] - sum[set_of(n, c)];
        sq[set_of(n, c)] += d * d;
      }
  for (int64_t s = 0; s < sets; ++s) sq[s] /= cnt[s];
  r.mean = sum, r.var = sq;
  Vec rr(sets, 1.0), dd(sets, 0.0);
  if (ex.renorm)
    for (int64_t s = 0; s < sets; ++s) std::tie(rr[s], dd[s]) = ex.renorm(s, sum[s], sq[s]);
  const size_t total = x.size();
  Vec xhat(total), g(total);  // g: the gradient reaching xhat, the set's own normalised x
  r.y.resize(total);
  Vec sg(sets, 0.0), sgx(sets, 0.0);
  if (dy) r.dx.resize(total), r.dgamma.assign(C, 0.0), r.dbeta.assign(C, 0.0), r.dtau.assign(C, 0.0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < HW; ++i) {
        const int64_t s = set_of(n, c), k = at(n, c, i);
        const double gc = gamma ? (*gamma)[c] : 1.0;
        xhat[k] = (x[k] - sum[s]) / std::sqrt(sq[s] + eps);
        const double z = rr[s] * xhat[k] + dd[s];
        const double pre = z * gc + (beta ? (*beta)[c] : 0.0);
        const double floor = ex.tau ? (*ex.tau)[c] : relu ? 0.0 : -INFINITY;
        const bool pass = pre > floor;
        r.y[k] = (pass ? pre : ex.tau ? floor : 0.0) + (residual ? (*residual)[k] : 0.0);
        if (!dy) continue;
        const double d = pass ? (*dy)[k] : 0.0;
        if (!pass) r.dtau[c] += (*dy)[k];
        r.dgamma[c] += d * z, r.dbeta[c] += d;
        g[k] = d * gc * rr[s];
        sg[s] += g[k], sgx[s] += g[k] * xhat[k];
      }
  if (dy)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < C; ++c)
        for (int64_t i = 0; i < HW; ++i) {
          const int64_t s = set_of(n, c), k = at(n, c, i);
          r.dx[k] =
              (g[k] - (center ? sg[s] / cnt[s] : 0.0) - xhat[k] * sgx[s] / cnt[s]) / std::sqrt(sq[s] + eps);
        }
  return r;
}

// Normalises every set given by `set_of(n, c)`; gamma/beta indexed by channel.
template <typename SetOf>
Vec normalize(const Tensor& x, int64_t sets, SetOf set_of, const Tensor* gamma, const Tensor* beta,
              double eps, Vec* mean_out = nullptr, Vec* var_out = nullptr) {
  const int64_t N = x.size(0), C = x.size(1), HW = x.numel() / (N * C);
  const Vec g = gamma ? to_double(*gamma) : Vec(), b = beta ? to_double(*beta) : Vec();
  NormRef r = normalize_fwd_bwd(to_double(x), N, C, HW, sets, set_of, gamma ? &g : nullptr,
                                beta ? &b : nullptr, nullptr, eps);
  if (mean_out) *mean_out = r.mean;
  if (var_out) *var_out = r.var;
  return r.y;
}

inline Vec max_pool2d(const Tensor& x, int64_t k, int64_t stride) {
  int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  int64_t P = (H - k) / stride + 1, Q = (W - k) / stride + 1;
  Vec y;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t p = 0; p < P; ++p)
        for (int64_t q = 0; q < Q; ++q) {
          double m = -INFINITY;
          for (int64_t i = 0; i < k; ++i)
            for (int64_t j = 0; j < k; ++j)
              m = std::max(m, double(x.at({n, c, p * stride + i, q * stride + j})));
          y.push_back(m);
        }
  return y;
}

inline Vec log_softmax(const Tensor& x) {
  Vec y;
  for (int64_t i = 0; i < x.size(0); ++i) {
    double s = 0.0;
    for (int64_t c = 0; c < x.size(1); ++c) s += std::exp(double(x.at({i, c})));
    for (int64_t c = 0; c < x.size(1); ++c) y.push_back(x.at({i, c}) - std::log(s));
  }
  return y;
}

}  // namespace nl::test::ref
