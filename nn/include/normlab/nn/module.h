#pragma once
// Module: named parameters, buffers and child modules, train/eval mode and a state dict.
// Tensors are handles, so a layer keeps its own `weight` member and registers the same handle;
// load_state_dict copies values into the existing storage so both stay in step.
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "normlab/core/tensor.h"

namespace nl::nn {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;
using StateDict = std::map<std::string, Tensor>;

class Module {
 public:
  virtual ~Module() = default;
  virtual Tensor forward(const Tensor& x) = 0;
  Tensor operator()(const Tensor& x) { return forward(x); }
  // The layer's type, e.g. "Conv2d(3, 16, k=3, p=1)", for summaries and errors.
  virtual std::string describe() const = 0;

  // Receptive field bookkeeping for summaries: size of the field in input pixels and the jump
  // (input pixels between adjacent outputs). Containers recurse; spatial layers override.
  struct ReceptiveField {
    int64_t size = 1, jump = 1;
    bool global = false;
  };
  virtual void receptive_field(ReceptiveField& rf) const;

  NamedTensors named_parameters() const;  // recursive, names joined with '.'
  std::vector<Tensor> parameters() const;
  NamedTensors named_buffers() const;
  int64_t parameter_count() const;
  const std::vector<std::pair<std::string, std::shared_ptr<Module>>>& children() const { return children_; }

  // Moves every parameter and buffer to `device` in place (the tensors keep their identity, so
  // layers and optimizers built before still see them).
  void to(Device device);

  void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }
  void zero_grad();

  StateDict state_dict() const;  // parameters and buffers, cloned
  // strict: every key of the module must be present and no unknown key may appear.
  void load_state_dict(const StateDict& state, bool strict = true);

 protected:
  void register_parameter(std::string name, Tensor& t);
  void register_buffer(std::string name, const Tensor& t);
  template <typename M>
  std::shared_ptr<M> register_module(std::string name, std::shared_ptr<M> m) {
    children_.emplace_back(std::move(name), m);
    return m;
  }

 private:
  void collect(const std::string& prefix, bool params, NamedTensors& out) const;
  NamedTensors params_, buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  bool training_ = true;
};

}  // namespace nl::nn
