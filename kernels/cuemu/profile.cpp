// The cuemu memory-traffic profiler: the load/store callbacks GCC's instrumentation calls, the
// per-warp grouping into requests, and the L2 model. See profile.h.
#include "profile.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "cuemu.h"

namespace cuemu {
// Device allocations (runtime.cpp): [base, base + bytes) of every live cudaMalloc.
std::vector<std::pair<uintptr_t, uintptr_t>> device_ranges();
}  // namespace cuemu

namespace cuemu::profile {
namespace {

struct Access {
  uintptr_t site, addr;
  uint32_t bytes;
  bool store, shared, evict_first;
};

struct State {
  bool active = false;
  Options options;
  // The launch being measured.
  bool in_launch = false, in_block = false;
  Launch launch;
  uintptr_t shared_lo = 0, shared_hi = 0;
  std::vector<std::pair<uintptr_t, uintptr_t>> ranges;  // sorted device allocations
  size_t last_range = 0;
  std::vector<std::vector<Access>> per_thread;
  std::unordered_set<uint64_t> read_sectors, written_sectors;
  // The op scope (NL_MODEL_OP).
  int op_depth = 0;
  std::string op;
  double op_flops = 0, op_min_bytes = 0;
  int op_launches = 0;
  uint64_t block_barriers = 0;  // of the running block
};
State& st() {
  static State s;
  return s;
}

bool in_device(State& s, uintptr_t a) {
  if (s.ranges.empty()) return false;
  const auto& r = s.ranges[s.last_range];
  if (a >= r.first && a < r.second) return true;
  auto it = std::upper_bound(s.ranges.begin(), s.ranges.end(), std::make_pair(a, UINTPTR_MAX));
  if (it == s.ranges.begin()) return false;
  --it;
  if (a >= it->first && a < it->second) {
    s.last_range = size_t(it - s.ranges.begin());
    return true;
  }
  return false;
}

inline void record(uintptr_t addr, uint32_t bytes, bool store, uintptr_t site, bool evict_first = false) {
  State& s = st();
  if (!s.in_block) return;
  const bool shared = addr >= s.shared_lo && addr < s.shared_hi;
  // Everything else a kernel touches is a register on a GPU (its locals on the fiber stack) or
  // a kernel parameter (constant memory): not memory traffic.
  if (!shared && !in_device(s, addr)) return;
  s.per_thread[current().linear_tid].push_back({site, addr, bytes, store, shared, evict_first});
}

struct Group {
  uintptr_t site;
  bool store, shared, evict_first;
  std::vector<std::pair<unsigned, Access>> lanes;  // (lane, access)
};

struct PairHash {
  size_t operator()(const std::pair<uintptr_t, uint32_t>& k) const {
    return std::hash<uintptr_t>()(k.first * 0x9E3779B97F4A7C15ull ^ k.second);
  }
};

// Shared memory: 32 banks of 4 bytes. A request is served in phases of at most 128 bytes (all 32
// lanes for 4-byte accesses, half-warps for 8 bytes, quarter-warps for 16); in each phase the
// lanes that hit distinct words of one bank serialise, the same word is a broadcast.
void count_shared(const Group& g, SharedStats& out) {
  unsigned bytes = 4;
  for (const auto& [lane, a] : g.lanes) bytes = std::max(bytes, a.bytes);
  const unsigned lanes_per_phase = std::max(1u, 128u / std::min(bytes, 128u));
  out.requests += 1;
  static std::vector<uintptr_t> words;
  for (unsigned lo = 0; lo < 32; lo += lanes_per_phase) {
    words.clear();
    for (const auto& [lane, a] : g.lanes)
      if (lane >= lo && lane < lo + lanes_per_phase)
        for (uintptr_t w = a.addr >> 2; w <= (a.addr + a.bytes - 1) >> 2; ++w) words.push_back(w);
    if (words.empty()) continue;
    std::sort(words.begin(), words.end());
    words.erase(std::unique(words.begin(), words.end()), words.end());
    unsigned per_bank[32] = {};
    for (uintptr_t w : words) ++per_bank[w % 32];
    out.wavefronts += *std::max_element(per_bank, per_bank + 32);
    out.ideal_wavefronts += (words.size() + 31) / 32;
  }
}

void count_global(State& s, const Group& g, std::vector<uint64_t>& stream) {
  static std::vector<uint64_t> sectors;  // reused: this runs once per warp-level request
  static std::vector<std::pair<uintptr_t, uint32_t>> spans;
  sectors.clear();
  spans.clear();
  unsigned lane_lo = 32, lane_hi = 0, width = 0;
  for (const auto& [lane, a] : g.lanes) {
    lane_lo = std::min(lane_lo, lane), lane_hi = std::max(lane_hi, lane), width = std::max(width, a.bytes);
    spans.emplace_back(a.addr, a.bytes);
    for (uintptr_t x = a.addr >> 5; x <= (a.addr + a.bytes - 1) >> 5; ++x) sectors.push_back(x);
  }
  std::sort(sectors.begin(), sectors.end());
  sectors.erase(std::unique(sectors.begin(), sectors.end()), sectors.end());
  std::sort(spans.begin(), spans.end());
  spans.erase(std::unique(spans.begin(), spans.end()), spans.end());
  GlobalStats& out = g.store ? s.launch.store : s.launch.load;
  out.requests += 1;
  out.sectors += sectors.size();
  // The ideal: lanes lane_lo..lane_hi reading consecutive elements from the lowest address, so
  // neither a row that starts off a sector boundary (odd H x W) nor predicated-off lanes (a
  // masked load) count as uncoalesced; a stride or a gather does.
  const uint64_t dense = uint64_t(lane_hi - lane_lo + 1) * width;
  out.ideal_sectors += std::min<uint64_t>(sectors.size(), (spans.front().first % 32 + dense + 31) / 32);
  auto& unique = g.store ? s.written_sectors : s.read_sectors;
  for (uint64_t x : sectors) {
    unique.insert(x);
    stream.push_back(stream_entry(x, g.store, g.evict_first));
  }
}

}  // namespace

void start(Options options) {
  State& s = st();
  s.options = std::move(options);
  s.active = true;
}
void stop() { st().active = false; }
bool active() { return st().active; }

OpScope::OpScope(const char* op, double flops, double min_bytes) {
  State& s = st();
  if (s.op_depth++ > 0) return;  // an op calling another op: the outer one names the launches
  s.op = op, s.op_flops = flops, s.op_min_bytes = min_bytes, s.op_launches = 0;
}
OpScope::~OpScope() {
  State& s = st();
  if (--s.op_depth == 0) s.op.clear();
}

void vector_access(const void* p, unsigned bytes, bool store, const void* site, bool evict_first) {
  record(reinterpret_cast<uintptr_t>(p), bytes, store, reinterpret_cast<uintptr_t>(site), evict_first);
}

uint64_t launch_begin(const char* kernel, const dim3& grid, const dim3& block, size_t shared_bytes) {
  State& s = st();
  const uint64_t blocks = uint64_t(grid.x) * grid.y * grid.z;
  if (!s.active) return blocks;
  s.in_launch = true;
  s.launch = Launch{};
  Launch& l = s.launch;
  l.kernel = kernel;
  l.grid[0] = grid.x, l.grid[1] = grid.y, l.grid[2] = grid.z;
  l.block[0] = block.x, l.block[1] = block.y, l.block[2] = block.z;
  l.shared_bytes = shared_bytes;
  l.blocks = blocks;
  if (!s.op.empty()) {
    l.op = s.op, l.op_flops = s.op_flops, l.op_min_bytes = s.op_min_bytes;
    l.op_launch = s.op_launches++;
  }
  uint64_t run = blocks;
  if (s.options.blocks_to_run)
    run = std::clamp<uint64_t>(s.options.blocks_to_run(l.kernel, blocks), 1, blocks);
  s.ranges = device_ranges();
  s.last_range = 0;
  s.read_sectors.clear();
  s.written_sectors.clear();
  return run;
}

void block_begin(size_t threads, const void* shared, size_t shared_bytes) {
  State& s = st();
  if (!s.in_launch) return;
  s.per_thread.resize(std::max(s.per_thread.size(), threads));
  for (size_t t = 0; t < threads; ++t) s.per_thread[t].clear();
  s.shared_lo = reinterpret_cast<uintptr_t>(shared);
  s.shared_hi = s.shared_lo + shared_bytes;
  s.in_block = true;
  s.block_barriers = 0;
}

void barrier() {
  State& s = st();
  if (s.in_block) ++s.block_barriers;
}

void mma() {
  State& s = st();
  if (s.in_block) ++s.launch.warp_mmas;
}

void block_end() {
  State& s = st();
  if (!s.in_block) return;
  s.in_block = false;
  Launch& l = s.launch;
  const size_t threads = size_t(l.block[0]) * l.block[1] * l.block[2];
  std::vector<std::vector<std::vector<uint64_t>>> warp_requests;  // [warp][request] -> sectors
  for (size_t base = 0; base < threads; base += 32) {
    std::vector<Group> groups;
    const unsigned lanes = unsigned(std::min<size_t>(32, threads - base));
    // Converged warps (every lane the same sequence of sites) group by position; otherwise by
    // (site, k-th execution of it in the lane), which pairs lanes across divergent branches.
    bool converged = true;
    const auto& first = s.per_thread[base];
    for (unsigned lane = 1; lane < lanes && converged; ++lane) {
      const auto& mine = s.per_thread[base + lane];
      converged = mine.size() == first.size();
      for (size_t i = 0; i < mine.size() && converged; ++i) converged = mine[i].site == first[i].site;
    }
    auto& requests = warp_requests.emplace_back();
    uint64_t loads = 0;
    auto count = [&](const Group& g) {
      if (g.shared)
        count_shared(g, g.store ? l.shared_store : l.shared_load);
      else
        count_global(s, g, requests.emplace_back()), loads += !g.store;
    };
    if (converged) {
      static Group g;  // reused: one request at a time
      for (size_t i = 0; i < first.size(); ++i) {
        g.site = first[i].site, g.store = first[i].store, g.shared = first[i].shared;
        g.evict_first = first[i].evict_first;
        g.lanes.clear();
        for (unsigned lane = 0; lane < lanes; ++lane)
          g.lanes.emplace_back(lane, s.per_thread[base + lane][i]);
        count(g);
      }
      l.warp_load_chain = std::max(l.warp_load_chain, loads);
      continue;
    }
    std::unordered_map<std::pair<uintptr_t, uint32_t>, size_t, PairHash> index;
    for (unsigned lane = 0; lane < lanes && !converged; ++lane) {
      std::unordered_map<uintptr_t, uint32_t> seen;  // the k-th execution of a site in this lane
      for (const Access& a : s.per_thread[base + lane]) {
        const auto key = std::make_pair(a.site, seen[a.site]++);
        auto [it, fresh] = index.try_emplace(key, groups.size());
        if (fresh) groups.push_back({a.site, a.store, a.shared, a.evict_first, {}});
        groups[it->second].lanes.emplace_back(lane, a);
      }
    }
    for (const Group& g : groups) count(g);
    l.warp_load_chain = std::max(l.warp_load_chain, loads);
  }
  // The block's sector stream: its warps interleaved request by request, as they run together.
  l.block_barriers = std::max(l.block_barriers, s.block_barriers);
  std::vector<uint64_t>& stream = l.streams.emplace_back();
  for (size_t r = 0;; ++r) {
    bool any = false;
    for (const auto& w : warp_requests)
      if (r < w.size()) {
        stream.insert(stream.end(), w[r].begin(), w[r].end());
        any = true;
      }
    if (!any) break;
  }
  ++l.blocks_run;
}

void launch_end() {
  State& s = st();
  if (!s.in_launch) return;
  s.in_launch = false;
  s.launch.unique_read_bytes = 32 * s.read_sectors.size();
  s.launch.unique_written_bytes = 32 * s.written_sectors.size();
  if (s.options.on_launch) s.options.on_launch(s.launch);
  s.launch = Launch{};
  s.read_sectors.clear();
  s.written_sectors.clear();
}

// The L2 model: an LRU list over sectors, intrusive doubly linked list in vectors, indexed by a
// hash map.
struct L2::Impl {
  static constexpr uint32_t kNil = UINT32_MAX;
  struct Node {
    uint64_t sector;
    uint32_t prev, next;
    bool dirty;
  };
  size_t capacity;
  std::vector<Node> nodes;
  std::unordered_map<uint64_t, uint32_t> where;
  uint32_t head = kNil, tail = kNil;  // head: most recent; tail: next to go
  Dram d;

