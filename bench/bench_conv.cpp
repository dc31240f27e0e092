// The comparison network's convolutions on the CPU, forward and backward (data + weight), in
// GFLOP/s, beside Eigen's rate on a large square GEMM on the same machine: how close the
// im2col + grouped-GEMM path gets to what the GEMM engine itself can do.
//
//   bench_conv --threads 2
//   bench_conv --device cuda [--batches 128,512] [--algos auto,gemm] [--iters 20] [--warmup 3]
//              [--flush-mb 100]
//
// --device cuda: every layer's forward, backward-data and backward-weight on the GPU, one at a
// time, the L2 flushed before each timed iteration (a fill of --flush-mb), timed by the launch
// trace (events around each launch; the op's time is its first launch's start to its last
// one's end, split-K reductions included); median of --iters, as a Markdown table with GFLOP/s
// and % of the TF32 tensor-core peak, and the op's minimum bytes as GB/s. Each case runs once per
// --algos entry side by side (nl::ConvAlgo: auto, the direct kernels where they apply; gemm, the
// implicit GEMM), TF32 as in training. Under cuemu (no GPU) the times are the CPU's: the table's
// form only.
#include <benchmark/benchmark.h>

#include <CLI/CLI.hpp>
#include <Eigen/Core>
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "bench_main.h"
#include "gpu_datasheet.h"
#include "normlab/core/dispatch.h"
#include "normlab/core/kernel/stubs.h"
#include "normlab/core/rng.h"
#include "normlab/core/storage.h"
#include "normlab/core/tensor.h"

namespace {
using namespace nl;

struct Layer {
  const char* name;
  int64_t C, K, HW, R;
};
// C1..C9 and the 1x1 convs of ../shared/design/comparison-recipe.md.
const Layer kLayers[] = {{"C1", 3, 16, 32, 3},  {"C2", 16, 32, 32, 3}, {"c3", 32, 16, 32, 1},
                         {"C3", 16, 32, 16, 3}, {"C4", 32, 32, 16, 3}, {"c6", 32, 16, 16, 1},
                         {"C7", 16, 24, 8, 3},  {"C8", 24, 24, 8, 3}};

std::vector<float> noise(int64_t n, uint64_t seed) {
  Generator g(seed);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = g.next_normal();
  return v;
}

void BM_conv(benchmark::State& state) {
  const Layer& l = kLayers[state.range(0)];
  const bool backward = state.range(1) != 0;
  const int64_t N = state.range(2);
  Conv2dParams p{N, l.C, l.HW, l.HW, l.K, l.R, l.R, 1, 1, l.R / 2, l.R / 2, l.HW, l.HW};
  auto x = noise(N * l.C * l.HW * l.HW, 1), w = noise(l.K * l.C * l.R * l.R, 2);
  auto y = noise(N * l.K * l.HW * l.HW, 3), dx = x, dw = w;
  const Device cpu = Device::cpu();
  for (auto _ : state) {
    if (backward)
      conv2d_bwd_stub(cpu, p, x.data(), w.data(), y.data(), dx.data(), dw.data(), nullptr);
    else
      conv2d_fwd_stub(cpu, p, x.data(), w.data(), nullptr, y.data());
    benchmark::DoNotOptimize(y.data());
    benchmark::DoNotOptimize(dx.data());
  }
  // 2 flops per multiply-add; backward is two GEMMs of the forward's size.
  const double flops = 2.0 * N * l.K * l.C * l.R * l.R * l.HW * l.HW * (backward ? 2 : 1);
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops * state.iterations() / 1e9, benchmark::Counter::kIsRate);
  state.SetLabel(l.name);
}

void BM_eigen_gemm(benchmark::State& state) {
  const int64_t n = state.range(0);
  Eigen::MatrixXf a = Eigen::MatrixXf::Random(n, n), b = Eigen::MatrixXf::Random(n, n), c(n, n);
  for (auto _ : state) {
    c.noalias() = a * b;
    benchmark::DoNotOptimize(c.data());
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * n * n * n * state.iterations() / 1e9, benchmark::Counter::kIsRate);
  state.SetLabel("Eigen square GEMM");
}

