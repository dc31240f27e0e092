// Every kernel on medium shapes against naive double-precision references, forward AND backward.
//
// Why a second set of shapes: the op tests elsewhere use tiny tensors (at most 4x6x5x7), so in
// the GPU kernels every thread handles at most one element and the second and later trips of
// their grid-stride loops never run. A statistics loop that overwrites its partial sum instead of
// adding to it, or a tail check off by one, passed every tiny test. These shapes make every loop
// run several trips and end in a partial one:
//   - 8x32x33x33: HxW = 1089 is odd (scalar paths), a BatchNorm channel holds N*HxW = 8712
//     elements, which is no multiple of the 8 splits x 256 threads x 4 lanes;
//   - 8x32x32x32: HxW = 1024 (float4 paths), the same counts in quads;
//   - G in {1, 4, C}; LayerNorm rows of 3,000 and 3,001 (vector and scalar);
//   - conv: the 3-channel stem (C*R*S = 27 < one K-step), C*R*S = 315 (no multiple of the
//     16-wide K-step), 32 output channels (half of a 64-row tile), N*P*Q not a multiple of 64.
// Tagged [ops], so they run on the CPU, on emulated CUDA in three thread orders and under ASan.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <initializer_list>
#include <utility>
#include <vector>

#include "helpers.h"
#include "reference.h"
#include "normlab/core/autograd.h"
#include "normlab/core/dispatch.h"
#include "normlab/core/kernel/stubs.h"
#include "normlab/core/ops.h"

using namespace nl;
using namespace nl::test;

namespace {

using Vec = ref::Vec;

// Runs op on the test device with gradients for every input; returns output and input grads.
std::vector<Tensor> run_with_grads(const std::function<Tensor(const std::vector<Tensor>&)>& op,
                                   std::vector<Tensor> inputs, const Tensor& dy) {
  for (Tensor& t : inputs) t.set_requires_grad(true);
  Tensor y = op(inputs);
  y.backward(dy);
  std::vector<Tensor> out{y};
  for (const Tensor& t : inputs) out.push_back(t.grad());
  return out;
}

// Float kernels against double references over thousands of elements: 1e-4 of the tensor's RMS
// (reductions of 8,712 floats in a different order than the reference's double sums).
constexpr double kTol = 1e-4;

struct Shape4 {
  int64_t N, C, H, W;
};

// An L2 budget of 64 KiB for the CUDA norm launchers (NORMLAB_CUDA_L2_BUDGET) while in scope: it
// makes small tensors take the paths that only large ones take at the default budget.
struct SmallL2Budget {
  SmallL2Budget() { setenv("NORMLAB_CUDA_L2_BUDGET", "65536", 1); }
  ~SmallL2Budget() { unsetenv("NORMLAB_CUDA_L2_BUDGET"); }
  SmallL2Budget(const SmallL2Budget&) = delete;
  SmallL2Budget& operator=(const SmallL2Budget&) = delete;
};

}  // namespace

namespace {
void check_batch_norm(std::initializer_list<Shape4> shapes) {
  for (Shape4 s : shapes) {
    for (bool fused : {false, true}) {
      CAPTURE(s.N, s.C, s.H, s.W, fused);
      const int64_t HW = s.H * s.W;
      Tensor x = randn({s.N, s.C, s.H, s.W}, 101, 2.0f, 0.7f), gamma = randn({s.C}, 102, 0.5f, 1.0f),
             beta = randn({s.C}, 103), res = randn({s.N, s.C, s.H, s.W}, 104),
             dy = randn({s.N, s.C, s.H, s.W}, 105);
      Tensor rm = Tensor::zeros({s.C}, DType::F32, test_device()), rv = Tensor::ones({s.C}, test_device());
      NormEpilogue e;
      if (fused) e.relu = true, e.residual = res;
      auto out = run_with_grads(
          [&](const std::vector<Tensor>& v) {
            return batch_norm(v[0], v[1], v[2], rm, rv, true, 0.1f, 1e-5f, e);
          },
          {x, gamma, beta}, dy);
      const Vec rres = to_double(res), rg = to_double(gamma), rb = to_double(beta), rdy = to_double(dy);
      ref::NormRef r = ref::normalize_fwd_bwd(
          to_double(x), s.N, s.C, HW, s.C, [](int64_t, int64_t c) { return c; }, &rg, &rb, &rdy, 1e-5, fused,
          fused ? &rres : nullptr);
      require_close(out[0], r.y, kTol, "y");
      require_close(out[1], r.dx, kTol, "dx");
      require_close(out[2], r.dgamma, kTol, "dgamma");
      require_close(out[3], r.dbeta, kTol, "dbeta");
      const double M = double(s.N * HW);
      Vec erm, erv;
      for (int64_t c = 0; c < s.C; ++c)
        erm.push_back(0.1 * r.mean[c]), erv.push_back(0.9 + 0.1 * r.var[c] * M / (M - 1));
      require_close(rm, erm, kTol, "running_mean");
      require_close(rv, erv, kTol, "running_var");
    }
  }
}
}  // namespace

