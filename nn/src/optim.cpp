#include "normlab/nn/optim.h"

#include "kernels/stubs.h"
#include "normlab/core/error.h"

namespace nl::nn {

SGD::SGD(std::vector<Tensor> params, SgdOptions options)
    : params_(std::move(params)), momentum_(params_.size()), options_(options) {
  NL_CHECK(options.lr >= 0.0f, "SGD: learning rate must be >= 0, got ", options.lr);
  NL_CHECK(options.momentum >= 0.0f, "SGD: momentum must be >= 0, got ", options.momentum);
  NL_CHECK(options.weight_decay >= 0.0f, "SGD: weight_decay must be >= 0, got ",
           options.weight_decay);
  NL_CHECK(!options.nesterov || (options.momentum > 0.0f && options.dampening == 0.0f),
           "SGD: Nesterov momentum needs momentum > 0 and dampening = 0");
  for (const Tensor& p : params_) {
    NL_CHECK(p.defined() && p.is_leaf() && p.is_contiguous() && p.dtype() == DType::F32,
             "SGD: every parameter must be a contiguous float32 leaf tensor, got ", p);
  }
}

void SGD::step() {
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor& p = params_[i];
    Tensor g = p.grad();
    if (!g.defined()) continue;
    bool first = !momentum_[i].defined();
    if (first && options_.momentum != 0.0f) {
      momentum_[i] = Tensor::empty(p.shape(), DType::F32, p.device());
    }
    SgdParams sp{p.numel(), options_.lr, options_.momentum, options_.dampening,
                 options_.weight_decay, options_.nesterov, first};
    sgd_step_stub(p.device(), sp, p.data_f32(), g.data_f32(),
                  momentum_[i].defined() ? momentum_[i].data_f32() : nullptr);
  }
}

void SGD::zero_grad() {
  for (Tensor& p : params_) p.zero_grad();
}

}  // namespace nl::nn
