#pragma once
// Shared by every kernels/cuda/*.cu: the CUDA API (the real one under nvcc, cuemu under g++),
// error checks that throw, the launch helper and dynamic shared memory.
#if defined(__CUDACC__)
#include <cuda/atomic>
#include <cuda_runtime.h>
#include <mma.h>
#else
#include "kernels/cuemu/cuemu.h"
#endif

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>

#include "normlab/core/error.h"
#include "normlab/core/storage.h"

namespace nl::cuda {

// Temporary device memory from the caching allocator (never cudaMalloc on the hot path).
class Scratch {
 public:
  explicit Scratch(size_t bytes) : bytes_(bytes), ptr_(get_allocator(Device::cuda()).allocate(bytes)) {}
  ~Scratch() { get_allocator(Device::cuda()).deallocate(ptr_, bytes_); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  float* f32() const { return static_cast<float*>(ptr_); }

 private:
  size_t bytes_;
  void* ptr_;
};

// The stream normlab's kernels, copies and allocations use on this thread: the legacy default
// stream unless set_stream chose another. The caching allocator is stream-ordered (memory.cu):
// a block is reused only on the stream it was allocated on, and a block that kernels on another
// stream also read or write must be announced with record_stream before it is freed.
cudaStream_t stream();
void set_stream(cudaStream_t s);
void record_stream(void* ptr, cudaStream_t s);
size_t pending_blocks();  // freed blocks still waiting for another stream (tests)

[[noreturn]] void throw_cuda_error(cudaError_t e, const char* expr, const char* file, int line);

// What the launchers size their grids by: device 0's cudaGetDeviceProperties, read once when the
// backend registers (memory.cu). Under cuemu these are its device profile's (H100 unless
// NORMLAB_CUEMU_DEVICE names another), so an emulated launch takes the decisions of that GPU.
struct DeviceLimits {
  int64_t sms = 132;
  double l2_bytes = 50.0 * (1 << 20);
  size_t smem_per_block = 48 << 10;
  size_t smem_optin = 227 << 10;
};
const DeviceLimits& device_limits();

// Class indices checked on the device (the loss's targets): a kernel records the first bad one as
// (index << 32 | uint32 value) with atomicMin in the returned device word (UINT64_MAX: none), and
// the next synchronisation with the host (copy_bytes to the host) throws "<op>: target[i] = v is
// not a class index in [0, classes)", then clears the record. No host round trip per launch and
// no allocation per launch.
unsigned long long* class_index_check_slot(const char* op, int64_t classes);
void throw_deferred_check_failures();

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Blocks for a grid-stride loop over n elements: enough to cover n, capped (the loop strides
// over the rest), at least one.
inline unsigned grid_for(int64_t n, int threads = 256, int64_t max_blocks = 4096) {
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(ceil_div(n, threads), max_blocks)));
}

// Vector loads and stores (float4, uchar4): one instruction per thread (LDG.128, STG.128). The
// cuemu profiler counts them as such; the pointer must be aligned to sizeof(V).
//
// load_stream / store_stream: the same for data used once (a norm's output and mask, the residual
// it adds, a gradient it writes): evict-first in L2 (__ldcs, __stcs), so streaming them does not
// push out the tensor a second pass re-reads (docs/kernels.md, "L2-aware order").
#if defined(__CUDACC__)
template <typename V>
__device__ __forceinline__ V load_vec(const V* p) {
  return *p;
}
template <typename V>
__device__ __forceinline__ void store_vec(V* p, V v) {
  *p = v;
}
template <typename V>
__device__ __forceinline__ V load_stream(const V* p) {
  return __ldcs(p);
}
template <typename V>
__device__ __forceinline__ void store_stream(V* p, V v) {
  __stcs(p, v);
}
#else
template <typename V>
CUEMU_VECTOR_FN V load_stream(const V* p) {
  CUEMU_VECTOR_ACCESS(p, sizeof(V), false, true);
  return *p;
}
template <typename V>
CUEMU_VECTOR_FN void store_stream(V* p, V v) {
  CUEMU_VECTOR_ACCESS(p, sizeof(V), true, true);
  *p = v;
}
template <typename V>
CUEMU_VECTOR_FN V load_vec(const V* p) {
  CUEMU_VECTOR_ACCESS(p, sizeof(V), false, false);
  return *p;
}
template <typename V>
CUEMU_VECTOR_FN void store_vec(V* p, V v) {
  CUEMU_VECTOR_ACCESS(p, sizeof(V), true, false);
  *p = v;
}
#endif

// Full unrolling of a loop with a compile-time trip count (fragment arrays stay in registers);
// the host compiler of the emulated build decides for itself.
#if defined(__CUDACC__)
#define NL_UNROLL _Pragma("unroll")
#else
#define NL_UNROLL
#endif

// Warp-level tensor-core and asynchronous-copy instructions, for pipelined GEMM tiles: inline PTX
// under nvcc (sm_80 and later), emulated under cuemu from the PTX ISA's definitions.
//
// mma_m16n8k8_tf32: D = A (16 x 8, row) * B (8 x 8, col) + C with FP32 accumulation
// (mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32). Fragments, g = lane / 4, t = lane % 4:
//   A: a0 (g, t)  a1 (g+8, t)  a2 (g, t+4)  a3 (g+8, t+4)      B: b0 (t, g)  b1 (t+4, g)
//   C, D: c0 (g, 2t)  c1 (g, 2t+1)  c2 (g+8, 2t)  c3 (g+8, 2t+1)
// The inputs are TF32 bit patterns (round with cvt.rna first: to_tf32); the tensor core reads
// their upper 19 bits. Every lane of the warp must take part.
//
// ldmatrix_x4: ldmatrix.sync.aligned.m8n8.x4.shared.b16. Lanes 8j..8j+7 give the shared-memory
// addresses of the 8 rows (16 bytes each, 16-byte aligned) of matrix j; every lane receives, in
// r[j], the 4-byte word (lane % 4) of row (lane / 4) of matrix j: a TF32 A or B fragment straight
// from a shared-memory tile with one instruction per four matrices.
//
// cp_async_16 / cp_async_commit / cp_async_wait<N>: cp.async.cg.shared.global of 16 bytes (both
// addresses 16-byte aligned), then commit_group and wait_group N (all but the newest N groups
// of this thread complete). A copy's data may be read only after its group was waited for and,
// for other threads, after a barrier that follows the wait; cuemu performs each copy at the wait,
// so a read too early sees the old contents, and the race-check build sees the order.
#if !defined(__CUDACC__) && defined(__SANITIZE_THREAD__)
extern "C" void __tsan_read_range(void* addr, unsigned long size);
extern "C" void __tsan_write_range(void* addr, unsigned long size);
#endif
#if defined(__CUDACC__)
__device__ __forceinline__ uint32_t to_tf32(float v) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(v));
  return r;
}
__device__ __forceinline__ void mma_m16n8k8_tf32(float d[4], const uint32_t a[4], const uint32_t b[2],
                                                 const float c[4]) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%10,%11,%12,%13};"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
        "f"(c[3]));
}
__device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], const void* row) {
  const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem) {
  const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(a), "l"(gmem));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N));
}
#else
inline uint32_t to_tf32(float v) {
  const float r = nvcuda::wmma::__float_to_tf32(v);
  uint32_t u;
  std::memcpy(&u, &r, 4);
  return u;
}
// Through the wmma emulation's warp-wide multiply (m16n16k8 = two m16n8k8): this instruction is
// its first 8-column half, the second half's B and C zero.
inline void mma_m16n8k8_tf32(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4],
                             std::source_location loc = std::source_location::current()) {
  float af[4], bf[4] = {0, 0, 0, 0}, cf[8] = {c[0], c[1], c[2], c[3], 0, 0, 0, 0}, df[8];
  std::memcpy(af, a, sizeof af);
  std::memcpy(bf, b, 2 * sizeof(float));
  cuemu::MmaLane me{af, bf, cf, df};
  cuemu::warp_mma(me, loc);
  std::memcpy(d, df, 4 * sizeof(float));
}
inline void ldmatrix_x4(uint32_t r[4], const void* row,
                        std::source_location loc = std::source_location::current()) {
  if (reinterpret_cast<uintptr_t>(row) % 16 != 0)
    cuemu::device_error("ldmatrix: a row address is not 16-byte aligned", loc);
  const unsigned lane = cuemu::current().linear_tid % 32;
  for (unsigned j = 0; j < 4; ++j) {
    const auto* p = reinterpret_cast<const unsigned char*>(
        __shfl_sync(0xffffffffu, reinterpret_cast<uintptr_t>(row), int(8 * j + lane / 4), 32, loc));
    std::memcpy(&r[j], p + 4 * (lane % 4), 4);
  }
}
inline void cp_async_16(void* smem, const void* gmem,
                        std::source_location loc = std::source_location::current()) {
  if (reinterpret_cast<uintptr_t>(smem) % 16 != 0 || reinterpret_cast<uintptr_t>(gmem) % 16 != 0)
    cuemu::device_error("cp.async: an address is not 16-byte aligned", loc);
#if defined(__SANITIZE_THREAD__)
  // The race check sees the copy where a GPU may make it, at the issue: a lane still reading the
  // buffer without a barrier between is a race even though cuemu copies at the wait.
  __tsan_read_range(const_cast<void*>(gmem), 16);
  __tsan_write_range(smem, 16);
#endif
  cuemu::current().async_open.push_back({smem, gmem, 16});
}
inline void cp_async_commit() {
  cuemu::ThreadContext& t = cuemu::current();
  t.async_groups.push_back(std::move(t.async_open));
  t.async_open.clear();
}
template <int N>
void cp_async_wait() {
  cuemu::ThreadContext& t = cuemu::current();
  while (t.async_groups.size() > size_t(N)) {
    for (const cuemu::AsyncCopy& c : t.async_groups.front()) {
      // Through the access helpers, so the profiler and the sanitizers see the copy.
      float4 v = load_vec(static_cast<const float4*>(c.src));
      store_vec(static_cast<float4*>(c.dst), v);
    }
    t.async_groups.erase(t.async_groups.begin());
  }
}
#endif