TEST_CASE("batch_norm forward, backward and running statistics on medium shapes",
          "[ops][norm][medium][quick]") {
  check_batch_norm({Shape4{8, 32, 33, 33}, Shape4{8, 32, 32, 32}, Shape4{5, 3, 31, 29}});
}

// The CUDA backward takes its work items by ticket, sums items first and then dx items
// interleaved with the rest, D sums items ahead (kernels/cuda/norm.cu, batch_norm_bwd_kernel). At
// the default L2 budget these shapes fit whole (every sums item before any dx item); a 64 KiB
// budget makes D its least, the items per channel (3 at 8 x 33 x 33, 2 at 8 x 32 x 32, 4 at
// 20 x 27 x 31), so each dx item follows its channel's last sums item as closely as allowed.
TEST_CASE("batch_norm backward with sums and dx items interleaved (the L2-ordered launch)",
          "[ops][norm][medium][quick]") {
  const SmallL2Budget budget;
  check_batch_norm({Shape4{8, 32, 33, 33}, Shape4{8, 32, 32, 32}, Shape4{20, 5, 27, 31}});
}

TEST_CASE("group_norm forward and backward on medium shapes for G = 1, 4 and C",
          "[ops][norm][medium][quick]") {
  for (Shape4 s : {Shape4{8, 32, 33, 33}, Shape4{8, 32, 32, 32}}) {
    for (int64_t G : {int64_t{1}, int64_t{4}, s.C}) {
      for (int variant = 0; variant < 3; ++variant) {  // plain, fused, RMSNorm (not centred) fused
        const bool fused = variant > 0, center = variant < 2;
        if (!center && G != 1) continue;  // RMSNorm over (C, H, W)
        CAPTURE(s.N, s.C, s.H, s.W, G, fused, center);
        const int64_t HW = s.H * s.W, Cg = s.C / G;
        Tensor x = randn({s.N, s.C, s.H, s.W}, 111, 1.5f, -0.4f), gamma = randn({s.C}, 112, 0.5f, 1.0f),
               beta = randn({s.C}, 113), res = randn({s.N, s.C, s.H, s.W}, 114),
               dy = randn({s.N, s.C, s.H, s.W}, 115);
        NormEpilogue e;
        if (fused) e.relu = true, e.residual = res;
        NormSpec spec = NormSpec::group(G);
        spec.center = center;
        auto out = run_with_grads(
            [&](const std::vector<Tensor>& v) {
              return normalize(v[0], spec, v[1], v[2], Tensor(), Tensor(), true, e);
            },
            {x, gamma, beta}, dy);
        const Vec rres = to_double(res), rg = to_double(gamma), rb = to_double(beta), rdy = to_double(dy);
        ref::NormRef r = ref::normalize_fwd_bwd(
            to_double(x), s.N, s.C, HW, s.N * G, [G, Cg](int64_t n, int64_t c) { return n * G + c / Cg; },
            &rg, &rb, &rdy, 1e-5, fused, fused ? &rres : nullptr, center);
        require_close(out[0], r.y, kTol, "y");
        require_close(out[1], r.dx, kTol, "dx");
        require_close(out[2], r.dgamma, kTol, "dgamma");
        require_close(out[3], r.dbeta, kTol, "dbeta");
      }
    }
  }
}

