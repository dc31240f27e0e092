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
