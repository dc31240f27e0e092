// The norm family from one table: every variant of nl::NormSpec runs the same checks: the naive
// double-precision reference (forward, backward, running statistics, the fused ReLU/TLU +
// residual epilogue), the finite-difference gradient check and its tamper test, and (hidden tag
// [.cuda], in the cuda registrations under three thread orders) CUDA against the CPU, plain and
// with the whole fused epilogue on a scalar-path (HxW 35), a float4-path (HxW 32) and a medium
// (HxW 1089, several trips of every loop) shape.
// The PyTorch goldens of the same keys are in test_golden.cpp; the fusion check over the app's
// network in test_fusion.cpp. A new variant is one row here.
#include <algorithm>
#include <functional>
#include <string>

#include "gradcheck.h"
#include "helpers.h"
#include "normlab/core/autograd.h"
#include "normlab/core/ops.h"
#include "normlab/nn/layers.h"
#include "reference.h"

using namespace nl;
using namespace nl::test;

namespace {

struct NormCase {
  const char* key;
  NormSpec spec;
  // Statistics set of element (n, c) for an [N, C, ...] input, and the number of sets.
  std::function<int64_t(int64_t n, int64_t c, int64_t N, int64_t C)> set_of;
  std::function<int64_t(int64_t N, int64_t C)> sets;
};

// One spec per variant of the family; the reference sees only set_of and the spec's flags.
const std::vector<NormCase>& norm_cases() {
  auto per_channel = [](int64_t, int64_t c, int64_t, int64_t) { return c; };
  auto channels = [](int64_t, int64_t C) { return C; };
  auto per_sample = [](int64_t n, int64_t, int64_t, int64_t) { return n; };
  auto samples = [](int64_t N, int64_t) { return N; };
  auto per_nc = [](int64_t n, int64_t c, int64_t, int64_t C) { return n * C + c; };
  auto nc = [](int64_t N, int64_t C) { return N * C; };
  // Ghost batches of 2 samples: N = 5 makes micro-batches of 2, 2 and 1.
  auto ghost2 = [](int64_t n, int64_t c, int64_t, int64_t C) { return (n / 2) * C + c; };
  auto ghost2_sets = [](int64_t N, int64_t C) { return (N + 1) / 2 * C; };
  NormSpec brn = NormSpec::batch_renorm(1.5f, 0.5f);  // tight clips: the test's running stats reach them
  static const std::vector<NormCase> table = {
      {"bn", NormSpec::batch(), per_channel, channels},
      {"gbn", NormSpec::ghost_batch_norm(2), ghost2, ghost2_sets},
      {"brn", brn, per_channel, channels},
      {"gn", NormSpec::group(3), [](int64_t n, int64_t c, int64_t, int64_t C) { return n * 3 + c / (C / 3); },
       [](int64_t N, int64_t) { return N * 3; }},
      {"ln", NormSpec::group(1), per_sample, samples},
      {"in", NormSpec::instance(), per_nc, nc},
      {"rms", NormSpec::rms(), per_sample, samples},
      {"frn", NormSpec::frn(), per_nc, nc},
  };
  return table;
}

bool per_channel(const NormSpec& s) { return s.stats == NormSpec::Stats::PerChannel; }

// Running statistics before the call: Batch Renorm's r and d come from them, so they are far
// enough from the batch's to clip some channels and not others.
Tensor start_mean(int64_t C) { return randn({C}, 900, 0.6f); }
Tensor start_var(int64_t C) {
  std::vector<float> v = randn({C}, 901, 0.8f).to_vector();
  for (float& x : v) x = std::exp(x);
  return Tensor::from_vector(v, {C}, test_device());
}

struct Inputs {
  Tensor x, gamma, beta, tau, residual, dy;
};
Inputs inputs(const NormCase& c, const Shape& s, uint64_t seed) {
  Inputs in;
  in.x = randn(s, seed, 1.5f, 0.4f);
  in.gamma = randn({s[1]}, seed + 1, 0.5f, 1.0f);
  in.beta = randn({s[1]}, seed + 2, 0.5f);
  if (c.spec.tlu) in.tau = randn({s[1]}, seed + 3, 0.3f, -0.2f);
  in.residual = randn(s, seed + 4);
  in.dy = randn(s, seed + 5);
  return in;
}

// The double-precision reference of case c on inputs `in`; act: ReLU (or the case's TLU).
ref::NormRef reference(const NormCase& c, const Inputs& in, bool act, bool residual, const ref::Vec& rm,
                       const ref::Vec& rv) {
  const int64_t N = in.x.size(0), C = in.x.size(1), HW = in.x.numel() / (N * C);
  const ref::Vec x = to_double(in.x), g = to_double(in.gamma), b = to_double(in.beta), dy = to_double(in.dy);
  const ref::Vec res = to_double(in.residual), tau = c.spec.tlu ? to_double(in.tau) : ref::Vec();
  ref::NormRefExtras ex;
  if (c.spec.tlu) ex.tau = &tau;
  if (c.spec.renorm) {
    const double eps = c.spec.eps, rmax = c.spec.r_max, dmax = c.spec.d_max;
    ex.renorm = [&rm, &rv, eps, rmax, dmax, C](int64_t s, double mean, double var) {
      const int64_t ch = s % C;
      const double sigma_run = std::sqrt(rv[ch] + eps);
      return std::pair{std::clamp(std::sqrt(var + eps) / sigma_run, 1.0 / rmax, rmax),
                       std::clamp((mean - rm[ch]) / sigma_run, -dmax, dmax)};
    };
  }
  auto set_of = [&](int64_t n, int64_t ch) { return c.set_of(n, ch, N, C); };
  return ref::normalize_fwd_bwd(x, N, C, HW, c.sets(N, C), set_of, &g, &b, &dy, c.spec.eps,
                                act && !c.spec.tlu, residual ? &res : nullptr, c.spec.center, ex);
}

// The op under test: nl::normalize with the case's spec; running statistics for per-channel
// specs (fresh clones of start_mean/var unless given).
Tensor run(const NormCase& c, const std::vector<Tensor>& v, const NormEpilogue& e, Tensor rm = Tensor(),
           Tensor rv = Tensor()) {
  const int64_t C = v[0].size(1);
  if (per_channel(c.spec) && !rm.defined())
    rm = start_mean(C).to(v[0].device()), rv = start_var(C).to(v[0].device());
  NormEpilogue ee = e;
  if (c.spec.tlu) ee.tau = v.at(3);
  return normalize(v[0], c.spec, v[1], v[2], rm, rv, true, ee);
}

// TLU's kink under finite differences: a step of h moves an element's pre-activation by about
// h, so an element within h of tau gets a numeric gradient split between the norm and tau. The
// gradient check puts each channel's tau in the middle of the widest gap between that channel's
// pre-activations (away from the extremes), where no step crosses it.
Tensor tau_in_gaps(const NormSpec& spec, const Inputs& in) {
  NormSpec plain = spec;
  plain.tlu = false;
  const std::vector<float> pre = normalize(in.x, plain, in.gamma, in.beta).to_vector();
  const int64_t N = in.x.size(0), C = in.x.size(1), HW = in.x.numel() / (N * C);
  std::vector<float> tau(static_cast<size_t>(C));
  for (int64_t ch = 0; ch < C; ++ch) {
    std::vector<float> v;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t i = 0; i < HW; ++i) v.push_back(pre[static_cast<size_t>((n * C + ch) * HW + i)]);
    std::sort(v.begin(), v.end());
    size_t best = v.size() / 4;
    for (size_t k = v.size() / 4; k < 3 * v.size() / 4; ++k)
      if (v[k + 1] - v[k] > v[best + 1] - v[best]) best = k;
    tau[static_cast<size_t>(ch)] = 0.5f * (v[best] + v[best + 1]);
  }
  return Tensor::from_vector(tau, {C}, test_device());
}

}  // namespace

