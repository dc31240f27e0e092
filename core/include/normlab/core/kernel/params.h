#pragma once
// Plain parameter structs shared by every backend: kernels see these and raw pointers, never a
// Tensor, so the same signatures serve the Eigen kernels and the CUDA launchers.
#include <cstdint>

namespace nl {

// Which CUDA convolution kernels run (nl::conv_algo()). Auto: the direct tensor-core kernels for the
// shapes they cover (TF32, 3x3 or 1x1, stride 1, same padding, images at most 32 wide), the
// implicit GEMM for the rest; Gemm: the implicit GEMM always (for comparisons).
enum class ConvAlgo : uint8_t { Auto, Gemm };

struct Conv2dParams {
  int64_t N, C, H, W;  // input
  int64_t K, R, S;     // K output channels, R x S filter
  int64_t stride_h, stride_w, pad_h, pad_w;
  int64_t P, Q;  // output height and width
  // CUDA: multiply on TF32 tensor cores (inputs rounded to a 10-bit mantissa, FP32 sums), as
  // cuDNN does under PyTorch's default allow_tf32; the CPU computes in FP32 regardless.
  bool tf32 = false;
  ConvAlgo algo = ConvAlgo::Auto;
};

// Which kernels a norm runs on (nl::NormSpec::stats): BatchNorm's per-channel sets, GroupNorm's
// per-(sample, group) sets, or LayerNorm's rows of the last dimension.
enum class NormKind : uint8_t { Batch, Group, Row };

// Statistics over sets of elements, then y = gamma * (x - mean) * rstd + beta.
// BatchNorm: sets are (N, HxW) per channel. GroupNorm: (C/G, HxW) per (sample, group).
// LayerNorm over the last dimension: N rows of C elements, with HxW = 1 and G = 1.
struct NormParams {
  NormKind kind = NormKind::Group;
  int64_t N = 0, C = 0, HxW = 1, G = 1;
  float eps = 1e-5f;
  float momentum = 0.1f;  // BatchNorm running statistics
  // Subtract the set's mean (true) or scale by its root mean square alone (false: RMSNorm; the
  // saved mean is then 0). GroupNorm kernels only.
  bool center = true;
  bool training = true;  // BatchNorm: batch statistics (true) or running statistics (false)
  // Batch Renormalization (Ioffe 2017), BatchNorm kernels in training: xhat = r * (x - mean) * rstd
  // + d with r = clip(sigma_B / sigma_run, 1/r_max, r_max), d = clip((mean - running_mean) /
  // sigma_run, -d_max, d_max), sigma = sqrt(var + eps), from the running statistics before this
  // call updates them; r and d are constants to the gradient.
  bool renorm = false;
  float r_max = 3.0f, d_max = 5.0f;
  // The paper's warm-up: over the first renorm_warmup training steps the clips relax linearly
  // from (1, 0), plain BatchNorm, to (r_max, d_max); the step count is read from the device
  // (NormFwdArgs::renorm_step), so no host round trip. 0: the full clips from the first step.
  int64_t renorm_warmup = 0;
  // The fused epilogue of BatchNorm and GroupNorm forward: y = residual + dropout(act(norm(x))),
  // each part optional, act ReLU or (GroupNorm kernels) FRN's TLU max(z, tau[c]) with a learned
  // per-channel tau. Dropout draws element i of the [N, C, HxW] tensor as DropoutParams does.
  bool relu = false;
  bool tlu = false;
  float dropout = 0.0f;           // probability of zeroing; 0: no dropout
  uint64_t seed = 0, offset = 0;  // the dropout draw's Philox stream
  // Element 0 of this call is element index_base of the draw: a call over one part of a tensor
  // (Ghost BatchNorm's micro-batches) draws the mask the whole tensor would.
  int64_t index_base = 0;
  bool has_mask() const { return relu || tlu || dropout > 0.0f; }
};

// Batch Renorm's warm-up fraction in [0, 1] at the step *renorm_step (1 without a warm-up): the
// clips are 1 + (r_max - 1) * f and d_max * f. Host and device share it.
#if defined(__CUDACC__)
__host__ __device__
#endif
    inline double
    renorm_warmup_fraction(const NormParams& p, const float* renorm_step) {
  if (p.renorm_warmup <= 0 || !renorm_step) return 1.0;
  const double f = static_cast<double>(*renorm_step) / static_cast<double>(p.renorm_warmup);
  return f < 1.0 ? f : 1.0;
}

struct Pool2dParams {
  int64_t N, C, H, W;
  int64_t kernel, stride;
  int64_t P, Q;
};

struct LinearParams {
  int64_t M, K, N;  // x [M, K], w [N, K], y [M, N]
};

struct DropoutParams {
  int64_t n;
  float p;                // probability of zeroing an element
  uint64_t seed, offset;  // Philox stream of this call
};

// Up to kMaxTensors float tensors checked in one launch (the NaN/Inf guard over all parameters
// and gradients of a network).
struct NonfiniteParams {
  static constexpr int kMaxTensors = 64;
  int count;  // tensors in this call
  const float* x[kMaxTensors];
  int64_t n[kMaxTensors];
};

struct SgdParams {
  int64_t n;
  float lr, momentum, dampening, weight_decay;
  bool nesterov;
  bool first_step;  // the momentum buffer starts as the first update (PyTorch semantics)
};

struct AdamParams {
  int64_t n;
  float lr, beta1, beta2, eps, weight_decay;
  bool decoupled;                            // AdamW
  float bias_correction1, bias_correction2;  // 1 - beta^t, computed once per step on the host
};

// For copying a strided view into dense memory (up to kMaxDims dimensions).
inline constexpr int kMaxDims = 8;
struct StridedCopyParams {
  int64_t ndim;
  int64_t shape[kMaxDims];
  int64_t src_strides[kMaxDims];
  int64_t numel;
};

}  // namespace nl
