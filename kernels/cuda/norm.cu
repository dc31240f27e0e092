// The normalisation family on the GPU: BatchNorm2d, GroupNorm (G = 1 is LayerNorm over C,H,W,
// G = C InstanceNorm) and LayerNorm over the last dimension, forward and backward.
//
// Every kernel reduces with block_sum (warp shuffles + shared memory) in a fixed order, and
// dgamma/dbeta come from per-(n, c) partial sums reduced by a second small kernel: no float
// atomics anywhere, so gradients are bitwise reproducible. Statistics are two-pass (mean, then
// centred squares) over data the block re-reads from L2/global memory. See docs/kernels.md for
// grid mappings and bytes moved.
#include <cstdint>
#include <cstdlib>
#include <initializer_list>
#include <string>

#include "kernels/cuda/cuda_common.h"
#include "kernels/cuda/norm_epilogue.cuh"
#include "kernels/cuda/reduce.cuh"
#include "normlab/core/kernel/philox.h"
#include "normlab/core/kernel/stubs.h"

namespace nl::cuda {

namespace {
constexpr int kThreads = 256;
constexpr size_t kScratch = 64 * sizeof(float);  // block_sum2 needs 2 x 32 floats
}  // namespace

// ---------------------------------------------------------------------------------- GroupNorm

// One block per (n, g): the group's Cg * HxW elements are contiguous. kVec (HxW % 4 == 0,
// aligned pointers): each thread moves 4 elements per access, all in one channel.
template <bool kVec>
__global__ void group_norm_fwd_kernel(NormParams p, const float* x, const float* gamma, const float* beta,
                                      const float* tau, Epilogue e, float* y, float* mean, float* rstd) {
  NL_DYN_SHARED(float, scratch);
  // Groups in turn (gn_grid caps the grid so the groups in flight stay in L2 for the 2nd and 3rd
  // pass); block_sum's trailing barrier makes scratch safe to reuse for the next group.
  for (int64_t ng = blockIdx.x; ng < p.N * p.G; ng += gridDim.x) {
    const int64_t g = ng % p.G, Cg = p.C / p.G, D = Cg * p.HxW;
    const float* xg = x + ng * D;
    float m = 0.0f;  // RMSNorm (!p.center): no mean, one pass fewer; p is uniform, so is the branch
    if (p.center) {
      float s = 0.0f;
      if (kVec) {
        for (int64_t i = 4 * threadIdx.x; i < D; i += 4 * blockDim.x) {
          float v[4];
          load4(xg, i, v);
          s += (v[0] + v[1]) + (v[2] + v[3]);
        }
      } else {
        for (int64_t i = threadIdx.x; i < D; i += blockDim.x) s += xg[i];
      }
      m = block_sum(s, scratch) / float(D);
    }
    float q = 0.0f;
    if (kVec) {
      for (int64_t i = 4 * threadIdx.x; i < D; i += 4 * blockDim.x) {
        float v[4];
        load4(xg, i, v);
        for (int l = 0; l < 4; ++l) q += (v[l] - m) * (v[l] - m);
      }
    } else {
      for (int64_t i = threadIdx.x; i < D; i += blockDim.x) q += (xg[i] - m) * (xg[i] - m);
    }
    const float r = rsqrtf(block_sum(q, scratch) / float(D) + p.eps);
    if (threadIdx.x == 0) mean[ng] = m, rstd[ng] = r;
    if (kVec) {
      for (int64_t i = 4 * threadIdx.x; i < D; i += 4 * blockDim.x) {
        const int64_t c = g * Cg + i / p.HxW;
        const float scale = gamma_at(gamma, c) * r, shift = beta_at(beta, c) - m * scale;
        float v[4];
        load4(xg, i, v);
        for (int l = 0; l < 4; ++l) v[l] = v[l] * scale + shift;
        epilogue4(p, e, ng * D + i, v, p.tlu ? tau[c] : 0.0f);
        store4(y, ng * D + i, v);
      }
    } else {
      for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
        const int64_t c = g * Cg + i / p.HxW;
        const float scale = gamma_at(gamma, c) * r, shift = beta_at(beta, c) - m * scale;
        store_stream(y + ng * D + i,
                     epilogue1(p, e, ng * D + i, xg[i] * scale + shift, p.tlu ? tau[c] : 0.0f));
      }
    }
  }
}

