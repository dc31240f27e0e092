// Finite-difference checks of every op's backward, and proof that the check catches wrong ones.
#include "gradcheck.h"
#include "normlab/core/ops.h"

using namespace nl;
using namespace nl::test;

namespace {

void require_grad_ok(const GradFn& f, const std::vector<Tensor>& in, std::vector<bool> diff = {}) {
  if (diff.empty()) diff.assign(in.size(), true);
  GradCheckResult r = grad_check(f, in, diff);
  INFO(r.message);
  REQUIRE(r.ok);
}

// Values spaced well apart (more than 2h) in shuffled order: no ties for max-pool, no
// element close enough to zero for ReLU's kink to fall inside a finite-difference step.
Tensor spaced(const Shape& s, uint64_t seed) {
  Generator g(seed);
  std::vector<float> v(static_cast<size_t>(s.numel()));
  const int64_t half = static_cast<int64_t>(v.size() / 2);
  for (size_t i = 0; i < v.size(); ++i)
    v[i] = 0.05f * static_cast<float>(static_cast<int64_t>(i) - half) + 0.025f;
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[g.next_below(i)]);
  return Tensor::from_vector(v, s, test_device());
}

}  // namespace

// Tiers and stages: the "gradcheck: " tests are [no-race]: finite differences launch each op's
// kernels at tiny shapes many times (about 3 minutes under TSan in all); the same kernels run once
// each in the medium-shape and cuda-vs-cpu tests there, and a race needs one launch.

TEST_CASE("gradcheck: conv2d", "[grad][conv2d][quick][no-race]") {
  require_grad_ok([](auto& v) { return conv2d(v[0], v[1], v[2], 1, 1); },
                  {randn({2, 3, 5, 7}, 1), randn({4, 3, 3, 3}, 2, 0.3f), randn({4}, 3)});
  require_grad_ok([](auto& v) { return conv2d(v[0], v[1], Tensor(), 2, 0); },
                  {randn({2, 3, 7, 6}, 4), randn({5, 3, 3, 3}, 5, 0.3f)});
  require_grad_ok([](auto& v) { return conv2d(v[0], v[1], Tensor(), 1, 0); },
                  {randn({3, 6, 5, 7}, 6), randn({2, 6, 1, 1}, 7)});
  // 5x5 "same" (shifted-plane im2col/col2im) and 5x5 with pad 1 (general path).
  require_grad_ok([](auto& v) { return conv2d(v[0], v[1], Tensor(), 1, 2); },
                  {randn({2, 2, 6, 5}, 8), randn({3, 2, 5, 5}, 9, 0.3f)});
  require_grad_ok([](auto& v) { return conv2d(v[0], v[1], Tensor(), 1, 1); },
                  {randn({2, 2, 6, 5}, 10), randn({3, 2, 5, 5}, 11, 0.3f)});
  // Rows of 16 and 32 with channels in 8s: the direct 3x3 kernel forward and backward-data.
  require_grad_ok([](auto& v) { return conv2d(v[0], v[1], v[2], 1, 1); },
                  {randn({2, 8, 2, 16}, 12), randn({8, 8, 3, 3}, 13, 0.3f), randn({8}, 14)});
  require_grad_ok([](auto& v) { return conv2d(v[0], v[1], Tensor(), 1, 1); },
                  {randn({1, 8, 1, 32}, 15), randn({16, 8, 3, 3}, 16, 0.3f)});
}

TEST_CASE("gradcheck: batch_norm in training and eval", "[grad][norm][quick][no-race]") {
  Tensor rm = randn({6}, 8), rv = Tensor::full({6}, 1.3f, test_device());
  for (bool training : {true, false}) {
    CAPTURE(training);
    require_grad_ok([&](auto& v) { return batch_norm(v[0], v[1], v[2], rm, rv, training, 0.1f, 1e-5f); },
                    {randn({3, 6, 5, 7}, 9, 1.5f, 0.3f), randn({6}, 10, 0.5f, 1.0f), randn({6}, 11)});
  }
}

TEST_CASE("gradcheck: group_norm for G = 1 2 3 6", "[grad][norm][quick][no-race]") {
  for (int64_t G : {1, 2, 3, 6}) {
    CAPTURE(G);
    require_grad_ok([G](auto& v) { return group_norm(v[0], G, v[1], v[2]); },
                    {randn({3, 6, 5, 7}, 12, 1.2f, -0.5f), randn({6}, 13, 0.5f, 1.0f), randn({6}, 14)});
  }
}

