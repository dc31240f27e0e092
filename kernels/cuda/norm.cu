// The normalisation family on the GPU: BatchNorm2d, GroupNorm (G = 1 is LayerNorm over C,H,W,
// G = C InstanceNorm) and LayerNorm over the last dimension, forward and backward.
//
// Every kernel reduces with warp shuffles (and block_sum through shared memory) in a fixed order,
// partial sums are combined in a fixed order whichever block finishes last, and dgamma/dbeta come
// from per-(n, c) or per-item partials: no float atomics anywhere, so results are bitwise
// reproducible. See docs/kernels.md for grid mappings and bytes moved.
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
//
// GroupNorm (G = 1 is LayerNorm over C, H, W; G = C InstanceNorm), its relatives, and FRN, in one
// ticket-ordered launch each way, like batch_norm_bwd_kernel. The first design gave each (n, g) to
// one block, which walked the group three times and, in backward, its channels one after another
// with two barriers each: LayerNorm at batch 128 is 128 blocks for 132 SMs, each with about one
// float4 in flight per thread, bound by latency (18-26% of the H200's bandwidth measured).
//
// Here the tensor is a sequence of planes (n, c) of HxW elements (the group of plane n*C + c is
// (n*C + c) / Cg), each cut into pieces of at most 32 lanes x kGnUnits units (a unit is a float4,
// or one float on the scalar path). A segment of lp lanes (a power of two) reduces one piece with
// shuffles only, so no barrier depends on the channel count; small planes pack 32 / lp pieces into
// a warp (8x8 planes: 16 quads, 4 lanes a piece). An item is kGnWarps warps' pieces, about 4,096
// elements, and may straddle groups.
//
// Each piece writes its partials (forward: mean and centred sum of squares; backward: sum of g,
// g * xhat and, for FRN, the TLU share); a block adds the pieces it holds of each group it touches
// to that group's counter, and the block that completes a group combines the group's partials in
// piece order (Chan's pairwise update for the variance: exact two-pass statistics per piece, a
// fixed order across them), so results do not depend on scheduling. Then it release-stores the
// group's ready flag, which the normalising items (forward: y; backward: dx) acquire. Tickets put
// D statistics items ahead of the first normalising item, then alternate, so an item's second read
// of x (and dy, mask) comes from L2; D is at least one more than the items a group spans, which
// keeps every statistics item a normalising item waits for at an earlier ticket (no deadlock:
// see batch_norm_bwd_kernel).
constexpr int kGnWarps = 8, kGnThreads = 32 * kGnWarps, kGnUnits = 4;

struct GnPlan {
  int64_t U;       // units per plane: HxW / 4 (float4 path) or HxW
  int64_t Pp;      // pieces per plane
  int64_t Lu;      // units per piece; a plane's last piece has U - (Pp - 1) * Lu
  int lp;          // lanes per piece: a power of two, lp * kGnUnits >= Lu
  int64_t T;       // pieces: N * C * Pp
  int64_t items;   // Q: ceil(T / pieces per item)
  int64_t D;       // statistics items before the first normalising item
  int64_t NG;      // groups: N * G
  bool normalise;  // forward: y wanted; backward: dx wanted
};

__device__ __forceinline__ int64_t gn_item_pieces(const GnPlan& pl) { return kGnWarps * (32 / pl.lp); }

// Ticket t -> a statistics item (is_norm false) or a normalising item u, as bn_bwd_item.
__device__ __forceinline__ void gn_item(const GnPlan& pl, int64_t t, bool& is_norm, int64_t& u) {
  const int64_t Q = pl.items, pairs = Q - pl.D;
  if (!pl.normalise || t < pl.D) {
    is_norm = false, u = t;
  } else if (t - pl.D < 2 * pairs) {
    const int64_t r = t - pl.D;
    is_norm = r % 2 == 0, u = is_norm ? r / 2 : pl.D + r / 2;
  } else {
    is_norm = true, u = pairs + (t - pl.D - 2 * pairs);
  }
}

// This lane's piece of item u and where it lies: plane, first unit, units in it (0: no piece).
struct GnPiece {
  int64_t gp, plane, first, len;
};
__device__ __forceinline__ GnPiece gn_piece(const GnPlan& pl, int64_t u) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  GnPiece s;
  s.gp = u * gn_item_pieces(pl) + warp * (32 / pl.lp) + lane / pl.lp;
  if (s.gp >= pl.T) return {s.gp, 0, 0, 0};
  s.plane = s.gp / pl.Pp;
  const int64_t k = s.gp % pl.Pp;
  s.first = k * pl.Lu;
  s.len = k == pl.Pp - 1 ? pl.U - s.first : pl.Lu;
  return s;
}

