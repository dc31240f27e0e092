// The norm family on the CPU, normlab's kernels against oneDNN's primitives, side by side in one
// binary: BatchNorm, GroupNorm(4) and LayerNorm over (C, H, W); forward training, forward eval
// and backward; at the comparison network's layer shapes for N = 128 and 512.
//
//   bench_norm --threads 2 [Google Benchmark flags, e.g. --benchmark_filter=BN]
//
// Both sides are called at kernel level (normlab's dispatch stubs, oneDNN primitives with
// pre-allocated memory), so neither pays for autograd or allocation. The bytes counter is the
// minimum traffic of the pass, the same for both sides so rates compare directly: forward reads
// x and writes y (2 tensors), backward reads x and dy and writes dx (3 tensors).
//
// oneDNN 2.6 stand-ins, also printed in each benchmark's label:
//  - LayerNorm over (C, H, W): layer normalization of the [N, C*H*W] view, with a per-element
//    scale/shift (normlab's is per channel; the statistics and the traffic are the same).
//  - GroupNorm: oneDNN 2.6 has no group normalization (it arrived in 3.3); the stand-in is batch
//    normalization of the [1, N*G, C/G*H*W] view: the same per-(sample, group) statistics, with
//    an affine per group instead of per channel.
#include <benchmark/benchmark.h>

#include <oneapi/dnnl/dnnl.hpp>
#include <string>
#include <vector>

#include "bench_main.h"
#include "normlab/core/kernel/stubs.h"
#include "normlab/core/rng.h"

