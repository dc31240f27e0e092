#pragma once
// cuemu: runs CUDA C++ kernels on the CPU with CUDA's semantics, so kernels/cuda/*.cu can be
// compiled by g++ and tested without a GPU (see docs/cuda-emulation.md).
//
// Execution: one block at a time on one OS thread; each CUDA thread of the block is a fiber.
// __syncthreads() parks the fiber until every live thread of the block has arrived; warp
// operations park until every lane of the mask has arrived, then the last arrival's scheduler
// pass computes all lanes' results with PTX shfl.sync rules. Barrier divergence, mismatched
// warp operations and deadlocks fail the launch with kernel, block, thread and source line.
// Thread and block order are forward, reverse or seeded random (NORMLAB_CUEMU_ORDER), and
// fresh device memory and dynamic shared memory are filled with 0xFF bytes (NaN as float).
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <source_location>
#include <string>
#include <tuple>
#include <type_traits>

// --- CUDA keywords ------------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __restrict__ __restrict
// Static shared arrays become function statics: blocks run one after another, so one copy per
// kernel is exactly right. Kernels prefer NL_DYN_SHARED, which cuemu also poisons per block.
#define __shared__ static
#define __align__(n) alignas(n)

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
using uint3 = dim3;

// CUDA's vector types (vector_types.h), with the same alignment, so float4 loads keep their
// 16-byte alignment requirement (UBSan reports a misaligned one).
struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(4) uchar4 {
  unsigned char x, y, z, w;
};
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline uchar4 make_uchar4(unsigned char x, unsigned char y, unsigned char z, unsigned char w) {
  return {x, y, z, w};
}

namespace cuemu {

struct ThreadContext {
  dim3 thread_idx, block_idx, block_dim, grid_dim;
  unsigned linear_tid = 0;
};
ThreadContext& current();
void* dynamic_shared();

enum class WarpOpKind { Shfl, ShflUp, ShflDown, ShflXor, Ballot, All, Any, SyncWarp };
uint64_t warp_op(WarpOpKind kind, unsigned mask, uint64_t value, int param, int width,
                 const std::source_location& loc);
void syncthreads(const std::source_location& loc);

template <typename T>
uint64_t to_bits(T v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "shuffles move up to 8 bytes");
  uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}
template <typename T>
T from_bits(uint64_t b) {
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}

}  // namespace cuemu

#define threadIdx (::cuemu::current().thread_idx)
#define blockIdx (::cuemu::current().block_idx)
#define blockDim (::cuemu::current().block_dim)
#define gridDim (::cuemu::current().grid_dim)
inline constexpr int warpSize = 32;

inline void __syncthreads(std::source_location loc = std::source_location::current()) {
  cuemu::syncthreads(loc);
}
inline void __syncwarp(unsigned mask = 0xffffffffu,
                       std::source_location loc = std::source_location::current()) {
  cuemu::warp_op(cuemu::WarpOpKind::SyncWarp, mask, 0, 0, 32, loc);
}
template <typename T>
T __shfl_sync(unsigned mask, T var, int src_lane, int width = 32,
              std::source_location loc = std::source_location::current()) {
  return cuemu::from_bits<T>(cuemu::warp_op(cuemu::WarpOpKind::Shfl, mask, cuemu::to_bits(var), src_lane, width, loc));
}
template <typename T>
T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = 32,
                 std::source_location loc = std::source_location::current()) {
  return cuemu::from_bits<T>(cuemu::warp_op(cuemu::WarpOpKind::ShflUp, mask, cuemu::to_bits(var), int(delta), width, loc));
}
template <typename T>
T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32,
                   std::source_location loc = std::source_location::current()) {
  return cuemu::from_bits<T>(cuemu::warp_op(cuemu::WarpOpKind::ShflDown, mask, cuemu::to_bits(var), int(delta), width, loc));
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = 32,
                  std::source_location loc = std::source_location::current()) {
  return cuemu::from_bits<T>(cuemu::warp_op(cuemu::WarpOpKind::ShflXor, mask, cuemu::to_bits(var), lane_mask, width, loc));
}
inline unsigned __ballot_sync(unsigned mask, int pred,
                              std::source_location loc = std::source_location::current()) {
  return static_cast<unsigned>(cuemu::warp_op(cuemu::WarpOpKind::Ballot, mask, pred != 0, 0, 32, loc));
}
inline int __all_sync(unsigned mask, int pred, std::source_location loc = std::source_location::current()) {
  return static_cast<int>(cuemu::warp_op(cuemu::WarpOpKind::All, mask, pred != 0, 0, 32, loc));
}
inline int __any_sync(unsigned mask, int pred, std::source_location loc = std::source_location::current()) {
  return static_cast<int>(cuemu::warp_op(cuemu::WarpOpKind::Any, mask, pred != 0, 0, 32, loc));
}