// Hand-offs between blocks of one launch (a block publishes, a later one consumes), in CUDA's
// memory model: device-scope release by the producer, acquire by the consumer's thread 0, then a
// __syncthreads() to pass what it saw to the rest of its block. Relaxed atomics and plain loads
// would not order the data behind the flag (cuemu's race check then reports it). Only for
// launches whose consumers wait on producers that started earlier (a ticket order, see
// batch_norm_bwd_kernel): blocks that took a ticket are resident, so the wait ends.
#if defined(__CUDACC__)
__device__ __forceinline__ int fetch_add_acq_rel(int* p, int v) {
  return ::cuda::atomic_ref<int, ::cuda::thread_scope_device>(*p).fetch_add(v, ::cuda::memory_order_acq_rel);
}
__device__ __forceinline__ void store_release(int* p, int v) {
  ::cuda::atomic_ref<int, ::cuda::thread_scope_device>(*p).store(v, ::cuda::memory_order_release);
}
__device__ __forceinline__ void wait_acquire(int* p, int v) {
  ::cuda::atomic_ref<int, ::cuda::thread_scope_device> f(*p);
  while (f.load(::cuda::memory_order_acquire) != v) __nanosleep(64);
}
#else
inline int fetch_add_acq_rel(int* p, int v) {
  return std::atomic_ref<int>(*p).fetch_add(v, std::memory_order_acq_rel);
}
inline void store_release(int* p, int v) { std::atomic_ref<int>(*p).store(v, std::memory_order_release); }
// cuemu runs one block at a time, each to its end: what a block waits for was published by a block
// that ran before it, or never will be. The latter would hang a GPU: fail the launch instead.
inline void wait_acquire(int* p, int v, std::source_location loc = std::source_location::current()) {
  if (std::atomic_ref<int>(*p).load(std::memory_order_acquire) != v)
    cuemu::device_error("waits for a flag no earlier block has set: on a GPU this block would spin forever",
                        loc);
}
#endif

}  // namespace nl::cuda

