// Device memory: a caching allocator, copies between host and device, fills and strided gathers.
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "kernels/cuda/cuda_common.h"
#include "normlab/core/kernel/stubs.h"
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
  ::nl::detail::throw_error(file, line, expr, "CUDA error '", cudaGetErrorString(e), "' from ", expr,
                            detail.empty() ? "" : " — ", detail);
}

// ---------------------------------------------------------------------------------- kernels

__global__ void fill_kernel(int64_t n, float value, float* y) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
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
//
// Stream-ordered, as PyTorch's CUDACachingAllocator: a block belongs to the stream that was
// current when it was allocated, and a freed block is handed out again only for an allocation on
// that stream. Work on one stream runs in order, so every kernel that used the block before it was
// freed finishes before any kernel of its next owner starts; no host synchronisation is needed.
// A block that kernels on other streams also used (record_stream) is parked at free time with an
// event recorded on each of those streams, and joins its stream's free list only once every event
// has completed (polled on the next allocations). Without that, a block freed after a launch on a
// side stream (an NCCL all-reduce of a gradient, say) could be rewritten while still being read.
class CudaAllocator final : public Allocator {
 public:
  void* allocate(size_t nbytes) override {
    const size_t rounded = round_up(nbytes);
    const cudaStream_t s = stream();
    {
      std::lock_guard<std::mutex> lock(mu_);
      poll_pending();
      auto it = free_.find({s, rounded});
      if (it != free_.end() && !it->second.empty()) {
        void* p = it->second.back();
        it->second.pop_back();
        live_[p] = Block{s, rounded, {}};
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
    {
      std::lock_guard<std::mutex> lock(mu_);
      live_[p] = Block{s, rounded, {}};
    }
    on_handout(p, nbytes, rounded);
    return p;
  }

  void deallocate(void* ptr, size_t nbytes) noexcept override {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = live_.find(ptr);
    Block b = it != live_.end() ? it->second : Block{stream(), round_up(nbytes), {}};
    if (it != live_.end()) live_.erase(it);
    try {
      on_cache(ptr, b.rounded);
      if (!b.used_on.empty()) {
        Pending pend{ptr, b, {}};
        for (cudaStream_t other : b.used_on) {
          cudaEvent_t ev = nullptr;
          if (cudaEventCreateWithFlags(&ev, cudaEventDisableTiming) != cudaSuccess ||
              cudaEventRecord(ev, other) != cudaSuccess) {
            // No event: wait for that stream here instead (correct, only slower).
            if (ev) cudaEventDestroy(ev);
            (void)cudaGetLastError();
            cudaStreamSynchronize(other);
            continue;
          }
          pend.events.push_back(ev);
        }
        if (!pend.events.empty()) {
          pending_.push_back(std::move(pend));
          return;
        }
      }
      free_[{b.stream, b.rounded}].push_back(ptr);
    } catch (...) {  // no memory for the bookkeeping: give the block back instead
      on_release(ptr, b.rounded);
      cudaFree(ptr);
    }
  }

  // Kernels on `s` use `ptr` too: its reuse must wait for them (see the class comment).
  void record_stream(void* ptr, cudaStream_t s) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = live_.find(ptr);
    NL_CHECK(it != live_.end(), "record_stream: ", ptr, " is not a live block of the CUDA allocator");
    if (s != it->second.stream) it->second.used_on.insert(s);
  }

  void release_cache() {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [key, list] : free_)
      for (void* p : list) on_release(p, key.second), cudaFree(p);
    free_.clear();
  }

  // For the tests: blocks waiting for other streams.
  size_t pending() {
    std::lock_guard<std::mutex> lock(mu_);
    return pending_.size();
  }

