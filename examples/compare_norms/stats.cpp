#include "stats.h"

#include <cmath>
#include <limits>

#include "normlab/core/error.h"

namespace compare {

namespace {

// Continued fraction of the regularized incomplete beta function I_x(a, b) (modified Lentz;
// Numerical Recipes 3rd ed., 6.4). Written here rather than taken from Boost.Math: it is the one
// special function the report needs, and Boost's headers would be a 150 MB build dependency for
// it. Checked against tabulated t quantiles in tests/test_study.cpp.
double beta_cf(double a, double b, double x) {
  constexpr double kTiny = 1e-300, kEps = 1e-15;
  const double qab = a + b, qap = a + 1.0, qam = a - 1.0;
  double c = 1.0, d = 1.0 - qab * x / qap;
  if (std::fabs(d) < kTiny) d = kTiny;
  d = 1.0 / d;
  double h = d;
  for (int m = 1; m <= 300; ++m) {
    const int m2 = 2 * m;
    double aa = m * (b - m) * x / ((qam + m2) * (a + m2));
    d = 1.0 + aa * d;
    if (std::fabs(d) < kTiny) d = kTiny;
    c = 1.0 + aa / c;
    if (std::fabs(c) < kTiny) c = kTiny;
    d = 1.0 / d;
    h *= d * c;
    aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
    d = 1.0 + aa * d;
    if (std::fabs(d) < kTiny) d = kTiny;
    c = 1.0 + aa / c;
    if (std::fabs(c) < kTiny) c = kTiny;
    d = 1.0 / d;
    const double del = d * c;
    h *= del;
    if (std::fabs(del - 1.0) < kEps) break;
  }
  return h;
}

double incomplete_beta(double a, double b, double x) {
  if (x <= 0.0) return 0.0;
  if (x >= 1.0) return 1.0;
  const double front =
      std::exp(std::lgamma(a + b) - std::lgamma(a) - std::lgamma(b) + a * std::log(x) + b * std::log1p(-x));
  // The fraction converges fast for x < (a + 1) / (a + b + 2); use the symmetry otherwise.
  if (x < (a + 1.0) / (a + b + 2.0)) return front * beta_cf(a, b, x) / a;
  return 1.0 - front * beta_cf(b, a, 1.0 - x) / b;
}

}  // namespace

double student_t_cdf(double t, double df) {
  NL_CHECK(df > 0, "student_t_cdf: df must be positive, got ", df);
  if (std::isinf(t)) return t > 0 ? 1.0 : 0.0;
  const double tail = 0.5 * incomplete_beta(df / 2.0, 0.5, df / (df + t * t));  // P(T > |t|)
  return t >= 0 ? 1.0 - tail : tail;
}

double student_t_quantile(double q, double df) {
  NL_CHECK(q > 0 && q < 1, "student_t_quantile: q must be in (0, 1), got ", q);
  // Bisection on the monotone CDF: 200 halvings of [-1e6, 1e6] are far below double's resolution.
  double lo = -1e6, hi = 1e6;
  for (int i = 0; i < 200; ++i) {
    const double mid = 0.5 * (lo + hi);
    (student_t_cdf(mid, df) < q ? lo : hi) = mid;
  }
  return 0.5 * (lo + hi);
}

Summary summarize(const std::vector<double>& v) {
  Summary s;
  s.n = v.size();
  if (v.empty()) return s;
  for (double x : v) s.mean += x / double(s.n);
  s.ci_low = s.ci_high = s.mean;
  if (s.n < 2) return s;
  double ss = 0;
  for (double x : v) ss += (x - s.mean) * (x - s.mean);
  s.std = std::sqrt(ss / double(s.n - 1));
  const double half = student_t_quantile(0.975, double(s.n - 1)) * s.std / std::sqrt(double(s.n));
  s.ci_low = s.mean - half, s.ci_high = s.mean + half;
  return s;
}

Welch welch_t_test(const std::vector<double>& a, const std::vector<double>& b) {
  Welch w;
  if (a.size() < 2 || b.size() < 2) return w;
  const Summary sa = summarize(a), sb = summarize(b);
  w.defined = true;
  w.diff = sa.mean - sb.mean;
  const double va = sa.std * sa.std / double(sa.n), vb = sb.std * sb.std / double(sb.n);
  if (va + vb == 0.0) {
    w.t = w.diff == 0.0 ? 0.0 : std::copysign(std::numeric_limits<double>::infinity(), w.diff);
    w.df = double(sa.n + sb.n - 2);
    w.p = w.diff == 0.0 ? 1.0 : 0.0;
    return w;
  }
  w.t = w.diff / std::sqrt(va + vb);
  // Welch-Satterthwaite degrees of freedom.
  w.df = (va + vb) * (va + vb) / (va * va / double(sa.n - 1) + vb * vb / double(sb.n - 1));
  w.p = 2.0 * (1.0 - student_t_cdf(std::fabs(w.t), w.df));
  return w;
}

}  // namespace compare
