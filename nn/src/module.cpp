#include "normlab/nn/module.h"

#include <set>

#include "normlab/core/autograd.h"
#include "normlab/core/error.h"

namespace nl::nn {

void Module::register_parameter(std::string name, Tensor& t) {
  if (!t.defined()) return;
  t.set_requires_grad(true);
  params_.emplace_back(std::move(name), t);
}

void Module::register_buffer(std::string name, const Tensor& t) {
  if (t.defined()) buffers_.emplace_back(std::move(name), t);
}

void Module::collect(const std::string& prefix, bool params, NamedTensors& out) const {
  for (const auto& [name, t] : params ? params_ : buffers_) out.emplace_back(prefix + name, t);
  for (const auto& [name, child] : children_) child->collect(prefix + name + ".", params, out);
}

void Module::receptive_field(ReceptiveField& rf) const {
  for (const auto& [name, child] : children_) child->receptive_field(rf);
}

NamedTensors Module::named_parameters() const {
  NamedTensors out;
  collect("", true, out);
  return out;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& [name, t] : named_parameters()) out.push_back(t);
  return out;
}

NamedTensors Module::named_buffers() const {
  NamedTensors out;
  collect("", false, out);
  return out;
}

int64_t Module::parameter_count() const {
  int64_t n = 0;
  for (const auto& [name, t] : named_parameters()) n += t.numel();
  return n;
}

void Module::to(Device device) {
  NoGradGuard no_grad;
  auto move = [&](const NamedTensors& list) {
    for (const auto& [name, t] : list) {
      if (t.device() == device) continue;
      Tensor moved = t.to(device);
      t.impl()->storage = moved.impl()->storage;
      t.impl()->strides = moved.strides();
      t.impl()->offset = 0;
      t.impl()->grad.reset();
    }
  };
  move(named_parameters());
  move(named_buffers());
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [name, child] : children_) child->train(on);
}

void Module::zero_grad() {
  for (auto& [name, t] : named_parameters()) t.zero_grad();
}

StateDict Module::state_dict() const {
  StateDict out;
  for (const auto& [name, t] : named_parameters()) out[name] = t.clone();
  for (const auto& [name, t] : named_buffers()) out[name] = t.clone();
  return out;
}

void Module::load_state_dict(const StateDict& state, bool strict) {
  NamedTensors mine = named_parameters();
  NamedTensors bufs = named_buffers();
  mine.insert(mine.end(), bufs.begin(), bufs.end());
  std::set<std::string> seen;
  NoGradGuard no_grad;
  for (auto& [name, t] : mine) {
    auto it = state.find(name);
    if (it == state.end()) {
      NL_CHECK(!strict, "load_state_dict: missing key '", name, "'");
      continue;
    }
    seen.insert(name);
    const Tensor& src = it->second;
    NL_CHECK(src.shape() == t.shape(), "load_state_dict: '", name, "' has shape ", src.shape(),
             " in the state dict but ", t.shape(), " in the module");
    NL_CHECK(src.dtype() == t.dtype(), "load_state_dict: '", name, "' has dtype ", src.dtype(),
             " in the state dict but ", t.dtype(), " in the module");
    // Copy into the existing storage: layers hold handles to these very tensors.
    t.copy_(src);
  }
  if (strict) {
    for (const auto& [name, t] : state)
      NL_CHECK(seen.count(name), "load_state_dict: unexpected key '", name, "'");
  }
}

}  // namespace nl::nn
