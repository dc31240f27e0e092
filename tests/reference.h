#pragma once
// Naive loop references in double precision, written straight from the definitions and sharing
// no code with the kernels they check.
#include <algorithm>
#include <cmath>
#include <vector>

#include "normlab/core/tensor.h"

namespace nl::test::ref {

using Vec = std::vector<double>;

inline Vec conv2d(const Tensor& x, const Tensor& w, const Tensor* b, int64_t stride, int64_t pad) {
  int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  int64_t K = w.size(0), R = w.size(2), S = w.size(3);
  int64_t P = (H + 2 * pad - R) / stride + 1, Q = (W + 2 * pad - S) / stride + 1;
  Vec y;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k)
      for (int64_t p = 0; p < P; ++p)
        for (int64_t q = 0; q < Q; ++q) {
          double acc = b ? b->at({k}) : 0.0;
          for (int64_t c = 0; c < C; ++c)
            for (int64_t r = 0; r < R; ++r)
              for (int64_t s = 0; s < S; ++s) {
                int64_t ih = p * stride - pad + r, iw = q * stride - pad + s;
                if (ih >= 0 && ih < H && iw >= 0 && iw < W)
                  acc += double(x.at({n, c, ih, iw})) * w.at({k, c, r, s});
              }
          y.push_back(acc);
        }
  return y;
}

// Normalises every set given by `set_of(n, c, hw)`; gamma/beta indexed by channel.
template <typename SetOf>
Vec normalize(const Tensor& x, int64_t sets, SetOf set_of, const Tensor* gamma, const Tensor* beta,
              double eps, Vec* mean_out = nullptr, Vec* var_out = nullptr) {
  int64_t N = x.size(0), C = x.size(1), HW = x.numel() / (N * C);
  Tensor xf = x.reshape({N, C, HW});
  Vec sum(sets, 0.0), sq(sets, 0.0), cnt(sets, 0.0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < HW; ++i) sum[set_of(n, c)] += xf.at({n, c, i}), cnt[set_of(n, c)] += 1;
  for (int64_t s = 0; s < sets; ++s) sum[s] /= cnt[s];
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < HW; ++i) {
        double d = xf.at({n, c, i}) - sum[set_of(n, c)];
        sq[set_of(n, c)] += d * d;
      }
  for (int64_t s = 0; s < sets; ++s) sq[s] /= cnt[s];
  if (mean_out) *mean_out = sum;
  if (var_out) *var_out = sq;
  Vec y;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < HW; ++i) {
        int64_t s = set_of(n, c);
        double v = (xf.at({n, c, i}) - sum[s]) / std::sqrt(sq[s] + eps);
        y.push_back(v * (gamma ? gamma->at({c}) : 1.0) + (beta ? beta->at({c}) : 0.0));
      }
  return y;
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
            for (int64_t j = 0; j < k; ++j) m = std::max(m, double(x.at({n, c, p * stride + i, q * stride + j})));
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
