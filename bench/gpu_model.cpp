// What the CUDA kernels would do on an A100, an H100 and an H200, measured without a GPU: one
// training step of the comparison network (forward, NLL loss, backward, SGD) runs on emulated CUDA
// under the cuemu memory-traffic profiler (kernels/cuemu/profile.h, NORMLAB_CUDA_PROFILE builds),
// and every launch is reported with its measured requests, sectors per request, shared-memory
// wavefronts and unique bytes, the DRAM traffic of an L2 model, its occupancy from ptxas'
// registers and the documented per-SM limits, and a modelled time per GPU.
//
//   gpu_model --batches 128,512 --norms bn,gn,ln --ptxas build-nvcc/ptxas-summary.txt
//             --sass build-nvcc/sass-summary.json [--constants bench/gpu_model_constants.json]
//             [--markdown] [--bench-norm-json bench/gpu_model_norms.json]
//             [--measured DIR [--fit FILE] [--compare-md FILE]]
//
// A MODEL, to be checked on a GPU (scripts/gpu-check.sh prints measured times beside it). Per
// launch (docs/gpu-model.md has the derivation and what it still cannot see):
//   time = max(bandwidth, FLOPs, issue + latency) + gap, where
//   - bandwidth: DRAM bytes of the L2 model / (share x the datasheet bandwidth);
//   - FLOPs: the op's FLOPs on its widest launch / the TF32 tensor-core or FP32 peak;
//   - issue: warp instructions from the kernel's SASS (scripts/sass_summary.py), counted by what
//     the profiler saw run: trips of a loop that holds a barrier by the block's barriers, other
//     loops by the global loads; on the busiest SM at four warp instructions per clock;
//   - latency: the longest chain a block waits through, (loads of its busiest warp / loads per
//     trip of the kernel's hottest loop, and at least one per barrier interval) memory rounds plus
//     its barriers, once per wave of resident blocks;
//   - gap: the fixed cost of a launch on the device.
//   A training step adds the host: each launch takes at least `host` (dispatch and autograd).
//   The constants (memory round, barrier, gap, host, bandwidth share, and whether issue and
//   latency add or overlap) are fitted (--fit) on the batch-128 rows of a GPU run only;
//   everything else is a datasheet figure or measured here.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/cuemu/profile.h"
#include "normlab/core/kernel/stubs.h"
#include "normlab/nn/models.h"
#include "gpu_datasheet.h"
#include "norm_cases.h"
#include "normlab/core/ops.h"
#include "normlab/core/rng.h"
#include "normlab/nn/optim.h"