namespace nl::cuda {
// The launch trace (launch_trace_begin/end, memory.cu): off unless this thread started one, so a
// launch pays one thread-local test.
bool tracing();
// Names the op of the launches made in its scope, for the trace (the outer op of nested ones).
class OpLabel {
 public:
  OpLabel(const char* op, double flops, double min_bytes);
  ~OpLabel();
  OpLabel(const OpLabel&) = delete;
  OpLabel& operator=(const OpLabel&) = delete;

 private:
  bool set_ = false;
};
// Around one launch while tracing: events before and after it on its stream, the host's clock.
class LaunchScope {
 public:
  LaunchScope(const char* kernel, dim3 grid, dim3 block, size_t shmem);
  ~LaunchScope();
  LaunchScope(const LaunchScope&) = delete;
  LaunchScope& operator=(const LaunchScope&) = delete;

 private:
  bool on_;
};
}  // namespace nl::cuda

// The op a launcher's launches belong to: its FLOPs and the least DRAM traffic any
// implementation needs (each input read once, each output written once), for the launch trace
// (bench_train_step --profile) and the cuemu profiler's model (bench/gpu_model).
#if defined(CUEMU_PROFILE) && CUEMU_PROFILE
#define NL_MODEL_OP(name, flops, min_bytes)                                         \
  ::cuemu::profile::OpScope nl_model_op_((name), double(flops), double(min_bytes)); \
  ::nl::cuda::OpLabel nl_op_label_((name), double(flops), double(min_bytes))
