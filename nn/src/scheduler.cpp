#include "normlab/nn/scheduler.h"

#include <cmath>

#include "normlab/core/error.h"

namespace nl::nn {

OneCycleLR::OneCycleLR(Optimizer& opt, float max_lr, int64_t total_steps, OneCycleOptions o)
    : Scheduler(opt), max_lr_(max_lr), total_(total_steps), o_(o) {
  NL_CHECK(max_lr > 0.0f, "OneCycleLR: max_lr must be positive, got ", max_lr);
  NL_CHECK(total_steps >= 2, "OneCycleLR: needs at least 2 steps, got ", total_steps);
  NL_CHECK(o.pct_start > 0.0f && o.pct_start < 1.0f, "OneCycleLR: pct_start must be in (0, 1), got ",
           o.pct_start);
  apply(0);
}

// In double: near the end of the cycle cos(pi * pct) + 1 is tiny and float loses the rate.
float OneCycleLR::anneal(float start, float end, double pct) const {
  if (o_.cos_anneal) return float(end + (double(start) - end) / 2.0 * (std::cos(M_PI * pct) + 1.0));
  return float((double(end) - start) * pct + start);
}

// PyTorch's phase walk: phase 1 ends at pct_start * total - 1 (a float), phase 2 at total - 1.
float OneCycleLR::value_at(int64_t step, float a0, float a1, float a2) const {
  const double end1 = double(o_.pct_start) * double(total_) - 1.0;
  const double end2 = double(total_ - 1);
  if (double(step) <= end1) return anneal(a0, a1, double(step) / end1);
  return anneal(a1, a2, (double(step) - end1) / (end2 - end1));
}

float OneCycleLR::lr_at(int64_t step) const {
  const float initial = max_lr_ / o_.div_factor;
  return value_at(step, initial, max_lr_, initial / o_.final_div_factor);
}

float OneCycleLR::momentum_at(int64_t step) const {
  return value_at(step, o_.max_momentum, o_.base_momentum, o_.max_momentum);
}

void OneCycleLR::apply(int64_t step) {
  NL_CHECK(step < total_, "OneCycleLR: stepped ", step + 1, " times but total_steps is ", total_);
  opt_.set_lr(lr_at(step));
  if (o_.cycle_momentum) opt_.set_momentum(momentum_at(step));
}

StepLR::StepLR(Optimizer& opt, int64_t step_size, float gamma)
    : Scheduler(opt), base_lr_(opt.lr()), step_size_(step_size), gamma_(gamma) {
  NL_CHECK(step_size > 0, "StepLR: step_size must be positive, got ", step_size);
}

void StepLR::apply(int64_t step) { opt_.set_lr(base_lr_ * std::pow(gamma_, float(step / step_size_))); }

}  // namespace nl::nn
