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
  NL_CHECK(t.is_contiguous(), "dist: ", what,
           " needs a contiguous tensor (it writes in place), got a view of shape ", t.shape());
}

}  // namespace

std::unique_ptr<ProcessGroup> make_single_group() { return std::make_unique<SingleGroup>(); }

namespace {

// A flat float32 buffer for one bucket of gradients, on the bucket's device, kept across steps.
struct Bucket {
  std::vector<Tensor> params;
  Tensor flat;  // [sum of numel] on the params' device
  Tensor inv;   // [sum of numel] of 1/K, device buckets only: the mean as one elementwise op

  Device device() const { return params.front().device(); }
  int64_t numel() const {
    int64_t n = 0;
    for (const Tensor& p : params) n += p.numel();
    return n;
  }
};

// The gradients of the bucket's params, one after the other, into its flat buffer (zeros for a
// parameter without one), each through a view of its slice (as PyTorch's bucket views). Every
// copy stays on the device.
void pack(Bucket& b) {
  if (!b.flat.defined()) b.flat = Tensor::empty({b.numel()}, DType::F32, b.device());
  int64_t at = 0;
  for (const Tensor& p : b.params) {
    const Tensor g = p.grad();
    const Tensor dst = b.flat.view_at(at, p.shape());
    if (g.defined())
      dst.copy_(g);
    else
      dst.copy_(Tensor::zeros(p.shape(), DType::F32, p.device()));
    at += p.numel();
  }
}

// The reverse: each defined gradient set to scale x its part of the flat buffer.
void unpack(Bucket& b, float scale) {
  const bool cpu = b.device().is_cpu();
  Tensor mean = b.flat;
  if (!cpu) {
    if (!b.inv.defined()) b.inv = Tensor::full({b.flat.numel()}, scale, b.device());
    mean = mul(b.flat, b.inv);
  }
  int64_t at = 0;
  for (const Tensor& p : b.params) {
    if (const Tensor g = p.grad(); g.defined()) {
      NL_CHECK(g.is_contiguous(), "dist: the gradient of a parameter of shape ", p.shape(),
               " is not contiguous");
      if (cpu) {
        // = (not +=): the gradient is replaced by the mean, in the one pass over it.
        const float* src = b.flat.data_f32() + at;
        float* dst = g.data_f32();
        for (int64_t k = 0, n = p.numel(); k < n; ++k) dst[k] = src[k] * scale;
      } else {
        g.copy_(mean.view_at(at, p.shape()));
      }
    }
    at += p.numel();
  }
}

// params cut into buckets of about cap floats, a new one also where the device changes.
std::vector<Bucket> make_buckets(const std::vector<Tensor>& params, int64_t bucket_bytes) {
  const int64_t cap = std::max<int64_t>(1, bucket_bytes / int64_t(sizeof(float)));
  std::vector<Bucket> buckets;
  int64_t filled = 0;
  for (const Tensor& p : params) {
    NL_CHECK(p.dtype() == DType::F32, "dist: gradients are averaged as float32; a parameter is ", p);
    if (buckets.empty() || (filled > 0 && filled + p.numel() > cap) || buckets.back().device() != p.device())
      buckets.emplace_back(), filled = 0;
    buckets.back().params.push_back(p);
    filled += p.numel();
  }
  return buckets;
}

struct DoneWork final : ProcessGroup::Work {
  bool test() override { return true; }
  void wait() override {}
};

// A device tensor's sum through a host copy: the copy made when it starts, copied back by wait().
struct HostStagedWork final : ProcessGroup::Work {
  Tensor t, host;
  std::unique_ptr<ProcessGroup::Work> inner;
  bool copied = false;
  bool test() override { return inner->test(); }
  void wait() override {
    inner->wait();
    if (!copied) t.copy_(host), copied = true;
  }
};

}  // namespace

std::unique_ptr<ProcessGroup::Work> ProcessGroup::all_reduce_sum_async(float* data, int64_t n) {
  all_reduce_sum(data, n);
  return std::make_unique<DoneWork>();
}

std::unique_ptr<ProcessGroup::Work> ProcessGroup::all_reduce_sum_async(const Tensor& t) {
  check_float(t, "all_reduce_sum_async");
  if (t.device().is_cpu()) return all_reduce_sum_async(t.data_f32(), t.numel());
  auto w = std::make_unique<HostStagedWork>();
  w->t = t;
  w->host = t.to(Device::cpu());
  w->inner = all_reduce_sum_async(w->host.data_f32(), w->host.numel());
  return w;
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
  const float inv = 1.0f / float(pg.size());
  for (Bucket& b : make_buckets(params, bucket_bytes)) {
    pack(b);
    pg.all_reduce_sum_async(b.flat)->wait();
    unpack(b, inv);
  }
}

// --- GradientReducer ------------------------------------------------------------------------------

struct GradientReducer::State {
  ProcessGroup* pg = nullptr;
  std::vector<Bucket> buckets;  // parameters in reverse registration order; buffers kept across steps
  struct Slot {
    size_t bucket, index;  // index: the parameter's position over all buckets
  };
  std::unordered_map<const TensorImpl*, Slot> slot;
  // Per step:
  std::vector<int> missing;  // gradients a bucket still waits for
  std::vector<std::unique_ptr<ProcessGroup::Work>> work;
  std::vector<char> reported;  // by Slot::index

  void start(size_t b) {
    pack(buckets[b]);
    work[b] = pg->all_reduce_sum_async(buckets[b].flat);
  }
};

GradientReducer::GradientReducer(ProcessGroup& pg, nn::Module& net, int64_t bucket_bytes)
    : s_(std::make_unique<State>()) {
  s_->pg = &pg;
  std::vector<Tensor> ps = net.parameters();
  std::reverse(ps.begin(), ps.end());
  s_->buckets = make_buckets(ps, bucket_bytes);
  size_t index = 0;
  for (size_t b = 0; b < s_->buckets.size(); ++b)
    for (const Tensor& p : s_->buckets[b].params) s_->slot[p.impl().get()] = State::Slot{b, index++};
}

GradientReducer::~GradientReducer() = default;

int64_t GradientReducer::buckets() const { return int64_t(s_->buckets.size()); }

void GradientReducer::backward(const Tensor& loss, const Tensor& seed) {
  State& s = *s_;
  if (s.pg->size() == 1) return nl::backward(loss, seed);
  const size_t nb = s.buckets.size();
  s.missing.resize(nb);
  for (size_t b = 0; b < nb; ++b) s.missing[b] = int(s.buckets[b].params.size());
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
  for (const Bucket& bucket : s.buckets)
    for (const Tensor& p : bucket.params) mark(s.slot.at(p.impl().get()));
  const float inv = 1.0f / float(s.pg->size());
  for (size_t b = 0; b < nb; ++b) {
    s.work[b]->wait();
    unpack(s.buckets[b], inv);
  }
}

}  // namespace nl::dist
