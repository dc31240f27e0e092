// Every op's forward against a naive double-precision loop on odd shapes.
#include <algorithm>
#include <string>
#include <vector>

#include "helpers.h"
#include "normlab/core/autograd.h"
#include "normlab/core/dispatch.h"
#include "normlab/core/ops.h"
#include "normlab/core/kernel/philox.h"
#include "reference.h"

using namespace nl;
using namespace nl::test;

TEST_CASE("conv2d matches the naive loop for strides, paddings and filter sizes", "[ops][conv2d][quick]") {
  struct Case {
    int64_t N, C, H, W, K, R, stride, pad;
    bool bias;
  };
  for (Case c : {Case{3, 6, 5, 7, 4, 3, 1, 1, true}, Case{2, 3, 7, 5, 5, 3, 2, 0, false},
                 Case{3, 6, 5, 7, 2, 1, 1, 0, true}, Case{1, 2, 9, 8, 3, 5, 2, 2, true},
                 Case{2, 1, 4, 4, 3, 2, 3, 1, false},
                 // "same" convolutions take im2col's shifted-plane path, others the general one
                 Case{2, 3, 6, 5, 4, 5, 1, 2, true}, Case{2, 3, 6, 5, 4, 5, 1, 1, false},
                 Case{2, 2, 1, 3, 3, 3, 1, 1, false},
                 // rows of 16 and 32 pixels, channels in 8s: the direct AVX-512 3x3 kernel
                 Case{2, 8, 4, 16, 8, 3, 1, 1, true}, Case{1, 3, 3, 32, 16, 3, 1, 1, false},
                 Case{3, 16, 2, 16, 24, 3, 1, 1, false}}) {
    CAPTURE(c.N, c.C, c.H, c.W, c.K, c.R, c.stride, c.pad, c.bias);
    Tensor x = randn({c.N, c.C, c.H, c.W}, 1), w = randn({c.K, c.C, c.R, c.R}, 2, 0.3f);
    Tensor b = c.bias ? randn({c.K}, 3) : Tensor();
    Tensor y = conv2d(x, w, b, c.stride, c.pad);
    require_close(y, ref::conv2d(x, w, c.bias ? &b : nullptr, c.stride, c.pad), 1e-5, "conv2d");
  }
}

TEST_CASE("batch_norm training and eval match the definition", "[ops][norm][quick]") {
  Tensor x = randn({3, 6, 5, 7}, 4, 2.0f, 0.7f);
  Tensor gamma = randn({6}, 5, 0.5f, 1.0f), beta = randn({6}, 6);
  Tensor rm = Tensor::zeros({6}, DType::F32, test_device()), rv = Tensor::ones({6}, test_device());
  ref::Vec mean, var;
  ref::Vec expected = ref::normalize(
      x, 6, [](int64_t, int64_t c) { return c; }, &gamma, &beta, 1e-5, &mean, &var);
  Tensor y = batch_norm(x, gamma, beta, rm, rv, true, 0.1f, 1e-5f);
  require_close(y, expected, 1e-5, "batch_norm train");

  // Running statistics: momentum 0.1 from (0, 1), unbiased variance.
  const double M = 3 * 5 * 7;
  ref::Vec erm, erv;
  for (int c = 0; c < 6; ++c) {
    erm.push_back(0.1 * mean[c]);
    erv.push_back(0.9 + 0.1 * var[c] * M / (M - 1));
  }
  require_close(rm, erm, 1e-5, "running_mean");
  require_close(rv, erv, 1e-5, "running_var");

  // Eval uses the running statistics.
  ref::Vec eval_expected;
  for (int64_t n = 0; n < 3; ++n)
    for (int64_t c = 0; c < 6; ++c)
      for (int64_t h = 0; h < 5; ++h)
        for (int64_t w = 0; w < 7; ++w)
          eval_expected.push_back((x.at({n, c, h, w}) - rm.at({c})) / std::sqrt(rv.at({c}) + 1e-5) *
                                      gamma.at({c}) +
                                  beta.at({c}));
  Tensor ye = batch_norm(x, gamma, beta, rm, rv, false, 0.1f, 1e-5f);
  require_close(ye, eval_expected, 1e-5, "batch_norm eval");
}

