// Device memory: a caching allocator, copies between host and device, fills and strided gathers.
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "kernels/cuda/cuda_common.h"
#include "kernels/stubs.h"
#include "normlab/core/storage.h"

// (The profiler build's -fsanitize=kernel-address also defines __SANITIZE_ADDRESS__, without ASan.)
#if !defined(__CUDACC__) && defined(__SANITIZE_ADDRESS__) && !CUEMU_PROFILE
#include <sanitizer/asan_interface.h>
#define NL_EMU_ASAN 1
#endif

namespace nl::cuda {

namespace {
// Under cuemu a device block is host memory, so the emulated build makes the caching allocator
// as strict as cudaMalloc itself: a handed-out block reads as NaN (0xFF bytes) whether fresh or
// recycled, and under ASan only the requested bytes are addressable — the rounding slack and
// every cached (freed) block are poisoned, so an off-by-one tail or a use after free is reported
// instead of reading the neighbour's or the previous owner's data.
void on_handout(void* p, size_t nbytes, size_t rounded) {
#if !defined(__CUDACC__)
#if NL_EMU_ASAN
  ASAN_UNPOISON_MEMORY_REGION(p, nbytes);
  ASAN_POISON_MEMORY_REGION(static_cast<char*>(p) + nbytes, rounded - nbytes);
#endif
  std::memset(p, 0xFF, nbytes);
#else
  (void)p, (void)nbytes, (void)rounded;
#endif
}
void on_cache(void* p, size_t rounded) {
#if NL_EMU_ASAN
  ASAN_POISON_MEMORY_REGION(p, rounded);
#else
  (void)p, (void)rounded;
#endif
}
void on_release(void* p, size_t rounded) {
#if NL_EMU_ASAN
  ASAN_UNPOISON_MEMORY_REGION(p, rounded);  // cudaFree hands it back to the host heap
#else
  (void)p, (void)rounded;
#endif
}
}  // namespace

[[noreturn]] void throw_cuda_error(cudaError_t e, const char* expr, const char* file, int line) {
  std::string detail;
#if !defined(__CUDACC__)
  detail = ::cuemu::last_failure();
#endif
  ::nl::detail::throw_error(file, line, expr, "CUDA error '", cudaGetErrorString(e), "' from ",
                            expr, detail.empty() ? "" : " — ", detail);
}

// ---------------------------------------------------------------------------------- kernels

__global__ void fill_kernel(int64_t n, float value, float* y) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = value;
}

__global__ void copy_strided_kernel(StridedCopyParams p, const uint32_t* src, uint32_t* dst) {
  for (int64_t out = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; out < p.numel;
       out += int64_t(gridDim.x) * blockDim.x) {
    int64_t rem = out, off = 0;
    for (int64_t d = p.ndim - 1; d >= 0; --d) {
      off += (rem % p.shape[d]) * p.src_strides[d];
      rem /= p.shape[d];
    }
    dst[out] = src[off];
  }
}

// ---------------------------------------------------------------------------------- launchers

namespace {
constexpr int kThreads = 256;
}  // namespace

void fill(int64_t n, float value, float* y) {
  NL_MODEL_OP("fill", 0, 4 * n);
  if (n > 0) NL_LAUNCH(fill_kernel, grid_for(n), kThreads, 0, n, value, y);
}

void copy_strided(const StridedCopyParams& p, const uint32_t* src, uint32_t* dst) {
  NL_MODEL_OP("copy_strided", 0, 8 * p.numel);
  if (p.numel > 0) NL_LAUNCH(copy_strided_kernel, grid_for(p.numel), kThreads, 0, p, src, dst);
}

// ---------------------------------------------------------------------------------- deferred checks

namespace {
// One pending check at a time is enough: the only device-side check is the loss's, once per step.
struct ClassIndexCheck {
  std::mutex mu;
  unsigned long long* slot = nullptr;  // one device word, kNoFailure when clean
  const char* op = nullptr;            // the op launched last with the check; null: none pending
  int64_t classes = 0;
};
ClassIndexCheck& class_index_check() {
  static ClassIndexCheck* c = new ClassIndexCheck;  // never destroyed, like the allocator
  return *c;
}
constexpr unsigned long long kNoFailure = ~0ull;
}  // namespace

unsigned long long* class_index_check_slot(const char* op, int64_t classes) {
  ClassIndexCheck& c = class_index_check();
  std::lock_guard<std::mutex> lock(c.mu);
  if (!c.slot) {
    NL_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&c.slot), sizeof(unsigned long long)));
    NL_CUDA_CHECK(cudaMemset(c.slot, 0xFF, sizeof(unsigned long long)));
  }
  c.op = op, c.classes = classes;
  return c.slot;
}

