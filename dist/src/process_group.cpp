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

// The gradients of params, one after the other, appended to buf (zeros for a parameter without
// one). CPU gradients are copied straight from their storage (this runs every step); others
// travel through host copies.
void pack_grads(const std::vector<Tensor>& params, std::vector<float>& buf) {
  buf.clear();
  for (const Tensor& p : params) {
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
}

// The reverse: each defined gradient set to scale x its part of buf.
void unpack_grads(const std::vector<float>& buf, float scale, const std::vector<Tensor>& params) {
  const float* at = buf.data();
  for (const Tensor& p : params) {
    const int64_t n = p.numel();
    const Tensor g = p.grad();
    if (g.defined() && g.device().is_cpu() && g.is_contiguous()) {
      float* dst = g.data_f32();
      for (int64_t k = 0; k < n; ++k) dst[k] = at[k] * scale;
    } else if (g.defined()) {
      std::vector<float> v(at, at + n);
      for (float& x : v) x *= scale;
      g.copy_(Tensor::from_vector(v, g.shape()));
    }
    at += n;
  }
}

}  // namespace

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
  broadcast_buffers(pg, net, root);
}

void broadcast_buffers(ProcessGroup& pg, nn::Module& net, int root) {
  if (pg.size() == 1) return;
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
  std::vector<Tensor> params;
  for (const Tensor& p : net.parameters())
    if (p.grad().defined()) params.push_back(p);
  const int64_t cap = std::max<int64_t>(1, bucket_bytes / int64_t(sizeof(float)));
  const float inv = 1.0f / float(pg.size());
  std::vector<float> bucket;
  std::vector<Tensor> in_bucket;
  // Packs the bucket, sums it over ranks, writes the mean back.
  auto flush = [&] {
    if (in_bucket.empty()) return;
    pack_grads(in_bucket, bucket);
    pg.all_reduce_sum(bucket.data(), int64_t(bucket.size()));
    unpack_grads(bucket, inv, in_bucket);
    in_bucket.clear();
  };
  int64_t filled = 0;
  for (const Tensor& p : params) {
    if (filled > 0 && filled + p.numel() > cap) flush(), filled = 0;
    in_bucket.push_back(p);
    filled += p.numel();
  }
  flush();
}

// --- GradientReducer ------------------------------------------------------------------------------

struct GradientReducer::State {
  ProcessGroup* pg = nullptr;
  std::vector<std::vector<Tensor>> buckets;        // parameters in reverse registration order
  struct Slot {
    size_t bucket, index;  // index: the parameter's position over all buckets
  };
  std::unordered_map<const TensorImpl*, Slot> slot;
  // Per step:
  std::vector<int> missing;                        // gradients a bucket still waits for
  std::vector<std::vector<float>> data;            // kept across steps (no allocation per step)
  std::vector<std::unique_ptr<ProcessGroup::Work>> work;
  std::vector<char> reported;                      // by Slot::index

  void start(size_t b) {
    pack_grads(buckets[b], data[b]);
    work[b] = pg->all_reduce_sum_async(data[b].data(), int64_t(data[b].size()));
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
    const State::Slot at{s_->buckets.size() - 1, s_->slot.size()};  // before slot[] inserts
    s_->slot[p.impl().get()] = at;
    s_->buckets.back().push_back(p);
    filled += p.numel();
  }
  s_->data.resize(s_->buckets.size());
}

GradientReducer::~GradientReducer() = default;

int64_t GradientReducer::buckets() const { return int64_t(s_->buckets.size()); }

void GradientReducer::backward(const Tensor& loss, const Tensor& seed) {
  State& s = *s_;
  if (s.pg->size() == 1) return nl::backward(loss, seed);
  const size_t nb = s.buckets.size();
  s.missing.resize(nb);
  for (size_t b = 0; b < nb; ++b) s.missing[b] = int(s.buckets[b].size());
  s.work.clear();
  s.work.resize(nb);
  s.reported.assign(s.slot.size(), 0);
  auto mark = [&](const State::Slot& at) {
    if (s.reported[at.index]) return;
    s.reported[at.index] = 1;
    if (--s.missing[at.bucket] == 0) s.start(at.bucket);
  };
  nl::backward(loss, seed, [&](const Tensor& leaf) {
    if (const auto it = s.slot.find(leaf.impl().get()); it != s.slot.end()) mark(it->second);
    // Let the engine progress the buckets already in flight while backward goes on.
    for (auto& w : s.work)
      if (w) w->test();
  });
  // Parameters that got no gradient: their buckets start now (in order, as on every rank).
  for (const auto& bucket : s.buckets)
    for (const Tensor& p : bucket) mark(s.slot.at(p.impl().get()));
  const float inv = 1.0f / float(s.pg->size());
  for (size_t b = 0; b < nb; ++b) {
    s.work[b]->wait();
    unpack_grads(s.data[b], inv, s.buckets[b]);
  }
}

}  // namespace nl::dist
