// The emulation layer's own tests: barriers, divergence, warp shuffles with PTX semantics,
// thread orders and the AddressSanitizer build. Compiled by g++ against cuemu (EMULATE builds).
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/cuda/cuda_common.h"
#include "tests/cuda/primitive_kernels.cuh"
#include "normlab/core/ops.h"
#include "normlab/core/rng.h"
#include "normlab/core/tensor.h"

using Catch::Matchers::Contains;

namespace {

// Each thread publishes its id, then reads its left neighbour's (thread 0 its own). `with_barrier` decides
// whether the publication is fenced by __syncthreads.
__global__ void neighbour_kernel(bool with_barrier, float* out) {
  NL_DYN_SHARED(float, s);
  const int t = threadIdx.x;
  s[t] = float(t);
  if (with_barrier) __syncthreads();
  out[t] = s[t > 0 ? t - 1 : 0];
}

std::vector<float> run_neighbour(bool with_barrier, cuemu::Order order) {
  cuemu::set_order(order, 3);
  float* d = nullptr;
  REQUIRE(cudaMalloc(reinterpret_cast<void**>(&d), 64 * sizeof(float)) == cudaSuccess);
  cuemu::launch("neighbour_kernel", neighbour_kernel, 1, 64, 64 * sizeof(float), nullptr, with_barrier, d);
  std::vector<float> h(64);
  cudaMemcpy(h.data(), d, 64 * sizeof(float), cudaMemcpyDeviceToHost);
  cudaFree(d);
  cuemu::set_order(cuemu::Order::Forward);
  return h;
}

bool all_neighbours_right(const std::vector<float>& h) {
  for (int t = 0; t < 64; ++t)
    if (h[t] != float(t > 0 ? t - 1 : 0)) return false;
  return true;
}

__global__ void early_return_kernel(float* out) {
  if (threadIdx.x == 5) return;
  __syncthreads();
  out[threadIdx.x] = 1.0f;
}

__global__ void split_barrier_kernel(float* out) {
  if (threadIdx.x < 32) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1.0f;
}

enum Kind { Idx, Up, Down, Xor };

__global__ void shuffle_kernel(int kind, int param, int width, int* out) {
  const int lane = threadIdx.x;
  int v = 100 + lane;
  int r = 0;
  switch (kind) {
    case Idx: r = __shfl_sync(0xffffffffu, v, param, width); break;
    case Up: r = __shfl_up_sync(0xffffffffu, v, unsigned(param), width); break;
    case Down: r = __shfl_down_sync(0xffffffffu, v, unsigned(param), width); break;
    case Xor: r = __shfl_xor_sync(0xffffffffu, v, param, width); break;
  }
  out[lane] = r;
}

std::vector<int> run_shuffle(Kind kind, int param, int width) {
  int* d = nullptr;
  cudaMalloc(reinterpret_cast<void**>(&d), 32 * sizeof(int));
  cuemu::launch("shuffle_kernel", shuffle_kernel, 1, 32, 0, nullptr, int(kind), param, width, d);
  REQUIRE(cudaGetLastError() == cudaSuccess);
  std::vector<int> h(32);
  cudaMemcpy(h.data(), d, 32 * sizeof(int), cudaMemcpyDeviceToHost);
  cudaFree(d);
  return h;
}

__global__ void ballot_kernel(unsigned* out) {
  const unsigned b = __ballot_sync(0xffffffffu, threadIdx.x % 3 == 0);
  const int all = __all_sync(0xffffffffu, threadIdx.x < 32);
  const int any = __any_sync(0xffffffffu, threadIdx.x == 7);
  out[threadIdx.x] = b + unsigned(all) * 0 + unsigned(any) * 0;
  if (threadIdx.x == 0) out[32] = unsigned(all), out[33] = unsigned(any);
}

__global__ void half_warp_shuffle_kernel(int* out) {
  // Only the lower half takes part, but the mask names the whole warp: lanes 16-31 never come.
  if (threadIdx.x < 16) out[threadIdx.x] = __shfl_down_sync(0xffffffffu, int(threadIdx.x), 1);
}

[[maybe_unused]] __global__ void shared_overflow_kernel(float* out) {
  NL_DYN_SHARED(float, s);
  s[threadIdx.x + 1] = 1.0f;  // thread 31 writes one past the 32-float buffer
  __syncthreads();
  out[threadIdx.x] = s[threadIdx.x];
}

}  // namespace

