#pragma once
// Functional ops with autograd. Each checks its inputs (shape, dtype, device) with an error that
// names the op and the offending shape, dispatches to the input device's kernel, and records a
// tape node when an input requires grad. Activations are NCHW float32.
#include <cstdint>
#include <optional>
#include <vector>

#include "normlab/core/rng.h"
#include "normlab/core/tensor.h"

namespace nl {

// Elementwise (same shapes, no broadcasting) and reductions.
Tensor add(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor sum(const Tensor& x);  // all elements, 0-dim result
// The number of NaN and Inf elements of each tensor (undefined tensors count 0), with one kernel
// launch and one copy to the host per device and 64 tensors: cheap enough to check every
// parameter and gradient of a network after every step. No gradient.
std::vector<int64_t> nonfinite_counts(const std::vector<Tensor>& xs);
Tensor relu(const Tensor& x);
// Zeroes each element with probability p and scales the rest by 1/(1-p) when training;
// identity otherwise. Draws from gen (the default generator when null).
Tensor dropout(const Tensor& x, float p, bool training, Generator* gen = nullptr);

// x [N, C, H, W], w [K, C, R, S], bias [K] or undefined.
Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias = Tensor(), int64_t stride = 1,
              int64_t padding = 0);

// What follows a norm in a conv block, fused into the norm's single pass over memory:
//   out = residual + dropout(act(norm(x))), act ReLU, or FRN's TLU max(z, tau) when tau is given
// Forward writes out and a one-byte-per-element mask; backward reads x, dy and the mask once
// more and gives dx, dgamma, dbeta, and dy as the residual's gradient. The result equals the
// unfused ops bit for bit, dropout mask included (same generator, same draw).
struct NormEpilogue {
  bool relu = false;
  float dropout = 0.0f;      // applied as given: pass 0 in eval mode
  Generator* gen = nullptr;  // dropout's generator; null: the default generator
  Tensor residual;           // same shape as x; undefined: no residual add
  // TLU (Singh & Krishnan 2019): act = max(z, tau[c]) with a learned [C] threshold, instead of
  // ReLU; per-sample (GroupNorm-kernel) norms only. Gets a gradient like gamma and beta.
  Tensor tau;
};

// x [N, C, H, W] (or [N, C]); gamma/beta [C] or undefined; running_mean/var [C] or undefined
// (then training must be true). In training, uses batch statistics and updates the running
// statistics with momentum (unbiased variance, as PyTorch); in eval, uses the running statistics.
Tensor batch_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& running_mean,
                  const Tensor& running_var, bool training, float momentum = 0.1f, float eps = 1e-5f,
                  const NormEpilogue& epilogue = {});
// x [N, C, ...]; groups divides C; gamma/beta [C]. groups = 1 is LayerNorm over (C, H, W) with a
// per-channel affine, groups = C is InstanceNorm.
Tensor group_norm(const Tensor& x, int64_t groups, const Tensor& gamma, const Tensor& beta, float eps = 1e-5f,
                  const NormEpilogue& epilogue = {});
// Normalises over the last dimension D; gamma/beta [D] or undefined.
Tensor layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps = 1e-5f);

// Sums float arrays in host memory over the processes of a data-parallel job, in place; every
// process calls with the same n in the same order. nl::dist's process groups are one; SyncBatchNorm
// (NormSpec::sync) exchanges its per-channel statistics through it. rank() and size() place a
// process's slot in a gathered buffer (a sum of buffers that are zero outside their own slot).
class CrossProcessSum {
 public:
  virtual ~CrossProcessSum() = default;
  virtual void sum(float* host, int64_t n) = 0;
  virtual int rank() const { return 0; }
  virtual int size() const { return 1; }
};

// A normalization as data: which elements share statistics, whether the mean is subtracted, and
// its constants. batch_norm, group_norm and layer_norm are its named cases; nl::normalize runs any.
struct NormSpec {
  enum class Stats {
    PerChannel,  // over (N, H, W) per channel: BatchNorm (running statistics, momentum)
    PerGroup,    // over (C/G, H, W) per (sample, group): GroupNorm; G = 1 LayerNorm over (C,H,W), G = C
                 // InstanceNorm (groups = 0: one group per channel, whatever C is)
    PerRow,      // over the last dimension: the transformers' LayerNorm
  };
  Stats stats = Stats::PerGroup;
  int64_t groups = 1;  // PerGroup
  bool center = true;  // subtract the mean; false: divide by the root mean square (RMSNorm; PerGroup only)
  float eps = 1e-5f;
  float momentum = 0.1f;  // PerChannel running statistics
  // PerChannel, training: statistics over micro-batches of ghost_batch samples (Ghost BatchNorm,
  // Hoffer et al. 2017: what a data-parallel worker with ghost_batch samples sees; a smaller last
  // micro-batch takes the remainder); the running statistics take one update per micro-batch, in
  // order. 0: the whole batch.
  int64_t ghost_batch = 0;
  // PerChannel, training: Batch Renormalization (Ioffe 2017), r and d clipped to r_max, d_max
  // (NormParams::renorm); eval as BatchNorm.
  bool renorm = false;
  float r_max = 3.0f, d_max = 5.0f;
  // The paper's warm-up: the clips relax linearly from (1, 0) to (r_max, d_max) over this many
  // training steps, counted in normalize()'s `steps` tensor. 0: the full clips from the start.
  int64_t renorm_warmup = 0;
  // PerGroup: the activation is TLU with the epilogue's tau (FRN); a ReLU cannot follow fused.
  bool tlu = false;
  // PerChannel, training: SyncBatchNorm, statistics over the batches of every process of a
  // data-parallel job, summed through this (not owned; null: this process's batch alone). The
  // running statistics take the global ones; dgamma/dbeta stay this process's (the gradient
  // all-reduce sums them). Not with ghost_batch or renorm.
  CrossProcessSum* sync = nullptr;

