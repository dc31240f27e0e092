// The norm family on the GPU, normlab's kernels against cuDNN 9, side by side in one binary:
// BatchNorm, GroupNorm(4) and LayerNorm over (C, H, W); forward training, forward eval and
// backward; the network's layer shapes at N = 128 and 512.
//
//   bench_norm_cuda [--iters 50] [--json FILE]
//
// Timing: cudaEvents around each launch, the L2 cache flushed (a memset of twice its size)
// before every timed iteration, median of --iters. Bandwidth: minimum bytes (forward x + y,
// backward x + dy + dx) per second, and that as a percentage of the device's peak memory
// bandwidth, queried from the device (2 x memory clock x bus width), never hard-coded.
//
// cuDNN variants: BatchNorm through the legacy cudnnBatchNormalization*Ex calls in both
// CUDNN_BATCHNORM_SPATIAL and CUDNN_BATCHNORM_SPATIAL_PERSISTENT modes. GroupNorm: cuDNN's
// legacy API has none; the stand-in is BatchNorm (SPATIAL) on the [1, N*G, C/G*H*W, 1] view,
// the same per-(sample, group) statistics, followed in forward by a per-channel affine kernel
// (backward times the BatchNorm part only); the real peer of these rows is PyTorch's own GroupNorm
// kernels, timed on the same shapes by bench/peer/norm_vs_torch.py. LayerNorm over (C, H, W):
// cuDNN's backend graph API (CUDNN_LAYER_NORM, bench/cudnn_graph_layernorm.h; its affine is per
// element), and the BN-view stand-in with G = 1 beside it.
//
// Numbers too: for forward training and backward, our output (y or dx) is compared with cuDNN's
// on the same inputs (gamma = 1, beta = 0, so the BN-view stand-ins compute the same function),
// as max |ours - cuDNN| / max(1, |cuDNN|) per row; above 1e-3 the run fails (exit 1). Float
// reductions in a different order over up to 16M elements differ by about 1e-6 to 1e-5.
//
// Without a GPU it prints one line saying it skipped and why, and exits 0.
#include <cuda_runtime.h>
#include <cudnn.h>

#include <algorithm>
#include <cmath>
#include <exception>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "cudnn_graph_layernorm.h"
#include "norm_cases.h"
#include "normlab/core/kernel/stubs.h"