TEST_CASE("group_norm matches the definition for every divisor of C", "[ops][norm][quick]") {
  Tensor x = randn({3, 6, 5, 7}, 7, 1.5f, -0.4f);
  Tensor gamma = randn({6}, 8, 0.5f, 1.0f), beta = randn({6}, 9);
  for (int64_t G : {1, 2, 3, 6}) {
    CAPTURE(G);
    int64_t Cg = 6 / G;
    ref::Vec expected = ref::normalize(
        x, 3 * G, [G, Cg](int64_t n, int64_t c) { return n * G + c / Cg; }, &gamma, &beta, 1e-5);
    require_close(group_norm(x, G, gamma, beta), expected, 1e-5, "group_norm");
  }
  // Without affine parameters.
  ref::Vec plain = ref::normalize(
      x, 3, [](int64_t n, int64_t) { return n; }, nullptr, nullptr, 1e-5);
  require_close(group_norm(x, 1, Tensor(), Tensor()), plain, 1e-5, "group_norm no affine");
}

TEST_CASE("normalize: RMSNorm (per-group statistics without centering) matches the definition",
          "[ops][norm][quick]") {
  // A mean of -0.4 that centering would remove: here it must stay in the output.
  Tensor x = randn({3, 6, 5, 7}, 7, 1.5f, -0.4f), dy = randn({3, 6, 5, 7}, 70);
  Tensor gamma = randn({6}, 8, 0.5f, 1.0f), beta = randn({6}, 9);
  for (int64_t G : {1, 3}) {
    CAPTURE(G);
    const int64_t Cg = 6 / G;
    const ref::Vec rx = to_double(x), rg = to_double(gamma), rb = to_double(beta), rdy = to_double(dy);
    const ref::NormRef r = ref::normalize_fwd_bwd(
        rx, 3, 6, 35, 3 * G, [G, Cg](int64_t n, int64_t c) { return n * G + c / Cg; }, &rg, &rb, &rdy, 1e-5,
        false, nullptr, /*center=*/false);
    NormSpec spec = NormSpec::rms();
    spec.groups = G;
    Tensor xi = x.detach().set_requires_grad(true), gi = gamma.detach().set_requires_grad(true),
           bi = beta.detach().set_requires_grad(true);
    Tensor y = normalize(xi, spec, gi, bi);
    y.backward(dy);
    require_close(y, r.y, 1e-5, "rms y");
    require_close(xi.grad(), r.dx, 1e-4, "rms dx");
    require_close(gi.grad(), r.dgamma, 1e-4, "rms dgamma");
    require_close(bi.grad(), r.dbeta, 1e-4, "rms dbeta");
  }
  CHECK_THROWS_WITH(normalize(x, NormSpec{NormSpec::Stats::PerChannel, 1, false}, gamma, beta),
                    Catch::Contains("per-group statistics only"));
}

TEST_CASE("layer_norm over the last dimension matches the definition", "[ops][norm][quick]") {
  Tensor x = randn({5, 7}, 10, 3.0f, 1.0f), gamma = randn({7}, 11), beta = randn({7}, 12);
  ref::Vec expected;
  for (int64_t i = 0; i < 5; ++i) {
    double m = 0, v = 0;
    for (int64_t j = 0; j < 7; ++j) m += x.at({i, j}) / 7.0;
    for (int64_t j = 0; j < 7; ++j) v += (x.at({i, j}) - m) * (x.at({i, j}) - m) / 7.0;
    for (int64_t j = 0; j < 7; ++j)
      expected.push_back((x.at({i, j}) - m) / std::sqrt(v + 1e-5) * gamma.at({j}) + beta.at({j}));
  }
  require_close(layer_norm(x, gamma, beta), expected, 1e-5, "layer_norm");
}

