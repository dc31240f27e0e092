// conv2d forward, backward-data and backward-weight as one tiled implicit GEMM: the im2col
// matrix is never materialised; each tile of it is gathered straight into shared memory.
//
//   forward:        Y[k, (n,p,q)]  = sum_(c,r,s)  W[k, (c,r,s)]   * X(c,r,s ; n,p,q)
//   backward-data:  dX[c, (n,h,w)] = sum_(k,r,s)  W[k, (c,r,s)]   * dY(k,r,s ; n,h,w)
//   backward-weight: dW[k, (c,r,s)] = sum_(n,p,q) dY[k, (n,p,q)]  * X(c,r,s ; n,p,q)
//
// Block tile 64 x 64 with a K-step of 16, 256 threads, double-buffered: the gathers of tile t+1
// are issued into registers before the math on tile t and stored to the other shared-memory stage
// after it (one barrier per tile; the load latency hides behind the math). Two ways to
// multiply the staged tiles, chosen by Conv2dParams::tf32 (nl::conv_tf32(), on by default as in
// PyTorch's cuDNN convolutions):
//   - FP32 on CUDA cores: each thread computes a 4 x 4 register tile;
//   - TF32 on tensor cores (wmma m16n16k8, FP32 accumulation): the gathers round each element to
//     TF32 once as they stage it (cvt.rna: the tensor core would otherwise truncate), each of the
//     8 warps computes a 16 x 32 slab as two 16 x 16 accumulators, and the block stages its
//     64 x 64 result in shared memory so that both paths share one epilogue (bias, float4 stores,
//     split-K partials). docs/kernels.md derives the tolerance the tests hold it to.
// Every output is reduced by one thread or one warp in a fixed order: deterministic, no atomics.
//
// Backward-weight is split-K: its reduction runs over N*P*Q (131,072 steps per block at batch
// 128 on 32x32 images) while its output is tiny (K x C*R*S: 32 x 288 is 5 tiles), so one block per
// tile left a GPU idle. The reduction is cut into `splits` ranges (grid.z), each block writes its
// partial tile to a workspace, and a second kernel adds the partials in split order: the result
// is deterministic and independent of the device. splits depends only on the shape (target 256
// blocks, at least 256 reduction steps per block), so the emulated and the real GPU run the same
// partition.
#include <type_traits>

#include "kernels/cuda/cuda_common.h"
#include "kernels/cuda/reduce.cuh"
#include "normlab/core/kernel/stubs.h"

