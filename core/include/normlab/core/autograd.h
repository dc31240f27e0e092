#pragma once
// The autograd tape. Each differentiable op that sees an input requiring grad records a Node
// whose backward closure sits right under the op's forward. Nodes carry a global sequence number
// (their position on the tape); backward() collects the nodes reachable from the root and runs
// them in decreasing sequence order, which is the tape walked in reverse restricted to what the
// root depends on. Nodes are owned by the tensors they produced, so a graph that is no longer
// referenced frees itself and there is no global tape to clear.
#include <atomic>
#include <functional>
#include <string>
#include <vector>

#include "normlab/core/tensor.h"

namespace nl {

using BackwardFn = std::function<std::vector<Tensor>(const Tensor& grad_output)>;

struct Node {
  std::string name;
  uint64_t seq = 0;
  // One entry per differentiable input; null where the input needs no gradient.
  std::vector<std::shared_ptr<TensorImpl>> inputs;
  // Returns one gradient per entry of inputs (undefined tensors where none is needed).
  // Cleared after it ran, which frees the saved tensors it captured.
  BackwardFn backward;
};

bool grad_enabled();

// Disables recording for its lifetime (evaluation, optimizer updates).
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

// True when grad mode is on and any of the inputs requires grad: the op must record a node.
bool any_requires_grad(std::initializer_list<const Tensor*> inputs);

// Attaches a node to out. inputs lists the op's differentiable inputs in the order that
// backward returns their gradients; undefined tensors are allowed (optional inputs).
void record_node(Tensor& out, std::string name, std::initializer_list<const Tensor*> inputs,
                 BackwardFn backward);

void backward(const Tensor& root, const Tensor& grad = Tensor());
// backward() that also calls ready(leaf) as soon as a leaf's gradient is final, i.e. once every
// node that feeds it has run, while the nodes of earlier layers are still to run (data parallel
// starts reducing those gradients then). Each leaf that receives a gradient is reported once.
using LeafReadyFn = std::function<void(const Tensor& leaf)>;
void backward(const Tensor& root, const Tensor& grad, const LeafReadyFn& ready);

}  // namespace nl