// Sum over the lp lanes of a piece (aligned segments of a power-of-two size: xor stays inside).
__device__ __forceinline__ float segment_sum(float v, int lp) {
  for (int o = lp / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// The groups item u touches, [g0, g0 + count), and how many of its pieces lie in group g0 + i.
__device__ __forceinline__ void gn_item_groups(const GnPlan& pl, int64_t Cg, int64_t u, int64_t& g0,
                                               int64_t& count) {
  const int64_t f0 = u * gn_item_pieces(pl),
                f1 = f0 + gn_item_pieces(pl) < pl.T ? f0 + gn_item_pieces(pl) : pl.T;
  const int64_t per_group = Cg * pl.Pp;
  g0 = f0 / per_group;
  count = (f1 - 1) / per_group - g0 + 1;
}
__device__ __forceinline__ int64_t gn_pieces_in_group(const GnPlan& pl, int64_t Cg, int64_t u, int64_t g) {
  const int64_t f0 = u * gn_item_pieces(pl),
                f1 = f0 + gn_item_pieces(pl) < pl.T ? f0 + gn_item_pieces(pl) : pl.T;
  const int64_t per_group = Cg * pl.Pp;
  const int64_t lo = f0 > g * per_group ? f0 : g * per_group,
                hi = f1 < (g + 1) * per_group ? f1 : (g + 1) * per_group;
  return hi - lo;
}

// After a statistics item's partials are written: adds the item's pieces to each touched group's
// counter (one thread per group, acq_rel) and lists the groups it completed in `done`; returns
// their number (block-uniform). sync: [0] tickets, [1, 1 + NG) pieces done, [1 + NG, 1 + 2 NG)
// ready flags. `done` holds up to kGnThreads entries; shared_int[0] is free after the ticket.
__device__ __forceinline__ int gn_complete_groups(const GnPlan& pl, int64_t Cg, int64_t u, int* sync,
                                                  int* shared_int, int* done) {
  int64_t g0, count;
  gn_item_groups(pl, Cg, u, g0, count);
  if (threadIdx.x == 0) shared_int[1] = 0;
  __syncthreads();  // also: every piece's partial of this block is written
  if (threadIdx.x < count) {
    const int64_t g = g0 + threadIdx.x;
    const int n = int(gn_pieces_in_group(pl, Cg, u, g));
    if (fetch_add_acq_rel(&sync[1 + g], n) + n == Cg * pl.Pp)
      done[atomicAdd(&shared_int[1], 1)] = int(threadIdx.x);
  }
  __syncthreads();
  return shared_int[1];
}

// Waits until every group that item u touches has its statistics (thread i for group g0 + i).
__device__ __forceinline__ void gn_wait_groups(const GnPlan& pl, int64_t Cg, int64_t u, int* sync) {
  int64_t g0, count;
  gn_item_groups(pl, Cg, u, g0, count);
  if (threadIdx.x < count) wait_acquire(&sync[1 + pl.NG + g0 + threadIdx.x], 1);
  __syncthreads();
}

// Chan's update: (n, mean, m2) of a set joined with those of another; n == 0 is the empty set.
__device__ __forceinline__ void chan_join(float& n, float& mean, float& m2, float nb, float mb, float m2b) {
  if (nb == 0.0f) return;
  const float nn = n + nb, d = mb - mean;
  mean += d * (nb / nn);
  m2 += m2b + d * d * (n * nb / nn);
  n = nn;
}

template <bool kVec>
__global__ void __launch_bounds__(kGnThreads)
    group_norm_fwd_kernel(NormParams p, GnPlan pl, const float* x, const float* gamma, const float* beta,
                          const float* tau, Epilogue e, int* sync, float* part, float* y, float* mean,
                          float* rstd) {
  NL_DYN_SHARED(int, shared_int);  // [0] the ticket, [1] groups completed, [2, 2 + kGnThreads) which
  int* done = shared_int + 2;
  if (threadIdx.x == 0) shared_int[0] = atomicAdd(&sync[0], 1);
  __syncthreads();
  bool is_norm;
  int64_t u;
  gn_item(pl, shared_int[0], is_norm, u);
  constexpr int kW = kVec ? 4 : 1;
  const int64_t Cg = p.C / p.G, HxW = p.HxW;
  const GnPiece s = gn_piece(pl, u);
  const int li = threadIdx.x % 32 % pl.lp;
  float v[kGnUnits][kW];
  NL_UNROLL
  for (int j = 0; j < kGnUnits; ++j) {
    const int64_t k = li + int64_t(j) * pl.lp;
    if (k < s.len) {
      const int64_t off = s.plane * HxW + (s.first + k) * kW;
      if (kVec)
        load4(x, off, v[j]);
      else
        v[j][0] = x[off];
    } else {
      for (int l = 0; l < kW; ++l) v[j][l] = 0.0f;
    }
  }
  if (!is_norm) {
    // The piece's exact two-pass statistics from registers (RMSNorm: mean 0, the sum of squares).
    const float n = float(s.len * kW);
    float sum = 0.0f;
    NL_UNROLL
    for (int j = 0; j < kGnUnits; ++j)
      if (li + int64_t(j) * pl.lp < s.len)
        for (int l = 0; l < kW; ++l) sum += v[j][l];
    sum = segment_sum(sum, pl.lp);
    const float m = p.center && s.len > 0 ? sum / n : 0.0f;
    float q = 0.0f;
    NL_UNROLL
    for (int j = 0; j < kGnUnits; ++j)
      if (li + int64_t(j) * pl.lp < s.len)
        for (int l = 0; l < kW; ++l) q += (v[j][l] - m) * (v[j][l] - m);
    q = segment_sum(q, pl.lp);
    if (li == 0 && s.len > 0) part[s.gp] = m, part[pl.T + s.gp] = q;
    const int completed = gn_complete_groups(pl, Cg, u, sync, shared_int, done);
    int64_t g0, count;
    gn_item_groups(pl, Cg, u, g0, count);
    // A warp per completed group: lanes join pieces lane, lane + 32, ... in order, then a fixed
    // butterfly joins the lanes; lane 0's result is the group's.
    const int lane = threadIdx.x % 32;
    for (int i = threadIdx.x / 32; i < completed; i += kGnWarps) {
      const int64_t g = g0 + done[i], per_group = Cg * pl.Pp;
      float cn = 0.0f, cm = 0.0f, cq = 0.0f;
      for (int64_t k = lane; k < per_group; k += 32) {
        const int64_t gp = g * per_group + k, piece = gp % pl.Pp;
        const float nb = float((piece == pl.Pp - 1 ? pl.U - piece * pl.Lu : pl.Lu) * kW);
        chan_join(cn, cm, cq, nb, part[gp], part[pl.T + gp]);
      }
      for (int o = 16; o > 0; o >>= 1) {
        const float on = __shfl_xor_sync(0xffffffffu, cn, o), om = __shfl_xor_sync(0xffffffffu, cm, o),
                    oq = __shfl_xor_sync(0xffffffffu, cq, o);
        chan_join(cn, cm, cq, on, om, oq);
      }
      if (lane == 0) {
        mean[g] = cm;
        rstd[g] = rsqrtf(cq / cn + p.eps);
        store_release(&sync[1 + pl.NG + g], 1);
      }
    }
    return;
  }
  gn_wait_groups(pl, Cg, u, sync);
  if (s.len == 0) return;
  const int64_t g = s.plane / Cg, c = s.plane % p.C;
  const float scale = gamma_at(gamma, c) * rstd[g], shift = beta_at(beta, c) - mean[g] * scale;
  const float t = p.tlu ? tau[c] : 0.0f;
  NL_UNROLL
  for (int j = 0; j < kGnUnits; ++j) {
    const int64_t k = li + int64_t(j) * pl.lp;
    if (k >= s.len) continue;
    const int64_t off = s.plane * HxW + (s.first + k) * kW;
    if (kVec) {
      for (int l = 0; l < 4; ++l) v[j][l] = v[j][l] * scale + shift;
      epilogue4(p, e, off, v[j], t);
      store4(y, off, v[j]);
    } else {
      store_stream(y + off, epilogue1(p, e, off, v[j][0] * scale + shift, t));
    }
  }
}

// Backward: statistics items sum g (dy through the mask) and g * xhat per piece (kTlu, FRN: also
// TLU's (mask == 2) * dy); the block completing a group adds each plane's pieces in order into
// db_nc / ds_nc (/ dt_nc) [N, C] for the dgamma/dbeta kernel, and the gamma-weighted group totals
// into `totals` for the dx items: dx = rstd * (gamma * g - k1 - xhat * k2), k1 = sum(gamma g) / D
// (0 without centering: RMSNorm), k2 = sum(gamma g xhat) / D. kTlu is a template parameter with
// its own kernel, not a branch on p.tlu: the branch cost every GroupNorm backward registers.
template <bool kVec, bool kTlu>
__device__ __forceinline__ void group_norm_bwd_body(const NormParams& p, const GnPlan& pl, const float* x,
                                                    const float* dy, const float* gamma, const float* mean,
                                                    const float* rstd, const uint8_t* mask, float keep_scale,
                                                    int* sync, float* part, float* totals, float* dx,
                                                    float* db_nc, float* ds_nc, float* dt_nc) {
  NL_DYN_SHARED(int, shared_int);
  int* done = shared_int + 2;
  if (threadIdx.x == 0) shared_int[0] = atomicAdd(&sync[0], 1);
  __syncthreads();
  bool is_norm;
  int64_t u;
  gn_item(pl, shared_int[0], is_norm, u);
  constexpr int kW = kVec ? 4 : 1;
  const int64_t Cg = p.C / p.G, HxW = p.HxW;
  const GnPiece s = gn_piece(pl, u);
  const int li = threadIdx.x % 32 % pl.lp;
  const int64_t g = s.len > 0 ? s.plane / Cg : 0;
  const float m = s.len > 0 ? mean[g] : 0.0f, r = s.len > 0 ? rstd[g] : 0.0f;
  float gv[kGnUnits][kW], xv[kGnUnits][kW], t = 0.0f;
  NL_UNROLL
  for (int j = 0; j < kGnUnits; ++j) {
    const int64_t k = li + int64_t(j) * pl.lp;
    if (k < s.len) {
      const int64_t off = s.plane * HxW + (s.first + k) * kW;
      if (kTlu && !is_norm)
        for (int l = 0; l < kW; ++l) t += clamped_dy(dy, mask, keep_scale, off + l);
      if (kVec) {
        masked_dy4(dy, mask, keep_scale, off, gv[j]);
        load4(x, off, xv[j]);
      } else {
        gv[j][0] = masked_dy(dy, mask, keep_scale, off);
        xv[j][0] = x[off];
      }
    } else {
      for (int l = 0; l < kW; ++l) gv[j][l] = xv[j][l] = 0.0f;
    }
  }
  if (!is_norm) {
    float a = 0.0f, b = 0.0f;
    NL_UNROLL
    for (int j = 0; j < kGnUnits; ++j)
      if (li + int64_t(j) * pl.lp < s.len)
        for (int l = 0; l < kW; ++l) a += gv[j][l], b += gv[j][l] * (xv[j][l] - m) * r;
    a = segment_sum(a, pl.lp);
    b = segment_sum(b, pl.lp);
    if (kTlu) t = segment_sum(t, pl.lp);
    if (li == 0 && s.len > 0) {
      part[s.gp] = a, part[pl.T + s.gp] = b;
      if (kTlu) part[2 * pl.T + s.gp] = t;
    }
    const int completed = gn_complete_groups(pl, Cg, u, sync, shared_int, done);
    int64_t g0, count;
    gn_item_groups(pl, Cg, u, g0, count);
    const int lane = threadIdx.x % 32;
    const float D = float(Cg * HxW);
    for (int i = threadIdx.x / 32; i < completed; i += kGnWarps) {
      const int64_t gg = g0 + done[i], n = gg / p.G;
      float sa = 0.0f, sb = 0.0f;  // this lane's planes' gamma-weighted sums, then the group's
      for (int64_t ci = lane; ci < Cg; ci += 32) {
        const int64_t plane = gg * Cg + ci, c = plane % p.C;
        float pa = 0.0f, pb = 0.0f, pt = 0.0f;
        NL_NO_UNROLL
        for (int64_t k = 0; k < pl.Pp; ++k) {
          pa += part[plane * pl.Pp + k], pb += part[pl.T + plane * pl.Pp + k];
          if (kTlu) pt += part[2 * pl.T + plane * pl.Pp + k];
        }
        db_nc[n * p.C + c] = pa, ds_nc[n * p.C + c] = pb;
        if (kTlu) dt_nc[n * p.C + c] = pt;
        sa += gamma_at(gamma, c) * pa, sb += gamma_at(gamma, c) * pb;
      }
      sa = warp_sum(sa);
      sb = warp_sum(sb);
      if (lane == 0) {
        totals[gg] = p.center ? sa / D : 0.0f, totals[pl.NG + gg] = sb / D;
        store_release(&sync[1 + pl.NG + gg], 1);
      }
    }
    return;
  }
  gn_wait_groups(pl, Cg, u, sync);
  if (s.len == 0) return;
  const float k1 = totals[g], k2 = totals[pl.NG + g], gc = gamma_at(gamma, s.plane % p.C);
  NL_UNROLL
  for (int j = 0; j < kGnUnits; ++j) {
    const int64_t k = li + int64_t(j) * pl.lp;
    if (k >= s.len) continue;
    const int64_t off = s.plane * HxW + (s.first + k) * kW;
    for (int l = 0; l < kW; ++l) gv[j][l] = r * (gc * gv[j][l] - k1 - (xv[j][l] - m) * r * k2);
    if (kVec)
      store4(dx, off, gv[j]);
    else
      store_stream(dx + off, gv[j][0]);
  }
}

// The two entry points: GroupNorm and its relatives, and FRN (TLU: dt_nc too).
template <bool kVec>
__global__ void __launch_bounds__(kGnThreads)
    group_norm_bwd_kernel(NormParams p, GnPlan pl, const float* x, const float* dy, const float* gamma,
                          const float* mean, const float* rstd, const uint8_t* mask, float keep_scale,
                          int* sync, float* part, float* totals, float* dx, float* db_nc, float* ds_nc) {
  group_norm_bwd_body<kVec, false>(p, pl, x, dy, gamma, mean, rstd, mask, keep_scale, sync, part, totals, dx,
                                   db_nc, ds_nc, nullptr);
}
template <bool kVec>
__global__ void __launch_bounds__(kGnThreads)
    group_norm_tlu_bwd_kernel(NormParams p, GnPlan pl, const float* x, const float* dy, const float* gamma,
                              const float* mean, const float* rstd, const uint8_t* mask, float keep_scale,
                              int* sync, float* part, float* totals, float* dx, float* db_nc, float* ds_nc,
                              float* dt_nc) {
  group_norm_bwd_body<kVec, true>(p, pl, x, dy, gamma, mean, rstd, mask, keep_scale, sync, part, totals, dx,
                                  db_nc, ds_nc, dt_nc);
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
// Element j of channel c's N * HxW: sample j / HxW, position j % HxW. kVec: HxW % 4 == 0, so 4
// consecutive j share a sample and are contiguous.
__device__ __forceinline__ int64_t bn_offset(const NormParams& p, int64_t c, int64_t j) {
  return (j / p.HxW) * p.C * p.HxW + c * p.HxW + j % p.HxW;
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
constexpr int kBnThreads = 512;
// Two float4 of each tensor per thread: an item re-reads 4096 * (4 + 4 + 1) = 36 KiB.
constexpr int kBnQuadsPerThread = 2;
constexpr int64_t kBnItem = 4 * kBnQuadsPerThread * kBnThreads;
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
__global__ void __launch_bounds__(kBnThreads, 2)
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

// Forward in one launch, the backward's ticket order (batch_norm_bwd_kernel): statistics items,
// 4,096 elements of one channel each, write the exact two-pass mean and centred sum of squares of
// their elements (held in registers); the channel's last statistics item joins them in item order
// (Chan's update), writes mean, rstd, Batch Renorm's r and d and the running statistics, and
// release-stores the channel's ready flag; normalising items acquire it and apply scale, shift and
// the epilogue, re-reading x from L2 D items behind. This replaces three launches (per-split
// sums, a finishing kernel, the elementwise pass): two launch gaps and the tail of each. Eval mode
// normalises with the running statistics: normalising items only. Without y (SyncBatchNorm's first
// phase): statistics items only.
struct BnFwdPlan {
  int64_t S, Q, D;  // items per channel, statistics items (C * S), statistics items ahead
  bool stats, normalise;
};

// Ticket t -> a statistics item (is_norm false) or a normalising item u in [0, Q).
__device__ __forceinline__ void bn_fwd_item(const BnFwdPlan& pl, int64_t t, bool& is_norm, int64_t& u) {
  if (!pl.stats) {
    is_norm = true, u = t;
  } else if (!pl.normalise) {
    is_norm = false, u = t;
  } else {
    BnBwdPlan b{pl.S, pl.Q, pl.D, nullptr};
    bn_bwd_item(b, t, is_norm, u);
  }
}

template <bool kVec>
__global__ void __launch_bounds__(kBnThreads, 2)
    batch_norm_fwd_kernel(NormParams p, BnFwdPlan pl, const float* x, const float* gamma, const float* beta,
                          float* running_mean, float* running_var, const float* renorm_step, Epilogue e,
                          int* sync, float* part, float* y, float* mean, float* rstd, float* renorm) {
  NL_DYN_SHARED(float, scratch);  // block_sum's 32 floats, then the ticket and the last-item flag
  int* shared_int = reinterpret_cast<int*>(scratch + 64);
  if (threadIdx.x == 0) shared_int[0] = atomicAdd(&sync[0], 1);
  __syncthreads();
  bool is_norm;
  int64_t u;
  bn_fwd_item(pl, shared_int[0], is_norm, u);
  constexpr int kW = kVec ? 4 : 1, kPer = 4 * kBnQuadsPerThread / kW;  // units per thread
  const int64_t c = u / pl.S, M = p.N * p.HxW;
  const int64_t begin = (u % pl.S) * kBnItem, end = begin + kBnItem < M ? begin + kBnItem : M;
  float v[kPer][kW];
  NL_UNROLL
  for (int i = 0; i < kPer; ++i) {
    const int64_t j = begin + kW * (threadIdx.x + i * int64_t(blockDim.x));
    if (j < end) {
      if (kVec)
        load4(x, bn_offset(p, c, j), v[i]);
      else
        v[i][0] = x[bn_offset(p, c, j)];
    } else {
      for (int l = 0; l < kW; ++l) v[i][l] = 0.0f;
    }
  }
  if (!is_norm) {
    const float n = float(end - begin);
    float s = 0.0f;
    NL_UNROLL
    for (int i = 0; i < kPer; ++i)
      for (int l = 0; l < kW; ++l) s += v[i][l];  // zeros past the end
    const float m = block_sum(s, scratch) / n;
    float q = 0.0f;
    NL_UNROLL
    for (int i = 0; i < kPer; ++i)
      if (begin + kW * (threadIdx.x + i * int64_t(blockDim.x)) < end)
        for (int l = 0; l < kW; ++l) q += (v[i][l] - m) * (v[i][l] - m);
    q = block_sum(q, scratch);
    if (threadIdx.x == 0) {
      part[u] = m, part[pl.Q + u] = q;
      shared_int[1] = fetch_add_acq_rel(&sync[1 + c], 1) == pl.S - 1;
    }
    __syncthreads();
    if (!shared_int[1] || threadIdx.x >= 32) return;
    // The channel's last statistics item: warp 0 joins the items in order (lanes take items
    // lane, lane + 32, ..., then a fixed butterfly), the same whoever is last.
    const int lane = threadIdx.x;
    float cn = 0.0f, cm = 0.0f, cq = 0.0f;
    for (int64_t k = lane; k < pl.S; k += 32) {
      const int64_t b0 = k * kBnItem, nb = b0 + kBnItem < M ? kBnItem : M - b0;
      chan_join(cn, cm, cq, float(nb), part[c * pl.S + k], part[pl.Q + c * pl.S + k]);
    }
    for (int o = 16; o > 0; o >>= 1) {
      const float on = __shfl_xor_sync(0xffffffffu, cn, o), om = __shfl_xor_sync(0xffffffffu, cm, o),
                  oq = __shfl_xor_sync(0xffffffffu, cq, o);
      chan_join(cn, cm, cq, on, om, oq);
    }
    if (lane != 0) return;
    const float var = cq / float(M);
    mean[c] = cm;
    rstd[c] = rsqrtf(var + p.eps);
    if (p.renorm) {
      // Batch Renorm's r and d, from the running statistics before this batch updates them.
      const float warm = float(renorm_warmup_fraction(p, renorm_step));
      const float r_max = 1.0f + (p.r_max - 1.0f) * warm, d_max = p.d_max * warm;
      const float sigma_run = sqrtf(running_var[c] + p.eps);
      renorm[c] = fminf(fmaxf(sqrtf(var + p.eps) / sigma_run, 1.0f / r_max), r_max);
      renorm[p.C + c] = fminf(fmaxf((cm - running_mean[c]) / sigma_run, -d_max), d_max);
    }
    if (running_mean) {
      running_mean[c] = (1.0f - p.momentum) * running_mean[c] + p.momentum * cm;
      running_var[c] = (1.0f - p.momentum) * running_var[c] + p.momentum * var * float(M) / float(M - 1);
    }
    store_release(&sync[1 + p.C + c], 1);
    return;
  }
  float m, r;
  if (pl.stats) {
    if (threadIdx.x == 0) wait_acquire(&sync[1 + p.C + c], 1);
    __syncthreads();
    m = mean[c], r = rstd[c];
  } else {  // eval: the running statistics, and the channel's first item reports them
    m = running_mean[c], r = rsqrtf(running_var[c] + p.eps);
    if (threadIdx.x == 0 && u % pl.S == 0) mean[c] = m, rstd[c] = r;
  }
  // gamma * (r * xhat + d) + beta as one scale and shift (r = 1, d = 0 unless Batch Renorm).
  const float rr = p.renorm ? renorm[c] : 1.0f, dd = p.renorm ? renorm[p.C + c] : 0.0f;
  const float scale = gamma_at(gamma, c) * rr * r;
  const float shift = beta_at(beta, c) + gamma_at(gamma, c) * dd - m * scale;
  NL_UNROLL
  for (int i = 0; i < kPer; ++i) {
    const int64_t j = begin + kW * (threadIdx.x + i * int64_t(blockDim.x));
    if (j >= end) continue;
    const int64_t off = bn_offset(p, c, j);
    if (kVec) {
      for (int l = 0; l < 4; ++l) v[i][l] = v[i][l] * scale + shift;
      epilogue4(p, e, off, v[i]);
      store4(y, off, v[i]);
    } else {
      store_stream(y + off, epilogue1(p, e, off, v[i][0] * scale + shift));
    }
  }
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

// GroupNorm's pieces and items (group_norm_fwd_kernel). D: as many items as are resident at once
// while their data and the next D items' fit in the L2 budget, never below one more than the items
// a group spans (the deadlock-freedom argument); all of them when nothing is normalised.
// NORMLAB_CUDA_L2_BUDGET (bytes) overrides the budget, half the device's L2 and at most 24 MiB (the
// H100 design point); it lets the tests interleave the items of small tensors as a large one's are.
double l2_budget() {
  const char* env = std::getenv("NORMLAB_CUDA_L2_BUDGET");
  if (!env || !*env) return std::min(24.0 * (1 << 20), device_limits().l2_bytes / 2);
  char* end = nullptr;
  const double v = std::strtod(env, &end);
  if (*end != '\0' || !(v > 0))
    throw Error(std::string("NORMLAB_CUDA_L2_BUDGET must be a positive number of bytes, got '") + env + "'");
  return v;
}
// 256-thread blocks resident at once, from the device (under cuemu its profile): three per SM at
// the backward's 74 registers (sm_80 and sm_90).
int64_t gn_resident() { return 3 * device_limits().sms; }
GnPlan gn_plan(const NormParams& p, bool vec, bool normalise, double reread_bytes_per_element) {
  GnPlan pl{};
  const int64_t w = vec ? 4 : 1;
  pl.U = p.HxW / w;
  pl.Pp = ceil_div(pl.U, 32 * kGnUnits);
  pl.Lu = ceil_div(pl.U, pl.Pp);
  pl.lp = 1;
  while (pl.lp * kGnUnits < pl.Lu) pl.lp *= 2;
  pl.T = p.N * p.C * pl.Pp;
  const int64_t per_item = kGnWarps * (32 / pl.lp);
  pl.items = ceil_div(pl.T, per_item);
  pl.NG = p.N * p.G;
  pl.normalise = normalise;
  const int64_t span = ceil_div(p.C / p.G * pl.Pp, per_item) + 1;
  const double item_bytes = reread_bytes_per_element * double(per_item * pl.Lu * w);
  const int64_t fit = std::min<int64_t>(gn_resident(), int64_t(l2_budget() / item_bytes / 2));
  pl.D = normalise ? std::min(pl.items, std::max(span, fit)) : pl.items;
  const int64_t blocks = normalise ? 2 * pl.items : pl.items;
  if (blocks > INT32_MAX || pl.NG > INT32_MAX / 2)
    throw Error("group_norm: " + std::to_string(blocks) + " work items or " + std::to_string(pl.NG) +
                " groups exceed a grid");
  return pl;
}
unsigned gn_blocks(const GnPlan& pl) { return unsigned(pl.normalise ? 2 * pl.items : pl.items); }
constexpr size_t kGnShared = (2 + kGnThreads) * sizeof(int);
}  // namespace

void group_norm_fwd(const NormParams& p, const float* x, const float* gamma, const float* beta,
                    const float* tau, const float* residual, float* y, float* mean, float* rstd,
                    uint8_t* mask) {
  if (p.N * p.C * p.HxW == 0) return;
  NL_MODEL_OP("group_norm_fwd", norm_flops(p), norm_fwd_bytes(p, residual));
  const Epilogue e = make_epilogue(p, residual, mask);
  const bool vec = vec_ok(p, {x, residual, y, mask});
  const GnPlan pl = gn_plan(p, vec, y != nullptr, 4.0);  // re-read: x (the rest streams)
  const size_t sync_bytes = sizeof(int) * size_t(1 + 2 * pl.NG);
  Scratch scratch(sync_bytes + sizeof(float) * size_t(2 * pl.T));
  int* sync = reinterpret_cast<int*>(scratch.f32());
  float* part = scratch.f32() + (1 + 2 * pl.NG);
  NL_CUDA_CHECK(cudaMemsetAsync(sync, 0, sync_bytes, stream()));
  if (vec)
    NL_LAUNCH(group_norm_fwd_kernel<true>, gn_blocks(pl), kGnThreads, kGnShared, p, pl, x, gamma, beta, tau,
              e, sync, part, y, mean, rstd);
  else
    NL_LAUNCH(group_norm_fwd_kernel<false>, gn_blocks(pl), kGnThreads, kGnShared, p, pl, x, gamma, beta, tau,
              e, sync, part, y, mean, rstd);
}

void group_norm_bwd(const NormParams& p, const float* x, const float* dy, const float* gamma,
                    const float* mean, const float* rstd, const uint8_t* mask, float* dx, float* dgamma,
                    float* dbeta, float* dtau) {
  if (p.N * p.C * p.HxW == 0) return;
  NL_MODEL_OP("group_norm_bwd", norm_flops(p), norm_bwd_bytes(p, mask));
  const bool vec = vec_ok(p, {x, dy, mask, dx});
  const GnPlan pl = gn_plan(p, vec, dx != nullptr, mask ? 9.0 : 8.0);  // re-read: x, dy and the mask
  // sync; piece partials [2 or 3][T]; group totals [2][NG]; db_nc, ds_nc and (TLU) dt_nc, [N, C] each.
  const int parts = p.tlu ? 3 : 2;
  const size_t sync_ints = size_t(1 + 2 * pl.NG);
  Scratch scratch(sizeof(int) * sync_ints +
                  sizeof(float) * size_t(parts * pl.T + 2 * pl.NG + parts * p.N * p.C));
  int* sync = reinterpret_cast<int*>(scratch.f32());
  float* part = scratch.f32() + sync_ints;
  float* totals = part + parts * pl.T;
  float* db_nc = totals + 2 * pl.NG;
  float* ds_nc = db_nc + p.N * p.C;
  float* dt_nc = p.tlu ? ds_nc + p.N * p.C : nullptr;
  NL_CUDA_CHECK(cudaMemsetAsync(sync, 0, sizeof(int) * sync_ints, stream()));
  const float ks = keep_scale(p);
  if (p.tlu && vec)
    NL_LAUNCH(group_norm_tlu_bwd_kernel<true>, gn_blocks(pl), kGnThreads, kGnShared, p, pl, x, dy, gamma,
              mean, rstd, mask, ks, sync, part, totals, dx, db_nc, ds_nc, dt_nc);
  else if (p.tlu)
    NL_LAUNCH(group_norm_tlu_bwd_kernel<false>, gn_blocks(pl), kGnThreads, kGnShared, p, pl, x, dy, gamma,
              mean, rstd, mask, ks, sync, part, totals, dx, db_nc, ds_nc, dt_nc);
  else if (vec)
    NL_LAUNCH(group_norm_bwd_kernel<true>, gn_blocks(pl), kGnThreads, kGnShared, p, pl, x, dy, gamma, mean,
              rstd, mask, ks, sync, part, totals, dx, db_nc, ds_nc);
  else
    NL_LAUNCH(group_norm_bwd_kernel<false>, gn_blocks(pl), kGnThreads, kGnShared, p, pl, x, dy, gamma, mean,
              rstd, mask, ks, sync, part, totals, dx, db_nc, ds_nc);
  const dim3 reduce_grid(unsigned(ceil_div(p.C, kReduceCols))), reduce_block(kReduceCols, kReduceRows);
  const size_t reduce_smem = 2 * kReduceRows * kReduceCols * sizeof(float);
  if (dgamma || dbeta)
    NL_LAUNCH(reduce_over_n_kernel, reduce_grid, reduce_block, reduce_smem, p.N, p.C, db_nc, ds_nc, dgamma,
              dbeta);
  if (p.tlu && dtau)  // dtau[c] = sum_n dt_nc[n, c], in the dbeta slot
    NL_LAUNCH(reduce_over_n_kernel, reduce_grid, reduce_block, reduce_smem, p.N, p.C, dt_nc, dt_nc, nullptr,
              dtau);
}

void batch_norm_fwd(const NormParams& p, const float* x, const float* gamma, const float* beta,
                    const float* residual, float* running_mean, float* running_var, float* y, float* mean,
                    float* rstd, float* renorm, const float* renorm_step, uint8_t* mask) {
  if (p.C == 0) return;
  NL_MODEL_OP("batch_norm_fwd", norm_flops(p), norm_fwd_bytes(p, residual));
  const int64_t M = p.N * p.HxW;
  if (M == 0) return;
  BnFwdPlan pl;
  pl.S = ceil_div(M, kBnItem);
  pl.Q = p.C * pl.S;
  pl.stats = p.training;
  pl.normalise = y != nullptr;
  if (!pl.stats && !pl.normalise) return;
  // D as the backward's (batch_norm_bwd), the re-read being x alone.
  const int64_t fit = std::min<int64_t>(bn_resident(), int64_t(l2_budget() / (4.0 * kBnItem) / 2));
  pl.D = pl.normalise ? std::min(pl.Q, std::max(pl.S, fit)) : pl.Q;
  const int64_t blocks = pl.stats && pl.normalise ? 2 * pl.Q : pl.Q;
  if (blocks > INT32_MAX)
    throw Error("batch_norm forward: " + std::to_string(blocks) + " work items exceed a grid");
  const size_t sync_bytes = sizeof(int) * size_t(1 + 2 * p.C);
  Scratch scratch(sync_bytes + sizeof(float) * size_t(2 * pl.Q));
  int* sync = reinterpret_cast<int*>(scratch.f32());
  float* part = scratch.f32() + (1 + 2 * p.C);
  NL_CUDA_CHECK(cudaMemsetAsync(sync, 0, sync_bytes, stream()));
  const Epilogue e = make_epilogue(p, residual, mask);
  const size_t smem = 64 * sizeof(float) + 2 * sizeof(int);
  if (vec_ok(p, {x, residual, y, mask}))
    NL_LAUNCH(batch_norm_fwd_kernel<true>, unsigned(blocks), kBnThreads, smem, p, pl, x, gamma, beta,
              running_mean, running_var, renorm_step, e, sync, part, y, mean, rstd, renorm);
  else
    NL_LAUNCH(batch_norm_fwd_kernel<false>, unsigned(blocks), kBnThreads, smem, p, pl, x, gamma, beta,
              running_mean, running_var, renorm_step, e, sync, part, y, mean, rstd, renorm);
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
    NL_LAUNCH(batch_norm_bwd_kernel<true>, unsigned(blocks), kBnThreads, smem, p, pl, x, dy, gamma, mean,
              rstd, renorm, mask, ks, sync, part, part + 2 * pl.Q, dx, dgamma, dbeta);
  else
    NL_LAUNCH(batch_norm_bwd_kernel<false>, unsigned(blocks), kBnThreads, smem, p, pl, x, dy, gamma, mean,
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
