// The cuemu scheduler (blocks, fibers, barriers, warp operations) and the runtime API subset.
#include <cstdio>
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <numeric>
#include <new>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuemu.h"
#include "fiber.h"
#if CUEMU_PROFILE
#include "profile.h"
#endif

#if CUEMU_TSAN
#include <sanitizer/tsan_interface.h>
// Exported by libtsan (tsan_interface_ann) but not declared in GCC 12's tsan_interface.h.
extern "C" void __tsan_ignore_thread_begin();
extern "C" void __tsan_ignore_thread_end();
#endif

namespace cuemu {
namespace {

constexpr size_t kStackBytes = 64 * 1024;

// --- race checking (CUEMU_TSAN, the NORMLAB_RACECHECK build) -----------------------------------
//
// Each CUDA thread runs on a ThreadSanitizer fiber and fiber switches carry no synchronisation,
// so TSan treats the threads of a launch as concurrent and reports any two conflicting accesses
// that CUDA does not order. The happens-before edges CUDA does have are added here:
//   - kernel boundaries: the host releases before a launch and acquires after it; every thread
//     acquires at its start and releases at its end;
//   - __syncthreads: every thread releases on arrival and acquires on departure;
//   - __syncwarp: the same, per warp; shuffles and votes are NOT fences (nothing is added);
//   - atomics are relaxed (std::atomic_ref with memory_order_relaxed, as CUDA's atomicAdd):
//     never racing with each other, ordering nothing else.
// This file itself is not instrumented (its bookkeeping is not CUDA-visible memory).
//
// Reuse across blocks: blocks alternate between two sets of fibers (stacks) and two shared-
// memory buffers. A block is ordered after the previous block of its own set (so reusing that
// set's stacks and shared buffer is not a race), never after the block just before it: a race
// between two consecutive blocks in launch order (e.g. every block's thread 0 doing a plain
// `out[c] += partial`) is reported. Races only between blocks two or more apart in the order
// are missed; the reverse and random orders pair other blocks.
#if CUEMU_TSAN
constexpr int kSets = 2;
struct RaceSync {
  char launch_begin, launch_end;
  // Barriers and warp syncs alternate between two objects by generation: a thread that has
  // already left barrier k and arrived at k+1 releases into the other object, so a slower
  // thread still leaving barrier k acquires nothing it wrote after k.
  // set_end likewise by the block's generation within its set: a block acquires what the previous
  // block of its set released, never what its own early-finishing threads did.
  char set_end[2][2], barrier[2][2], warp[2][32][2];
};
RaceSync g_sync;
inline void hb_release(const void* a) { __tsan_release(const_cast<void*>(a)); }
inline void hb_acquire(const void* a) { __tsan_acquire(const_cast<void*>(a)); }
#else
constexpr int kSets = 1;
#endif

struct LaunchAbort {};  // unwinds a fiber after the launch failed

enum class State { Runnable, AtBarrier, AtWarpOp, Done };

struct Thread {
  ThreadContext ctx;
  State state = State::Runnable;
  std::source_location site;  // where it is parked
  // Warp operation in flight.
  WarpOpKind kind{};
  unsigned mask = 0;
  uint64_t value = 0, result = 0;
  int param = 0, width = 32;
  unsigned barriers = 0, syncwarps = 0;  // generations passed (race-check build)
};

// Dynamic shared memory starts 128-byte aligned, as on a GPU (wmma needs 32 bytes; malloc gives 16).
template <typename T>
struct Aligned128 {
  using value_type = T;
  Aligned128() = default;
  template <typename U>
  Aligned128(const Aligned128<U>&) {}
  T* allocate(size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(128))); }
  void deallocate(T* p, size_t) { ::operator delete(p, std::align_val_t(128)); }
  bool operator==(const Aligned128&) const { return true; }
};

struct Block {
  const char* kernel = "";
  std::vector<Thread> threads;
  std::vector<unsigned char, Aligned128<unsigned char>> shared[kSets];
  int set = 0;       // which fibers and shared buffer this block uses
  unsigned gen = 0;  // how many blocks of this set ran before it in this launch
  const ThreadBody* body = nullptr;
  bool failed = false;
  Thread* running = nullptr;
};