namespace {
using namespace nl;

#define CK(expr)                                                                               \
  do {                                                                                         \
    cudaError_t e_ = (expr);                                                                   \
    if (e_ != cudaSuccess) {                                                                   \
      std::fprintf(stderr, "bench_norm_cuda: %s failed: %s\n", #expr, cudaGetErrorString(e_)); \
      std::exit(1);                                                                            \
    }                                                                                          \
  } while (0)
#define DNN(expr)                                                                               \
  do {                                                                                          \
    cudnnStatus_t s_ = (expr);                                                                  \
    if (s_ != CUDNN_STATUS_SUCCESS) {                                                           \
      std::fprintf(stderr, "bench_norm_cuda: %s failed: %s\n", #expr, cudnnGetErrorString(s_)); \
      std::exit(1);                                                                             \
    }                                                                                           \
  } while (0)

using Kind = bench::NormKind;
using Pass = bench::NormPass;
using bench::kBN, bench::kGN, bench::kLN, bench::kFwdTrain, bench::kFwdEval, bench::kBwd;

struct Gpu {
  double peak_gbs = 0;
  size_t l2 = 0;
  void* flush = nullptr;
};

struct Bufs {
  float *x, *y, *dy, *dx, *gamma, *beta, *dgamma, *dbeta, *mean, *rstd, *rmean, *rvar;
  uint8_t* mask;
};

float* dev_floats(size_t n, float value) {
  float* p;
  CK(cudaMalloc(&p, n * sizeof(float)));
  std::vector<float> h(n, value);
  if (value != value) {  // NaN: random normal-ish data
    uint32_t s = 12345;
    for (auto& v : h) s = s * 1664525u + 1013904223u, v = float(int(s >> 9) - (1 << 22)) / float(1 << 22);
  }
  CK(cudaMemcpy(p, h.data(), n * sizeof(float), cudaMemcpyHostToDevice));
  return p;
}

// The stand-in's second half for GroupNorm forward: the per-channel affine that BatchNorm on the
// [1, N*G, C/G*HW, 1] view cannot apply (its scale/shift are per group), as a separate pass.
__global__ void channel_affine_kernel(int64_t n, int64_t C, int64_t HW, const float* gamma, const float* beta,
                                      float* y) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = (i / HW) % C;
    y[i] = y[i] * gamma[c] + beta[c];
  }
}

template <class F>
double median_ms(const Gpu& d, int iters, F&& launch) {
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  launch();  // warm-up
  std::vector<float> t;
  for (int i = 0; i < iters; ++i) {
    CK(cudaMemset(d.flush, i & 0xFF, d.l2 * 2));
    CK(cudaEventRecord(a));
    launch();
    CK(cudaEventRecord(b));
    CK(cudaEventSynchronize(b));
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms);
  }
  CK(cudaEventDestroy(a));
  CK(cudaEventDestroy(b));
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

struct Row {
  std::string name;
  double ms, gbs, pct;
  double diff = -1;  // max relative difference of the output against cuDNN's; -1: not compared
};
std::vector<Row> g_rows;  // for --json
constexpr double kMaxDiff = 1e-3;
bool g_numbers_ok = true;

std::vector<float> to_host(const float* d, int64_t n) {
  std::vector<float> h(static_cast<size_t>(n));
  CK(cudaMemcpy(h.data(), d, size_t(n) * sizeof(float), cudaMemcpyDeviceToHost));
  return h;
}
// Max |a - b| / max(1, |b|) (b: cuDNN's), recorded on the last row reported; NaN counts as failure.
void compare_last(const std::vector<float>& ours, const std::vector<float>& theirs) {
  double worst = 0;
  for (size_t i = 0; i < ours.size(); ++i) {
    const double d = std::fabs(double(ours[i]) - theirs[i]) / std::max(1.0, std::fabs(double(theirs[i])));
    if (!(d <= worst)) worst = d;  // also takes NaN
  }
  Row& r = g_rows.back();
  r.diff = worst;
  const bool ok = worst <= kMaxDiff;
  g_numbers_ok = g_numbers_ok && ok;
  std::printf("%-58s max |ours - cuDNN| = %.2e (relative)%s\n", "", worst, ok ? "" : "  ** ABOVE 1e-3 **");
}

void report(const Gpu& d, const std::string& name, double ms, int64_t bytes) {
  const double gbs = double(bytes) / (ms * 1e-3) / 1e9;
  std::printf("%-58s %9.3f ms %8.1f GB/s %5.1f%% of peak\n", name.c_str(), ms, gbs, 100.0 * gbs / d.peak_gbs);
  g_rows.push_back({name, ms, gbs, 100.0 * gbs / d.peak_gbs});
}

// The rows as one JSON object; names are our own ASCII labels, quotes escaped all the same.
bool write_json(const char* path, const char* device, const Gpu& d, int iters) {
  std::FILE* f = std::fopen(path, "w");
  if (!f) return false;
  auto esc = [](const std::string& s) {
    std::string o;
    for (char c : s) {
      if (c == '"' || c == '\\') o += '\\';
      o += c;
    }
    return o;
  };
  std::fprintf(f, "{\"device\": \"%s\", \"peak_gbs\": %.1f, \"iters\": %d, \"rows\": [\n",
               esc(device).c_str(), d.peak_gbs, iters);
  for (size_t i = 0; i < g_rows.size(); ++i)
    std::fprintf(f,
                 "  {\"name\": \"%s\", \"ms\": %.5f, \"gbs\": %.2f, \"pct_of_peak\": %.2f, "
                 "\"max_rel_diff_vs_normlab\": %s}%s\n",
                 esc(g_rows[i].name).c_str(), g_rows[i].ms, g_rows[i].gbs, g_rows[i].pct,
                 g_rows[i].diff < 0 ? "null" : std::to_string(g_rows[i].diff).c_str(),
                 i + 1 < g_rows.size() ? "," : "");
  std::fprintf(f, "]}\n");
  return std::fclose(f) == 0;
}

void run_shape(const Gpu& dev, cudnnHandle_t h, Kind kind, Pass pass, int64_t N, int64_t C, int64_t HW,
               int iters) {
  const int64_t n = N * C * HW, G = bench::norm_groups(kind);
  const int64_t bytes = (pass == kBwd ? 3 : 2) * n * int64_t(sizeof(float));
  Bufs b{};
  b.x = dev_floats(size_t(n), NAN), b.dy = dev_floats(size_t(n), NAN);
  b.y = dev_floats(size_t(n), 0), b.dx = dev_floats(size_t(n), 0);
  const int64_t stats = std::max(C, N * G), aff = std::max(C, N * G);
  b.gamma = dev_floats(size_t(aff), 1), b.beta = dev_floats(size_t(aff), 0);
  b.dgamma = dev_floats(size_t(aff), 0), b.dbeta = dev_floats(size_t(aff), 0);
  b.mean = dev_floats(size_t(stats), 0), b.rstd = dev_floats(size_t(stats), 1);
  b.rmean = dev_floats(size_t(stats), 0), b.rvar = dev_floats(size_t(stats), 1);
  CK(cudaMalloc(&b.mask, size_t(n)));

  NormParams p;
  p.N = N, p.C = C, p.HxW = HW, p.G = G, p.training = pass != kFwdEval;
  p.kind = kind == kBN ? NormKind::Batch : NormKind::Group;
  const nl::Device cuda = nl::Device::cuda();
  NormFwdArgs f;
  f.x = b.x, f.gamma = b.gamma, f.beta = b.beta, f.y = b.y, f.mean = b.mean, f.rstd = b.rstd;
  if (kind == kBN) f.running_mean = b.rmean, f.running_var = b.rvar;
  NormBwdArgs g;
  g.x = b.x, g.dy = b.dy, g.gamma = b.gamma, g.mean = b.mean, g.rstd = b.rstd;
  g.dx = b.dx, g.dgamma = b.dgamma, g.dbeta = b.dbeta;
  auto ours_fwd = [&] { norm_fwd_stub(cuda, p, f); };
  ours_fwd();
  const std::string base = bench::norm_case_name(kind, pass, N, C, HW);
  report(dev, base + "/normlab",
         median_ms(dev, iters,
                   [&] {
                     if (pass != kBwd) return ours_fwd();
                     norm_bwd_stub(cuda, p, g);
                   }),
         bytes);
  // Our output of the last timed run (the same every run: the same inputs), for the comparison.
  const bool compare = pass != kFwdEval;
  const std::vector<float> ours = compare ? to_host(pass == kBwd ? b.dx : b.y, n) : std::vector<float>();

  // cuDNN: BatchNorm on the real tensor, or on the [1, N*G, C/G*HW, 1] view for GN/LN.
  cudnnTensorDescriptor_t xd, sd;
  DNN(cudnnCreateTensorDescriptor(&xd));
  DNN(cudnnCreateTensorDescriptor(&sd));
  if (kind == kBN)
    DNN(cudnnSetTensor4dDescriptor(xd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, int(N), int(C), int(HW), 1));
  else
    DNN(cudnnSetTensor4dDescriptor(xd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1, int(N * G), int(C / G * HW),
                                   1));
  const std::vector<cudnnBatchNormMode_t> modes =
      kind == kBN
          ? std::vector<cudnnBatchNormMode_t>{CUDNN_BATCHNORM_SPATIAL, CUDNN_BATCHNORM_SPATIAL_PERSISTENT}
          : std::vector<cudnnBatchNormMode_t>{CUDNN_BATCHNORM_SPATIAL};
  for (cudnnBatchNormMode_t mode : modes) {
    DNN(cudnnDeriveBNTensorDescriptor(sd, xd, mode));
    const float one = 1.0f, zero = 0.0f;
    const cudnnBatchNormOps_t ops = CUDNN_BATCHNORM_OPS_BN;
    size_t ws = 0, rs = 0;
    DNN(cudnnGetBatchNormalizationForwardTrainingExWorkspaceSize(h, mode, ops, xd, nullptr, xd, sd, nullptr,
                                                                 &ws));
    DNN(cudnnGetBatchNormalizationTrainingExReserveSpaceSize(h, mode, ops, nullptr, xd, &rs));
    size_t bws = 0;
    DNN(cudnnGetBatchNormalizationBackwardExWorkspaceSize(h, mode, ops, xd, xd, xd, nullptr, xd, sd, nullptr,
                                                          &bws));
    void *work = nullptr, *reserve = nullptr;
    CK(cudaMalloc(&work, std::max<size_t>({ws, bws, 16})));
    CK(cudaMalloc(&reserve, std::max<size_t>(rs, 16)));
    auto fwd_train = [&] {
      DNN(cudnnBatchNormalizationForwardTrainingEx(h, mode, ops, &one, &zero, xd, b.x, nullptr, nullptr, xd,
                                                   b.y, sd, b.gamma, b.beta, 0.1, b.rmean, b.rvar, 1e-5,
                                                   b.mean, b.rstd, nullptr, work, std::max<size_t>(ws, 16),
                                                   reserve, std::max<size_t>(rs, 16)));
    };
    fwd_train();
    const std::string label = kind == kBN
                                  ? (mode == CUDNN_BATCHNORM_SPATIAL ? "/cudnn_spatial" : "/cudnn_persistent")
                                  : "/cudnn_bn_view(stand-in)";
    report(dev, base + label,
           median_ms(
               dev, iters,
               [&] {
                 if (pass != kBwd) {
                   if (pass == kFwdTrain)
                     fwd_train();
                   else
                     DNN(cudnnBatchNormalizationForwardInference(h, mode, &one, &zero, xd, b.x, xd, b.y, sd,
                                                                 b.gamma, b.beta, b.rmean, b.rvar, 1e-5));
                   if (kind == kGN) channel_affine_kernel<<<1024, 256>>>(n, C, HW, b.gamma, b.beta, b.y);
                   return;
                 }
                 DNN(cudnnBatchNormalizationBackwardEx(
                     h, mode, ops, &one, &zero, &one, &zero, xd, b.x, nullptr, nullptr, xd, b.dy, nullptr,
                     nullptr, xd, b.dx, sd, b.gamma, b.beta, b.dgamma, b.dbeta, 1e-5, b.mean, b.rstd, nullptr,
                     work, std::max<size_t>(bws, 16), reserve, std::max<size_t>(rs, 16)));
               }),
           bytes);
    if (compare) compare_last(ours, to_host(pass == kBwd ? b.dx : b.y, n));
    CK(cudaFree(work));
    CK(cudaFree(reserve));
  }
  DNN(cudnnDestroyTensorDescriptor(xd));
  DNN(cudnnDestroyTensorDescriptor(sd));

  if (kind == kLN) {
    // The backend graph LayerNorm; statistics from a training forward first when timing backward.
    const int64_t side = int64_t(std::lround(std::sqrt(double(HW))));
    float *scale = dev_floats(size_t(C * HW), 1), *bias = dev_floats(size_t(C * HW), 0);
    float *dscale = dev_floats(size_t(C * HW), 0), *dbias = dev_floats(size_t(C * HW), 0);
    float eps = 1e-5f;
    auto ptr = [&](int64_t uid) -> void* {
      using U = bench::GraphLayerNorm;
      switch (uid) {
        case U::kX: return b.x;
        case U::kY: return b.y;
        case U::kMean: return b.mean;
        case U::kInvVar: return b.rstd;
        case U::kScale: return scale;
        case U::kBias: return bias;
        case U::kEps: return &eps;
        case U::kDy: return b.dy;
        case U::kDx: return b.dx;
        case U::kDscale: return dscale;
        default: return dbias;
      }
    };
    try {
      bench::GraphLayerNorm train(h, N, C, side, side, 0);
      bench::GraphLayerNorm timed(h, N, C, side, side, int(pass));
      void* ws = nullptr;
      CK(cudaMalloc(&ws, std::max<size_t>({train.workspace_bytes(), timed.workspace_bytes(), 16})));
      train.run(ptr, ws);
      report(dev, base + "/cudnn_graph_layernorm", median_ms(dev, iters, [&] { timed.run(ptr, ws); }), bytes);
      if (compare) compare_last(ours, to_host(pass == kBwd ? b.dx : b.y, n));
      CK(cudaFree(ws));
    } catch (const std::exception& ex) {
      std::printf("%-58s not run: %s\n", (base + "/cudnn_graph_layernorm").c_str(), ex.what());
    }
    for (float* q : {scale, bias, dscale, dbias}) CK(cudaFree(q));
  }
  for (float* q : {b.x, b.y, b.dy, b.dx, b.gamma, b.beta, b.dgamma, b.dbeta, b.mean, b.rstd, b.rmean, b.rvar})
    CK(cudaFree(q));
  CK(cudaFree(b.mask));
}

}  // namespace

