// The memory-traffic profiler's own tests (NORMLAB_CUDA_PROFILE builds): kernels whose requests,
// sectors, bank conflicts and DRAM traffic are known by hand, so a wrong grouping of lanes, a
// wrong sector or bank count or a broken L2 model fails here before it misleads bench/gpu_model.
#define CATCH_CONFIG_MAIN
// Tier: full (the memory-traffic profiler's own cases run in the profile stage of make test-all).
#include <catch2/catch.hpp>
#include <cstdlib>
#include <map>
#include <unordered_set>
#include <string>
#include <vector>

#include "kernels/cuda/cuda_common.h"
#include "normlab/core/dispatch.h"
#include "normlab/core/ops.h"
#include "normlab/core/rng.h"
#include "normlab/core/tensor.h"

namespace prof = cuemu::profile;

namespace {

__global__ void copy_kernel(int n, int stride, const float* x, float* y) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = x[int64_t(i) * stride % n];
}

__global__ void copy4_kernel(int n4, const float4* x, float4* y) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n4) nl::cuda::store_vec(y + i, nl::cuda::load_vec(x + i));
}

// Shared memory read with a stride of `stride` words: `stride`-way conflicts for even strides up
// to 32, none for odd ones; stride 0 is a broadcast.
__global__ void shared_kernel(int stride, float* out) {
  NL_DYN_SHARED(float, s);
  const int t = threadIdx.x;
  for (int i = t; i < 32 * 33; i += blockDim.x) s[i] = float(i);
  __syncthreads();
  out[blockIdx.x * blockDim.x + t] = s[t * stride];
}

// Two passes over a block's slice, like a two-pass norm: every element is requested twice.
__global__ void two_pass_kernel(int per_block, const float* x, float* y) {
  const float* xb = x + int64_t(blockIdx.x) * per_block;
  float s = 0.0f;
  for (int i = threadIdx.x; i < per_block; i += blockDim.x) s += xb[i];
  for (int i = threadIdx.x; i < per_block; i += blockDim.x)
    y[int64_t(blockIdx.x) * per_block + i] = xb[i] - s;
}

template <typename T>
T* device(size_t n) {
  void* p = nullptr;
  REQUIRE(cudaMalloc(&p, n * sizeof(T)) == cudaSuccess);
  return static_cast<T*>(p);
}

struct Recorder {
  std::vector<prof::Launch> launches;
  explicit Recorder(prof::Options o = {}) {
    o.on_launch = [this](const prof::Launch& l) { launches.push_back(l); };
    prof::start(std::move(o));
  }
  ~Recorder() { prof::stop(); }
};

}  // namespace

TEST_CASE("profiler: coalesced, strided and vector requests", "[profile][full]") {
  const int n = 1024;
  float* x = device<float>(n);
  float* y = device<float>(n);
  Recorder r;
  NL_LAUNCH(copy_kernel, 4, 256, 0, n, 1, x, y);
  NL_LAUNCH(copy_kernel, 4, 256, 0, n, 32, x, y);
  NL_LAUNCH(copy4_kernel, 1, 256, 0, n / 4, reinterpret_cast<const float4*>(x), reinterpret_cast<float4*>(y));
  REQUIRE(r.launches.size() == 3);
  const prof::Launch& unit = r.launches[0];
  CHECK(unit.kernel == "copy_kernel");
  CHECK(unit.blocks == 4);
  CHECK(unit.blocks_run == 4);
  // 32 warps, one load and one store request each, 4 sectors (128 bytes) per request.
  CHECK(unit.load.requests == 32);
  CHECK(unit.load.sectors == 32 * 4);
  CHECK(unit.load.ideal_sectors == 32 * 4);
  CHECK(unit.store.requests == 32);
  CHECK(unit.store.sectors == 32 * 4);
  CHECK(unit.unique_read_bytes == n * 4);
  CHECK(unit.unique_written_bytes == n * 4);
  // Stride 32 floats: every lane in its own sector.
  const prof::Launch& strided = r.launches[1];
  CHECK(strided.load.requests == 32);
  CHECK(strided.load.sectors == 32 * 32);
  CHECK(strided.load.ideal_sectors == 32 * 4);
  CHECK(strided.store.sectors == 32 * 4);
  // float4: one request per warp and 512 bytes = 16 sectors each, the ideal.
  const prof::Launch& vec = r.launches[2];
  CHECK(vec.load.requests == 8);
  CHECK(vec.load.sectors == 8 * 16);
  CHECK(vec.load.ideal_sectors == 8 * 16);
  CHECK(vec.store.requests == 8);
  cudaFree(x);
  cudaFree(y);
}

