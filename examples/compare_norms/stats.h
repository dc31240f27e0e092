#pragma once
// The statistics of a study's report: mean, sample standard deviation, a 95% confidence interval
// for the mean and Welch's unequal-variance t-test between two sets of runs (e.g. the seeds of
// BatchNorm and of GroupNorm at one ghost batch). Seeds are few (2-5), so intervals and p-values
// come from Student's t distribution, not the normal.
#include <cstddef>
#include <vector>

namespace compare {

struct Summary {
  size_t n = 0;
  double mean = 0, std = 0;  // sample std (n - 1); 0 for n < 2
  double ci_low = 0,
         ci_high = 0;  // 95% CI of the mean: mean -+ t(0.975, n-1) std / sqrt(n); = mean for n < 2
};
Summary summarize(const std::vector<double>& v);

struct Welch {
  bool defined = false;  // false when either side has fewer than 2 runs
  double diff = 0;       // mean(a) - mean(b)
  double t = 0, df = 0;
  double p = 1;  // two-sided
};
// Both sides constant: p is 1 when the means are equal and 0 when they differ.
Welch welch_t_test(const std::vector<double>& a, const std::vector<double>& b);

// Student's t distribution: P(T <= t) with df degrees of freedom (df > 0, not necessarily whole),
// and its inverse for 0 < q < 1.
double student_t_cdf(double t, double df);
double student_t_quantile(double q, double df);

}  // namespace compare