TEST_CASE("norm table: every variant matches the reference, forward, backward and running statistics",
          "[ops][norm][norm-table][quick]") {
  for (const NormCase& c : norm_cases()) {
    for (bool fused : {false, true}) {
      CAPTURE(c.key, fused);
      const Inputs in = inputs(c, {5, 6, 5, 7}, 40);
      const int64_t C = 6;
      const ref::Vec rm0 = to_double(start_mean(C)), rv0 = to_double(start_var(C));
      const ref::NormRef r = reference(c, in, fused, fused, rm0, rv0);
      Tensor x = in.x.detach().set_requires_grad(true), g = in.gamma.detach().set_requires_grad(true),
             b = in.beta.detach().set_requires_grad(true);
      Tensor tau = c.spec.tlu ? in.tau.detach().set_requires_grad(true) : Tensor();
      Tensor res = in.residual.detach().set_requires_grad(true);
      NormEpilogue e;
      // The ReLU only where the variant has no activation of its own (TLU).
      e.relu = fused && !c.spec.tlu;
      if (fused) e.residual = res;
      Tensor rm = start_mean(C), rv = start_var(C);
      Tensor y =
          run(c, {x, g, b, tau}, e, per_channel(c.spec) ? rm : Tensor(), per_channel(c.spec) ? rv : Tensor());
      y.backward(in.dy);
      require_close(y, r.y, 1e-5, std::string(c.key) + " y");
      require_close(x.grad(), r.dx, 1e-4, std::string(c.key) + " dx");
      require_close(g.grad(), r.dgamma, 1e-4, std::string(c.key) + " dgamma");
      require_close(b.grad(), r.dbeta, 1e-4, std::string(c.key) + " dbeta");
      if (c.spec.tlu) require_close(tau.grad(), r.dtau, 1e-4, std::string(c.key) + " dtau");
      if (fused) require_close(res.grad(), to_double(in.dy), 0, std::string(c.key) + " dresidual");
      if (!per_channel(c.spec)) continue;
      // Running statistics: one momentum update per statistics set of a channel, in batch order,
      // with the set's unbiased variance (PyTorch's convention).
      ref::Vec em = rm0, ev = rv0;
      const int64_t N = 5, HW = 35, sets = c.sets(N, C);
      for (int64_t s = 0; s < sets; ++s) {
        const int64_t ch = s % C;
        int64_t count = 0;
        for (int64_t n = 0; n < N; ++n) count += c.set_of(n, ch, N, C) == s ? HW : 0;
        const double m = c.spec.momentum;
        em[ch] = (1 - m) * em[ch] + m * r.mean[s];
        ev[ch] = (1 - m) * ev[ch] + m * r.var[s] * count / (count - 1);
      }
      require_close(rm, em, 1e-5, std::string(c.key) + " running_mean");
      require_close(rv, ev, 1e-5, std::string(c.key) + " running_var");
      // Eval mode is BatchNorm's for every per-channel variant: the running statistics alone.
      Tensor ye = normalize(in.x, c.spec, in.gamma, in.beta, rm, rv, false);
      ref::Vec expect;
      const ref::Vec xd = to_double(in.x), gd = to_double(in.gamma), bd = to_double(in.beta);
      const ref::Vec rmd = to_double(rm), rvd = to_double(rv);
      for (int64_t n = 0; n < N; ++n)
        for (int64_t ch = 0; ch < C; ++ch)
          for (int64_t i = 0; i < HW; ++i)
            expect.push_back(
                (xd[(n * C + ch) * HW + i] - rmd[ch]) / std::sqrt(rvd[ch] + c.spec.eps) * gd[ch] + bd[ch]);
      require_close(ye, expect, 1e-5, std::string(c.key) + " eval");
    }
  }
}

