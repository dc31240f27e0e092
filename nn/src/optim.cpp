#include "normlab/nn/optim.h"

#include <cmath>

#include "kernels/stubs.h"
#include "normlab/core/error.h"

namespace nl::nn {

Optimizer::Optimizer(std::vector<Tensor> params) : params_(std::move(params)) {
  for (const Tensor& p : params_) {
    NL_CHECK(p.defined() && p.is_leaf() && p.is_contiguous() && p.dtype() == DType::F32,
             "optimizer: every parameter must be a contiguous float32 leaf tensor, got ", p);
  }
}

void Optimizer::zero_grad() {
  for (Tensor& p : params_) p.zero_grad();
}

SGD::SGD(std::vector<Tensor> params, SgdOptions options)
    : Optimizer(std::move(params)), momentum_(params_.size()), options_(options) {
  NL_CHECK(options.lr >= 0.0f, "SGD: learning rate must be >= 0, got ", options.lr);
  NL_CHECK(options.momentum >= 0.0f, "SGD: momentum must be >= 0, got ", options.momentum);
  NL_CHECK(options.weight_decay >= 0.0f, "SGD: weight_decay must be >= 0, got ",
           options.weight_decay);
  NL_CHECK(!options.nesterov || (options.momentum > 0.0f && options.dampening == 0.0f),
           "SGD: Nesterov momentum needs momentum > 0 and dampening = 0");
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

Adam::Adam(std::vector<Tensor> params, AdamOptions options)
    : Optimizer(std::move(params)),
      m_(params_.size()),
      v_(params_.size()),
      t_(params_.size(), 0),
      options_(options) {
  NL_CHECK(options.lr >= 0.0f, "Adam: learning rate must be >= 0, got ", options.lr);
  NL_CHECK(options.beta1 >= 0.0f && options.beta1 < 1.0f && options.beta2 >= 0.0f &&
               options.beta2 < 1.0f,
           "Adam: betas must be in [0, 1), got ", options.beta1, " and ", options.beta2);
  NL_CHECK(options.eps > 0.0f, "Adam: eps must be positive, got ", options.eps);
  NL_CHECK(options.weight_decay >= 0.0f, "Adam: weight_decay must be >= 0, got ",
           options.weight_decay);
}

void Adam::step() {
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor& p = params_[i];
    Tensor g = p.grad();
    if (!g.defined()) continue;
    if (!m_[i].defined()) {
      m_[i] = Tensor::zeros(p.shape(), DType::F32, p.device());
      v_[i] = Tensor::zeros(p.shape(), DType::F32, p.device());
    }
    int64_t t = ++t_[i];
    AdamParams ap{p.numel(),
                  options_.lr,
                  options_.beta1,
                  options_.beta2,
                  options_.eps,
                  options_.weight_decay,
                  options_.decoupled,
                  static_cast<float>(1.0 - std::pow(double(options_.beta1), double(t))),
                  static_cast<float>(1.0 - std::pow(double(options_.beta2), double(t)))};
    adam_step_stub(p.device(), ap, p.data_f32(), g.data_f32(), m_[i].data_f32(), v_[i].data_f32());
  }
}

}  // namespace nl::nn