TEST_CASE("profiler: shared-memory bank conflicts", "[profile][full]") {
  float* out = device<float>(32);
  Recorder r;
  for (int stride : {1, 2, 32, 33, 0}) NL_LAUNCH(shared_kernel, 1, 32, 32 * 33 * sizeof(float), stride, out);
  REQUIRE(r.launches.size() == 5);
  // The fill loop stores 33 words per lane-column without conflicts: 33 requests, 33 wavefronts.
  for (const auto& l : r.launches) {
    CHECK(l.shared_store.requests == 33);
    CHECK(l.shared_store.wavefronts == 33);
    CHECK(l.shared_load.requests == 1);
    CHECK(l.shared_load.ideal_wavefronts == 1);
  }
  CHECK(r.launches[0].shared_load.wavefronts == 1);   // stride 1
  CHECK(r.launches[1].shared_load.wavefronts == 2);   // stride 2: 2-way
  CHECK(r.launches[2].shared_load.wavefronts == 32);  // stride 32: every lane in bank 0
  CHECK(r.launches[3].shared_load.wavefronts == 1);   // stride 33: padding removes the conflict
  CHECK(r.launches[4].shared_load.wavefronts == 1);   // one word: a broadcast
  cudaFree(out);
}

TEST_CASE("profiler: unique bytes and the L2 model", "[profile][full]") {
  const int blocks = 8, per_block = 4096;  // 16 KiB per block, 128 KiB in all
  float* x = device<float>(blocks * per_block);
  float* y = device<float>(blocks * per_block);
  Recorder r;
  NL_LAUNCH(two_pass_kernel, blocks, 256, 0, per_block, x, y);
  REQUIRE(r.launches.size() == 1);
  const prof::Launch& l = r.launches[0];
  const double T = double(blocks) * per_block * 4;
  CHECK(l.load.sectors == 2 * T / 32);  // every sector requested twice
  CHECK(l.unique_read_bytes == T);      // but the floor is one read
  CHECK(l.unique_written_bytes == T);
  // L2 holds a whole wave's data: the second pass hits. One block at a time in 16 KiB: hits too.
  prof::Dram big = prof::simulate_l2(l, 1 << 20, blocks);
  CHECK(big.read_bytes == T);
  CHECK(big.write_bytes == T);
  prof::Dram one = prof::simulate_l2(l, 32 * 1024, 1);
  CHECK(one.read_bytes == T);
  // All 8 blocks at once in a 32 KiB L2: each block's first pass is evicted before its second.
  prof::Dram small = prof::simulate_l2(l, 32 * 1024, blocks);
  CHECK(small.read_bytes == 2 * T);
  CHECK(small.write_bytes == T);
  cudaFree(x);
  cudaFree(y);
}

TEST_CASE("profiler: sampled launches run evenly spaced blocks and say so", "[profile][full]") {
  const int n = 64 * 256;
  float* x = device<float>(n);
  float* y = device<float>(n);
  prof::Options o;
  o.blocks_to_run = [](const std::string&, uint64_t blocks) { return blocks / 8; };
  Recorder r(o);
  NL_LAUNCH(copy_kernel, 64, 256, 0, n, 1, x, y);
  REQUIRE(r.launches.size() == 1);
  const prof::Launch& l = r.launches[0];
  CHECK(l.blocks == 64);
  CHECK(l.blocks_run == 8);
  CHECK(l.scale() == 8.0);
  CHECK(l.load.requests == 8 * 8);
  CHECK_THROWS_WITH(prof::simulate_l2(l, 1 << 20, 8), Catch::Matchers::Contains("sample"));
  cudaFree(x);
  cudaFree(y);
}

