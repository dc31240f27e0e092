#include "normlab/nn/norms.h"

#include "normlab/core/error.h"
#include "normlab/nn/layers.h"

namespace nl::nn {

namespace {
// o.eps when given, else the variant's own default.
float eps_or(const NormOptions& o, float fallback) { return o.eps > 0.0f ? o.eps : fallback; }
}  // namespace

const std::vector<NormVariant>& norm_variants() {
  static const std::vector<NormVariant> table = [] {
    std::vector<NormVariant> t;
    auto row = [&t](std::string key, std::string title, decltype(NormVariant::make) make) -> NormVariant& {
      NormVariant& v = t.emplace_back();
      v.key = std::move(key), v.title = std::move(title), v.make = std::move(make);
      return v;
    };
    NormVariant* r = nullptr;
    r = &row("bn", "BatchNorm", [](int64_t c, const NormOptions& o) {
      return std::make_shared<BatchNorm2d>(c, eps_or(o, 1e-5f), 0.1f);
    });
    r->whole_batch_key = "bn", r->ghost_batch_key = "gbn";
    // BatchNorm whose statistics are those of the whole batch over every data-parallel process
    // (mean and variance from the summed count, sum and squared deviations; docs/scaling-out.md).
    row("sbn", "SyncBatchNorm", [](int64_t c, const NormOptions& o) {
      NormSpec s = NormSpec::batch(0.1f, eps_or(o, 1e-5f));
      s.sync = o.sync;
      return std::make_shared<Norm>(s, c);
    });
    r = &row("gn", "GroupNorm", [](int64_t c, const NormOptions& o) {
      return std::make_shared<GroupNorm>(o.groups, c, eps_or(o, 1e-5f));
    });
    r->uses_groups = true;
    row("ln", "LayerNorm",
        [](int64_t c, const NormOptions& o) { return std::make_shared<LayerNorm>(c, eps_or(o, 1e-5f)); });
    // GroupNorm with a group per channel: InstanceNorm2d(affine=True) in PyTorch's terms.
    row("in", "InstanceNorm",
        [](int64_t c, const NormOptions& o) { return std::make_shared<GroupNorm>(c, c, eps_or(o, 1e-5f)); });
    // RMSNorm over (C, H, W) per sample, per-channel affine (nl::NormSpec::rms).
    row("rms", "RMSNorm", [](int64_t c, const NormOptions& o) {
      return std::make_shared<Norm>(NormSpec::rms(eps_or(o, 1e-5f)), c);
    });
    // BatchNorm statistics over micro-batches of --ghost-batch samples: a data-parallel worker's view.
    r = &row("gbn", "GhostBatchNorm", [](int64_t c, const NormOptions& o) {
      return std::make_shared<Norm>(NormSpec::ghost_batch_norm(o.ghost_batch, 0.1f, eps_or(o, 1e-5f)), c);
    });
    r->whole_batch_key = "bn", r->ghost_batch_key = "gbn";
    // Batch Renormalization with the paper's final clips r_max = 3, d_max = 5, relaxed from
    // BatchNorm's (1, 0) over the first 250 steps: about 30% of the 20-epoch recipe's 820, the
    // share the paper's ImageNet schedule took (40k of 130k steps).
    r = &row("brn", "BatchRenorm", [](int64_t c, const NormOptions& o) {
      NormSpec s = NormSpec::batch_renorm(3.0f, 5.0f, 0.1f, eps_or(o, 1e-5f));
      s.renorm_warmup = 250;
      return std::make_shared<Norm>(s, c);
    });
    r->whole_batch_key = "brn", r->ghost_batch_key = "gbrn";
    // Batch Renorm over ghost batches of --ghost-batch samples: the renorm correction r, d as a
    // data-parallel worker with that many samples would compute it (the study's ghost-batch axis).
    r = &row("gbrn", "GhostBatchRenorm", [](int64_t c, const NormOptions& o) {
      NormSpec s = NormSpec::batch_renorm(3.0f, 5.0f, 0.1f, eps_or(o, 1e-5f));
      s.renorm_warmup = 250;
      s.ghost_batch = o.ghost_batch;
      return std::make_shared<Norm>(s, c);
    });
    r->whole_batch_key = "brn", r->ghost_batch_key = "gbrn";
    // Filter Response Normalization; its TLU replaces the block's ReLU.
    r = &row("frn", "FRN+TLU", [](int64_t c, const NormOptions& o) {
      return std::make_shared<Norm>(NormSpec::frn(eps_or(o, 1e-6f)), c);
    });
    r->own_activation = true;
    // GroupNorm after weight-standardised convs (the block convs; the 1x1 ones have no norm after them).
    r = &row("gn+ws", "GN+WS", [](int64_t c, const NormOptions& o) {
      return std::make_shared<GroupNorm>(o.groups, c, eps_or(o, 1e-5f));
    });
    r->weight_standardization = true, r->uses_groups = true;
    return t;
  }();
  return table;
}

std::string norm_keys() {
  std::string known;
  for (const NormVariant& v : norm_variants())
    known += (known.empty() ? "" : ", ") + v.key + " (" + v.title + ")";
  return known;
}

NormRef parse_norm(const std::string& key) {
  for (const NormVariant& v : norm_variants())
    if (v.key == key) return &v;
  NL_FAIL("unknown norm '", key, "': use ", norm_keys());
}

}  // namespace nl::nn