thread_local Block* g_block = nullptr;

struct Globals {
  std::mutex mu;
  cudaError_t last = cudaSuccess;    // cleared by cudaGetLastError
  cudaError_t sticky = cudaSuccess;  // launch failures stay until reset_error()
  std::string failure;
  std::map<const void*, size_t> allocations;
  std::map<const void*, int> max_dynamic_shared;  // cudaFuncSetAttribute opt-ins
  Order order = Order::Forward;
  uint64_t seed = 0;
  std::vector<std::unique_ptr<Fiber>> fibers[kSets];  // stacks reused across blocks and launches
  Globals() {
    if (const char* env = std::getenv("NORMLAB_CUEMU_ORDER")) {
      std::string v = env;
      if (v.rfind("reverse", 0) == 0) order = Order::Reverse;
      if (v.rfind("random", 0) == 0) {
        order = Order::Random;
        auto colon = v.find(':');
        seed = colon == std::string::npos ? 1 : std::strtoull(v.c_str() + colon + 1, nullptr, 10);
      }
    }
  }
};

Globals& g() {
  static Globals globals;
  return globals;
}

std::string where(const std::source_location& loc) {
  std::string f = loc.file_name();
  auto slash = f.find_last_of('/');
  return (slash == std::string::npos ? f : f.substr(slash + 1)) + ":" + std::to_string(loc.line());
}

std::string thread_name(const Thread& t) {
  std::ostringstream os;
  os << "thread (" << t.ctx.thread_idx.x << "," << t.ctx.thread_idx.y << "," << t.ctx.thread_idx.z << ")";
  return os.str();
}

std::string block_name(const Block& b) {
  const dim3& i = b.threads.front().ctx.block_idx;
  std::ostringstream os;
  os << "kernel " << b.kernel << ", block (" << i.x << "," << i.y << "," << i.z << ")";
  return os.str();
}

// Records a launch failure; the scheduler stops running the block.
void fail(Block& b, const std::string& what) {
  if (b.failed) return;
  b.failed = true;
  std::lock_guard<std::mutex> lock(g().mu);
  g().failure = block_name(b) + ": " + what;
  g().last = g().sticky = cudaErrorLaunchFailure;
}

// Inside a fiber: report, then unwind this fiber.
[[noreturn]] void fail_here(const std::string& what) {
  fail(*g_block, thread_name(*g_block->running) + ": " + what);
  throw LaunchAbort{};
}

void park(State s, const std::source_location& loc) {
  Thread* t = g_block->running;
  t->state = s;
  t->site = loc;
  Fiber::yield_to_scheduler();
  if (g_block->failed) throw LaunchAbort{};
}

void fiber_entry(void* arg) {
  auto* t = static_cast<Thread*>(arg);
#if CUEMU_TSAN
  hb_acquire(&g_sync.launch_begin);
  hb_acquire(&g_sync.set_end[g_block->set][(g_block->gen + 1) % 2]);
#endif
  try {
    (*g_block->body)();
  } catch (const LaunchAbort&) {
  } catch (const std::exception& e) {
    fail(*g_block, thread_name(*t) + ": exception " + e.what());
  }
#if CUEMU_TSAN
  hb_release(&g_sync.set_end[g_block->set][g_block->gen % 2]);
  hb_release(&g_sync.launch_end);
#endif
  t->state = State::Done;
}

std::vector<size_t> make_order(size_t n, uint64_t salt) {
  std::vector<size_t> v(n);
  std::iota(v.begin(), v.end(), size_t{0});
  if (g().order == Order::Reverse) std::reverse(v.begin(), v.end());
  if (g().order == Order::Random) {
    uint64_t s = g().seed * 0x9E3779B97F4A7C15ull + salt + 1;
    for (size_t i = n; i > 1; --i) {
      s ^= s << 13, s ^= s >> 7, s ^= s << 17;  // xorshift64
      std::swap(v[i - 1], v[s % i]);
    }
  }
  return v;
}

bool in_segment(int lane, int src, int width) { return src / width == lane / width; }

// The tensor core's view of a TF32 input: the low 13 bits of the mantissa are not read.
float tf32_bits(float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  u &= 0xffffe000u;
  std::memcpy(&v, &u, 4);
  return v;
}