  static NormSpec batch(float momentum = 0.1f, float eps = 1e-5f) {
    return {Stats::PerChannel, 1, true, eps, momentum};
  }
  static NormSpec ghost_batch_norm(int64_t ghost_batch, float momentum = 0.1f, float eps = 1e-5f) {
    NormSpec s = batch(momentum, eps);
    s.ghost_batch = ghost_batch;
    return s;
  }
  static NormSpec batch_renorm(float r_max = 3.0f, float d_max = 5.0f, float momentum = 0.1f,
                               float eps = 1e-5f) {
    NormSpec s = batch(momentum, eps);
    s.renorm = true, s.r_max = r_max, s.d_max = d_max;
    return s;
  }
  static NormSpec group(int64_t groups, float eps = 1e-5f) { return {Stats::PerGroup, groups, true, eps}; }
  // RMSNorm over (C, H, W) per sample: x / sqrt(mean(x^2) + eps), then the per-channel affine.
  static NormSpec rms(float eps = 1e-5f) { return {Stats::PerGroup, 1, false, eps}; }
  static NormSpec row(float eps = 1e-5f) { return {Stats::PerRow, 1, true, eps}; }
  static NormSpec instance(float eps = 1e-5f) { return group(0, eps); }
  // Filter Response Normalization (Singh & Krishnan 2019): x / sqrt(mean over (H, W) of x^2 + eps)
  // per (sample, channel), the per-channel affine, then TLU max(., tau) as the activation (the
  // caller's NormEpilogue::tau). Its paper's eps for spatial sizes above 1x1.
  static NormSpec frn(float eps = 1e-6f) {
    NormSpec s = group(0, eps);
    s.center = false, s.tlu = true;
    return s;
  }
};

// Any NormSpec: PerChannel takes running_mean/var and training as batch_norm; PerGroup and
// PerRow ignore them. The epilogue fuses as in batch_norm/group_norm (not for PerRow).
// steps: Batch Renorm's warm-up counter, a [1] float tensor on x's device holding the training
// steps taken so far; read on the device and incremented by each training call (required when
// spec.renorm_warmup > 0).
Tensor normalize(const Tensor& x, const NormSpec& spec, const Tensor& gamma, const Tensor& beta,
                 const Tensor& running_mean = Tensor(), const Tensor& running_var = Tensor(),
                 bool training = true, const NormEpilogue& epilogue = {}, const Tensor& steps = Tensor());

// kernel x kernel windows with the given stride (PyTorch's floor mode, no padding).
Tensor max_pool2d(const Tensor& x, int64_t kernel = 2, int64_t stride = 2);
Tensor global_avg_pool(const Tensor& x);  // [N, C, H, W] -> [N, C, 1, 1]

// x [M, K], w [N, K], bias [N] or undefined -> [M, N].
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias = Tensor());

// Over the last dimension of x [M, C].
Tensor log_softmax(const Tensor& x);
// Mean over M of -logp[i, target[i]]; target is int32 [M] with values in [0, C).
Tensor nll_loss(const Tensor& logp, const Tensor& target);
Tensor cross_entropy(const Tensor& logits, const Tensor& target);

// Optimizer updates, in place on the parameter's device, with torch.optim's semantics (nn::SGD
// and nn::Adam are built on them). No autograd: parameters are leaves.
struct SgdOptions {
  float lr = 0.01f;
  float momentum = 0.0f;
  float dampening = 0.0f;
  float weight_decay = 0.0f;  // coupled: added to the gradient, as torch.optim.SGD
  bool nesterov = false;
};
// momentum_buf: a contiguous tensor like param, or undefined when o.momentum == 0. first: the
// buffer holds nothing yet and starts as this step's update (PyTorch), so it may be uninitialised.
void sgd_step_(const Tensor& param, const Tensor& grad, const Tensor& momentum_buf, const SgdOptions& o,
               bool first);

struct AdamOptions {
  float lr = 1e-3f;
  float beta1 = 0.9f, beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;
  bool decoupled = false;  // true: AdamW (decay the weights directly), false: Adam (L2 in grad)
};
// m, v: contiguous tensors like param, zero before the first step; step counts from 1 (bias
// correction 1 - beta^step).
void adam_step_(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v,
                const AdamOptions& o, int64_t step);

}  // namespace nl
