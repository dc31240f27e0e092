#pragma once
// The cuemu memory-traffic profiler (NORMLAB_CUDA_PROFILE builds; docs/cuda-emulation.md,
// "Memory-traffic profiler"). GCC instruments every load and store of kernels/cuda/*.cu
// (-fsanitize=kernel-address with calls, no shadow memory: the callbacks are ours); the profiler
// keeps each CUDA thread's accesses to device and shared memory in order and, per warp, groups the
// lanes' k-th execution of one access site into one warp-level request, as the hardware issues it.
// Per launch it reports what decides a kernel's speed on a GPU and can be measured without one:
//   - global requests and 32-byte sectors per request against the ideal for the lanes' bytes
//     (those bytes contiguous from the request's lowest address);
//   - shared-memory requests and wavefronts (bank conflicts: wavefronts above the ideal);
//   - unique bytes read and written (the DRAM floor) and, per executed block, the order of its
//     sectors, from which simulate_l2 estimates DRAM traffic for a given L2 and concurrency.
// Launchers name the op each launch belongs to with NL_MODEL_OP (cuda_common.h): its FLOPs and its
// minimum traffic, so measurements stand against the op's own floor.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

struct dim3;

namespace cuemu::profile {

struct GlobalStats {
  uint64_t requests = 0, sectors = 0, ideal_sectors = 0;
};
struct SharedStats {
  uint64_t requests = 0, wavefronts = 0, ideal_wavefronts = 0;
};

struct Launch {
  std::string kernel;
  unsigned grid[3] = {1, 1, 1}, block[3] = {1, 1, 1};
  size_t shared_bytes = 0;
  // The op (NL_MODEL_OP in the launcher); empty when the launcher names none.
  std::string op;
  double op_flops = 0, op_min_bytes = 0;
  int op_launch = 0;                    // 0 for the op's first launch, 1 for its second, ...
  uint64_t blocks = 0, blocks_run = 0;  // blocks_run < blocks: a sample (Options::blocks_to_run)
  GlobalStats load, store;
  SharedStats shared_load, shared_store;
  uint64_t unique_read_bytes = 0, unique_written_bytes = 0;  // of the blocks that ran
  // The longest dependent chain a block can have: the most global load requests one warp issued
  // and the most __syncthreads() one block passed, over the blocks that ran (the GPU model's
  // latency term: a warp waits for each load before it uses it).
  uint64_t warp_load_chain = 0, block_barriers = 0;
  // Warp-level tensor-core instructions (mma.sync, wmma::mma_sync) of the blocks that ran: the
  // trips of a kernel's tensor-core loop when its loads are all from shared memory.
  uint64_t warp_mmas = 0;
  // Per block that ran, in block order: its global sector accesses (stream_entry), in the order
  // its warps issued them (warps interleaved request by request).
  std::vector<std::vector<uint64_t>> streams;
  // Counts scaled from the sample to the whole grid (1 when every block ran).
  double scale() const { return blocks_run ? double(blocks) / double(blocks_run) : 0.0; }
};

// An entry of Launch::streams: the sector (address / 32), whether it was a store, and whether
// the access asked for evict-first caching (__ldcs/__stcs: data used once, e.g. a norm's output).
inline uint64_t stream_entry(uint64_t sector, bool store, bool evict_first) {
  return sector << 2 | uint64_t(evict_first) << 1 | uint64_t(store);
}
inline uint64_t entry_sector(uint64_t e) { return e >> 2; }
inline bool entry_store(uint64_t e) { return e & 1; }
inline bool entry_evict_first(uint64_t e) { return e >> 1 & 1; }

struct Options {
  // How many of a launch's `blocks` to run (evenly spaced; the others are skipped and their
  // outputs are garbage). Default: all. Sampling is for the model only, never for results.
  std::function<uint64_t(const std::string& kernel, uint64_t blocks)> blocks_to_run;
  // Called at the end of every launch; the Launch is discarded afterwards.
  std::function<void(const Launch&)> on_launch;
};

// Starts or stops recording; between them every launch is measured and handed to on_launch.
void start(Options options);
void stop();
bool active();

struct Dram {
  double read_bytes = 0, write_bytes = 0;
};
// An L2 over 32-byte sectors that lives across launches, as a GPU's does between kernels on one
// stream. LRU; an evict-first access that misses is inserted at the eviction end and one that
// hits is not promoted. Stores allocate without a fetch; a sector's write-back is counted to the
// launch that makes it dirty (it reaches DRAM once, sooner or later).
class L2 {
 public:
  explicit L2(uint64_t bytes);
  ~L2();
  L2(const L2&) = delete;
  L2& operator=(const L2&) = delete;
  // The DRAM traffic of `launch` when `concurrent_blocks` run at once: blocks start in index
  // order in waves, and the blocks of a wave advance through their streams at the same rate.
  // Only for launches whose blocks all ran.
  Dram run(const Launch& launch, uint64_t concurrent_blocks);
  // Forgets everything (an unknown launch ran in between: start cold).
  void flush();

 private:
  struct Impl;
  Impl* impl_;
};
// One launch on a cold L2.
Dram simulate_l2(const Launch& launch, uint64_t l2_bytes, uint64_t concurrent_blocks);

// The op that the launches inside this scope belong to (used by NL_MODEL_OP).
class OpScope {
 public:
  OpScope(const char* op, double flops, double min_bytes);
  ~OpScope();
  OpScope(const OpScope&) = delete;
  OpScope& operator=(const OpScope&) = delete;
};

// A vector or cache-hinted access (float4, uchar4; __ldcs/__stcs) made by one thread as one
// instruction, reported by the helpers of cuda_common.h; `site` identifies the instruction.
void vector_access(const void* p, unsigned bytes, bool store, const void* site, bool evict_first = false);

// Hooks for the scheduler (runtime.cpp).
uint64_t launch_begin(const char* kernel, const dim3& grid, const dim3& block, size_t shared_bytes);
void block_begin(size_t threads, const void* shared, size_t shared_bytes);
void block_end();
void barrier();  // thread 0 of the running block reached __syncthreads()
void mma();      // lane 0 of a warp of the running block issued a tensor-core instruction
void launch_end();

}  // namespace cuemu::profile
