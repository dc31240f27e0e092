// The CUDA backend against the CPU backend on identical inputs: every op's forward and backward,
// and two training steps of the comparison network. Hidden tag [.cuda]: these run only in the
// cuda registrations of the suite (see tests/CMakeLists.txt).
#include <functional>

#include "helpers.h"
#include "normlab/nn/models.h"
#include "normlab/core/autograd.h"
#include "normlab/core/kernel/stubs.h"
#include "normlab/core/ops.h"
#include "normlab/core/storage.h"
#include "normlab/nn/data.h"
#include "normlab/nn/optim.h"
#include "normlab/nn/scheduler.h"

using namespace nl;
using namespace nl::test;

namespace {

struct OpCase {
  const char* name;
  std::function<Tensor(const std::vector<Tensor>&)> f;
  std::vector<Tensor> inputs;  // CPU tensors; all float inputs get gradients
  double rtol;                 // relative to each tensor's RMS (require_close)
};

// Runs f on both devices and compares the output and every input gradient.
void agree(const OpCase& c) {
  INFO("op " << c.name);
  auto run = [&](Device d) {
    std::vector<Tensor> in;
    for (const Tensor& t : c.inputs) {
      Tensor u = t.to(d);
      if (u.dtype() == DType::F32) u.set_requires_grad(true);
      in.push_back(u);
    }
    Tensor y = c.f(in);
    Generator g(17);
    Tensor dy = Tensor::randn(y.shape(), g, d);
    y.backward(dy);
    std::vector<Tensor> out{y};
    for (const Tensor& t : in)
      if (t.dtype() == DType::F32) out.push_back(t.grad());
    return out;
  };
  std::vector<Tensor> cpu = run(Device::cpu()), gpu = run(Device::cuda());
  REQUIRE(cpu.size() == gpu.size());
  for (size_t i = 0; i < cpu.size(); ++i) {
    REQUIRE(gpu[i].device() == Device::cuda());
    require_close(gpu[i], to_double(cpu[i]), c.rtol,
                  std::string(c.name) + (i ? " grad " + std::to_string(i - 1) : " output"));
  }
}

Tensor cpu_randn(const Shape& s, uint64_t seed, float scale = 1.0f, float shift = 0.0f) {
  Generator g(seed);
  std::vector<float> v(static_cast<size_t>(s.numel()));
  for (float& x : v) x = g.next_normal() * scale + shift;
  return Tensor::from_vector(v, s);
}

// v = x, gamma, beta, residual. BatchNorm when batch (g unused), else GroupNorm with g groups.
Tensor fused(const std::vector<Tensor>& v, bool batch, float g, const Tensor& rm, const Tensor& rv) {
  Generator gen(11);
  NormEpilogue e;
  e.relu = true, e.dropout = 0.2f, e.gen = &gen, e.residual = v[3];
  if (batch)
    return batch_norm(v[0], v[1], v[2], rm.clone().to(v[0].device()), rv.clone().to(v[0].device()), true,
                      0.1f, 1e-5f, e);
  return group_norm(v[0], static_cast<int64_t>(g), v[1], v[2], 1e-5f, e);
}

}  // namespace

