#include "normlab/core/autograd.h"

#include <algorithm>
#include <unordered_map>
#include <unordered_set>

#include "normlab/core/error.h"
#include "normlab/core/ops.h"

namespace nl {
namespace {
thread_local bool g_grad_enabled = true;
std::atomic<uint64_t> g_next_seq{1};

// Out of place on purpose: a gradient tensor may be shared by several inputs (add passes the
// same one to both), so accumulating in place would corrupt the others.
Tensor accumulate(const Tensor& acc, const Tensor& g) {
  if (!acc.defined()) return g;
  NoGradGuard guard;
  return add(acc, g);
}
}  // namespace

bool grad_enabled() { return g_grad_enabled; }
NoGradGuard::NoGradGuard() : previous_(g_grad_enabled) { g_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { g_grad_enabled = previous_; }

bool any_requires_grad(std::initializer_list<const Tensor*> inputs) {
  if (!g_grad_enabled) return false;
  for (const Tensor* t : inputs) {
    if (t && t->defined() && t->requires_grad()) return true;
  }
  return false;
}

void record_node(Tensor& out, std::string name, std::initializer_list<const Tensor*> inputs,
                 BackwardFn backward_fn) {
  auto node = std::make_shared<Node>();
  node->name = std::move(name);
  node->seq = g_next_seq.fetch_add(1);
  for (const Tensor* t : inputs) {
    bool needed = t && t->defined() && t->requires_grad();
    node->inputs.push_back(needed ? t->impl() : nullptr);
  }
  node->backward = std::move(backward_fn);
  out.impl()->grad_fn = std::move(node);
  out.impl()->requires_grad = true;
}

void backward(const Tensor& root, const Tensor& grad) { backward(root, grad, nullptr); }

void backward(const Tensor& root, const Tensor& grad, const LeafReadyFn& ready) {
  NL_CHECK(root.defined(), "backward() on an undefined tensor");
  NL_CHECK(root.requires_grad(),
           "backward(): the tensor does not require grad (no input of the computation required "
           "grad, or it was computed under NoGradGuard)");
  Tensor seed = grad;
  if (!seed.defined()) {
    NL_CHECK(root.numel() == 1,
             "backward(): a gradient must be given for a non-scalar tensor of "
             "shape ",
             root.shape());
    seed = Tensor::ones(root.shape(), root.device());
  }
  NL_CHECK(seed.shape() == root.shape(), "backward(): gradient of shape ", seed.shape(),
           " for a tensor of shape ", root.shape());
  NL_CHECK(seed.device() == root.device(), "backward(): gradient on ", seed.device(), " for a tensor on ",
           root.device());

  NoGradGuard no_grad;  // backward closures must not record new nodes
  if (root.is_leaf()) {
    root.set_grad(accumulate(root.grad(), seed.contiguous()));
    if (ready) ready(root);
    return;
  }

  // Collect the nodes the root depends on.
  std::vector<Node*> order;
  std::unordered_set<Node*> seen;
  std::vector<Node*> stack{root.grad_fn().get()};
  seen.insert(stack.back());
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    order.push_back(n);
    for (const auto& in : n->inputs) {
      if (in && in->grad_fn && seen.insert(in->grad_fn.get()).second) stack.push_back(in->grad_fn.get());
    }
  }
  // A node's inputs were produced before it, so decreasing sequence order is a valid reverse
  // topological order: every node runs after all nodes that feed gradient into it.
  std::sort(order.begin(), order.end(), [](Node* a, Node* b) { return a->seq > b->seq; });

  // With a ready callback: how many of the nodes still to run feed each leaf. A leaf is final
  // when its count reaches 0, whether or not the last of them gave it a gradient.
  std::unordered_map<TensorImpl*, int> feeds;
  if (ready)
    for (Node* n : order)
      for (const auto& in : n->inputs)
        if (in && !in->grad_fn) ++feeds[in.get()];
  auto done_with = [&](Node* n) {
    if (!ready) return;
    for (const auto& in : n->inputs)
      if (in && !in->grad_fn && --feeds[in.get()] == 0) {
        Tensor leaf(in);
        if (leaf.grad().defined()) ready(leaf);
      }
  };

  std::unordered_map<Node*, Tensor> pending;
  pending[root.grad_fn().get()] = seed.contiguous();
  for (Node* n : order) {
    auto it = pending.find(n);
    if (it == pending.end()) {  // reachable, but no gradient flowed into it
      done_with(n);
      continue;
    }
    Tensor g = std::move(it->second);
    pending.erase(it);
    NL_CHECK(n->backward != nullptr, "backward() through '", n->name,
             "' a second time: its saved tensors were freed by the first backward");
    std::vector<Tensor> grads = n->backward(g);
    NL_CHECK(grads.size() == n->inputs.size(), "internal: backward of '", n->name, "' returned ",
             grads.size(), " gradients for ", n->inputs.size(), " inputs");
    n->backward = nullptr;  // frees saved tensors
    for (size_t i = 0; i < grads.size(); ++i) {
      const auto& in = n->inputs[i];
      if (!in || !grads[i].defined()) continue;
      Tensor gi = grads[i].contiguous();
      NL_CHECK(gi.shape() == in->shape, "internal: backward of '", n->name, "' gave input ", i,
               " a gradient of shape ", gi.shape(), ", expected ", in->shape);
      if (in->grad_fn) {
        Tensor& slot = pending[in->grad_fn.get()];
        slot = accumulate(slot, gi);
      } else {
        Tensor leaf(in);
        leaf.set_grad(accumulate(leaf.grad(), gi));
      }
    }
    done_with(n);
  }
}

}  // namespace nl
