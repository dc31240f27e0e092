// The normalisation family on the CPU: BatchNorm2d, GroupNorm (LayerNorm over C,H,W is G = 1)
// and LayerNorm over the last dimension, forward and backward.
//
// Statistics are exact two-pass (mean, then centred sum of squares) accumulated in double, so
// a large mean does not cancel the variance. Backward uses, per normalisation set of size D,
//   dx = rstd * (g*dy - (sum(g*dy) + xhat * sum(g*dy*xhat)) / D)
// with g the per-channel (or per-element) gamma, and dgamma = sum(dy*xhat), dbeta = sum(dy).
// All reductions run in a fixed order, so results are deterministic.
#include <cmath>
#include <vector>

#include "kernels/stubs.h"

namespace nl::cpu {
namespace {

struct Stats {
  double mean, var;
};

// Mean and biased variance of `count` runs of `len` elements, run i starting at x + i * step.
Stats moments(const float* x, int64_t count, int64_t len, int64_t step) {
  double s = 0.0;
  for (int64_t i = 0; i < count; ++i)
    for (int64_t j = 0; j < len; ++j) s += x[i * step + j];
  const double m = s / static_cast<double>(count * len);
  double v = 0.0;
  for (int64_t i = 0; i < count; ++i)
    for (int64_t j = 0; j < len; ++j) {
      double d = x[i * step + j] - m;
      v += d * d;
    }
  return {m, v / static_cast<double>(count * len)};
}

float gamma_at(const float* gamma, int64_t c) { return gamma ? gamma[c] : 1.0f; }
float beta_at(const float* beta, int64_t c) { return beta ? beta[c] : 0.0f; }

// y = x * scale + shift over n contiguous elements.
void affine(const float* x, float* y, int64_t n, float scale, float shift) {
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * scale + shift;
}

// sum(dy) and sum(dy * x) over n contiguous elements.
void dot_sums(const float* x, const float* dy, int64_t n, double& sdy, double& sdyx) {
  double a = 0.0, b = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    a += dy[i];
    b += static_cast<double>(dy[i]) * x[i];
  }
  sdy = a;
  sdyx = b;
}

}  // namespace

// --- BatchNorm: sets are (N, HxW) per channel -------------------------------------------------

void batch_norm_fwd(const NormParams& p, const float* x, const float* gamma, const float* beta,
                    float* running_mean, float* running_var, float* y, float* mean, float* rstd) {
  const int64_t M = p.N * p.HxW, plane = p.C * p.HxW;
  for (int64_t c = 0; c < p.C; ++c) {
    double m, r;
    if (p.training) {
      Stats st = moments(x + c * p.HxW, p.N, p.HxW, plane);
      m = st.mean;
      r = 1.0 / std::sqrt(st.var + p.eps);
      if (running_mean) {
        // PyTorch updates the running variance with the unbiased estimate.
        double unbiased = st.var * static_cast<double>(M) / static_cast<double>(M - 1);
        running_mean[c] = static_cast<float>((1.0 - p.momentum) * running_mean[c] + p.momentum * m);
        running_var[c] =
            static_cast<float>((1.0 - p.momentum) * running_var[c] + p.momentum * unbiased);
      }
    } else {
      m = running_mean[c];
      r = 1.0 / std::sqrt(static_cast<double>(running_var[c]) + p.eps);
    }
    mean[c] = static_cast<float>(m);
    rstd[c] = static_cast<float>(r);
    const float scale = static_cast<float>(gamma_at(gamma, c) * r);
    const float shift = static_cast<float>(beta_at(beta, c) - m * gamma_at(gamma, c) * r);
    for (int64_t n = 0; n < p.N; ++n) {
      int64_t off = n * plane + c * p.HxW;
      affine(x + off, y + off, p.HxW, scale, shift);
    }
  }
}

void batch_norm_bwd(const NormParams& p, const float* x, const float* dy, const float* gamma,
                    const float* mean, const float* rstd, float* dx, float* dgamma, float* dbeta) {
  const int64_t M = p.N * p.HxW, plane = p.C * p.HxW;
  for (int64_t c = 0; c < p.C; ++c) {
    double sdy = 0.0, sdyx = 0.0;
    for (int64_t n = 0; n < p.N; ++n) {
      double a, b;
      dot_sums(x + n * plane + c * p.HxW, dy + n * plane + c * p.HxW, p.HxW, a, b);
      sdy += a;
      sdyx += b;
    }
    const double m = mean[c], r = rstd[c];
    const double sdyxhat = (sdyx - m * sdy) * r;  // sum(dy * xhat)
    if (dgamma) dgamma[c] = static_cast<float>(sdyxhat);
    if (dbeta) dbeta[c] = static_cast<float>(sdy);
    if (!dx) continue;
    const double g = gamma_at(gamma, c);
    // Eval mode normalises with constants, so only the direct term remains.
    const double k1 = p.training ? sdy / M : 0.0, k2 = p.training ? sdyxhat / M : 0.0;
    for (int64_t n = 0; n < p.N; ++n) {
      int64_t off = n * plane + c * p.HxW;
      for (int64_t i = 0; i < p.HxW; ++i) {
        double xhat = (x[off + i] - m) * r;
        dx[off + i] = static_cast<float>(g * r * (dy[off + i] - k1 - xhat * k2));
      }
    }
  }
}

// --- GroupNorm: sets are (C/G, HxW) per (sample, group), contiguous in memory ------------------

