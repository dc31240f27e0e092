#pragma once
// Finite-difference gradient check in the spirit of dlib's test_layer.
//
// The scalar checked is L = sum_i y_i * R_i for a fixed random R, accumulated in double on the
// host, so the float32 forward is the only source of rounding. The analytic gradient comes from
// backward(y, R); the numeric one from central differences, element by element.
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "helpers.h"
#include "normlab/core/autograd.h"

namespace nl::test {

struct GradCheckOptions {
  double h = 1e-2;     // central-difference step
  double rtol = 1e-2;  // relative to the element's numeric gradient
  double atol = 2e-3;  // relative to the largest numeric gradient of that input (floored at 1e-3)
  // Elements checked per input: all when 0. On the emulated CUDA backend every forward is
  // thousands of fiber switches, so the suite checks an evenly spaced subset there (always
  // including the middle element, which the tamper tests corrupt).
  size_t max_elements = test_device().is_cuda() ? 48 : 0;
  // Lets a test corrupt the analytic gradient of input i before comparison, to prove that the
  // check fails on a wrong gradient.
  std::function<void(size_t, std::vector<float>&)> tamper;
};

struct GradCheckResult {
  bool ok = true;
  std::string message;
};

using GradFn = std::function<Tensor(const std::vector<Tensor>&)>;

inline double weighted_sum(const Tensor& y, const std::vector<float>& r) {
  std::vector<float> v = y.to_vector();
  double s = 0.0;
  for (size_t i = 0; i < v.size(); ++i) s += double(v[i]) * r[i];
  return s;
}

// differentiable[i] says whether input i is checked (others, e.g. labels, are passed through).
inline GradCheckResult grad_check(const GradFn& f, const std::vector<Tensor>& inputs,
                                  const std::vector<bool>& differentiable, const GradCheckOptions& opt = {}) {
  GradCheckResult res;
  std::vector<Tensor> leaves;
  for (size_t i = 0; i < inputs.size(); ++i) {
    Tensor t = inputs[i].clone();
    if (differentiable[i]) t.set_requires_grad(true);
    leaves.push_back(t);
  }
  Tensor y = f(leaves);
  Generator g(4242);
  std::vector<float> r(static_cast<size_t>(y.numel()));
  for (float& v : r) v = g.next_normal();
  y.backward(Tensor::from_vector(r, y.shape(), y.device()));

  std::ostringstream msg;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!differentiable[i]) continue;
    Tensor gi = leaves[i].grad();
    if (!gi.defined()) {
      res.ok = false;
      msg << "input " << i << ": no gradient reached it\n";
      continue;
    }
    std::vector<float> analytic = gi.to_vector();
    if (opt.tamper) opt.tamper(i, analytic);

    std::vector<float> base = inputs[i].to_vector();
    std::vector<size_t> checked;
    if (opt.max_elements == 0 || base.size() <= opt.max_elements) {
      for (size_t j = 0; j < base.size(); ++j) checked.push_back(j);
    } else {
      for (size_t k = 0; k < opt.max_elements; ++k) checked.push_back(k * base.size() / opt.max_elements);
      checked.push_back(base.size() / 2);
    }
    std::vector<double> numeric;
    std::vector<float> analytic_checked;
    NoGradGuard no_grad;
    for (size_t j : checked) {
      std::vector<Tensor> probe = leaves;
      std::vector<float> v = base;
      v[j] = static_cast<float>(base[j] + opt.h);
      double hp = double(v[j]) - base[j];  // the step actually taken in float
      probe[i] = Tensor::from_vector(v, inputs[i].shape(), inputs[i].device());
      double lp = weighted_sum(f(probe), r);
      v[j] = static_cast<float>(base[j] - opt.h);
      double hm = base[j] - double(v[j]);
      probe[i] = Tensor::from_vector(v, inputs[i].shape(), inputs[i].device());
      double lm = weighted_sum(f(probe), r);
      numeric.push_back((lp - lm) / (hp + hm));
      analytic_checked.push_back(analytic[j]);
    }
    double scale = 1e-3;
    for (double n : numeric) scale = std::max(scale, std::abs(n));
    Closeness c = closeness(analytic_checked, numeric, opt.rtol, opt.atol * scale);
    if (c.worst_ratio > 1.0) {
      res.ok = false;
      msg << c.describe("input " + std::to_string(i) + " gradient") << "\n";
    }
  }
  res.message = msg.str();
  return res;
}

}  // namespace nl::test
