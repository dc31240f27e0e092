// Images per second of one full training step of the comparison network (forward, NLL loss,
// backward, SGD update with momentum and weight decay) for each norm and batch size.
//
//   bench_train_step --threads 2 --batches 128,512 --norms bn,gn,ln [--device cpu|cuda] [--json]
//   bench_train_step [--device cuda] --profile [--profile-md FILE]
//
// Inputs are random but fixed; the first `--warmup` steps are not timed (they fill the caching
// allocator and the thread pool), then `--steps` steps are timed with a steady clock and the
// median step time gives the rate. `--json` prints one JSON object per line for
// bench/peer/train_step_vs_torch.py.
//
// On the CPU the run first measures the machine's FP32 FMA and bf16 dot peaks on the same threads
// (bench/cpu_peak.h) and reports each step's convolution GFLOP/s against the FP32 one: the FLOPs
// are the network's convolutions (forward, backward-weight, and backward-data of every conv but the
// first, whose input needs no gradient), counted from one forward pass's output shapes; the norms,
// pooling and elementwise ops are memory-bound and not counted.
//
// --profile: after the timed steps, one more step runs under the launch trace (events around
// every launch on the stream) and every launch is listed: op, kernel, grid x block, its time on
// the device, the device's idle time before it (the host had not launched it yet), the op's
// minimum bytes and FLOPs as GB/s and GFLOP/s and as a share of the GPU's datasheet peaks (HBM,
// TF32 tensor cores for the implicit GEMMs, FP32 otherwise), and the host's time in the launch
// call. Events around each launch add a few microseconds of host work per launch, so the traced
// step is slower than the timed ones; kernel times are not affected. Under cuemu (no GPU) the
// times are the CPU's emulation times: the table's form, not a GPU's numbers.
//
// --profile on the CPU: five more steps run under the op profile (nl::op_profile_begin: each
// kernel call timed on the host) and every call is listed with its median time over the five,
// its shape, GFLOP/s and share of the measured peak, and GB/s of its least bytes; then the totals
// per op and the time outside the kernels.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <exception>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "cpu_peak.h"
#include "gpu_datasheet.h"
#include "normlab/core/kernel/stubs.h"
#include "normlab/core/ops.h"
#include "normlab/core/rng.h"
#include "normlab/core/storage.h"
#include "normlab/core/threading.h"
#include "normlab/nn/layers.h"
#include "normlab/nn/models.h"
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
  std::vector<LaunchRecord> trace;  // --profile: the launches of one more step
  std::vector<OpRecord> ops;        // --profile on the CPU: its kernel calls
  double traced_step_us = 0;
};

// Convolution FLOPs of one training step per image (see the header), from the output shape of
// every Conv2d in one forward pass of a single image.
double conv_flops_per_image(nl::nn::NormRef norm) {
  Generator init(0), drop(1), data(2);
  auto net = nl::nn::make_net(norm, init, &drop);
  double flops = 0;
  bool first = true;
  nl::nn::set_output_check([&](const nl::nn::Module& m, const Tensor& out) {
    const auto* conv = dynamic_cast<const nl::nn::Conv2d*>(&m);
    if (!conv) return;
    const double fwd = 2.0 * double(out.numel()) * double(conv->in_channels * conv->kernel * conv->kernel);
    flops += (first ? 2.0 : 3.0) * fwd;
    first = false;
  });
  try {
    (void)net->forward(Tensor::randn({1, 3, 32, 32}, data));
  } catch (...) {
    nl::nn::set_output_check({});
    throw;
  }
  nl::nn::set_output_check({});
  return flops;
}

constexpr int kCpuProfileSteps = 5;