TEST_CASE("pooling matches the naive loop", "[ops][pool][quick]") {
  Tensor x = randn({3, 6, 5, 7}, 13);
  require_close(max_pool2d(x, 2, 2), ref::max_pool2d(x, 2, 2), 0, "max_pool2d 2x2");
  require_close(max_pool2d(x, 3, 2), ref::max_pool2d(x, 3, 2), 0, "max_pool2d 3x3 s2");
  CHECK(max_pool2d(x).shape() == Shape{3, 6, 2, 3});  // floor mode on odd sizes
  ref::Vec gap;
  for (int64_t n = 0; n < 3; ++n)
    for (int64_t c = 0; c < 6; ++c) {
      double s = 0;
      for (int64_t h = 0; h < 5; ++h)
        for (int64_t w = 0; w < 7; ++w) s += x.at({n, c, h, w});
      gap.push_back(s / 35.0);
    }
  Tensor g = global_avg_pool(x);
  CHECK(g.shape() == Shape{3, 6, 1, 1});
  require_close(g, gap, 1e-6, "global_avg_pool");
}

TEST_CASE("elementwise ops, linear and losses match the naive loop", "[ops][quick]") {
  Tensor a = randn({3, 5, 7}, 14), b = randn({3, 5, 7}, 15);
  ref::Vec s, m, r;
  double total = 0;
  for (int64_t i = 0; i < 3; ++i)
    for (int64_t j = 0; j < 5; ++j)
      for (int64_t k = 0; k < 7; ++k) {
        double u = a.at({i, j, k}), v = b.at({i, j, k});
        s.push_back(u + v), m.push_back(u * v), r.push_back(std::max(u, 0.0)), total += u;
      }
  require_close(add(a, b), s, 1e-7, "add");
  require_close(mul(a, b), m, 1e-7, "mul");
  require_close(relu(a), r, 0, "relu");
  // float accumulation on the GPU (double on the CPU): the sum of 105 terms of size ~1
  require_close(sum(a), {total}, 2e-5, "sum");

  Tensor x = randn({4, 5}, 16), w = randn({3, 5}, 17), bias = randn({3}, 18);
  ref::Vec lin;
  for (int64_t i = 0; i < 4; ++i)
    for (int64_t o = 0; o < 3; ++o) {
      double acc = bias.at({o});
      for (int64_t k = 0; k < 5; ++k) acc += double(x.at({i, k})) * w.at({o, k});
      lin.push_back(acc);
    }
  require_close(linear(x, w, bias), lin, 1e-6, "linear");

  Tensor logits = randn({6, 10}, 19, 3.0f);
  ref::Vec lsm = ref::log_softmax(logits);
  require_close(log_softmax(logits), lsm, 1e-6, "log_softmax");
  std::vector<int32_t> t = {3, 0, 9, 9, 1, 5};
  double nll = 0;
  for (int i = 0; i < 6; ++i) nll -= lsm[i * 10 + t[i]] / 6.0;
  require_close(nll_loss(log_softmax(logits), Tensor::from_ints(t, {6}, test_device())), {nll}, 1e-6,
                "nll_loss");
  require_close(cross_entropy(logits, Tensor::from_ints(t, {6}, test_device())), {nll}, 1e-6,
                "cross_entropy");
}