  void unlink(uint32_t i) {
    Node& n = nodes[i];
    (n.prev == kNil ? head : nodes[n.prev].next) = n.next;
    (n.next == kNil ? tail : nodes[n.next].prev) = n.prev;
  }
  void push_front(uint32_t i) {
    nodes[i].prev = kNil, nodes[i].next = head;
    if (head != kNil) nodes[head].prev = i;
    head = i;
    if (tail == kNil) tail = i;
  }
  void push_back(uint32_t i) {
    nodes[i].next = kNil, nodes[i].prev = tail;
    if (tail != kNil) nodes[tail].next = i;
    tail = i;
    if (head == kNil) head = i;
  }
  void touch(uint64_t sector, bool store, bool evict_first) {
    auto it = where.find(sector);
    if (it != where.end()) {
      if (!evict_first) unlink(it->second), push_front(it->second);
      if (store && !nodes[it->second].dirty) d.write_bytes += 32, nodes[it->second].dirty = true;
      return;
    }
    // A miss. A load fetches the sector; a store allocates it without a fetch, and the write-back
    // it will cost is counted now, to the launch that wrote it.
    (store ? d.write_bytes : d.read_bytes) += 32;
    uint32_t i;
    if (nodes.size() < capacity) {
      i = uint32_t(nodes.size());
      nodes.push_back({sector, kNil, kNil, store});
    } else {
      i = tail;
      unlink(i);
      where.erase(nodes[i].sector);
      nodes[i] = {sector, kNil, kNil, store};
    }
    where.emplace(sector, i);
    evict_first ? push_back(i) : push_front(i);
  }
};

L2::L2(uint64_t bytes) : impl_(new Impl) {
  impl_->capacity = std::max<uint64_t>(1, bytes / 32);
  impl_->nodes.reserve(impl_->capacity);
  impl_->where.reserve(impl_->capacity * 2);
}
L2::~L2() { delete impl_; }

Dram L2::run(const Launch& launch, uint64_t concurrent_blocks) {
  if (launch.blocks_run != launch.blocks)
    throw std::invalid_argument("L2 model: " + launch.kernel + " ran a sample of its blocks");
  Impl& m = *impl_;
  m.d = Dram{};
  constexpr size_t kRounds = 64;
  const size_t wave = std::max<uint64_t>(1, concurrent_blocks);
  for (size_t first = 0; first < launch.streams.size(); first += wave) {
    const size_t last = std::min(launch.streams.size(), first + wave);
    for (size_t r = 0; r < kRounds; ++r)
      for (size_t b = first; b < last; ++b) {
        const auto& s = launch.streams[b];
        for (size_t i = s.size() * r / kRounds; i < s.size() * (r + 1) / kRounds; ++i)
          m.touch(entry_sector(s[i]), entry_store(s[i]), entry_evict_first(s[i]));
      }
  }
  return m.d;
}

void L2::flush() {
  Impl& m = *impl_;
  m.nodes.clear();
  m.where.clear();
  m.head = m.tail = Impl::kNil;
}

Dram simulate_l2(const Launch& launch, uint64_t l2_bytes, uint64_t concurrent_blocks) {
  L2 l2(l2_bytes);
  return l2.run(launch, concurrent_blocks);
}

}  // namespace cuemu::profile