Result time_steps(nl::nn::NormRef norm, int64_t batch, Device device, int warmup, int steps, bool profile) {
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
  Result r{t[t.size() / 2], t.front(), {}, {}, 0};
  if (profile) {
    // The GPU's trace times one step; the CPU's calls are timed on the host, where other jobs
    // on the machine move single calls: each call's median over kCpuProfileSteps steps.
    const bool cpu = device.type == DeviceType::CPU;
    const int runs = cpu ? kCpuProfileSteps : 1;
    std::vector<std::vector<OpRecord>> all;
    std::vector<double> step_us;
    for (int k = 0; k < runs; ++k) {
      if (cpu)
        op_profile_begin();
      else
        launch_trace_begin_stub(device);
      const auto t0 = Clock::now();
      opt.zero_grad();
      Tensor loss = nll_loss(net->forward(x), y);
      loss.backward();
      opt.step();
      (void)loss.item();
      step_us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
      if (cpu)
        all.push_back(op_profile_end());
      else
        r.trace = launch_trace_end_stub(device);
    }
    std::sort(step_us.begin(), step_us.end());
    r.traced_step_us = step_us[step_us.size() / 2];
    if (cpu) {
      r.ops = all.front();
      for (size_t i = 0; i < r.ops.size(); ++i) {
        std::vector<double> us;
        for (const auto& a : all)
          if (i < a.size() && std::string(a[i].op) == r.ops[i].op) us.push_back(a[i].us);
        std::sort(us.begin(), us.end());
        r.ops[i].us = us[us.size() / 2];
      }
    }
  }
  return r;
}

// The CPU's profiled step as a Markdown table: one row per kernel call (layer by its shape), then
// totals per op. GFLOP/s against the peak measured in this run; GB/s of the call's least bytes.
std::string cpu_profile_table(const std::string& norm, int64_t batch, const Result& r,
                              const bench::CpuPeak& peak) {
  std::ostringstream md;
  char line[512];
  std::snprintf(
      line, sizeof line,
      "## %s, batch %lld: %zu kernel calls, step %.1f ms (medians of %d profiled steps)\n\n"
      "| # | op | N C H W K | us | GFLOP/s | %% FP32 peak | GB/s |\n|---|---|---|---|---|---|---|\n",
      norm.c_str(), (long long)batch, r.ops.size(), r.traced_step_us / 1e3, kCpuProfileSteps);
  md << line;
  struct Total {
    double us = 0, flops = 0, bytes = 0;
    int calls = 0;
  };
  std::map<std::string, Total> totals;
  double sum_us = 0;
  for (size_t i = 0; i < r.ops.size(); ++i) {
    const OpRecord& o = r.ops[i];
    const double s = o.us * 1e-6;
    char shape[128] = "";
    if (o.cost.shape[0]) {
      int at = 0;
      for (int64_t d : o.cost.shape)
        at += d ? std::snprintf(shape + at, sizeof shape - size_t(at), "%s%lld", at ? " " : "", (long long)d)
                : std::snprintf(shape + at, sizeof shape - size_t(at), " -");
    }
    const double gf = o.cost.flops / s / 1e9, gb = o.cost.bytes / s / 1e9;
    std::snprintf(line, sizeof line, "| %zu | %s | %s | %.1f | %s | %s | %s |\n", i, o.op, shape, o.us,
                  o.cost.flops > 0 ? std::to_string(int(gf)).c_str() : "",
                  o.cost.flops > 0 && peak.fp32() > 0
                      ? (std::to_string(int(100 * gf / peak.fp32())) + "%").c_str()
                      : "",
                  o.cost.bytes > 0 ? std::to_string(int(gb)).c_str() : "");
    md << line;
    Total& t = totals[o.op];
    t.us += o.us, t.flops += o.cost.flops, t.bytes += o.cost.bytes, ++t.calls;
    sum_us += o.us;
  }
  md << "\n| op | calls | ms | share of the step | GFLOP/s | GB/s |\n|---|---|---|---|---|---|\n";
  std::vector<std::pair<std::string, Total>> sorted(totals.begin(), totals.end());
  std::sort(sorted.begin(), sorted.end(),
            [](const auto& a, const auto& b) { return a.second.us > b.second.us; });
  for (const auto& [op, t] : sorted) {
    const double s = t.us * 1e-6;
    std::snprintf(line, sizeof line, "| %s | %d | %.2f | %.1f%% | %s | %s |\n", op.c_str(), t.calls,
                  t.us / 1e3, 100 * t.us / r.traced_step_us,
                  t.flops > 0 ? std::to_string(int(t.flops / s / 1e9)).c_str() : "",
                  t.bytes > 0 ? std::to_string(int(t.bytes / s / 1e9)).c_str() : "");
    md << line;
  }
  std::snprintf(line, sizeof line,
                "| (outside the kernels: autograd, allocation, dispatch) | | %.2f | %.1f%% | | |\n\n",
                (r.traced_step_us - sum_us) / 1e3, 100 * (r.traced_step_us - sum_us) / r.traced_step_us);
  md << line;
  return md.str();
}