TEST_CASE("gradcheck: layer_norm over the last dimension", "[grad][norm][quick][no-race]") {
  require_grad_ok([](auto& v) { return layer_norm(v[0], v[1], v[2]); },
                  {randn({5, 7}, 15, 2.0f, 1.0f), randn({7}, 16), randn({7}, 17)});
}

TEST_CASE("gradcheck: fused norm with dropout and residual", "[grad][norm][fusion][quick][no-race]") {
  // ReLU's kink defeats finite differences at normalised inputs; its gradient is covered by the
  // equality with relu() above, whose own gradient is checked on spaced inputs.
  for (int mode = 0; mode < 2; ++mode) {
    CAPTURE(mode);
    require_grad_ok(
        [mode](auto& v) {
          Generator g(99);  // the same mask on every evaluation
          NormEpilogue e;
          e.dropout = 0.3f, e.gen = &g, e.residual = v[3];
          return mode == 0 ? batch_norm(v[0], v[1], v[2], Tensor(), Tensor(), true, 0.1f, 1e-5f, e)
                           : group_norm(v[0], 3, v[1], v[2], 1e-5f, e);
        },
        {randn({3, 6, 5, 3}, 12, 1.2f, -0.5f), randn({6}, 13, 0.5f, 1.0f), randn({6}, 14),
         randn({3, 6, 5, 3}, 15)});
  }
}

TEST_CASE("gradcheck: relu pooling elementwise and views", "[grad][quick][no-race]") {
  require_grad_ok([](auto& v) { return relu(v[0]); }, {spaced({3, 5, 7}, 18)});
  require_grad_ok([](auto& v) { return max_pool2d(v[0], 2, 2); }, {spaced({3, 6, 5, 7}, 19)});
  require_grad_ok([](auto& v) { return max_pool2d(v[0], 3, 2); }, {spaced({2, 3, 7, 6}, 20)});
  require_grad_ok([](auto& v) { return global_avg_pool(v[0]); }, {randn({3, 6, 5, 7}, 21)});
  require_grad_ok([](auto& v) { return add(v[0], v[1]); }, {randn({3, 5}, 22), randn({3, 5}, 23)});
  require_grad_ok([](auto& v) { return mul(v[0], v[1]); }, {randn({3, 5}, 24), randn({3, 5}, 25)});
  require_grad_ok([](auto& v) { return sum(v[0]); }, {randn({3, 5}, 26)});
  require_grad_ok([](auto& v) { return v[0].transpose(0, 2).reshape({7, 15}); }, {randn({3, 5, 7}, 27)});
  require_grad_ok([](auto& v) { return mul(v[0].flatten(1), v[0].flatten(1)); }, {randn({3, 5, 7}, 28)});
}

TEST_CASE("gradcheck: dropout with a fixed stream", "[grad][dropout][quick][no-race]") {
  require_grad_ok(
      [](auto& v) {
        Generator g(99);  // the same mask on every evaluation
        return dropout(v[0], 0.3f, true, &g);
      },
      {randn({4, 33}, 29)});
}

TEST_CASE("gradcheck: linear and log_softmax and nll_loss", "[grad][quick][no-race]") {
  require_grad_ok([](auto& v) { return linear(v[0], v[1], v[2]); },
                  {randn({4, 5}, 30), randn({3, 5}, 31), randn({3}, 32)});
  require_grad_ok([](auto& v) { return log_softmax(v[0]); }, {randn({6, 10}, 33, 2.0f)});
  Tensor target = Tensor::from_ints({3, 0, 9, 9, 1, 5}, {6}, test_device());
  require_grad_ok([&](auto& v) { return nll_loss(log_softmax(v[0]), target); }, {randn({6, 10}, 34, 2.0f)});
}

