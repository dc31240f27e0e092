// The comparison network's convolutions on the CPU, forward and backward (data + weight), in
// GFLOP/s, beside Eigen's rate on a large square GEMM on the same machine: how close the
// im2col + grouped-GEMM path gets to what the GEMM engine itself can do.
//
//   bench_conv --threads 2
#include <benchmark/benchmark.h>

#include <Eigen/Core>
#include <string>
#include <vector>

#include "bench_main.h"
#include "normlab/core/kernel/stubs.h"
#include "normlab/core/rng.h"

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

}  // namespace

BENCHMARK(BM_eigen_gemm)->Arg(1024)->Arg(2048)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_conv)
    ->ArgNames({"layer", "bwd", "N"})
    ->ArgsProduct({{0, 1, 2, 3, 4, 5, 6, 7}, {0, 1}, {128}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

int main(int argc, char** argv) { return bench::run_main(argc, argv, nullptr); }