TEST_CASE("norm table: Batch Renorm's r and d really clip (the reference test is not BatchNorm's)",
          "[ops][norm][norm-table][quick]") {
  // Guards the table itself: with these running statistics, r and d differ from (1, 0) in some
  // channels and are clipped in others, so a kernel that ignored renorm would fail above.
  const Inputs in = inputs(norm_cases()[2], {5, 6, 5, 7}, 40);
  Tensor rm = start_mean(6), rv = start_var(6);
  Tensor brn = normalize(in.x, NormSpec::batch_renorm(1.5f, 0.5f), in.gamma, in.beta, rm, rv, true);
  Tensor bn = normalize(in.x, NormSpec::batch(), in.gamma, in.beta, start_mean(6), start_var(6), true);
  CHECK(closeness(brn.to_vector(), to_double(bn), 1e-3, 1e-3).worst_ratio > 1.0);
}

// Tiers and stages: full, one order, no sanitizer: hundreds of launches of each variant's kernels at
// one shape (28 s per order on emulated cuda, 4.5 min under TSan); what an order or a sanitizer can
// find, each kernel's result, "every variant on cuda agrees with the CPU" checks in every order.
TEST_CASE("norm table: every variant passes the finite-difference gradient check, and fails it when tampered",
          "[grad][norm-table][full][one-order][no-sanitize]") {
  for (const NormCase& c : norm_cases()) {
    CAPTURE(c.key);
    const Inputs in = inputs(c, {5, 6, 3, 5}, 60);
    std::vector<Tensor> v{in.x, in.gamma, in.beta};
    if (c.spec.tlu) v.push_back(tau_in_gaps(c.spec, in));
    // Batch Renorm's r and d are constants to its gradient by definition; finite differences see
    // them move with x unless both are clipped, so its check runs with running statistics that
    // clip every channel (r = r_max, d = -d_max).
    auto f = [&c](const std::vector<Tensor>& t) {
      Tensor rm, rv;
      if (c.spec.renorm)
        rm = Tensor::full({6}, 10.0f, t[0].device()), rv = Tensor::full({6}, 1e-3f, t[0].device());
      return run(c, t, {}, rm, rv);
    };
    const GradCheckResult ok = grad_check(f, v, std::vector<bool>(v.size(), true));
    INFO(ok.message);
    CHECK(ok.ok);
    GradCheckOptions tampered;
    tampered.tamper = [](size_t, std::vector<float>& g) { g[g.size() / 2] += 0.5f; };
    CHECK_FALSE(grad_check(f, v, std::vector<bool>(v.size(), true), tampered).ok);
  }
}