TEST_CASE("profiler: launches name their op", "[profile][full]") {
  float* x = device<float>(256);
  Recorder r;
  {
    NL_MODEL_OP("copy", 0, 2 * 256 * 4);
    NL_LAUNCH(copy_kernel, 1, 256, 0, 256, 1, x, x);
    NL_LAUNCH(copy_kernel, 1, 256, 0, 256, 1, x, x);
  }
  NL_LAUNCH(copy_kernel, 1, 256, 0, 256, 1, x, x);
  REQUIRE(r.launches.size() == 3);
  CHECK(r.launches[0].op == "copy");
  CHECK(r.launches[0].op_min_bytes == 2048);
  CHECK(r.launches[1].op_launch == 1);
  CHECK(r.launches[2].op.empty());
  cudaFree(x);
}

// The norm kernels at their design (docs/kernels.md, "GPU model"): every global request of every
// launch at the ideal sectors for its bytes (float and float4 accesses coalesced), no shared-memory
// bank conflicts, and the op's unique traffic within its minimum (each input read once, each output
// written once) plus the small per-channel statistics. A regression that makes a norm kernel read
// with a stride, or touch a tensor the op does not need, fails here.
TEST_CASE("profiler: the norm kernels are coalesced and touch only what the op needs", "[profile][full]") {
  using namespace nl;
  struct Case {
    const char* name;
    int64_t N, C, H, W;
    bool residual;
  };
  // 32x32 images take the float4 paths, 33x33 the scalar ones; rows of several trips each.
  for (const Case& c : {Case{"float4", 8, 32, 32, 32, true}, Case{"scalar", 4, 16, 33, 33, false}}) {
    for (const std::string norm : {"batch_norm", "group_norm", "layer_norm"}) {
      DYNAMIC_SECTION(norm << " " << c.name) {
        Generator gen(7);
        const Device cuda = Device::cuda();
        Tensor x = Tensor::randn({c.N, c.C, c.H, c.W}, gen).to(cuda).set_requires_grad(true);
        // gamma > 0, beta = 0: the ReLU passes about half of every channel. (A channel the ReLU
        // zeroes whole would let the scalar path skip its dy sectors: below the "minimum".)
        Tensor gamma = Tensor::uniform({c.C}, 0.5f, 1.5f, gen).to(cuda).set_requires_grad(true);
        Tensor beta = Tensor::zeros({c.C}).to(cuda).set_requires_grad(true);
        Tensor residual = c.residual ? Tensor::randn({c.N, c.C, c.H, c.W}, gen).to(cuda) : Tensor();
        Tensor dy = Tensor::randn({c.N, c.C, c.H, c.W}, gen).to(cuda);
        std::vector<prof::Launch> launches;
        prof::Options o;
        o.on_launch = [&](const prof::Launch& l) {
          if (l.op.rfind(norm, 0) == 0) launches.push_back(l);
        };
        prof::start(o);
        Tensor y;
        if (norm == "layer_norm") {
          y = layer_norm(x.reshape({c.N, c.C * c.H * c.W}), Tensor(), Tensor());
        } else {
          NormEpilogue e{.relu = true, .dropout = 0.1f, .gen = &gen, .residual = residual};
          y = norm == "batch_norm" ? batch_norm(x, gamma, beta, Tensor(), Tensor(), true, 0.1f, 1e-5f, e)
                                   : group_norm(x, 4, gamma, beta, 1e-5f, e);
        }
        y.backward(dy.reshape(y.shape()));
        prof::stop();
        REQUIRE(!launches.empty());
        struct Op {
          double sectors = 0, ideal = 0, min_bytes = 0;
          std::unordered_set<uint64_t> touched;  // sectors, across the op's launches
        };
        std::map<std::string, Op> ops;
        for (const prof::Launch& l : launches) {
          INFO(l.op << ": " << l.kernel);
          Op& op = ops[l.op];
          op.sectors += double(l.load.sectors + l.store.sectors);
          op.ideal += double(l.load.ideal_sectors + l.store.ideal_sectors);
          if (l.op_launch == 0) op.min_bytes = l.op_min_bytes;
          for (const auto& stream : l.streams)
            for (uint64_t x : stream) op.touched.insert(prof::entry_sector(x));
          CHECK(l.shared_load.wavefronts == l.shared_load.ideal_wavefronts);
          CHECK(l.shared_store.wavefronts == l.shared_store.ideal_wavefronts);
        }
        CHECK(ops.size() == 2);  // forward and backward
        for (const auto& [name, op] : ops) {
          const double bytes = 32.0 * double(op.touched.size());
          INFO(name << ": " << op.sectors << " sectors (ideal " << op.ideal << "), touched " << bytes
                    << " bytes, minimum " << op.min_bytes);
          // The float4 paths are coalesced to the sector (1%: the per-channel statistics, a few
          // gathered floats). The scalar paths are not held to it: g++ turns the epilogue's
          // predicated stores into branches, which the profiler sees as two half-warp requests
          // (docs/cuda-emulation.md, "Limits of the profiler").
          if (std::string(c.name) == "float4") CHECK(op.sectors <= 1.01 * op.ideal);
          // Each tensor once: statistics, partial sums and gamma/beta are a few floats per
          // channel and sample; sector rounding at the ends of odd rows adds a little.
          // At least the minimum: less would mean an unread input. (The scalar paths load dy only
          // where the mask passes, so a sector whose 8 elements are all dropped is skipped: 2%.)
          CHECK(bytes >= 0.98 * op.min_bytes);
          CHECK(bytes <= op.min_bytes * 1.02 + 64.0 * c.N * c.C * 4 + 4096);
        }
      }
    }
  }
}