namespace nl::cuda {

namespace {
constexpr int kBM = 64, kBN = 64, kBK = 16, kTM = 4, kTN = 4, kThreads = 256;
// Shared tiles are [kBK][kBM + kPad]: rows padded by 4 floats so that a tile gathered along k
// (a warp's 32 lanes on 8 k-rows x 4 columns, along_k_row/along_k_k) lands on 32 different banks,
// while every row start stays 16-byte aligned for the float4 fragment reads.
constexpr int kPad = 4, kLdA = kBM + kPad, kLdB = kBN + kPad;
constexpr size_t kSmem = 2 * sizeof(float) * kBK * (kLdA + kLdB);  // two stages
// Tensor-core tiles are padded by 8: a TF32 fragment's lanes read (row g + 8i, column t + 4j)
// with g = lane / 4, t = lane % 4, so a row stride of 8 (mod 32) banks puts the 32 lanes of a
// fragment load on 32 different banks (a stride of 4 would pair them: 2-way conflicts). The
// 64 x 64 result is staged in the same buffer after the last tile.
constexpr int kLdTc = kBM + 8;
constexpr size_t kSmemTc = sizeof(float) * std::max(2 * kBK * 2 * kLdTc, kBM* kLdTc);
}  // namespace

// ---------------------------------------------------------------------------------- GEMM views

// Index arithmetic in 32 bits with division by invariant integers (Granlund & Montgomery 1994,
// as PyTorch's IntDivider and CUTLASS's FastDivmod): a gathered element costs a few multiply-highs
// instead of up to six 64-bit divisions, each a long instruction sequence in SASS (the PTX of the
// 64-bit version held 38-57 div/rem.s64 per kernel). Valid for n, d < 2^31: the
// launcher refuses GEMM dimensions beyond that. Element offsets are formed in 64 bits.
struct FastDiv {
  uint32_t d = 1, m = 0, s = 0;
  FastDiv() = default;
  explicit FastDiv(int64_t divisor) : d(uint32_t(std::max<int64_t>(divisor, 1))) {  // 0: an empty GEMM
    while (s < 31 && (uint32_t(1) << s) < d) ++s;                                   // s = ceil(log2 d)
    m = uint32_t(((uint64_t(1) << 32) * ((uint64_t(1) << s) - d)) / d + 1);
  }
  __device__ __forceinline__ uint32_t div(uint32_t n) const { return (__umulhi(n, m) + n) >> s; }
  __device__ __forceinline__ void divmod(uint32_t n, uint32_t& q, uint32_t& r) const {
    q = div(n);
    r = n - q * d;
  }
};

// The divisors of a convolution's index maps, built once on the host per launch.
struct ConvDivs {
  FastDiv RS, S, PQ, Q, HW, W, stride_h, stride_w;
  explicit ConvDivs(const Conv2dParams& p)
      : RS(p.R * p.S),
        S(p.S),
        PQ(p.P * p.Q),
        Q(p.Q),
        HW(p.H * p.W),
        W(p.W),
        stride_h(p.stride_h),
        stride_w(p.stride_w) {}
};

// The implicit im2col matrix X̃[(c,r,s), (n,p,q)]: the input pixel that output (n, p, q) sees
// through filter tap (r, s) of channel c, zero in the padding. Forward and backward-weight share it.
__device__ __forceinline__ float im2col_at(const Conv2dParams& p, const ConvDivs& d, const float* x,
                                           uint32_t crs, uint32_t npq) {
  uint32_t c, rs, r, s, ni, pq, oh, ow;
  d.RS.divmod(crs, c, rs), d.S.divmod(rs, r, s);
  d.PQ.divmod(npq, ni, pq), d.Q.divmod(pq, oh, ow);
  const int ih = int(oh) * int(p.stride_h) - int(p.pad_h) + int(r),
            iw = int(ow) * int(p.stride_w) - int(p.pad_w) + int(s);
  return (ih >= 0 && ih < p.H && iw >= 0 && iw < p.W)
             ? x[(int64_t(ni) * p.C + c) * (p.H * p.W) + ih * int(p.W) + iw]
             : 0.0f;
}

// Each view says along which index its operands are contiguous in memory, so the tile loaders
// walk that index across the lanes of a warp (coalesced loads; docs/kernels.md, "GPU model"):
// kAAlongK: A[m, k] is contiguous in k; kBAlongK: B[k, n] is contiguous in k (else in n).
// store4 writes four consecutive n as one float4 when they are consecutive in memory too.
// GEMM indices (m, n, k) are below 2^31 (run_gemm).
struct ConvFwdOp {
  static constexpr bool kSplitK = false;  // long output, short reduction: tiles fill the GPU
  static constexpr bool kAAlongK = true, kBAlongK = false;  // weights: rows contiguous in (c,r,s)
  Conv2dParams p;
  ConvDivs d;
  const float *x, *w, *bias;
  float* y;
  __device__ int64_t M() const { return p.K; }
  __device__ int64_t N() const { return p.N * p.P * p.Q; }
  __device__ int64_t K() const { return p.C * p.R * p.S; }
  __device__ float a(uint32_t m, uint32_t k) const { return w[int64_t(m) * K() + k]; }
  __device__ float b(uint32_t k, uint32_t n) const { return im2col_at(p, d, x, k, n); }
  __device__ void store(uint32_t m, uint32_t n, float v) const {
    uint32_t ni, pq;
    d.PQ.divmod(n, ni, pq);
    y[(int64_t(ni) * p.K + m) * (p.P * p.Q) + pq] = v + (bias ? bias[m] : 0.0f);
  }
  // n % 4 == 0 and n + 3 < N: the 4 outputs share an image when P*Q % 4 == 0.
  __device__ bool store4(uint32_t m, uint32_t n, float4 v) const {
    const int64_t PQ = p.P * p.Q;
    if (PQ % 4 != 0 || reinterpret_cast<uintptr_t>(y) % 16 != 0) return false;
    const float b = bias ? bias[m] : 0.0f;
    uint32_t ni, pq;
    d.PQ.divmod(n, ni, pq);
    float* dst = y + (int64_t(ni) * p.K + m) * PQ + pq;
    store_vec(reinterpret_cast<float4*>(dst), make_float4(v.x + b, v.y + b, v.z + b, v.w + b));
    return true;
  }
};

struct ConvBwdDataOp {
  static constexpr bool kSplitK = false;
  // A[c, (k,r,s)] is contiguous in runs of R*S along k (stride R*S along c): walk k.
  static constexpr bool kAAlongK = true, kBAlongK = false;
  Conv2dParams p;
  ConvDivs d;
  const float *w, *dy;
  float* dx;
  __device__ int64_t M() const { return p.C; }
  __device__ int64_t N() const { return p.N * p.H * p.W; }
  __device__ int64_t K() const { return p.K * p.R * p.S; }
  __device__ float a(uint32_t c, uint32_t k) const {
    uint32_t ko, rs;
    d.RS.divmod(k, ko, rs);
    return w[(int64_t(ko) * p.C + c) * (p.R * p.S) + rs];
  }
  __device__ float b(uint32_t k, uint32_t n) const {
    uint32_t ko, rs, r, s, ni, hw, h, wc;
    d.RS.divmod(k, ko, rs), d.S.divmod(rs, r, s);
    d.HW.divmod(n, ni, hw), d.W.divmod(hw, h, wc);
    // Output (oh, ow) saw input (h, w) through tap (r, s) iff oh * stride - pad + r == h.
    const int th = int(h) + int(p.pad_h) - int(r), tw = int(wc) + int(p.pad_w) - int(s);
    if (th < 0 || tw < 0) return 0.0f;
    uint32_t oh, ow, rh, rw;
    d.stride_h.divmod(uint32_t(th), oh, rh), d.stride_w.divmod(uint32_t(tw), ow, rw);
    return (rh == 0 && rw == 0 && oh < p.P && ow < p.Q)
               ? dy[(int64_t(ni) * p.K + ko) * (p.P * p.Q) + oh * uint32_t(p.Q) + ow]
               : 0.0f;
  }
  __device__ void store(uint32_t c, uint32_t n, float v) const {
    uint32_t ni, hw;
    d.HW.divmod(n, ni, hw);
    dx[(int64_t(ni) * p.C + c) * (p.H * p.W) + hw] = v;
  }
  __device__ bool store4(uint32_t c, uint32_t n, float4 v) const {
    const int64_t HW = p.H * p.W;
    if (HW % 4 != 0 || reinterpret_cast<uintptr_t>(dx) % 16 != 0) return false;
    uint32_t ni, hw;
    d.HW.divmod(n, ni, hw);
    store_vec(reinterpret_cast<float4*>(dx + (int64_t(ni) * p.C + c) * HW + hw), v);
    return true;
  }
};

struct ConvBwdWeightOp {
  static constexpr bool kSplitK = true;  // tiny output, reduction over the whole batch
  static constexpr bool kAAlongK = true, kBAlongK = true;
  Conv2dParams p;
  ConvDivs d;
  const float *x, *dy;
  float* dw;
  __device__ int64_t M() const { return p.K; }
  __device__ int64_t N() const { return p.C * p.R * p.S; }
  __device__ int64_t K() const { return p.N * p.P * p.Q; }
  __device__ float a(uint32_t ko, uint32_t k) const {
    uint32_t ni, pq;
    d.PQ.divmod(k, ni, pq);
    return dy[(int64_t(ni) * p.K + ko) * (p.P * p.Q) + pq];
  }
  __device__ float b(uint32_t k, uint32_t n) const { return im2col_at(p, d, x, n, k); }
  __device__ void store(uint32_t m, uint32_t n, float v) const { dw[int64_t(m) * N() + n] = v; }
  __device__ bool store4(uint32_t m, uint32_t n, float4 v) const {
    if (N() % 4 != 0 || reinterpret_cast<uintptr_t>(dw) % 16 != 0) return false;
    store_vec(reinterpret_cast<float4*>(dw + int64_t(m) * N() + n), v);
    return true;
  }
};

// ---------------------------------------------------------------------------------- kernels

// Element i of a 64 x 16 tile gathered along k: a warp's 32 lanes take 8 k x 4 rows, so every
// 8 lanes read one 32-byte sector and their stores into the padded tile [k][row] spread over the
// banks: conflict-free with rows of 68 floats, 2-way with 72 (16 k x 2 rows was 2-way and 4-way).
__device__ __forceinline__ int along_k_row(int i) { return i / 64 * 4 + i % 32 / 8; }
__device__ __forceinline__ int along_k_k(int i) { return i % 8 + i / 32 % 2 * 8; }

// partial == nullptr: the block owns the whole reduction and stores through op. Otherwise block z
// reduces [z * k_per, (z + 1) * k_per) and writes its tile to partial[z][M][N].
template <typename Op, bool kTensorCores>
__device__ __forceinline__ void implicit_gemm(Op op, int64_t k_per, float* partial) {
  namespace wmma = nvcuda::wmma;
  constexpr int ldA = kTensorCores ? kLdTc : kLdA, ldB = kTensorCores ? kLdTc : kLdB;
  NL_DYN_SHARED(float, smem);
  // Two stages of [kBK][ldA] A then [kBK][ldB] B: the block computes on one while its threads'
  // loads of the next tile are in flight (held in registers, staged after the math).
  constexpr int kStage = kBK * (ldA + ldB);
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  // Tensor cores: warp w owns rows 16 (w / 2) .. +15 and columns 32 (w % 2) .. +31 of the tile.
  const int warp = threadIdx.x / 32, wm = warp / 2 * 16, wn = warp % 2 * 32;
  wmma::fragment<wmma::accumulator, 16, 16, 8, float> cf[2];
  if constexpr (kTensorCores) wmma::fill_fragment(cf[0], 0.0f), wmma::fill_fragment(cf[1], 0.0f);
  // GEMM coordinates in 32 bits (run_gemm checks M, N, K < 2^31).
  const uint32_t m0 = blockIdx.y * kBM, n0 = blockIdx.x * kBN;
  const uint32_t M = uint32_t(op.M()), N = uint32_t(op.N());
  const uint32_t k_begin = uint32_t(blockIdx.z * k_per);
  const uint32_t K = uint32_t(k_begin + k_per < op.K() ? k_begin + k_per : op.K());  // this block's end
  float acc[kTM][kTN];
  for (int i = 0; i < kTM; ++i)
    for (int j = 0; j < kTN; ++j) acc[i][j] = 0.0f;

  // Each thread gathers kPer elements of A and of B per tile. Lanes walk the operand's
  // contiguous index (Op::kAAlongK / kBAlongK): coalesced gathers.
  constexpr int kPer = kBM * kBK / kThreads;
  float ra[kPer], rb[kPer];
  auto gather = [&](uint32_t k0) {
    for (int it = 0; it < kPer; ++it) {
      const int i = threadIdx.x + it * kThreads;
      const int mm = Op::kAAlongK ? along_k_row(i) : i % kBM, ka = Op::kAAlongK ? along_k_k(i) : i / kBM;
      ra[it] = (m0 + mm < M && k0 + ka < K) ? op.a(m0 + mm, k0 + ka) : 0.0f;
      const int nn = Op::kBAlongK ? along_k_row(i) : i % kBN, kb = Op::kBAlongK ? along_k_k(i) : i / kBN;
      rb[it] = (n0 + nn < N && k0 + kb < K) ? op.b(k0 + kb, n0 + nn) : 0.0f;
    }
  };
  auto stage = [&](float* As, float* Bs) {
    for (int it = 0; it < kPer; ++it) {
      const int i = threadIdx.x + it * kThreads;
      const int mm = Op::kAAlongK ? along_k_row(i) : i % kBM, ka = Op::kAAlongK ? along_k_k(i) : i / kBM;
      const int nn = Op::kBAlongK ? along_k_row(i) : i % kBN, kb = Op::kBAlongK ? along_k_k(i) : i / kBN;
      As[ka * ldA + mm] = kTensorCores ? wmma::__float_to_tf32(ra[it]) : ra[it];
      Bs[kb * ldB + nn] = kTensorCores ? wmma::__float_to_tf32(rb[it]) : rb[it];
    }
  };

  if (k_begin < K) {
    gather(k_begin);
    stage(smem, smem + kBK * ldA);
  }
  __syncthreads();  // the first tile is complete before anyone reads it
  for (uint32_t k0 = k_begin, t = 0; k0 < K; k0 += kBK, ++t) {
    const float* As = smem + (t % 2) * kStage;
    const float* Bs = As + kBK * ldA;
    const bool more = k0 + kBK < K;
    if (more) gather(k0 + kBK);  // in flight during the math below
    if constexpr (kTensorCores) {
      // As holds A column-major (element (m, k) at k * ldA + m), Bs holds B row-major.
      for (int kk = 0; kk < kBK; kk += 8) {
        wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::col_major> af;
        wmma::load_matrix_sync(af, As + kk * ldA + wm, ldA);
        for (int j = 0; j < 2; ++j) {
          wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major> bf;
          wmma::load_matrix_sync(bf, Bs + kk * ldB + wn + 16 * j, ldB);
          wmma::mma_sync(cf[j], af, bf, cf[j]);
        }
      }
    } else {
      for (int kk = 0; kk < kBK; ++kk) {
        // One float4 per fragment: 16 lanes read 16 consecutive quads of a B row (conflict-free
        // in quarter-warp phases); the A quad is a broadcast to the 16 lanes of a ty.
        const float4 av = load_vec(reinterpret_cast<const float4*>(As + kk * kLdA + ty * kTM));
        const float4 bv = load_vec(reinterpret_cast<const float4*>(Bs + kk * kLdB + tx * kTN));
        const float a[kTM] = {av.x, av.y, av.z, av.w}, b[kTN] = {bv.x, bv.y, bv.z, bv.w};
        for (int i = 0; i < kTM; ++i)
          for (int j = 0; j < kTN; ++j) acc[i][j] += a[i] * b[j];
      }
    }
    // The other stage was last read in the previous iteration, before its closing barrier.
    if (more) stage(smem + (1 - t % 2) * kStage, smem + (1 - t % 2) * kStage + kBK * ldA);
    // One barrier per tile: the next stage is complete before anyone reads it, and everyone is
    // done reading this stage before the iteration after next overwrites it.
    __syncthreads();
  }
  if constexpr (kTensorCores) {
    // Stage the warps' accumulators (the last tile was released by the loop's final barrier) and
    // read back each thread's 4 x 4 of the FP32 layout, so both paths share the epilogue.
    for (int j = 0; j < 2; ++j)
      wmma::store_matrix_sync(smem + wm * kLdTc + wn + 16 * j, cf[j], kLdTc, wmma::mem_row_major);
    __syncthreads();  // every warp's slab is staged before threads read across slabs
    for (int i = 0; i < kTM; ++i) {
      const float4 v = load_vec(reinterpret_cast<const float4*>(smem + (ty * kTM + i) * kLdTc + tx * kTN));
      acc[i][0] = v.x, acc[i][1] = v.y, acc[i][2] = v.z, acc[i][3] = v.w;
    }
  }
  // A thread's 4 outputs of a row are consecutive n: one float4 store when they are consecutive
  // in memory too (16 lanes then write 256 contiguous bytes), else 4 scalar stores.
  for (int i = 0; i < kTM; ++i) {
    const uint32_t m = m0 + ty * kTM + i, n = n0 + tx * kTN;
    if (m >= M) continue;
    if (n + kTN <= N) {
      const float4 v = make_float4(acc[i][0], acc[i][1], acc[i][2], acc[i][3]);
      if (partial) {
        if (N % 4 == 0) {
          store_vec(reinterpret_cast<float4*>(partial + (int64_t(blockIdx.z) * M + m) * N + n), v);
          continue;
        }
      } else if (op.store4(m, n, v)) {
        continue;
      }
    }
    for (int j = 0; j < kTN; ++j) {
      if (n + j >= N) break;
      if (partial)
        partial[(int64_t(blockIdx.z) * M + m) * N + n + j] = acc[i][j];
      else
        op.store(m, n + j, acc[i][j]);
    }
  }
}

// The two instantiations carry their own names, so launches and ptxas' register counts tell them
// apart.
template <typename Op>
__global__ void __launch_bounds__(256) implicit_gemm_kernel(Op op, int64_t k_per, float* partial) {
  implicit_gemm<Op, false>(op, k_per, partial);
}
template <typename Op>
__global__ void __launch_bounds__(256) implicit_gemm_tf32_kernel(Op op, int64_t k_per, float* partial) {
  implicit_gemm<Op, true>(op, k_per, partial);
}

// out[i] = sum over z of partial[z][i], z in order (deterministic). M * N is a weight's size.
template <typename Op>
__global__ void split_k_reduce_kernel(Op op, int64_t splits, const float* partial) {
  const uint32_t N = uint32_t(op.N()), MN = uint32_t(op.M()) * N;
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < MN; i += gridDim.x * blockDim.x) {
    float s = 0.0f;
    for (int64_t z = 0; z < splits; ++z) s += partial[z * MN + i];
    op.store(i / N, i % N, s);
  }
}

