// CPU norm forward+backward at the comparison network's largest layer shape, per norm.
// Bytes counter: the minimum traffic of a fused pass (forward reads x, writes y; backward reads
// x and dy, writes dx), so the reported rate is comparable across implementations.
#include <benchmark/benchmark.h>

#include "normlab/core/autograd.h"
#include "normlab/core/ops.h"

using namespace nl;

namespace {
enum Kind { kBatch, kGroup, kLayer };

void BM_norm_fwd_bwd(benchmark::State& state) {
  const auto kind = static_cast<Kind>(state.range(0));
  const int64_t N = state.range(1), C = 32, H = 32, W = 32;
  Generator gen(0);
  Tensor x = Tensor::randn({N, C, H, W}, gen).set_requires_grad();
  Tensor gamma = Tensor::ones({C}).set_requires_grad(), beta = Tensor::zeros({C}).set_requires_grad();
  Tensor rm = Tensor::zeros({C}), rv = Tensor::ones({C});
  Tensor dy = Tensor::randn({N, C, H, W}, gen);
  for (auto _ : state) {
    Tensor y = kind == kBatch   ? batch_norm(x, gamma, beta, rm, rv, true)
               : kind == kGroup ? group_norm(x, 4, gamma, beta)
                                : group_norm(x, 1, gamma, beta);
    y.backward(dy);
    benchmark::DoNotOptimize(x.grad().data_f32());
  }
  state.SetBytesProcessed(state.iterations() * 5 * N * C * H * W * 4);
}
}  // namespace

BENCHMARK(BM_norm_fwd_bwd)
    ->ArgNames({"kind(0=BN,1=GN4,2=LN)", "N"})
    ->ArgsProduct({{kBatch, kGroup, kLayer}, {32, 128}})
    ->Unit(benchmark::kMillisecond);
BENCHMARK_MAIN();