TEST_CASE("every CUDA op agrees with the CPU op forward and backward", "[.cuda][cuda-vs-cpu][quick]") {
  REQUIRE(device_available(DeviceType::CUDA));
  Tensor rm = Tensor::zeros({6}), rv = Tensor::ones({6});
  const Tensor target = Tensor::from_ints({3, 0, 9, 9, 1, 5, 2}, {7});
  // Tolerances: float reductions in a different order than the CPU's double accumulation.
  std::vector<OpCase> cases = {
      {"conv2d 3x3 s1 p1",
       [](auto& v) { return conv2d(v[0], v[1], v[2], 1, 1); },
       {cpu_randn({3, 5, 9, 7}, 1), cpu_randn({6, 5, 3, 3}, 2, 0.3f), cpu_randn({6}, 3)},
       1e-5},
      {"conv2d 3x3 s2 p0",
       [](auto& v) { return conv2d(v[0], v[1], Tensor(), 2, 0); },
       {cpu_randn({2, 3, 11, 8}, 4), cpu_randn({70, 3, 3, 3}, 5, 0.3f)},
       1e-5},
      {"conv2d 1x1",
       [](auto& v) { return conv2d(v[0], v[1], Tensor(), 1, 0); },
       {cpu_randn({2, 32, 6, 6}, 6), cpu_randn({16, 32, 1, 1}, 7)},
       1e-5},
      {"batch_norm train",
       [&](auto& v) {
         return batch_norm(v[0], v[1], v[2], rm.clone().to(v[0].device()), rv.clone().to(v[0].device()),
                           true);
       },
       {cpu_randn({4, 6, 5, 7}, 8, 2.0f, 0.5f), cpu_randn({6}, 9, 0.5f, 1.0f), cpu_randn({6}, 10)},
       1e-5},
      {"batch_norm eval",
       [&](auto& v) {
         return batch_norm(v[0], v[1], v[2], rm.to(v[0].device()), rv.to(v[0].device()), false);
       },
       {cpu_randn({4, 6, 5, 7}, 11), cpu_randn({6}, 12), cpu_randn({6}, 13)},
       1e-5},
      {"group_norm G=3",
       [](auto& v) { return group_norm(v[0], 3, v[1], v[2]); },
       {cpu_randn({4, 6, 5, 7}, 14, 1.5f), cpu_randn({6}, 15), cpu_randn({6}, 16)},
       1e-5},
      {"group_norm G=1 (LayerNorm over C,H,W)",
       [](auto& v) { return group_norm(v[0], 1, v[1], v[2]); },
       {cpu_randn({3, 6, 5, 7}, 17), cpu_randn({6}, 18), cpu_randn({6}, 19)},
       1e-5},
      {"group_norm G=C (InstanceNorm)",
       [](auto& v) { return group_norm(v[0], 6, v[1], v[2]); },
       {cpu_randn({3, 6, 5, 7}, 20), cpu_randn({6}, 21), cpu_randn({6}, 22)},
       1e-5},
      {"RMSNorm over C,H,W, HxW 35",
       [](auto& v) { return normalize(v[0], NormSpec::rms(), v[1], v[2]); },
       {cpu_randn({3, 6, 5, 7}, 56, 1.0f, 0.5f), cpu_randn({6}, 57), cpu_randn({6}, 58)},
       1e-5},
      {"RMSNorm + relu + dropout + residual, HxW 32",
       [&](auto& v) {
         Generator gen(11);
         NormEpilogue e;
         e.relu = true, e.dropout = 0.2f, e.gen = &gen, e.residual = v[3];
         return normalize(v[0], NormSpec::rms(), v[1], v[2], Tensor(), Tensor(), true, e);
       },
       {cpu_randn({4, 6, 4, 8}, 59, 1.5f, 0.3f), cpu_randn({6}, 60), cpu_randn({6}, 61),
        cpu_randn({4, 6, 4, 8}, 62)},
       1e-5},
      // The fused epilogue on a scalar-path shape (HxW = 35) and a float4-path shape (HxW = 32);
      // BatchNorm with a large mean checks the GPU's shifted one-pass statistics.
      {"batch_norm + relu + dropout + residual, HxW 35",
       [&](auto& v) { return fused(v, true, 5.0f, rm, rv); },
       {cpu_randn({4, 6, 5, 7}, 40, 2.0f, 0.5f), cpu_randn({6}, 41, 0.5f, 1.0f), cpu_randn({6}, 42),
        cpu_randn({4, 6, 5, 7}, 43)},
       1e-5},
      {"batch_norm + relu + dropout + residual, HxW 32, mean 100",
       [&](auto& v) { return fused(v, true, 5.0f, rm, rv); },
       {cpu_randn({4, 6, 4, 8}, 44, 2.0f, 100.0f), cpu_randn({6}, 45, 0.5f, 1.0f), cpu_randn({6}, 46),
        cpu_randn({4, 6, 4, 8}, 47)},
       1e-5},
      {"group_norm G=3 + relu + dropout + residual, HxW 35",
       [&](auto& v) { return fused(v, false, 3.0f, rm, rv); },
       {cpu_randn({4, 6, 5, 7}, 48, 1.5f), cpu_randn({6}, 49), cpu_randn({6}, 50),
        cpu_randn({4, 6, 5, 7}, 51)},
       1e-5},
      {"group_norm G=1 + relu + dropout + residual, HxW 32",
       [&](auto& v) { return fused(v, false, 1.0f, rm, rv); },
       {cpu_randn({4, 6, 4, 8}, 52, 1.5f), cpu_randn({6}, 53), cpu_randn({6}, 54),
        cpu_randn({4, 6, 4, 8}, 55)},
       1e-5},
      {"layer_norm last dim",
       [](auto& v) { return layer_norm(v[0], v[1], v[2]); },
       {cpu_randn({9, 300}, 23, 2.0f, 1.0f), cpu_randn({300}, 24), cpu_randn({300}, 25)},
       1e-5},
      {"relu", [](auto& v) { return relu(v[0]); }, {cpu_randn({3, 5, 7}, 26)}, 0},
      {"max_pool2d 2x2", [](auto& v) { return max_pool2d(v[0]); }, {cpu_randn({3, 6, 5, 7}, 27)}, 0},
      {"max_pool2d 3x3 s2",
       [](auto& v) { return max_pool2d(v[0], 3, 2); },
       {cpu_randn({2, 3, 9, 7}, 28)},
       1e-6},
      {"global_avg_pool", [](auto& v) { return global_avg_pool(v[0]); }, {cpu_randn({3, 6, 5, 7}, 29)}, 1e-6},
      {"add", [](auto& v) { return add(v[0], v[1]); }, {cpu_randn({3, 70}, 30), cpu_randn({3, 70}, 31)}, 0},
      {"mul", [](auto& v) { return mul(v[0], v[1]); }, {cpu_randn({3, 70}, 32), cpu_randn({3, 70}, 33)}, 0},
      {"sum", [](auto& v) { return sum(v[0]); }, {cpu_randn({3, 70}, 34)}, 1e-5},
      {"dropout",
       [](auto& v) {
         Generator g(5);
         return dropout(v[0], 0.3f, true, &g);
       },
       {cpu_randn({5, 77}, 35)},
       0},
      {"linear",
       [](auto& v) { return linear(v[0], v[1], v[2]); },
       {cpu_randn({7, 20}, 36), cpu_randn({9, 20}, 37), cpu_randn({9}, 38)},
       1e-5},
      {"log_softmax + nll",
       [&](auto& v) { return nll_loss(log_softmax(v[0]), target.to(v[0].device())); },
       {cpu_randn({7, 10}, 39, 2.0f)},
       1e-5},
  };
  for (const OpCase& c : cases) agree(c);
}

