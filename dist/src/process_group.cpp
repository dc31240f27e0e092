// The device-independent half of nl::dist: the "single" backend, tensor collectives through host
// memory, and the data-parallel helpers. The engine-specific backends are in mpi.cpp; backends.cpp
// is the one file that knows which ones this build has.
#include "normlab/dist/process_group.h"

#include <algorithm>
#include <unordered_map>
#include <vector>

#include "backends.h"
#include "normlab/core/autograd.h"
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

namespace {
struct DoneWork final : ProcessGroup::Work {
  bool test() override { return true; }
  void wait() override {}
};
}  // namespace

std::unique_ptr<ProcessGroup::Work> ProcessGroup::all_reduce_sum_async(float* data, int64_t n) {
  all_reduce_sum(data, n);
  return std::make_unique<DoneWork>();
}

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

// --- GradientReducer ------------------------------------------------------------------------------

struct GradientReducer::State {
  ProcessGroup* pg = nullptr;
  std::vector<Tensor> params;                      // reverse registration order
  std::vector<std::vector<size_t>> buckets;        // indices into params
  std::unordered_map<const TensorImpl*, size_t> where;  // param -> its index
  std::vector<size_t> bucket_of;                   // param index -> bucket
  // Per step:
  std::vector<int> missing;                        // gradients a bucket still waits for
  std::vector<std::vector<float>> data;
  std::vector<std::unique_ptr<ProcessGroup::Work>> work;
  std::vector<bool> reported;

  void pack_and_start(size_t b) {
    std::vector<float>& buf = data[b];
    buf.clear();
    for (size_t i : buckets[b]) {
      const Tensor& p = params[i];
      const Tensor g = p.grad();
      if (!g.defined()) {
        buf.insert(buf.end(), size_t(p.numel()), 0.0f);
      } else if (g.device().is_cpu() && g.is_contiguous()) {
        buf.insert(buf.end(), g.data_f32(), g.data_f32() + g.numel());
      } else {
        const std::vector<float> v = g.to_vector();
        buf.insert(buf.end(), v.begin(), v.end());
      }
    }
    work[b] = pg->all_reduce_sum_async(buf.data(), int64_t(buf.size()));
  }
};

GradientReducer::GradientReducer(ProcessGroup& pg, nn::Module& net, int64_t bucket_bytes) : s_(std::make_unique<State>()) {
  s_->pg = &pg;
  std::vector<Tensor> ps = net.parameters();
  std::reverse(ps.begin(), ps.end());
  const int64_t cap = std::max<int64_t>(1, bucket_bytes / int64_t(sizeof(float)));
  int64_t filled = 0;
  for (const Tensor& p : ps) {
    if (s_->buckets.empty() || (filled > 0 && filled + p.numel() > cap)) s_->buckets.emplace_back(), filled = 0;
    s_->where[p.impl().get()] = s_->params.size();
    s_->bucket_of.push_back(s_->buckets.size() - 1);
    s_->buckets.back().push_back(s_->params.size());
    s_->params.push_back(p);
    filled += p.numel();
  }
}

GradientReducer::~GradientReducer() = default;

int64_t GradientReducer::buckets() const { return int64_t(s_->buckets.size()); }

void GradientReducer::backward(const Tensor& loss, const Tensor& seed) {
  State& s = *s_;
  const size_t nb = s.buckets.size();
  s.missing.assign(nb, 0);
  for (size_t b = 0; b < nb; ++b) s.missing[b] = int(s.buckets[b].size());
  s.data.resize(nb);
  s.work.clear();
  s.work.resize(nb);
  s.reported.assign(s.params.size(), false);
  auto mark = [&](size_t i) {
    if (s.reported[i]) return;
    s.reported[i] = true;
    const size_t b = s.bucket_of[i];
    if (--s.missing[b] == 0) s.pack_and_start(b);
  };
  nl::backward(loss, seed, [&](const Tensor& leaf) {
    if (s.pg->size() == 1) return;
    const auto it = s.where.find(leaf.impl().get());
    if (it != s.where.end()) mark(it->second);
    // Let the engine progress the buckets already in flight while backward goes on.
    for (auto& w : s.work)
      if (w) w->test();
  });
  if (s.pg->size() == 1) return;
  // Parameters that got no gradient: their buckets start now (in order, as on every rank).
  for (size_t i = 0; i < s.params.size(); ++i) mark(i);
  const float inv = 1.0f / float(s.pg->size());
  for (size_t b = 0; b < nb; ++b) {
    s.work[b]->wait();
    const float* at = s.data[b].data();
    for (size_t i : s.buckets[b]) {
      const Tensor& p = s.params[i];
      const int64_t n = p.numel();
      Tensor g = p.grad();
      if (g.defined() && g.device().is_cpu() && g.is_contiguous()) {
        float* dst = g.data_f32();
        for (int64_t k = 0; k < n; ++k) dst[k] = at[k] * inv;
      } else if (g.defined()) {
        std::vector<float> v(at, at + n);
        for (float& x : v) x *= inv;
        g.copy_(Tensor::from_vector(v, g.shape()));
      }
      at += n;
    }
  }
}

}  // namespace nl::dist