int run_cuda(int argc, char** argv) {
  CLI::App app{"normlab convolutions on CUDA, layer by layer"};
  std::string device;
  std::vector<int64_t> batches = {128, 512};
  std::vector<std::string> algos = {"auto", "gemm"};
  int iters = 20, warmup = 3;
  double flush_mb = 100;
  app.add_option("--device", device, "cuda")->required()->check(CLI::IsMember({"cuda"}));
  app.add_option("--algos", algos,
                 "comma-separated kernel choices to compare: auto (direct where it applies), gemm")
      ->delimiter(',')
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "gemm"}));
  app.add_option("--batches", batches, "comma-separated batch sizes")
      ->delimiter(',')
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--iters", iters, "timed iterations per case (median)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--warmup", warmup, "untimed iterations first")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--flush-mb", flush_mb, "MB filled before each timed iteration to empty the L2 (0: none)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  CLI11_PARSE(app, argc, argv);
  try {
    if (!device_available(DeviceType::CUDA)) {
      std::printf("bench_conv: device cuda skipped: this build has no CUDA device\n");
      return 0;
    }
    const Device cuda = Device::cuda();
    const std::string name = device_description(DeviceType::CUDA);
    const double tf32 = bench::datasheet_for(name).tf32, bandwidth = bench::datasheet_for(name).bandwidth;
    const int64_t flush_n = int64_t(flush_mb * 1e6 / 4);
    Tensor flush = Tensor::zeros({std::max<int64_t>(flush_n, 1)}, DType::F32, cuda);
    std::printf(
        "## The convolutions one by one, %s\n\nbench_conv --device cuda: median of %d, L2 flushed "
        "(%.0f MB fill) before each; TF32 tensor cores.\n\n| layer | C->K, HxW, RxS | N | pass | algo | "
        "kernel "
        "| launches | us | GFLOP/s | %% TF32 peak | min GB/s | %% HBM |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        name.c_str(), iters, flush_mb);
    for (const int64_t N : batches)
      for (const Layer& l : kLayers) {
        Conv2dParams p{N, l.C, l.HW, l.HW, l.K, l.R, l.R, 1, 1, l.R / 2, l.R / 2, l.HW, l.HW};
        p.tf32 = true;  // as in training (nl::conv_tf32's default)
        Generator g(1);
        Tensor x = Tensor::randn({N, l.C, l.HW, l.HW}, g).to(cuda),
               w = Tensor::randn({l.K, l.C, l.R, l.R}, g).to(cuda);
        Tensor y = Tensor::randn({N, l.K, l.HW, l.HW}, g).to(cuda);
        Tensor dx = Tensor::empty(x.shape(), DType::F32, cuda),
               dw = Tensor::empty(w.shape(), DType::F32, cuda);
        const double flops = 2.0 * N * l.K * l.C * l.R * l.R * l.HW * l.HW;
        const double bytes = 4.0 * (N * l.C * l.HW * l.HW + l.K * l.C * l.R * l.R + N * l.K * l.HW * l.HW);
        for (const char* pass : {"forward", "backward-data", "backward-weight"})
          for (const std::string& algo : algos) {
            p.algo = algo == "gemm" ? ConvAlgo::Gemm : ConvAlgo::Auto;
            auto call = [&] {
              if (std::strcmp(pass, "forward") == 0)
                conv2d_fwd_stub(cuda, p, x.data_f32(), w.data_f32(), nullptr, y.data_f32());
              else if (std::strcmp(pass, "backward-data") == 0)
                conv2d_bwd_stub(cuda, p, x.data_f32(), w.data_f32(), y.data_f32(), dx.data_f32(), nullptr,
                                nullptr);
              else
                conv2d_bwd_stub(cuda, p, x.data_f32(), w.data_f32(), y.data_f32(), nullptr, dw.data_f32(),
                                nullptr);
            };
            for (int i = 0; i < warmup; ++i) call();
            std::vector<double> us;
            size_t launches = 0;
            std::string kernel;
            for (int i = 0; i < iters; ++i) {
              if (flush_n > 0) fill_stub(cuda, flush_n, float(i), flush.data_f32());
              launch_trace_begin_stub(cuda);
              call();
              const std::vector<LaunchRecord> t = launch_trace_end_stub(cuda);
              if (t.empty())
                throw std::runtime_error(std::string("the ") + pass + " convolution launched nothing");
              us.push_back(t.back().device_end_us - t.front().device_begin_us);
              launches = t.size();
              kernel = t.front().kernel;
            }
            std::sort(us.begin(), us.end());
            const double m = us[us.size() / 2], s = m * 1e-6;
            std::printf(
                "| %s | %lld->%lld, %lldx%lld, %lldx%lld | %lld | %s | %s | %s | %zu | %.1f | %.0f | %.2f | "
                "%.0f "
                "| %.1f |\n",
                l.name, (long long)l.C, (long long)l.K, (long long)l.HW, (long long)l.HW, (long long)l.R,
                (long long)l.R, (long long)N, pass, algo.c_str(), kernel.c_str(), launches, m,
                flops / s / 1e9, 100 * flops / s / tf32, bytes / s / 1e9, 100 * bytes / s / bandwidth);
            std::fflush(stdout);
          }
      }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_conv: %s\n", e.what());
    return 1;
  }
  return 0;
}

}  // namespace

BENCHMARK(BM_eigen_gemm)->Arg(1024)->Arg(2048)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_conv)
    ->ArgNames({"layer", "bwd", "N"})
    ->ArgsProduct({{0, 1, 2, 3, 4, 5, 6, 7}, {0, 1}, {128}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], "--device") == 0 || std::strncmp(argv[i], "--device=", 9) == 0)
      return run_cuda(argc, argv);
  return bench::run_main(argc, argv, nullptr);
}
