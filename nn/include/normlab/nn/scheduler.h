#pragma once
// Learning-rate schedulers with torch.optim.lr_scheduler's formulas. A scheduler sets the
// optimizer's values for step 0 on construction; each step() advances one step (one batch for
// OneCycle, one epoch for StepLR, as they are used in PyTorch).
#include <cstdint>

#include "normlab/nn/optim.h"

namespace nl::nn {

class Scheduler {
 public:
  explicit Scheduler(Optimizer& opt) : opt_(opt) {}
  virtual ~Scheduler() = default;
  void step() { apply(++step_); }
  int64_t step_count() const { return step_; }
  // Continues from a checkpoint: the optimizer gets the rate (and momentum) of that step.
  void set_step_count(int64_t step) {
    step_ = step;
    apply(step_);
  }

 protected:
  virtual void apply(int64_t step) = 0;
  Optimizer& opt_;
  int64_t step_ = 0;
};

struct OneCycleOptions {
  float pct_start = 0.3f;
  bool cos_anneal = true;  // false: linear
  bool cycle_momentum = true;
  float base_momentum = 0.85f, max_momentum = 0.95f;
  float div_factor = 25.0f;       // initial lr = max_lr / div_factor
  float final_div_factor = 1e4f;  // final lr = initial lr / final_div_factor
};

// torch.optim.lr_scheduler.OneCycleLR (two phases).
class OneCycleLR : public Scheduler {
 public:
  OneCycleLR(Optimizer& opt, float max_lr, int64_t total_steps, OneCycleOptions o = {});
  // The learning rate and momentum at a step, without touching the optimizer.
  float lr_at(int64_t step) const;
  float momentum_at(int64_t step) const;

 protected:
  void apply(int64_t step) override;

 private:
  float anneal(float start, float end, double pct) const;
  float value_at(int64_t step, float a0, float a1, float a2) const;
  float max_lr_;
  int64_t total_;
  OneCycleOptions o_;
};

// torch.optim.lr_scheduler.StepLR: lr = base_lr * gamma^(step / step_size).
class StepLR : public Scheduler {
 public:
  StepLR(Optimizer& opt, int64_t step_size, float gamma = 0.1f);

 protected:
  void apply(int64_t step) override;

 private:
  float base_lr_;
  int64_t step_size_;
  float gamma_;
};

}  // namespace nl::nn