// One block per (n, g): per-channel sums of g and g * xhat (g: dy through the mask) go to
// db_nc/ds_nc for the dgamma/dbeta kernel, and their gamma-weighted totals give dx in the same
// block. kTlu (FRN): also TLU's per-channel tau gradient to dt_nc; a template parameter with its
// own kernel, not a branch on p.tlu, because the branch cost every GroupNorm backward 8 registers
// (48 -> 56 on sm_90).
template <bool kVec, bool kTlu>
__device__ __forceinline__ void group_norm_bwd_body(const NormParams& p, const float* x, const float* dy,
                                                    const float* gamma, const float* mean, const float* rstd,
                                                    const uint8_t* mask, float keep_scale, float* dx,
                                                    float* db_nc, float* ds_nc, float* dt_nc) {
  NL_DYN_SHARED(float, scratch);
  for (int64_t ng = blockIdx.x; ng < p.N * p.G; ng += gridDim.x) {  // groups in turn, as forward
    const int64_t n = ng / p.G, g = ng % p.G, Cg = p.C / p.G, D = Cg * p.HxW;
    const float m = mean[ng], r = rstd[ng];
    const int64_t base = ng * D;
    float sum_gg = 0.0f, sum_gg_xhat = 0.0f;  // identical in every thread after each block_sum2
    for (int64_t ci = 0; ci < Cg; ++ci) {
      const int64_t c = g * Cg + ci, row = base + ci * p.HxW;
      float a = 0.0f, b = 0.0f;
      if (kVec) {
        for (int64_t i = 4 * threadIdx.x; i < p.HxW; i += 4 * blockDim.x) {
          float gv[4], xv[4];
          masked_dy4(dy, mask, keep_scale, row + i, gv);
          load4(x, row + i, xv);
          for (int l = 0; l < 4; ++l) a += gv[l], b += gv[l] * (xv[l] - m) * r;
        }
      } else {
        for (int64_t i = threadIdx.x; i < p.HxW; i += blockDim.x) {
          const float d = masked_dy(dy, mask, keep_scale, row + i);
          a += d;
          b += d * (x[row + i] - m) * r;
        }
      }
      block_sum2(a, b, scratch);
      if (threadIdx.x == 0) db_nc[n * p.C + c] = a, ds_nc[n * p.C + c] = b;
      if (kTlu) {
        float t = 0.0f;
        for (int64_t i = threadIdx.x; i < p.HxW; i += blockDim.x)
          t += clamped_dy(dy, mask, keep_scale, row + i);
        t = block_sum(t, scratch);
        if (threadIdx.x == 0) dt_nc[n * p.C + c] = t;
      }
      sum_gg += gamma_at(gamma, c) * a;
      sum_gg_xhat += gamma_at(gamma, c) * b;
    }
    if (!dx) continue;
    // Without centering no mean flows back: the sum_gg term drops (RMSNorm).
    const float k1 = p.center ? sum_gg / float(D) : 0.0f, k2 = sum_gg_xhat / float(D);
    if (kVec) {
      for (int64_t i = 4 * threadIdx.x; i < D; i += 4 * blockDim.x) {
        const float gc = gamma_at(gamma, g * Cg + i / p.HxW);
        float gv[4], xv[4];
        masked_dy4(dy, mask, keep_scale, base + i, gv);
        load4(x, base + i, xv);
        for (int l = 0; l < 4; ++l) gv[l] = r * (gc * gv[l] - k1 - (xv[l] - m) * r * k2);
        store4(dx, base + i, gv);
      }
    } else {
      for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
        const float gc = gamma_at(gamma, g * Cg + i / p.HxW);
        const float xhat = (x[base + i] - m) * r;
        store_stream(dx + base + i, r * (gc * masked_dy(dy, mask, keep_scale, base + i) - k1 - xhat * k2));
      }
    }
  }
}

// The two entry points: GroupNorm and its relatives, and FRN (TLU: dt_nc too).
template <bool kVec>
__global__ void group_norm_bwd_kernel(NormParams p, const float* x, const float* dy, const float* gamma,
                                      const float* mean, const float* rstd, const uint8_t* mask,
                                      float keep_scale, float* dx, float* db_nc, float* ds_nc) {
  group_norm_bwd_body<kVec, false>(p, x, dy, gamma, mean, rstd, mask, keep_scale, dx, db_nc, ds_nc, nullptr);
}
template <bool kVec>
__global__ void group_norm_tlu_bwd_kernel(NormParams p, const float* x, const float* dy, const float* gamma,
                                          const float* mean, const float* rstd, const uint8_t* mask,
                                          float keep_scale, float* dx, float* db_nc, float* ds_nc,
                                          float* dt_nc) {
  group_norm_bwd_body<kVec, true>(p, x, dy, gamma, mean, rstd, mask, keep_scale, dx, db_nc, ds_nc, dt_nc);
}

// dgamma[c] = sum_n ds[n, c], dbeta[c] = sum_n db[n, c]. A block is 32 channels x 32 row lanes:
// a warp (one row lane) reads 32 neighbouring channels of a row, coalesced; each row lane sums the
// rows n = ty, ty + 32, ... in order and the 32 partials are added in a fixed tree order, so the
// result does not depend on scheduling. The first version, one thread per channel walking all N
// rows, was latency-bound: about 80 us of GroupNorm's 90 us backward at N = 512, C = 24 on an
// H200 for 100 KB of partials (scripts/gpu-check.sh, 2026-11-30); the traffic model had put the
// whole backward at 6 us.
constexpr int kReduceCols = 32, kReduceRows = 32;
__global__ void reduce_over_n_kernel(int64_t N, int64_t C, const float* db_nc, const float* ds_nc,
                                     float* dgamma, float* dbeta) {
  NL_DYN_SHARED(float, sa);  // [2][kReduceRows][kReduceCols]: the db sums, then the ds sums
  float* sb = sa + kReduceRows * kReduceCols;
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t c = blockIdx.x * int64_t(kReduceCols) + tx;
  float a = 0.0f, b = 0.0f;
  if (c < C)
    for (int64_t n = ty; n < N; n += kReduceRows) a += db_nc[n * C + c], b += ds_nc[n * C + c];
  sa[ty * kReduceCols + tx] = a;
  sb[ty * kReduceCols + tx] = b;
  __syncthreads();
  for (int s = kReduceRows / 2; s > 0; s >>= 1) {
    if (ty < s) {
      sa[ty * kReduceCols + tx] += sa[(ty + s) * kReduceCols + tx];
      sb[ty * kReduceCols + tx] += sb[(ty + s) * kReduceCols + tx];
    }
    __syncthreads();
  }
  if (ty == 0 && c < C) {
    if (dbeta) dbeta[c] = sa[tx];
    if (dgamma) dgamma[c] = sb[tx];
  }
}