void group_norm_fwd(const NormParams& p, const float* x, const float* gamma, const float* beta,
                    float* y, float* mean, float* rstd) {
  const int64_t Cg = p.C / p.G, D = Cg * p.HxW;
  for (int64_t n = 0; n < p.N; ++n) {
    for (int64_t g = 0; g < p.G; ++g) {
      const int64_t base = (n * p.C + g * Cg) * p.HxW;
      Stats st = moments(x + base, 1, D, D);
      const double r = 1.0 / std::sqrt(st.var + p.eps);
      mean[n * p.G + g] = static_cast<float>(st.mean);
      rstd[n * p.G + g] = static_cast<float>(r);
      for (int64_t ci = 0; ci < Cg; ++ci) {
        const int64_t c = g * Cg + ci;
        const double gc = gamma_at(gamma, c);
        affine(x + base + ci * p.HxW, y + base + ci * p.HxW, p.HxW, static_cast<float>(gc * r),
               static_cast<float>(beta_at(beta, c) - st.mean * gc * r));
      }
    }
  }
}

void group_norm_bwd(const NormParams& p, const float* x, const float* dy, const float* gamma,
                    const float* mean, const float* rstd, float* dx, float* dgamma, float* dbeta) {
  const int64_t Cg = p.C / p.G, D = Cg * p.HxW;
  std::vector<double> dg(static_cast<size_t>(p.C), 0.0), db(static_cast<size_t>(p.C), 0.0);
  std::vector<double> sdy(static_cast<size_t>(Cg)), sdyx(static_cast<size_t>(Cg));
  for (int64_t n = 0; n < p.N; ++n) {
    for (int64_t g = 0; g < p.G; ++g) {
      const int64_t base = (n * p.C + g * Cg) * p.HxW;
      const double m = mean[n * p.G + g], r = rstd[n * p.G + g];
      // Per channel sums first: they give dgamma/dbeta and, weighted by gamma, the two
      // group-wide sums dx needs, without a second pass over dy for the statistics.
      double sum_gdy = 0.0, sum_gdy_xhat = 0.0;
      for (int64_t ci = 0; ci < Cg; ++ci) {
        const int64_t c = g * Cg + ci;
        dot_sums(x + base + ci * p.HxW, dy + base + ci * p.HxW, p.HxW, sdy[ci], sdyx[ci]);
        const double sdyxhat = (sdyx[ci] - m * sdy[ci]) * r;
        dg[c] += sdyxhat;
        db[c] += sdy[ci];
        sum_gdy += gamma_at(gamma, c) * sdy[ci];
        sum_gdy_xhat += gamma_at(gamma, c) * sdyxhat;
      }
      if (!dx) continue;
      const double k1 = sum_gdy / D, k2 = sum_gdy_xhat / D;
      for (int64_t ci = 0; ci < Cg; ++ci) {
        const double gc = gamma_at(gamma, g * Cg + ci);
        const int64_t off = base + ci * p.HxW;
        for (int64_t i = 0; i < p.HxW; ++i) {
          double xhat = (x[off + i] - m) * r;
          dx[off + i] = static_cast<float>(r * (gc * dy[off + i] - k1 - xhat * k2));
        }
      }
    }
  }
  for (int64_t c = 0; c < p.C; ++c) {
    if (dgamma) dgamma[c] = static_cast<float>(dg[static_cast<size_t>(c)]);
    if (dbeta) dbeta[c] = static_cast<float>(db[static_cast<size_t>(c)]);
  }
}

// --- LayerNorm over the last dimension: N rows of C elements, per-element affine -------------

void layer_norm_fwd(const NormParams& p, const float* x, const float* gamma, const float* beta,
                    float* y, float* mean, float* rstd) {
  for (int64_t row = 0; row < p.N; ++row) {
    const float* xr = x + row * p.C;
    Stats st = moments(xr, 1, p.C, p.C);
    const double r = 1.0 / std::sqrt(st.var + p.eps);
    mean[row] = static_cast<float>(st.mean);
    rstd[row] = static_cast<float>(r);
    for (int64_t c = 0; c < p.C; ++c) {
      y[row * p.C + c] =
          static_cast<float>((xr[c] - st.mean) * r * gamma_at(gamma, c) + beta_at(beta, c));
    }
  }
}

void layer_norm_bwd(const NormParams& p, const float* x, const float* dy, const float* gamma,
                    const float* mean, const float* rstd, float* dx, float* dgamma, float* dbeta) {
  std::vector<double> dg(static_cast<size_t>(p.C), 0.0), db(static_cast<size_t>(p.C), 0.0);
  for (int64_t row = 0; row < p.N; ++row) {
    const float* xr = x + row * p.C;
    const float* dyr = dy + row * p.C;
    const double m = mean[row], r = rstd[row];
    double sum_gdy = 0.0, sum_gdy_xhat = 0.0;
    for (int64_t c = 0; c < p.C; ++c) {
      const double xhat = (xr[c] - m) * r;
      dg[static_cast<size_t>(c)] += dyr[c] * xhat;
      db[static_cast<size_t>(c)] += dyr[c];
      sum_gdy += gamma_at(gamma, c) * dyr[c];
      sum_gdy_xhat += gamma_at(gamma, c) * dyr[c] * xhat;
    }
    if (!dx) continue;
    const double k1 = sum_gdy / p.C, k2 = sum_gdy_xhat / p.C;
    for (int64_t c = 0; c < p.C; ++c) {
      const double xhat = (xr[c] - m) * r;
      dx[row * p.C + c] = static_cast<float>(r * (gamma_at(gamma, c) * dyr[c] - k1 - xhat * k2));
    }
  }
  for (int64_t c = 0; c < p.C; ++c) {
    if (dgamma) dgamma[c] = static_cast<float>(dg[static_cast<size_t>(c)]);
    if (dbeta) dbeta[c] = static_cast<float>(db[static_cast<size_t>(c)]);
  }
}

}  // namespace nl::cpu
