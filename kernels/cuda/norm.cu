// The normalisation family on the GPU: BatchNorm2d, GroupNorm (G = 1 is LayerNorm over C,H,W,
// G = C InstanceNorm) and LayerNorm over the last dimension, forward and backward.
//
// Every kernel reduces with block_sum (warp shuffles + shared memory) in a fixed order, and
// dgamma/dbeta come from per-(n, c) partial sums reduced by a second small kernel: no float
// atomics anywhere, so gradients are bitwise reproducible. Statistics are two-pass (mean, then
// centred squares) over data the block re-reads from L2/global memory. See docs/kernels.md for
// grid mappings and bytes moved.
#include "kernels/cuda/cuda_common.h"
#include "kernels/cuda/reduce.cuh"
#include "kernels/stubs.h"

namespace nl::cuda {

namespace {
constexpr int kThreads = 256;
constexpr size_t kScratch = 64 * sizeof(float);  // block_sum2 needs 2 x 32 floats
}  // namespace

__device__ __forceinline__ float gamma_at(const float* g, int64_t c) { return g ? g[c] : 1.0f; }
__device__ __forceinline__ float beta_at(const float* b, int64_t c) { return b ? b[c] : 0.0f; }

// ---------------------------------------------------------------------------------- GroupNorm

// One block per (n, g): the group's Cg * HxW elements are contiguous.
__global__ void group_norm_fwd_kernel(NormParams p, const float* x, const float* gamma,
                                      const float* beta, float* y, float* mean, float* rstd) {
  NL_DYN_SHARED(float, scratch);
  const int64_t ng = blockIdx.x, n = ng / p.G, g = ng % p.G, Cg = p.C / p.G, D = Cg * p.HxW;
  const float* xg = x + ng * D;
  float s = 0.0f;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) s += xg[i];
  const float m = block_sum(s, scratch) / float(D);
  float q = 0.0f;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
    const float d = xg[i] - m;
    q += d * d;
  }
  const float r = rsqrtf(block_sum(q, scratch) / float(D) + p.eps);
  if (threadIdx.x == 0) mean[ng] = m, rstd[ng] = r;
  float* yg = y + ng * D;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
    const int64_t c = g * Cg + i / p.HxW;
    yg[i] = (xg[i] - m) * r * gamma_at(gamma, c) + beta_at(beta, c);
  }
  (void)n;
}

// One block per (n, g): per-channel sums sum(dy) and sum(dy * xhat) go to ds/db for the
// dgamma/dbeta kernel, and their gamma-weighted totals give dx in the same block.
__global__ void group_norm_bwd_kernel(NormParams p, const float* x, const float* dy,
                                      const float* gamma, const float* mean, const float* rstd,
                                      float* dx, float* db_nc, float* ds_nc) {
  NL_DYN_SHARED(float, scratch);
  const int64_t ng = blockIdx.x, n = ng / p.G, g = ng % p.G, Cg = p.C / p.G, D = Cg * p.HxW;
  const float m = mean[ng], r = rstd[ng];
  const float* xg = x + ng * D;
  const float* dyg = dy + ng * D;
  float sum_gdy = 0.0f, sum_gdy_xhat = 0.0f;  // identical in every thread after each block_sum2
  for (int64_t ci = 0; ci < Cg; ++ci) {
    const int64_t c = g * Cg + ci;
    float a = 0.0f, b = 0.0f;
    for (int64_t i = threadIdx.x; i < p.HxW; i += blockDim.x) {
      const float d = dyg[ci * p.HxW + i];
      a += d;
      b += d * (xg[ci * p.HxW + i] - m) * r;
    }
    block_sum2(a, b, scratch);
    if (threadIdx.x == 0) db_nc[n * p.C + c] = a, ds_nc[n * p.C + c] = b;
    sum_gdy += gamma_at(gamma, c) * a;
    sum_gdy_xhat += gamma_at(gamma, c) * b;
  }
  if (!dx) return;
  const float k1 = sum_gdy / float(D), k2 = sum_gdy_xhat / float(D);
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
    const int64_t c = g * Cg + i / p.HxW;
    const float xhat = (xg[i] - m) * r;
    dx[ng * D + i] = r * (gamma_at(gamma, c) * dyg[i] - k1 - xhat * k2);
  }
}

// dgamma[c] = sum_n ds[n, c], dbeta[c] = sum_n db[n, c]: one thread per channel, n in order.
__global__ void reduce_over_n_kernel(int64_t N, int64_t C, const float* db_nc, const float* ds_nc,
                                     float* dgamma, float* dbeta) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= C) return;
  float a = 0.0f, b = 0.0f;
  for (int64_t n = 0; n < N; ++n) a += db_nc[n * C + c], b += ds_nc[n * C + c];
  if (dbeta) dbeta[c] = a;
  if (dgamma) dgamma[c] = b;
}

// ---------------------------------------------------------------------------------- BatchNorm