// wmma::mma_sync of the warp at `base` (all 32 lanes parked there): gathers A, B and C from the
// lanes' fragments, computes D = A * B + C and scatters D back. Every D is computed before any is
// written, since a lane's d is usually its own c.
void mma_warp(Block& b, size_t base) {
  namespace wd = nvcuda::wmma::detail;
  namespace wm = nvcuda::wmma;
  float A[16][8], B[8][16], C[16][16];
  const MmaLane* lanes[32];
  for (int m = 0; m < 32; ++m) {
    const MmaLane* l = lanes[m] = from_bits<const MmaLane*>(b.threads[base + size_t(m)].value);
    int r = 0, c = 0;
    for (int j = 0; j < 4; ++j) wd::coord<wm::matrix_a>(m, j, r, c), A[r][c] = tf32_bits(l->a[j]);
    for (int j = 0; j < 4; ++j) wd::coord<wm::matrix_b>(m, j, r, c), B[r][c] = tf32_bits(l->b[j]);
    for (int j = 0; j < 8; ++j) wd::coord<wm::accumulator>(m, j, r, c), C[r][c] = l->c[j];
  }
  // Products of two 11-bit significands are exact in FP32; the sum rounds per step.
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 16; ++j) {
      float acc = C[i][j];
      for (int k = 0; k < 8; ++k) acc += A[i][k] * B[k][j];
      C[i][j] = acc;
    }
  for (int m = 0; m < 32; ++m) {
    int r = 0, c = 0;
    for (int j = 0; j < 8; ++j) wd::coord<wm::accumulator>(m, j, r, c), lanes[m]->d[j] = C[r][c];
  }
}

// Completes the warp operation of the warp starting at `base` if all lanes of its mask have
// arrived. Returns true if it completed (the lanes are runnable again).
bool resolve_warp(Block& b, size_t base) {
  const size_t n = b.threads.size();
  const size_t lanes = std::min<size_t>(32, n - base);
  for (size_t l = 0; l < lanes && !b.failed; ++l) {
    Thread& t = b.threads[base + l];
    if (t.state != State::AtWarpOp) continue;
    // All lanes of t's mask must be parked at the same operation.
    bool ready = true;
    for (size_t m = 0; m < 32; ++m) {
      if (!(t.mask >> m & 1u)) continue;
      if (m >= lanes) {
        std::ostringstream hex;
        hex << std::hex << t.mask;
        fail(b, thread_name(t) + ": mask 0x" + hex.str() + " at " + where(t.site) + " names lane " +
                    std::to_string(m) + ", which does not exist");
        return false;
      }
      Thread& o = b.threads[base + m];
      if (o.state == State::Runnable) {
        ready = false;
      } else if (o.state == State::Done) {
        fail(b, thread_name(t) + " waits at " + where(t.site) + " for lane " + std::to_string(m) +
                    ", which exited");
        return false;
      } else if (o.state == State::AtBarrier) {
        fail(b, thread_name(t) + " waits at the warp operation at " + where(t.site) + " but lane " +
                    std::to_string(m) + " is at __syncthreads at " + where(o.site));
        return false;
      } else if (o.kind != t.kind || o.mask != t.mask ||
                 // __syncwarp may be reached from different call sites (legal since sm_70:
                 // the lanes named by the mask meet wherever they are); every other warp
                 // operation exchanges values, so all lanes must be at the same one.
                 (o.kind != WarpOpKind::SyncWarp && o.site.line() != t.site.line())) {
        fail(b, "lanes of one warp met different warp operations: " + thread_name(t) + " at " +
                    where(t.site) + ", " + thread_name(o) + " at " + where(o.site));
        return false;
      }
    }
    if (!ready) return false;
    const unsigned mask = t.mask;
    if (t.kind == WarpOpKind::Mma) {
      mma_warp(b, base);
      for (size_t m = 0; m < 32; ++m) b.threads[base + m].state = State::Runnable;
      return true;
    }
    // Compute every lane's result, then release them.
    uint64_t ballot = 0;
    for (size_t m = 0; m < 32; ++m)
      if (mask >> m & 1u) ballot |= (b.threads[base + m].value != 0 ? 1ull : 0ull) << m;
    for (size_t m = 0; m < 32; ++m) {
      if (!(mask >> m & 1u)) continue;
      Thread& me = b.threads[base + m];
      const int lane = static_cast<int>(m), w = me.width;
      int src = lane;
      switch (me.kind) {
        case WarpOpKind::Shfl: src = (lane / w) * w + (((me.param % w) + w) % w); break;
        case WarpOpKind::ShflUp:
          src = lane - me.param;
          if (src < (lane / w) * w) src = lane;
          break;
        case WarpOpKind::ShflDown:
          src = lane + me.param;
          if (src >= (lane / w + 1) * w) src = lane;
          break;
        case WarpOpKind::ShflXor:
          src = lane ^ me.param;
          if (src > lane && !in_segment(lane, src, w)) src = lane;
          break;
        default: break;
      }
      switch (me.kind) {
        case WarpOpKind::Ballot: me.result = ballot; break;
        case WarpOpKind::All: me.result = ballot == mask; break;
        case WarpOpKind::Any: me.result = ballot != 0; break;
        case WarpOpKind::SyncWarp: me.result = 0; break;
        default:
          if (src < 0 || src >= 32 || !(mask >> src & 1u)) {
            fail(b, thread_name(me) + " at " + where(me.site) + " reads lane " + std::to_string(src) +
                        ", which is not in the mask");
            return false;
          }
          me.result = b.threads[base + static_cast<size_t>(src)].value;
      }
    }
    for (size_t m = 0; m < 32; ++m)
      if (mask >> m & 1u) b.threads[base + m].state = State::Runnable;
    return true;
  }
  return false;
}