// More groups than blocks: the CUDA GroupNorm grid is capped so the groups in flight fit in L2
// (kernels/cuda/norm.cu, gn_grid) and each block then takes several groups in turn. A budget of
// 64 KiB makes that happen here on small tensors: 160 and 136 groups on the 132-block floor, 480
// (InstanceNorm on 8 x 8 planes) on 256 blocks forward and 132 backward; then 40 x 41 planes (scalar, several
// trips of every loop) and a batch of 2 with 64 x 48 planes, where each block walks a whole large group.
TEST_CASE("group_norm with more groups than blocks (the L2-capped grid) and few large groups",
          "[ops][norm][medium][quick]") {
  const SmallL2Budget budget;
  for (auto [s, G] :
       {std::pair{Shape4{40, 16, 9, 9}, int64_t{4}}, std::pair{Shape4{136, 8, 8, 8}, int64_t{1}},
        std::pair{Shape4{20, 24, 8, 8}, int64_t{24}}, std::pair{Shape4{3, 8, 40, 41}, int64_t{2}},
        std::pair{Shape4{2, 4, 64, 48}, int64_t{1}}}) {
    CAPTURE(s.N, s.C, s.H, s.W, G);
    const int64_t HW = s.H * s.W, Cg = s.C / G;
    Tensor x = randn({s.N, s.C, s.H, s.W}, 121, 1.5f, -0.4f), gamma = randn({s.C}, 122, 0.5f, 1.0f),
           beta = randn({s.C}, 123), res = randn({s.N, s.C, s.H, s.W}, 124),
           dy = randn({s.N, s.C, s.H, s.W}, 125);
    NormEpilogue e;
    e.relu = true, e.residual = res;
    auto out = run_with_grads(
        [&](const std::vector<Tensor>& v) { return group_norm(v[0], G, v[1], v[2], 1e-5f, e); },
        {x, gamma, beta}, dy);
    const Vec rres = to_double(res), rg = to_double(gamma), rb = to_double(beta), rdy = to_double(dy);
    ref::NormRef r = ref::normalize_fwd_bwd(
        to_double(x), s.N, s.C, HW, s.N * G, [G, Cg](int64_t n, int64_t c) { return n * G + c / Cg; }, &rg,
        &rb, &rdy, 1e-5, true, &rres);
    require_close(out[0], r.y, kTol, "y");
    require_close(out[1], r.dx, kTol, "dx");
    require_close(out[2], r.dgamma, kTol, "dgamma");
    require_close(out[3], r.dbeta, kTol, "dbeta");
    // Only gamma and beta want gradients (no dx): a block still has to finish every group it
    // takes, not stop after the first.
    Tensor g2 = gamma.detach().set_requires_grad(true), b2 = beta.detach().set_requires_grad(true);
    group_norm(x.detach(), G, g2, b2, 1e-5f, e).backward(dy);
    require_close(g2.grad(), r.dgamma, kTol, "dgamma without dx");
    require_close(b2.grad(), r.dbeta, kTol, "dbeta without dx");
  }
}

// Rows of 3,000 and 3,001 (every loop over a row several trips, vector and scalar), and 300 rows
// of 70: dgamma/dbeta's column reduction over several chunks of rows, the last one partial, and a
// column tile with a tail.
TEST_CASE("layer_norm over rows of 3,000 and 3,001 forward and backward", "[ops][norm][medium][quick]") {
  for (auto [rows, D] : {std::pair<int64_t, int64_t>{37, 3000}, {37, 3001}, {300, 70}}) {
    CAPTURE(rows, D);
    Tensor x = randn({rows, D}, 121, 3.0f, 1.0f), gamma = randn({D}, 122, 0.5f, 1.0f), beta = randn({D}, 123),
           dy = randn({rows, D}, 124);
    auto out = run_with_grads([](const std::vector<Tensor>& v) { return layer_norm(v[0], v[1], v[2]); },
                              {x, gamma, beta}, dy);
    // A row is one set; its D elements are "channels" of one pixel: gamma[d] per element. So
    // view [rows, D] as N = rows, C = D, HW = 1 with one set per n.
    const Vec rg = to_double(gamma), rb = to_double(beta), rdy = to_double(dy);
    ref::NormRef r = ref::normalize_fwd_bwd(
        to_double(x), rows, D, 1, rows, [](int64_t n, int64_t) { return n; }, &rg, &rb, &rdy, 1e-5);
    require_close(out[0], r.y, kTol, "y");
    require_close(out[1], r.dx, kTol, "dx");
    require_close(out[2], r.dgamma, kTol, "dgamma");
    require_close(out[3], r.dbeta, kTol, "dbeta");
  }
}

