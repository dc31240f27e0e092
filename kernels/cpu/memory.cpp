// CPU allocator and the memory kernels: byte copies, strided gathers, fills.
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <unordered_map>
#include <vector>

#include "normlab/core/kernel/stubs.h"
#include "normlab/core/error.h"
#include "normlab/core/storage.h"

namespace nl::cpu {

// Keeps freed blocks for reuse by size. Training allocates the same shapes every step, so after
// the first step nearly every request is a cache hit: no malloc, and above all no fresh pages for
// the kernel to fault in and zero (large mallocs are mmap'd and returned on free).
class CpuAllocator final : public Allocator {
 public:
  void* allocate(size_t nbytes) override {
    // 64-byte alignment: a cache line, and enough for any SIMD width Eigen picks.
    const size_t rounded = (nbytes + 63) / 64 * 64;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = free_.find(rounded);
      if (it != free_.end() && !it->second.empty()) {
        void* p = it->second.back();
        it->second.pop_back();
        cached_bytes_ -= rounded;
        return p;
      }
    }
    void* p = std::aligned_alloc(64, rounded);
    NL_CHECK(p != nullptr, "out of memory: could not allocate ", nbytes, " bytes on cpu");
    return p;
  }

  void deallocate(void* ptr, size_t nbytes) noexcept override {
    const size_t rounded = (nbytes + 63) / 64 * 64;
    std::lock_guard<std::mutex> lock(mu_);
    if (cached_bytes_ + rounded > kMaxCachedBytes) {
      std::free(ptr);
      return;
    }
    try {
      free_[rounded].push_back(ptr);
      cached_bytes_ += rounded;
    } catch (...) {
      std::free(ptr);
    }
  }

  ~CpuAllocator() override {
    for (auto& [size, list] : free_)
      for (void* p : list) std::free(p);
  }

 private:
  static constexpr size_t kMaxCachedBytes = size_t(2) << 30;  // bound what idle memory we hold
  std::mutex mu_;
  std::unordered_map<size_t, std::vector<void*>> free_;
  size_t cached_bytes_ = 0;
};

Allocator& allocator() {
  static CpuAllocator a;
  return a;
}

void copy_bytes(void* dst, const void* src, size_t nbytes, Device, Device) {
  if (nbytes) std::memcpy(dst, src, nbytes);
}

void copy_strided(const StridedCopyParams& p, const uint32_t* src, uint32_t* dst) {
  // Odometer over the logical index; the innermost dimension is a tight strided loop.
  int64_t nd = p.ndim;
  if (p.numel == 0) return;
  if (nd == 0) {
    dst[0] = src[0];
    return;
  }
  int64_t idx[kMaxDims] = {0};
  int64_t inner = p.shape[nd - 1], inner_stride = p.src_strides[nd - 1];
  for (int64_t out = 0; out < p.numel; out += inner) {
    int64_t off = 0;
    for (int64_t d = 0; d < nd - 1; ++d) off += idx[d] * p.src_strides[d];
    for (int64_t i = 0; i < inner; ++i) dst[out + i] = src[off + i * inner_stride];
    for (int64_t d = nd - 2; d >= 0; --d) {
      if (++idx[d] < p.shape[d]) break;
      idx[d] = 0;
    }
  }
}

void fill(int64_t n, float value, float* y) {
  for (int64_t i = 0; i < n; ++i) y[i] = value;
}

// Registration: a kernel whose signature drifts from its stub fails to compile here.
void register_memory_kernels() {
  set_allocator(DeviceType::CPU, &allocator());
  copy_bytes_stub.set(DeviceType::CPU, &copy_bytes);
  copy_strided_stub.set(DeviceType::CPU, &copy_strided);
  fill_stub.set(DeviceType::CPU, &fill);
}

}  // namespace nl::cpu
