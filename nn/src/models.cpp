#include "normlab/nn/models.h"

#include "normlab/core/ops.h"

namespace nl::nn {

namespace {

class LogSoftmax : public Module {
 public:
  Tensor forward(const Tensor& x) override { return log_softmax(x); }
  std::string describe() const override { return "LogSoftmax"; }
};

}  // namespace

std::shared_ptr<Sequential> make_net(NormRef norm, Generator& init, Generator* dropout_gen, NetOptions o) {
  auto block = [&](int64_t cin, int64_t cout) -> std::shared_ptr<Module> {
    auto b = std::make_shared<Sequential>();
    auto conv = std::make_shared<Conv2d>(cin, cout, 3, 1, 1, false, init);
    conv->weight_standardization = norm->weight_standardization;
    b->add("conv", conv).add("norm", norm->make(cout, o));
    if (!norm->own_activation) b->add("relu", std::make_shared<ReLU>());
    b->add("drop", std::make_shared<Dropout>(o.dropout, dropout_gen));
    return b;
  };
  auto residual = [&](int64_t c) { return std::make_shared<Residual>(block(c, c)); };
  auto pointwise = [&](int64_t cin, int64_t cout) {
    return std::make_shared<Conv2d>(cin, cout, 1, 1, 0, false, init);
  };
  auto net = std::make_shared<Sequential>();
  net->add("C1", block(o.in_channels, 16))
      .add("C2", block(16, 32))
      .add("c3", pointwise(32, 16))
      .add("P1", std::make_shared<MaxPool2d>(2, 2))
      .add("C3", block(16, 32))
      .add("C4", residual(32))
      .add("C5", residual(32))
      .add("c6", pointwise(32, 16))
      .add("P2", std::make_shared<MaxPool2d>(2, 2))
      .add("C7", block(16, 24))
      .add("C8", residual(24))
      .add("C9", residual(24))
      .add("GAP", std::make_shared<GlobalAvgPool>())
      .add("c10", pointwise(24, o.classes))
      .add("flat", std::make_shared<Flatten>())
      .add("out", std::make_shared<LogSoftmax>());
  return net;
}

}  // namespace nl::nn