namespace {
// The conv cases of both arithmetics: the stem (C*R*S = 27), the network's 32->32 layer on an odd
// image (backward-weight: 2312 reduction steps over several split-K blocks), C*R*S = 315, a
// strided 5x5 and a 1x1 with 70 output channels (a 64-row tile and a 6-row tail).
struct ConvCase {
  int64_t N, C, H, W, K, R, stride, pad;
  int64_t P() const { return (H + 2 * pad - R) / stride + 1; }
  int64_t Q() const { return (W + 2 * pad - R) / stride + 1; }
};
const ConvCase kConvCases[] = {{8, 3, 33, 33, 32, 3, 1, 1},
                               {8, 32, 17, 17, 32, 3, 1, 1},
                               {4, 35, 15, 13, 24, 3, 1, 1},
                               {3, 7, 19, 17, 9, 5, 2, 2},
                               {2, 32, 9, 11, 70, 1, 1, 0}};

// x, w, bias and dy of a case (seeded), and conv2d with gradients for all three.
struct ConvInputs {
  Tensor x, w, b, dy;
  explicit ConvInputs(const ConvCase& c, uint64_t seed)
      : x(randn({c.N, c.C, c.H, c.W}, seed)),
        w(randn({c.K, c.C, c.R, c.R}, seed + 1, 0.2f)),
        b(randn({c.K}, seed + 2)),
        dy(randn({c.N, c.K, c.P(), c.Q()}, seed + 3)) {}
  std::vector<Tensor> run(const ConvCase& c) const {
    return run_with_grads(
        [&](const std::vector<Tensor>& v) { return conv2d(v[0], v[1], v[2], c.stride, c.pad); }, {x, w, b},
        dy);
  }
};
}  // namespace

TEST_CASE("conv2d forward and backward on medium shapes: stem, odd C*R*S, half tiles",
          "[ops][conv2d][medium][quick]") {
  for (const ConvCase& c : kConvCases) {
    CAPTURE(c.N, c.C, c.H, c.W, c.K, c.R, c.stride, c.pad);
    const ConvInputs in(c, 131);
    const Tensor &x = in.x, &w = in.w, &b = in.b, &dy = in.dy;
    auto out = in.run(c);
    const Vec rb = to_double(b), rdy = to_double(dy);
    ref::ConvRef r = ref::conv2d_fwd_bwd(to_double(x), to_double(w), &rb, &rdy, c.N, c.C, c.H, c.W, c.K, c.R,
                                         c.R, c.stride, c.pad);
    require_close(out[0], r.y, kTol, "y");
    require_close(out[1], r.dx, kTol, "dx");
    require_close(out[2], r.dw, kTol, "dw");
    require_close(out[3], r.db, kTol, "dbias");
  }
}

namespace {
// Sets nl::conv_tf32 for a scope (the suite runs with it off; tests/test_main.cpp).
struct ConvTf32 {
  explicit ConvTf32(bool on) { set_conv_tf32(on); }
  ~ConvTf32() { set_conv_tf32(false); }
};

// The TF32 tensor-core bound, elementwise (docs/kernels.md, "TF32 convolutions"): each input is
// rounded to nearest with unit roundoff u = 2^-11, so a product carries a relative error of at
// most 2u + u^2; the products are summed in FP32 over `terms` (the reduction, plus the split-K
// partials), adding at most terms * 2^-24 relative to the sum of magnitudes. So
//   |got - exact| <= (2^-10 + 2^-22 + terms * 2^-24) * sum|a||b| + 2^-24 |exact|
// where sum|a||b| is the same convolution of the absolute values (`magnitude`).
void require_within_tf32(const Tensor& got, const Vec& exact, const Vec& magnitude, int64_t terms,
                         const std::string& what) {
  const std::vector<float> g = got.to_vector();
  REQUIRE(g.size() == exact.size());
  const double rel = std::ldexp(1.0, -10) + std::ldexp(1.0, -22) + double(terms) * std::ldexp(1.0, -24);
  double worst = 0.0;
  size_t at = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    const double tol = rel * magnitude[i] + std::ldexp(std::abs(exact[i]), -24) + 1e-30;
    const double ratio = std::abs(g[i] - exact[i]) / tol;
    if (!(ratio <= worst)) worst = std::isnan(ratio) ? INFINITY : ratio, at = i;
  }
  INFO(what << ": worst element " << at << " got " << g[at] << " expected " << exact[at]
            << " (error/bound = " << worst << ")");
  REQUIRE(worst <= 1.0);
}