void resume(Block& b, size_t i) {
  b.running = &b.threads[i];
  g().fibers[b.set][i]->resume();
  b.running = nullptr;
}

// Runs the lanes of the warp at `base` (in the block's thread order) for as long as their warp
// operations keep completing: a warp moves on as soon as its own lanes have met, without waiting
// for the rest of the block, as on a GPU. Without this, every thread would reach its next
// synchronisation point before any warp continued, hiding races between warps.
void run_warp(Block& b, size_t base, const std::vector<size_t>& order) {
  do {
    for (size_t i : order) {
      if (i < base || i >= base + 32 || b.failed) continue;
      if (b.threads[i].state == State::Runnable) resume(b, i);
    }
  } while (!b.failed && resolve_warp(b, base));
}

void run_block(Block& b, const std::vector<size_t>& order) {
  for (;;) {
    for (size_t i : order) {
      Thread& t = b.threads[i];
      if (t.state != State::Runnable || b.failed) continue;
      resume(b, i);
      if (t.state == State::AtWarpOp && resolve_warp(b, i / 32 * 32)) run_warp(b, i / 32 * 32, order);
    }
    if (b.failed) return;
    bool progress = false;
    for (size_t base = 0; base < b.threads.size() && !b.failed; base += 32)
      if (resolve_warp(b, base)) run_warp(b, base, order), progress = true;
    if (b.failed) return;
    if (progress) continue;
    size_t done = 0, at_barrier = 0, at_warp = 0;
    const Thread* first_barrier = nullptr;
    const Thread* exited = nullptr;
    for (const Thread& t : b.threads) {
      if (t.state == State::Done) ++done, exited = &t;
      if (t.state == State::AtBarrier) {
        ++at_barrier;
        if (!first_barrier) first_barrier = &t;
      }
      if (t.state == State::AtWarpOp) ++at_warp;
    }
    if (done == b.threads.size()) return;
    if (at_barrier + done == b.threads.size()) {
      if (done > 0) {
        fail(b, "barrier divergence: " + thread_name(*first_barrier) + " waits at __syncthreads at " +
                    where(first_barrier->site) + " but " + thread_name(*exited) + " has exited");
        return;
      }
      for (const Thread& t : b.threads) {
        if (t.site.line() != first_barrier->site.line() ||
            std::string(t.site.file_name()) != first_barrier->site.file_name()) {
          fail(b, "barrier divergence: " + thread_name(*first_barrier) + " waits at __syncthreads at " +
                      where(first_barrier->site) + " but " + thread_name(t) + " at " + where(t.site));
          return;
        }
      }
      for (Thread& t : b.threads) t.state = State::Runnable;
      continue;
    }
    fail(b, "deadlock: " + std::to_string(at_warp) + " threads wait at warp operations and " +
                std::to_string(at_barrier) + " at __syncthreads, and none can proceed");
    return;
  }
}

}  // namespace

