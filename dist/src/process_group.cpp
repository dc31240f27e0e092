// The device-independent half of nl::dist: the "single" backend, tensor collectives through host
// memory, and the data-parallel helpers. The engine-specific backends are in mpi.cpp; backends.cpp
// is the one file that knows which ones this build has.
#include "normlab/dist/process_group.h"

#include <algorithm>
#include <vector>

#include "backends.h"
#include "normlab/core/error.h"
#include "normlab/nn/layers.h"
#include "normlab/nn/module.h"

namespace nl::dist {

namespace {

class SingleGroup final : public ProcessGroup {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string backend() const override { return "single"; }
  void all_reduce_sum(float*, int64_t) override {}
  void broadcast(float*, int64_t, int root) override {
    NL_CHECK(root == 0, "dist (single): broadcast from rank ", root, " in a group of one");
  }
  void barrier() override {}
};

void check_float(const Tensor& t, const char* what) {
  NL_CHECK(t.defined(), "dist: ", what, " of an undefined tensor");
  NL_CHECK(t.dtype() == DType::F32, "dist: ", what, " needs a float32 tensor, got ", t);
  NL_CHECK(t.is_contiguous(), "dist: ", what, " needs a contiguous tensor (it writes in place), got a view of shape ",
           t.shape());
}

}  // namespace

std::unique_ptr<ProcessGroup> make_single_group() { return std::make_unique<SingleGroup>(); }

void ProcessGroup::all_reduce_sum(Tensor& t) {
  check_float(t, "all_reduce_sum");
  if (t.device().is_cpu()) return all_reduce_sum(t.data_f32(), t.numel());
  // Another device: through a host copy (the statistics and gradients that travel here are small
  // next to the activations that stay on the device).
  Tensor host = t.to(Device::cpu());
  all_reduce_sum(host.data_f32(), host.numel());
  t.copy_(host);
}

void ProcessGroup::broadcast(Tensor& t, int root) {
  check_float(t, "broadcast");
  if (t.device().is_cpu()) return broadcast(t.data_f32(), t.numel(), root);
  Tensor host = t.to(Device::cpu());
  broadcast(host.data_f32(), host.numel(), root);
  t.copy_(host);
}

void broadcast_parameters(ProcessGroup& pg, nn::Module& net, int root) {
  if (pg.size() == 1) return;
  for (auto& [name, p] : net.named_parameters()) pg.broadcast(p, root);
  for (auto& [name, b] : net.named_buffers())
    if (b.dtype() == DType::F32) pg.broadcast(b, root);
}

int convert_sync_batch_norm(ProcessGroup& pg, nn::Module& net) {
  int turned = 0;
  if (auto* n = dynamic_cast<nn::Norm*>(&net);
      n && n->spec.stats == NormSpec::Stats::PerChannel && n->spec.ghost_batch == 0 && !n->spec.renorm) {
    n->spec.sync = &pg;
    ++turned;
  }
  for (auto& [name, child] : net.children()) turned += convert_sync_batch_norm(pg, *child);
  return turned;
}

void average_gradients(ProcessGroup& pg, nn::Module& net, int64_t bucket_bytes) {
  if (pg.size() == 1) return;
  std::vector<Tensor> grads;
  for (const Tensor& p : net.parameters())
    if (p.grad().defined()) grads.push_back(p.grad());
  const int64_t cap = std::max<int64_t>(1, bucket_bytes / int64_t(sizeof(float)));
  const float inv = 1.0f / float(pg.size());
  std::vector<float> bucket;
  size_t first = 0;
  // Packs grads[first, last) into one buffer, sums it over ranks, writes the mean back. CPU
  // gradients are copied straight from and into their storage (this runs every step); others
  // travel through host copies.
  auto flush = [&](size_t last) {
    if (last == first) return;
    bucket.clear();
    for (size_t i = first; i < last; ++i) {
      if (grads[i].device().is_cpu() && grads[i].is_contiguous()) {
        const float* g = grads[i].data_f32();
        bucket.insert(bucket.end(), g, g + grads[i].numel());
      } else {
        const std::vector<float> v = grads[i].to_vector();
        bucket.insert(bucket.end(), v.begin(), v.end());
      }
    }
    pg.all_reduce_sum(bucket.data(), int64_t(bucket.size()));
    for (float& x : bucket) x *= inv;
    const float* at = bucket.data();
    for (size_t i = first; i < last; ++i) {
      const int64_t n = grads[i].numel();
      if (grads[i].device().is_cpu() && grads[i].is_contiguous())
        std::copy(at, at + n, grads[i].data_f32());
      else
        grads[i].copy_(Tensor::from_vector(std::vector<float>(at, at + n), grads[i].shape()));
      at += n;
    }
    first = last;
  };
  int64_t filled = 0;
  for (size_t i = 0; i < grads.size(); ++i) {
    if (filled > 0 && filled + grads[i].numel() > cap) flush(i), filled = 0;
    filled += grads[i].numel();
  }
  flush(grads.size());
}

}  // namespace nl::dist