// Tiers and stages: no-race: a check of the gradient checker itself (95 s under TSan); its kernels run
// there in the op tests.
TEST_CASE("gradcheck fails on a gradient perturbed by a small amount", "[grad][meta][quick][no-race]") {
  // One element of each checked gradient is moved by 5% of the gradient's largest magnitude:
  // an error far smaller than a wrong formula makes, and still caught.
  auto tamper = [](size_t, std::vector<float>& g) {
    float mx = 0;
    for (float v : g) mx = std::max(mx, std::abs(v));
    g[g.size() / 2] += 0.05f * mx;
  };
  struct Case {
    const char* name;
    GradFn f;
    std::vector<Tensor> in;
  };
  Tensor target = Tensor::from_ints({3, 0, 9, 9, 1, 5}, {6}, test_device());
  Tensor rm = Tensor::zeros({6}, DType::F32, test_device()), rv = Tensor::ones({6}, test_device());
  std::vector<Case> cases = {
      {"conv2d",
       [](auto& v) { return conv2d(v[0], v[1], v[2], 1, 1); },
       {randn({2, 3, 5, 7}, 1), randn({4, 3, 3, 3}, 2, 0.3f), randn({4}, 3)}},
      {"batch_norm",
       [&](auto& v) { return batch_norm(v[0], v[1], v[2], rm, rv, true); },
       {randn({3, 6, 5, 7}, 9), randn({6}, 10, 0.5f, 1.0f), randn({6}, 11)}},
      {"group_norm",
       [](auto& v) { return group_norm(v[0], 3, v[1], v[2]); },
       {randn({3, 6, 5, 7}, 12), randn({6}, 13, 0.5f, 1.0f), randn({6}, 14)}},
      {"layer_norm",
       [](auto& v) { return layer_norm(v[0], v[1], v[2]); },
       {randn({5, 7}, 15), randn({7}, 16), randn({7}, 17)}},
      {"rms_norm",
       [](auto& v) { return normalize(v[0], NormSpec::rms(), v[1], v[2]); },
       {randn({3, 6, 5, 7}, 35, 1.0f, 0.5f), randn({6}, 36, 0.5f, 1.0f), randn({6}, 37)}},
      {"relu", [](auto& v) { return relu(v[0]); }, {spaced({3, 5, 7}, 18)}},
      {"max_pool2d", [](auto& v) { return max_pool2d(v[0]); }, {spaced({3, 6, 5, 7}, 19)}},
      {"global_avg_pool", [](auto& v) { return global_avg_pool(v[0]); }, {randn({3, 6, 5, 7}, 21)}},
      {"linear",
       [](auto& v) { return linear(v[0], v[1], v[2]); },
       {randn({4, 5}, 30), randn({3, 5}, 31), randn({3}, 32)}},
      {"log_softmax+nll",
       [&](auto& v) { return nll_loss(log_softmax(v[0]), target); },
       {randn({6, 10}, 34, 2.0f)}},
  };
  for (auto& c : cases) {
    CAPTURE(c.name);
    GradCheckOptions opt;
    opt.tamper = tamper;
    CHECK_FALSE(grad_check(c.f, c.in, std::vector<bool>(c.in.size(), true), opt).ok);
    // And the untampered check of the same case passes, so the failure is the tampering's.
    CHECK(grad_check(c.f, c.in, std::vector<bool>(c.in.size(), true)).ok);
  }
}

TEST_CASE("gradcheck catches the classic batch norm bug of ignoring the batch statistics",
          "[grad][meta][quick]") {
  // A batch norm whose backward treats mean and variance as constants (the eval formula used in
  // training) is wrong by terms of order one; the check must say so.
  auto wrong_bn = [](auto& v) {
    Tensor x = v[0];
    Tensor y;
    Tensor rm = Tensor::zeros({x.size(1)}, DType::F32, x.device()),
           rv = Tensor::ones({x.size(1)}, x.device());
    {
      NoGradGuard g;
      y = batch_norm(x, Tensor(), Tensor(), rm, rv, true);
    }
    // rstd per channel, recomputed from the output's definition
    std::vector<float> xs = x.to_vector();
    int64_t N = x.size(0), C = x.size(1), HW = x.numel() / (N * C);
    std::vector<float> rstd(static_cast<size_t>(C));
    for (int64_t c = 0; c < C; ++c) {
      double m = 0, q = 0;
      for (int64_t n = 0; n < N; ++n)
        for (int64_t i = 0; i < HW; ++i) m += xs[(n * C + c) * HW + i];
      m /= double(N * HW);
      for (int64_t n = 0; n < N; ++n)
        for (int64_t i = 0; i < HW; ++i) q += std::pow(xs[(n * C + c) * HW + i] - m, 2);
      rstd[c] = float(1.0 / std::sqrt(q / double(N * HW) + 1e-5));
    }
    if (!any_requires_grad({&x})) return y;
    record_node(y, "wrong_batch_norm", {&x}, [rstd, N, C, HW](const Tensor& dy) {
      std::vector<float> d = dy.to_vector();
      for (int64_t n = 0; n < N; ++n)
        for (int64_t c = 0; c < C; ++c)
          for (int64_t i = 0; i < HW; ++i) d[(n * C + c) * HW + i] *= rstd[c];
      return std::vector<Tensor>{Tensor::from_vector(d, dy.shape(), dy.device())};
    });
    return y;
  };
  GradCheckResult r = grad_check(wrong_bn, {randn({3, 4, 3, 5}, 40)}, {true});
  INFO(r.message);
  CHECK_FALSE(r.ok);
}