int main(int argc, char** argv) {
  int iters = 50;
  const char* json = nullptr;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--iters") == 0 && i + 1 < argc)
      iters = std::max(1, std::atoi(argv[++i]));
    else if (std::strcmp(argv[i], "--json") == 0 && i + 1 < argc)
      json = argv[++i];
    else {
      std::fprintf(stderr, "usage: bench_norm_cuda [--iters N] [--json FILE]\n");
      return 2;
    }
  }
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0) {
    std::printf("bench_norm_cuda: skipped: no CUDA device (%s)\n",
                e != cudaSuccess ? cudaGetErrorString(e) : "cudaGetDeviceCount found 0 devices");
    return 0;
  }
  Gpu dev;
  int clock_khz = 0, bus_bits = 0, l2 = 0;
  CK(cudaDeviceGetAttribute(&clock_khz, cudaDevAttrMemoryClockRate, 0));
  CK(cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, 0));
  CK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, 0));
  dev.peak_gbs = 2.0 * clock_khz * 1e3 * (bus_bits / 8.0) / 1e9;
  dev.l2 = size_t(std::max(l2, 1 << 20));
  CK(cudaMalloc(&dev.flush, dev.l2 * 2));
  cudaDeviceProp prop{};
  CK(cudaGetDeviceProperties(&prop, 0));
  std::printf("# %s, peak memory bandwidth %.0f GB/s (queried), L2 %zu KiB, median of %d, L2 flushed\n",
              prop.name, dev.peak_gbs, dev.l2 / 1024, iters);
  cudnnHandle_t h;
  DNN(cudnnCreate(&h));
  for (int kind : {kBN, kGN, kLN})
    for (int pass : {kFwdTrain, kFwdEval, kBwd})
      for (int64_t N : bench::kNormBatches)
        for (const auto& s : bench::kNormShapes)
          run_shape(dev, h, Kind(kind), Pass(pass), N, s[0], s[1], iters);
  DNN(cudnnDestroy(h));
  CK(cudaFree(dev.flush));
  if (json && !write_json(json, prop.name, dev, iters)) {
    std::fprintf(stderr, "bench_norm_cuda: cannot write %s\n", json);
    return 1;
  }
  if (!g_numbers_ok) {
    std::fprintf(stderr,
                 "bench_norm_cuda: outputs differ from cuDNN's by more than %.0e (rows marked above)\n",
                 kMaxDiff);
    return 1;
  }
  return 0;
}