namespace {
using namespace nl;

enum Kind { kBN, kGN, kLN };
enum Pass { kFwdTrain, kFwdEval, kBwd };
const char* kind_name[] = {"BN", "GN4", "LN"};
const char* pass_name[] = {"fwd_train", "fwd_eval", "bwd"};

struct Buffers {
  std::vector<float> x, y, dy, dx, gamma, beta, mean, var, rstd, dgamma, dbeta, rmean, rvar;
  std::vector<uint8_t> mask;
  Buffers(int64_t n, int64_t c, int64_t stats) {
    Generator g(1);
    x.resize(size_t(n)), dy.resize(size_t(n));
    for (auto& v : x) v = g.next_normal();
    for (auto& v : dy) v = g.next_normal();
    y.assign(size_t(n), 0.0f), dx.assign(size_t(n), 0.0f), mask.assign(size_t(n), 0);
    gamma.assign(size_t(c), 1.0f), beta.assign(size_t(c), 0.0f);
    dgamma.assign(size_t(c), 0.0f), dbeta.assign(size_t(c), 0.0f);
    mean.assign(size_t(stats), 0.0f), var.assign(size_t(stats), 1.0f), rstd.assign(size_t(stats), 1.0f);
    rmean.assign(size_t(stats), 0.0f), rvar.assign(size_t(stats), 1.0f);
  }
};

void set_counters(benchmark::State& state, Pass pass, int64_t elems) {
  const int64_t tensors = pass == kBwd ? 3 : 2;
  state.SetBytesProcessed(state.iterations() * tensors * elems * int64_t(sizeof(float)));
}

void BM_normlab(benchmark::State& state) {
  const auto kind = Kind(state.range(0));
  const auto pass = Pass(state.range(1));
  const int64_t N = state.range(2), C = state.range(3), HW = state.range(4) * state.range(4);
  NormParams p;
  p.N = N, p.C = C, p.HxW = HW, p.G = kind == kGN ? 4 : 1;
  p.training = pass != kFwdEval;
  const int64_t stats = kind == kBN ? C : N * p.G;
  Buffers b(N * C * HW, C, stats);
  p.kind = kind == kBN ? NormKind::Batch : NormKind::Group;
  const Device cpu = Device::cpu();
  NormFwdArgs f;
  f.x = b.x.data(), f.gamma = b.gamma.data(), f.beta = b.beta.data(), f.y = b.y.data();
  f.mean = b.mean.data(), f.rstd = b.rstd.data();
  if (kind == kBN) f.running_mean = b.rmean.data(), f.running_var = b.rvar.data();
  NormBwdArgs g;
  g.x = b.x.data(), g.dy = b.dy.data(), g.gamma = b.gamma.data(), g.mean = b.mean.data(),
  g.rstd = b.rstd.data();
  g.dx = b.dx.data(), g.dgamma = b.dgamma.data(), g.dbeta = b.dbeta.data();
  norm_fwd_stub(cpu, p, f);  // the backward pass needs the forward's statistics
  for (auto _ : state) {
    if (pass == kBwd)
      norm_bwd_stub(cpu, p, g);
    else
      norm_fwd_stub(cpu, p, f);
    benchmark::DoNotOptimize(b.y.data());
    benchmark::DoNotOptimize(b.dx.data());
  }
  set_counters(state, pass, N * C * HW);
}

void BM_onednn(benchmark::State& state) {
  using namespace dnnl;
  using tag = memory::format_tag;
  using dt = memory::data_type;
  const auto kind = Kind(state.range(0));
  const auto pass = Pass(state.range(1));
  const int64_t N = state.range(2), C = state.range(3), HW = state.range(4) * state.range(4);
  engine eng(engine::kind::cpu, 0);
  stream s(eng);
  // The logical tensor each primitive sees (see the stand-ins above).
  memory::dims dims;
  tag layout;
  int64_t affine = C;
  if (kind == kBN) {
    dims = {N, C, state.range(4), state.range(4)}, layout = tag::nchw;
  } else if (kind == kGN) {
    dims = {1, N * 4, C / 4 * HW}, layout = tag::ncw, affine = N * 4;
  } else {
    dims = {N, C * HW}, layout = tag::nc, affine = C * HW;
  }
  Buffers b(N * C * HW, affine, kind == kBN ? C : kind == kGN ? N * 4 : N);
  memory::desc data_md(dims, dt::f32, layout);
  memory::desc stat_md({kind == kLN ? N : (kind == kBN ? C : N * 4)}, dt::f32, tag::a);
  memory::desc aff_md({affine}, dt::f32, tag::a);
  memory src(data_md, eng, b.x.data()), dst(data_md, eng, b.y.data());
  memory diff_dst(data_md, eng, b.dy.data()), diff_src(data_md, eng, b.dx.data());
  memory mean(stat_md, eng, b.mean.data()), var(stat_md, eng, b.var.data());
  memory scale(aff_md, eng, b.gamma.data()), shift(aff_md, eng, b.beta.data());
  memory dscale(aff_md, eng, b.dgamma.data()), dshift(aff_md, eng, b.dbeta.data());
  const auto flags_train = normalization_flags::use_scale | normalization_flags::use_shift;
  // Eval means different things: BatchNorm normalises with its running statistics (oneDNN's
  // use_global_stats), while LayerNorm and GroupNorm have none and compute the sample's
  // statistics as in training, so their oneDNN inference pass does too.
  const auto flags_eval = kind == kBN ? flags_train | normalization_flags::use_global_stats : flags_train;
  std::unordered_map<int, memory> args = {{DNNL_ARG_SRC, src},           {DNNL_ARG_DST, dst},
                                          {DNNL_ARG_MEAN, mean},         {DNNL_ARG_VARIANCE, var},
                                          {DNNL_ARG_SCALE, scale},       {DNNL_ARG_SHIFT, shift},
                                          {DNNL_ARG_DIFF_DST, diff_dst}, {DNNL_ARG_DIFF_SRC, diff_src},
                                          {DNNL_ARG_DIFF_SCALE, dscale}, {DNNL_ARG_DIFF_SHIFT, dshift}};
  primitive fwd, bwd;
  if (kind == kLN) {
    auto fpd_train = layer_normalization_forward::primitive_desc(
        {prop_kind::forward_training, data_md, stat_md, 1e-5f, flags_train}, eng);
    auto fpd_eval = layer_normalization_forward::primitive_desc(
        {prop_kind::forward_inference, data_md, stat_md, 1e-5f, flags_eval}, eng);
    fwd = pass == kFwdEval ? primitive(layer_normalization_forward(fpd_eval))
                           : primitive(layer_normalization_forward(fpd_train));
    if (pass == kBwd)
      bwd = layer_normalization_backward(layer_normalization_backward::primitive_desc(
          {prop_kind::backward, data_md, data_md, stat_md, 1e-5f, flags_train}, eng, fpd_train));
  } else {
    auto fpd_train = batch_normalization_forward::primitive_desc(
        {prop_kind::forward_training, data_md, 1e-5f, flags_train}, eng);
    auto fpd_eval = batch_normalization_forward::primitive_desc(
        {prop_kind::forward_inference, data_md, 1e-5f, flags_eval}, eng);
    fwd = pass == kFwdEval ? primitive(batch_normalization_forward(fpd_eval))
                           : primitive(batch_normalization_forward(fpd_train));
    if (pass == kBwd)
      bwd = batch_normalization_backward(batch_normalization_backward::primitive_desc(
          {prop_kind::backward, data_md, data_md, 1e-5f, flags_train}, eng, fpd_train));
  }
  fwd.execute(s, args);  // statistics for backward
  s.wait();
  for (auto _ : state) {
    (pass == kBwd ? bwd : fwd).execute(s, args);
    s.wait();
  }
  state.SetLabel(kind == kBN   ? "oneDNN batch_normalization"
                 : kind == kGN ? "stand-in: oneDNN batch_normalization of [1, N*G, C/G*HW]"
                               : "stand-in: oneDNN layer_normalization of [N, C*HW]");
  set_counters(state, pass, N * C * HW);
}

void register_all() {
  // The network's norm shapes (C, H=W) at batch 128 and 512; N=512, C=32, 32x32 is the headline.
  const std::vector<std::vector<int64_t>> shapes = {{32, 32}, {32, 16}, {24, 8}};
  for (int kind : {kBN, kGN, kLN})
    for (int pass : {kFwdTrain, kFwdEval, kBwd})
      for (int64_t n : {128, 512})
        for (const auto& sh : shapes) {
          const std::string shape = std::to_string(n) + "x" + std::to_string(sh[0]) + "x" +
                                    std::to_string(sh[1]) + "x" + std::to_string(sh[1]);
          for (int impl = 0; impl < 2; ++impl) {
            const std::string name = std::string(kind_name[kind]) + "/" + pass_name[pass] + "/" + shape +
                                     "/" + (impl == 0 ? "normlab" : "onednn");
            benchmark::RegisterBenchmark(name.c_str(), impl == 0 ? BM_normlab : BM_onednn)
                ->Args({kind, pass, n, sh[0], sh[1]})
                ->Unit(benchmark::kMillisecond)
                ->UseRealTime();
          }
        }
}

}  // namespace

int main(int argc, char** argv) { return bench::run_main(argc, argv, register_all); }