// ---------------------------------------------------------------------------------- BatchNorm
//
// Forward: a channel's N * HxW elements are split over kSplit blocks (grid C x kSplit): one block
// per channel left most of a GPU idle at the network's 16-32 channels. Each block writes its
// partial sums to [2][kSplit][C] scratch (channel fastest: the finishing kernel's lanes, one
// channel each, read it coalesced); a block does not wait for the others (no grid-wide sync, no
// atomics): the statistics are finished by a second tiny kernel, and the elementwise pass is a
// third launch over the same grid. Partials are summed in split order: deterministic. (Forward
// re-reads only x, which L2 mostly holds; backward re-reads x, dy and the mask and is one
// ticket-ordered launch instead: batch_norm_bwd_kernel.)
constexpr int kSplit = 8;

// Element j of channel c's N * HxW: sample j / HxW, position j % HxW. kVec: HxW % 4 == 0, so 4
// consecutive j share a sample and are contiguous.
__device__ __forceinline__ int64_t bn_offset(const NormParams& p, int64_t c, int64_t j) {
  return (j / p.HxW) * p.C * p.HxW + c * p.HxW + j % p.HxW;
}

// The split's share of [0, M): [begin, end), multiples of 4 (kVec needs whole quads).
__device__ __forceinline__ void bn_split(int64_t M, int64_t& begin, int64_t& end) {
  const int64_t quads = (M + 3) / 4, per = (quads + kSplit - 1) / kSplit;
  begin = int64_t(blockIdx.y) * per * 4;
  begin = begin < M ? begin : M;
  end = begin + per * 4 < M ? begin + per * 4 : M;
}

// Pass 1 (training): per (c, split) sum of x, and sum of squares about `shift_mean` = the
// channel's first element, which keeps the one-pass variance well conditioned.
template <bool kVec>
__global__ void batch_norm_stats_kernel(NormParams p, const float* x, float* part) {
  NL_DYN_SHARED(float, scratch);
  const int64_t c = blockIdx.x, M = p.N * p.HxW;
  int64_t begin, end;
  bn_split(M, begin, end);
  const float k = x[bn_offset(p, c, 0)];
  float s = 0.0f, q = 0.0f;
  if (kVec) {
    for (int64_t j = begin + 4 * threadIdx.x; j < end; j += 4 * blockDim.x) {
      float v[4];
      load4(x, bn_offset(p, c, j), v);
      for (int l = 0; l < 4; ++l) s += v[l] - k, q += (v[l] - k) * (v[l] - k);
    }
  } else {
    for (int64_t j = begin + threadIdx.x; j < end; j += blockDim.x) {
      const float d = x[bn_offset(p, c, j)] - k;
      s += d, q += d * d;
    }
  }
  block_sum2(s, q, scratch);
  if (threadIdx.x == 0) part[blockIdx.y * p.C + c] = s, part[(kSplit + blockIdx.y) * p.C + c] = q;
}

// One thread per channel: mean, rstd and the running statistics from the kSplit partials.
__global__ void batch_norm_finish_kernel(NormParams p, const float* x, const float* part, float* running_mean,
                                         float* running_var, float* mean, float* rstd, float* renorm,
                                         const float* renorm_step) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= p.C) return;
  if (!p.training) {
    mean[c] = running_mean[c];
    rstd[c] = rsqrtf(running_var[c] + p.eps);
    return;
  }
  const int64_t M = p.N * p.HxW;
  float s = 0.0f, q = 0.0f;
  for (int k = 0; k < kSplit; ++k) s += part[k * p.C + c], q += part[(kSplit + k) * p.C + c];
  const float shift_mean = s / float(M);
  const float var = fmaxf(q / float(M) - shift_mean * shift_mean, 0.0f);
  const float m = x[bn_offset(p, c, 0)] + shift_mean;
  mean[c] = m;
  rstd[c] = rsqrtf(var + p.eps);
  if (p.renorm) {
    // Batch Renorm's r and d, from the running statistics before this batch updates them.
    const float warm = float(renorm_warmup_fraction(p, renorm_step));
    const float r_max = 1.0f + (p.r_max - 1.0f) * warm, d_max = p.d_max * warm;
    const float sigma_run = sqrtf(running_var[c] + p.eps);
    renorm[c] = fminf(fmaxf(sqrtf(var + p.eps) / sigma_run, 1.0f / r_max), r_max);
    renorm[p.C + c] = fminf(fmaxf((m - running_mean[c]) / sigma_run, -d_max), d_max);
  }
  if (running_mean) {
    running_mean[c] = (1.0f - p.momentum) * running_mean[c] + p.momentum * m;
    running_var[c] = (1.0f - p.momentum) * running_var[c] + p.momentum * var * float(M) / float(M - 1);
  }
}

