// The emulation layer's own tests: barriers, divergence, warp shuffles with PTX semantics,
// thread orders and the AddressSanitizer build. Compiled by g++ against cuemu (EMULATE builds).
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "kernels/cuda/cuda_common.h"

using Catch::Matchers::Contains;

namespace {

// Each thread publishes its id, then reads its left neighbour's (thread 0 its own). `with_barrier` decides whether
// the publication is fenced by __syncthreads.
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

TEST_CASE("a missing __syncthreads is caught under reverse thread order", "[cuemu]") {
  cuemu::reset_error();
  CHECK(all_neighbours_right(run_neighbour(true, cuemu::Order::Forward)));
  CHECK(all_neighbours_right(run_neighbour(true, cuemu::Order::Reverse)));
  CHECK(all_neighbours_right(run_neighbour(true, cuemu::Order::Random)));
  // Without the barrier, forward order happens to work (each left neighbour ran first), which
  // is why the suite also runs in reverse: there the reads see fresh 0xFF shared memory (NaN).
  CHECK(all_neighbours_right(run_neighbour(false, cuemu::Order::Forward)));
  CHECK_FALSE(all_neighbours_right(run_neighbour(false, cuemu::Order::Reverse)));
}

TEST_CASE("a thread that returns before a barrier is reported as divergence", "[cuemu]") {
  cuemu::reset_error();
  float* d = nullptr;
  cudaMalloc(reinterpret_cast<void**>(&d), 64 * sizeof(float));
  cuemu::launch("early_return_kernel", early_return_kernel, dim3(2), dim3(64), 0, nullptr, d);
  CHECK(cudaGetLastError() == cudaErrorLaunchFailure);
  const std::string what = cuemu::last_failure();
  CHECK_THAT(what, Contains("early_return_kernel") && Contains("block (") &&
                       Contains("barrier divergence") && Contains("thread (5,0,0) has exited") &&
                       Contains("test_cuemu.cu:"));
  // The error is sticky: later launches do nothing and report it, as a GPU context would.
  CHECK(cudaDeviceSynchronize() == cudaErrorLaunchFailure);
  cuemu::reset_error();
  cuemu::launch("split_barrier_kernel", split_barrier_kernel, dim3(1), dim3(64), 0, nullptr, d);
  CHECK(cudaGetLastError() == cudaErrorLaunchFailure);
  CHECK_THAT(cuemu::last_failure(), Contains("barrier divergence"));
  cuemu::reset_error();
  cudaFree(d);
}

TEST_CASE("warp shuffles follow PTX semantics for widths 32, 16 and 8", "[cuemu]") {
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

TEST_CASE("ballot, all and any vote across the warp", "[cuemu]") {
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

TEST_CASE("lanes missing from a shuffle's mask are reported", "[cuemu]") {
  cuemu::reset_error();
  int* d = nullptr;
  cudaMalloc(reinterpret_cast<void**>(&d), 32 * sizeof(int));
  cuemu::launch("half_warp_shuffle_kernel", half_warp_shuffle_kernel, 1, 32, 0, nullptr, d);
  CHECK(cudaGetLastError() == cudaErrorLaunchFailure);
  CHECK_THAT(cuemu::last_failure(), Contains("half_warp_shuffle_kernel") && Contains("which exited"));
  cuemu::reset_error();
  cudaFree(d);
}

TEST_CASE("fresh device memory reads as NaN and copies are range-checked", "[cuemu]") {
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
  if (lane < 16) __syncwarp();
  else __syncwarp();
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

TEST_CASE("launches beyond the limits of sm_80/sm_90 are refused with the reason", "[cuemu]") {
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

TEST_CASE("__syncwarp may be reached from different call sites", "[cuemu]") {
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

TEST_CASE("device allocations are exact: a read one past the end is caught by the ASan build", "[cuemu][asan]") {
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

TEST_CASE("an out-of-bounds shared-memory write is caught by the ASan build", "[cuemu][asan]") {
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
TEST_CASE("the CUDA caching allocator reuses a block only on its own stream", "[cuemu][memory]") {
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