TEST_CASE("a missing __syncthreads is caught under reverse thread order", "[cuemu][quick]") {
  cuemu::reset_error();
  CHECK(all_neighbours_right(run_neighbour(true, cuemu::Order::Forward)));
  CHECK(all_neighbours_right(run_neighbour(true, cuemu::Order::Reverse)));
  CHECK(all_neighbours_right(run_neighbour(true, cuemu::Order::Random)));
  // Without the barrier, forward order happens to work (each left neighbour ran first), which
  // is why the suite also runs in reverse: there the reads see fresh 0xFF shared memory (NaN).
  CHECK(all_neighbours_right(run_neighbour(false, cuemu::Order::Forward)));
  CHECK_FALSE(all_neighbours_right(run_neighbour(false, cuemu::Order::Reverse)));
}

TEST_CASE("a thread that returns before a barrier is reported as divergence", "[cuemu][quick]") {
  cuemu::reset_error();
  float* d = nullptr;
  cudaMalloc(reinterpret_cast<void**>(&d), 64 * sizeof(float));
  cuemu::launch("early_return_kernel", early_return_kernel, dim3(2), dim3(64), 0, nullptr, d);
  CHECK(cudaGetLastError() == cudaErrorLaunchFailure);
  const std::string what = cuemu::last_failure();
  CHECK_THAT(what, Contains("early_return_kernel") && Contains("block (") && Contains("barrier divergence") &&
                       Contains("thread (5,0,0) has exited") && Contains("test_cuemu.cu:"));
  // The error is sticky: later launches do nothing and report it, as a GPU context would.
  CHECK(cudaDeviceSynchronize() == cudaErrorLaunchFailure);
  cuemu::reset_error();
  cuemu::launch("split_barrier_kernel", split_barrier_kernel, dim3(1), dim3(64), 0, nullptr, d);
  CHECK(cudaGetLastError() == cudaErrorLaunchFailure);
  CHECK_THAT(cuemu::last_failure(), Contains("barrier divergence"));
  cuemu::reset_error();
  cudaFree(d);
}

TEST_CASE("warp shuffles follow PTX semantics for widths 32, 16 and 8", "[cuemu][quick]") {
  cuemu::reset_error();
  for (int width : {32, 16, 8}) {
    CAPTURE(width);
    for (int param : {0, 1, 3, 5}) {
      CAPTURE(param);
      std::vector<int> idx = run_shuffle(Idx, param, width), up = run_shuffle(Up, param, width),
                       down = run_shuffle(Down, param, width), x = run_shuffle(Xor, param, width);
      for (int lane = 0; lane < 32; ++lane) {
        CAPTURE(lane);
        const int base = lane / width * width;
        // idx: the source lane is taken modulo width inside the lane's segment.
        CHECK(idx[lane] == 100 + base + param % width);
        // up/down: out-of-segment sources return the lane's own value.
        CHECK(up[lane] == 100 + (lane - param >= base ? lane - param : lane));
        CHECK(down[lane] == 100 + (lane + param < base + width ? lane + param : lane));
        // xor: a source in a later segment returns the own value; earlier ones are readable.
        const int src = lane ^ param;
        CHECK(x[lane] == 100 + (src >= base + width ? lane : src));
      }
    }
  }
}

TEST_CASE("ballot, all and any vote across the warp", "[cuemu][quick]") {
  cuemu::reset_error();
  unsigned* d = nullptr;
  cudaMalloc(reinterpret_cast<void**>(&d), 34 * sizeof(unsigned));
  cuemu::launch("ballot_kernel", ballot_kernel, 1, 32, 0, nullptr, d);
  std::vector<unsigned> h(34);
  cudaMemcpy(h.data(), d, 34 * sizeof(unsigned), cudaMemcpyDeviceToHost);
  unsigned expected = 0;
  for (int l = 0; l < 32; l += 3) expected |= 1u << l;
  CHECK(h[0] == expected);
  CHECK(h[31] == expected);
  CHECK(h[32] == 1u);
  CHECK(h[33] == 1u);
  cudaFree(d);
}

TEST_CASE("lanes missing from a shuffle's mask are reported", "[cuemu][quick]") {
  cuemu::reset_error();
  int* d = nullptr;
  cudaMalloc(reinterpret_cast<void**>(&d), 32 * sizeof(int));
  cuemu::launch("half_warp_shuffle_kernel", half_warp_shuffle_kernel, 1, 32, 0, nullptr, d);
  CHECK(cudaGetLastError() == cudaErrorLaunchFailure);
  CHECK_THAT(cuemu::last_failure(), Contains("half_warp_shuffle_kernel") && Contains("which exited"));
  cuemu::reset_error();
  cudaFree(d);
}