ThreadContext& current() {
  if (!g_block || !g_block->running) {
    static ThreadContext host;  // threadIdx outside a kernel: zeros, as in host code on a GPU
    return host;
  }
  return g_block->running->ctx;
}

void* dynamic_shared() { return g_block ? g_block->shared[g_block->set].data() : nullptr; }

void syncthreads(const std::source_location& loc) {
  if (!g_block) return;
#if CUEMU_PROFILE
  if (g_block->running->ctx.linear_tid == 0) profile::barrier();
#endif
#if CUEMU_TSAN
  const void* sync = &g_sync.barrier[g_block->set][g_block->running->barriers++ % 2];
  hb_release(sync);
#endif
  park(State::AtBarrier, loc);
#if CUEMU_TSAN
  hb_acquire(sync);
#endif
}

uint64_t warp_op(WarpOpKind kind, unsigned mask, uint64_t value, int param, int width,
                 const std::source_location& loc) {
  if (!g_block) return value;
  Thread* t = g_block->running;
  const unsigned lane = t->ctx.linear_tid % 32;
  if (!(mask >> lane & 1u))
    fail_here("lane " + std::to_string(lane) + " is not in its own mask at " + where(loc));
  if (width < 1 || width > 32 || (width & (width - 1)) != 0)
    fail_here("shuffle width " + std::to_string(width) + " is not a power of two in [1, 32] at " +
              where(loc));
  t->kind = kind, t->mask = mask, t->value = value, t->param = param, t->width = width;
#if CUEMU_TSAN
  const void* warp_sync =
      &g_sync
           .warp[g_block->set][t->ctx.linear_tid / 32][kind == WarpOpKind::SyncWarp ? t->syncwarps++ % 2 : 0];
  if (kind == WarpOpKind::SyncWarp) hb_release(warp_sync);
#endif
  park(State::AtWarpOp, loc);
#if CUEMU_TSAN
  if (kind == WarpOpKind::SyncWarp) hb_acquire(warp_sync);
#endif
  return t->result;
}

void warp_mma(MmaLane& lane, const std::source_location& loc) {
  if (!g_block) device_error("wmma::mma_sync outside a kernel", loc);
#if CUEMU_PROFILE
  if (g_block->running->ctx.linear_tid % 32 == 0) profile::mma();
#endif
  warp_op(WarpOpKind::Mma, 0xffffffffu, to_bits(&lane), 0, 32, loc);
}

void device_error(const std::string& what, const std::source_location& loc) {
  if (!g_block) throw std::logic_error(what + " at " + where(loc));
  fail_here(what + " at " + where(loc));
}

void set_order(Order order, uint64_t seed) {
  g().order = order;
  g().seed = seed;
}
Order order() { return g().order; }

std::string last_failure() {
  std::lock_guard<std::mutex> lock(g().mu);
  return g().failure;
}

void reset_error() {
  std::lock_guard<std::mutex> lock(g().mu);
  g().last = g().sticky = cudaSuccess;
  g().failure.clear();
}

void set_max_dynamic_shared(const void* fn, int bytes) {
  std::lock_guard<std::mutex> lock(g().mu);
  g().max_dynamic_shared[fn] = bytes;
}

