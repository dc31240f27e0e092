// A small training demo: a 2-layer CNN with BatchNorm learns synthetic 8x8 images whose class is
// the bright quadrant. Shows the library end to end in a second.
#include <chrono>
#include <cstdio>
#include <normlab/core/autograd.h>
#include <normlab/core/ops.h>
#include <normlab/nn/layers.h>
#include <normlab/nn/optim.h>

using namespace nl;

namespace {
std::pair<Tensor, Tensor> quadrant_images(int64_t n, Generator& g) {
  std::vector<float> x(static_cast<size_t>(n * 3 * 64));
  std::vector<int32_t> y(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    y[i] = static_cast<int32_t>(g.next_below(4));
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t h = 0; h < 8; ++h)
        for (int64_t w = 0; w < 8; ++w)
          x[((i * 3 + c) * 8 + h) * 8 + w] =
              0.5f * g.next_normal() + ((h >= 4) * 2 + (w >= 4) == y[i] ? 1.0f : 0.0f);
  }
  return {Tensor::from_vector(x, {n, 3, 8, 8}), Tensor::from_ints(y, {n})};
}

float accuracy(const Tensor& logits, const Tensor& labels) {
  std::vector<float> l = logits.to_vector();
  std::vector<int32_t> t = labels.to_int_vector();
  int64_t C = logits.size(1), correct = 0;
  for (size_t i = 0; i < t.size(); ++i) {
    int64_t best = 0;
    for (int64_t c = 1; c < C; ++c) best = l[i * C + c] > l[i * C + best] ? c : best;
    correct += best == t[i];
  }
  return 100.0f * static_cast<float>(correct) / static_cast<float>(t.size());
}
}  // namespace

int main() {
  try {
    Generator gen(0);
    nn::Sequential net{std::make_shared<nn::Conv2d>(3, 16, 3, 1, 1, false, gen),
                       std::make_shared<nn::BatchNorm2d>(16),
                       std::make_shared<nn::ReLU>(),
                       std::make_shared<nn::MaxPool2d>(),
                       std::make_shared<nn::Conv2d>(16, 4, 1, 1, 0, true, gen),
                       std::make_shared<nn::GlobalAvgPool>(),
                       std::make_shared<nn::Flatten>()};
    auto [train_x, train_y] = quadrant_images(512, gen);
    auto [test_x, test_y] = quadrant_images(256, gen);
    nn::SGD opt(net.parameters(), {.lr = 0.05f, .momentum = 0.9f, .weight_decay = 5e-4f});
    std::printf("train_demo: %lld parameters, 512 training and 256 test images, 4 classes\n",
                static_cast<long long>(net.parameter_count()));
    auto t0 = std::chrono::steady_clock::now();
    for (int epoch = 1; epoch <= 10; ++epoch) {
      net.train();
      float loss_sum = 0;
      for (int64_t b = 0; b < 512; b += 64) {
        Tensor x = Tensor::from_vector(
            std::vector<float>(train_x.data_f32() + b * 192, train_x.data_f32() + (b + 64) * 192),
            {64, 3, 8, 8});
        Tensor y = Tensor::from_ints(
            std::vector<int32_t>(train_y.data_i32() + b, train_y.data_i32() + b + 64), {64});
        opt.zero_grad();
        Tensor loss = cross_entropy(net(x), y);
        loss.backward();
        opt.step();
        loss_sum += loss.item();
      }
      net.eval();
      NoGradGuard no_grad;
      Tensor logits = net(test_x);
      std::printf("epoch %2d | train loss %.4f | test loss %.4f acc %.2f%%\n", epoch, loss_sum / 8.0f,
                  cross_entropy(logits, test_y).item(), accuracy(logits, test_y));
    }
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("train_demo: done in %.2f s\n", s);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "train_demo: %s\n", e.what());
    return 1;
  }
}