template <bool kVec>
__global__ void batch_norm_apply_kernel(NormParams p, const float* x, const float* gamma, const float* beta,
                                        const float* mean, const float* rstd, const float* renorm, Epilogue e,
                                        float* y) {
  const int64_t c = blockIdx.x, M = p.N * p.HxW;
  int64_t begin, end;
  bn_split(M, begin, end);
  // gamma * (r * xhat + d) + beta as one scale and shift (r = 1, d = 0 unless Batch Renorm).
  const float rr = p.renorm ? renorm[c] : 1.0f, dd = p.renorm ? renorm[p.C + c] : 0.0f;
  const float scale = gamma_at(gamma, c) * rr * rstd[c];
  const float shift = beta_at(beta, c) + gamma_at(gamma, c) * dd - mean[c] * scale;
  // Backwards through the split, the reverse of the statistics pass: the x it read last is still
  // in L2 and is read first (docs/kernels.md, "L2-aware order"). Lanes stay on consecutive
  // elements, so every request is as coalesced as forwards.
  if (kVec) {
    const int64_t quads = (end - begin) / 4;
    for (int64_t q = threadIdx.x; q < quads; q += blockDim.x) {
      const int64_t off = bn_offset(p, c, begin + 4 * (quads - 1 - q));
      float v[4];
      load4(x, off, v);
      for (int l = 0; l < 4; ++l) v[l] = v[l] * scale + shift;
      epilogue4(p, e, off, v);
      store4(y, off, v);
    }
  } else {
    for (int64_t q = threadIdx.x; q < end - begin; q += blockDim.x) {
      const int64_t off = bn_offset(p, c, end - 1 - q);
      store_stream(y + off, epilogue1(p, e, off, x[off] * scale + shift));
    }
  }
}

// Backward in one launch, ordered so that the second read of x, dy and the mask comes from L2.
//
// Two passes per channel are unavoidable (dx needs the channel's sums of g and g * xhat over the
// whole batch), and at batch 512 the re-read set of all channels (x, dy, mask: 2.25T = 151 MB on
// the network's C2 layer) is three times an H100's L2: two launches, sums then dx, re-read most
// of it from DRAM (+1.48T; docs/kernels.md). Here the work is cut into items of kBnItem elements
// of one channel, a sums item and a dx item for each, and blocks take items by ticket (an atomic
// counter, so ticket order is the order blocks really start in). The first D tickets are sums
// items; after them dx items and the remaining sums items alternate. A dx item re-reads what the
// sums items D tickets before it read: with D ~ the blocks resident at once, about 2D items of
// data are live, 19.5 MB at the defaults, which an L2 holds.
//
// A dx item needs its channel's totals: the last sums item of a channel to finish (an acq_rel
// counter per channel) adds the channel's partials in item order (deterministic, whoever is
// last), writes dgamma/dbeta and the totals, and release-stores the channel's ready flag; dx items
// acquire it. D >= S (items per channel) puts every sums item of a channel at a smaller ticket than
// the channel's first dx item, so a waiting block waits only on blocks that took their tickets
// earlier, are resident and never wait themselves: no deadlock, whatever the residency.
constexpr int kBnBwdThreads = 512;
// Two float4 of each tensor per thread: an item re-reads 4096 * (4 + 4 + 1) = 36 KiB.
constexpr int kBnQuadsPerThread = 2;
constexpr int64_t kBnItem = 4 * kBnQuadsPerThread * kBnBwdThreads;
// Blocks resident at the kernel's launch bounds (2 per SM of the device): the ticket distance D
// between an item's sums and its dx when the L2 budget allows it (batch_norm_bwd).
namespace {
int64_t bn_resident() { return 2 * device_limits().sms; }
}  // namespace

struct BnBwdPlan {
  int64_t S;  // items per channel
  int64_t Q;  // sums items (C * S); as many dx items when dx is wanted
  int64_t D;  // sums items before the first dx item, S <= D <= Q
  // SyncBatchNorm's last phase: (sum(g), sum(g * xhat)) / count of every process, [2, C], given;
  // then the launch is Q dx items and no sums items.
  const float* dx_terms;
};

// Ticket t -> a sums item (is_dx false) or a dx item, u in [0, Q): channel u / S, item u % S.
__device__ __forceinline__ void bn_bwd_item(const BnBwdPlan& pl, int64_t t, bool& is_dx, int64_t& u) {
  const int64_t pairs = pl.Q - pl.D;  // sums items after the first D, each paired with a dx item
  if (t < pl.D) {
    is_dx = false, u = t;
  } else if (t - pl.D < 2 * pairs) {
    const int64_t r = t - pl.D;
    is_dx = r % 2 == 0, u = is_dx ? r / 2 : pl.D + r / 2;
  } else {
    is_dx = true, u = pairs + (t - pl.D - 2 * pairs);
  }
}

// Visits this thread's share of an item, elements [begin, end) of channel c: f(offset, g, x, n)
// with g the masked gradient and x the input at n = 4 consecutive elements (kVec: a quad, a warp's
// lanes on consecutive quads) or n = 1 (scalar: a warp's lanes on consecutive elements).
template <bool kVec, typename F>
__device__ __forceinline__ void bn_item_visit(const NormParams& p, int64_t c, int64_t begin, int64_t end,
                                              const float* x, const float* dy, const uint8_t* mask,
                                              float keep_scale, F&& f) {
  if (kVec) {
    for (int i = 0; i < kBnQuadsPerThread; ++i) {
      const int64_t j = begin + 4 * (threadIdx.x + i * int64_t(blockDim.x));
      if (j >= end) break;
      const int64_t off = bn_offset(p, c, j);
      float gv[4], xv[4];
      masked_dy4(dy, mask, keep_scale, off, gv);
      load4(x, off, xv);
      f(off, gv, xv, 4);
    }
  } else {
    for (int64_t j = begin + threadIdx.x; j < end; j += blockDim.x) {
      const int64_t off = bn_offset(p, c, j);
      float gv = masked_dy(dy, mask, keep_scale, off);
      const float xv = x[off];
      f(off, &gv, &xv, 1);
    }
  }
}

