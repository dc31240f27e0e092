// Links against an installed normlab: one training step of a tiny network, checked.
#include <cstdio>
#include <normlab/core/ops.h>
#include <normlab/nn/layers.h>
#include <normlab/nn/optim.h>
#include <normlab/dist/process_group.h>

int main() {
  try {
    nl::Generator gen(0);
    nl::nn::Sequential net{std::make_shared<nl::nn::Conv2d>(1, 4, 3, 1, 1, false, gen),
                           std::make_shared<nl::nn::GroupNorm>(2, 4), std::make_shared<nl::nn::ReLU>(),
                           std::make_shared<nl::nn::GlobalAvgPool>(), std::make_shared<nl::nn::Flatten>()};
    nl::nn::SGD opt(net.parameters(), {.lr = 0.1f});
    nl::Tensor x = nl::Tensor::randn({2, 1, 6, 6}, gen);
    nl::Tensor y = nl::Tensor::from_ints({1, 3}, {2});
    float before = nl::cross_entropy(net(x), y).item();
    for (int i = 0; i < 5; ++i) {
      opt.zero_grad();
      nl::Tensor loss = nl::cross_entropy(net(x), y);
      loss.backward();
      opt.step();
    }
    float after = nl::cross_entropy(net(x), y).item();
    // normlab::dist links (with Open MPI when it was built with it); one process: a group of one.
    auto pg = nl::dist::init("single");
    nl::dist::average_gradients(*pg, net);
    std::printf("consumer: %lld parameters, loss %.4f -> %.4f\n",
                static_cast<long long>(net.parameter_count()), before, after);
    return after < before ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}