 private:
  static size_t round_up(size_t nbytes) { return (nbytes + 511) / 512 * 512; }
  struct Block {
    cudaStream_t stream;
    size_t rounded;
    std::set<cudaStream_t> used_on;  // other streams that used it (record_stream)
  };
  struct Pending {
    void* ptr;
    Block block;
    std::vector<cudaEvent_t> events;
  };
  // Moves parked blocks whose events have all completed to their stream's free list.
  void poll_pending() {
    for (size_t i = 0; i < pending_.size();) {
      Pending& pend = pending_[i];
      bool done = true;
      for (cudaEvent_t ev : pend.events) {
        const cudaError_t q = cudaEventQuery(ev);
        if (q == cudaErrorNotReady)
          done = false;
        else if (q != cudaSuccess)
          (void)cudaGetLastError();  // a failed event: treat as done
      }
      if (!done) {
        ++i;
        continue;
      }
      for (cudaEvent_t ev : pend.events) cudaEventDestroy(ev);
      free_[{pend.block.stream, pend.block.rounded}].push_back(pend.ptr);
      pending_[i] = std::move(pending_.back());
      pending_.pop_back();
    }
  }

  std::mutex mu_;
  std::map<std::pair<cudaStream_t, size_t>, std::vector<void*>> free_;
  std::unordered_map<void*, Block> live_;
  std::vector<Pending> pending_;
};

CudaAllocator& caching_allocator() {
  static CudaAllocator* a = new CudaAllocator;  // never destroyed: outlives static tensors
  return *a;
}

namespace {
thread_local cudaStream_t g_stream = nullptr;
}  // namespace

cudaStream_t stream() { return g_stream; }
void set_stream(cudaStream_t s) { g_stream = s; }
void record_stream(void* ptr, cudaStream_t s) { caching_allocator().record_stream(ptr, s); }
size_t pending_blocks() { return caching_allocator().pending(); }

Allocator& allocator() { return caching_allocator(); }

// ---------------------------------------------------------------------------------- launch trace

namespace {
using TraceClock = std::chrono::steady_clock;
struct PendingLaunch {
  LaunchRecord r;
  cudaEvent_t begin = nullptr, end = nullptr;
};
struct Trace {
  bool on = false;
  TraceClock::time_point t0;
  cudaEvent_t origin = nullptr;  // recorded when the trace began: device times count from it
  std::vector<PendingLaunch> launches;
  std::vector<cudaEvent_t> pool;  // events of an earlier trace, for reuse
  const char* op = nullptr;
  double op_flops = 0, op_min_bytes = 0;
  int op_launches = 0;
  cudaEvent_t event() {
    if (!pool.empty()) {
      cudaEvent_t e = pool.back();
      pool.pop_back();
      return e;
    }
    cudaEvent_t e;
    NL_CUDA_CHECK(cudaEventCreate(&e));
    return e;
  }
  double host_us() const { return std::chrono::duration<double, std::micro>(TraceClock::now() - t0).count(); }
  Trace() = default;
  Trace(const Trace&) = delete;
  Trace& operator=(const Trace&) = delete;
  // The thread's events go with it (errors ignored: at process exit the context may be gone).
  ~Trace() {
    for (PendingLaunch& p : launches) pool.push_back(p.begin), pool.push_back(p.end);
    if (origin) pool.push_back(origin);
    for (cudaEvent_t e : pool)
      if (e) (void)cudaEventDestroy(e);
  }
};
thread_local Trace g_trace;

void trace_begin() {
  Trace& t = g_trace;
  NL_CHECK(!t.on, "launch_trace_begin: a trace is already on for this thread");
  t.launches.clear();
  t.op = nullptr;
  if (!t.origin) t.origin = t.event();
  NL_CUDA_CHECK(cudaEventRecord(t.origin, stream()));
  t.t0 = TraceClock::now();
  t.on = true;
}

std::vector<LaunchRecord> trace_end() {
  Trace& t = g_trace;
  NL_CHECK(t.on, "launch_trace_end: no trace is on for this thread (call launch_trace_begin first)");
  t.on = false;
  NL_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<LaunchRecord> out;
  out.reserve(t.launches.size());
  for (PendingLaunch& p : t.launches) {
    float b = 0, e = 0;
    NL_CUDA_CHECK(cudaEventElapsedTime(&b, t.origin, p.begin));
    NL_CUDA_CHECK(cudaEventElapsedTime(&e, t.origin, p.end));
    p.r.device_begin_us = 1e3 * double(b), p.r.device_end_us = 1e3 * double(e);
    t.pool.push_back(p.begin), t.pool.push_back(p.end);
    out.push_back(std::move(p.r));
  }
  t.launches.clear();
  return out;
}
}  // namespace

