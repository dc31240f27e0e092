// Images per second of one full training step of the comparison network (forward, NLL loss,
// backward, SGD update with momentum and weight decay) for each norm and batch size.
//
//   bench_train_step --threads 2 --batches 128,512 --norms bn,gn,ln [--device cpu|cuda] [--json]
//
// Inputs are random but fixed; the first `--warmup` steps are not timed (they fill the caching
// allocator and the thread pool), then `--steps` steps are timed with a steady clock and the
// median step time gives the rate. `--json` prints one JSON object per line for
// bench/peer/train_step_vs_torch.py.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <exception>
#include <sstream>
#include <string>
#include <vector>

#include "normlab/nn/models.h"
#include "normlab/core/ops.h"
#include "normlab/core/rng.h"
#include "normlab/core/threading.h"
#include "normlab/nn/optim.h"

namespace {
using namespace nl;
using Clock = std::chrono::steady_clock;

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string t; std::getline(ss, t, ',');)
    if (!t.empty()) out.push_back(t);
  return out;
}

struct Result {
  double median_s, min_s;
};

Result time_steps(nl::nn::NormRef norm, int64_t batch, Device device, int warmup, int steps) {
  Generator init(0), drop(1), data(2);
  auto net = nl::nn::make_net(norm, init, &drop);
  net->to(device);
  net->train();
  Tensor x = Tensor::randn({batch, 3, 32, 32}, data).to(device);
  std::vector<int32_t> labels(static_cast<size_t>(batch));
  for (int64_t i = 0; i < batch; ++i) labels[static_cast<size_t>(i)] = static_cast<int32_t>(i % 10);
  Tensor y = Tensor::from_ints(labels, {batch}, device);
  // A small rate keeps 20+ steps on random data finite; the rate does not change the work.
  nn::SGD opt(net->parameters(), {.lr = 0.01f, .momentum = 0.9f, .weight_decay = 5e-4f});
  std::vector<double> t;
  for (int i = 0; i < warmup + steps; ++i) {
    const auto t0 = Clock::now();
    opt.zero_grad();
    Tensor loss = nll_loss(net->forward(x), y);
    loss.backward();
    opt.step();
    (void)loss.item();  // waits for the device, like a training loop reading its loss
    if (i >= warmup) t.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return {t[t.size() / 2], t.front()};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"normlab training-step benchmark: images/s of forward + backward + SGD"};
  int threads = 0, warmup = 3, steps = 10;
  std::string norms = "bn,gn,ln", batches = "128,512", device = "cpu";
  bool json = false;
  app.add_option("--threads", threads, "CPU threads (0: all cores)")->capture_default_str();
  app.add_option("--norms", norms, "comma-separated: bn, gn, ln")->capture_default_str();
  app.add_option("--batches", batches, "comma-separated batch sizes")->capture_default_str();
  app.add_option("--device", device, "cpu or cuda")
      ->capture_default_str()
      ->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--warmup", warmup, "untimed steps first")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--steps", steps, "timed steps")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_flag("--json", json, "one JSON object per line instead of a table");
  CLI11_PARSE(app, argc, argv);
  try {
    set_num_threads(threads);
    const Device dev = device == "cuda" ? Device::cuda() : Device::cpu();
    if (!device_available(dev.type)) {
      std::printf("bench_train_step: device %s skipped: this build has no CUDA device\n", device.c_str());
      return 0;
    }
    if (!json)
      std::printf("%-5s %6s %10s %10s %10s   (%s, %d threads, median of %d steps)\n", "norm", "batch",
                  "img/s", "ms/step", "best ms", device.c_str(), get_num_threads(), steps);
    for (const std::string& b : split(batches)) {
      for (const std::string& n : split(norms)) {
        const int64_t batch = std::stoll(b);
        const Result r = time_steps(nl::nn::parse_norm(n), batch, dev, warmup, steps);
        const double ips = double(batch) / r.median_s;
        if (json)
          std::printf(
              "{\"framework\":\"normlab\",\"norm\":\"%s\",\"batch\":%lld,\"device\":\"%s\","
              "\"threads\":%d,\"img_per_s\":%.2f,\"median_ms\":%.3f,\"min_ms\":%.3f}\n",
              n.c_str(), (long long)batch, device.c_str(), get_num_threads(), ips, r.median_s * 1e3,
              r.min_s * 1e3);
        else
          std::printf("%-5s %6lld %10.1f %10.2f %10.2f\n", n.c_str(), (long long)batch, ips, r.median_s * 1e3,
                      r.min_s * 1e3);
        std::fflush(stdout);
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_train_step: %s\n", e.what());
    return 1;
  }
  return 0;
}