// BatchNorm backward reads x, dy and the mask twice (sums, then dx); at batch 512 their 2.25T is
// three L2s. The ticket-ordered kernel (kernels/cuda/norm.cu, batch_norm_bwd_kernel) puts each dx
// item D items behind its sums, so the second read hits L2 while the whole tensor would not fit.
// Here the same at a small scale: T = 1 MiB, an L2 of 512 KiB, a budget that makes D = 2 items,
// and two blocks resident. Sums-then-dx (D = all items) would read 2.25T from DRAM twice.
TEST_CASE("profiler: BatchNorm backward re-reads from L2 a tensor larger than the L2", "[profile][full]") {
  using namespace nl;
  struct EnvBudget {
    EnvBudget() { setenv("NORMLAB_CUDA_L2_BUDGET", "196608", 1); }  // 2 items of 36 KiB, twice
    ~EnvBudget() { unsetenv("NORMLAB_CUDA_L2_BUDGET"); }
  } budget;
  Generator gen(11);
  const Device cuda = Device::cuda();
  Tensor x = Tensor::randn({8, 32, 32, 32}, gen).to(cuda).set_requires_grad(true);
  Tensor gamma = Tensor::uniform({32}, 0.5f, 1.5f, gen).to(cuda), beta = Tensor::zeros({32}).to(cuda);
  Tensor dy = Tensor::randn({8, 32, 32, 32}, gen).to(cuda);
  NormEpilogue e{.relu = true};
  Tensor y = batch_norm(x, gamma, beta, Tensor(), Tensor(), true, 0.1f, 1e-5f, e);
  std::vector<prof::Launch> launches;
  prof::Options o;
  o.on_launch = [&](const prof::Launch& l) {
    if (l.op == "batch_norm_bwd") launches.push_back(l);
  };
  prof::start(o);
  y.backward(dy);
  prof::stop();
  REQUIRE(launches.size() == 1);
  const prof::Launch& l = launches[0];
  const double T = 4.0 * x.numel();
  const prof::Dram d = prof::simulate_l2(l, 512 * 1024, 2);
  INFO("DRAM read " << d.read_bytes << " written " << d.write_bytes << ", minimum " << l.op_min_bytes
                    << ", T " << T);
  CHECK(d.read_bytes + d.write_bytes >= 0.98 * l.op_min_bytes);
  CHECK(d.read_bytes + d.write_bytes <= l.op_min_bytes + 0.1 * T);
}

