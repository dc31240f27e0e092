#pragma once
#include <vector>

#include "normlab/core/tensor.h"

namespace nl::nn {

struct SgdOptions {
  float lr = 0.01f;
  float momentum = 0.0f;
  float dampening = 0.0f;
  float weight_decay = 0.0f;  // coupled: added to the gradient, as torch.optim.SGD
  bool nesterov = false;
};

// torch.optim.SGD, one fused kernel per parameter per step.
class SGD {
 public:
  SGD(std::vector<Tensor> params, SgdOptions options);
  void step();  // parameters without a gradient are skipped, as in PyTorch
  void zero_grad();
  SgdOptions& options() { return options_; }  // schedulers adjust lr and momentum here

 private:
  std::vector<Tensor> params_;
  std::vector<Tensor> momentum_;  // allocated on first use, like PyTorch's lazy state
  SgdOptions options_;
};

}  // namespace nl::nn
