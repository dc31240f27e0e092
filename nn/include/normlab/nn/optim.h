#pragma once
// Optimizers with torch.optim semantics, one fused kernel per parameter per step.
#include <string>
#include <utility>
#include <vector>

#include "normlab/core/ops.h"
#include "normlab/core/tensor.h"

namespace nl::nn {

class Optimizer {
 public:
  explicit Optimizer(std::vector<Tensor> params);
  virtual ~Optimizer() = default;
  virtual void step() = 0;  // parameters without a gradient are skipped, as in PyTorch
  void zero_grad();

  // What schedulers drive: the learning rate and the momentum-like coefficient (SGD's momentum,
  // Adam's beta1), as torch's OneCycleLR does.
  virtual float lr() const = 0;
  virtual void set_lr(float lr) = 0;
  virtual float momentum() const = 0;
  virtual void set_momentum(float m) = 0;
  // The state a checkpoint needs to continue bit for bit, by name (SGD: "momentum.<i>" for each
  // parameter i that has a buffer yet; Adam: "m.<i>", "v.<i>", "step.<i>"); load_state puts it
  // back, checking names and shapes.
  using State = std::vector<std::pair<std::string, Tensor>>;
  virtual State state() const = 0;
  virtual void load_state(const State& state) = 0;

 protected:
  std::vector<Tensor> params_;
};

using SgdOptions = nl::SgdOptions;  // normlab/core/ops.h

class SGD : public Optimizer {
 public:
  SGD(std::vector<Tensor> params, SgdOptions options);
  void step() override;
  float lr() const override { return options_.lr; }
  void set_lr(float lr) override { options_.lr = lr; }
  float momentum() const override { return options_.momentum; }
  void set_momentum(float m) override { options_.momentum = m; }
  const SgdOptions& options() const { return options_; }
  State state() const override;
  void load_state(const State& state) override;

 private:
  std::vector<Tensor> momentum_;  // allocated on first use, like PyTorch's lazy state
  SgdOptions options_;
};

using AdamOptions = nl::AdamOptions;  // normlab/core/ops.h

class Adam : public Optimizer {
 public:
  Adam(std::vector<Tensor> params, AdamOptions options);
  void step() override;
  float lr() const override { return options_.lr; }
  void set_lr(float lr) override { options_.lr = lr; }
  float momentum() const override { return options_.beta1; }
  void set_momentum(float m) override { options_.beta1 = m; }
  const AdamOptions& options() const { return options_; }
  State state() const override;
  void load_state(const State& state) override;

 private:
  std::vector<Tensor> m_, v_;
  std::vector<int64_t> t_;
  AdamOptions options_;
};

// AdamW is Adam with decoupled weight decay (default 1e-2, as torch.optim.AdamW).
inline AdamOptions adamw_defaults() {
  AdamOptions o;
  o.weight_decay = 1e-2f;
  o.decoupled = true;
  return o;
}

}  // namespace nl::nn
