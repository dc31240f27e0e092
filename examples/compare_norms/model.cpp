#include "model.h"

#include "normlab/core/error.h"
#include "normlab/core/ops.h"

namespace compare {
using namespace nl;

const std::vector<NormVariant>& norm_variants() {
  static const std::vector<NormVariant> table = {
      {"bn", "BatchNorm", [](int64_t c, const NetOptions&) { return std::make_shared<nn::BatchNorm2d>(c, 1e-5f, 0.1f); }},
      {"gn", "GroupNorm", [](int64_t c, const NetOptions& o) { return std::make_shared<nn::GroupNorm>(o.groups, c); }},
      {"ln", "LayerNorm", [](int64_t c, const NetOptions&) { return std::make_shared<nn::LayerNorm>(c); }},
      // GroupNorm with a group per channel: InstanceNorm2d(affine=True) in PyTorch's terms.
      {"in", "InstanceNorm", [](int64_t c, const NetOptions&) { return std::make_shared<nn::GroupNorm>(c, c); }},
      // RMSNorm over (C, H, W) per sample, per-channel affine (nl::NormSpec::rms).
      {"rms", "RMSNorm", [](int64_t c, const NetOptions&) { return std::make_shared<nn::Norm>(NormSpec::rms(), c); }},
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
    b->add("conv", std::make_shared<nn::Conv2d>(cin, cout, 3, 1, 1, false, init))
        .add("norm", norm->make(cout, o))
        .add("relu", std::make_shared<nn::ReLU>())
        .add("drop", std::make_shared<nn::Dropout>(o.dropout, dropout_gen));
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