// dbias[k] = sum over (n, p, q) of dy: one block per output channel.
__global__ void conv_bias_grad_kernel(Conv2dParams p, const float* dy, float* dbias) {
  NL_DYN_SHARED(float, scratch);
  const int64_t k = blockIdx.x, PQ = p.P * p.Q;
  float s = 0.0f;
  for (int64_t i = threadIdx.x; i < p.N * PQ; i += blockDim.x) s += dy[((i / PQ) * p.K + k) * PQ + i % PQ];
  s = block_sum(s, scratch);
  if (threadIdx.x == 0) dbias[k] = s;
}

// ---------------------------------------------------------------------------------- launchers

namespace {
constexpr int64_t kTargetBlocks = 256, kMinSplitSteps = 256;

// Reduction ranges for a GEMM of `tiles` output tiles over `K` steps: enough blocks to fill a
// GPU (kTargetBlocks: about two per SM on an H100), none with fewer than kMinSplitSteps steps,
// at most 65,535 (grid.z's limit). A function of the shape only. Returns the number of splits
// actually used (>= 1) and sets k_per, the steps per split (whole K-steps, so only the last
// split has a partial step).
int64_t split_plan(int64_t tiles, int64_t K, int64_t& k_per) {
  const int64_t want = ceil_div(kTargetBlocks, tiles), most = std::max<int64_t>(1, K / kMinSplitSteps);
  const int64_t splits = std::clamp<int64_t>(std::min(want, most), 1, 65535);
  k_per = std::max<int64_t>(1, ceil_div(ceil_div(K, kBK), splits) * kBK);
  return std::max<int64_t>(1, ceil_div(K, k_per));  // rounding can leave trailing splits empty
}

template <typename Op, bool kTensorCores>
void launch_gemm(dim3 grid, const Op& op, int64_t k_per, float* partial) {
  if constexpr (kTensorCores)
    NL_LAUNCH(implicit_gemm_tf32_kernel<Op>, grid, kThreads, kSmemTc, op, k_per, partial);
  else
    NL_LAUNCH(implicit_gemm_kernel<Op>, grid, kThreads, kSmem, op, k_per, partial);
}

template <typename Op, bool kTensorCores>
void run_gemm_as(const Op& op, int64_t M, int64_t N, int64_t K) {
  const dim3 tiles(unsigned(ceil_div(N, kBN)), unsigned(ceil_div(M, kBM)));
  if constexpr (Op::kSplitK) {
    int64_t k_per = 0;
    const int64_t used = split_plan(int64_t(tiles.x) * tiles.y, K, k_per);
    if (used > 1) {
      Scratch partial(sizeof(float) * size_t(used * M * N));
      launch_gemm<Op, kTensorCores>(dim3(tiles.x, tiles.y, unsigned(used)), op, k_per, partial.f32());
      NL_LAUNCH(split_k_reduce_kernel<Op>, grid_for(M * N), 256, 0, op, used, partial.f32());
      return;
    }
  }
  launch_gemm<Op, kTensorCores>(tiles, op, std::max<int64_t>(K, 1), nullptr);
}

template <typename Op>
void run_gemm(const Op& op, int64_t M, int64_t N, int64_t K) {
  if (M == 0 || N == 0) return;
  // The kernels index the GEMM in 32 bits (FastDiv); a bigger problem is split by the caller.
  constexpr int64_t kMax = int64_t(1) << 31;
  NL_CHECK(M < kMax && N < kMax && K < kMax && M * N < (int64_t(1) << 32),
           "conv2d on CUDA: the implicit GEMM is ", M, " x ", N, " x ", K,
           "; each dimension must stay below 2^31 (split the batch)");
  if (op.p.tf32)
    run_gemm_as<Op, true>(op, M, N, K);
  else
    run_gemm_as<Op, false>(op, M, N, K);
}
}  // namespace