Vec abs_of(Vec v) {
  for (double& e : v) e = std::abs(e);
  return v;
}
}  // namespace

TEST_CASE("conv2d on TF32 tensor cores stays within the TF32 bound on medium shapes",
          "[ops][conv2d][medium][tf32][quick]") {
  for (const ConvCase& c : kConvCases) {
    CAPTURE(c.N, c.C, c.H, c.W, c.K, c.R, c.stride, c.pad);
    const ConvInputs in(c, 151);
    const Tensor &x = in.x, &w = in.w, &b = in.b, &dy = in.dy;
    const int64_t P = c.P(), Q = c.Q();
    std::vector<Tensor> tc, fp32;
    {
      ConvTf32 on(true);
      tc = in.run(c);
    }
    fp32 = in.run(c);
    const Vec rb = to_double(b), rdy = to_double(dy), ady = abs_of(rdy);
    const ref::ConvRef r = ref::conv2d_fwd_bwd(to_double(x), to_double(w), &rb, &rdy, c.N, c.C, c.H, c.W, c.K,
                                               c.R, c.R, c.stride, c.pad);
    const ref::ConvRef m = ref::conv2d_fwd_bwd(abs_of(to_double(x)), abs_of(to_double(w)), nullptr, &ady, c.N,
                                               c.C, c.H, c.W, c.K, c.R, c.R, c.stride, c.pad);
    require_within_tf32(tc[0], r.y, m.y, c.C * c.R * c.R + 64, "y");
    require_within_tf32(tc[1], r.dx, m.dx, c.K * c.R * c.R + 64, "dx");
    require_within_tf32(tc[2], r.dw, m.dw, c.N * P * Q + 64, "dw");
    require_close(tc[3], r.db, kTol, "dbias");  // the bias gradient is a plain FP32 sum
    // On CUDA the tensor cores really ran: TF32 results are not FP32's bit for bit.
    if (test_device().is_cuda()) {
      for (int i = 0; i < 3; ++i) {
        CAPTURE(i);
        CHECK(tc[i].to_vector() != fp32[i].to_vector());
      }
    }
  }
}

namespace {
// The shapes of the direct tensor-core kernels (3x3 or 1x1, stride 1, same padding, W <= 32),
// each run by them (conv_algo auto) and by the implicit GEMM (gemm): the comparison network's
// layers (16 -> 32 on 32x32: 4-row tiles; 24 -> 24 on 8x8: two images per tile; a 1x1
// transition), then odd ones: 9-wide images 7 rows high (14-row tiles start mid-image and span
// three images), 40 input channels (two 32-channel chunks) and 36 output channels (two blocks
// of 32, the second mostly empty), 5 channels (one 8-deep step mostly zero), 13 x 11 images
// whose last tile is partial, and 2 x 4 images: 16 of them per tile, each with its own halo rows
// (146 KB of shared memory: the direct kernels on an H100, the implicit GEMM where a block may
// have less, as on an L4).
const ConvCase kDirectCases[] = {{4, 16, 32, 32, 32, 3, 1, 1}, {6, 24, 8, 8, 24, 3, 1, 1},
                                 {3, 32, 16, 16, 16, 1, 1, 0}, {3, 5, 7, 9, 11, 3, 1, 1},
                                 {2, 40, 12, 20, 36, 3, 1, 1}, {5, 7, 13, 11, 9, 1, 1, 0},
                                 {40, 6, 2, 4, 10, 3, 1, 1}};
constexpr size_t kDirectOnEveryGpu = 6;  // the cases whose tiles fit in 99 KB

struct ConvAlgoScope {
  explicit ConvAlgoScope(ConvAlgo a) { set_conv_algo(a); }
  ~ConvAlgoScope() { set_conv_algo(ConvAlgo::Auto); }
};
}  // namespace