// The traced step as a Markdown table, one row per launch, then totals per kernel class.
std::string profile_table(const std::string& norm, int64_t batch, const Result& r,
                          const bench::GpuDatasheet& pk, const std::string& device) {
  std::ostringstream md;
  char line[512];
  double device_sum = 0, idle_sum = 0, host_sum = 0;
  std::map<std::string, std::pair<double, int>> by_class;
  std::snprintf(
      line, sizeof line,
      "### %s, batch %lld: %zu launches, traced step %.0f us on %s\n\n"
      "| # | op | kernel | grid x block | device us | idle before us | host us | op MB | GB/s | %% HBM "
      "| GFLOP/s | %% FLOP peak |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
      norm.c_str(), (long long)batch, r.trace.size(), r.traced_step_us, device.c_str());
  md << line;
  double prev_end = 0;
  for (size_t i = 0; i < r.trace.size(); ++i) {
    const LaunchRecord& l = r.trace[i];
    const double us = l.device_end_us - l.device_begin_us, idle = std::max(0.0, l.device_begin_us - prev_end);
    prev_end = l.device_end_us;
    device_sum += us, idle_sum += idle, host_sum += l.host_end_us - l.host_begin_us;
    const bool first = l.op_launch == 0;
    const double bytes = first ? l.op_min_bytes : 0, flops = first ? l.op_flops : 0;
    const bool tc = l.kernel.find("tf32") != std::string::npos;  // the TF32 tensor-core kernels
    const double gbs = us > 0 ? bytes / us / 1e3 : 0, gflops = us > 0 ? flops / us / 1e3 : 0;
    std::string cls = l.op.empty() ? "(no op)" : l.op;
    if (cls.find("norm") != std::string::npos) cls = "norms";
    auto& c = by_class[cls];
    c.first += us, ++c.second;
    std::snprintf(
        line, sizeof line,
        "| %zu | %s | %s | (%u,%u,%u)x(%u,%u,%u) | %.1f | %.1f | %.1f | %.2f | %.0f | %.1f | %.0f | %.2f |\n",
        i + 1, l.op.c_str(), l.kernel.c_str(), l.grid[0], l.grid[1], l.grid[2], l.block[0], l.block[1],
        l.block[2], us, idle, l.host_end_us - l.host_begin_us, bytes / 1e6, gbs,
        100 * gbs * 1e9 / pk.bandwidth, gflops, 100 * gflops * 1e9 / (tc ? pk.tf32 : pk.fp32));
    md << line;
  }
  std::snprintf(
      line, sizeof line,
      "\nDevice busy %.0f us, idle between launches %.0f us, host inside launch calls %.0f us, "
      "traced step %.0f us.\n\n| class | launches | device us | share of busy |\n|---|---|---|---|\n",
      device_sum, idle_sum, host_sum, r.traced_step_us);
  md << line;
  for (const auto& [cls, c] : by_class) {
    std::snprintf(line, sizeof line, "| %s | %d | %.1f | %.0f%% |\n", cls.c_str(), c.second, c.first,
                  device_sum > 0 ? 100 * c.first / device_sum : 0.0);
    md << line;
  }
  md << "\n";
  return md.str();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"normlab training-step benchmark: images/s of forward + backward + SGD"};
  int threads = 0, warmup = 3, steps = 10;
  std::string norms = "bn,gn,ln", batches = "128,512", device = "cpu";
  bool json = false, profile = false;
  std::string profile_md;
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
  app.add_flag("--profile", profile,
               "also profile: every launch of one step with its device time (cuda), or every kernel "
               "call with its median time over five steps (cpu)");
  app.add_option("--profile-md", profile_md,
                 "write the --profile tables to this Markdown file (else stdout)");
  CLI11_PARSE(app, argc, argv);
  try {
    set_num_threads(threads);
    const Device dev = device == "cuda" ? Device::cuda() : Device::cpu();
    if (!device_available(dev.type)) {
      std::printf("bench_train_step: device %s skipped: this build has no CUDA device\n", device.c_str());
      return 0;
    }
    if (!profile_md.empty() && !profile) throw std::runtime_error("--profile-md needs --profile");
    std::string tables;
    const std::string dev_name = device_description(DeviceType::CUDA);
    const bool cpu = dev.type == DeviceType::CPU;
    const bench::CpuPeak peak = cpu ? bench::measure_cpu_peak(get_num_threads()) : bench::CpuPeak{};
    if (!json) {
      if (cpu) std::printf("# %s\n", peak.describe().c_str());
      std::printf("%-5s %6s %10s %10s %10s %10s %8s   (%s, %d threads, median of %d steps)\n", "norm",
                  "batch", "img/s", "ms/step", "best ms", "GFLOP/s", "% peak", device.c_str(),
                  get_num_threads(), steps);
    }
    for (const std::string& b : split(batches)) {
      for (const std::string& n : split(norms)) {
        const int64_t batch = std::stoll(b);
        const Result r = time_steps(nl::nn::parse_norm(n), batch, dev, warmup, steps, profile);
        if (profile && cpu)
          tables += cpu_profile_table(n, batch, r, peak);
        else if (profile)
          tables += profile_table(n, batch, r, bench::datasheet_for(dev_name), dev_name);
        const double ips = double(batch) / r.median_s;
        const double gflops = ips * conv_flops_per_image(nl::nn::parse_norm(n)) / 1e9;
        // The share of the machine's FP32 peak (CPU only: the GPU's peaks are the profile's).
        const double pct = cpu && peak.fp32() > 0 ? 100.0 * gflops / peak.fp32() : 0.0;
        if (json)
          std::printf(
              "{\"framework\":\"normlab\",\"norm\":\"%s\",\"batch\":%lld,\"device\":\"%s\","
              "\"threads\":%d,\"img_per_s\":%.2f,\"median_ms\":%.3f,\"min_ms\":%.3f,\"conv_gflops\":%.2f,"
              "\"fp32_peak_gflops\":%.1f,\"bf16_peak_gflops\":%.1f,\"pct_of_fp32_peak\":%.2f}\n",
              n.c_str(), (long long)batch, device.c_str(), get_num_threads(), ips, r.median_s * 1e3,
              r.min_s * 1e3, gflops, peak.fp32(), peak.bf16_avx512, pct);
        else if (cpu)
          std::printf("%-5s %6lld %10.1f %10.2f %10.2f %10.1f %7.1f%%\n", n.c_str(), (long long)batch, ips,
                      r.median_s * 1e3, r.min_s * 1e3, gflops, pct);
        else
          std::printf("%-5s %6lld %10.1f %10.2f %10.2f %10.1f %8s\n", n.c_str(), (long long)batch, ips,
                      r.median_s * 1e3, r.min_s * 1e3, gflops, "-");
        std::fflush(stdout);
      }
    }
    if (profile) {
      const std::string doc =
          cpu ? "# Kernel calls of one training step on the CPU, " + std::to_string(get_num_threads()) +
                    " threads\n\nbench_train_step --profile: profiled steps after the timed ones (each "
                    "kernel call timed on the host, its median over the steps); " +
                    peak.describe() + ".\n\n" + tables
              : "# Launches of one training step, " + dev_name +
                    "\n\nbench_train_step --profile: one traced step after the timed ones "
                    "(events around each launch). Peaks are the datasheet's for this GPU.\n\n" +
                    tables;
      if (profile_md.empty()) {
        std::fputs(doc.c_str(), stdout);
      } else {
        // Written whole under a temporary name, then renamed: never a half-written table.
        const std::string tmp = profile_md + ".tmp";
        {
          std::ofstream out(tmp);
          out << doc;
          if (!out.flush()) throw std::runtime_error("cannot write '" + tmp + "'");
        }
        if (std::rename(tmp.c_str(), profile_md.c_str()) != 0)
          throw std::runtime_error("cannot rename '" + tmp + "' to '" + profile_md + "'");
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_train_step: %s\n", e.what());
    return 1;
  }
  return 0;
}