// ---------------------------------------------------------------------------------- direct kernels

// The direct tensor-core convolutions: 3x3 (or 1x1), stride 1, same padding, images at most 32
// wide, TF32. These are every convolution of the comparison network; the implicit GEMM above
// serves the rest. What the GEMM spends its time on, these do once per tile instead of per element:
//   - a tile is 128 output pixels of whole image rows (flattened over the batch: a tile of the
//     8x8 layer holds two images), and its input rows plus a one-row halo per image are staged in
//     shared memory once per 32-channel chunk: each staged element is read by 9 taps x 32 output
//     channels from shared memory, never gathered again;
//   - the filter chunk [tap][c][k] stays in shared memory across the tiles of a persistent block;
//   - a lane's shared-memory addresses are a per-tile base plus a per-tap constant: the k-loop
//     holds loads and mma.sync only (no index arithmetic, no division);
//   - mma.sync m16n8k8 TF32 with output pixels on M and output channels on N: a warp owns
//     32 pixels x 32 channels (2 x 4 fragments), four warps per block.
// Staged values are rounded to TF32 (cvt.rna) once, as the implicit GEMM does.
// Backward-data is the same kernel over dy with the filter transposed and rotated by 180 degrees
// (kFlip). Backward-weight stages dy and the input halo of a tile the same way and accumulates
// the block's partial dW in registers over its tiles; a second launch adds the per-block
// partials in block order (deterministic, the partition a function of the shape only).
namespace {
constexpr int kDcThreads = 128, kDcPixels = 128, kDcN = 32, kDcC = 32;
// Filter rows padded to 40 floats: a B fragment's lanes read (c = t, k = g), 40 t + g covers
// 32 banks. Channel planes of the staged input padded to 8 (mod 16) floats: an A fragment's lanes
// read (c = t, pixel = g), t * CS + g covers 32 banks when CS = 8 or 24 (mod 32). The backward-
// weight kernel reads the input the other way round (c = g, pixel = t) and pads its planes to
// 4 (mod 8), and its dy tile rows to 132 floats, for the same reason.
constexpr int kDcLdw = 40, kDcLdDy = kDcPixels + 4;
}  // namespace

// The geometry of a direct convolution over an input of Cin channels producing Cout channels
// (forward: C -> K; backward-data: K -> C), computed once on the host (direct_geometry).
struct DirectConv {
  int N = 0, Cin = 0, Cout = 0, H = 0, W = 0;
  int TH = 0;     // image rows per tile (TH * W <= 128 pixels)
  int tiles = 0;  // ceil(N * H / TH)
  // Staged rows per channel, at most: the tile's rows and a halo row either side of each image.
  int slots = 0;
  int TWp = 0;   // a staged row's length: the halo columns, W, padding
  int col0 = 0;  // where column 0 of the image sits in a staged row
  // Whether rows are staged as float4 (W % 4 == 0, x 16-byte aligned): column 0 then sits at 4,
  // so the interior is 16-byte aligned in shared memory, and the halo columns stay zero.
  bool vec = false;
  bool vec_dy = false;    // backward-weight: dy staged as float4 (W % 4 == 0, dy 16-byte aligned)
  int CS = 0;             // a staged channel plane, padded
  FastDiv TWp_div;        // scalar staging: element of a channel plane to (row, column)
  FastDiv quads_div;      // vector staging: quad of the block's chunk to (channel, quad of the plane)
  FastDiv row_quads_div;  // and that to (row, quad of the row)
};

