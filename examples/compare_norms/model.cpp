#include "model.h"

#include "normlab/core/error.h"
#include "normlab/core/ops.h"

namespace compare {
using namespace nl;

namespace {
// o.eps when given, else the variant's own default.
float eps_or(const NetOptions& o, float fallback) { return o.eps > 0.0f ? o.eps : fallback; }
}  // namespace

const std::vector<NormVariant>& norm_variants() {
  using nn::Norm;
  static const std::vector<NormVariant> table = {
      {"bn", "BatchNorm", [](int64_t c, const NetOptions& o) { return std::make_shared<nn::BatchNorm2d>(c, eps_or(o, 1e-5f), 0.1f); }},
      // BatchNorm whose statistics are those of the whole batch over every data-parallel process
      // (mean and variance from the summed count, sum and squared deviations; docs/scaling-out.md).
      {"sbn", "SyncBatchNorm", [](int64_t c, const NetOptions& o) {
         NormSpec s = NormSpec::batch(0.1f, eps_or(o, 1e-5f));
         s.sync = o.sync;
         return std::make_shared<Norm>(s, c); }},
      {"gn", "GroupNorm", [](int64_t c, const NetOptions& o) { return std::make_shared<nn::GroupNorm>(o.groups, c, eps_or(o, 1e-5f)); }},
      {"ln", "LayerNorm", [](int64_t c, const NetOptions& o) { return std::make_shared<nn::LayerNorm>(c, eps_or(o, 1e-5f)); }},
      // GroupNorm with a group per channel: InstanceNorm2d(affine=True) in PyTorch's terms.
      {"in", "InstanceNorm", [](int64_t c, const NetOptions& o) { return std::make_shared<nn::GroupNorm>(c, c, eps_or(o, 1e-5f)); }},
      // RMSNorm over (C, H, W) per sample, per-channel affine (nl::NormSpec::rms).
      {"rms", "RMSNorm", [](int64_t c, const NetOptions& o) { return std::make_shared<Norm>(NormSpec::rms(eps_or(o, 1e-5f)), c); }},
      // BatchNorm statistics over micro-batches of --ghost-batch samples: a data-parallel worker's view.
      {"gbn", "GhostBatchNorm", [](int64_t c, const NetOptions& o) {
         return std::make_shared<Norm>(NormSpec::ghost_batch_norm(o.ghost_batch, 0.1f, eps_or(o, 1e-5f)), c); }},
      // Batch Renormalization with the paper's final clips r_max = 3, d_max = 5, relaxed from
      // BatchNorm's (1, 0) over the first 250 steps: about 30% of the 20-epoch recipe's 820, the
      // share the paper's ImageNet schedule took (40k of 130k steps).
      {"brn", "BatchRenorm", [](int64_t c, const NetOptions& o) {
         NormSpec s = NormSpec::batch_renorm(3.0f, 5.0f, 0.1f, eps_or(o, 1e-5f));
         s.renorm_warmup = 250;
         return std::make_shared<Norm>(s, c); }},
      // Batch Renorm over ghost batches of --ghost-batch samples: the renorm correction r, d as a
      // data-parallel worker with that many samples would compute it (the study's ghost-batch axis).
      {"gbrn", "GhostBatchRenorm", [](int64_t c, const NetOptions& o) {
         NormSpec s = NormSpec::batch_renorm(3.0f, 5.0f, 0.1f, eps_or(o, 1e-5f));
         s.renorm_warmup = 250;
         s.ghost_batch = o.ghost_batch;
         return std::make_shared<Norm>(s, c); }},
      // Filter Response Normalization; its TLU replaces the block's ReLU.
      {"frn", "FRN+TLU", [](int64_t c, const NetOptions& o) { return std::make_shared<Norm>(NormSpec::frn(eps_or(o, 1e-6f)), c); },
       /*own_activation=*/true},
      // GroupNorm after weight-standardised convs (the block convs; the 1x1 ones have no norm after them).
      {"gn+ws", "GN+WS", [](int64_t c, const NetOptions& o) { return std::make_shared<nn::GroupNorm>(o.groups, c, eps_or(o, 1e-5f)); },
       /*own_activation=*/false, /*weight_standardization=*/true},
  };
  return table;
}

std::string norm_keys() {
  std::string known;
  for (const NormVariant& v : norm_variants()) known += (known.empty() ? "" : ", ") + v.key + " (" + v.title + ")";
  return known;
}

NormKind parse_norm(const std::string& key) {
  for (const NormVariant& v : norm_variants())
    if (v.key == key) return &v;
  NL_FAIL("unknown norm '", key, "': use ", norm_keys());
}

std::string norm_key(NormKind k) { return k->key; }
std::string norm_title(NormKind k) { return k->title; }

namespace {

class LogSoftmax : public nn::Module {
 public:
  Tensor forward(const Tensor& x) override { return log_softmax(x); }
  std::string describe() const override { return "LogSoftmax"; }
};

}  // namespace

std::shared_ptr<nn::Sequential> make_net(NormKind norm, Generator& init, Generator* dropout_gen,
                                         NetOptions o) {
  auto block = [&](int64_t cin, int64_t cout) -> std::shared_ptr<nn::Module> {
    auto b = std::make_shared<nn::Sequential>();
    auto conv = std::make_shared<nn::Conv2d>(cin, cout, 3, 1, 1, false, init);
    conv->weight_standardization = norm->weight_standardization;
    b->add("conv", conv).add("norm", norm->make(cout, o));
    if (!norm->own_activation) b->add("relu", std::make_shared<nn::ReLU>());
    b->add("drop", std::make_shared<nn::Dropout>(o.dropout, dropout_gen));
    return b;
  };
  auto residual = [&](int64_t c) { return std::make_shared<nn::Residual>(block(c, c)); };
  auto pointwise = [&](int64_t cin, int64_t cout) {
    return std::make_shared<nn::Conv2d>(cin, cout, 1, 1, 0, false, init);
  };
  auto net = std::make_shared<nn::Sequential>();
  net->add("C1", block(o.in_channels, 16))
      .add("C2", block(16, 32))
      .add("c3", pointwise(32, 16))
      .add("P1", std::make_shared<nn::MaxPool2d>(2, 2))
      .add("C3", block(16, 32))
      .add("C4", residual(32))
      .add("C5", residual(32))
      .add("c6", pointwise(32, 16))
      .add("P2", std::make_shared<nn::MaxPool2d>(2, 2))
      .add("C7", block(16, 24))
      .add("C8", residual(24))
      .add("C9", residual(24))
      .add("GAP", std::make_shared<nn::GlobalAvgPool>())
      .add("c10", pointwise(24, o.classes))
      .add("flat", std::make_shared<nn::Flatten>())
      .add("out", std::make_shared<LogSoftmax>());
  return net;
}

}  // namespace compare
