// The cost of nl::dist's collectives on this machine: run under mpirun,
//   mpirun --allow-run-as-root -np 2 -x OMP_NUM_THREADS=1 build/bench/dist_allreduce
// Times (median and 90th percentile of --iters calls after a warm-up, on rank 0) the all-reduce
// of the comparison network's 43,600 gradients as one bucket, of SyncBatchNorm's per-layer
// statistics (33 and 64 floats: the widest layer's mean+count and backward's two sums), and
// average_gradients over the real network's parameters (bucketed, host copies included); then
// what the overlap of GradientReducer buys: a training step's backward (batch 32 per rank, GN,
// dropout off) alone, followed by average_gradients, and with GradientReducer's buckets reduced
// while it runs. Communication left exposed = that step minus backward alone.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "normlab/nn/models.h"
#include "normlab/core/ops.h"
#include "normlab/dist/process_group.h"

using Clock = std::chrono::steady_clock;

namespace {

template <class F>
std::pair<double, double> time_us(nl::dist::ProcessGroup& pg, int iters, F&& f) {
  for (int i = 0; i < iters / 10 + 1; ++i) f();  // warm-up: connections, first-touch pages
  std::vector<double> t;
  for (int i = 0; i < iters; ++i) {
    pg.barrier();
    const auto s = Clock::now();
    f();
    t.push_back(std::chrono::duration<double, std::micro>(Clock::now() - s).count());
  }
  std::sort(t.begin(), t.end());
  return {t[t.size() / 2], t[t.size() * 9 / 10]};
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const int iters = argc > 2 && std::string(argv[1]) == "--iters" ? std::atoi(argv[2]) : 2000;
    auto pg = nl::dist::init();
    nl::Generator g(0);
    auto net = nl::nn::make_net(nl::nn::parse_norm("gn"), g, nullptr, {});
    const int64_t params = net->parameter_count();
    std::vector<float> grads(static_cast<size_t>(params), 1.0f), stats33(33, 1.0f), stats64(64, 1.0f);
    // Gradients in place, as after a backward.
    for (const nl::Tensor& p : net->parameters()) p.set_grad(nl::Tensor::ones(p.shape()));
    struct Row {
      std::string what;
      std::pair<double, double> us;
    };
    std::vector<Row> rows = {
        {"all_reduce_sum, " + std::to_string(params) + " floats (the network's gradients, one bucket)",
         time_us(*pg, iters, [&] { pg->all_reduce_sum(grads.data(), params); })},
        {"all_reduce_sum, 33 floats (SyncBN forward: mean and count of 32 channels)",
         time_us(*pg, iters, [&] { pg->all_reduce_sum(stats33.data(), 33); })},
        {"all_reduce_sum, 64 floats (SyncBN backward: two sums of 32 channels)",
         time_us(*pg, iters, [&] { pg->all_reduce_sum(stats64.data(), 64); })},
        {"average_gradients(net) (28 tensors, host copies, 1 MiB buckets)",
         time_us(*pg, iters, [&] { nl::dist::average_gradients(*pg, *net); })},
    };
    // Whole steps: forward (in the timing, the same in the three) and backward.
    nl::nn::NetOptions o;
    o.dropout = 0.0f;
    nl::Generator g2(1);
    auto step_net = nl::nn::make_net(nl::nn::parse_norm("gn"), g2, nullptr, o);
    nl::Generator dg(2 + uint64_t(pg->rank()));
    const nl::Tensor x = nl::Tensor::randn({32, 3, 32, 32}, dg);
    std::vector<int32_t> labels(32);
    for (int i = 0; i < 32; ++i) labels[size_t(i)] = i % 10;
    const nl::Tensor y = nl::Tensor::from_ints(labels, {32});
    nl::dist::GradientReducer reducer(*pg, *step_net, 32 << 10);
    auto step = [&](int mode) {
      for (const nl::Tensor& p : step_net->parameters()) p.zero_grad();
      nl::Tensor loss = nl::nll_loss(step_net->forward(x), y);
      if (mode == 2) return reducer.backward(loss);
      loss.backward();
      if (mode == 1) nl::dist::average_gradients(*pg, *step_net);
    };
    const int step_iters = std::max(10, iters / 50);
    rows.push_back({"step: forward + backward, no exchange (batch 32 per rank)",
                    time_us(*pg, step_iters, [&] { step(0); })});
    rows.push_back(
        {"step: forward + backward, then average_gradients", time_us(*pg, step_iters, [&] { step(1); })});
    rows.push_back({"step: forward + backward with GradientReducer (" + std::to_string(reducer.buckets()) +
                        " buckets of 32 KiB, overlapped)",
                    time_us(*pg, step_iters, [&] { step(2); })});
    if (pg->rank() == 0) {
      std::printf("nl::dist %s, %d ranks, %d iterations each (median / 90th percentile, microseconds)\n",
                  pg->backend().c_str(), pg->size(), iters);
      for (const Row& r : rows) std::printf("  %-78s %9.1f %9.1f\n", r.what.c_str(), r.us.first, r.us.second);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dist_allreduce: %s\n", e.what());
    return 1;
  }
  return 0;
}