namespace {
__device__ __forceinline__ int imin(int a, int b) { return a < b ? a : b; }

// A value rounded to TF32 (cvt.rna), kept as a float: what the kernels stage for mma.sync.
__device__ __forceinline__ float rounded_tf32(float v) { return __uint_as_float(to_tf32(v)); }
__device__ __forceinline__ float4 rounded_tf32(float4 v) {
  return make_float4(rounded_tf32(v.x), rounded_tf32(v.y), rounded_tf32(v.z), rounded_tf32(v.w));
}

// Staged row s of the tile starting at flattened row `row0`: the image n and row h it holds, or
// h = -1 for a padding row. Rows are grouped per image: (halo, the tile's rows of the image, halo).
__device__ __forceinline__ void staged_row(const DirectConv& g, int halo, int row0, int rows, int s, int& n,
                                           int& h) {
  int left = rows;
  n = row0 / g.H;
  int h_first = row0 - n * g.H;
  while (left > 0) {
    const int in_image = imin(g.H - h_first, left);
    if (s < in_image + 2 * halo) {
      h = h_first - halo + s;
      if (h < 0 || h >= g.H) h = -1;
      return;
    }
    s -= in_image + 2 * halo, left -= in_image, ++n, h_first = 0;
  }
  h = -1;  // beyond the tile's staged rows
}

// The staged-row index of output row i of a tile whose first row is row h0 of its image.
__device__ __forceinline__ int slot_of(const DirectConv& g, int halo, int h0, int i) {
  return i + halo * (1 + 2 * ((h0 + i) / g.H));
}

// Copies count elements, element i from load(i) to store(i, v), kDcStageBatch per thread at a time:
// all of a thread's loads of a batch are issued before the first store waits for its value, so a
// warp has kDcStageBatch loads in flight instead of one (an SM needs tens of KB in flight to
// reach DRAM bandwidth; the staging is the kernels' only global traffic).
constexpr int kDcStageBatch = 8;
template <typename Load, typename Store>
__device__ __forceinline__ void staged_copy(int count, Load load, Store store) {
  for (int i0 = threadIdx.x; i0 < count; i0 += kDcStageBatch * kDcThreads) {
    float v[kDcStageBatch];
    NL_UNROLL
    for (int u = 0; u < kDcStageBatch; ++u) {
      const int i = i0 + u * kDcThreads;
      v[u] = i < count ? load(i) : 0.0f;
    }
    NL_UNROLL
    for (int u = 0; u < kDcStageBatch; ++u) {
      const int i = i0 + u * kDcThreads;
      if (i < count) store(i, v[u]);
    }
  }
}

// Stages channels [c0, c0 + 32) of the tile's input rows into xs[c][s * TWp + col0 + col], rounded
// to TF32; zero outside the image and beyond Cin. slot_off[s]: the offset of staged row s within
// a channel of x; slot_h[s] < 0: a padding row.
//   - vector (g.vec): the block's threads take consecutive quads of consecutive rows (coalesced
//     LDG.128 / STS.128), kDcQuadBatch loads in flight per thread; only the image's columns are
//     written: the halo columns were zeroed once (zero_staging) and stay zero, since a tile is
//     whole image rows and its left and right neighbours are always padding;
//   - scalar: a warp stages one channel plane at a time, its lanes on consecutive elements,
//     kDcStageBatch loads in flight per lane, halo columns included.
constexpr int kDcQuadBatch = 6;
__device__ __forceinline__ void stage_input(const DirectConv& g, int halo, const float* x, int row0, int rows,
                                            int c0, float* xs, int64_t* slot_off, int* slot_h) {
  const int64_t HW = int64_t(g.H) * g.W;
  for (int s = threadIdx.x; s < g.slots; s += blockDim.x) {
    int n, h;
    staged_row(g, halo, row0, rows, s, n, h);
    slot_h[s] = h, slot_off[s] = int64_t(n) * g.Cin * HW + int64_t(h) * g.W;
  }
  __syncthreads();
  if (g.vec) {
    const int row_quads = g.W / 4, count = kDcC * g.slots * row_quads;
    auto where = [&](int i, uint32_t& c, uint32_t& s, uint32_t& q) {
      uint32_t rq;
      g.quads_div.divmod(uint32_t(i), c, rq);
      g.row_quads_div.divmod(rq, s, q);
    };
    for (int i0 = threadIdx.x; i0 < count; i0 += kDcQuadBatch * kDcThreads) {
      float4 v[kDcQuadBatch];
      int dst[kDcQuadBatch];
      NL_UNROLL
      for (int u = 0; u < kDcQuadBatch; ++u) {
        const int i = i0 + u * kDcThreads;
        uint32_t c, s, q;
        where(i, c, s, q);
        const int ci = c0 + int(c);
        dst[u] = i < count ? int(c * g.CS + s * g.TWp + 4 * q) + g.col0 : -1;
        v[u] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (i < count && ci < g.Cin && slot_h[s] >= 0)
          v[u] = load_vec(reinterpret_cast<const float4*>(x + int64_t(ci) * HW + slot_off[s] + 4 * q));
      }
      NL_UNROLL
      for (int u = 0; u < kDcQuadBatch; ++u)
        if (dst[u] >= 0) store_vec(reinterpret_cast<float4*>(xs + dst[u]), rounded_tf32(v[u]));
    }
    return;
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, plane = g.slots * g.TWp;
  for (int c = warp; c < kDcC; c += kDcThreads / 32) {
    const int ci = c0 + c;
    const float* src = x + int64_t(ci) * HW;
    float* dst = xs + c * g.CS;
    for (int e0 = lane; e0 < plane; e0 += 32 * kDcStageBatch) {
      float v[kDcStageBatch];
      NL_UNROLL
      for (int u = 0; u < kDcStageBatch; ++u) {
        const int e = e0 + 32 * u;
        uint32_t s, col;
        g.TWp_div.divmod(uint32_t(e), s, col);
        const int iw = int(col) - g.col0;
        v[u] =
            (e < plane && ci < g.Cin && slot_h[s] >= 0 && iw >= 0 && iw < g.W) ? src[slot_off[s] + iw] : 0.0f;
      }
      NL_UNROLL
      for (int u = 0; u < kDcStageBatch; ++u)
        if (e0 + 32 * u < plane) dst[e0 + 32 * u] = rounded_tf32(v[u]);
    }
  }
}

// Zeroes the staged planes once per block: the vector staging never writes the halo columns.
__device__ __forceinline__ void zero_staging(const DirectConv& g, float* xs) {
  if (!g.vec) return;
  for (int i = threadIdx.x; i < kDcC * g.CS; i += blockDim.x) xs[i] = 0.0f;
}

// Stages the filter chunk for input channels [c0, c0 + 32) and output channels [k0, k0 + 32) as
// ws[tap][c][k] (rows of kDcLdw), rounded to TF32; zero beyond Cin and Cout. kFlip: the
// backward-data filter, W[c_in][c_out][R-1-r][S-1-s] of the forward weight [K][C][R][S].
// Either way the chunk is 32 "outer" rows of the forward weight (forward: its K rows k0..;
// backward-data: its K rows c0..), each a contiguous run of (inner channel, tap): read as float4
// along the run when its length and start allow (kFilterBatch loads in flight per thread, three
// rounds for a 3x3 chunk), element by element otherwise.
template <int R, bool kFlip>
__device__ __forceinline__ void stage_filter(const DirectConv& g, const float* w, int c0, int k0, float* ws) {
  constexpr int RS = R * R, kRowQuads = kDcC * RS / 4, kFilterBatch = 6;
  const int outer0 = kFlip ? c0 : k0, outer_n = kFlip ? g.Cin : g.Cout;  // the weight's K rows
  const int inner0 = kFlip ? k0 : c0, inner_n = kFlip ? g.Cout : g.Cin;  // and its C columns
  const int run = imin(kDcC, inner_n - inner0) * RS;                     // floats per row in the chunk
  // Element e of outer row o: inner channel e / RS, tap e % RS, to its place in ws.
  auto put = [&](int o, int e, float v) {
    const int inner = e / RS, tap = e % RS;
    const int k = kFlip ? inner : o, c = kFlip ? o : inner, t = kFlip ? RS - 1 - tap : tap;
    ws[(t * kDcC + c) * kDcLdw + k] = rounded_tf32(v);
  };
  auto row = [&](int o) { return w + (int64_t(outer0 + o) * inner_n + inner0) * RS; };
  if ((inner_n * RS) % 4 == 0 && reinterpret_cast<uintptr_t>(w) % 16 == 0) {
    for (int i0 = threadIdx.x; i0 < kDcN * kRowQuads; i0 += kFilterBatch * kDcThreads) {
      float4 v[kFilterBatch];
      NL_UNROLL
      for (int u = 0; u < kFilterBatch; ++u) {
        const int i = i0 + u * kDcThreads, o = i / kRowQuads, q = i % kRowQuads;
        v[u] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (i < kDcN * kRowQuads && outer0 + o < outer_n && 4 * q < run)
          v[u] = load_vec(reinterpret_cast<const float4*>(row(o)) + q);
      }
      NL_UNROLL
      for (int u = 0; u < kFilterBatch; ++u) {
        const int i = i0 + u * kDcThreads, o = i / kRowQuads, q = i % kRowQuads;
        if (i >= kDcN * kRowQuads) continue;
        put(o, 4 * q, v[u].x), put(o, 4 * q + 1, v[u].y), put(o, 4 * q + 2, v[u].z),
            put(o, 4 * q + 3, v[u].w);
      }
    }
    return;
  }
  staged_copy(
      kDcN * kDcC * RS,
      [&](int i) {
        const int o = i / (kDcC * RS), e = i % (kDcC * RS);
        return outer0 + o < outer_n && e < run ? row(o)[e] : 0.0f;
      },
      [&](int i, float v) { put(i / (kDcC * RS), i % (kDcC * RS), v); });
}
}  // namespace

// Forward (and, kFlip, backward-data): y[n, k, h, w] = bias[k] + sum over (c, r, s) of
// filter[k, c, r, s] * x[n, c, h + r - R/2, w + s - R/2]. Grid: (persistent tiles, Cout / 32).
template <int R, bool kFlip>
__device__ __forceinline__ void conv_direct(const DirectConv& g, const float* x, const float* w,
                                            const float* bias, float* y) {
  constexpr int halo = R / 2, RS = R * R;
  NL_DYN_SHARED(float, smem);
  float* ws = smem;                                                  // [RS][kDcC][kDcLdw]
  float* xs = ws + RS * kDcC * kDcLdw;                               // [kDcC][CS]
  int64_t* slot_off = reinterpret_cast<int64_t*>(xs + kDcC * g.CS);  // CS is a multiple of 4
  int* slot_h = reinterpret_cast<int*>(slot_off + g.slots);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, gq = lane / 4, tq = lane % 4;
  const int k0 = blockIdx.y * kDcN, rows_total = g.N * g.H;
  const int64_t HW = int64_t(g.H) * g.W;
  const bool one_chunk = g.Cin <= kDcC;
  const int col_frags = imin(4, (g.Cout - k0 + 7) / 8);    // 8-channel fragments with real channels
  if (one_chunk) stage_filter<R, kFlip>(g, w, 0, k0, ws);  // resident for every tile of the block
  zero_staging(g, xs);  // ordered before the first staging by the barrier that precedes it

  for (int tile = blockIdx.x; tile < g.tiles; tile += gridDim.x) {
    const int row0 = tile * g.TH, rows = imin(g.TH, rows_total - row0), h0 = row0 % g.H;
    // A lane's four pixels: fragment f, rows gq and gq + 8. Their staged-row bases (for the pixels
    // past the tile, one inside the plane for every tap: they compute, nobody stores them) and
    // output offsets.
    int base[2][2];
    int64_t out[2][2];
    NL_UNROLL
    for (int f = 0; f < 2; ++f)
      for (int e = 0; e < 2; ++e) {
        const int m = warp * 32 + f * 16 + e * 8 + gq, i = m / g.W, j = m - i * g.W;
        const bool ok = i < rows;
        base[f][e] = (ok ? slot_of(g, halo, h0, i) * g.TWp + j : halo * g.TWp) + g.col0;
        const int row = row0 + i, n = row / g.H, h = row - n * g.H;
        out[f][e] = ok ? int64_t(n) * g.Cout * HW + int64_t(h) * g.W + j : -1;
      }
    float acc[2][4][4] = {};
    for (int c0 = 0; c0 < g.Cin; c0 += kDcC) {
      // The previous chunk's or tile's shared memory is no longer read.
      __syncthreads();
      if (!one_chunk) stage_filter<R, kFlip>(g, w, c0, k0, ws);
      stage_input(g, halo, x, row0, rows, c0, xs, slot_off, slot_h);
      __syncthreads();
      const int steps = (imin(kDcC, g.Cin - c0) + 7) / 8;
      // The tap loop for a compile-time number of output fragments: a run-time guard per
      // fragment and tap cost 70 integer instructions per 72 tensor-core ones in SASS.
      auto taps = [&](auto nf) {
        constexpr int NF = decltype(nf)::value;
        for (int c8 = 0; c8 < steps; ++c8) {
          const float* xc = xs + (c8 * 8 + tq) * g.CS;
          const float* wc = ws + (c8 * 8 + tq) * kDcLdw + gq;
          NL_UNROLL
          for (int tap = 0; tap < RS; ++tap) {
            const int off = (tap / R - halo) * g.TWp + tap % R - halo;
            uint32_t a[2][4], b[NF][2];
            NL_UNROLL
            for (int f = 0; f < 2; ++f) {
              a[f][0] = __float_as_uint(xc[base[f][0] + off]);
              a[f][1] = __float_as_uint(xc[base[f][1] + off]);
              a[f][2] = __float_as_uint(xc[4 * g.CS + base[f][0] + off]);
              a[f][3] = __float_as_uint(xc[4 * g.CS + base[f][1] + off]);
            }
            NL_UNROLL
            for (int j = 0; j < NF; ++j) {
              b[j][0] = __float_as_uint(wc[tap * kDcC * kDcLdw + j * 8]);
              b[j][1] = __float_as_uint(wc[tap * kDcC * kDcLdw + 4 * kDcLdw + j * 8]);
            }
            NL_UNROLL
            for (int f = 0; f < 2; ++f)
              for (int j = 0; j < NF; ++j) mma_m16n8k8_tf32(acc[f][j], a[f], b[j], acc[f][j]);
          }
        }
      };
      switch (col_frags) {  // 8-channel output fragments with real channels: K = 32, 24, 16, 8
        case 4: taps(std::integral_constant<int, 4>()); break;
        case 3: taps(std::integral_constant<int, 3>()); break;
        case 2: taps(std::integral_constant<int, 2>()); break;
        default: taps(std::integral_constant<int, 1>()); break;
      }
    }
    // Lanes gq = 0..7 hold 8 consecutive pixels of one channel: each store fills 32-byte sectors.
    NL_UNROLL
    for (int j = 0; j < 4; ++j)
      for (int e = 0; e < 2; ++e) {
        const int k = k0 + j * 8 + 2 * tq + e;
        if (k >= g.Cout) continue;
        const float bk = bias ? bias[k] : 0.0f;
        NL_UNROLL
        for (int f = 0; f < 2; ++f)
          for (int hi = 0; hi < 2; ++hi)
            if (out[f][hi] >= 0) y[out[f][hi] + int64_t(k) * HW] = acc[f][j][2 * hi + e] + bk;
      }
  }
}

// Backward-weight: block b accumulates dW[k][c][tap] over tiles b, b + gridDim.x, ... and writes
// it to partial[b]; grid (splits, ceil(K / 32) * ceil(C / 32)). Here Cin = C (the input x) and
// Cout = K (dy). A warp owns R*R of the 4 * R*R column fragments (tap, 8 channels) of the block's
// 32 x (32 * R*R) slab, both 16-row halves: R*R * 2 fragments, 72 accumulators at 3x3.
template <int R>
__device__ __forceinline__ void conv_direct_bwd_weight(const DirectConv& g, const float* x, const float* dy,
                                                       float* partial) {
  constexpr int halo = R / 2, RS = R * R;
  NL_DYN_SHARED(float, smem);
  float* dys = smem;                 // [kDcN][kDcLdDy]: dy of the tile, 128 pixels per channel
  float* xs = dys + kDcN * kDcLdDy;  // [kDcC][CS]
  int64_t* pix_off = reinterpret_cast<int64_t*>(xs + kDcC * g.CS);  // [128]: a pixel's offset in dy's channel
  // [32]: the offset of pixel quad q (pixels 4q..4q+3): read by consecutive lanes, where pix_off
  // at a stride of 4 would put every fourth lane on one bank.
  int64_t* quad_off = pix_off + kDcPixels;
  int64_t* slot_off = quad_off + kDcPixels / 4;
  int* pix = reinterpret_cast<int*>(slot_off + g.slots);  // [128]: a pixel's staged-row base
  int* slot_h = pix + kDcPixels;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, gq = lane / 4, tq = lane % 4;
  const int kchunks = (g.Cout + kDcN - 1) / kDcN;
  const int k0 = blockIdx.y % kchunks * kDcN, c0 = blockIdx.y / kchunks * kDcC;
  const int rows_total = g.N * g.H;
  const int64_t HW = int64_t(g.H) * g.W;
  float acc[2][RS][4] = {};
  // Column fragments (tap, 8 channels) of the chunk's real channels only (the 3-channel stem has
  // one group of 8, not four): fragment q * 4 + warp of this warp, tap-major; their staged-input
  // offsets. Rows (K) past 16: the second 16-row half only when the chunk has them.
  const int groups = (imin(kDcC, g.Cin - c0) + 7) / 8, nfrag = RS * groups;
  const int frags = imin(RS, (nfrag - warp + 3) / 4);
  const bool two_halves = g.Cout - k0 > 16, all_frags = frags == RS && two_halves;
  int xoff[RS], ftap[RS], fch[RS];
  NL_UNROLL
  for (int q = 0; q < RS; ++q) {
    const int frag = q * 4 + warp, tap = frag / groups, cg = frag % groups;
    ftap[q] = tap, fch[q] = cg * 8;
    xoff[q] = (cg * 8 + gq) * g.CS + (tap / R - halo) * g.TWp + tap % R - halo;
  }
  zero_staging(g, xs);  // ordered before the first staging by the barrier that precedes it
  for (int tile = blockIdx.x; tile < g.tiles; tile += gridDim.x) {
    const int row0 = tile * g.TH, rows = imin(g.TH, rows_total - row0), h0 = row0 % g.H;
    __syncthreads();  // the previous tile's shared memory is no longer read
    for (int m = threadIdx.x; m < kDcPixels; m += blockDim.x) {
      const int i = m / g.W, j = m - i * g.W, row = row0 + i, n = row / g.H, h = row - n * g.H;
      pix[m] = (i < rows ? slot_of(g, halo, h0, i) * g.TWp + j : halo * g.TWp) +
               g.col0;  // in the plane for every tap
      pix_off[m] = i < rows ? int64_t(n) * g.Cout * HW + int64_t(h) * g.W + j : -1;
      if (m % 4 == 0) quad_off[m / 4] = pix_off[m];
    }
    stage_input(g, halo, x, row0, rows, c0, xs, slot_off, slot_h);  // its first barrier orders pix_off
    // dy[k0 + k] over the tile's 128 pixels, zero past the tile and beyond K (they add nothing).
    if (g.vec_dy) {
      // Quads of 4 pixels of one image row (W % 4 == 0): 8 float4 loads in flight per thread,
      // one round for the whole tile.
      constexpr int kQuads = kDcN * kDcPixels / 4, kBatch = kQuads / kDcThreads;
      float4 v[kBatch];
      NL_UNROLL
      for (int u = 0; u < kBatch; ++u) {
        const int i = threadIdx.x + u * kDcThreads, k = i / (kDcPixels / 4), m = i % (kDcPixels / 4) * 4;
        const int64_t at = quad_off[m / 4];
        v[u] = at >= 0 && k0 + k < g.Cout
                   ? load_vec(reinterpret_cast<const float4*>(dy + at + int64_t(k0 + k) * HW))
                   : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      }
      NL_UNROLL
      for (int u = 0; u < kBatch; ++u) {
        const int i = threadIdx.x + u * kDcThreads, k = i / (kDcPixels / 4), m = i % (kDcPixels / 4) * 4;
        store_vec(reinterpret_cast<float4*>(dys + k * kDcLdDy + m), rounded_tf32(v[u]));
      }
    } else {
      // Thread = pixel, kDcStageBatch channels at a time.
      staged_copy(
          kDcN * kDcPixels,
          [&](int i) {
            const int64_t at = pix_off[i % kDcPixels];
            const int ko = k0 + i / kDcPixels;
            return at >= 0 && ko < g.Cout ? dy[at + int64_t(ko) * HW] : 0.0f;
          },
          [&](int i, float v) { dys[i / kDcPixels * kDcLdDy + i % kDcPixels] = rounded_tf32(v); });
    }
    __syncthreads();
    for (int p0 = 0; p0 < kDcPixels; p0 += 8) {
      const int pb0 = pix[p0 + tq], pb1 = pix[p0 + tq + 4];
      uint32_t a[2][4];
      NL_UNROLL
      for (int f = 0; f < 2; ++f) {
        const float* d = dys + (f * 16 + gq) * kDcLdDy + p0 + tq;
        a[f][0] = __float_as_uint(d[0]);
        a[f][1] = __float_as_uint(d[8 * kDcLdDy]);
        a[f][2] = __float_as_uint(d[4]);
        a[f][3] = __float_as_uint(d[8 * kDcLdDy + 4]);
      }
      auto frag_step = [&](auto full) {
        NL_UNROLL
        for (int q = 0; q < RS; ++q) {
          if (!decltype(full)::value && q >= frags) break;  // warp-uniform
          const float* xc = xs + xoff[q];
          const uint32_t b[2] = {__float_as_uint(xc[pb0]), __float_as_uint(xc[pb1])};
          mma_m16n8k8_tf32(acc[0][q], a[0], b, acc[0][q]);
          if (decltype(full)::value || two_halves) mma_m16n8k8_tf32(acc[1][q], a[1], b, acc[1][q]);
        }
      };
      // Every fragment in use (32 channels, K > 16: the network's layers but the stem) without
      // the run-time guards.
      if (all_frags)
        frag_step(std::true_type());
      else
        frag_step(std::false_type());
    }
  }
  // partial[b] holds dW's layout [K][C][R][S]; this block writes its (k, c) chunk, every element.
  float* out = partial + int64_t(blockIdx.x) * g.Cout * g.Cin * RS;
  NL_UNROLL
  for (int q = 0; q < RS; ++q) {
    if (q >= frags) break;
    NL_UNROLL
    for (int f = 0; f < 2; ++f)
      for (int e = 0; e < 4; ++e) {
        const int ko = k0 + f * 16 + gq + (e >= 2 ? 8 : 0), ci = c0 + fch[q] + 2 * tq + (e & 1);
        if (ko < g.Cout && ci < g.Cin) out[(int64_t(ko) * g.Cin + ci) * RS + ftap[q]] = acc[f][q][e];
      }
  }
}

// One name per instantiation, so launches, ptxas' registers and the SASS summary tell them apart.
__global__ void __launch_bounds__(kDcThreads, 1)
    conv3x3_direct_tf32_kernel(DirectConv g, const float* x, const float* w, const float* bias, float* y) {
  conv_direct<3, false>(g, x, w, bias, y);
}
__global__ void __launch_bounds__(kDcThreads, 1)
    conv1x1_direct_tf32_kernel(DirectConv g, const float* x, const float* w, const float* bias, float* y) {
  conv_direct<1, false>(g, x, w, bias, y);
}
__global__ void __launch_bounds__(kDcThreads, 1)
    conv3x3_direct_bwd_data_tf32_kernel(DirectConv g, const float* dy, const float* w, const float*,
                                        float* dx) {
  conv_direct<3, true>(g, dy, w, nullptr, dx);
}
__global__ void __launch_bounds__(kDcThreads, 1)
    conv1x1_direct_bwd_data_tf32_kernel(DirectConv g, const float* dy, const float* w, const float*,
                                        float* dx) {
  conv_direct<1, true>(g, dy, w, nullptr, dx);
}
__global__ void __launch_bounds__(kDcThreads, 1)
    conv3x3_direct_bwd_weight_tf32_kernel(DirectConv g, const float* x, const float* dy, float* partial) {
  conv_direct_bwd_weight<3>(g, x, dy, partial);
}
__global__ void __launch_bounds__(kDcThreads, 1)
    conv1x1_direct_bwd_weight_tf32_kernel(DirectConv g, const float* x, const float* dy, float* partial) {
  conv_direct_bwd_weight<1>(g, x, dy, partial);
}

// dw[i] = sum over b of partial[b][i], b in order (deterministic).
// A block reduces 32 consecutive outputs: its 8 warps each add one eighth of the splits in split
// order (coalesced rows of 128 bytes, kDcStageBatch loads in flight per lane), then warp 0 adds
// the 8 group sums in group order. The order depends on the shape only: deterministic.
constexpr int kReduceGroups = 8;
__global__ void __launch_bounds__(32 * kReduceGroups)
    conv_partials_reduce_kernel(int64_t n, int splits, const float* partial, float* dw) {
  NL_DYN_SHARED(float, group_sum);  // [kReduceGroups][32]
  const int j = threadIdx.x % 32, grp = threadIdx.x / 32;
  const int64_t i = int64_t(blockIdx.x) * 32 + j;
  const int per = (splits + kReduceGroups - 1) / kReduceGroups, z0 = grp * per, z1 = imin(splits, z0 + per);
  float s = 0.0f;
  for (int z = z0; z < z1; z += kDcStageBatch) {
    float v[kDcStageBatch];
    NL_UNROLL
    for (int u = 0; u < kDcStageBatch; ++u)
      v[u] = z + u < z1 && i < n ? partial[int64_t(z + u) * n + i] : 0.0f;
    NL_UNROLL
    for (int u = 0; u < kDcStageBatch; ++u)
      if (z + u < z1) s += v[u];
  }
  group_sum[grp * 32 + j] = s;
  __syncthreads();
  if (grp == 0 && i < n) {
    float t = group_sum[j];
    for (int k = 1; k < kReduceGroups; ++k) t += group_sum[k * 32 + j];
    dw[i] = t;
  }
}

namespace {
// plane_mod: the staged channel plane's padding, 8 (mod 16) for the forward's fragments, 4 (mod 8)
// for backward-weight's (the comment at kDcLdw).
DirectConv direct_geometry(const Conv2dParams& p, int64_t Cin, int64_t Cout, const float* in,
                           bool weight_layout) {
  DirectConv g;
  g.N = int(p.N), g.Cin = int(Cin), g.Cout = int(Cout), g.H = int(p.H), g.W = int(p.W);
  const int halo = int(p.R / 2), rows = g.N * g.H;
  g.TH = std::max(1, std::min(kDcPixels / g.W, rows));
  g.tiles = int(ceil_div(rows, g.TH));
  g.vec = g.W % 4 == 0 && reinterpret_cast<uintptr_t>(in) % 16 == 0;
  g.col0 = g.vec && halo ? 4 : halo;
  g.TWp = g.vec ? int(ceil_div(g.col0 + g.W + halo, 4) * 4) : g.W + 2 * halo;
  // The most images a tile's rows touch; the first rows of tiles repeat with period H.
  int segs = 1;
  for (int t = 0; t < std::min(g.tiles, g.H); ++t)
    segs = std::max(segs, (t * g.TH % g.H + g.TH - 1) / g.H + 1);
  g.slots = g.TH + 2 * halo * segs;
  const int plane = g.slots * g.TWp;
  g.CS = weight_layout ? plane + (12 - plane % 8) % 8 : plane + (24 - plane % 16) % 16;
  g.TWp_div = FastDiv(g.TWp);
  g.quads_div = FastDiv(g.slots * (g.W / 4)), g.row_quads_div = FastDiv(g.W / 4);
  return g;
}

size_t direct_fwd_smem(const DirectConv& g, int R) {
  return sizeof(float) * (size_t(R * R) * kDcC * kDcLdw + size_t(kDcC) * g.CS) +
         (sizeof(int64_t) + sizeof(int)) * g.slots;
}
size_t direct_bwd_weight_smem(const DirectConv& g) {
  return sizeof(float) * (size_t(kDcN) * kDcLdDy + size_t(kDcC) * g.CS) +
         (sizeof(int64_t) + sizeof(int)) * (kDcPixels + g.slots) + sizeof(int64_t) * (kDcPixels / 4);
}

// Whether the direct kernels cover a convolution (Conv2dParams::algo, conv_algo()), its staging
// included: short images stack many per tile, each with its halo rows, and a tile that would
// not fit in the device's shared memory goes to the implicit GEMM instead.
bool direct_eligible(const Conv2dParams& p) {
  if (!(p.tf32 && p.algo == ConvAlgo::Auto && p.N > 0 && p.C > 0 && p.K > 0 && p.stride_h == 1 &&
        p.stride_w == 1 && p.R == p.S && (p.R == 1 || p.R == 3) && p.pad_h == p.R / 2 && p.pad_w == p.R / 2 &&
        p.W >= 4 && p.W <= 32 && p.N * p.H < (int64_t(1) << 30) && p.C < (int64_t(1) << 20) &&
        p.K < (int64_t(1) << 20)))
    return false;
  // The float4 layout's rows are the longer: its geometry bounds both.
  alignas(16) static const float aligned = 0.0f;
  const size_t most = device_limits().smem_optin;
  return direct_fwd_smem(direct_geometry(p, p.C, p.K, &aligned, false), int(p.R)) <= most &&
         direct_fwd_smem(direct_geometry(p, p.K, p.C, &aligned, false), int(p.R)) <= most &&
         direct_bwd_weight_smem(direct_geometry(p, p.C, p.K, &aligned, true)) <= most;
}

// Persistent blocks: as many as fit on the device at once (by shared memory), at most one per tile.
unsigned resident_blocks(size_t smem, int tiles) {
  const DeviceLimits& d = device_limits();
  const int64_t per_sm =
      std::clamp<int64_t>(int64_t((d.smem_optin + 1024) / (smem + 1024)), 1, 2048 / kDcThreads);
  return unsigned(std::clamp<int64_t>(per_sm * d.sms, 1, tiles));
}

template <typename Kernel>
void allow_smem(Kernel kernel, size_t smem) {
  NL_CHECK(smem <= device_limits().smem_optin, "conv2d on CUDA: the direct kernel needs ", smem,
           " bytes of shared memory, the device allows ", device_limits().smem_optin);
  if (smem > (48 << 10))
    NL_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
}

// Forward (Cin = C, Cout = K, input x) or backward-data (Cin = K, Cout = C, input dy).
#define NL_LAUNCH_DIRECT(kernel, p, Cin, Cout, in, w, bias, out)                        \
  do {                                                                                  \
    const DirectConv g_ = direct_geometry(p, Cin, Cout, in, false);                     \
    const size_t smem_ = direct_fwd_smem(g_, int(p.R));                                 \
    allow_smem(kernel, smem_);                                                          \
    const dim3 grid_(resident_blocks(smem_, g_.tiles), unsigned(ceil_div(Cout, kDcN))); \
    NL_LAUNCH(kernel, grid_, kDcThreads, smem_, g_, in, w, bias, out);                  \
  } while (0)

void direct_fwd(const Conv2dParams& p, const float* x, const float* w, const float* bias, float* y) {
  if (p.R == 3)
    NL_LAUNCH_DIRECT(conv3x3_direct_tf32_kernel, p, p.C, p.K, x, w, bias, y);
  else
    NL_LAUNCH_DIRECT(conv1x1_direct_tf32_kernel, p, p.C, p.K, x, w, bias, y);
}

void direct_bwd_data(const Conv2dParams& p, const float* w, const float* dy, float* dx) {
  const float* none = nullptr;
  if (p.R == 3)
    NL_LAUNCH_DIRECT(conv3x3_direct_bwd_data_tf32_kernel, p, p.K, p.C, dy, w, none, dx);
  else
    NL_LAUNCH_DIRECT(conv1x1_direct_bwd_data_tf32_kernel, p, p.K, p.C, dy, w, none, dx);
}
#undef NL_LAUNCH_DIRECT

void direct_bwd_weight(const Conv2dParams& p, const float* x, const float* dy, float* dw) {
  DirectConv g = direct_geometry(p, p.C, p.K, x, true);
  g.vec_dy = p.W % 4 == 0 && reinterpret_cast<uintptr_t>(dy) % 16 == 0;
  const size_t smem = direct_bwd_weight_smem(g);
  // The partition into splits is a function of the shape only: the sums' order, and so the
  // result, is the same on every device.
  const int64_t splits = std::min<int64_t>(g.tiles, kTargetBlocks), n = p.K * p.C * p.R * p.S;
  Scratch partial(sizeof(float) * size_t(splits * n));
  const dim3 grid(unsigned(splits), unsigned(ceil_div(p.K, kDcN) * ceil_div(p.C, kDcC)));
  if (p.R == 3) {
    allow_smem(conv3x3_direct_bwd_weight_tf32_kernel, smem);
    NL_LAUNCH(conv3x3_direct_bwd_weight_tf32_kernel, grid, kDcThreads, smem, g, x, dy, partial.f32());
  } else {
    allow_smem(conv1x1_direct_bwd_weight_tf32_kernel, smem);
    NL_LAUNCH(conv1x1_direct_bwd_weight_tf32_kernel, grid, kDcThreads, smem, g, x, dy, partial.f32());
  }
  NL_LAUNCH(conv_partials_reduce_kernel, unsigned(ceil_div(n, 32)), 32 * kReduceGroups,
            sizeof(float) * 32 * kReduceGroups, n, int(splits), partial.f32(), dw);
}
}  // namespace

namespace {
// A convolution's multiply-adds (2 FLOPs each) and the bytes of x, w and y, each moved once.
[[maybe_unused]] double conv_flops(const Conv2dParams& p) {
  return 2.0 * p.N * p.K * p.P * p.Q * p.C * p.R * p.S;
}
[[maybe_unused]] double conv_bytes(const Conv2dParams& p) {
  return 4.0 * (p.N * p.C * p.H * p.W + p.K * p.C * p.R * p.S + p.N * p.K * p.P * p.Q);
}
}  // namespace

void conv2d_fwd(const Conv2dParams& p, const float* x, const float* w, const float* bias, float* y) {
  NL_MODEL_OP("conv2d_fwd", conv_flops(p), conv_bytes(p));
  if (direct_eligible(p)) return direct_fwd(p, x, w, bias, y);
  run_gemm(ConvFwdOp{p, ConvDivs(p), x, w, bias, y}, p.K, p.N * p.P * p.Q, p.C * p.R * p.S);
}

void conv2d_bwd(const Conv2dParams& p, const float* x, const float* w, const float* dy, float* dx, float* dw,
                float* dbias) {
  if (dx) {
    NL_MODEL_OP("conv2d_bwd_data", conv_flops(p), conv_bytes(p));
    if (direct_eligible(p)) {
      direct_bwd_data(p, w, dy, dx);
    } else {
      run_gemm(ConvBwdDataOp{p, ConvDivs(p), w, dy, dx}, p.C, p.N * p.H * p.W, p.K * p.R * p.S);
    }
  }
  if (dw) {
    NL_MODEL_OP("conv2d_bwd_weight", conv_flops(p), conv_bytes(p));
    if (direct_eligible(p))
      direct_bwd_weight(p, x, dy, dw);
    else
      run_gemm(ConvBwdWeightOp{p, ConvDivs(p), x, dy, dw}, p.K, p.C * p.R * p.S, p.N * p.P * p.Q);
  }
  if (dbias && p.K > 0) {
    NL_MODEL_OP("conv2d_bwd_bias", p.N * p.K * p.P * p.Q, 4.0 * (p.N * p.K * p.P * p.Q + p.K));
    NL_LAUNCH(conv_bias_grad_kernel, unsigned(p.K), 256, 32 * sizeof(float), p, dy, dbias);
  }
}

// Linear is a 1x1 convolution over N = M rows of a 1x1 image: x [M, K] is NCHW with
// (N, C, H, W) = (M, K, 1, 1) and y [M, N] is (M, N, 1, 1).
namespace {
Conv2dParams as_conv(const LinearParams& l) {
  return Conv2dParams{l.M, l.K, 1, 1, l.N, 1, 1, 1, 1, 0, 0, 1, 1};
}
}  // namespace

void linear_fwd(const LinearParams& l, const float* x, const float* w, const float* bias, float* y) {
  NL_MODEL_OP("linear", conv_flops(as_conv(l)), conv_bytes(as_conv(l)));
  conv2d_fwd(as_conv(l), x, w, bias, y);
}
void linear_bwd(const LinearParams& l, const float* x, const float* w, const float* dy, float* dx, float* dw,
                float* dbias) {
  NL_MODEL_OP("linear_bwd", 2 * conv_flops(as_conv(l)), 4.0 * (2 * l.M * l.K + 2 * l.N * l.K + l.M * l.N));
  conv2d_bwd(as_conv(l), x, w, dy, dx, dw, dbias);
}

// ---------------------------------------------------------------------------------- registration

void register_conv_kernels() {
  conv2d_fwd_stub.set(DeviceType::CUDA, &conv2d_fwd);
  conv2d_bwd_stub.set(DeviceType::CUDA, &conv2d_bwd);
  linear_fwd_stub.set(DeviceType::CUDA, &linear_fwd);
  linear_bwd_stub.set(DeviceType::CUDA, &linear_bwd);
}

}  // namespace nl::cuda