// One block per channel over (N, HxW). Enough for the network's shapes; splitting a channel
// across blocks is the next step for very few channels (norm-kernels.md).
__global__ void batch_norm_fwd_kernel(NormParams p, const float* x, const float* gamma,
                                      const float* beta, float* running_mean, float* running_var,
                                      float* y, float* mean, float* rstd) {
  NL_DYN_SHARED(float, scratch);
  const int64_t c = blockIdx.x, M = p.N * p.HxW, plane = p.C * p.HxW;
  float m, r;
  if (p.training) {
    float s = 0.0f;
    for (int64_t i = threadIdx.x; i < M; i += blockDim.x) s += x[(i / p.HxW) * plane + c * p.HxW + i % p.HxW];
    m = block_sum(s, scratch) / float(M);
    float q = 0.0f;
    for (int64_t i = threadIdx.x; i < M; i += blockDim.x) {
      const float d = x[(i / p.HxW) * plane + c * p.HxW + i % p.HxW] - m;
      q += d * d;
    }
    const float var = block_sum(q, scratch) / float(M);
    r = rsqrtf(var + p.eps);
    if (threadIdx.x == 0 && running_mean) {
      running_mean[c] = (1.0f - p.momentum) * running_mean[c] + p.momentum * m;
      running_var[c] = (1.0f - p.momentum) * running_var[c] + p.momentum * var * float(M) / float(M - 1);
    }
  } else {
    m = running_mean[c];
    r = rsqrtf(running_var[c] + p.eps);
  }
  if (threadIdx.x == 0) mean[c] = m, rstd[c] = r;
  const float scale = gamma_at(gamma, c) * r, shift = beta_at(beta, c) - m * scale;
  for (int64_t i = threadIdx.x; i < M; i += blockDim.x) {
    const int64_t off = (i / p.HxW) * plane + c * p.HxW + i % p.HxW;
    y[off] = x[off] * scale + shift;
  }
}

__global__ void batch_norm_bwd_kernel(NormParams p, const float* x, const float* dy,
                                      const float* gamma, const float* mean, const float* rstd,
                                      float* dx, float* dgamma, float* dbeta) {
  NL_DYN_SHARED(float, scratch);
  const int64_t c = blockIdx.x, M = p.N * p.HxW, plane = p.C * p.HxW;
  const float m = mean[c], r = rstd[c];
  float sdy = 0.0f, sdyxhat = 0.0f;
  for (int64_t i = threadIdx.x; i < M; i += blockDim.x) {
    const int64_t off = (i / p.HxW) * plane + c * p.HxW + i % p.HxW;
    sdy += dy[off];
    sdyxhat += dy[off] * (x[off] - m) * r;
  }
  block_sum2(sdy, sdyxhat, scratch);
  if (threadIdx.x == 0) {
    if (dgamma) dgamma[c] = sdyxhat;
    if (dbeta) dbeta[c] = sdy;
  }
  if (!dx) return;
  const float g = gamma_at(gamma, c);
  const float k1 = p.training ? sdy / float(M) : 0.0f, k2 = p.training ? sdyxhat / float(M) : 0.0f;
  for (int64_t i = threadIdx.x; i < M; i += blockDim.x) {
    const int64_t off = (i / p.HxW) * plane + c * p.HxW + i % p.HxW;
    dx[off] = g * r * (dy[off] - k1 - (x[off] - m) * r * k2);
  }
}

// ---------------------------------------------------------------------------------- LayerNorm (rows)

// One block per row of C elements, per-element affine.
__global__ void layer_norm_fwd_kernel(NormParams p, const float* x, const float* gamma,
                                      const float* beta, float* y, float* mean, float* rstd) {
  NL_DYN_SHARED(float, scratch);
  const int64_t row = blockIdx.x;
  const float* xr = x + row * p.C;
  float s = 0.0f;
  for (int64_t i = threadIdx.x; i < p.C; i += blockDim.x) s += xr[i];
  const float m = block_sum(s, scratch) / float(p.C);
  float q = 0.0f;
  for (int64_t i = threadIdx.x; i < p.C; i += blockDim.x) q += (xr[i] - m) * (xr[i] - m);
  const float r = rsqrtf(block_sum(q, scratch) / float(p.C) + p.eps);
  if (threadIdx.x == 0) mean[row] = m, rstd[row] = r;
  for (int64_t i = threadIdx.x; i < p.C; i += blockDim.x)
    y[row * p.C + i] = (xr[i] - m) * r * gamma_at(gamma, i) + beta_at(beta, i);
}

