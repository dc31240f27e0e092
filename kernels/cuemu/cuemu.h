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
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <source_location>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

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

// A cp.async copy not yet performed (cuda_common.h's cp_async_16): it lands in shared memory when
// the thread waits for its group, the latest moment CUDA allows, so a read before the wait sees
// the old contents, as it may on a GPU.
struct AsyncCopy {
  void* dst;
  const void* src;
  unsigned bytes;
};

struct ThreadContext {
  dim3 thread_idx, block_idx, block_dim, grid_dim;
  unsigned linear_tid = 0;
  std::vector<std::vector<AsyncCopy>> async_groups;  // committed groups, oldest first
  std::vector<AsyncCopy> async_open;                 // issued since the last commit
};
ThreadContext& current();
void* dynamic_shared();

enum class WarpOpKind { Shfl, ShflUp, ShflDown, ShflXor, Ballot, All, Any, SyncWarp, Mma };
uint64_t warp_op(WarpOpKind kind, unsigned mask, uint64_t value, int param, int width,
                 const std::source_location& loc);
void syncthreads(const std::source_location& loc);
// A launch failure raised by device code (cuemu's checks of CUDA API preconditions).
[[noreturn]] void device_error(const std::string& what, const std::source_location& loc);

// One lane's part of a warp's D = A * B + C on tensor cores (wmma::mma_sync, m16n16k8 TF32): the
// lanes meet as at a shuffle and the last to arrive computes every lane's D from all lanes'
// fragments (fragment layouts in nvcuda::wmma below).
struct MmaLane {
  const float *a, *b, *c;
  float* d;
};
void warp_mma(MmaLane& lane, const std::source_location& loc);

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
  return cuemu::from_bits<T>(
      cuemu::warp_op(cuemu::WarpOpKind::Shfl, mask, cuemu::to_bits(var), src_lane, width, loc));
}
template <typename T>
T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = 32,
                 std::source_location loc = std::source_location::current()) {
  return cuemu::from_bits<T>(
      cuemu::warp_op(cuemu::WarpOpKind::ShflUp, mask, cuemu::to_bits(var), int(delta), width, loc));
}
template <typename T>
T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32,
                   std::source_location loc = std::source_location::current()) {
  return cuemu::from_bits<T>(
      cuemu::warp_op(cuemu::WarpOpKind::ShflDown, mask, cuemu::to_bits(var), int(delta), width, loc));
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = 32,
                  std::source_location loc = std::source_location::current()) {
  return cuemu::from_bits<T>(
      cuemu::warp_op(cuemu::WarpOpKind::ShflXor, mask, cuemu::to_bits(var), lane_mask, width, loc));
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

// --- tensor cores: the wmma API for TF32 (m16n16k8, FP32 accumulation) ---------------------------
// A fragment's elements are spread over the 32 lanes as the PTX ISA documents them for
// mma.m16n8k8 .tf32 (two such instructions make one m16n16k8): with g = lane / 4, t = lane % 4,
//   A (16 x 8):  a0 (g, t)  a1 (g+8, t)  a2 (g, t+4)  a3 (g+8, t+4)
//   B (8 x 16):  per 8-column half h, b[2h] (t, 8h+g)  b[2h+1] (t+4, 8h+g)
//   C (16 x 16): per half h, c[4h..4h+3] at (g, 8h+2t) (g, 8h+2t+1) (g+8, 8h+2t) (g+8, 8h+2t+1)
// CUDA leaves the wmma layout unspecified (kernels may only load, store, fill and apply
// elementwise operations), so this choice only decides which shared-memory banks the profiler
// sees each lane touch: it makes that count the hardware's.
//
// TF32 as on the hardware: the multiply sees only the upper 19 bits of each input (sign, 8-bit
// exponent, 10-bit mantissa: the low 13 bits are ignored, i.e. truncated); __float_to_tf32 rounds
// to nearest, ties away from zero, as cvt.rna.tf32.f32 does. Products are exact in FP32 and summed
// in FP32 (the hardware's internal order is unspecified; here k in order).
namespace nvcuda::wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
namespace precision {
struct tf32 {};
}  // namespace precision
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  static_assert(M == 16 && N == 16 && K == 8, "cuemu emulates the TF32 shape m16n16k8 only");
  static_assert(std::is_same_v<Use, accumulator> ? std::is_same_v<T, float>
                                                 : std::is_same_v<T, precision::tf32>,
                "cuemu emulates TF32 inputs with FP32 accumulators");
  static constexpr int kRows = std::is_same_v<Use, matrix_b> ? K : M;
  static constexpr int kCols = std::is_same_v<Use, matrix_a> ? K : N;
  static constexpr int num_elements = kRows * kCols / 32;
  using element_type = float;
  float x[num_elements];
};

namespace detail {
// (row, column) of element j of `lane`'s fragment (the table above).
template <typename Use>
constexpr void coord(int lane, int j, int& r, int& c) {
  const int g = lane / 4, t = lane % 4;
  if constexpr (std::is_same_v<Use, matrix_a>) {
    r = g + 8 * (j & 1), c = t + 4 * (j >> 1);
  } else if constexpr (std::is_same_v<Use, matrix_b>) {
    r = t + 4 * (j & 1), c = 8 * (j >> 1) + g;
  } else {
    r = g + 8 * ((j >> 1) & 1), c = 8 * (j >> 2) + 2 * t + (j & 1);
  }
}
inline void check_ptr(const void* p, unsigned ldm, const std::source_location& loc) {
  if (reinterpret_cast<uintptr_t>(p) % 32 != 0)
    cuemu::device_error("wmma: matrix pointer is not 256-bit aligned", loc);
  if (ldm % 4 != 0)
    cuemu::device_error("wmma: ldm " + std::to_string(ldm) + " is not a multiple of 16 bytes", loc);
}
inline int lane() { return int(::cuemu::current().linear_tid % 32); }
}  // namespace detail