namespace {
// The limits of an sm_80/sm_90 launch (CUDA C++ Programming Guide, "Technical Specifications per
// Compute Capability"): what a GPU would refuse is refused here, with the reason.
std::string launch_config_error(const void* fn, dim3 grid, dim3 block, size_t shmem) {
  std::ostringstream os;
  const size_t nthreads = size_t(block.x) * block.y * block.z;
  if (block.x == 0 || block.y == 0 || block.z == 0 || grid.x == 0 || grid.y == 0 || grid.z == 0)
    os << "a grid or block dimension is 0";
  else if (block.x > 1024 || block.y > 1024 || block.z > 64 || nthreads > 1024)
    os << "block (" << block.x << "," << block.y << "," << block.z
       << ") exceeds 1024 threads or 1024 x 1024 x 64";
  else if (grid.x > 2147483647u || grid.y > 65535 || grid.z > 65535)
    os << "grid (" << grid.x << "," << grid.y << "," << grid.z << ") exceeds 2^31-1 x 65535 x 65535";
  if (!os.str().empty()) return os.str();
  int opt_in = 0;
  {
    std::lock_guard<std::mutex> lock(g().mu);
    auto it = g().max_dynamic_shared.find(fn);
    if (it != g().max_dynamic_shared.end()) opt_in = it->second;
  }
  const size_t limit = std::max<size_t>(48 * 1024, size_t(opt_in));
  if (shmem > limit)
    os << shmem << " bytes of dynamic shared memory exceed "
       << (opt_in > 48 * 1024
               ? "the kernel's opt-in of " + std::to_string(opt_in) + " bytes"
               : std::string("48 KiB (more needs cudaFuncSetAttribute("
                             "cudaFuncAttributeMaxDynamicSharedMemorySize), at most 227 KiB)"));
  return os.str();
}
}  // namespace

namespace {
LaunchObserver& launch_observer() {
  static LaunchObserver o;
  return o;
}
}  // namespace
void set_launch_observer(LaunchObserver observer) { launch_observer() = std::move(observer); }

void run_launch(const char* kernel, const void* fn, dim3 grid, dim3 block, size_t shmem,
                const ThreadBody& body) {
  if (launch_observer()) launch_observer()(kernel, grid, block);
  const size_t nthreads = size_t(block.x) * block.y * block.z;
  const size_t nblocks = size_t(grid.x) * grid.y * grid.z;
  if (g().sticky != cudaSuccess) return;  // a failed context runs nothing more, as on a GPU
  if (std::string bad = launch_config_error(fn, grid, block, shmem); !bad.empty()) {
    std::lock_guard<std::mutex> lock(g().mu);
    g().last = cudaErrorInvalidConfiguration;
    g().failure = std::string("kernel ") + kernel + ": invalid launch configuration: " + bad;
    return;
  }
  for (auto& set : g().fibers)
    while (set.size() < nthreads) set.push_back(std::make_unique<Fiber>(kStackBytes));
  Block b;
  b.kernel = kernel;
  b.body = &body;
  b.threads.resize(nthreads);
  g_block = &b;
#if CUEMU_TSAN
  hb_release(&g_sync.launch_begin);  // the host's writes (copies, parameters) precede the kernel
#endif
  const std::vector<size_t> block_order = make_order(nblocks, 0x5bd1e995);
#if CUEMU_PROFILE
  // The profiler may ask for a sample: `run` evenly spaced blocks, the same ones in every order.
  const uint64_t run = profile::launch_begin(kernel, grid, block, shmem);
  auto sampled = [&](size_t bi) { return (bi + 1) * run / nblocks > bi * run / nblocks; };
#endif
  size_t position = 0;
  for (size_t bi : block_order) {
#if CUEMU_PROFILE
    if (!sampled(bi)) continue;
#endif
    dim3 bidx(unsigned(bi % grid.x), unsigned(bi / grid.x % grid.y),
              unsigned(bi / (size_t(grid.x) * grid.y)));
    b.set = int(position % kSets);
    b.gen = unsigned(position++ / kSets);
#if CUEMU_TSAN
    // The poison fill is the emulator's, not a CUDA thread's access: TSan must not record it
    // (it would look like a host write racing with the previous block of this set).
    __tsan_ignore_thread_begin();
#endif
    b.shared[b.set].assign(shmem, 0xFF);  // uninitialised shared memory reads as NaN
#if CUEMU_TSAN
    __tsan_ignore_thread_end();
#endif
    for (size_t t = 0; t < nthreads; ++t) {
      Thread& th = b.threads[t];
      th = Thread{};
      th.ctx.thread_idx = dim3(unsigned(t % block.x), unsigned(t / block.x % block.y),
                               unsigned(t / (size_t(block.x) * block.y)));
      th.ctx.block_idx = bidx;
      th.ctx.block_dim = block;
      th.ctx.grid_dim = grid;
      th.ctx.linear_tid = unsigned(t);
      Fiber& f = *g().fibers[b.set][t];
      f.start(fiber_entry, &th);
#if CUEMU_TSAN
      // Race reports name the CUDA thread: "Thread T7 'kernel_name block (1,0,0) thread (33,0,0)'".
      char name[256];
      std::snprintf(name, sizeof name, "%s block (%u,%u,%u) thread (%u,%u,%u)", kernel, bidx.x, bidx.y,
                    bidx.z, th.ctx.thread_idx.x, th.ctx.thread_idx.y, th.ctx.thread_idx.z);
      __tsan_set_fiber_name(f.tsan_fiber(), name);
#endif
    }
#if CUEMU_PROFILE
    profile::block_begin(nthreads, b.shared[b.set].data(), shmem);
#endif
    run_block(b, make_order(nthreads, bi));
#if CUEMU_PROFILE
    profile::block_end();
#endif
    if (b.failed) break;
  }
#if CUEMU_PROFILE
  profile::launch_end();
#endif
#if CUEMU_TSAN
  hb_acquire(&g_sync.launch_end);  // the host sees everything the kernel wrote
#endif
  g_block = nullptr;
}

}  // namespace cuemu