namespace {
// The launches whose kernel name contains `part` of one TF32 conv at 32 -> 32 channels on 4 16x16
// images, forward and backward, with the kernels `algo` picks.
std::vector<prof::Launch> tf32_conv_launches(nl::ConvAlgo algo, const std::string& part) {
  using namespace nl;
  set_conv_tf32(true);
  set_conv_algo(algo);
  Generator gen(3);
  const Device cuda = Device::cuda();
  Tensor x = Tensor::randn({4, 32, 16, 16}, gen).to(cuda).set_requires_grad(true);
  Tensor w = Tensor::randn({32, 32, 3, 3}, gen).to(cuda).set_requires_grad(true);
  Tensor dy = Tensor::randn({4, 32, 16, 16}, gen).to(cuda);
  std::vector<prof::Launch> launches;
  prof::Options o;
  o.on_launch = [&](const prof::Launch& l) {
    if (l.kernel.find(part) != std::string::npos) launches.push_back(l);
  };
  prof::start(o);
  conv2d(x, w, Tensor(), 1, 1).backward(dy);
  prof::stop();
  set_conv_algo(ConvAlgo::Auto);
  set_conv_tf32(false);
  return launches;
}
}  // namespace

// The TF32 conv kernel at its design (docs/kernels.md, "TF32 convolutions"): the tensor-core
// fragment loads and the epilogue's float4 reads of the staged tile are free of bank conflicts
// (rows padded to 72 floats), for the forward, backward-data and backward-weight GEMMs.
TEST_CASE("profiler: the TF32 conv reads its shared tiles without bank conflicts", "[profile][full]") {
  std::map<std::string, int> ops;
  for (const prof::Launch& l : tf32_conv_launches(nl::ConvAlgo::Gemm, "implicit_gemm")) {
    INFO(l.op << ": " << l.kernel << ", shared loads " << l.shared_load.wavefronts << " wavefronts (ideal "
              << l.shared_load.ideal_wavefronts << "), stores " << l.shared_store.wavefronts << " (ideal "
              << l.shared_store.ideal_wavefronts << ")");
    CHECK(l.kernel.rfind("implicit_gemm_tf32_kernel", 0) == 0);
    CHECK(l.shared_load.wavefronts == l.shared_load.ideal_wavefronts);
    ++ops[l.op];
  }
  CHECK(ops.size() == 3);  // forward, backward-data, backward-weight
}

// The direct tensor-core convs (docs/kernels.md, "Direct tensor-core convolutions"): their
// fragment reads from the staged input and filter are free of bank conflicts (planes padded to
// 8 mod 16 and 4 mod 8, filter rows to 40), and the profiler counts their mma.sync per warp,
// which the GPU model turns into the tap loop's trips: at 32 -> 32 channels on 16x16 images, each
// tile of 128 pixels takes 4 warps x (32 / 8 channel steps x 9 taps x 2 x 4 fragments) = 1,152.
TEST_CASE("profiler: the direct convs read their fragments without bank conflicts and count mma",
          "[profile][full]") {
  const std::vector<prof::Launch> launches = tf32_conv_launches(nl::ConvAlgo::Auto, "_direct_");
  REQUIRE(launches.size() == 3);  // forward, backward-data, backward-weight
  const uint64_t tiles = 4 * 16 / 8;
  for (const prof::Launch& l : launches) {
    INFO(l.op << ": " << l.kernel << ", shared loads " << l.shared_load.wavefronts << " wavefronts (ideal "
              << l.shared_load.ideal_wavefronts << "), warp mma " << l.warp_mmas);
    CHECK(l.shared_load.wavefronts == l.shared_load.ideal_wavefronts);
    // Backward-weight: per tile, 16 steps of 8 pixels x 9 fragments x 2 halves per warp.
    CHECK(l.warp_mmas == tiles * 4 * (l.op == "conv2d_bwd_weight" ? 16 * 9 * 2 : 4 * 9 * 2 * 4));
  }
}