TEST_CASE("conv2d's direct tensor-core kernels stay within the TF32 bound on the network's and odd shapes",
          "[ops][conv2d][medium][tf32][quick]") {
  for (size_t ci = 0; ci < std::size(kDirectCases); ++ci) {
    const ConvCase& c = kDirectCases[ci];
    CAPTURE(c.N, c.C, c.H, c.W, c.K, c.R, c.stride, c.pad);
    const ConvInputs in(c, 171);
    const int64_t P = c.P(), Q = c.Q();
    const Vec rb = to_double(in.b), rdy = to_double(in.dy), ady = abs_of(rdy);
    const ref::ConvRef r = ref::conv2d_fwd_bwd(to_double(in.x), to_double(in.w), &rb, &rdy, c.N, c.C, c.H,
                                               c.W, c.K, c.R, c.R, c.stride, c.pad);
    const ref::ConvRef m = ref::conv2d_fwd_bwd(abs_of(to_double(in.x)), abs_of(to_double(in.w)), nullptr,
                                               &ady, c.N, c.C, c.H, c.W, c.K, c.R, c.R, c.stride, c.pad);
    const bool cuda = test_device().is_cuda();
    ConvTf32 on(true);
    for (ConvAlgo algo : {ConvAlgo::Auto, ConvAlgo::Gemm}) {
      const bool direct = algo == ConvAlgo::Auto;
      CAPTURE(direct ? "auto" : "gemm");
      ConvAlgoScope scope(algo);
      if (cuda) launch_trace_begin_stub(test_device());
      const std::vector<Tensor> out = ConvInputs(c, 171).run(c);  // fresh leaves: grads accumulate
      if (cuda) {
        // Every convolution ran the kernels the algorithm names (its first launch; a second one
        // adds backward-weight's partials).
        int convs = 0;
        for (const LaunchRecord& l : launch_trace_end_stub(test_device())) {
          if (l.op.rfind("conv2d", 0) != 0 || l.op == "conv2d_bwd_bias" || l.op_launch != 0) continue;
          CAPTURE(l.op, l.kernel);
          ++convs;
          if (direct && ci >= kDirectOnEveryGpu)
            CHECK((l.kernel.find("direct") != std::string::npos || l.kernel.find("implicit_gemm") == 0));
          else
            CHECK(l.kernel.find(direct ? "direct" : "implicit_gemm") != std::string::npos);
        }
        CHECK(convs >= 3);
      }
      // Backward-weight adds up to 256 per-block partials after each block's own sum.
      require_within_tf32(out[0], r.y, m.y, c.C * c.R * c.R + 64, "y");
      require_within_tf32(out[1], r.dx, m.dx, c.K * c.R * c.R + 64, "dx");
      require_within_tf32(out[2], r.dw, m.dw, c.N * P * Q + 256, "dw");
      require_close(out[3], r.db, kTol, "dbias");
    }
  }
}

TEST_CASE("conv2d on TF32 rounds its inputs to nearest, not by truncation", "[ops][conv2d][tf32][quick]") {
  // 1 + 3 * 2^-12 lies above the midpoint between the TF32 neighbours 1 and 1 + 2^-10: rounding
  // to nearest gives 1 + 2^-10, truncation (a tensor core fed unrounded FP32) gives 1, FP32 keeps
  // it. A 1x1 convolution of 8 channels then sums 8 equal products exactly in each case.
  const float x = 1.0f + 3.0f / 4096.0f, tf32 = 1.0f + 1.0f / 1024.0f;
  const bool cuda = test_device().is_cuda();
  auto full = [](const Shape& s, float v) {
    return Tensor::from_vector(std::vector<float>(size_t(s.numel()), v), s, test_device());
  };
  ConvTf32 on(true);
  // Which operand carries the value: every operand of the three GEMMs is checked (forward w * x,
  // backward-data w * dy, backward-weight dy * x).
  for (int carrier : {0, 1, 2}) {  // 0: x, 1: w, 2: dy
    CAPTURE(carrier);
    Tensor in = full({2, 8, 4, 4}, carrier == 0 ? x : 1.0f), wt = full({3, 8, 1, 1}, carrier == 1 ? x : 1.0f);
    Tensor dy = full({2, 3, 4, 4}, carrier == 2 ? x : 1.0f);
    auto out = run_with_grads([](const std::vector<Tensor>& v) { return conv2d(v[0], v[1], Tensor(), 1, 0); },
                              {in, wt}, dy);
    const float v = cuda ? tf32 : x;
    auto val = [&](bool has) { return has ? v : 1.0f; };
    CHECK(out[0].to_vector() == std::vector<float>(2 * 3 * 16, 8.0f * val(carrier != 2)));  // y = sum_c w x
    CHECK(out[1].to_vector() == std::vector<float>(2 * 8 * 16, 3.0f * val(carrier != 0)));  // dx = sum_k w dy
    CHECK(out[2].to_vector() == std::vector<float>(3 * 8, 32.0f * val(carrier != 1)));  // dw = sum_npq dy x
  }
}

