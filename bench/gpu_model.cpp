// What the CUDA kernels would do on an A100, an H100 and an H200, measured without a GPU: one
// training step of the comparison network (forward, NLL loss, backward, SGD) runs on emulated CUDA
// under the cuemu memory-traffic profiler (kernels/cuemu/profile.h, NORMLAB_CUDA_PROFILE builds),
// and every launch is reported with its measured requests, sectors per request, shared-memory
// wavefronts and unique bytes, the DRAM traffic of an L2 model, its occupancy from ptxas'
// registers and the documented per-SM limits, and a roofline time per GPU.
//
//   gpu_model --batches 128,512 --norms bn,gn,ln --ptxas build-nvcc/ptxas-summary.txt [--markdown]
//             [--bench-norm-json bench/gpu_model_norms.json]
//
// A MODEL, to be checked on a GPU (scripts/gpu-check.sh prints measured times beside it):
//   - bandwidth and FP32 peaks are the datasheets' (NVIDIA A100, H100 SXM5, H200 SXM), not measured;
//   - time = max(DRAM bytes / bandwidth, FLOPs / peak) / min(1, blocks / SMs) + 2 us launch;
//     the FLOPs of an op count on its first launch; the peak is the TF32 tensor cores' for
//     implicit_gemm_tf32_kernel, FP32 on CUDA cores otherwise. A roofline bound: it does not see
//     the integer work of the im2col gathers, which limits the tensor-core GEMM well below peak;
//   - DRAM bytes: the L2 model (cuemu::profile::L2: LRU over 32-byte sectors with evict-first
//     hints, kept across the launches of a step as a GPU keeps it between kernels, blocks of a wave
//     advancing together, wave = SMs x resident blocks per SM). Launches that ran a sample of their
//     blocks (the GEMMs, --gemm-sample) have no L2 model: their DRAM bytes are the op's minimum,
//     and the L2 is flushed after them (the next op starts cold: conservative).
#include <CLI/CLI.hpp>
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
#include "norm_cases.h"
#include "normlab/core/ops.h"
#include "normlab/core/rng.h"
#include "normlab/nn/optim.h"

