#pragma once
// Every kernel entry point, as a dispatch stub with one function pointer per device.
// Conventions for all kernels: inputs are dense (contiguous) float32 unless said otherwise;
// outputs are overwritten (=), never accumulated into (+=), so callers need not zero them;
// optional outputs and inputs (bias, gamma, beta, dx, dw, ...) may be null and are then skipped
// (a null gamma means 1, a null beta means 0).
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "normlab/core/kernel/params.h"
#include "normlab/core/dispatch.h"

#define NL_DECLARE_STUB(name, ...) \
  using name##_fn = __VA_ARGS__;   \
  extern ::nl::DispatchStub<name##_fn> name##_stub

namespace nl {

// Memory: dst/src on their own devices; the stub runs on the non-CPU one of the two.
NL_DECLARE_STUB(copy_bytes,
                void(void* dst, const void* src, size_t nbytes, Device dst_device, Device src_device));
// Gathers a strided view of 4-byte elements into dense memory.
NL_DECLARE_STUB(copy_strided, void(const StridedCopyParams& p, const uint32_t* src, uint32_t* dst));
NL_DECLARE_STUB(fill, void(int64_t n, float value, float* y));
// The device's native stream (cudaStream_t) that this thread's kernels and copies are ordered on,
// for engines that share the device with normlab (NCCL): they order their work after it with an
// event instead of synchronising the whole device.
NL_DECLARE_STUB(native_stream, void*());

// One kernel launch seen by the launch trace: the kernel, the op it belongs to (with the op's
// FLOPs and the least DRAM traffic any implementation needs, counted on its first launch), its
// configuration, the host's clock when the launch call began and ended, and the launch's time on
// the device, all in microseconds from the start of the trace. Device start and end come from
// events recorded around the launch on its stream.
struct LaunchRecord {
  std::string kernel, op;
  double op_flops = 0, op_min_bytes = 0;
  int op_launch = 0;  // 0 for the op's first launch, 1 for its second, ...
  unsigned grid[3] = {1, 1, 1}, block[3] = {1, 1, 1};
  size_t shared_bytes = 0;
  double host_begin_us = 0, host_end_us = 0;
  double device_begin_us = 0, device_end_us = 0;
};
// While a trace is on, every kernel this thread launches is recorded (bench_train_step
// --profile). launch_trace_end waits for the device and returns the launches in order.
NL_DECLARE_STUB(launch_trace_begin, void());
NL_DECLARE_STUB(launch_trace_end, std::vector<LaunchRecord>());

// Elementwise and reductions.
NL_DECLARE_STUB(add_fwd, void(int64_t n, const float* a, const float* b, float* y));
NL_DECLARE_STUB(mul_fwd, void(int64_t n, const float* a, const float* b, float* y));
NL_DECLARE_STUB(sum_fwd, void(int64_t n, const float* x, float* y));    // y[0] = sum(x)
NL_DECLARE_STUB(sum_bwd, void(int64_t n, const float* dy, float* dx));  // dx[i] = dy[0]
// counts[t] = number of NaN and Inf elements of tensor t (counts on the tensors' device).
NL_DECLARE_STUB(nonfinite_count, void(const NonfiniteParams& p, int32_t* counts));
NL_DECLARE_STUB(relu_fwd, void(int64_t n, const float* x, float* y));
// Uses the output y (not x) for the mask, so x need not be kept alive.
NL_DECLARE_STUB(relu_bwd, void(int64_t n, const float* y, const float* dy, float* dx));
// The mask is recomputed from (seed, offset) in backward instead of being stored.
NL_DECLARE_STUB(dropout_fwd, void(const DropoutParams& p, const float* x, float* y));
NL_DECLARE_STUB(dropout_bwd, void(const DropoutParams& p, const float* dy, float* dx));

// Convolution, NCHW activations and KCRS weights.
NL_DECLARE_STUB(conv2d_fwd,
                void(const Conv2dParams& p, const float* x, const float* w, const float* bias, float* y));
NL_DECLARE_STUB(conv2d_bwd, void(const Conv2dParams& p, const float* x, const float* w, const float* dy,
                                 float* dx, float* dw, float* dbias));

// Normalisation family: one forward and one backward entry; p.kind picks the family's kernels
// (Batch, Group, Row) and the other NormParams flags the variant. mean/rstd are saved per set:
// [C] for Batch, [N, G] for Group, [N] for Row (p.N rows of p.C elements, per-element gamma/beta
// [C]). Batch in training updates running_mean/var in place (the one documented +=-like side
// effect); in eval it reads them and saves them as mean/rstd. Batch Renorm (p.renorm, training):
// forward writes renorm = [r (C), d (C)] and backward reads it; mean/rstd are the batch's own.
//
// Batch and Group fuse the epilogue of NormParams (ReLU or TLU, dropout, residual add; residual
// may be null). When p.has_mask(), forward writes one byte per element, mask[i] = 1 where output
// i passed the activation and dropout, 2 where TLU clamped it to tau and dropout kept it, else 0,
// and backward reads it: dy of the fused output reaches the norm as (mask == 1) * dy /
// (1 - dropout), and dtau[c] sums (mask == 2) * dy / (1 - dropout). The residual's own gradient
// is dy itself. tau: [C] when p.tlu (Group only), else null.
//
// SyncBatchNorm's split phases (Batch, training; core/src/ops/norm.cpp): forward with y null
// computes the statistics only (mean, rstd; running statistics and renorm if given), one read of
// x; backward with dx null computes dgamma = sum(g * xhat) and dbeta = sum(g) only, one read of
// x, dy and the mask; backward with dx_terms = [2, C], the every-process (sum(g), sum(g * xhat))
// divided by the every-process count, writes dx = gamma * rstd * (g - t0 - xhat * t1) from them
// in one pass, without sums of its own (dgamma, dbeta untouched).
struct NormFwdArgs {
  const float* x = nullptr;
  const float* gamma = nullptr;
  const float* beta = nullptr;
  const float* tau = nullptr;
  const float* residual = nullptr;
  float* running_mean = nullptr;  // Batch
  float* running_var = nullptr;
  float* y = nullptr;
  float* mean = nullptr;
  float* rstd = nullptr;
  float* renorm = nullptr;             // Batch Renorm
  const float* renorm_step = nullptr;  // Batch Renorm's warm-up: training steps so far, one float
  uint8_t* mask = nullptr;
};
struct NormBwdArgs {
  const float* x = nullptr;
  const float* dy = nullptr;
  const float* gamma = nullptr;
  const float* mean = nullptr;
  const float* rstd = nullptr;
  const float* renorm = nullptr;
  const uint8_t* mask = nullptr;
  float* dx = nullptr;
  float* dgamma = nullptr;
  float* dbeta = nullptr;
  float* dtau = nullptr;
  const float* dx_terms = nullptr;  // Batch: [2, C], see above
};
NL_DECLARE_STUB(norm_fwd, void(const NormParams& p, const NormFwdArgs& a));
NL_DECLARE_STUB(norm_bwd, void(const NormParams& p, const NormBwdArgs& a));

// Pooling. argmax holds, per output, the flat index of the winning input within its H x W plane.
NL_DECLARE_STUB(max_pool2d_fwd, void(const Pool2dParams& p, const float* x, float* y, int32_t* argmax));
NL_DECLARE_STUB(max_pool2d_bwd,
                void(const Pool2dParams& p, const float* dy, const int32_t* argmax, float* dx));
NL_DECLARE_STUB(global_avg_pool_fwd, void(int64_t NC, int64_t HxW, const float* x, float* y));
NL_DECLARE_STUB(global_avg_pool_bwd, void(int64_t NC, int64_t HxW, const float* dy, float* dx));

// Linear: y = x w^T + b with w [N, K] (PyTorch's layout).
NL_DECLARE_STUB(linear_fwd,
                void(const LinearParams& p, const float* x, const float* w, const float* bias, float* y));
NL_DECLARE_STUB(linear_bwd, void(const LinearParams& p, const float* x, const float* w, const float* dy,
                                 float* dx, float* dw, float* dbias));

// Losses over M rows of C classes.
NL_DECLARE_STUB(log_softmax_fwd, void(int64_t M, int64_t C, const float* x, float* y));
NL_DECLARE_STUB(log_softmax_bwd, void(int64_t M, int64_t C, const float* y, const float* dy, float* dx));
// loss[0] = -mean_i logp[i, target[i]]. Targets come from user data and are validated by the
// kernel, without a host round trip: the CPU kernel throws; the CUDA kernel makes the loss NaN and
// records the first bad target on the device, and the next synchronisation (any copy to the
// host, e.g. loss.item()) throws the same message, as PyTorch's device-side assertions surface.
// The backward never indexes with an invalid target.
NL_DECLARE_STUB(nll_loss_fwd,
                void(int64_t M, int64_t C, const float* logp, const int32_t* target, float* loss));
NL_DECLARE_STUB(nll_loss_bwd,
                void(int64_t M, int64_t C, const int32_t* target, const float* dloss, float* dlogp));

// Optimizer: one in-place SGD step (param and momentum_buf updated in place).
NL_DECLARE_STUB(sgd_step, void(const SgdParams& p, float* param, const float* grad, float* momentum_buf));
NL_DECLARE_STUB(adam_step, void(const AdamParams& p, float* param, const float* grad, float* m, float* v));

// What a stub call costs, for the CPU op profile (OpCost in dispatch.h): FLOPs of the arithmetic
// that matters (convolutions, linear layers; norms about 8 a element) and the least bytes any
// implementation moves (each input read once, each output written once).
inline OpCost op_cost(const Conv2dParams& p, const float*, const float*, const float*, float*) {
  const double out = double(p.N * p.K * p.P * p.Q), in = double(p.N * p.C * p.H * p.W),
               w = double(p.K * p.C * p.R * p.S);
  return {2.0 * out * double(p.C * p.R * p.S), 4.0 * (in + w + out), {p.N, p.C, p.H, p.W, p.K}};
}
inline OpCost op_cost(const Conv2dParams& p, const float*, const float*, const float*, float* dx, float* dw,
                      float*) {
  const double out = double(p.N * p.K * p.P * p.Q), in = double(p.N * p.C * p.H * p.W),
               w = double(p.K * p.C * p.R * p.S), one = 2.0 * out * double(p.C * p.R * p.S);
  return {one * ((dx ? 1 : 0) + (dw ? 1 : 0)),
          4.0 * (in + w + out + (dx ? in : 0) + (dw ? w : 0)),
          {p.N, p.C, p.H, p.W, p.K}};
}
inline OpCost op_cost(const LinearParams& p, const float*, const float*, const float*, float*) {
  return {
      2.0 * double(p.M * p.K * p.N), 4.0 * double(p.M * p.K + p.N * p.K + p.M * p.N), {p.M, p.K, 1, 1, p.N}};
}
inline OpCost op_cost(const NormParams& p, const NormFwdArgs& a) {
  const double n = double(p.N * p.C * p.HxW);
  return {8.0 * n, 4.0 * n * (a.residual ? 3 : 2) + (a.mask ? n : 0), {p.N, p.C, p.HxW, 1, 0}};
}
inline OpCost op_cost(const NormParams& p, const NormBwdArgs& a) {
  const double n = double(p.N * p.C * p.HxW);
  return {8.0 * n, 4.0 * n * (a.dx ? 3 : 2) + (a.mask ? n : 0), {p.N, p.C, p.HxW, 1, 0}};
}
inline OpCost op_cost(const Pool2dParams& p, const float*, float*, int32_t*) {
  const double in = double(p.N * p.C * p.H * p.W), out = double(p.N * p.C * p.P * p.Q);
  return {in, 4.0 * (in + 2 * out), {p.N, p.C, p.H, p.W, 0}};
}
inline OpCost op_cost(const Pool2dParams& p, const float*, const int32_t*, float*) {
  const double in = double(p.N * p.C * p.H * p.W), out = double(p.N * p.C * p.P * p.Q);
  return {0, 4.0 * (2 * out + in), {p.N, p.C, p.H, p.W, 0}};
}

}  // namespace nl