// --- the instrumentation's callbacks ---------------------------------------------------------------
// GCC's -fsanitize=kernel-address with --param asan-instrumentation-with-call-threshold=0 calls
// these before every load and store of the instrumented files (no shadow memory is involved:
// checking is not their job here). The caller's address identifies the access site.
#define CUEMU_CALLBACKS(n)                                                                         \
  extern "C" void __asan_load##n##_noabort(uintptr_t a) {                                          \
    cuemu::profile::record(a, n, false, reinterpret_cast<uintptr_t>(__builtin_return_address(0))); \
  }                                                                                                \
  extern "C" void __asan_store##n##_noabort(uintptr_t a) {                                         \
    cuemu::profile::record(a, n, true, reinterpret_cast<uintptr_t>(__builtin_return_address(0)));  \
  }
CUEMU_CALLBACKS(1)
CUEMU_CALLBACKS(2)
CUEMU_CALLBACKS(4)
CUEMU_CALLBACKS(8)
CUEMU_CALLBACKS(16)
extern "C" void __asan_loadN_noabort(uintptr_t a, size_t n) {
  cuemu::profile::record(a, uint32_t(n), false, reinterpret_cast<uintptr_t>(__builtin_return_address(0)));
}
extern "C" void __asan_storeN_noabort(uintptr_t a, size_t n) {
  cuemu::profile::record(a, uint32_t(n), true, reinterpret_cast<uintptr_t>(__builtin_return_address(0)));
}
extern "C" void __asan_handle_no_return() {}
// Dynamic initialisation order checks of instrumented files: nothing to check here.
extern "C" void __asan_before_dynamic_init(const char*) {}
extern "C" void __asan_after_dynamic_init() {}