TEST_CASE("norm table: every variant on cuda agrees with the CPU, plain and with the fused epilogue",
          "[.cuda][cuda-vs-cpu][norm-table][quick]") {
  REQUIRE(device_available(DeviceType::CUDA));
  for (const NormCase& c : norm_cases()) {
    // HxW 35 (scalar path) and 32 (float4 path) with ghost batches of 2, 2 and 1; HxW 1089 so
    // that every per-row loop of a 256-thread block (GroupNorm's per-channel sums, TLU's dtau)
    // and BatchNorm's split take several trips; and N = 70 so that the sums over the batch
    // (dgamma, dbeta, dtau: 32 row lanes) take three trips, the last a tail of 6.
    for (const Shape& s : {Shape{5, 6, 5, 7}, Shape{5, 6, 4, 8}, Shape{2, 6, 33, 33}, Shape{70, 6, 2, 3}}) {
      for (bool fused : {false, true}) {
        CAPTURE(c.key, s, fused);
        const Inputs in = inputs(c, s, 80);
        auto on = [&](Device d) {
          std::vector<Tensor> v{in.x.to(d), in.gamma.to(d), in.beta.to(d),
                                c.spec.tlu ? in.tau.to(d) : Tensor(), in.residual.to(d)};
          for (Tensor& t : v)
            if (t.defined()) t.set_requires_grad(true);
          Generator gen(11);
          NormEpilogue e;
          if (fused) e.relu = !c.spec.tlu, e.dropout = 0.2f, e.gen = &gen, e.residual = v[4];
          Tensor rm = start_mean(6).to(d), rv = start_var(6).to(d);
          Tensor y = run(c, v, e, rm, rv);
          y.backward(in.dy.to(d));
          std::vector<Tensor> out{y, rm, rv};
          for (const Tensor& t : v)
            if (t.defined() && t.grad().defined()) out.push_back(t.grad());
          return out;
        };
        const std::vector<Tensor> cpu = on(Device::cpu()), gpu = on(Device::cuda());
        REQUIRE(cpu.size() == gpu.size());
        for (size_t i = 0; i < cpu.size(); ++i) {
          REQUIRE(gpu[i].device() == Device::cuda());
          require_close(gpu[i], to_double(cpu[i]), 1e-5, std::string(c.key) + " output " + std::to_string(i));
        }
      }
    }
  }
}