#else
#define NL_MODEL_OP(name, flops, min_bytes) \
  ::nl::cuda::OpLabel nl_op_label_((name), double(flops), double(min_bytes))
#endif

// After every runtime call: throws nl::Error naming the call, the CUDA error and, under cuemu,
// the failing kernel, block, thread and source line.
#define NL_CUDA_CHECK(expr)                                                                       \
  do {                                                                                            \
    cudaError_t nl_err_ = (expr);                                                                 \
    if (nl_err_ != cudaSuccess) ::nl::cuda::throw_cuda_error(nl_err_, #expr, __FILE__, __LINE__); \
  } while (0)

// Launch + launch check. Host code never spells <<< >>>, so the same launcher compiles under
// nvcc and g++.
#if defined(__CUDACC__)
#define NL_LAUNCH(kernel, grid, block, shmem, ...)                                       \
  do {                                                                                   \
    ::nl::cuda::LaunchScope nl_launch_scope_(#kernel, dim3(grid), dim3(block), (shmem)); \
    kernel<<<(grid), (block), (shmem), ::nl::cuda::stream()>>>(__VA_ARGS__);             \
    NL_CUDA_CHECK(cudaGetLastError());                                                   \
  } while (0)
#define NL_DYN_SHARED(T, name)                                   \
  extern __shared__ __align__(128) unsigned char nl_dyn_smem_[]; \
  T* name = reinterpret_cast<T*>(nl_dyn_smem_)
#else
#define NL_LAUNCH(kernel, grid, block, shmem, ...)                                                 \
  do {                                                                                             \
    ::nl::cuda::LaunchScope nl_launch_scope_(#kernel, dim3(grid), dim3(block), (shmem));           \
    ::cuemu::launch(#kernel, kernel, (grid), (block), (shmem), ::nl::cuda::stream(), __VA_ARGS__); \
    NL_CUDA_CHECK(cudaGetLastError());                                                             \
  } while (0)
#define NL_DYN_SHARED(T, name) T* name = reinterpret_cast<T*>(::cuemu::dynamic_shared())
#endif