bool tracing() { return g_trace.on; }

OpLabel::OpLabel(const char* op, double flops, double min_bytes) {
  Trace& t = g_trace;
  if (!t.on || t.op) return;  // off, or inside an outer op that names the launches
  t.op = op, t.op_flops = flops, t.op_min_bytes = min_bytes, t.op_launches = 0;
  set_ = true;
}
OpLabel::~OpLabel() {
  if (set_) g_trace.op = nullptr;
}

LaunchScope::LaunchScope(const char* kernel, dim3 grid, dim3 block, size_t shmem) : on_(g_trace.on) {
  if (!on_) return;
  Trace& t = g_trace;
  PendingLaunch& p = t.launches.emplace_back();
  p.r.kernel = kernel;
  if (t.op) {
    p.r.op = t.op, p.r.op_flops = t.op_flops, p.r.op_min_bytes = t.op_min_bytes;
    p.r.op_launch = t.op_launches++;
  }
  p.r.grid[0] = grid.x, p.r.grid[1] = grid.y, p.r.grid[2] = grid.z;
  p.r.block[0] = block.x, p.r.block[1] = block.y, p.r.block[2] = block.z;
  p.r.shared_bytes = shmem;
  p.begin = t.event(), p.end = t.event();
  p.r.host_begin_us = t.host_us();
  NL_CUDA_CHECK(cudaEventRecord(p.begin, stream()));
}
LaunchScope::~LaunchScope() {
  if (!on_) return;
  Trace& t = g_trace;
  PendingLaunch& p = t.launches.back();
  // A launch that threw is still recorded; its end event marks where the stream stood.
  (void)cudaEventRecord(p.end, stream());
  p.r.host_end_us = t.host_us();
}

// ---------------------------------------------------------------------------------- registration

// Registers the allocator only when a GPU answers: without one, device_available(CUDA) is false,
// `--device auto` falls back to the CPU and the description says why.
namespace {
DeviceLimits g_limits;
}
const DeviceLimits& device_limits() { return g_limits; }

void register_memory_kernels() {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0) {
    (void)cudaGetLastError();  // a failed query must not surface as a later launch's error
    set_device_description(DeviceType::CUDA, std::string("built with CUDA, but no usable GPU: ") +
                                                 (e != cudaSuccess ? cudaGetErrorString(e)
                                                                   : "cudaGetDeviceCount found 0 devices"));
  } else {
    cudaDeviceProp prop{};
    NL_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    g_limits.sms = std::max(1, prop.multiProcessorCount);
    g_limits.l2_bytes = double(prop.l2CacheSize);
    g_limits.smem_per_block = prop.sharedMemPerBlock;
    g_limits.smem_optin = prop.sharedMemPerBlockOptin;
    char text[400];
    if (prop.totalGlobalMem == 0) {  // cuemu: host memory, no SM count worth printing
      std::snprintf(text, sizeof text, "%s", prop.name);
    } else {
      std::snprintf(text, sizeof text, "%s (sm_%d%d, %d SMs, %.1f GiB)%s", prop.name, prop.major, prop.minor,
                    prop.multiProcessorCount, double(prop.totalGlobalMem) / (1 << 30),
                    count > 1 ? ", device 0 of several" : "");
    }
    set_device_description(DeviceType::CUDA, text);
    set_allocator(DeviceType::CUDA, &allocator());
  }
  copy_bytes_stub.set(DeviceType::CUDA, &copy_bytes);
  copy_strided_stub.set(DeviceType::CUDA, &copy_strided);
  fill_stub.set(DeviceType::CUDA, &fill);
  native_stream_stub.set(DeviceType::CUDA, [] { return static_cast<void*>(stream()); });
  launch_trace_begin_stub.set(DeviceType::CUDA, &trace_begin);
  launch_trace_end_stub.set(DeviceType::CUDA, &trace_end);
}

}  // namespace nl::cuda