// Tiers and stages: full, one order, no sanitizer: it checks that the ops compose into the same
// network; what a thread order or a memory error can change is each kernel's result, which the op,
// medium-shape and norm-table tests check in every order and under the sanitizers (this test: 276 s
// under ASan).
TEST_CASE("two training steps of the comparison network on cuda match the CPU",
          "[.cuda][cuda-vs-cpu][train][full][one-order][no-sanitize]") {
  REQUIRE(device_available(DeviceType::CUDA));
  data::Dataset d = data::load_cifar10(NORMLAB_CIFAR_SUBSET);
  data::LoaderOptions lo;
  lo.batch_size = 16;
  lo.augment = true;
  lo.background = false;
  data::DataLoader loader(d.train.head(32), d.mean, d.std, lo);
  // Every row of the app's norm table; Ghost BatchNorm in micro-batches of 8 of the 16. (Batch 16,
  // not 32: the same paths at half the emulated cost, 2.5 minutes of the emulate stage at 32.)
  nl::nn::NetOptions o;
  o.ghost_batch = 8;
  for (const nl::nn::NormVariant& v : nl::nn::norm_variants()) {
    // In one process SyncBatchNorm is BatchNorm (no group: the very same code); its own path
    // runs under mpirun in the dist tests.
    if (v.key == "sbn") continue;
    const nl::nn::NormRef k = &v;
    INFO("norm " << nl::nn::norm_key(k));
    std::vector<float> losses[2];
    for (int dev = 0; dev < 2; ++dev) {
      const Device device = dev ? Device::cuda() : Device::cpu();
      Generator init(0), drop(1);
      auto net = nl::nn::make_net(k, init, &drop, o);
      net->to(device);
      nn::SGD opt(net->parameters(), {.lr = 0.004f, .momentum = 0.95f, .weight_decay = 5e-4f});
      nn::OneCycleLR sched(opt, 0.1f, 10);
      loader.start_epoch(1);
      data::Batch b;
      while (loader.next(b)) {  // 32 images: 2 steps of 16
        opt.zero_grad();
        Tensor loss = nll_loss(net->forward(b.images.to(device)), b.labels.to(device));
        loss.backward();
        opt.step();
        sched.step();
        losses[dev].push_back(loss.item());
      }
    }
    REQUIRE(losses[0].size() == 2);
    for (size_t s = 0; s < 2; ++s) {
      CAPTURE(s, losses[0][s], losses[1][s]);
      CHECK(std::abs(losses[1][s] - losses[0][s]) <= 1e-3 * std::abs(losses[0][s]));
    }
  }
}