// Weight Standardization is a transform of the conv's weights, not a normalize() spec: its row is
// the app's "gn+ws" (test_fusion.cpp and the CUDA training step run every row of that table); here
// nn::Conv2d with it against the definition, and its gradient through the filter statistics.
TEST_CASE("norm table: Weight Standardization convs match the definition and pass the gradient check",
          "[ops][grad][norm-table][quick]") {
  Generator init(5);
  nn::Conv2d conv(3, 4, 3, 1, 1, false, init);
  conv.weight_standardization = true;
  auto f = [&conv](const std::vector<Tensor>& v) {
    conv.weight = v[1];
    return conv.forward(v[0]);
  };
  const Tensor x = randn({2, 3, 5, 6}, 20), w = randn({4, 3, 3, 3}, 21, 0.3f, 0.1f);
  // Each filter to zero mean and unit (biased) variance over (C, R, S), then the convolution.
  std::vector<float> ws = w.to_vector();
  for (int64_t k = 0; k < 4; ++k) {
    double m = 0.0, q = 0.0;
    for (int64_t i = 0; i < 27; ++i) m += ws[size_t(k * 27 + i)] / 27.0;
    for (int64_t i = 0; i < 27; ++i) q += std::pow(ws[size_t(k * 27 + i)] - m, 2) / 27.0;
    for (int64_t i = 0; i < 27; ++i)
      ws[size_t(k * 27 + i)] = float((ws[size_t(k * 27 + i)] - m) / std::sqrt(q + 1e-5));
  }
  const Tensor w_std = Tensor::from_vector(ws, w.shape(), test_device());
  require_close(f({x, w}), ref::conv2d(x, w_std, nullptr, 1, 1), 1e-5, "ws conv");
  CHECK(grad_check(f, {x, w}, {true, true}).ok);
  GradCheckOptions tampered;
  // The filter gradients are large (the standardisation divides by a small std): double one.
  tampered.tamper = [](size_t i, std::vector<float>& g) {
    if (i == 1) g[g.size() / 2] = 2.0f * g[g.size() / 2] + 0.5f;
  };
  CHECK_FALSE(grad_check(f, {x, w}, {true, true}, tampered).ok);
}

TEST_CASE("norm table: Batch Renorm's warm-up relaxes the clips from BatchNorm's over the counted steps",
          "[ops][norm][norm-table][quick]") {
  const Tensor x = randn({5, 6, 5, 7}, 300, 1.5f, 0.4f), g = randn({6}, 301, 0.5f, 1.0f), b = randn({6}, 302);
  NormSpec warm = NormSpec::batch_renorm(1.5f, 0.5f);
  warm.renorm_warmup = 4;
  auto run_at = [&](const NormSpec& s, float step, Tensor* steps_out = nullptr) {
    Tensor steps = Tensor::full({1}, step, test_device());
    Tensor y = normalize(x, s, g, b, start_mean(6), start_var(6), true, {}, steps);
    if (steps_out) *steps_out = steps;
    return to_double(y);
  };
  // Step 0: r = 1, d = 0 exactly, BatchNorm.
  Tensor steps;
  const ref::Vec bn = to_double(normalize(x, NormSpec::batch(), g, b, start_mean(6), start_var(6), true));
  CHECK(run_at(warm, 0.0f, &steps) == bn);
  CHECK(steps.item() == 1.0f);  // one training call, one step
  // Half-way: the clips half-way from (1, 0) to (1.5, 0.5).
  const ref::Vec half = run_at(warm, 2.0f);
  Tensor y_half = normalize(x, NormSpec::batch_renorm(1.25f, 0.25f), g, b, start_mean(6), start_var(6), true);
  require_close(y_half, half, 1e-6, "brn half-way");
  CHECK(closeness(y_half.to_vector(), bn, 1e-3, 1e-3).worst_ratio > 1.0);
  // Past the warm-up: the full clips.
  Tensor y_full = normalize(x, NormSpec::batch_renorm(1.5f, 0.5f), g, b, start_mean(6), start_var(6), true);
  require_close(y_full, run_at(warm, 9.0f), 1e-6, "brn after warm-up");
  // Eval reads the running statistics and counts nothing; training without the counter is refused.
  Tensor counter = Tensor::full({1}, 5.0f, test_device());
  normalize(x, warm, g, b, start_mean(6), start_var(6), false, {}, counter);
  CHECK(counter.item() == 5.0f);
  CHECK_THROWS_WITH(normalize(x, warm, g, b, start_mean(6), start_var(6), true),
                    Catch::Contains("a warm-up of 4 steps needs the step counter"));
}