TEST_CASE("pooling, linear and the loss on medium shapes", "[ops][medium][quick]") {
  Tensor x = randn({8, 32, 33, 33}, 141);
  const Vec hx = to_double(x);
  // max_pool2d 2x2 (floor mode: row and column 32 dropped) and global average pool, with grads.
  Tensor dyp = randn({8, 32, 16, 16}, 142), dyg = randn({8, 32, 1, 1}, 143);
  auto mp = run_with_grads([](const std::vector<Tensor>& v) { return max_pool2d(v[0]); }, {x}, dyp);
  // A second tensor with the same values: gradients accumulate into a leaf used twice.
  auto gp = run_with_grads([](const std::vector<Tensor>& v) { return global_avg_pool(v[0]); },
                           {randn({8, 32, 33, 33}, 141)}, dyg);
  const Vec hdyp = to_double(dyp), hdyg = to_double(dyg);
  Vec ymp, dxmp(hx.size(), 0.0), ygp, dxgp(hx.size(), 0.0);
  for (int64_t nc = 0; nc < 8 * 32; ++nc) {
    double s = 0.0;
    for (int64_t i = 0; i < 33 * 33; ++i) s += hx[nc * 1089 + i];
    ygp.push_back(s / 1089.0);
    for (int64_t i = 0; i < 1089; ++i) dxgp[nc * 1089 + i] = hdyg[nc] / 1089.0;
    for (int64_t p = 0; p < 16; ++p)
      for (int64_t q = 0; q < 16; ++q) {
        int64_t best = nc * 1089 + 2 * p * 33 + 2 * q;  // first maximum wins, as in the kernels
        for (int64_t i = 0; i < 2; ++i)
          for (int64_t j = 0; j < 2; ++j) {
            const int64_t k = nc * 1089 + (2 * p + i) * 33 + 2 * q + j;
            if (hx[k] > hx[best]) best = k;
          }
        ymp.push_back(hx[best]);
        dxmp[best] += hdyp[(nc * 16 + p) * 16 + q];
      }
  }
  require_close(mp[0], ymp, 0, "max_pool2d");
  require_close(mp[1], dxmp, 0, "max_pool2d dx");
  require_close(gp[0], ygp, kTol, "global_avg_pool");
  require_close(gp[1], dxgp, kTol, "global_avg_pool dx");

  // linear 300 x 517 -> 70 and log_softmax + nll over 300 rows.
  Tensor a = randn({300, 517}, 144), w = randn({70, 517}, 145, 0.1f), b = randn({70}, 146),
         dyl = randn({300, 70}, 147);
  auto lin =
      run_with_grads([](const std::vector<Tensor>& v) { return linear(v[0], v[1], v[2]); }, {a, w, b}, dyl);
  const Vec ha = to_double(a), hw = to_double(w), hb = to_double(b), hdy = to_double(dyl);
  Vec yl(300 * 70), da(ha.size(), 0.0), dw(hw.size(), 0.0), db(70, 0.0);
  for (int64_t i = 0; i < 300; ++i)
    for (int64_t o = 0; o < 70; ++o) {
      double acc = hb[o];
      for (int64_t k = 0; k < 517; ++k) {
        acc += ha[i * 517 + k] * hw[o * 517 + k];
        da[i * 517 + k] += hdy[i * 70 + o] * hw[o * 517 + k];
        dw[o * 517 + k] += hdy[i * 70 + o] * ha[i * 517 + k];
      }
      yl[i * 70 + o] = acc;
      db[o] += hdy[i * 70 + o];
    }
  require_close(lin[0], yl, kTol, "linear");
  require_close(lin[1], da, kTol, "linear dx");
  require_close(lin[2], dw, kTol, "linear dw");
  require_close(lin[3], db, kTol, "linear dbias");

  std::vector<int32_t> labels;
  for (int i = 0; i < 300; ++i) labels.push_back((i * 7) % 10);
  Tensor logits = randn({300, 10}, 148, 2.0f), target = Tensor::from_ints(labels, {300}).to(test_device());
  auto loss =
      run_with_grads([&](const std::vector<Tensor>& v) { return nll_loss(log_softmax(v[0]), target); },
                     {logits}, Tensor::ones({}, test_device()));
  const Vec hl = to_double(logits);
  double total = 0.0;
  Vec dl(hl.size());
  for (int64_t i = 0; i < 300; ++i) {
    double mx = -INFINITY, s = 0.0;
    for (int c = 0; c < 10; ++c) mx = std::max(mx, hl[i * 10 + c]);
    for (int c = 0; c < 10; ++c) s += std::exp(hl[i * 10 + c] - mx);
    total -= hl[i * 10 + labels[i]] - mx - std::log(s);
    for (int c = 0; c < 10; ++c)
      dl[i * 10 + c] = (std::exp(hl[i * 10 + c] - mx) / s - (c == labels[i] ? 1.0 : 0.0)) / 300.0;
  }
  require_close(loss[0], {total / 300.0}, kTol, "nll_loss");
  require_close(loss[1], dl, kTol, "nll_loss dlogits");
}