namespace {
using namespace nl;
namespace prof = cuemu::profile;

// Datasheet figures (dense, no sparsity), and the per-SM limits of the CUDA C++ Programming
// Guide's compute capability tables (sm_80, sm_90).
struct Gpu {
  const char* name;
  const char* arch;
  int sms;
  double bandwidth;  // bytes/s
  double fp32;       // FLOP/s
  double tf32;       // FLOP/s, tensor cores
  double l2;         // bytes
  int smem_per_sm;   // bytes usable by blocks
};
const Gpu kGpus[] = {
    {"A100", "sm_80", 108, 2.039e12, 19.5e12, 156e12, 40.0 * (1 << 20), 164 * 1024},
    {"H100", "sm_90", 132, 3.35e12, 66.9e12, 494.7e12, 50.0 * (1 << 20), 228 * 1024},
    {"H200", "sm_90", 132, 4.8e12, 66.9e12, 494.7e12, 50.0 * (1 << 20), 228 * 1024},
};
constexpr double kLaunchSeconds = 2e-6;

// "implicit_gemm_kernel<Op>" -> "implicit_gemm_kernel"
std::string base_name(const std::string& k) { return k.substr(0, k.find('<')); }

// Registers per thread from scripts/check-nvcc.sh's summary, per (arch, kernel): the
// instantiation whose template arguments appear in the launch's name, else the most of any
// instantiation (occupancy then errs low).
struct Registers {
  struct Entry {
    std::string arch, base, args;
    int regs;
  };
  std::vector<Entry> entries;
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
    const std::string b = base_name(kernel);
    const std::string args = kernel.find('<') == std::string::npos ? "" : kernel.substr(kernel.find('<'));
    int most = -1;
    for (const Entry& e : entries) {
      if (e.arch != arch || e.base != b) continue;
      if (!args.empty() && e.args == args) return e.regs;
      most = std::max(most, e.regs);
    }
    return most;
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

// The resident blocks of `l` on all SMs of `g`: the L2 model's wave.
uint64_t wave_of(const Gpu& g, const Registers& regs, const prof::Launch& l) {
  const int threads = int(l.block[0] * l.block[1] * l.block[2]);
  return uint64_t(g.sms) *
         uint64_t(std::max(1, blocks_per_sm(g, threads, regs.get(g.arch, l.kernel), l.shared_bytes)));
}

// The roofline time of one launch that moves `dram` bytes and does `flops` (by default the op's
// FLOPs on its first launch).
double launch_seconds(const Gpu& g, const prof::Launch& l, double dram, double flops = -1) {
  if (flops < 0) flops = l.op_launch == 0 ? l.op_flops : 0;
  const double busy = std::min(1.0, double(l.blocks) / g.sms);
  const double peak = base_name(l.kernel) == "implicit_gemm_tf32_kernel" ? g.tf32 : g.fp32;
  return std::max(dram / g.bandwidth, flops / peak) / busy + kLaunchSeconds;
}

// The model's time for every normlab row of bench_norm_cuda (same names, same calls through the
// kernel stubs, L2 cold per call as the benchmark flushes it), for scripts/gpu-check.sh to print
// beside the measured times. JSON: {"gpus": [...], "rows": [{"name": ..., "us": [A100, H100, H200]}]}.
void write_bench_norm_model(const Registers& regs, const std::string& path) {
  const Device cuda = Device::cuda();
  std::ofstream out(path);
  if (!out) throw std::runtime_error("cannot write '" + path + "'");
  out << "{\"model\": \"bench/gpu_model (cuemu profiler + L2 model + roofline on datasheet peaks)\", "
         "\"gpus\": [";
  for (int gi = 0; gi < 3; ++gi) out << (gi ? ", " : "") << '"' << kGpus[gi].name << '"';
  out << "], \"rows\": [\n";
  bool first = true;
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
          double us[3] = {0, 0, 0};
          for (int gi = 0; gi < 3; ++gi) {
            prof::L2 l2(uint64_t(kGpus[gi].l2));  // flushed before every timed iteration
            for (size_t i = 0; i < launches.size(); ++i) {
              const prof::Launch& l = launches[i];
              const prof::Dram d = l2.run(l, wave_of(kGpus[gi], regs, l));
              us[gi] +=
                  launch_seconds(kGpus[gi], l, d.read_bytes + d.write_bytes, i == widest ? l.op_flops : 0.0) *
                  1e6;
            }
          }
          const std::string name = bench::norm_case_name(kind, pass, N, C, HW) + "/normlab";
          char line[256];
          std::snprintf(line, sizeof line, "%s  {\"name\": \"%s\", \"us\": [%.2f, %.2f, %.2f]}",
                        first ? "" : ",\n", name.c_str(), us[0], us[1], us[2]);
          out << line;
          first = false;
          std::fprintf(stderr, "gpu_model: %s: H100 %.1f us (model)\n", name.c_str(), us[1]);
        }
  out << "\n]}\n";
  if (!out.flush()) throw std::runtime_error("cannot write '" + path + "'");
}

struct Row {
  std::string norm, op, kernel;
  unsigned grid[3], block[3];
  size_t shmem;
  int count = 0;               // identical launches in the step
  prof::Launch m;              // measurements of one of them (counts scaled to the whole grid)
  double dram[3] = {0, 0, 0};  // modelled DRAM bytes per GPU
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

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "normlab GPU model: the CUDA kernels' memory traffic measured on emulated CUDA, with roofline times"};
  std::vector<std::string> norms = {"bn", "gn", "ln"};
  std::vector<int64_t> batches = {128, 512};
  std::string ptxas = "build-nvcc/ptxas-summary.txt";
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
  app.add_option("--gemm-sample", gemm_sample, "blocks of each implicit-GEMM launch to run (0: all)")
      ->capture_default_str();
  app.add_flag("--markdown", markdown, "Markdown tables (for docs/kernels.md)");
  std::string bench_norm_json;
  app.add_option("--bench-norm-json", bench_norm_json,
                 "also write the model's time for every normlab row of bench_norm_cuda to this file (for "
                 "scripts/gpu-check.sh)");
  CLI11_PARSE(app, argc, argv);
  try {
    Registers regs;
    regs.load(ptxas);
    if (!device_available(DeviceType::CUDA))
      throw std::runtime_error(
          "this build has no CUDA device (configure with NORMLAB_CUDA=EMULATE -DNORMLAB_CUDA_PROFILE=ON)");
    if (!bench_norm_json.empty()) write_bench_norm_model(regs, bench_norm_json);
    std::string norm_list;
    for (const std::string& n : norms) norm_list += (norm_list.empty() ? "" : ",") + n;
    for (const int64_t batch : batches) {
      std::map<std::string, Row> rows;
      std::vector<std::string> order;
      prof::Options o;
      o.blocks_to_run = [&](const std::string& kernel, uint64_t blocks) {
        return gemm_sample && base_name(kernel).rfind("implicit_gemm", 0) == 0 ? std::min(blocks, gemm_sample)
                                                                               : blocks;
      };
      std::string current_norm;
      std::vector<std::unique_ptr<prof::L2>> l2;
      for (const Gpu& g : kGpus) l2.push_back(std::make_unique<prof::L2>(uint64_t(g.l2)));
      // Per op call (norm, op, size): modelled DRAM bytes on the H100 against the minimum.
      struct OpTotal {
        double dram = 0, min_bytes = 0;
        int calls = 0;
      };
      std::map<std::string, OpTotal> op_totals;
      std::vector<std::string> op_order;
      o.on_launch = [&](const prof::Launch& l) {
        const std::string k = key_of(current_norm, l);
        auto [it, fresh] = rows.try_emplace(k);
        Row& r = it->second;
        ++r.count;
        double dram[3] = {0, 0, 0};
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
        }
        if (!l.op.empty()) {
          const std::string ok = (is_norm_op(l.op) ? current_norm + " " : std::string()) + l.op + " " +
                                 std::to_string(int64_t(l.op_min_bytes));
          auto [ot, new_op] = op_totals.try_emplace(ok);
          if (new_op) op_order.push_back(ok);
          ot->second.dram += dram[1];
          if (l.op_launch == 0) ot->second.min_bytes += l.op_min_bytes, ++ot->second.calls;
        }
        if (!fresh) return;
        order.push_back(k);
        r.norm = is_norm_op(l.op) ? current_norm : "", r.op = l.op.empty() ? "(none)" : l.op;
        r.kernel = l.kernel, r.shmem = l.shared_bytes;
        std::copy(l.grid, l.grid + 3, r.grid), std::copy(l.block, l.block + 3, r.block);
        r.sampled = sampled;
        std::copy(dram, dram + 3, r.dram);
        r.m = l;
        r.m.streams.clear();
      };
      for (const std::string& n : norms) {
        Generator init(0), drop(1), data(2);
        current_norm = n;
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
                     n.c_str(), order.size());
      }
      // Measurements (GPU-independent), then the model per GPU.
      const char* sep = markdown ? " | " : "  ";
      std::printf(
          "\n%sBatch %lld: one training step of the comparison network (%s), %zu distinct launches\n\n",
          markdown ? "#### " : "== ", (long long)batch, norm_list.c_str(), order.size());
      if (markdown)
        std::printf(
            "| op | kernel | n | grid x block, smem | ld req | ld sect/req (ideal) | st sect/req (ideal) | "
            "smem wavefr/req (ideal) | unique MB | op min MB | H100 DRAM MB (model) | regs sm_90 | blk/SM "
            "H100 | A100 us | H100 us | H200 us |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
      double total[3] = {0, 0, 0};
      for (const std::string& k : order) {
        const Row& r = rows[k];
        const prof::Launch& l = r.m;
        const int per_step = r.norm.empty() ? r.count / int(norms.size()) : r.count;
        const double s = l.scale();
        auto ratio = [](double a, double b) { return b > 0 ? a / b : 0.0; };
        const double ld_req = double(l.load.requests) * s;
        char cfg[96];
        std::snprintf(cfg, sizeof cfg, "(%u,%u,%u)x%u, %zu B%s", r.grid[0], r.grid[1], r.grid[2], r.block[0],
                      r.shmem, r.sampled ? " [sampled]" : "");
        const int reg90 = regs.get("sm_90", r.kernel);
        double t[3];
        for (int gi = 0; gi < 3; ++gi) {
          t[gi] = launch_seconds(kGpus[gi], l, r.dram[gi]);
          total[gi] += t[gi] * r.count;  // every launch of every norm's step
        }
        const int per_sm = blocks_per_sm(kGpus[1], int(r.block[0] * r.block[1] * r.block[2]), reg90, r.shmem);
        std::printf(
            "%s%s%s%s%s%d%s%s%s%.0f%s%.2f (%.2f)%s%.2f (%.2f)%s%.2f "
            "(%.2f)%s%.2f%s%.2f%s%.2f%s%d%s%d%s%.1f%s%.1f%s%.1f%s\n",
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
            t[0] * 1e6, sep, t[1] * 1e6, sep, t[2] * 1e6, markdown ? " |" : "");
      }
      const double steps = double(norms.size());
      std::printf(
          "\nModelled time per training step (mean over %s): A100 %.0f us, H100 %.0f us, H200 %.0f us\n",
          norm_list.c_str(), total[0] / steps * 1e6, total[1] / steps * 1e6, total[2] / steps * 1e6);
      // The norms against their minimum traffic: per call, modelled H100 DRAM (L2 kept across the
      // op's launches) minus the op's minimum.
      std::printf(
          "\n%sNorm ops, batch %lld: modelled H100 DRAM traffic per call against the op's minimum\n\n",
          markdown ? "##### " : "== ", (long long)batch);
      if (markdown)
        std::printf(
            "| op (minimum bytes) | calls | minimum MB | modelled DRAM MB | above minimum MB "
            "|\n|---|---|---|---|---|\n");
      for (const std::string& k : op_order) {
        if (!is_norm_op(k)) continue;
        const OpTotal& t = op_totals[k];
        const double per_call = t.dram / std::max(1, t.calls), min_call = t.min_bytes / std::max(1, t.calls);
        std::printf("%s%s%s%d%s%.2f%s%.2f%s%.2f%s\n", markdown ? "| " : "", k.c_str(), sep, t.calls, sep,
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