// --- runtime API ---------------------------------------------------------------------------------
using cuemu::g;

namespace {
cudaError_t set_error(cudaError_t e) {
  if (e != cudaSuccess) g().last = e;
  return e;
}
}  // namespace

cudaError_t cudaMalloc(void** ptr, size_t bytes) {
  if (!ptr) return set_error(cudaErrorInvalidValue);
  // Exactly `bytes` (256-byte aligned, as cudaMalloc): under ASan the first byte past the end is
  // already a reported overflow; no rounding slack hides an off-by-one tail.
  void* p = nullptr;
  if (posix_memalign(&p, 256, std::max<size_t>(1, bytes)) != 0) p = nullptr;
  if (!p) return set_error(cudaErrorMemoryAllocation);
  std::memset(p, 0xFF, bytes);  // uninitialised device memory reads as NaN
  std::lock_guard<std::mutex> lock(g().mu);
  g().allocations[p] = bytes;
  *ptr = p;
  return cudaSuccess;
}

cudaError_t cudaFree(void* ptr) {
  if (!ptr) return cudaSuccess;
  std::lock_guard<std::mutex> lock(g().mu);
  auto it = g().allocations.find(ptr);
  if (it == g().allocations.end()) {
    g().last = cudaErrorInvalidValue;
    return cudaErrorInvalidValue;
  }
  g().allocations.erase(it);
  std::free(ptr);
  return cudaSuccess;
}

#if CUEMU_PROFILE
namespace cuemu {
std::vector<std::pair<uintptr_t, uintptr_t>> device_ranges() {
  std::lock_guard<std::mutex> lock(g().mu);
  std::vector<std::pair<uintptr_t, uintptr_t>> r;
  for (const auto& [p, bytes] : g().allocations)
    r.emplace_back(reinterpret_cast<uintptr_t>(p), reinterpret_cast<uintptr_t>(p) + bytes);
  return r;  // sorted: allocations is an ordered map
}
}  // namespace cuemu
#endif

namespace {
// Device ranges are checked: a copy that runs past an allocation is an error, as on a GPU.
bool device_range_ok(const void* p, size_t bytes) {
  std::lock_guard<std::mutex> lock(g().mu);
  auto it = g().allocations.upper_bound(p);
  if (it == g().allocations.begin()) return false;
  --it;
  auto base = static_cast<const char*>(it->first);
  auto q = static_cast<const char*>(p);
  return q >= base && q + bytes <= base + it->second;
}
}  // namespace

cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  if (bytes == 0) return cudaSuccess;
  const bool dst_dev = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
  const bool src_dev = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
  if ((dst_dev && !device_range_ok(dst, bytes)) || (src_dev && !device_range_ok(src, bytes)))
    return set_error(cudaErrorInvalidValue);
  std::memmove(dst, src, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t) {
  return cudaMemcpy(dst, src, bytes, kind);
}
cudaError_t cudaMemset(void* ptr, int value, size_t bytes) {
  if (bytes == 0) return cudaSuccess;
  if (!device_range_ok(ptr, bytes)) return set_error(cudaErrorInvalidValue);
  std::memset(ptr, value, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* ptr, int value, size_t bytes, cudaStream_t) {
  return cudaMemset(ptr, value, bytes);
}

struct CUstream_st {};
struct CUevent_st {
  std::chrono::steady_clock::time_point t;
};
cudaError_t cudaStreamCreate(cudaStream_t* s) {
  *s = new CUstream_st;
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t s) {
  delete s;
  return cudaSuccess;
}
// Launches run eagerly, so synchronising only reports what happened.
cudaError_t cudaStreamSynchronize(cudaStream_t) { return g().sticky; }
cudaError_t cudaDeviceSynchronize() { return g().sticky; }
cudaError_t cudaEventCreate(cudaEvent_t* e) {
  *e = new CUevent_st;
  return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned) { return cudaEventCreate(e); }
cudaError_t cudaEventQuery(cudaEvent_t e) { return e ? g().sticky : set_error(cudaErrorInvalidValue); }
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  delete e;
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t) {
  e->t = std::chrono::steady_clock::now();
  return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t) { return g().sticky; }
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b) {
  *ms = std::chrono::duration<float, std::milli>(b->t - a->t).count();
  return cudaSuccess;
}
cudaError_t cudaGetLastError() {
  std::lock_guard<std::mutex> lock(g().mu);
  cudaError_t e = g().last;
  g().last = g().sticky;
  return e;
}
cudaError_t cudaPeekAtLastError() { return g().last; }
cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}
namespace cuemu {
namespace {
struct DeviceProfile {
  const char* key;
  const char* name;
  int major, minor, sms;
  int l2_bytes;
  size_t smem_optin;
};
// NVIDIA's published limits of each GPU (CUDA C++ Programming Guide, compute capabilities table;
// the GPUs' data sheets for SMs and L2).
constexpr DeviceProfile kProfiles[] = {
    {"h100", "H100", 9, 0, 132, 50 << 20, 227 << 10},
    {"a100", "A100", 8, 0, 108, 40 << 20, 163 << 10},
    {"l4", "L4", 8, 9, 58, 48 << 20, 99 << 10},
    {"b200", "B200", 10, 0, 148, 126 << 20, 227 << 10},
};
}  // namespace

cudaDeviceProp device_profile(const char* key) {
  const DeviceProfile* d = nullptr;
  std::string known;
  for (const DeviceProfile& p : kProfiles) {
    if (std::strcmp(key, p.key) == 0) d = &p;
    known += std::string(known.empty() ? "" : ", ") + p.key;
  }
  if (!d)
    throw std::invalid_argument(std::string("NORMLAB_CUEMU_DEVICE='") + key +
                                "' is not a device profile: use one of " + known);
  cudaDeviceProp prop{};
  std::snprintf(prop.name, sizeof prop.name, "cuemu (CUDA emulated on the CPU, %s profile: %d SMs)", d->name,
                d->sms);
  prop.major = d->major;
  prop.minor = d->minor;
  prop.multiProcessorCount = d->sms;
  prop.l2CacheSize = d->l2_bytes;
  prop.sharedMemPerBlock = 48 << 10;
  prop.sharedMemPerBlockOptin = d->smem_optin;
  prop.totalGlobalMem = 0;  // host memory: no fixed size
  return prop;
}

namespace {
const cudaDeviceProp& active_profile() {
  static const cudaDeviceProp p = [] {
    const char* env = std::getenv("NORMLAB_CUEMU_DEVICE");
    return device_profile(env && *env ? env : "h100");
  }();
  return p;
}
}  // namespace
size_t shared_optin_limit() { return active_profile().sharedMemPerBlockOptin; }
}  // namespace cuemu

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (device != 0) return cudaErrorInvalidValue;
  *prop = cuemu::active_profile();
  return cudaSuccess;
}
const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorNotReady: return "device not ready";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
  }
  return "unknown error";
}
