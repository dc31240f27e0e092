// Schedulers against PyTorch's values; Adam and AdamW against hand-computed steps.
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "helpers.h"
#include "normlab/nn/optim.h"
#include "normlab/nn/scheduler.h"

using namespace nl;
using Catch::Matchers::Contains;

TEST_CASE("OneCycleLR matches PyTorch's learning rate and momentum at every step",
          "[optim][schedule][quick]") {
  std::ifstream in(std::string(NORMLAB_GOLDEN_DIR) + "/onecycle.json");
  REQUIRE(in.good());
  nlohmann::json j = nlohmann::json::parse(in);
  REQUIRE(j["cases"].size() == 2);
  for (const auto& c : j["cases"]) {
    const float max_lr = c["max_lr"];
    const int64_t total = c["total_steps"];
    CAPTURE(max_lr, total);
    Tensor p = Tensor::zeros({1}).set_requires_grad();
    nn::SGD opt({p}, {.lr = 1.0f, .momentum = 0.5f});
    nn::OneCycleLR sched(opt, max_lr, total);
    for (int64_t step = 0; step < total; ++step) {
      CAPTURE(step);
      const double lr = c["lr"][step], mom = c["momentum"][step];
      REQUIRE(opt.lr() == Approx(lr).epsilon(1e-5).margin(1e-9));
      REQUIRE(opt.momentum() == Approx(mom).epsilon(1e-6));
      if (step + 1 < total) sched.step();
    }
    CHECK_THROWS_WITH(sched.step(), Contains("total_steps"));
  }
}

TEST_CASE("StepLR decays by gamma every step_size steps", "[optim][schedule][quick]") {
  Tensor p = Tensor::zeros({1}).set_requires_grad();
  nn::SGD opt({p}, {.lr = 0.5f});
  nn::StepLR sched(opt, 3, 0.1f);
  std::vector<float> lrs;
  for (int i = 0; i < 7; ++i) {
    lrs.push_back(opt.lr());
    sched.step();
  }
  std::vector<float> expected = {0.5f, 0.5f, 0.5f, 0.05f, 0.05f, 0.05f, 0.005f};
  for (size_t i = 0; i < lrs.size(); ++i) CHECK(lrs[i] == Approx(expected[i]));
}

TEST_CASE("Adam and AdamW steps match hand-computed values", "[optim][quick]") {
  // Two steps with gradient g = 0.5 on a parameter starting at 1.
  const double lr = 0.1, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.1, g = 0.5;
  auto run = [&](bool decoupled) {
    Tensor p = Tensor::from_vector({1.0f}, {1}, test::test_device()).set_requires_grad();
    nn::AdamOptions o;
    o.lr = float(lr), o.weight_decay = float(wd), o.decoupled = decoupled;
    nn::Adam opt({p}, o);
    std::vector<float> out;
    for (int i = 0; i < 2; ++i) {
      p.set_grad(Tensor::from_vector({float(g)}, {1}, test::test_device()));
      opt.step();
      out.push_back(p.at({0}));
    }
    return out;
  };
  // Reference, written from torch.optim.Adam's and AdamW's documented algorithms.
  auto expected = [&](bool decoupled) {
    double p = 1, m = 0, v = 0;
    std::vector<double> out;
    for (int t = 1; t <= 2; ++t) {
      double grad = g;
      if (decoupled)
        p *= 1 - lr * wd;
      else
        grad += wd * p;
      m = b1 * m + (1 - b1) * grad;
      v = b2 * v + (1 - b2) * grad * grad;
      double mhat = m / (1 - std::pow(b1, t)), vhat = v / (1 - std::pow(b2, t));
      p -= lr * mhat / (std::sqrt(vhat) + eps);
      out.push_back(p);
    }
    return out;
  };
  for (bool decoupled : {false, true}) {
    CAPTURE(decoupled);
    auto got = run(decoupled);
    auto want = expected(decoupled);
    CHECK(got[0] == Approx(want[0]).epsilon(1e-6));
    CHECK(got[1] == Approx(want[1]).epsilon(1e-6));
  }
  Tensor q = Tensor::zeros({1}).set_requires_grad();
  CHECK_THROWS_WITH(nn::Adam({q}, {.beta1 = 1.0f}), Contains("betas must be in [0, 1)"));
  CHECK_THROWS_WITH(nn::SGD({q}, {.lr = 0.1f, .nesterov = true}), Contains("Nesterov"));
}