void throw_deferred_check_failures() {
  ClassIndexCheck& c = class_index_check();
  std::lock_guard<std::mutex> lock(c.mu);
  if (!c.op) return;  // no checking kernel since the last synchronisation
  const char* op = c.op;
  c.op = nullptr;
  unsigned long long v = kNoFailure;
  NL_CUDA_CHECK(cudaMemcpy(&v, c.slot, sizeof v, cudaMemcpyDeviceToHost));
  if (v == kNoFailure) return;
  NL_CUDA_CHECK(cudaMemset(c.slot, 0xFF, sizeof v));
  NL_FAIL(op, ": target[", v >> 32, "] = ", int32_t(uint32_t(v)), " is not a class index in [0, ", c.classes,
          ") (found on the GPU; reported at the next synchronisation)");
}

void copy_bytes(void* dst, const void* src, size_t nbytes, Device dst_device, Device src_device) {
  if (nbytes == 0) return;
  const cudaMemcpyKind kind = dst_device.is_cuda()
                                  ? (src_device.is_cuda() ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
                                  : cudaMemcpyDeviceToHost;
  NL_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, kind, stream()));
  // Host memory may be read or freed right after this returns.
  if (kind != cudaMemcpyDeviceToDevice) NL_CUDA_CHECK(cudaStreamSynchronize(stream()));
  if (kind == cudaMemcpyDeviceToHost) throw_deferred_check_failures();
}

// Caches freed blocks by size: cudaMalloc/cudaFree synchronise the device and cost far more than
// a kernel, so steady-state training must not call them.
class CudaAllocator final : public Allocator {
 public:
  void* allocate(size_t nbytes) override {
    const size_t rounded = (nbytes + 511) / 512 * 512;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = free_.find(rounded);
      if (it != free_.end() && !it->second.empty()) {
        void* p = it->second.back();
        it->second.pop_back();
        on_handout(p, nbytes, rounded);
        return p;
      }
    }
    void* p = nullptr;
    cudaError_t e = cudaMalloc(&p, rounded);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      release_cache();  // retry once with the cache returned to the device
      e = cudaMalloc(&p, rounded);
    }
    NL_CHECK(e == cudaSuccess, "out of memory: could not allocate ", nbytes, " bytes on cuda (",
             cudaGetErrorString(e), ")");
    on_handout(p, nbytes, rounded);
    return p;
  }
  void deallocate(void* ptr, size_t nbytes) noexcept override {
    const size_t rounded = (nbytes + 511) / 512 * 512;
    std::lock_guard<std::mutex> lock(mu_);
    try {
      free_[rounded].push_back(ptr);
      on_cache(ptr, rounded);
    } catch (...) {
      cudaFree(ptr);
    }
  }
  void release_cache() {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [size, list] : free_)
      for (void* p : list) on_release(p, size), cudaFree(p);
    free_.clear();
  }

 private:
  std::mutex mu_;
  std::unordered_map<size_t, std::vector<void*>> free_;
};

Allocator& allocator() {
  static CudaAllocator* a = new CudaAllocator;  // never destroyed: outlives static tensors
  return *a;
}

// ---------------------------------------------------------------------------------- registration

// Registers the allocator only when a GPU answers: without one, device_available(CUDA) is false,
// `--device auto` falls back to the CPU and the description says why.
void register_memory_kernels() {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0) {
    (void)cudaGetLastError();  // a failed query must not surface as a later launch's error
    set_device_description(DeviceType::CUDA,
                           std::string("built with CUDA, but no usable GPU: ") +
                               (e != cudaSuccess ? cudaGetErrorString(e) : "cudaGetDeviceCount found 0 devices"));
  } else {
    cudaDeviceProp prop{};
    NL_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    char text[400];
    if (prop.totalGlobalMem == 0) {  // cuemu: host memory, no SM count worth printing
      std::snprintf(text, sizeof text, "%s", prop.name);
    } else {
      std::snprintf(text, sizeof text, "%s (sm_%d%d, %d SMs, %.1f GiB)%s", prop.name, prop.major,
                    prop.minor, prop.multiProcessorCount, double(prop.totalGlobalMem) / (1 << 30),
                    count > 1 ? ", device 0 of several" : "");
    }
    set_device_description(DeviceType::CUDA, text);
    set_allocator(DeviceType::CUDA, &allocator());
  }
  copy_bytes_stub.set(DeviceType::CUDA, &copy_bytes);
  copy_strided_stub.set(DeviceType::CUDA, &copy_strided);
  fill_stub.set(DeviceType::CUDA, &fill);
}

}  // namespace nl::cuda