TEST_CASE("fresh device memory reads as NaN and copies are range-checked", "[cuemu][quick]") {
  cuemu::reset_error();
  float* d = nullptr;
  cudaMalloc(reinterpret_cast<void**>(&d), 4 * sizeof(float));
  float h[5];
  REQUIRE(cudaMemcpy(h, d, 4 * sizeof(float), cudaMemcpyDeviceToHost) == cudaSuccess);
  CHECK(std::isnan(h[0]));
  CHECK(cudaMemcpy(h, d, 5 * sizeof(float), cudaMemcpyDeviceToHost) == cudaErrorInvalidValue);
  (void)cudaGetLastError();
  cudaFree(d);
}

namespace {
__global__ void touch_kernel(float* d) {
  if (threadIdx.x == 0 && blockIdx.x == 0 && blockIdx.y == 0) d[0] = 1.0f;
}

// Lanes 0-15 and 16-31 meet at two different __syncwarp call sites: legal since sm_70.
__global__ void split_syncwarp_kernel(float* d) {
  NL_DYN_SHARED(float, s);
  const int lane = threadIdx.x;
  s[lane] = float(lane);
  if (lane < 16)
    __syncwarp();
  else
    __syncwarp();
  d[lane] = s[31 - lane];
}

// Reads one element past the end of a 35-float buffer (the classic `i <= n` tail).
[[maybe_unused]] __global__ void tail_overrun_kernel(const float* x, float* y, int n) {
  for (int i = threadIdx.x; i <= n; i += blockDim.x) y[0] += x[i];
}

// Runs f in a child process and returns its stderr and whether it exited 0.
template <typename F>
std::pair<std::string, bool> in_child(F f) {
  int pipefd[2];
  REQUIRE(pipe(pipefd) == 0);
  pid_t pid = fork();
  if (pid == 0) {
    dup2(pipefd[1], STDERR_FILENO);
    f();
    _exit(0);
  }
  close(pipefd[1]);
  std::string report;
  char buf[4096];
  ssize_t n;
  while ((n = read(pipefd[0], buf, sizeof buf)) > 0) report.append(buf, size_t(n));
  close(pipefd[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  return {report, WIFEXITED(status) && WEXITSTATUS(status) == 0};
}
}  // namespace

TEST_CASE("launches beyond the limits of sm_80/sm_90 are refused with the reason", "[cuemu][quick]") {
  cuemu::reset_error();
  float* d = nullptr;
  REQUIRE(cudaMalloc(reinterpret_cast<void**>(&d), sizeof(float)) == cudaSuccess);
  auto refused = [&](dim3 grid, dim3 block, size_t shmem, const char* why) {
    cuemu::launch("touch_kernel", touch_kernel, grid, block, shmem, nullptr, d);
    CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration);
    CHECK_THAT(cuemu::last_failure(), Contains(why));
    cuemu::reset_error();
  };
  refused(dim3(1, 70000), dim3(32), 0, "65535");
  refused(dim3(1, 1, 65536), dim3(32), 0, "65535");
  refused(dim3(1), dim3(2048), 0, "1024 threads");
  refused(dim3(1), dim3(1, 1, 65), 0, "1024 threads");
  refused(dim3(1), dim3(32), 64 * 1024, "48 KiB");
  refused(dim3(1), dim3(32), 300 * 1024, "48 KiB");
  // With the opt-in attribute: up to what was asked for, never more than 227 KiB.
  CHECK(cudaFuncSetAttribute(touch_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 300 * 1024) ==
        cudaErrorInvalidValue);
  REQUIRE(cudaFuncSetAttribute(touch_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 100 * 1024) ==
          cudaSuccess);
  cuemu::launch("touch_kernel", touch_kernel, dim3(1), dim3(32), 100 * 1024, nullptr, d);
  CHECK(cudaGetLastError() == cudaSuccess);
  refused(dim3(1), dim3(32), 101 * 1024, "opt-in of 102400 bytes");
  // The largest legal grid in y runs.
  cuemu::launch("touch_kernel", touch_kernel, dim3(1, 65535), dim3(1), 0, nullptr, d);
  CHECK(cudaGetLastError() == cudaSuccess);
  cudaFree(d);
}

TEST_CASE("__syncwarp may be reached from different call sites", "[cuemu][quick]") {
  cuemu::reset_error();
  float* d = nullptr;
  REQUIRE(cudaMalloc(reinterpret_cast<void**>(&d), 32 * sizeof(float)) == cudaSuccess);
  for (auto order : {cuemu::Order::Forward, cuemu::Order::Reverse}) {
    cuemu::set_order(order);
    cuemu::launch("split_syncwarp_kernel", split_syncwarp_kernel, 1, 32, 32 * sizeof(float), nullptr, d);
    REQUIRE(cudaGetLastError() == cudaSuccess);
    std::vector<float> h(32);
    cudaMemcpy(h.data(), d, sizeof(float) * 32, cudaMemcpyDeviceToHost);
    for (int l = 0; l < 32; ++l) CHECK(h[l] == float(31 - l));
  }
  cuemu::set_order(cuemu::Order::Forward);
  cudaFree(d);
}

TEST_CASE("device allocations are exact: a read one past the end is caught by the ASan build",
          "[cuemu][asan][quick]") {
#if defined(__SANITIZE_ADDRESS__)
  auto [report, ok] = in_child([] {
    float *x = nullptr, *y = nullptr;
    cudaMalloc(reinterpret_cast<void**>(&x), 35 * sizeof(float));
    cudaMalloc(reinterpret_cast<void**>(&y), sizeof(float));
    cuemu::launch("tail_overrun_kernel", tail_overrun_kernel, 1, 32, 0, nullptr, x, y, 35);
  });
  CHECK_FALSE(ok);
  CHECK_THAT(report, Contains("heap-buffer-overflow") && Contains("tail_overrun_kernel"));
#else
  WARN("not an AddressSanitizer build: the ASan CI stage runs this test");
#endif
}

TEST_CASE("an out-of-bounds shared-memory write is caught by the ASan build", "[cuemu][asan][quick]") {
#if defined(__SANITIZE_ADDRESS__)
  auto [report, ok] = in_child([] {
    float* d = nullptr;
    cudaMalloc(reinterpret_cast<void**>(&d), 32 * sizeof(float));
    cuemu::launch("shared_overflow_kernel", shared_overflow_kernel, 1, 32, 32 * sizeof(float), nullptr, d);
  });
  CHECK_FALSE(ok);
  CHECK_THAT(report, Contains("AddressSanitizer") && Contains("heap-buffer-overflow"));
#else
  WARN("not an AddressSanitizer build: the ASan CI stage runs this test");
#endif
}

// The caching allocator is stream-ordered (kernels/cuda/memory.cu): a freed block is reused only
// on the stream it was allocated on; a block another stream used (record_stream) waits for an
// event on that stream before it can be reused at all.
TEST_CASE("the CUDA caching allocator reuses a block only on its own stream", "[cuemu][memory][quick]") {
  nl::Allocator& a = nl::get_allocator(nl::Device::cuda());
  cudaStream_t s1 = nullptr, s2 = nullptr;
  REQUIRE(cudaStreamCreate(&s1) == cudaSuccess);
  REQUIRE(cudaStreamCreate(&s2) == cudaSuccess);
  const size_t bytes = 123457;  // a size no other test leaves in the cache
  nl::cuda::set_stream(s1);
  void* p = a.allocate(bytes);
  a.deallocate(p, bytes);
  nl::cuda::set_stream(s2);
  void* q = a.allocate(bytes);
  CHECK(q != p);  // s1's block is not handed to s2
  nl::cuda::set_stream(s1);
  void* r = a.allocate(bytes);
  CHECK(r == p);  // but is to s1 again
  nl::cuda::record_stream(r, s2);
  a.deallocate(r, bytes);
  CHECK(nl::cuda::pending_blocks() == 1);  // parked behind an event on s2
  // cuemu runs everything eagerly, so the event has completed: the next allocation on s1 polls
  // it and gets the block back.
  void* t = a.allocate(bytes);
  CHECK(t == p);
  CHECK(nl::cuda::pending_blocks() == 0);
  a.deallocate(t, bytes);
  nl::cuda::set_stream(s2);
  a.deallocate(q, bytes);
  nl::cuda::set_stream(nullptr);
  cudaStreamDestroy(s1);
  cudaStreamDestroy(s2);
}

namespace {
namespace wmma = nvcuda::wmma;
// One warp per 16 x 16 output: D = A (16 x 8) * B (8 x 16) + C, A and B read in the layout
// asked for (a_col / b_col: column-major), C and D row-major. round: __float_to_tf32 on A and B.
// skip_lane >= 0: that lane returns before the mma (divergence).
__global__ void mma_kernel(const float* a, bool a_col, const float* b, bool b_col, const float* c, float* d,
                           bool round, int skip_lane) {
  if (int(threadIdx.x) == skip_lane) return;
  wmma::fragment<wmma::accumulator, 16, 16, 8, float> cf;
  wmma::load_matrix_sync(cf, c, 16, wmma::mem_row_major);
  auto finish = [&](auto& af, auto& bf) {
    if (round) {
      for (int i = 0; i < af.num_elements; ++i) af.x[i] = wmma::__float_to_tf32(af.x[i]);
      for (int i = 0; i < bf.num_elements; ++i) bf.x[i] = wmma::__float_to_tf32(bf.x[i]);
    }
    wmma::mma_sync(cf, af, bf, cf);
    wmma::store_matrix_sync(d, cf, 16, wmma::mem_row_major);
  };
  // Column-major A (16 x 8) has a leading dimension of 16, row-major 8; B likewise 8 and 16.
  wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major> ar;
  wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::col_major> ac;
  wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major> br;
  wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::col_major> bc;
  if (a_col)
    wmma::load_matrix_sync(ac, a, 16);
  else
    wmma::load_matrix_sync(ar, a, 8);
  if (b_col)
    wmma::load_matrix_sync(bc, b, 8);
  else
    wmma::load_matrix_sync(br, b, 16);
  if (a_col && b_col)
    finish(ac, bc);
  else if (a_col)
    finish(ac, br);
  else if (b_col)
    finish(ar, bc);
  else
    finish(ar, br);
}

struct MmaRun {
  std::vector<float> d;
  cudaError_t err;
  std::string failure;
};
// a, b, c given row-major; stored in the layout the kernel reads.
MmaRun run_mma(const std::vector<float>& a, bool a_col, const std::vector<float>& b, bool b_col,
               const std::vector<float>& c, bool round, int skip_lane = -1, size_t misalign = 0) {
  std::vector<float> as(128), bs(128);
  for (int r = 0; r < 16; ++r)
    for (int k = 0; k < 8; ++k) as[a_col ? k * 16 + r : r * 8 + k] = a[r * 8 + k];
  for (int k = 0; k < 8; ++k)
    for (int n = 0; n < 16; ++n) bs[b_col ? n * 8 + k : k * 16 + n] = b[k * 16 + n];
  float *da, *db, *dc, *dd;
  REQUIRE(cudaMalloc(reinterpret_cast<void**>(&da), 132 * sizeof(float)) == cudaSuccess);
  REQUIRE(cudaMalloc(reinterpret_cast<void**>(&db), 128 * sizeof(float)) == cudaSuccess);
  REQUIRE(cudaMalloc(reinterpret_cast<void**>(&dc), 256 * sizeof(float)) == cudaSuccess);
  REQUIRE(cudaMalloc(reinterpret_cast<void**>(&dd), 256 * sizeof(float)) == cudaSuccess);
  cudaMemcpy(da + misalign, as.data(), 128 * sizeof(float), cudaMemcpyHostToDevice);
  cudaMemcpy(db, bs.data(), 128 * sizeof(float), cudaMemcpyHostToDevice);
  cudaMemcpy(dc, c.data(), 256 * sizeof(float), cudaMemcpyHostToDevice);
  cuemu::launch("mma_kernel", mma_kernel, 1, 32, 0, nullptr, static_cast<const float*>(da + misalign), a_col,
                static_cast<const float*>(db), b_col, static_cast<const float*>(dc), dd, round, skip_lane);
  MmaRun out{std::vector<float>(256), cudaGetLastError(), cuemu::last_failure()};
  if (out.err == cudaSuccess) cudaMemcpy(out.d.data(), dd, 256 * sizeof(float), cudaMemcpyDeviceToHost);
  cuemu::reset_error();
  for (float* p : {da, db, dc, dd}) cudaFree(p);
  return out;
}
}  // namespace

TEST_CASE("wmma m16n16k8 TF32: every layout multiplies exactly, inputs are read as TF32", "[cuemu][quick]") {
  // Small integers: every product and sum is exact, so any misplaced element shows.
  std::vector<float> a(128), b(128), c(256), want(256);
  for (int i = 0; i < 128; ++i) a[i] = float(i % 7 - 3), b[i] = float(i % 5 - 2);
  for (int i = 0; i < 256; ++i) c[i] = float(i % 11);
  for (int r = 0; r < 16; ++r)
    for (int n = 0; n < 16; ++n) {
      float s = c[r * 16 + n];
      for (int k = 0; k < 8; ++k) s += a[r * 8 + k] * b[k * 16 + n];
      want[r * 16 + n] = s;
    }
  for (auto order : {cuemu::Order::Forward, cuemu::Order::Reverse, cuemu::Order::Random}) {
    cuemu::set_order(order, 5);
    for (bool a_col : {false, true})
      for (bool b_col : {false, true}) {
        CAPTURE(a_col, b_col);
        MmaRun r = run_mma(a, a_col, b, b_col, c, false);
        REQUIRE(r.err == cudaSuccess);
        CHECK(r.d == want);
      }
  }
  cuemu::set_order(cuemu::Order::Forward);

  // 1 + 3 * 2^-12 has mantissa bits below TF32's 10: the tensor core ignores them (1), and
  // __float_to_tf32 rounds to nearest (1 + 2^-10); FP32 would keep them.
  const float x = 1.0f + 3.0f / 4096.0f;
  std::vector<float> ones_a(128, 1.0f), xs_b(128, x), zero(256, 0.0f);
  MmaRun truncated = run_mma(ones_a, false, xs_b, false, zero, false);
  MmaRun rounded = run_mma(ones_a, false, xs_b, false, zero, true);
  CHECK(truncated.d[0] == 8.0f);
  CHECK(rounded.d[0] == 8.0f * (1.0f + 1.0f / 1024.0f));
  CHECK(wmma::__float_to_tf32(-x) == -(1.0f + 1.0f / 1024.0f));
  CHECK(std::isnan(wmma::__float_to_tf32(std::nanf(""))));
}

TEST_CASE("wmma misuse fails the launch: a misaligned matrix, a lane that skips the mma", "[cuemu][quick]") {
  std::vector<float> a(128, 1.0f), b(128, 1.0f), c(256, 0.0f);
  MmaRun mis = run_mma(a, false, b, false, c, false, -1, 1);
  CHECK(mis.err == cudaErrorLaunchFailure);
  CHECK_THAT(mis.failure, Contains("256-bit aligned"));
  MmaRun skip = run_mma(a, false, b, false, c, false, 7);
  CHECK(skip.err == cudaErrorLaunchFailure);
  CHECK_THAT(skip.failure, Contains("exited"));
}

// The CUDA norm launchers size their grids from the device (kernels/cuda/norm.cu: never fewer
// GroupNorm blocks than SMs), and cuemu presents a device profile: the H100's 132 SMs by default,
// the A100's 108 in the "[cuda forward, A100 profile]" registration. 136 groups of 2 KiB under a
// 64 KiB L2 budget put the grid on that floor, whatever the profile.
TEST_CASE("the GroupNorm grid's floor is the device's SM count, from the device profile",
          "[cuemu][norm][quick]") {
  cudaDeviceProp prop{};
  REQUIRE(cudaGetDeviceProperties(&prop, 0) == cudaSuccess);
  INFO(prop.name);
  setenv("NORMLAB_CUDA_L2_BUDGET", "65536", 1);
  std::vector<unsigned> grids;
  cuemu::set_launch_observer([&](const char* kernel, dim3 grid, dim3) {
    if (std::string(kernel).rfind("group_norm_fwd_kernel", 0) == 0) grids.push_back(grid.x);
  });
  const nl::Device cuda = nl::Device::cuda();
  nl::Tensor x = nl::Tensor::full({136, 8, 8, 8}, 0.5f, cuda), gamma = nl::Tensor::full({8}, 1.0f, cuda),
             beta = nl::Tensor::full({8}, 0.0f, cuda);
  (void)nl::group_norm(x, 1, gamma, beta, 1e-5f).to(nl::Device::cpu());
  cuemu::set_launch_observer({});
  unsetenv("NORMLAB_CUDA_L2_BUDGET");
  REQUIRE(grids.size() == 1);
  CHECK(grids[0] == unsigned(prop.multiProcessorCount));
  CHECK(std::string(prop.name).find(std::to_string(prop.multiProcessorCount) + " SMs") != std::string::npos);
}

// The norm kernels add partial sums across blocks in a fixed order (splits, items, samples),
// whichever block finishes last: BatchNorm and GroupNorm, forward and backward, give the same bits
// in every thread and block order and at every L2 budget (BatchNorm backward's D, the sums items
// ahead of the first dx item; GroupNorm's grid cap). cuemu runs a launch's blocks one after
// another, so this holds the kernels to orders and plans; arrival order on a GPU is the ticket
// order here.
TEST_CASE("the norm kernels' results are bitwise the same in every order and L2 budget",
          "[cuemu][norm][quick]") {
  const nl::Device cuda = nl::Device::cuda();
  auto run = [&](bool batch) {
    nl::Generator gen(11);
    nl::Tensor x = nl::Tensor::randn({6, 12, 20, 20}, gen).to(cuda).set_requires_grad(true);
    nl::Tensor gamma = nl::Tensor::uniform({12}, 0.5f, 1.5f, gen).to(cuda).set_requires_grad(true);
    nl::Tensor beta = nl::Tensor::randn({12}, gen).to(cuda).set_requires_grad(true);
    nl::Tensor dy = nl::Tensor::randn({6, 12, 20, 20}, gen).to(cuda);
    nl::NormEpilogue e;
    e.relu = true;
    nl::Tensor y = batch ? nl::batch_norm(x, gamma, beta, nl::Tensor(), nl::Tensor(), true, 0.1f, 1e-5f, e)
                         : nl::group_norm(x, 3, gamma, beta, 1e-5f, e);
    y.backward(dy);
    std::vector<float> all;
    for (const nl::Tensor& t : {y, x.grad(), gamma.grad(), beta.grad()}) {
      const std::vector<float> v = t.to(nl::Device::cpu()).to_vector();
      all.insert(all.end(), v.begin(), v.end());
    }
    return all;
  };
  const cuemu::Order before = cuemu::order();
  for (bool batch : {true, false}) {
    INFO((batch ? "batch_norm" : "group_norm"));
    const std::vector<float> want = run(batch);
    for (auto [order, budget] :
         {std::pair{cuemu::Order::Reverse, ""}, std::pair{cuemu::Order::Random, ""},
          std::pair{cuemu::Order::Forward, "65536"}, std::pair{cuemu::Order::Random, "65536"}}) {
      INFO("order " << int(order) << ", L2 budget '" << budget << "'");
      cuemu::set_order(order, 17);
      if (*budget) setenv("NORMLAB_CUDA_L2_BUDGET", budget, 1);
      const std::vector<float> got = run(batch);
      unsetenv("NORMLAB_CUDA_L2_BUDGET");
      cuemu::set_order(before, 0);
      REQUIRE(got.size() == want.size());
      CHECK(std::memcmp(got.data(), want.data(), want.size() * sizeof(float)) == 0);
    }
  }
}

TEST_CASE("cuemu's device profiles, and an unknown one refused by name", "[cuemu][quick]") {
  CHECK(cuemu::device_profile("h100").multiProcessorCount == 132);
  CHECK(cuemu::device_profile("a100").multiProcessorCount == 108);
  CHECK(cuemu::device_profile("a100").l2CacheSize == 40 << 20);
  CHECK_THROWS_WITH(cuemu::device_profile("v100"), Contains("'v100'") && Contains("h100, a100, l4, b200"));
}

namespace {
// Device buffers for the primitive tests: copies in, runs, copies out, frees.
template <typename T>
T* to_device(const std::vector<T>& v) {
  T* p = nullptr;
  REQUIRE(cudaMalloc(reinterpret_cast<void**>(&p), v.size() * sizeof(T)) == cudaSuccess);
  REQUIRE(cudaMemcpy(p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice) == cudaSuccess);
  return p;
}
template <typename T>
std::vector<T> from_device(const T* p, size_t n) {
  std::vector<T> v(n);
  REQUIRE(cudaMemcpy(v.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost) == cudaSuccess);
  return v;
}
std::vector<float> run_mma_m16n8k8(const std::vector<float>& a, const std::vector<float>& b,
                                   const std::vector<float>& c, bool round) {
  float *da = to_device(a), *db = to_device(b), *dc = to_device(c), *dd = to_device(std::vector<float>(128));
  cuemu::launch("mma_m16n8k8_kernel", nl::cuda::test::mma_m16n8k8_kernel, 1, 32, 0, nullptr,
                static_cast<const float*>(da), static_cast<const float*>(db), static_cast<const float*>(dc),
                dd, round);
  REQUIRE(cudaGetLastError() == cudaSuccess);
  std::vector<float> d = from_device(dd, 128);
  for (float* p : {da, db, dc, dd}) cudaFree(p);
  return d;
}
}  // namespace

TEST_CASE("mma.sync m16n8k8 TF32 follows the PTX fragment layout in every thread order", "[cuemu][quick]") {
  // Small integers: exact products and sums, so any element in the wrong place shows.
  std::vector<float> a(128), b(64), c(128), want(128);
  for (int i = 0; i < 128; ++i) a[i] = float(i % 7 - 3), c[i] = float(i % 11);
  for (int i = 0; i < 64; ++i) b[i] = float(i % 5 - 2);
  for (int r = 0; r < 16; ++r)
    for (int n = 0; n < 8; ++n) {
      float s = c[r * 8 + n];
      for (int k = 0; k < 8; ++k) s += a[r * 8 + k] * b[k * 8 + n];
      want[r * 8 + n] = s;
    }
  for (auto order : {cuemu::Order::Forward, cuemu::Order::Reverse, cuemu::Order::Random}) {
    cuemu::set_order(order, 9);
    CHECK(run_mma_m16n8k8(a, b, c, false) == want);
  }
  cuemu::set_order(cuemu::Order::Forward);
  // TF32 inputs: the low 13 mantissa bits are not read; to_tf32 rounds to nearest.
  const float x = 1.0f + 3.0f / 4096.0f;
  std::vector<float> ones(128, 1.0f), xs(64, x), zero(128, 0.0f);
  CHECK(run_mma_m16n8k8(ones, xs, zero, false)[0] == 8.0f);
  CHECK(run_mma_m16n8k8(ones, xs, zero, true)[0] == 8.0f * (1.0f + 1.0f / 1024.0f));
}

TEST_CASE("ldmatrix.x4 hands lane L word L % 4 of row L / 4 of each of the four matrices", "[cuemu][quick]") {
  std::vector<uint32_t> src(128);
  for (uint32_t i = 0; i < 128; ++i) src[i] = 1000u + i;
  uint32_t *ds = to_device(src), *dout = to_device(std::vector<uint32_t>(128));
  for (auto order : {cuemu::Order::Forward, cuemu::Order::Reverse, cuemu::Order::Random}) {
    cuemu::set_order(order, 3);
    cuemu::launch("ldmatrix_kernel", nl::cuda::test::ldmatrix_kernel, 1, 32, 128 * sizeof(uint32_t), nullptr,
                  static_cast<const uint32_t*>(ds), dout);
    REQUIRE(cudaGetLastError() == cudaSuccess);
    const std::vector<uint32_t> out = from_device(dout, 128);
    for (uint32_t lane = 0; lane < 32; ++lane)
      for (uint32_t j = 0; j < 4; ++j) {
        CAPTURE(lane, j);
        CHECK(out[lane * 4 + j] == src[j * 32 + (lane / 4) * 4 + lane % 4]);
      }
  }
  cuemu::set_order(cuemu::Order::Forward);
  cudaFree(ds);
  cudaFree(dout);
}

TEST_CASE("a cp.async pipeline is right with its wait_group and visibly wrong without it", "[cuemu][quick]") {
  const int tiles = 5;
  std::vector<float> in(tiles * 128);
  for (size_t i = 0; i < in.size(); ++i) in[i] = float(i % 13);
  std::vector<float> want(tiles * 32);
  for (int k = 0; k < tiles; ++k)
    for (int lane = 0; lane < 32; ++lane) {
      const float* q = in.data() + k * 128 + ((lane + 1) % 32) * 4;
      want[k * 32 + lane] = q[0] + q[1] + q[2] + q[3];
    }
  float *din = to_device(in), *dout = to_device(std::vector<float>(tiles * 32));
  auto run = [&](bool wait) {
    cuemu::launch("cp_async_pipeline_kernel", nl::cuda::test::cp_async_pipeline_kernel, 1, 32,
                  2 * 128 * sizeof(float), nullptr, static_cast<const float*>(din), dout, tiles, wait, true);
    REQUIRE(cudaGetLastError() == cudaSuccess);
    return from_device(dout, tiles * 32);
  };
  for (auto order : {cuemu::Order::Forward, cuemu::Order::Reverse, cuemu::Order::Random}) {
    cuemu::set_order(order, 4);
    CHECK(run(true) == want);
  }
  cuemu::set_order(cuemu::Order::Forward);
  // Without the wait the copies have not landed when the tile is read (cuemu completes a copy at
  // the latest moment CUDA allows): shared memory still holds its uninitialised NaNs.
  const std::vector<float> early = run(false);
  CHECK(std::isnan(early[0]));
  cudaFree(din);
  cudaFree(dout);
}

// A failed launch abandons its CUDA threads mid-kernel; their fiber stacks are reused by the next
// launch. Under ASan the abandoned frames' redzones stayed poisoned, and the next kernel's frames
// were reported as stack-buffer-overflows (cuemu unpoisons a stack when a fiber starts).
TEST_CASE("a launch after a failed one runs on clean fiber stacks", "[cuemu][asan][quick]") {
  // Lane 7 skips the mma: the launch fails with the other lanes waiting inside it, their frames
  // still on their stacks.
  std::vector<float> a(128, 1.0f), b(128, 1.0f), c(256, 0.0f);
  CHECK(run_mma(a, false, b, false, c, false, 7).err == cudaErrorLaunchFailure);
  const nl::Device cuda = nl::Device::cuda();
  nl::Tensor x = nl::Tensor::full({4, 8, 8, 8}, 0.5f, cuda), gamma = nl::Tensor::full({8}, 1.0f, cuda),
             beta = nl::Tensor::full({8}, 0.0f, cuda);
  const nl::Tensor y = nl::group_norm(x, 2, gamma, beta, 1e-5f).to(nl::Device::cpu());
  CHECK(y.data_f32()[0] == 0.0f);  // a constant input normalises to 0
}