// Atomics: relaxed, as CUDA's atomicAdd & co. are: a read-modify-write is indivisible but orders
// no other memory access, so the race-check build does not see a happens-before edge that CUDA
// would not give (fibers switch only at barriers and warp operations, so nothing interleaves).
template <typename T>
T atomicAdd(T* addr, T v) {
  return std::atomic_ref<T>(*addr).fetch_add(v, std::memory_order_relaxed);
}
template <typename T>
T atomicExch(T* addr, T v) {
  return std::atomic_ref<T>(*addr).exchange(v, std::memory_order_relaxed);
}
inline int atomicMax(int* addr, int v) {
  std::atomic_ref<int> a(*addr);
  int old = a.load(std::memory_order_relaxed);
  while (v > old && !a.compare_exchange_weak(old, v, std::memory_order_relaxed)) {
  }
  return old;
}
inline unsigned long long atomicMin(unsigned long long* addr, unsigned long long v) {
  std::atomic_ref<unsigned long long> a(*addr);
  unsigned long long old = a.load(std::memory_order_relaxed);
  while (v < old && !a.compare_exchange_weak(old, v, std::memory_order_relaxed)) {
  }
  return old;
}
inline unsigned atomicInc(unsigned* addr, unsigned limit) {
  std::atomic_ref<unsigned> a(*addr);
  unsigned old = a.load(std::memory_order_relaxed);
  while (!a.compare_exchange_weak(old, old >= limit ? 0 : old + 1, std::memory_order_relaxed)) {
  }
  return old;
}
inline void __threadfence() {}
template <typename T>
T __ldg(const T* p) {
  return *p;
}
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
using std::isfinite;  // CUDA math: isfinite(float) in device code
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline unsigned __umulhi(unsigned a, unsigned b) {
  return static_cast<unsigned>((static_cast<uint64_t>(a) * b) >> 32);
}

// --- runtime API subset ---------------------------------------------------------------------------
enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorNotReady = 600,
  cudaErrorIllegalAddress = 700,
  cudaErrorLaunchFailure = 719,
};
enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4
};
struct CUstream_st;
using cudaStream_t = CUstream_st*;
struct CUevent_st;
using cudaEvent_t = CUevent_st*;

cudaError_t cudaMalloc(void** ptr, size_t bytes);
cudaError_t cudaFree(void* ptr);
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream = nullptr);
cudaError_t cudaMemset(void* ptr, int value, size_t bytes);
cudaError_t cudaMemsetAsync(void* ptr, int value, size_t bytes, cudaStream_t stream = nullptr);
cudaError_t cudaStreamCreate(cudaStream_t* stream);
cudaError_t cudaStreamDestroy(cudaStream_t stream);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaEventCreate(cudaEvent_t* event);
inline constexpr unsigned cudaEventDisableTiming = 2;
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned flags);
// Launches and copies run eagerly, so a recorded event has always completed.
cudaError_t cudaEventQuery(cudaEvent_t event);
cudaError_t cudaEventDestroy(cudaEvent_t event);
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream = nullptr);
cudaError_t cudaEventSynchronize(cudaEvent_t event);
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end);
cudaError_t cudaGetLastError();   // returns and clears the last error (sticky launch errors stay)
cudaError_t cudaPeekAtLastError();
const char* cudaGetErrorString(cudaError_t e);
cudaError_t cudaGetDeviceCount(int* count);
// The fields normlab reads, with the values of the one emulated device.
struct cudaDeviceProp {
  char name[256];
  int major, minor;
  int multiProcessorCount;
  size_t totalGlobalMem;
};
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device);

// Kernel attributes: only the opt-in for more than 48 KiB of dynamic shared memory (sm_90 allows
// up to 227 KiB per block), as a kernel must ask for it on a GPU.
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
namespace cuemu {
void set_max_dynamic_shared(const void* fn, int bytes);
}
template <typename... Params>
cudaError_t cudaFuncSetAttribute(void (*kernel)(Params...), cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 || value > 227 * 1024)
    return cudaErrorInvalidValue;
  cuemu::set_max_dynamic_shared(reinterpret_cast<const void*>(kernel), value);
  return cudaSuccess;
}

// --- the memory-traffic profiler (NORMLAB_CUDA_PROFILE builds) -----------------------------------
// A vector access must reach the profiler as ONE access per thread, as LDG.128 does on a GPU:
// g++ would split the struct copy into four 4-byte loads. The helpers of cuda_common.h report it
// themselves and are left uninstrumented.
#if CUEMU_PROFILE
#include "profile.h"
#define CUEMU_VECTOR_FN __attribute__((noinline, no_sanitize_address))
#define CUEMU_VECTOR_ACCESS(p, bytes, store, evict_first) \
  ::cuemu::profile::vector_access((p), (bytes), (store), __builtin_return_address(0), (evict_first))
#else
#define CUEMU_VECTOR_FN inline
#define CUEMU_VECTOR_ACCESS(p, bytes, store, evict_first) ((void)0)
#endif

namespace cuemu {

// The detail of the last launch failure: kernel, block, thread and source line.
std::string last_failure();
// Clears the sticky error (tests that provoke failures on purpose call this afterwards).
void reset_error();

enum class Order { Forward, Reverse, Random };
// Thread and block order; the default comes from NORMLAB_CUEMU_ORDER=forward|reverse|random[:seed].
void set_order(Order order, uint64_t seed = 0);
Order order();

using ThreadBody = std::function<void()>;
// `fn` identifies the kernel for its attributes (cudaFuncSetAttribute).
void run_launch(const char* kernel, const void* fn, dim3 grid, dim3 block, size_t dynamic_shared_bytes,
                const ThreadBody& body);
// The opt-in dynamic shared memory limit of a kernel; 0 when never set.
void set_max_dynamic_shared(const void* fn, int bytes);

template <typename... Params, typename... Args>
void launch(const char* name, void (*kernel)(Params...), dim3 grid, dim3 block, size_t shmem,
            cudaStream_t, Args&&... args) {
  // Convert once so every thread sees the same parameter values, as a real launch copies them.
  auto params = std::make_tuple(static_cast<Params>(args)...);
  run_launch(name, reinterpret_cast<const void*>(kernel), grid, block, shmem,
             [&] { std::apply(kernel, params); });
}

}  // namespace cuemu