__global__ void layer_norm_bwd_dx_kernel(NormParams p, const float* x, const float* dy,
                                         const float* gamma, const float* mean, const float* rstd,
                                         float* dx) {
  NL_DYN_SHARED(float, scratch);
  const int64_t row = blockIdx.x;
  const float m = mean[row], r = rstd[row];
  const float* xr = x + row * p.C;
  const float* dyr = dy + row * p.C;
  float a = 0.0f, b = 0.0f;
  for (int64_t i = threadIdx.x; i < p.C; i += blockDim.x) {
    const float gdy = gamma_at(gamma, i) * dyr[i];
    a += gdy;
    b += gdy * (xr[i] - m) * r;
  }
  block_sum2(a, b, scratch);
  const float k1 = a / float(p.C), k2 = b / float(p.C);
  for (int64_t i = threadIdx.x; i < p.C; i += blockDim.x)
    dx[row * p.C + i] = r * (gamma_at(gamma, i) * dyr[i] - k1 - (xr[i] - m) * r * k2);
}

// One thread per column, rows in order.
__global__ void layer_norm_bwd_affine_kernel(NormParams p, const float* x, const float* dy,
                                             const float* mean, const float* rstd, float* dgamma,
                                             float* dbeta) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= p.C) return;
  float a = 0.0f, b = 0.0f;
  for (int64_t row = 0; row < p.N; ++row) {
    const float d = dy[row * p.C + c];
    a += d;
    b += d * (x[row * p.C + c] - mean[row]) * rstd[row];
  }
  if (dbeta) dbeta[c] = a;
  if (dgamma) dgamma[c] = b;
}

// ---------------------------------------------------------------------------------- launchers

void group_norm_fwd(const NormParams& p, const float* x, const float* gamma, const float* beta,
                    float* y, float* mean, float* rstd) {
  if (p.N * p.G == 0) return;
  NL_LAUNCH(group_norm_fwd_kernel, unsigned(p.N * p.G), kThreads, kScratch, p, x, gamma, beta, y, mean, rstd);
}

void group_norm_bwd(const NormParams& p, const float* x, const float* dy, const float* gamma,
                    const float* mean, const float* rstd, float* dx, float* dgamma, float* dbeta) {
  if (p.N * p.G == 0) return;
  Scratch scratch(sizeof(float) * 2 * size_t(p.N * p.C));  // db_nc then ds_nc, [N, C] each
  float* partial = scratch.f32();
  NL_LAUNCH(group_norm_bwd_kernel, unsigned(p.N * p.G), kThreads, kScratch, p, x, dy, gamma, mean,
            rstd, dx, partial, partial + p.N * p.C);
  if (dgamma || dbeta)
    NL_LAUNCH(reduce_over_n_kernel, unsigned(ceil_div(p.C, 128)), 128, 0, p.N, p.C, partial,
              partial + p.N * p.C, dgamma, dbeta);
}

void batch_norm_fwd(const NormParams& p, const float* x, const float* gamma, const float* beta,
                    float* running_mean, float* running_var, float* y, float* mean, float* rstd) {
  if (p.C == 0) return;
  NL_LAUNCH(batch_norm_fwd_kernel, unsigned(p.C), kThreads, kScratch, p, x, gamma, beta,
            running_mean, running_var, y, mean, rstd);
}

void batch_norm_bwd(const NormParams& p, const float* x, const float* dy, const float* gamma,
                    const float* mean, const float* rstd, float* dx, float* dgamma, float* dbeta) {
  if (p.C == 0) return;
  NL_LAUNCH(batch_norm_bwd_kernel, unsigned(p.C), kThreads, kScratch, p, x, dy, gamma, mean, rstd,
            dx, dgamma, dbeta);
}

void layer_norm_fwd(const NormParams& p, const float* x, const float* gamma, const float* beta,
                    float* y, float* mean, float* rstd) {
  if (p.N == 0) return;
  NL_LAUNCH(layer_norm_fwd_kernel, unsigned(p.N), kThreads, kScratch, p, x, gamma, beta, y, mean, rstd);
}

void layer_norm_bwd(const NormParams& p, const float* x, const float* dy, const float* gamma,
                    const float* mean, const float* rstd, float* dx, float* dgamma, float* dbeta) {
  if (p.N == 0) return;
  if (dx) NL_LAUNCH(layer_norm_bwd_dx_kernel, unsigned(p.N), kThreads, kScratch, p, x, dy, gamma, mean, rstd, dx);
  if (dgamma || dbeta)
    NL_LAUNCH(layer_norm_bwd_affine_kernel, unsigned(ceil_div(p.C, 128)), 128, 0, p, x, dy, mean,
              rstd, dgamma, dbeta);
}

// ---------------------------------------------------------------------------------- registration

void register_norm_kernels() {
  batch_norm_fwd_stub.set(DeviceType::CUDA, &batch_norm_fwd);
  batch_norm_bwd_stub.set(DeviceType::CUDA, &batch_norm_bwd);
  group_norm_fwd_stub.set(DeviceType::CUDA, &group_norm_fwd);
  group_norm_bwd_stub.set(DeviceType::CUDA, &group_norm_bwd);
  layer_norm_fwd_stub.set(DeviceType::CUDA, &layer_norm_fwd);
  layer_norm_bwd_stub.set(DeviceType::CUDA, &layer_norm_bwd);
}

}  // namespace nl::cuda