TEST_CASE("dropout zeroes about p of the elements, scales the rest and is seeded", "[ops][dropout][quick]") {
  Tensor x = Tensor::ones({64, 64}, test_device());
  Generator g1(7), g2(7);
  Tensor y1 = dropout(x, 0.25f, true, &g1), y2 = dropout(x, 0.25f, true, &g2);
  std::vector<float> v1 = y1.to_vector(), v2 = y2.to_vector();
  CHECK(v1 == v2);
  int64_t zeros = 0;
  for (float v : v1) {
    REQUIRE((v == 0.0f || v == Approx(1.0f / 0.75f)));
    zeros += v == 0.0f;
  }
  // 4096 Bernoulli(0.25) draws: mean 1024, sd 27.7; 6 sd either way.
  CHECK(zeros > 1024 - 166);
  CHECK(zeros < 1024 + 166);
  // A second call continues the stream: a different mask.
  CHECK(dropout(x, 0.25f, true, &g1).to_vector() != v1);
  // Eval and p = 0 are the identity.
  CHECK(dropout(x, 0.25f, false, &g1).same(x));
}

TEST_CASE("dropout keeps exactly the elements whose Philox draw reaches p", "[ops][dropout][quick]") {
  // The kernel's integer comparison must agree with the definition u_i >= p element by element.
  Tensor x = randn({3, 37}, 50);
  for (float p : {0.05f, 0.3f, 0.5f}) {
    Generator g(123);
    const uint64_t offset = g.offset();
    Tensor y = dropout(x, p, true, &g);
    std::vector<float> xv = x.to_vector(), yv = y.to_vector();
    for (size_t i = 0; i < xv.size(); ++i) {
      const bool keep = philox_uniform(123, offset, i) >= p;
      REQUIRE(yv[i] == (keep ? xv[i] * (1.0f / (1.0f - p)) : 0.0f));
    }
  }
}

// The CPU op profile (bench_train_step --profile on the CPU) records every kernel call of the
// profiling thread, in order, with the FLOPs and least bytes its parameters give, and nothing
// once it is off.
TEST_CASE("the CPU op profile records each kernel call with its FLOPs and bytes", "[ops][quick]") {
  const Device cpu = Device::cpu();
  Generator gen(3);
  Tensor x = Tensor::randn({2, 3, 8, 8}, gen), w = Tensor::randn({4, 3, 3, 3}, gen);
  Tensor gamma = Tensor::ones({4}, cpu), beta = Tensor::zeros({4});
  w.set_requires_grad(true);
  op_profile_begin();
  Tensor y = group_norm(conv2d(x, w, Tensor(), 1, 1), 2, gamma, beta);
  y.backward(Tensor::ones(y.shape(), cpu));
  const std::vector<OpRecord> ops = op_profile_end();
  (void)conv2d(x, w, Tensor(), 1, 1);  // after the end: not recorded
  CHECK(op_profile_end().empty());
  std::vector<std::string> names;
  for (const OpRecord& o : ops) names.emplace_back(o.op);
  REQUIRE(std::count(names.begin(), names.end(), "conv2d_fwd") == 1);
  REQUIRE(std::count(names.begin(), names.end(), "conv2d_bwd") == 1);
  REQUIRE(std::count(names.begin(), names.end(), "norm_fwd") == 1);
  REQUIRE(std::count(names.begin(), names.end(), "norm_bwd") == 1);
  CHECK(names.front() == "conv2d_fwd");
  const double fwd = 2.0 * 2 * 4 * 8 * 8 * (3 * 3 * 3);  // 2 N K P Q C R S
  for (const OpRecord& o : ops) {
    CAPTURE(o.op);
    CHECK(o.us >= 0);
    const std::string op = o.op;
    if (op == "conv2d_fwd") {
      CHECK(o.cost.flops == fwd);
      CHECK(o.cost.bytes == 4.0 * (2 * 3 * 64 + 4 * 27 + 2 * 4 * 64));
      CHECK(o.cost.shape[4] == 4);
    }
    // x needs no gradient: backward-weight only.
    if (op == "conv2d_bwd") CHECK(o.cost.flops == fwd);
    if (op == "norm_fwd") CHECK(o.cost.bytes == 4.0 * 2 * (2 * 4 * 64));
  }
}