// Max pooling where windows tie, as after a ReLU (zeros) and on coarsely rounded values: the
// output and the gradient go to the first maximum in row-major window order (PyTorch's rule), on
// 2x2 / stride 2 (the network's pool, with a kernel of its own on the CPU) and on 3x3 / stride 2;
// odd sizes leave a last row and column outside every window.
TEST_CASE("max_pool2d picks the first maximum of tied windows, forward and backward",
          "[ops][pool][medium][quick]") {
  const int64_t N = 6, C = 16, H = 33, W = 41;  // 20 windows a row: 16 at once, then 4 one by one
  Generator g(41);
  std::vector<float> v(size_t(N * C * H * W));
  for (float& f : v) f = std::max(0.0f, std::round(g.next_normal() * 2.0f) / 2.0f);  // many ties
  Tensor x = Tensor::from_vector(v, {N, C, H, W}, test_device());
  for (int64_t k : {int64_t{2}, int64_t{3}}) {
    CAPTURE(k);
    const int64_t P = (H - k) / 2 + 1, Q = (W - k) / 2 + 1;
    Tensor dy = randn({N, C, P, Q}, 42);
    Tensor xg = x.detach().set_requires_grad(true);
    Tensor y = max_pool2d(xg, k, 2);
    y.backward(dy);
    const std::vector<float> gdy = dy.to_vector();
    Vec ey, edx(v.size(), 0.0);
    for (int64_t plane = 0; plane < N * C; ++plane)
      for (int64_t oh = 0; oh < P; ++oh)
        for (int64_t ow = 0; ow < Q; ++ow) {
          int64_t best = plane * H * W + 2 * oh * W + 2 * ow;
          for (int64_t kh = 0; kh < k; ++kh)
            for (int64_t kw = 0; kw < k; ++kw) {
              const int64_t i = plane * H * W + (2 * oh + kh) * W + 2 * ow + kw;
              if (v[size_t(i)] > v[size_t(best)]) best = i;
            }
          ey.push_back(v[size_t(best)]);
          edx[size_t(best)] += gdy[size_t((plane * P + oh) * Q + ow)];
        }
    require_close(y, ey, 0, "y");
    // Overlapping 3x3 windows add several gradients into one pixel, in float here, in double there.
    require_close(xg.grad(), edx, k == 2 ? 0.0 : 1e-6, "dx");
  }
}
