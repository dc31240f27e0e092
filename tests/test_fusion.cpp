// The fused norm epilogue (ReLU, dropout, residual add inside batch_norm / group_norm) against the
// same ops run one by one, forward and every gradient, on odd shapes (HxW not a multiple of 4:
// the scalar paths) and even ones (the float4 paths of the CUDA kernels); and the comparison
// network with fusion on and off.
#include <catch2/catch.hpp>

#include "normlab/nn/models.h"
#include "helpers.h"
#include "normlab/core/ops.h"
#include "normlab/nn/layers.h"

using namespace nl;
using namespace nl::test;

namespace {

struct Case {
  bool relu, residual;
  float dropout;
};

struct Outputs {
  std::vector<std::vector<double>> tensors;  // y, dx, dgamma, dbeta, dresidual
};

// y = residual + dropout(relu(norm(x))), fused or op by op, with gradients of sum(y * R).
Outputs run(bool batch, int64_t G, const Shape& shape, const Case& c, bool fused) {
  const int64_t C = shape[1];
  Tensor x = randn(shape, 1, 1.5f, 0.3f).set_requires_grad();
  Tensor gamma = randn({C}, 2, 0.5f, 1.0f).set_requires_grad();
  Tensor beta = randn({C}, 3, 0.5f).set_requires_grad();
  Tensor res = randn(shape, 4).set_requires_grad();
  Tensor rm = Tensor::zeros({C}).to(test_device()), rv = Tensor::ones({C}).to(test_device());
  Generator gen(77);
  Tensor y;
  if (fused) {
    NormEpilogue e;
    e.relu = c.relu, e.dropout = c.dropout, e.gen = &gen;
    if (c.residual) e.residual = res;
    y = batch ? batch_norm(x, gamma, beta, rm, rv, true, 0.1f, 1e-5f, e)
              : group_norm(x, G, gamma, beta, 1e-5f, e);
  } else {
    y = batch ? batch_norm(x, gamma, beta, rm, rv, true) : group_norm(x, G, gamma, beta);
    if (c.relu) y = relu(y);
    y = dropout(y, c.dropout, true, &gen);
    if (c.residual) y = add(res, y);
  }
  Tensor r = randn(shape, 5);
  sum(mul(y, r)).backward();
  Outputs o;
  o.tensors = {to_double(y), to_double(x.grad()), to_double(gamma.grad()), to_double(beta.grad()),
               c.residual ? to_double(res.grad()) : std::vector<double>{}};
  if (batch) o.tensors.push_back(to_double(rm)), o.tensors.push_back(to_double(rv));
  return o;
}

}  // namespace

TEST_CASE("fused norm epilogue equals the ops run one by one", "[ops][norm][fusion][quick]") {
  const char* names[] = {"y", "dx", "dgamma", "dbeta", "dresidual", "running_mean", "running_var"};
  for (const Shape& shape : {Shape{3, 6, 5, 7}, Shape{2, 6, 4, 4}, Shape{5, 6, 1, 1}}) {
    for (const Case& c : {Case{true, false, 0.0f}, Case{true, true, 0.0f}, Case{false, true, 0.0f},
                          Case{true, true, 0.3f}, Case{false, false, 0.3f}}) {
      for (int mode = 0; mode < 3; ++mode) {  // BatchNorm, GroupNorm(3), GroupNorm(1)
        const bool batch = mode == 0;
        const int64_t G = mode == 1 ? 3 : 1;
        if (batch && shape[0] * shape[2] * shape[3] < 2) continue;
        CAPTURE(shape, c.relu, c.residual, c.dropout, mode);
        Outputs want = run(batch, G, shape, c, false), got = run(batch, G, shape, c, true);
        REQUIRE(want.tensors.size() == got.tensors.size());
        for (size_t t = 0; t < want.tensors.size(); ++t) {
          INFO(names[t]);
          REQUIRE(want.tensors[t].size() == got.tensors[t].size());
          for (size_t i = 0; i < want.tensors[t].size(); ++i) {
            CAPTURE(i);
            // The same float operations in the same order: equal up to FMA contraction.
            REQUIRE(got.tensors[t][i] == Approx(want.tensors[t][i]).margin(1e-6).epsilon(1e-6));
          }
        }
      }
    }
  }
}

TEST_CASE("fused norm epilogue rejects a residual of the wrong shape and a bad dropout",
          "[ops][norm][fusion][quick]") {
  Tensor x = randn({2, 4, 3, 3}, 1);
  NormEpilogue e;
  e.residual = randn({2, 4, 3, 2}, 2);
  REQUIRE_THROWS_WITH(group_norm(x, 2, Tensor(), Tensor(), 1e-5f, e),
                      Catch::Contains("residual has shape [2, 4, 3, 2]"));
  NormEpilogue d;
  d.dropout = 1.0f;
  REQUIRE_THROWS_WITH(batch_norm(x, Tensor(), Tensor(), Tensor(), Tensor(), true, 0.1f, 1e-5f, d),
                      Catch::Contains("dropout probability must be in [0, 1)"));
}

// Tiers and stages: full, one order, no sanitizer: the whole network over every norm row (67 s on
// emulated cuda); each fused kernel runs in every order and under the sanitizers in "fused norm
// epilogue equals" and the norm table's tests.
TEST_CASE("the comparison network gives the same loss and gradients with fusion on and off",
          "[train][fusion][full][one-order][no-sanitize]") {
  // Every row of the app's norm table; ghost batches of 2 so Ghost BatchNorm's 4 samples make 2.
  nl::nn::NetOptions o;
  o.ghost_batch = 2;
  for (const nl::nn::NormVariant& v : nl::nn::norm_variants()) {
    // In one process SyncBatchNorm is BatchNorm (no group: the very same code); its own path
    // runs under mpirun in the dist tests.
    if (v.key == "sbn") continue;
    const nl::nn::NormRef norm = &v;
    CAPTURE(nl::nn::norm_key(norm));
    std::vector<std::vector<double>> results[2];
    for (int fused = 0; fused < 2; ++fused) {
      nn::set_fusion_enabled(fused == 1);
      Generator init(3), drop(4);
      auto net = nl::nn::make_net(norm, init, &drop, o);
      net->to(test_device());
      Tensor x = randn({4, 3, 32, 32}, 8);
      Tensor y = Tensor::from_ints({1, 5, 9, 0}, {4}, test_device());
      Tensor loss = nll_loss(net->forward(x), y);
      loss.backward();
      results[fused].push_back(to_double(loss));
      for (auto& [name, p] : net->named_parameters()) results[fused].push_back(to_double(p.grad()));
    }
    nn::set_fusion_enabled(true);
    REQUIRE(results[0].size() == results[1].size());
    for (size_t t = 0; t < results[0].size(); ++t) {
      CAPTURE(t);
      for (size_t i = 0; i < results[0][t].size(); ++i)
        REQUIRE(results[1][t][i] == Approx(results[0][t][i]).margin(1e-5).epsilon(1e-4));
    }
  }
}