// sync: [0] the ticket counter, [1, 1 + C) sums items done per channel, [1 + C, 1 + 2C) ready
// flags; zeroed before the launch. part: [2][Q] per-item sums; totals: [2][C].
template <bool kVec>
__global__ void __launch_bounds__(kBnBwdThreads, 2)
    batch_norm_bwd_kernel(NormParams p, BnBwdPlan pl, const float* x, const float* dy, const float* gamma,
                          const float* mean, const float* rstd, const float* renorm, const uint8_t* mask,
                          float keep_scale, int* sync, float* part, float* totals, float* dx, float* dgamma,
                          float* dbeta) {
  NL_DYN_SHARED(float, scratch);  // block_sum2's 64 floats, then the ticket and the last-item flag
  int* shared_int = reinterpret_cast<int*>(scratch + 64);
  if (threadIdx.x == 0) shared_int[0] = atomicAdd(&sync[0], 1);
  __syncthreads();
  bool is_dx = true;
  int64_t u = shared_int[0];
  if (!pl.dx_terms) bn_bwd_item(pl, shared_int[0], is_dx, u);
  const int64_t c = u / pl.S, M = p.N * p.HxW;
  const int64_t begin = (u % pl.S) * kBnItem, end = begin + kBnItem < M ? begin + kBnItem : M;
  const float m = mean[c], r = rstd[c];
  const float rr = p.renorm ? renorm[c] : 1.0f, dd = p.renorm ? renorm[p.C + c] : 0.0f;
  if (!is_dx) {
    float a = 0.0f, b = 0.0f;
    bn_item_visit<kVec>(p, c, begin, end, x, dy, mask, keep_scale,
                        [&](int64_t, float* gv, const float* xv, int n) {
                          for (int l = 0; l < n; ++l) a += gv[l], b += gv[l] * (xv[l] - m) * r;
                        });
    block_sum2(a, b, scratch);
    if (threadIdx.x == 0) {
      part[u] = a, part[pl.Q + u] = b;
      // acq_rel: releases this item's partials, and the last item acquires everyone's.
      shared_int[1] = fetch_add_acq_rel(&sync[1 + c], 1) == pl.S - 1;
    }
    __syncthreads();
    if (!shared_int[1]) return;
    // The channel's last sums item: its totals, in item order (the same whoever is last).
    float sg = 0.0f, sgxhat = 0.0f;
    for (int64_t k = threadIdx.x; k < pl.S; k += blockDim.x)
      sg += part[c * pl.S + k], sgxhat += part[pl.Q + c * pl.S + k];
    block_sum2(sg, sgxhat, scratch);
    if (threadIdx.x == 0) {
      // Batch Renorm: r and d are constants, so dx is BatchNorm's with gamma * r, and
      // dgamma = sum(g * (r * xhat + d)).
      if (dgamma) dgamma[c] = rr * sgxhat + dd * sg;
      if (dbeta) dbeta[c] = sg;
      totals[c] = sg, totals[p.C + c] = sgxhat;
      store_release(&sync[1 + p.C + c], 1);
    }
    return;
  }
  float k1 = 0.0f, k2 = 0.0f;  // eval mode normalises with constants: only the direct term
  if (pl.dx_terms) {
    k1 = pl.dx_terms[c], k2 = pl.dx_terms[p.C + c];
  } else {
    if (threadIdx.x == 0) wait_acquire(&sync[1 + p.C + c], 1);
    __syncthreads();
    if (p.training) k1 = totals[c] / float(M), k2 = totals[p.C + c] / float(M);
  }
  const float gr = gamma_at(gamma, c) * rr * r;
  bn_item_visit<kVec>(p, c, begin, end, x, dy, mask, keep_scale,
                      [&](int64_t off, float* gv, const float* xv, int n) {
                        for (int l = 0; l < n; ++l) gv[l] = gr * (gv[l] - k1 - (xv[l] - m) * r * k2);
                        if (n == 4)
                          store4(dx, off, gv);
                        else
                          store_stream(dx + off, gv[0]);
                      });
}

// ---------------------------------------------------------------------------------- LayerNorm (rows)

