#include "normlab/nn/optim.h"

#include "normlab/core/error.h"
#include "normlab/core/ops.h"

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
  NL_CHECK(options.weight_decay >= 0.0f, "SGD: weight_decay must be >= 0, got ", options.weight_decay);
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
    sgd_step_(p, g, momentum_[i], options_, first);
  }
}

Adam::Adam(std::vector<Tensor> params, AdamOptions options)
    : Optimizer(std::move(params)),
      m_(params_.size()),
      v_(params_.size()),
      t_(params_.size(), 0),
      options_(options) {
  NL_CHECK(options.lr >= 0.0f, "Adam: learning rate must be >= 0, got ", options.lr);
  NL_CHECK(options.beta1 >= 0.0f && options.beta1 < 1.0f && options.beta2 >= 0.0f && options.beta2 < 1.0f,
           "Adam: betas must be in [0, 1), got ", options.beta1, " and ", options.beta2);
  NL_CHECK(options.eps > 0.0f, "Adam: eps must be positive, got ", options.eps);
  NL_CHECK(options.weight_decay >= 0.0f, "Adam: weight_decay must be >= 0, got ", options.weight_decay);
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
    adam_step_(p, g, m_[i], v_[i], options_, ++t_[i]);
  }
}

namespace {
// The parameter index of "prefix.<i>", checked against the parameter count.
size_t state_index(const std::string& name, const std::string& prefix, size_t params) {
  NL_CHECK(name.rfind(prefix + ".", 0) == 0, "optimizer state: unexpected entry '", name, "'");
  const std::string digits = name.substr(prefix.size() + 1);
  NL_CHECK(
      !digits.empty() && digits.size() < 10 && digits.find_first_not_of("0123456789") == std::string::npos,
      "optimizer state: bad index in '", name, "'");
  const size_t i = std::stoul(digits);
  NL_CHECK(i < params, "optimizer state: '", name, "' names parameter ", i, " of ", params);
  return i;
}

void check_like(const Tensor& t, const Tensor& p, const std::string& name) {
  NL_CHECK(t.defined() && t.dtype() == DType::F32 && t.shape() == p.shape(), "optimizer state: '", name,
           "' has shape ", t.defined() ? t.shape() : Shape{}, " but its parameter has ", p.shape());
}
}  // namespace

Optimizer::State SGD::state() const {
  State s;
  for (size_t i = 0; i < momentum_.size(); ++i)
    if (momentum_[i].defined()) s.emplace_back("momentum." + std::to_string(i), momentum_[i]);
  return s;
}

void SGD::load_state(const State& state) {
  for (Tensor& m : momentum_) m = Tensor();
  for (const auto& [name, t] : state) {
    const size_t i = state_index(name, "momentum", params_.size());
    check_like(t, params_[i], name);
    momentum_[i] = t.to(params_[i].device()).clone();
  }
}

Optimizer::State Adam::state() const {
  State s;
  for (size_t i = 0; i < m_.size(); ++i) {
    if (!m_[i].defined()) continue;
    s.emplace_back("m." + std::to_string(i), m_[i]);
    s.emplace_back("v." + std::to_string(i), v_[i]);
    s.emplace_back("step." + std::to_string(i), Tensor::from_ints({static_cast<int32_t>(t_[i])}, {1}));
  }
  return s;
}

void Adam::load_state(const State& state) {
  for (size_t i = 0; i < m_.size(); ++i) m_[i] = v_[i] = Tensor(), t_[i] = 0;
  for (const auto& [name, t] : state) {
    const std::string prefix = name.substr(0, name.find('.'));
    NL_CHECK(prefix == "m" || prefix == "v" || prefix == "step", "optimizer state: unexpected entry '", name,
             "'");
    const size_t i = state_index(name, prefix, params_.size());
    if (prefix == "step") {
      NL_CHECK(t.defined() && t.dtype() == DType::I32 && t.numel() == 1, "optimizer state: '", name,
               "' is not one int32");
      t_[i] = t.to_int_vector()[0];
    } else {
      check_like(t, params_[i], name);
      (prefix == "m" ? m_[i] : v_[i]) = t.to(params_[i].device()).clone();
    }
  }
  for (size_t i = 0; i < m_.size(); ++i)
    NL_CHECK(m_[i].defined() == v_[i].defined(), "optimizer state: parameter ", i,
             " has only one of m and v");
}

}  // namespace nl::nn
