// End to end: a small CNN learns a fixed synthetic batch; SGD against hand-computed steps;
// bitwise reproducibility from a seed.
#include "helpers.h"
#include "normlab/core/autograd.h"
#include "normlab/core/ops.h"
#include "normlab/nn/layers.h"
#include "normlab/nn/optim.h"

using namespace nl;
using namespace nl::test;

namespace {

std::shared_ptr<nn::Sequential> two_layer_cnn(Generator& gen) {
  auto net = std::make_shared<nn::Sequential>();
  net->add(std::make_shared<nn::Conv2d>(3, 8, 3, 1, 1, false, gen))
      .add(std::make_shared<nn::BatchNorm2d>(8))
      .add(std::make_shared<nn::ReLU>())
      .add(std::make_shared<nn::Dropout>(0.05f, &gen))
      .add(std::make_shared<nn::MaxPool2d>())
      .add(std::make_shared<nn::Conv2d>(8, 4, 1, 1, 0, true, gen))
      .add(std::make_shared<nn::GlobalAvgPool>())
      .add(std::make_shared<nn::Flatten>());
  return net;
}

// Four classes of 8x8 images, told apart by which quadrant is bright.
std::pair<Tensor, Tensor> synthetic_batch(int64_t n) {
  Generator g(11);
  std::vector<float> x(static_cast<size_t>(n * 3 * 64));
  std::vector<int32_t> y(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    y[i] = static_cast<int32_t>(i % 4);
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t h = 0; h < 8; ++h)
        for (int64_t w = 0; w < 8; ++w) {
          int q = (h >= 4) * 2 + (w >= 4);
          x[((i * 3 + c) * 8 + h) * 8 + w] = 0.3f * g.next_normal() + (q == y[i] ? 1.0f : 0.0f);
        }
  }
  return {Tensor::from_vector(x, {n, 3, 8, 8}, test_device()), Tensor::from_ints(y, {n}, test_device())};
}

std::vector<float> train(int steps, uint64_t seed, std::shared_ptr<nn::Sequential>* out = nullptr) {
  Generator gen(seed);
  auto net = two_layer_cnn(gen);
  net->to(test_device());
  auto [x, y] = synthetic_batch(32);
  nn::SGD opt(net->parameters(), {.lr = 0.1f, .momentum = 0.9f, .weight_decay = 5e-4f});
  std::vector<float> losses;
  for (int s = 0; s < steps; ++s) {
    opt.zero_grad();
    Tensor loss = cross_entropy(net->forward(x), y);
    loss.backward();
    opt.step();
    losses.push_back(loss.item());
  }
  if (out) *out = net;
  return losses;
}

}  // namespace

// Tiers and stages: no-race: a training loop (48 s under TSan) whose conv, norm, pool and loss kernels
// the op tests run there.
TEST_CASE("a two-layer CNN's loss falls on a fixed batch", "[train][quick][no-race]") {
  std::shared_ptr<nn::Sequential> net;
  std::vector<float> losses = train(40, 1, &net);
  INFO("first loss " << losses.front() << ", last loss " << losses.back());
  CHECK(losses.front() > 1.2f);  // about log(4) at the start
  CHECK(losses.back() < 0.5f * losses.front());
  // It has learned the batch: eval-mode accuracy on it is high.
  net->eval();
  auto [x, y] = synthetic_batch(32);
  NoGradGuard g;
  Tensor logits = net->forward(x);
  std::vector<int32_t> labels = y.to_int_vector();
  int correct = 0;
  for (int64_t i = 0; i < 32; ++i) {
    int best = 0;
    for (int c = 1; c < 4; ++c) best = logits.at({i, c}) > logits.at({i, best}) ? c : best;
    correct += best == labels[i];
  }
  CHECK(correct >= 28);
}

TEST_CASE("training is bitwise reproducible from a seed", "[train][rng][quick]") {
  CHECK(train(5, 3) == train(5, 3));
  CHECK(train(5, 3) != train(5, 4));
}

TEST_CASE("SGD steps match hand-computed values", "[optim][quick]") {
  Tensor p = Tensor::from_vector({1.0f, -2.0f}, {2}, test_device()).set_requires_grad();
  nn::SGD opt({p}, {.lr = 0.1f, .momentum = 0.9f, .weight_decay = 0.01f});
  auto step = [&](std::vector<float> g) {
    p.set_grad(Tensor::from_vector(g, {2}, test_device()));
    opt.step();
  };
  // Step 1: d = g + wd*p = (0.5 + 0.01, 1 - 0.02); buf = d; p -= 0.1 * buf
  step({0.5f, 1.0f});
  CHECK(p.at({0}) == Approx(1.0f - 0.1f * 0.51f));
  CHECK(p.at({1}) == Approx(-2.0f - 0.1f * 0.98f));
  // Step 2: d = g + wd*p; buf = 0.9*buf + d
  float p0 = 1.0f - 0.051f, p1 = -2.098f;
  float b0 = 0.9f * 0.51f + (0.5f + 0.01f * p0), b1 = 0.9f * 0.98f + (1.0f + 0.01f * p1);
  step({0.5f, 1.0f});
  CHECK(p.at({0}) == Approx(p0 - 0.1f * b0));
  CHECK(p.at({1}) == Approx(p1 - 0.1f * b1));

  // Nesterov: d + momentum * buf
  Tensor q = Tensor::from_vector({1.0f}, {1}, test_device()).set_requires_grad();
  nn::SGD nes({q}, {.lr = 0.5f, .momentum = 0.5f, .nesterov = true});
  q.set_grad(Tensor::from_vector({2.0f}, {1}, test_device()));
  nes.step();  // buf = 2; d = 2 + 0.5 * 2 = 3
  CHECK(q.at({0}) == Approx(1.0f - 1.5f));
  // A parameter without a gradient is left alone.
  Tensor r = Tensor::from_vector({7.0f}, {1}, test_device()).set_requires_grad();
  nn::SGD plain({r}, {.lr = 1.0f});
  plain.step();
  CHECK(r.at({0}) == 7.0f);
}

TEST_CASE("a state dict round-trips into a fresh model", "[nn][quick]") {
  std::shared_ptr<nn::Sequential> trained;
  train(3, 5, &trained);
  Generator other(77);
  auto fresh = two_layer_cnn(other);
  fresh->to(test_device());
  nn::StateDict sd = trained->state_dict();
  CHECK(sd.count("1.running_mean") == 1);
  CHECK(sd.count("0.weight") == 1);
  fresh->load_state_dict(sd);
  for (auto& [name, t] : fresh->state_dict()) {
    CAPTURE(name);
    CHECK(t.to_vector() == sd.at(name).to_vector());
  }
  sd.erase("0.weight");
  CHECK_THROWS_WITH(fresh->load_state_dict(sd), Catch::Matchers::Contains("missing key '0.weight'"));
  sd["0.weight"] = Tensor::zeros({1});
  CHECK_THROWS_WITH(fresh->load_state_dict(sd), Catch::Matchers::Contains("'0.weight' has shape [1]"));
}