// One block per row of C elements, per-element affine.
__global__ void layer_norm_fwd_kernel(NormParams p, const float* x, const float* gamma, const float* beta,
                                      float* y, float* mean, float* rstd) {
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

__global__ void layer_norm_bwd_dx_kernel(NormParams p, const float* x, const float* dy, const float* gamma,
                                         const float* mean, const float* rstd, float* dx) {
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

// dgamma/dbeta: column sums over every row, in two stages so the work spreads over the GPU (one
// thread per column walking all N rows left C/128 blocks, each N steps long and latency-bound).
// Stage 1: block (column tile of 32, chunk of kLnRowsPerChunk rows); its 8 rows of threads take
// every 8th row of the chunk (a warp reads 32 consecutive columns of one row: coalesced), then sum
// their 8 partials in row order through shared memory. Stage 2: one thread per column adds the
// chunks' partials in chunk order. Fixed orders: bitwise reproducible, no atomics.
constexpr int kLnCols = 32, kLnRowThreads = 8;
__global__ void layer_norm_bwd_affine_partial_kernel(NormParams p, int64_t rows_per_chunk, const float* x,
                                                     const float* dy, const float* mean, const float* rstd,
                                                     float* part_a, float* part_b) {
  NL_DYN_SHARED(float, tile);  // [2][kLnRowThreads][kLnCols + 1], padded: no bank conflicts
  const int tx = threadIdx.x % kLnCols, ty = threadIdx.x / kLnCols;
  const int64_t c = int64_t(blockIdx.x) * kLnCols + tx, chunk = blockIdx.y;
  const int64_t begin = chunk * rows_per_chunk,
                end = begin + rows_per_chunk < p.N ? begin + rows_per_chunk : p.N;
  float a = 0.0f, b = 0.0f;
  if (c < p.C) {
    for (int64_t row = begin + ty; row < end; row += kLnRowThreads) {
      const float d = dy[row * p.C + c];
      a += d;
      b += d * (x[row * p.C + c] - mean[row]) * rstd[row];
    }
  }
  float* ta = tile;
  float* tb = tile + kLnRowThreads * (kLnCols + 1);
  ta[ty * (kLnCols + 1) + tx] = a;
  tb[ty * (kLnCols + 1) + tx] = b;
  __syncthreads();
  if (ty == 0 && c < p.C) {
    float sa = 0.0f, sb = 0.0f;
    for (int k = 0; k < kLnRowThreads; ++k)
      sa += ta[k * (kLnCols + 1) + tx], sb += tb[k * (kLnCols + 1) + tx];
    part_a[chunk * p.C + c] = sa;
    part_b[chunk * p.C + c] = sb;
  }
}

__global__ void layer_norm_bwd_affine_finish_kernel(int64_t C, int64_t chunks, const float* part_a,
                                                    const float* part_b, float* dgamma, float* dbeta) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= C) return;
  float a = 0.0f, b = 0.0f;
  for (int64_t k = 0; k < chunks; ++k) a += part_a[k * C + c], b += part_b[k * C + c];
  if (dbeta) dbeta[c] = a;
  if (dgamma) dgamma[c] = b;
}

// ---------------------------------------------------------------------------------- launchers

namespace {
// The least traffic of a norm (docs/kernels.md): forward reads x (and the residual) once and writes
// y (and the byte mask); backward reads x, dy (and the mask) once and writes dx. FLOPs: about 8
// per element either way (these ops are bound by memory, the count only places them).
[[maybe_unused]] double norm_fwd_bytes(const NormParams& p, bool residual) {
  const double T = 4.0 * p.N * p.C * p.HxW;
  return (residual ? 3 : 2) * T + (p.has_mask() ? T / 4 : 0);
}
[[maybe_unused]] double norm_bwd_bytes(const NormParams& p, bool mask) {
  const double T = 4.0 * p.N * p.C * p.HxW;
  return 3 * T + (mask ? T / 4 : 0);
}
[[maybe_unused]] double norm_flops(const NormParams& p) { return 8.0 * p.N * p.C * p.HxW; }

// float4 paths need rows of whole quads and 16-byte aligned pointers (null ones are fine).
bool vec_ok(const NormParams& p, std::initializer_list<const void*> ptrs) {
  // A part of a larger draw (index_base) must start on a Philox block for epilogue4's quads.
  if (p.HxW % 4 != 0 || p.index_base % 4 != 0) return false;
  for (const void* q : ptrs)
    if (reinterpret_cast<uintptr_t>(q) % 16 != 0) return false;
  return true;
}
float keep_scale(const NormParams& p) { return p.dropout > 0.0f ? 1.0f / (1.0f - p.dropout) : 1.0f; }

// GroupNorm's grid: one block per (n, g) while the groups in flight fit in half the device's L2
// (at most 24 MiB, the H100 design point), else fewer blocks taking groups in turn. A block passes
// over its group 3 times (forward: mean, variance, output; backward: sums per channel, then dx);
// with every group of a large LayerNorm (G = 1: 128 KiB at 32 x 32 x 32) in flight at once the L2
// would hold under half of each, and every later pass would go to DRAM (docs/kernels.md, "GPU
// model"). Never fewer blocks than the device has SMs. Both from the device (device_limits(); under
// cuemu its profile, so the emulated launch is the real one). NORMLAB_CUDA_L2_BUDGET (bytes)
// overrides the budget (and lets the tests reach the capped grid on small tensors).
int64_t min_group_blocks() { return device_limits().sms; }
double l2_budget() {
  const char* env = std::getenv("NORMLAB_CUDA_L2_BUDGET");
  if (!env || !*env) return std::min(24.0 * (1 << 20), device_limits().l2_bytes / 2);
  char* end = nullptr;
  const double v = std::strtod(env, &end);
  if (*end != '\0' || !(v > 0))
    throw Error(std::string("NORMLAB_CUDA_L2_BUDGET must be a positive number of bytes, got '") + env + "'");
  return v;
}
unsigned gn_grid(const NormParams& p, double bytes_per_group) {
  const int64_t groups = p.N * p.G;
  const int64_t fit =
      std::max<int64_t>(min_group_blocks(), int64_t(l2_budget() / std::max(1.0, bytes_per_group)));
  return unsigned(std::min(groups, fit));
}
}  // namespace