TEST_CASE("a bad class index on cuda is reported at the next synchronisation, not by a copy per step",
          "[.cuda][cuda-vs-cpu][errors][quick]") {
  REQUIRE(device_available(DeviceType::CUDA));
  Tensor logp = log_softmax(cpu_randn({4, 10}, 60)).to(Device::cuda());
  // nll_loss itself returns: the check runs in the kernel, no host copy of the targets.
  Tensor loss = nll_loss(logp, Tensor::from_ints({1, 12, 3, -2}, {4}).to(Device::cuda()));
  CHECK_THROWS_WITH(loss.item(),
                    Catch::Matchers::Contains("nll_loss: target[1] = 12 is not a class index in [0, 10)") &&
                        Catch::Matchers::Contains("found on the GPU"));
  // Reported once; the next loss with good targets is fine.
  Tensor good = nll_loss(logp, Tensor::from_ints({1, 2, 3, 4}, {4}).to(Device::cuda()));
  CHECK(std::isfinite(good.item()));
  CHECK_THROWS_WITH(nll_loss(logp, Tensor::from_ints({0, 0, 0, 10}, {4}).to(Device::cuda())).item(),
                    Catch::Matchers::Contains("target[3] = 10"));
}

// bench_train_step --profile's trace: every launch, named by its op, in order, with device times.
TEST_CASE("the launch trace lists every launch with its op, configuration and device time",
          "[.cuda][cuda-vs-cpu][quick]") {
  REQUIRE(device_available(DeviceType::CUDA));
  const Device cuda = Device::cuda();
  Tensor x = cpu_randn({2, 3, 9, 9}, 61).to(cuda), w = cpu_randn({5, 3, 3, 3}, 62).to(cuda);
  Tensor r = cpu_randn({2, 5, 9, 9}, 63).to(cuda);
  CHECK_THROWS_WITH(launch_trace_end_stub(cuda), Catch::Matchers::Contains("no trace is on"));
  launch_trace_begin_stub(cuda);
  CHECK_THROWS_WITH(launch_trace_begin_stub(cuda), Catch::Matchers::Contains("already on"));
  Tensor y = add(conv2d(x, w, Tensor(), 1, 1), r);
  const std::vector<LaunchRecord> t = launch_trace_end_stub(cuda);
  REQUIRE(t.size() >= 2);
  CHECK(t.front().op == "conv2d_fwd");
  CHECK(t.front().kernel.find("implicit_gemm") == 0);
  CHECK(t.front().op_launch == 0);
  CHECK(t.front().op_flops == Approx(2.0 * 2 * 5 * 81 * 3 * 9));
  CHECK(t.back().op == "add");
  CHECK(t.back().kernel == "add_kernel");
  CHECK(t.back().block[0] > 0);
  for (size_t i = 0; i < t.size(); ++i) {
    CAPTURE(i, t[i].kernel);
    CHECK(t[i].device_end_us >= t[i].device_begin_us);
    CHECK(t[i].host_end_us >= t[i].host_begin_us);
    if (i > 0) CHECK(t[i].device_begin_us >= t[i - 1].device_end_us);  // one stream: in order
  }
  // Off again: nothing is recorded, and a new trace starts empty.
  (void)add(r, r);
  launch_trace_begin_stub(cuda);
  CHECK(launch_trace_end_stub(cuda).empty());
}
