// SyncBatchNorm (NormSpec::sync) in one process: its statistics go through the CrossProcessSum
// and come back unchanged, so every output must equal BatchNorm's, on every backend (the emulated
// CUDA registrations run this too: the statistics travel through host memory there). The
// multi-process equivalence (2 ranks x 64 = 1 x 128) is tests/dist/dist_check.cpp under mpirun.
#include "helpers.h"
#include "normlab/core/ops.h"

using namespace nl;
using nl::test::randn;
using nl::test::require_close;
using nl::test::to_double;

namespace {

struct OneProcess final : CrossProcessSum {
  int calls = 0;
  void sum(float*, int64_t) override { ++calls; }
};

}  // namespace

TEST_CASE("SyncBatchNorm in one process equals BatchNorm: output, running statistics and every gradient",
          "[ops][norm][sync][quick]") {
  // Odd and medium shapes (the per-channel loops of both kernels run several trips and a tail).
  for (const Shape& shape : {Shape{5, 6, 7, 9}, Shape{16, 8, 17, 17}}) {
    for (const bool fused : {false, true}) {
      CAPTURE(shape, fused);
      const int64_t C = shape[1];
      std::vector<double> outs[2][7];
      int calls = 0;
      for (int sync = 0; sync < 2; ++sync) {
        Tensor x = randn(shape, 1, 2.0f, 0.5f).set_requires_grad();
        Tensor gamma = randn({C}, 2, 0.3f, 1.0f).set_requires_grad(),
               beta = randn({C}, 3).set_requires_grad();
        Tensor rm = randn({C}, 4), rv = randn({C}, 5, 0.1f, 1.0f);
        Tensor residual = randn(shape, 6).set_requires_grad();
        Generator drop(9);
        NormEpilogue e;
        if (fused) e.relu = true, e.dropout = 0.2f, e.gen = &drop, e.residual = residual;
        NormSpec spec = NormSpec::batch(0.1f, 1e-5f);
        OneProcess one;
        if (sync) spec.sync = &one;
        Tensor y = normalize(x, spec, gamma, beta, rm, rv, true, e);
        sum(mul(y, randn(shape, 7))).backward();
        calls = one.calls;
        const Tensor got[7] = {y,
                               rm,
                               rv,
                               x.grad(),
                               gamma.grad(),
                               beta.grad(),
                               fused ? residual.grad() : Tensor::zeros({1}, DType::F32, x.device())};
        for (int k = 0; k < 7; ++k) outs[sync][k] = to_double(got[k]);
      }
      CHECK(calls == 2);  // every process's statistics, gathered; backward's two sums, together
      const char* names[7] = {"y", "running_mean", "running_var", "dx", "dgamma", "dbeta", "dresidual"};
      for (int k = 0; k < 7; ++k) {
        std::vector<float> got(outs[1][k].begin(), outs[1][k].end());
        require_close(Tensor::from_vector(got, {int64_t(got.size())}), outs[0][k], 2e-5, names[k]);
      }
    }
  }
}

TEST_CASE("SyncBatchNorm refuses ghost batches and Batch Renorm", "[ops][norm][sync][quick]") {
  OneProcess one;
  NormSpec s = NormSpec::ghost_batch_norm(2);
  s.sync = &one;
  const Tensor x = randn({4, 3, 2, 2}, 1), rm = Tensor::zeros({3}, DType::F32, x.device()),
               rv = Tensor::ones({3}, x.device());
  CHECK_THROWS_WITH(normalize(x, s, Tensor(), Tensor(), rm, rv, true),
                    Catch::Contains("SyncBatchNorm takes the whole batch of every process"));
  // Eval mode normalises with the running statistics: nothing to synchronise, plain BatchNorm.
  NormSpec e = NormSpec::batch();
  e.sync = &one;
  const Tensor y = normalize(x, e, Tensor(), Tensor(), rm, rv, false);
  CHECK(one.calls == 0);
  require_close(y, to_double(x), 1e-5, "eval output");
}