template <typename Use, typename Layout>
void load_matrix_sync(fragment<Use, 16, 16, 8, precision::tf32, Layout>& f, const float* p, unsigned ldm,
                      std::source_location loc = std::source_location::current()) {
  static_assert(std::is_same_v<Layout, row_major> || std::is_same_v<Layout, col_major>,
                "A and B fragments need a layout");
  detail::check_ptr(p, ldm, loc);
  for (int j = 0; j < f.num_elements; ++j) {
    int r = 0, c = 0;
    detail::coord<Use>(detail::lane(), j, r, c);
    f.x[j] = std::is_same_v<Layout, row_major> ? p[r * ldm + c] : p[c * ldm + r];
  }
}
inline void load_matrix_sync(fragment<accumulator, 16, 16, 8, float>& f, const float* p, unsigned ldm,
                             layout_t layout, std::source_location loc = std::source_location::current()) {
  detail::check_ptr(p, ldm, loc);
  for (int j = 0; j < f.num_elements; ++j) {
    int r = 0, c = 0;
    detail::coord<accumulator>(detail::lane(), j, r, c);
    f.x[j] = layout == mem_row_major ? p[r * ldm + c] : p[c * ldm + r];
  }
}
inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 8, float>& f, unsigned ldm,
                              layout_t layout, std::source_location loc = std::source_location::current()) {
  detail::check_ptr(p, ldm, loc);
  for (int j = 0; j < f.num_elements; ++j) {
    int r = 0, c = 0;
    detail::coord<accumulator>(detail::lane(), j, r, c);
    (layout == mem_row_major ? p[r * ldm + c] : p[c * ldm + r]) = f.x[j];
  }
}
template <typename Use, typename T, typename Layout>
void fill_fragment(fragment<Use, 16, 16, 8, T, Layout>& f, float v) {
  for (float& e : f.x) e = v;
}
template <typename LayoutA, typename LayoutB>
void mma_sync(fragment<accumulator, 16, 16, 8, float>& d,
              const fragment<matrix_a, 16, 16, 8, precision::tf32, LayoutA>& a,
              const fragment<matrix_b, 16, 16, 8, precision::tf32, LayoutB>& b,
              const fragment<accumulator, 16, 16, 8, float>& c, bool satf = false,
              std::source_location loc = std::source_location::current()) {
  if (satf) cuemu::device_error("wmma::mma_sync: satf is not emulated", loc);
  cuemu::MmaLane me{a.x, b.x, c.x, d.x};
  cuemu::warp_mma(me, loc);
}
inline float __float_to_tf32(float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0x1000u) & 0xffffe000u;  // NaN and Inf unchanged
  std::memcpy(&v, &u, 4);
  return v;
}
}  // namespace nvcuda::wmma

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
inline unsigned __float_as_uint(float v) { return std::bit_cast<unsigned>(v); }
inline float __uint_as_float(unsigned v) { return std::bit_cast<float>(v); }
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
cudaError_t cudaGetLastError();  // returns and clears the last error (sticky launch errors stay)
cudaError_t cudaPeekAtLastError();
const char* cudaGetErrorString(cudaError_t e);
cudaError_t cudaGetDeviceCount(int* count);
// The fields normlab reads. The one emulated device presents the limits of a real GPU, its device
// profile (NORMLAB_CUEMU_DEVICE: h100, the default, a100, l4 or b200), so that a launcher sizing
// its grid from them takes, under emulation, the decisions it takes on that GPU.
struct cudaDeviceProp {
  char name[256];
  int major, minor;
  int multiProcessorCount;
  int l2CacheSize;                // bytes
  size_t sharedMemPerBlock;       // bytes without an opt-in
  size_t sharedMemPerBlockOptin;  // bytes with cudaFuncAttributeMaxDynamicSharedMemorySize
  size_t totalGlobalMem;          // 0: host memory, no fixed size
};
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device);
namespace cuemu {
// The properties of the profile `key` ("h100"); throws std::invalid_argument naming the known
// profiles for any other key. cudaGetDeviceProperties presents NORMLAB_CUEMU_DEVICE's, read once.
cudaDeviceProp device_profile(const char* key);
}  // namespace cuemu

// Kernel attributes: only the opt-in for more than 48 KiB of dynamic shared memory (sm_90 allows
// up to 227 KiB per block, sm_80 163 KiB: the device profile's limit), as a kernel must ask for it on a GPU.
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
namespace cuemu {
void set_max_dynamic_shared(const void* fn, int bytes);
size_t shared_optin_limit();  // the device profile's sharedMemPerBlockOptin
}  // namespace cuemu
template <typename... Params>
cudaError_t cudaFuncSetAttribute(void (*kernel)(Params...), cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 ||
      size_t(value) > cuemu::shared_optin_limit())
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
// Called with every launch's kernel name and configuration before it runs (tests that check a
// launcher's grid decisions); an empty function removes it.
using LaunchObserver = std::function<void(const char* kernel, dim3 grid, dim3 block)>;
void set_launch_observer(LaunchObserver observer);

template <typename... Params, typename... Args>
void launch(const char* name, void (*kernel)(Params...), dim3 grid, dim3 block, size_t shmem, cudaStream_t,
            Args&&... args) {
  // Convert once so every thread sees the same parameter values, as a real launch copies them.
  auto params = std::make_tuple(static_cast<Params>(args)...);
  run_launch(name, reinterpret_cast<const void*>(kernel), grid, block, shmem,
             [&] { std::apply(kernel, params); });
}

}  // namespace cuemu