namespace {
using namespace nl;
namespace prof = cuemu::profile;
using json = nlohmann::json;

using Gpu = bench::GpuDatasheet;
using bench::kGpus;
constexpr int kH200 = 2;
// Warp instructions issued per clock per SM: four schedulers, one each (the architecture
// whitepapers of the A100 and H100).
constexpr double kIssuePerClock = 4.0;

// The fitted constants (seconds), from --constants; --fit replaces them.
struct Constants {
  double latency = 1e-6;  // one dependent round of global loads
  double barrier = 0.1e-6;
  double gap = 2e-6;   // fixed device cost of one launch
  double host = 5e-6;  // the host's time per launch in a training step
  // The share of the datasheet's DRAM bandwidth a streaming launch reaches (the best published
  // memory-bound kernels: about 0.9, QuACK on an H100; docs/gpu-model.md).
  double bandwidth_share = 0.9;
  // How issue and latency combine: "max" (enough warps per SM to hide one behind the other) or
  // "sum" (a block's warps wait together at its barriers, so a round's instructions and its
  // memory latency follow one another). Chosen by the fit.
  bool additive = false;
  std::string source = "built-in guesses (no --constants file)";
};

Constants load_constants(const std::string& path) {
  Constants c;
  if (path.empty()) return c;
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read the model constants '" + path + "'");
  const json j = json::parse(in, nullptr, false);
  if (j.is_discarded() || !j.contains("us"))
    throw std::runtime_error("'" + path + "' is not a gpu_model constants file (no \"us\" object)");
  const json& u = j["us"];
  for (const char* k : {"latency", "barrier", "gap", "host"})
    if (!u.contains(k) || !u[k].is_number()) throw std::runtime_error("'" + path + "' has no number us." + k);
  c.latency = u["latency"].get<double>() * 1e-6, c.barrier = u["barrier"].get<double>() * 1e-6;
  c.gap = u["gap"].get<double>() * 1e-6, c.host = u["host"].get<double>() * 1e-6;
  c.additive = j.value("combine", "max") == "sum";
  c.bandwidth_share = j.value("bandwidth_share", 0.9);
  c.source = path + (j.contains("fitted_on") ? " (fitted on " + j["fitted_on"].get<std::string>() + ")" : "");
  return c;
}

// "implicit_gemm_kernel<Op>" -> "implicit_gemm_kernel"
std::string base_name(const std::string& k) { return k.substr(0, k.find('<')); }

// A launch's template arguments as the SASS names them: "<Op>" (the launcher's own template
// parameter, as cuemu names the launch) resolved through the op the launch belongs to.
std::string template_args(const std::string& kernel, const std::string& op) {
  const size_t lt = kernel.find('<');
  std::string a = lt == std::string::npos ? "" : kernel.substr(lt);
  if (a == "<Op>") {
    if (op == "conv2d_fwd" || op == "linear") return "<ConvFwdOp>";
    if (op == "conv2d_bwd_data") return "<ConvBwdDataOp>";
    if (op == "conv2d_bwd_weight") return "<ConvBwdWeightOp>";
  }
  return a;
}

// Per (arch, kernel) facts from check-nvcc's summaries, one entry per instantiation (base name,
// template arguments as the summary writes them).
template <typename T>
struct PerInstantiation {
  struct Entry {
    std::string arch, base, args;
    T value;
  };
  std::vector<Entry> entries;
  // The entry whose arguments are `args`, else the one `less` ranks highest among the kernel's
  // instantiations (nullptr: the kernel is not in the summary).
  template <typename Less>
  const T* find(const std::string& arch, const std::string& base, const std::string& args, Less less) const {
    const T* most = nullptr;
    for (const Entry& e : entries) {
      if (e.arch != arch || e.base != base) continue;
      if (e.args == args) return &e.value;
      if (!most || less(*most, e.value)) most = &e.value;
    }
    return most;
  }
};

// Registers per thread from scripts/check-nvcc.sh's summary, per (arch, kernel): the
// instantiation whose template arguments appear in the launch's name, else the most of any
// instantiation (occupancy then errs low).
struct Registers : PerInstantiation<int> {
  void load(const std::string& path) {
    std::ifstream in(path);
    if (!in)
      throw std::runtime_error("cannot read the ptxas summary '" + path +
                               "' (run scripts/check-nvcc.sh first, or pass --ptxas)");
    const std::regex line(R"((sm_\d+)\s+(\d+) regs.*nl::cuda::(\w+)(<[^(]*>)?\()");
    for (std::string l; std::getline(in, l);) {
      std::smatch m;
      if (std::regex_search(l, m, line)) entries.push_back({m[1], m[3], m[4], std::stoi(m[2])});
    }
    if (entries.empty()) throw std::runtime_error("no kernels in the ptxas summary '" + path + "'");
  }
  int get(const std::string& arch, const std::string& kernel) const {
    const size_t lt = kernel.find('<');
    const std::string args = lt == std::string::npos ? "" : kernel.substr(lt);
    const int* r = find(arch, base_name(kernel), args, std::less<int>());
    return r ? *r : -1;
  }
};

// The instruction mix of a kernel's SASS (scripts/sass_summary.py, run by check-nvcc.sh).
struct Mix {
  double per_load = 0;        // instructions of the innermost loops per global load in them
  double outside = 0;         // instructions outside every loop (once per warp)
  double loads_per_trip = 1;  // global loads per trip of the hottest loop (most bytes per trip)
  // The largest innermost loop that holds a barrier (a GEMM's k-loop): its instructions and
  // barriers per trip. Its trips are counted by barriers, not loads: predicated-off loads (a
  // tile's edge, padding) still issue but the profiler does not see them.
  double barrier_loop = 0, barriers_per_trip = 0;
  // The largest innermost loop with tensor-core instructions and no barrier (a direct
  // convolution's k-loop over shared memory, no global loads): its instructions per tensor-core
  // instruction. Its trips are counted by the profiler's warp mma instructions; it is left out of
  // per_load.
  double per_mma = 0;
};

struct Sass : PerInstantiation<Mix> {
  void load(const std::string& path) {
    std::ifstream in(path);
    if (!in)
      throw std::runtime_error("cannot read the SASS summary '" + path +
                               "' (run scripts/check-nvcc.sh with cuobjdump at hand, or pass --sass)");
    const json j = json::parse(in, nullptr, false);
    if (j.is_discarded() || !j.is_object()) throw std::runtime_error("'" + path + "' is not JSON");
    const std::regex name(R"(nl::cuda::(\w+)(<[^(]*>)?\()");
    for (const auto& [arch, kernels] : j.items())
      for (const auto& [demangled, k] : kernels.items()) {
        std::smatch m;
        if (!std::regex_search(demangled, m, name)) continue;
        std::string args = m[2];
        for (size_t at; (at = args.find("nl::cuda::")) != std::string::npos;) args.erase(at, 10);
        Mix mix;
        // The tensor-core loop first: it is not anchored on loads.
        const json* mma_loop = nullptr;
        for (const json& l : k["loops"]) {
          const json& c = l["classes"];
          const double tensor = c.contains("tensor") ? c["tensor"].get<double>() : 0.0;
          if (!l["innermost"].get<bool>() || tensor == 0 || l["bar"].get<double>() > 0) continue;
          if (!mma_loop || l["instructions"].get<double>() > (*mma_loop)["instructions"].get<double>())
            mma_loop = &l, mix.per_mma = l["instructions"].get<double>() / tensor;
        }
        double loop_instr = 0, loop_loads = 0, loop_stores = 0, hot_bytes = -1;
        for (const json& l : k["loops"]) {
          if (!l["innermost"].get<bool>() || &l == mma_loop) continue;
          const json& c = l["classes"];
          loop_instr += l["instructions"].get<double>();
          loop_loads += l["ldg"].get<double>();
          loop_stores += c.contains("stg") ? c["stg"].get<double>() : 0.0;
          if (l["ldg_bytes"].get<double>() > hot_bytes)
            hot_bytes = l["ldg_bytes"].get<double>(),
            mix.loads_per_trip = std::max(1.0, l["ldg"].get<double>());
          if (l["bar"].get<double>() > 0 && l["instructions"].get<double>() > mix.barrier_loop)
            mix.barrier_loop = l["instructions"].get<double>(),
            mix.barriers_per_trip = l["bar"].get<double>();
        }
        // No loop loads (a kernel whose loop the compiler unrolled whole): its loads are issued
        // together, all in one round.
        if (loop_loads == 0 && k["classes"].contains("ldg"))
          mix.loads_per_trip = std::max(1.0, k["classes"]["ldg"].get<double>());
        // Loops without global loads (a fill) are counted per store instead: per_load then
        // stands for per memory instruction (see terms_of).
        const double anchor = loop_loads > 0 ? loop_loads : loop_stores;
        mix.per_load = anchor > 0 ? loop_instr / anchor : 0.0;
        mix.outside = k["outside_loops"].get<double>();
        entries.push_back({arch, m[1], args, mix});
      }
    if (entries.empty()) throw std::runtime_error("no kernels in the SASS summary '" + path + "'");
  }
  // The instantiation the launch ran, else the costliest of the kernel's instantiations.
  const Mix* get(const std::string& arch, const std::string& kernel, const std::string& op) const {
    return find(arch, base_name(kernel), template_args(kernel, op),
                [](const Mix& a, const Mix& b) { return a.per_load < b.per_load; });
  }
};

// Resident blocks per SM: the least of the thread, block, register and shared-memory limits
// (registers allocated per warp in units of 256, shared memory in 128-byte units plus 1 KiB
// reserved per block on sm_80/sm_90).
int blocks_per_sm(const Gpu& g, int threads, int regs, size_t shmem) {
  const int warps = (threads + 31) / 32;
  int n = std::min(32, 64 / warps);
  if (regs > 0) {
    const int per_warp = (regs * 32 + 255) / 256 * 256;
    n = std::min(n, 65536 / (per_warp * warps));
  }
  const size_t smem = (shmem + 127) / 128 * 128 + 1024;
  n = std::min<int>(n, int(size_t(g.smem_per_sm) / smem));
  return std::max(n, 0);
}

int threads_of(const prof::Launch& l) { return int(l.block[0] * l.block[1] * l.block[2]); }

// The resident blocks of `l` on all SMs of `g`: the L2 model's wave.
uint64_t wave_of(const Gpu& g, const Registers& regs, const prof::Launch& l) {
  return uint64_t(g.sms) *
         uint64_t(std::max(1, blocks_per_sm(g, threads_of(l), regs.get(g.arch, l.kernel), l.shared_bytes)));
}

// What a launch costs on one GPU before the fitted constants: seconds of bandwidth, FLOPs and
// issue, and the latency chain in memory rounds and barriers per wave.
struct Terms {
  double dram_at_peak = 0, flops = 0, issue = 0;  // seconds; DRAM at the datasheet's bandwidth
  double rounds = 0, barriers = 0, waves = 1;
  double warp_instructions = 0;
};

double bandwidth_of(const Terms& t, const Constants& c) { return t.dram_at_peak / c.bandwidth_share; }

double latency_of(const Terms& t, const Constants& c) {
  return t.waves * (t.rounds * c.latency + t.barriers * c.barrier);
}

double launch_seconds(const Terms& t, const Constants& c) {
  const double lat = latency_of(t, c);
  const double core = c.additive ? t.issue + lat : std::max(t.issue, lat);
  return std::max({bandwidth_of(t, c), t.flops, core}) + c.gap;
}

// Which term decides a launch's time.
const char* bound_of(const Terms& t, const Constants& c) {
  const double lat = latency_of(t, c);
  const double core = c.additive ? t.issue + lat : std::max(t.issue, lat);
  const double m = std::max({bandwidth_of(t, c), t.flops, core});
  if (m < 0.05 * c.gap) return "launch";
  if (m == bandwidth_of(t, c)) return "bandwidth";
  if (m == t.flops) return "flops";
  if (c.additive) return t.issue >= lat ? "issue+latency" : "latency+issue";
  return t.issue >= lat ? "issue" : "latency";
}

Terms terms_of(const Gpu& g, const Registers& regs, const Sass& sass, const prof::Launch& l, double dram,
               double flops) {
  Terms t;
  const double busy = std::min(1.0, double(l.blocks) / g.sms);
  const double peak = l.kernel.find("tf32") != std::string::npos ? g.tf32 : g.fp32;
  t.dram_at_peak = dram / g.bandwidth;
  t.flops = flops / peak / busy;
  const Mix* mix = sass.get(g.arch, l.kernel, l.op);
  if (!mix) throw std::runtime_error("kernel " + l.kernel + " is not in the SASS summary for " + g.arch);
  const double s = l.scale();
  const double warps = double(l.blocks) * ((threads_of(l) + 31) / 32);
  if (mix->barrier_loop > 0) {
    const double trips = double(l.block_barriers) / mix->barriers_per_trip;
    t.warp_instructions = warps * (trips * mix->barrier_loop + mix->outside);
  } else {
    const double anchor = double(l.load.requests ? l.load.requests : l.store.requests) * s;
    t.warp_instructions = anchor * mix->per_load + mix->outside * warps;
  }
  t.warp_instructions += double(l.warp_mmas) * s * mix->per_mma;
  // The busiest SM runs ceil(blocks / SMs) blocks.
  const double per_sm = std::ceil(double(l.blocks) / g.sms) * t.warp_instructions / double(l.blocks);
  t.issue = per_sm / (kIssuePerClock * g.clock);
  const int resident =
      std::max(1, blocks_per_sm(g, threads_of(l), regs.get(g.arch, l.kernel), l.shared_bytes));
  t.waves = std::ceil(double(l.blocks) / (double(g.sms) * resident));
  // A round of loads per trip of the hottest loop, and at least one per barrier interval that
  // has loads: a loop that stages through shared memory waits for its loads before its barrier.
  t.barriers = double(l.block_barriers);
  t.rounds = std::max(std::ceil(double(l.warp_load_chain) / mix->loads_per_trip),
                      std::min(double(l.warp_load_chain), t.barriers));
  return t;
}

// One modelled case: its launches' terms per GPU, and a label per launch.
struct Case {
  std::string name;
  std::vector<Terms> terms[3];
  std::vector<std::string> labels;  // per launch: op and kernel
  double seconds(int gi, const Constants& c, bool with_host) const {
    double sum = 0;
    for (const Terms& t : terms[gi])
      sum += with_host ? std::max(launch_seconds(t, c), c.host) : launch_seconds(t, c);
    return sum;
  }
};

// The model's cases for every normlab row of bench_norm_cuda (same names, same calls through the
// kernel stubs, L2 cold per call as the benchmark flushes it).
std::vector<Case> bench_norm_cases(const Registers& regs, const Sass& sass) {
  const Device cuda = Device::cuda();
  std::vector<Case> cases;
  for (int kind : {bench::kBN, bench::kGN, bench::kLN})
    for (int pass : {bench::kFwdTrain, bench::kFwdEval, bench::kBwd})
      for (int64_t N : bench::kNormBatches)
        for (const auto& sh : bench::kNormShapes) {
          const int64_t C = sh[0], HW = sh[1], n = N * C * HW, G = bench::norm_groups(kind);
          Tensor x = Tensor::full({n}, 0.5f, cuda), dy = Tensor::full({n}, 0.25f, cuda);
          Tensor y = Tensor::empty({n}, DType::F32, cuda), dx = Tensor::empty({n}, DType::F32, cuda);
          const int64_t stats = std::max(C, N * G);
          Tensor gamma = Tensor::ones({stats}, cuda), beta = Tensor::zeros({stats}, DType::F32, cuda);
          Tensor dgamma = Tensor::empty({stats}, DType::F32, cuda),
                 dbeta = Tensor::empty({stats}, DType::F32, cuda);
          Tensor mean = Tensor::zeros({stats}, DType::F32, cuda), rstd = Tensor::ones({stats}, cuda);
          Tensor rmean = Tensor::zeros({stats}, DType::F32, cuda), rvar = Tensor::ones({stats}, cuda);
          NormParams p;
          p.N = N, p.C = C, p.HxW = HW, p.G = G, p.training = pass != bench::kFwdEval;
          p.kind = kind == bench::kBN ? NormKind::Batch : NormKind::Group;
          NormFwdArgs f;
          f.x = x.data_f32(), f.gamma = gamma.data_f32(), f.beta = beta.data_f32(), f.y = y.data_f32();
          f.mean = mean.data_f32(), f.rstd = rstd.data_f32();
          if (kind == bench::kBN) f.running_mean = rmean.data_f32(), f.running_var = rvar.data_f32();
          NormBwdArgs g;
          g.x = x.data_f32(), g.dy = dy.data_f32(), g.gamma = gamma.data_f32(), g.mean = mean.data_f32();
          g.rstd = rstd.data_f32(), g.dx = dx.data_f32(), g.dgamma = dgamma.data_f32(),
          g.dbeta = dbeta.data_f32();
          auto fwd = [&] { norm_fwd_stub(cuda, p, f); };
          fwd();  // the statistics backward needs
          std::vector<prof::Launch> launches;
          prof::Options o;
          o.on_launch = [&](const prof::Launch& l) { launches.push_back(l); };
          prof::start(o);
          if (pass != bench::kBwd)
            fwd();
          else
            norm_bwd_stub(cuda, p, g);
          prof::stop();
          // The op's FLOPs count on its launch with the most blocks: on its first, a one-block
          // finishing kernel (BatchNorm eval starts with one) would be charged the whole op's
          // arithmetic at 1/132 of the GPU.
          size_t widest = 0;
          for (size_t i = 0; i < launches.size(); ++i)
            if (launches[i].blocks > launches[widest].blocks) widest = i;
          Case cs;
          cs.name = bench::norm_case_name(kind, pass, N, C, HW) + "/normlab";
          for (int gi = 0; gi < 3; ++gi) {
            prof::L2 l2(uint64_t(kGpus[gi].l2));  // flushed before every timed iteration
            for (size_t i = 0; i < launches.size(); ++i) {
              const prof::Launch& l = launches[i];
              const prof::Dram d = l2.run(l, wave_of(kGpus[gi], regs, l));
              cs.terms[gi].push_back(terms_of(kGpus[gi], regs, sass, l, d.read_bytes + d.write_bytes,
                                              i == widest ? l.op_flops : 0.0));
            }
          }
          for (const prof::Launch& l : launches) cs.labels.push_back(l.op + " " + l.kernel);
          std::fprintf(stderr, "gpu_model: %s: %zu launches\n", cs.name.c_str(), launches.size());
          cases.push_back(std::move(cs));
        }
  return cases;
}

// JSON: {"gpus": [...], "rows": [{"name": ..., "us": [A100, H100, H200]}]} for scripts/gpu-check.sh.
void write_bench_norm_json(const std::vector<Case>& cases, const Constants& c, const std::string& path) {
  json j;
  j["model"] =
      "bench/gpu_model (cuemu profiler + L2 model + SASS instruction mix; constants: " + c.source + ")";
  j["gpus"] = json::array();
  for (const Gpu& g : kGpus) j["gpus"].push_back(g.name);
  j["rows"] = json::array();
  for (const Case& cs : cases) {
    json us = json::array();
    for (int gi = 0; gi < 3; ++gi) us.push_back(std::round(cs.seconds(gi, c, false) * 1e8) / 100);
    j["rows"].push_back({{"name", cs.name}, {"us", us}});
  }
  std::ofstream out(path);
  if (!out) throw std::runtime_error("cannot write '" + path + "'");
  out << j.dump(1) << '\n';
  if (!out.flush()) throw std::runtime_error("cannot write '" + path + "'");
}

struct Row {
  std::string norm, op, kernel;
  unsigned grid[3], block[3];
  size_t shmem;
  int count = 0;               // identical launches in the step
  prof::Launch m;              // measurements of one of them (counts scaled to the whole grid)
  double dram[3] = {0, 0, 0};  // modelled DRAM bytes per GPU
  Terms terms[3];
  bool sampled = false;
};

bool is_norm_op(const std::string& op) { return op.find("norm") != std::string::npos; }

// Identical launches of one step share a row: same op (and its size), kernel and configuration.
// Norm launches are kept apart per norm; the rest is the same network in every step.
std::string key_of(const std::string& norm, const prof::Launch& l) {
  std::ostringstream os;
  os << (is_norm_op(l.op) ? norm : "") << '|' << l.op << '|' << l.op_min_bytes << '|' << l.kernel << '|'
     << l.grid[0] << ',' << l.grid[1] << ',' << l.grid[2] << '|' << l.block[0] << '|' << l.shared_bytes << '|'
     << l.op_launch;
  return os.str();
}

// The kernel class of a launch in the step's breakdown.
std::string class_of(const prof::Launch& l) {
  if (l.op.rfind("conv2d_", 0) == 0 || l.op.rfind("linear", 0) == 0) return l.op;
  if (is_norm_op(l.op)) return "norms";
  if (l.op == "sgd_step" || l.op == "adam_step") return "optimizer";
  return "elementwise, pooling, loss, copies";
}

// A GPU run's measurements (scripts/gpu-check.sh's bench_norm_cuda.json and train_step_cuda.json).
struct Measured {
  std::map<std::string, double> norm_us;                      // row name -> us
  std::map<std::pair<std::string, int64_t>, double> step_us;  // (norm, batch) -> us
  std::string device;
};

Measured load_measured(const std::string& dir) {
  Measured m;
  {
    const std::string path = dir + "/bench_norm_cuda.json";
    std::ifstream in(path);
    if (!in) throw std::runtime_error("cannot read '" + path + "'");
    const json j = json::parse(in, nullptr, false);
    if (j.is_discarded() || !j.contains("rows")) throw std::runtime_error("'" + path + "' has no rows");
    m.device = j.value("device", "");
    for (const json& r : j["rows"]) m.norm_us[r["name"].get<std::string>()] = r["ms"].get<double>() * 1e3;
  }
  const std::string path = dir + "/train_step_cuda.json";
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read '" + path + "'");
  for (std::string line; std::getline(in, line);) {
    if (line.find('{') == std::string::npos) continue;
    const json j = json::parse(line, nullptr, false);
    if (j.is_discarded() || j.value("framework", "") != "normlab" || j.value("device", "") != "cuda")
      continue;
    m.step_us[{j["norm"].get<std::string>(), j["batch"].get<int64_t>()}] = j["median_ms"].get<double>() * 1e3;
  }
  return m;
}

// The rows the constants are fitted on: batch 128 only, and not the BatchNorm backward (its
// kernel changed after the H200 run: one ticket-ordered launch).
bool fit_row(const std::string& name) {
  return name.find("/128x") != std::string::npos && name.rfind("BN/bwd/", 0) != 0;
}
bool excluded_row(const std::string& name) { return name.rfind("BN/bwd/", 0) == 0; }

struct StepCase {
  std::string norm;
  int64_t batch;
  Case c;
};

// Least squares in log(measured / model) on a grid, for each way of combining issue and
// latency: latency, barrier and gap on the batch-128 norm rows, then the host's time per launch
// on the batch-128 steps; the combination with the smaller error over both wins.
Constants fit(const std::vector<Case>& rows, const std::vector<StepCase>& steps, const Measured& m) {
  std::vector<std::pair<const Case*, double>> fit_rows, fit_steps;
  for (const Case& cs : rows)
    if (fit_row(cs.name) && m.norm_us.count(cs.name)) fit_rows.push_back({&cs, m.norm_us.at(cs.name) * 1e-6});
  for (const StepCase& s : steps)
    if (s.batch == 128 && m.step_us.count({s.norm, s.batch}))
      fit_steps.push_back({&s.c, m.step_us.at({s.norm, s.batch}) * 1e-6});
  if (fit_rows.empty())
    throw std::runtime_error("--fit: no batch-128 norm row of the model is in the measurements");
  if (fit_steps.empty()) throw std::runtime_error("--fit: no batch-128 training step in the measurements");
  auto error = [](const std::vector<std::pair<const Case*, double>>& v, const Constants& c, bool host) {
    double err = 0;
    for (const auto& [cs, meas] : v) {
      const double e = std::log(meas / cs->seconds(kH200, c, host));
      err += e * e;
    }
    return err;
  };
  Constants best;
  double best_total = INFINITY;
  for (const bool additive : {false, true}) {
    Constants here;
    double here_err = INFINITY;
    for (int li = 0; li <= 60; ++li)
      for (int bi = 0; bi <= 40; ++bi)
        for (int gi = 0; gi <= 40; ++gi)
          for (int si = 0; si <= 12; ++si) {
            Constants c;
            c.additive = additive;
            c.bandwidth_share = 0.4 + 0.05 * si;             // 0.4-1.0
            c.latency = 0.1e-6 * std::pow(40.0, li / 60.0);  // 0.1-4 us
            c.barrier = bi * 0.05e-6;                        // 0-2 us
            c.gap = gi * 0.2e-6;                             // 0-8 us
            const double err = error(fit_rows, c, false);
            if (err < here_err) here_err = err, here = c;
          }
    double step_err = INFINITY;
    Constants c = here;
    for (int hi = 0; hi <= 400; ++hi) {
      c.host = hi * 0.05e-6;  // 0-20 us
      const double err = error(fit_steps, c, true);
      if (err < step_err) step_err = err, here.host = c.host;
    }
    std::fprintf(stderr,
                 "gpu_model: fit with issue and latency %s: rows %.3f, steps %.3f (squared log errors)\n",
                 additive ? "added" : "overlapped", here_err, step_err);
    if (here_err + step_err < best_total) best_total = here_err + step_err, best = here;
  }
  return best;
}

void write_constants(const Constants& c, const Measured& m, const std::string& dir, const std::string& path) {
  json j;
  j["fitted_on"] = "batch-128 rows of " + dir + " (" + m.device +
                   "): norm rows except BatchNorm backward, and the three steps";
  j["combine"] = c.additive ? "sum" : "max";
  j["bandwidth_share"] = c.bandwidth_share;
  j["us"] = {{"latency", c.latency * 1e6},
             {"barrier", c.barrier * 1e6},
             {"gap", c.gap * 1e6},
             {"host", c.host * 1e6}};
  std::ofstream out(path);
  if (!out) throw std::runtime_error("cannot write '" + path + "'");
  out << j.dump(1) << '\n';
  if (!out.flush()) throw std::runtime_error("cannot write '" + path + "'");
}

// Model against measurement for every norm row and step, H200 column, as Markdown.
void write_compare(const std::vector<Case>& rows, const std::vector<StepCase>& steps, const Measured& m,
                   const Constants& c, const std::string& path) {
  std::ofstream out(path);
  if (!out) throw std::runtime_error("cannot write '" + path + "'");
  char line[512];
  out << "# The GPU model against " << m.device << "\n\nConstants: " << c.source << ": memory round "
      << c.latency * 1e6 << " us, barrier " << c.barrier * 1e6 << " us, launch gap " << c.gap * 1e6
      << " us, host per launch " << c.host * 1e6 << " us, DRAM bandwidth share " << c.bandwidth_share
      << ", issue and latency " << (c.additive ? "added" : "overlapped")
      << ". `fit`: a row the constants were fitted on (batch 128); `check`: not fitted on; "
         "`left out`: the kernel changed after the measurement.\n\n"
         "## Training steps\n\n| norm | batch | measured us | model us | measured / model | "
         "|\n|---|---|---|---|---|---|\n";
  for (const StepCase& s : steps) {
    auto it = m.step_us.find({s.norm, s.batch});
    if (it == m.step_us.end()) continue;
    const double model = s.c.seconds(kH200, c, true) * 1e6;
    std::snprintf(line, sizeof line, "| %s | %lld | %.0f | %.0f | %.2f | %s |\n", s.norm.c_str(),
                  (long long)s.batch, it->second, model, it->second / model,
                  s.batch == 128 ? "fit" : "check");
    out << line;
  }
  out << "\n## Norm rows (bench_norm_cuda, normlab)\n\nPer launch: what bounds it in the model and its "
         "modelled us "
         "(launch gap included).\n\n| row | measured us | model us | measured / model | launches "
         "| |\n|---|---|---|---|---|---|\n";
  std::vector<double> check, all;
  for (const Case& cs : rows) {
    auto it = m.norm_us.find(cs.name);
    if (it == m.norm_us.end()) continue;
    const double model = cs.seconds(kH200, c, false) * 1e6, r = it->second / model;
    std::string bounds;
    for (const Terms& t : cs.terms[kH200]) {
      char b[96];
      std::snprintf(b, sizeof b, "%s%s %.1f", bounds.empty() ? "" : ", ", bound_of(t, c),
                    launch_seconds(t, c) * 1e6);
      bounds += b;
    }
    const char* use = excluded_row(cs.name) ? "left out" : fit_row(cs.name) ? "fit" : "check";
    if (!excluded_row(cs.name)) (fit_row(cs.name) ? all : check).push_back(r);
    std::snprintf(line, sizeof line, "| %s | %.1f | %.1f | %.2f | %s | %s |\n", cs.name.c_str(), it->second,
                  model, r, bounds.c_str(), use);
    out << line;
  }
  auto summary = [&](const char* what, std::vector<double> v) {
    if (v.empty()) return;
    std::sort(v.begin(), v.end());
    double worst = 1;
    for (double r : v) worst = std::max(worst, std::max(r, 1 / r));
    std::snprintf(line, sizeof line,
                  "- %s: %zu rows, median measured/model %.2f, range %.2f-%.2f, worst %.2fx off\n", what,
                  v.size(), v[v.size() / 2], v.front(), v.back(), worst);
    out << line;
  };
  out << "\n";
  summary("fitted rows (batch 128)", all);
  summary("rows not fitted on (batch 512)", check);
  std::vector<double> both = all;
  both.insert(both.end(), check.begin(), check.end());
  summary("all rows but the BatchNorm backward", both);
  if (!out.flush()) throw std::runtime_error("cannot write '" + path + "'");
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "normlab GPU model: the CUDA kernels' traffic and instruction mix measured on emulated CUDA, with "
      "modelled times"};
  std::vector<std::string> norms = {"bn", "gn", "ln"};
  std::vector<int64_t> batches = {128, 512};
  std::string ptxas = "build-nvcc/ptxas-summary.txt", sass_path = "build-nvcc/sass-summary.json";
  std::string constants_path = "bench/gpu_model_constants.json", measured_dir, fit_out, compare_md;
  uint64_t gemm_sample = 8;
  bool markdown = false;
  app.add_option("--norms", norms, "comma-separated: bn, gn, ln")
      ->delimiter(',')
      ->capture_default_str()
      ->check(CLI::IsMember({"bn", "gn", "ln"}));
  app.add_option("--batches", batches, "comma-separated batch sizes")
      ->delimiter(',')
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--ptxas", ptxas, "scripts/check-nvcc.sh's ptxas-summary.txt (registers per kernel)")
      ->capture_default_str();
  app.add_option("--sass", sass_path,
                 "scripts/check-nvcc.sh's sass-summary.json (instruction mix per kernel)")
      ->capture_default_str();
  app.add_option("--constants", constants_path, "the fitted constants (empty: built-in guesses)")
      ->capture_default_str();
  app.add_option("--gemm-sample", gemm_sample,
                 "blocks of each convolution launch (implicit GEMM, direct) to run (0: all)")
      ->capture_default_str();
  app.add_flag("--markdown", markdown, "Markdown tables (for docs/gpu-model.md)");
  std::string bench_norm_json;
  app.add_option("--bench-norm-json", bench_norm_json,
                 "also write the model's time for every normlab row of bench_norm_cuda to this file (for "
                 "scripts/gpu-check.sh)");
  app.add_option("--measured", measured_dir,
                 "a GPU run's folder (bench_norm_cuda.json, train_step_cuda.json) to compare with or fit on");
  app.add_option("--fit", fit_out,
                 "fit the constants on the batch-128 rows of --measured and write them here");
  app.add_option("--compare-md", compare_md, "write model against --measured for every row and step here");
  CLI11_PARSE(app, argc, argv);
  try {
    if ((!fit_out.empty() || !compare_md.empty()) && measured_dir.empty())
      throw std::runtime_error("--fit and --compare-md need --measured DIR");
    Registers regs;
    regs.load(ptxas);
    Sass sass;
    sass.load(sass_path);
    Constants consts = fit_out.empty() ? load_constants(constants_path) : Constants{};
    if (!device_available(DeviceType::CUDA))
      throw std::runtime_error(
          "this build has no CUDA device (configure with NORMLAB_CUDA=EMULATE -DNORMLAB_CUDA_PROFILE=ON)");
    Measured measured;
    if (!measured_dir.empty()) measured = load_measured(measured_dir);
    std::vector<Case> norm_cases;
    if (!bench_norm_json.empty() || !measured_dir.empty()) norm_cases = bench_norm_cases(regs, sass);
    std::vector<StepCase> steps;
    std::string norm_list;
    for (const std::string& n : norms) norm_list += (norm_list.empty() ? "" : ",") + n;
    // The steps' rows per batch, kept for the tables printed after a --fit.
    struct BatchTable {
      int64_t batch;
      std::map<std::string, Row> rows;
      std::vector<std::string> order;
      std::vector<std::string> op_order;
      std::map<std::string, std::pair<double, double>> op_totals;  // H100 DRAM, min bytes
      std::map<std::string, int> op_calls;
    };
    std::vector<BatchTable> tables;
    for (const int64_t batch : batches) {
      BatchTable& bt = tables.emplace_back();
      bt.batch = batch;
      prof::Options o;
      o.blocks_to_run = [&](const std::string& kernel, uint64_t blocks) {
        const bool conv =
            base_name(kernel).rfind("implicit_gemm", 0) == 0 || kernel.find("_direct_") != std::string::npos;
        return gemm_sample && conv ? std::min(blocks, gemm_sample) : blocks;
      };
      std::string current_norm;
      StepCase* current_step = nullptr;
      std::vector<std::unique_ptr<prof::L2>> l2;
      for (const Gpu& g : kGpus) l2.push_back(std::make_unique<prof::L2>(uint64_t(g.l2)));
      o.on_launch = [&](const prof::Launch& l) {
        const std::string k = key_of(current_norm, l);
        auto [it, fresh] = bt.rows.try_emplace(k);
        Row& r = it->second;
        ++r.count;
        double dram[3] = {0, 0, 0};
        Terms terms[3];
        const bool sampled = l.blocks_run < l.blocks;
        for (int gi = 0; gi < 3; ++gi) {
          const Gpu& g = kGpus[gi];
          if (sampled) {
            l2[gi]->flush();
            dram[gi] = l.op_launch == 0 ? l.op_min_bytes : 0;
          } else {
            const prof::Dram d = l2[gi]->run(l, wave_of(g, regs, l));
            dram[gi] = d.read_bytes + d.write_bytes;
          }
          terms[gi] = terms_of(g, regs, sass, l, dram[gi], l.op_launch == 0 ? l.op_flops : 0);
          current_step->c.terms[gi].push_back(terms[gi]);
        }
        current_step->c.labels.push_back(class_of(l));
        if (!l.op.empty()) {
          const std::string ok = (is_norm_op(l.op) ? current_norm + " " : std::string()) + l.op + " " +
                                 std::to_string(int64_t(l.op_min_bytes));
          auto [ot, new_op] = bt.op_totals.try_emplace(ok, std::make_pair(0.0, 0.0));
          if (new_op) bt.op_order.push_back(ok);
          ot->second.first += dram[1];
          if (l.op_launch == 0) ot->second.second += l.op_min_bytes, ++bt.op_calls[ok];
        }
        if (!fresh) return;
        bt.order.push_back(k);
        r.norm = is_norm_op(l.op) ? current_norm : "", r.op = l.op.empty() ? "(none)" : l.op;
        r.kernel = l.kernel, r.shmem = l.shared_bytes;
        std::copy(l.grid, l.grid + 3, r.grid), std::copy(l.block, l.block + 3, r.block);
        r.sampled = sampled;
        std::copy(dram, dram + 3, r.dram);
        std::copy(terms, terms + 3, r.terms);
        r.m = l;
        r.m.streams.clear();
      };
      for (const std::string& n : norms) {
        Generator init(0), drop(1), data(2);
        current_norm = n;
        steps.push_back({n, batch, {}});
        current_step = &steps.back();
        current_step->c.name = n;
        auto net = nl::nn::make_net(nl::nn::parse_norm(n), init, &drop);
        net->to(Device::cuda());
        net->train();
        Tensor x = Tensor::randn({batch, 3, 32, 32}, data).to(Device::cuda());
        std::vector<int32_t> labels(static_cast<size_t>(batch));
        for (int64_t i = 0; i < batch; ++i) labels[size_t(i)] = int32_t(i % 10);
        Tensor y = Tensor::from_ints(labels, {batch}, Device::cuda());
        nn::SGD opt(net->parameters(), {.lr = 0.01f, .momentum = 0.9f, .weight_decay = 5e-4f});
        opt.zero_grad();
        prof::start(o);
        Tensor loss = nll_loss(net->forward(x), y);
        loss.backward();
        opt.step();
        prof::stop();
        for (auto& cache : l2) cache->flush();  // each step starts cold
        std::fprintf(stderr, "gpu_model: batch %lld, %s: %zu distinct launches so far\n", (long long)batch,
                     n.c_str(), bt.order.size());
      }
    }
    if (!fit_out.empty()) {
      consts = fit(norm_cases, steps, measured);
      consts.source = fit_out + " (fitted just now on the batch-128 rows of " + measured_dir + ")";
      write_constants(consts, measured, measured_dir, fit_out);
      std::fprintf(
          stderr,
          "gpu_model: fitted: memory round %.3f us, barrier %.3f us, gap %.2f us, host %.2f us, bandwidth "
          "share %.2f, issue and latency %s\n",
          consts.latency * 1e6, consts.barrier * 1e6, consts.gap * 1e6, consts.host * 1e6,
          consts.bandwidth_share, consts.additive ? "added" : "overlapped");
    }
    if (!bench_norm_json.empty()) write_bench_norm_json(norm_cases, consts, bench_norm_json);
    if (!compare_md.empty()) write_compare(norm_cases, steps, measured, consts, compare_md);
    const char* sep = markdown ? " | " : "  ";
    std::printf(
        "%sConstants: %s: memory round %.3f us, barrier %.3f us, launch gap %.2f us, host %.2f us, DRAM "
        "bandwidth share %.2f, issue and latency %s\n",
        markdown ? "" : "== ", consts.source.c_str(), consts.latency * 1e6, consts.barrier * 1e6,
        consts.gap * 1e6, consts.host * 1e6, consts.bandwidth_share,
        consts.additive ? "added" : "overlapped");
    for (const BatchTable& bt : tables) {
      std::printf(
          "\n%sBatch %lld: one training step of the comparison network (%s), %zu distinct launches\n\n",
          markdown ? "#### " : "== ", (long long)bt.batch, norm_list.c_str(), bt.order.size());
      if (markdown)
        std::printf(
            "| op | kernel | n | grid x block, smem | ld req | ld sect/req (ideal) | st sect/req (ideal) | "
            "smem wavefr/req (ideal) | unique MB | op min MB | H100 DRAM MB (model) | regs sm_90 | blk/SM "
            "H100 | warp instr (M) | chain: loads, barriers | H200 bound | A100 us | H100 us | H200 us |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
      for (const std::string& k : bt.order) {
        const Row& r = bt.rows.at(k);
        const prof::Launch& l = r.m;
        const int per_step = r.norm.empty() ? r.count / int(norms.size()) : r.count;
        const double s = l.scale();
        auto ratio = [](double a, double b) { return b > 0 ? a / b : 0.0; };
        const double ld_req = double(l.load.requests) * s;
        char cfg[96];
        std::snprintf(cfg, sizeof cfg, "(%u,%u,%u)x%u, %zu B%s", r.grid[0], r.grid[1], r.grid[2], r.block[0],
                      r.shmem, r.sampled ? " [sampled]" : "");
        const int reg90 = regs.get("sm_90", r.kernel);
        const int per_sm = blocks_per_sm(kGpus[1], int(r.block[0] * r.block[1] * r.block[2]), reg90, r.shmem);
        std::printf(
            "%s%s%s%s%s%d%s%s%s%.0f%s%.2f (%.2f)%s%.2f (%.2f)%s%.2f "
            "(%.2f)%s%.2f%s%.2f%s%.2f%s%d%s%d%s%.2f%s%llu, %llu%s%s%s%.1f%s%.1f%s%.1f%s\n",
            markdown ? "| " : "", (r.norm.empty() ? r.op : r.norm + " " + r.op).c_str(), sep,
            r.kernel.c_str(), sep, per_step, sep, cfg, sep, ld_req, sep,
            ratio(double(l.load.sectors), double(l.load.requests)),
            ratio(double(l.load.ideal_sectors), double(l.load.requests)), sep,
            ratio(double(l.store.sectors), double(l.store.requests)),
            ratio(double(l.store.ideal_sectors), double(l.store.requests)), sep,
            ratio(double(l.shared_load.wavefronts + l.shared_store.wavefronts),
                  double(l.shared_load.requests + l.shared_store.requests)),
            ratio(double(l.shared_load.ideal_wavefronts + l.shared_store.ideal_wavefronts),
                  double(l.shared_load.requests + l.shared_store.requests)),
            sep, double(l.unique_read_bytes + l.unique_written_bytes) * s / 1e6, sep,
            l.op_launch == 0 ? l.op_min_bytes / 1e6 : 0.0, sep, r.dram[1] / 1e6, sep, reg90, sep, per_sm, sep,
            r.terms[kH200].warp_instructions / 1e6, sep, (unsigned long long)l.warp_load_chain,
            (unsigned long long)l.block_barriers, sep, bound_of(r.terms[kH200], consts), sep,
            launch_seconds(r.terms[0], consts) * 1e6, sep, launch_seconds(r.terms[1], consts) * 1e6, sep,
            launch_seconds(r.terms[2], consts) * 1e6, markdown ? " |" : "");
      }
      // Per norm, then the mean: the line scripts and docs read.
      double total[3] = {0, 0, 0};
      for (const StepCase& sc : steps) {
        if (sc.batch != bt.batch) continue;
        for (int gi = 0; gi < 3; ++gi) total[gi] += sc.c.seconds(gi, consts, true);
        std::printf("\nModelled step, %s, batch %lld: A100 %.0f us, H100 %.0f us, H200 %.0f us",
                    sc.norm.c_str(), (long long)bt.batch, sc.c.seconds(0, consts, true) * 1e6,
                    sc.c.seconds(1, consts, true) * 1e6, sc.c.seconds(2, consts, true) * 1e6);
      }
      const double n_steps = double(norms.size());
      std::printf(
          "\nModelled time per training step (mean over %s): A100 %.0f us, H100 %.0f us, H200 %.0f us\n",
          norm_list.c_str(), total[0] / n_steps * 1e6, total[1] / n_steps * 1e6, total[2] / n_steps * 1e6);
      // Where the step's time goes on the H200, per kernel class (the host where it is the longer).
      std::map<std::string, std::pair<double, int>> by_class;
      double host_extra = 0;
      for (const StepCase& sc : steps) {
        if (sc.batch != bt.batch) continue;
        for (size_t i = 0; i < sc.c.terms[kH200].size(); ++i) {
          const double t = launch_seconds(sc.c.terms[kH200][i], consts);
          auto& e = by_class[sc.c.labels[i]];
          e.first += t / n_steps, e.second += 1;
          host_extra += std::max(0.0, consts.host - t) / n_steps;
        }
      }
      std::printf("\n%sBatch %lld on the H200 (model): the step by kernel class, mean over %s\n\n",
                  markdown ? "##### " : "== ", (long long)bt.batch, norm_list.c_str());
      if (markdown) std::printf("| class | launches | us | share |\n|---|---|---|---|\n");
      const double step = total[kH200] / n_steps;
      for (const auto& [cls, e] : by_class)
        std::printf("%s%s%s%.1f%s%.0f%s%.0f%%%s\n", markdown ? "| " : "", cls.c_str(), sep,
                    double(e.second) / n_steps, sep, e.first * 1e6, sep, 100 * e.first / step,
                    markdown ? " |" : "");
      std::printf("%shost beyond the kernels%s%s%.0f%s%.0f%%%s\n", markdown ? "| " : "", sep, sep,
                  host_extra * 1e6, sep, 100 * host_extra / step, markdown ? " |" : "");
      // The convolutions launch by launch, in the step's order (the same in every norm's step):
      // forward C1..., then backward from the last layer; split-K reductions beside their GEMM.
      std::printf("\n%sBatch %lld on the H200 (model): the convolutions per launch, in step order\n\n",
                  markdown ? "##### " : "== ", (long long)bt.batch);
      if (markdown)
        std::printf(
            "| # | op | kernel | grid | op min MB | warp instr (M) | chain: rounds, barriers | bound | "
            "us |\n|---|---|---|---|---|---|---|---|---|\n");
      int conv_index = 0;
      double conv_total = 0;
      for (const std::string& k : bt.order) {
        const Row& r = bt.rows.at(k);
        if (r.op.rfind("conv2d_", 0) != 0) continue;
        const Terms& t = r.terms[kH200];
        const double us = launch_seconds(t, consts) * 1e6 * (r.count / double(norms.size()));
        conv_total += us;
        std::printf("%s%d%s%s%s%s%s(%u,%u,%u)%s%.2f%s%.2f%s%.0f, %.0f%s%s%s%.1f%s\n", markdown ? "| " : "",
                    ++conv_index, sep, r.op.c_str(), sep, r.kernel.c_str(), sep, r.grid[0], r.grid[1],
                    r.grid[2], sep, r.m.op_launch == 0 ? r.m.op_min_bytes / 1e6 : 0.0, sep,
                    t.warp_instructions / 1e6, sep, t.rounds, t.barriers, sep, bound_of(t, consts), sep, us,
                    markdown ? " |" : "");
      }
      std::printf("\nThe convolutions: %.0f us of the %.0f us step (%.0f%%)\n", conv_total, step * 1e6,
                  100 * conv_total / (step * 1e6));
      // Each convolution (its launches together: a split-K or partials reduction is part of the
      // op) against its roofline bound on the H200: max(minimum bytes / HBM bandwidth, FLOPs /
      // TF32 peak).
      std::printf("\n%sBatch %lld on the H200 (model): each convolution against its roofline bound\n\n",
                  markdown ? "##### " : "== ", (long long)bt.batch);
      if (markdown)
        std::printf(
            "| # | op | min MB | GFLOP | roofline us | launches | modelled us | %% of roofline |\n"
            "|---|---|---|---|---|---|---|---|\n");
      const Gpu& h200 = kGpus[kH200];
      struct OpRow {
        std::string op;
        double bytes = 0, flops = 0, us = 0;
        int launches = 0;
      };
      std::vector<OpRow> conv_ops;
      for (const std::string& k : bt.order) {
        const Row& r = bt.rows.at(k);
        if (r.op.rfind("conv2d_", 0) != 0 || r.op == "conv2d_bwd_bias") continue;
        // A row stands for its identical launches in the step (count, per norm): the op's bound
        // counts as often.
        const double times = r.count / double(norms.size());
        if (r.m.op_launch == 0 || conv_ops.empty())
          conv_ops.push_back({r.op, r.m.op_min_bytes * times, r.m.op_flops * times, 0, 0});
        conv_ops.back().us += launch_seconds(r.terms[kH200], consts) * 1e6 * times;
        ++conv_ops.back().launches;
      }
      int op_index = 0;
      for (const OpRow& o : conv_ops) {
        const double bound = std::max(o.bytes / h200.bandwidth, o.flops / h200.tf32) * 1e6;
        std::printf("%s%d%s%s%s%.2f%s%.3f%s%.1f%s%d%s%.1f%s%.0f%%%s\n", markdown ? "| " : "", ++op_index, sep,
                    o.op.c_str(), sep, o.bytes / 1e6, sep, o.flops / 1e9, sep, bound, sep, o.launches, sep,
                    o.us, sep, 100 * bound / o.us, markdown ? " |" : "");
      }
      // The norms against their minimum traffic: per call, modelled H100 DRAM (L2 kept across the
      // op's launches) minus the op's minimum.
      std::printf(
          "\n%sNorm ops, batch %lld: modelled H100 DRAM traffic per call against the op's minimum\n\n",
          markdown ? "##### " : "== ", (long long)bt.batch);
      if (markdown)
        std::printf(
            "| op (minimum bytes) | calls | minimum MB | modelled DRAM MB | above minimum MB "
            "|\n|---|---|---|---|---|\n");
      for (const std::string& k : bt.op_order) {
        if (!is_norm_op(k)) continue;
        const auto& t = bt.op_totals.at(k);
        const int calls = std::max(1, bt.op_calls.count(k) ? bt.op_calls.at(k) : 0);
        const double per_call = t.first / calls, min_call = t.second / calls;
        std::printf("%s%s%s%d%s%.2f%s%.2f%s%.2f%s\n", markdown ? "| " : "", k.c_str(), sep, calls, sep,
                    min_call / 1e6, sep, per_call / 1e6, sep, (per_call - min_call) / 1e6,
                    markdown ? " |" : "");
      }
      std::fflush(stdout);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gpu_model: %s\n", e.what());
    return 1;
  }
  return 0;
}