void group_norm_fwd(const NormParams& p, const float* x, const float* gamma, const float* beta,
                    const float* tau, const float* residual, float* y, float* mean, float* rstd,
                    uint8_t* mask) {
  if (p.N * p.G == 0) return;
  NL_MODEL_OP("group_norm_fwd", norm_flops(p), norm_fwd_bytes(p, residual));
  const Epilogue e = make_epilogue(p, residual, mask);
  // Re-read: x (the output, mask and residual stream through evict-first).
  const unsigned grid = gn_grid(p, 4.0 * (p.C / p.G) * p.HxW);
  if (vec_ok(p, {x, residual, y, mask}))
    NL_LAUNCH(group_norm_fwd_kernel<true>, grid, kThreads, kScratch, p, x, gamma, beta, tau, e, y, mean,
              rstd);
  else
    NL_LAUNCH(group_norm_fwd_kernel<false>, grid, kThreads, kScratch, p, x, gamma, beta, tau, e, y, mean,
              rstd);
}

void group_norm_bwd(const NormParams& p, const float* x, const float* dy, const float* gamma,
                    const float* mean, const float* rstd, const uint8_t* mask, float* dx, float* dgamma,
                    float* dbeta, float* dtau) {
  if (p.N * p.G == 0) return;
  NL_MODEL_OP("group_norm_bwd", norm_flops(p), norm_bwd_bytes(p, mask));
  // db_nc, ds_nc and (TLU) dt_nc, [N, C] each.
  Scratch scratch(sizeof(float) * (p.tlu ? 3 : 2) * size_t(p.N * p.C));
  float* partial = scratch.f32();
  float* dt_nc = p.tlu ? partial + 2 * p.N * p.C : nullptr;
  const float ks = keep_scale(p);
  // Re-read: x, dy and the mask.
  const unsigned grid = gn_grid(p, (mask ? 9.0 : 8.0) * (p.C / p.G) * p.HxW);
  const bool vec = vec_ok(p, {x, dy, mask, dx});
  float* db_nc = partial;
  float* ds_nc = partial + p.N * p.C;
  if (p.tlu && vec)
    NL_LAUNCH(group_norm_tlu_bwd_kernel<true>, grid, kThreads, kScratch, p, x, dy, gamma, mean, rstd, mask,
              ks, dx, db_nc, ds_nc, dt_nc);
  else if (p.tlu)
    NL_LAUNCH(group_norm_tlu_bwd_kernel<false>, grid, kThreads, kScratch, p, x, dy, gamma, mean, rstd, mask,
              ks, dx, db_nc, ds_nc, dt_nc);
  else if (vec)
    NL_LAUNCH(group_norm_bwd_kernel<true>, grid, kThreads, kScratch, p, x, dy, gamma, mean, rstd, mask, ks,
              dx, db_nc, ds_nc);
  else
    NL_LAUNCH(group_norm_bwd_kernel<false>, grid, kThreads, kScratch, p, x, dy, gamma, mean, rstd, mask, ks,
              dx, db_nc, ds_nc);
  const dim3 reduce_grid(unsigned(ceil_div(p.C, kReduceCols))), reduce_block(kReduceCols, kReduceRows);
  const size_t reduce_smem = 2 * kReduceRows * kReduceCols * sizeof(float);
  if (dgamma || dbeta)
    NL_LAUNCH(reduce_over_n_kernel, reduce_grid, reduce_block, reduce_smem, p.N, p.C, partial,
              partial + p.N * p.C, dgamma, dbeta);
  if (p.tlu && dtau)  // dtau[c] = sum_n dt_nc[n, c], in the dbeta slot
    NL_LAUNCH(reduce_over_n_kernel, reduce_grid, reduce_block, reduce_smem, p.N, p.C, dt_nc, dt_nc, nullptr,
              dtau);
}

void batch_norm_fwd(const NormParams& p, const float* x, const float* gamma, const float* beta,
                    const float* residual, float* running_mean, float* running_var, float* y, float* mean,
                    float* rstd, float* renorm, const float* renorm_step, uint8_t* mask) {
  if (p.C == 0) return;
  NL_MODEL_OP("batch_norm_fwd", norm_flops(p), norm_fwd_bytes(p, residual));
  const dim3 grid(unsigned(p.C), kSplit);
  const bool vec = vec_ok(p, {x, residual, y, mask});
  Scratch scratch(sizeof(float) * 2 * size_t(p.C) * kSplit);
  if (p.training) {
    if (vec)
      NL_LAUNCH(batch_norm_stats_kernel<true>, grid, kThreads, kScratch, p, x, scratch.f32());
    else
      NL_LAUNCH(batch_norm_stats_kernel<false>, grid, kThreads, kScratch, p, x, scratch.f32());
  }
  NL_LAUNCH(batch_norm_finish_kernel, unsigned(ceil_div(p.C, 128)), 128, 0, p, x, scratch.f32(), running_mean,
            running_var, mean, rstd, renorm, renorm_step);
  if (!y) return;  // statistics only (SyncBatchNorm's first phase)
  const Epilogue e = make_epilogue(p, residual, mask);
  if (vec)
    NL_LAUNCH(batch_norm_apply_kernel<true>, grid, kThreads, 0, p, x, gamma, beta, mean, rstd, renorm, e, y);
  else
    NL_LAUNCH(batch_norm_apply_kernel<false>, grid, kThreads, 0, p, x, gamma, beta, mean, rstd, renorm, e, y);
}

void batch_norm_bwd(const NormParams& p, const float* x, const float* dy, const float* gamma,
                    const float* mean, const float* rstd, const float* renorm, const uint8_t* mask,
                    const float* dx_terms, float* dx, float* dgamma, float* dbeta) {
  if (p.C == 0) return;
  NL_MODEL_OP("batch_norm_bwd", norm_flops(p), norm_bwd_bytes(p, mask));
  const int64_t M = p.N * p.HxW;
  BnBwdPlan pl;
  pl.S = std::max<int64_t>(1, ceil_div(M, kBnItem));
  pl.Q = p.C * pl.S;
  // D: as many items as are resident at once, while their data and the next D items' fit in the
  // L2 budget; never below S (the deadlock-freedom argument above); all of them without dx.
  const double item_bytes = double(kBnItem) * (mask ? 9 : 8);
  const int64_t fit = std::min<int64_t>(bn_resident(), int64_t(l2_budget() / item_bytes / 2));
  pl.D = dx ? std::min(pl.Q, std::max(pl.S, fit)) : pl.Q;
  pl.dx_terms = dx ? dx_terms : nullptr;
  if (!dx && dx_terms) return;  // nothing to do: the sums are given and no dx is wanted
  const int64_t blocks = dx && !dx_terms ? 2 * pl.Q : pl.Q;
  if (blocks > INT32_MAX)
    throw Error("batch_norm backward: " + std::to_string(blocks) + " work items exceed a grid");
  const size_t sync_bytes = sizeof(int) * size_t(1 + 2 * p.C);
  Scratch scratch(sync_bytes + sizeof(float) * size_t(2 * pl.Q + 2 * p.C));
  int* sync = reinterpret_cast<int*>(scratch.f32());
  float* part = scratch.f32() + (1 + 2 * p.C);
  NL_CUDA_CHECK(cudaMemsetAsync(sync, 0, sync_bytes, stream()));
  const size_t smem = 64 * sizeof(float) + 2 * sizeof(int);
  const float ks = keep_scale(p);
  if (vec_ok(p, {x, dy, mask, dx}))
    NL_LAUNCH(batch_norm_bwd_kernel<true>, unsigned(blocks), kBnBwdThreads, smem, p, pl, x, dy, gamma, mean,
              rstd, renorm, mask, ks, sync, part, part + 2 * pl.Q, dx, dgamma, dbeta);
  else
    NL_LAUNCH(batch_norm_bwd_kernel<false>, unsigned(blocks), kBnBwdThreads, smem, p, pl, x, dy, gamma, mean,
              rstd, renorm, mask, ks, sync, part, part + 2 * pl.Q, dx, dgamma, dbeta);
}

void layer_norm_fwd(const NormParams& p, const float* x, const float* gamma, const float* beta, float* y,
                    float* mean, float* rstd) {
  if (p.N == 0) return;
  NL_MODEL_OP("layer_norm_fwd", norm_flops(p), norm_fwd_bytes(p, false));
  NL_LAUNCH(layer_norm_fwd_kernel, unsigned(p.N), kThreads, kScratch, p, x, gamma, beta, y, mean, rstd);
}

void layer_norm_bwd(const NormParams& p, const float* x, const float* dy, const float* gamma,
                    const float* mean, const float* rstd, float* dx, float* dgamma, float* dbeta) {
  if (p.N == 0) return;
  NL_MODEL_OP("layer_norm_bwd", norm_flops(p), norm_bwd_bytes(p, false));
  if (dx)
    NL_LAUNCH(layer_norm_bwd_dx_kernel, unsigned(p.N), kThreads, kScratch, p, x, dy, gamma, mean, rstd, dx);
  if (dgamma || dbeta) {
    // 64 rows per chunk (8 trips of 8 thread rows), more when N would need over 65,535 chunks.
    const int64_t rows_per_chunk = std::max<int64_t>(64, ceil_div(p.N, 65535)),
                  chunks = ceil_div(p.N, rows_per_chunk);
    Scratch part(sizeof(float) * 2 * size_t(chunks * p.C));
    NL_LAUNCH(layer_norm_bwd_affine_partial_kernel, dim3(unsigned(ceil_div(p.C, kLnCols)), unsigned(chunks)),
              kLnCols * kLnRowThreads, 2 * kLnRowThreads * (kLnCols + 1) * sizeof(float), p, rows_per_chunk,
              x, dy, mean, rstd, part.f32(), part.f32() + chunks * p.C);
    NL_LAUNCH(layer_norm_bwd_affine_finish_kernel, unsigned(ceil_div(p.C, 128)), 128, 0, p.C, chunks,
              part.f32(), part.f32() + chunks * p.C, dgamma, dbeta);
  }
}

#include "kernels/norm_entries.h"  // norm_fwd, norm_bwd

// ---------------------------------------------------------------------------------- registration

void register_norm_kernels() {
  norm_fwd_stub.set(DeviceType::CUDA, &norm_fwd);
  norm_bwd_stub.set(DeviceType::CUDA, &norm_bwd);
}

}  // namespace nl::cuda
