#pragma once
// Layers with PyTorch's default initialisation. Every constructor that initialises weights takes
// the Generator to draw from, so two models built from equal seeds are equal.
#include <functional>
#include <initializer_list>

#include "normlab/core/ops.h"
#include "normlab/core/rng.h"
#include "normlab/nn/module.h"

namespace nl::nn {

// A norm that can run the ReLU, dropout and residual add following it in the same pass over
// memory (nl::NormEpilogue). Sequential and Residual find `norm > [ReLU] > [Dropout]` runs and
// call forward_fused; the result equals the layers run one by one, bit for bit.
class FusableNorm {
 public:
  virtual ~FusableNorm() = default;
  virtual bool can_fuse() const { return true; }
  // False for a norm with its own activation (FRN's TLU): a ReLU after it then runs on its own.
  virtual bool fuses_relu() const { return true; }
  virtual Tensor forward_fused(const Tensor& x, const NormEpilogue& epilogue) = 0;
};

// On by default; off runs every layer on its own (to compare, or to debug a layer's output).
void set_fusion_enabled(bool on);
bool fusion_enabled();

// When set, Sequential calls check(module, output) after each of its modules (a fused norm run
// reports under the norm): the NaN guard uses it to name the first module whose output is not
// finite. Unset (the default) it costs one branch per module. Not thread-safe to change while a
// forward pass runs.
using OutputCheck = std::function<void(const Module& module, const Tensor& output)>;
void set_output_check(OutputCheck check);

// conv k x k; weight and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (kaiming-uniform, a = sqrt 5).
class Conv2d : public Module {
 public:
  Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel, int64_t stride, int64_t padding,
         bool bias, Generator& gen);
  Tensor forward(const Tensor& x) override;
  std::string describe() const override;
  void receptive_field(ReceptiveField& rf) const override;
  Tensor weight, bias;
  int64_t in_channels, out_channels, kernel, stride, padding;
  // Weight Standardization (Qiao et al. 2019): each filter is used standardised over (C, R, S),
  // (w - mean) / sqrt(var + ws_eps), with the gradient through mean and variance: LayerNorm
  // without affine over the filter's row. The biased variance inside the root (timm's StdConv2d),
  // not the paper code's unbiased std + eps: a rescale per filter that the norm after it removes.
  bool weight_standardization = false;
  float ws_eps = 1e-5f;
};

class Linear : public Module {
 public:
  Linear(int64_t in_features, int64_t out_features, bool bias, Generator& gen);
  Tensor forward(const Tensor& x) override;
  std::string describe() const override;
  Tensor weight, bias;
  int64_t in_features, out_features;
};

// A norm of the family as data (nl::NormSpec) over [N, C, H, W], with a per-channel affine:
// per-channel statistics (BatchNorm, Ghost BatchNorm, Batch Renorm: running statistics as
// BatchNorm2d's, batch statistics in training mode) or per-group ones (GroupNorm, LayerNorm over
// (C, H, W), InstanceNorm, RMSNorm). Norm(NormSpec::rms(), c) is RMSNorm over (C, H, W); unlike
// torch.nn.RMSNorm's per-element weight, the affine is per channel with a bias, as every norm
// compared here.
class Norm : public Module, public FusableNorm {
 public:
  Norm(const NormSpec& spec, int64_t channels, bool affine = true);
  Tensor forward(const Tensor& x) override;
  Tensor forward_fused(const Tensor& x, const NormEpilogue& epilogue) override;
  bool fuses_relu() const override { return !spec.tlu; }
  std::string describe() const override;
  Tensor weight, bias;
  Tensor running_mean, running_var;  // per-channel specs only
  Tensor num_batches_tracked;        // Batch Renorm with a warm-up: its step counter ([1], float)
  Tensor tau;                        // TLU specs (FRN) only: the learned threshold, [C], from 0
  NormSpec spec;
  int64_t channels;
};

// The named norms are nn::Norm with a spec; their settings live in `spec` alone.
// BatchNorm2d: NormSpec::batch(momentum, eps) (state dict "weight", "bias", "running_mean",
// "running_var", as torch.nn.BatchNorm2d's without num_batches_tracked).
class BatchNorm2d : public Norm {
 public:
  explicit BatchNorm2d(int64_t channels, float eps = 1e-5f, float momentum = 0.1f, bool affine = true);
  std::string describe() const override;
};

// GroupNorm: NormSpec::group(groups, eps) (state dict "weight", "bias").
class GroupNorm : public Norm {
 public:
  GroupNorm(int64_t groups, int64_t channels, float eps = 1e-5f, bool affine = true);
  std::string describe() const override;
};

enum class LayerNormAffine { PerChannel, PerElement, None };

// LayerNorm over (C, H, W) per sample. The default per-channel affine (C gammas and betas) makes
// it GroupNorm with one group; PerElement is torch.nn.LayerNorm([C, H, W]) with C*H*W of each,
// which needs H and W up front and costs C*H*W*2 parameters per layer.
// NormSpec::group(1, eps) with the per-channel affine or none; the per-element one normalises
// the [N, C*H*W] rows (NormSpec::row) with C*H*W gammas and betas.
class LayerNorm : public Norm {
 public:
  explicit LayerNorm(int64_t channels, float eps = 1e-5f,
                     LayerNormAffine affine = LayerNormAffine::PerChannel, int64_t height = 0,
                     int64_t width = 0);
  Tensor forward(const Tensor& x) override;
  bool can_fuse() const override { return affine != LayerNormAffine::PerElement; }
  Tensor forward_fused(const Tensor& x, const NormEpilogue& epilogue) override;
  std::string describe() const override;
  int64_t height, width;
  LayerNormAffine affine;
};

class ReLU : public Module {
 public:
  Tensor forward(const Tensor& x) override;
  std::string describe() const override { return "ReLU"; }
};

class MaxPool2d : public Module {
 public:
  explicit MaxPool2d(int64_t kernel = 2, int64_t stride = 2) : kernel(kernel), stride(stride) {}
  Tensor forward(const Tensor& x) override;
  std::string describe() const override;
  void receptive_field(ReceptiveField& rf) const override;
  int64_t kernel, stride;
};

class GlobalAvgPool : public Module {
 public:
  Tensor forward(const Tensor& x) override;
  std::string describe() const override { return "GlobalAvgPool"; }
  void receptive_field(ReceptiveField& rf) const override { rf.global = true; }
};

// [N, ...] -> [N, prod(...)]
class Flatten : public Module {
 public:
  Tensor forward(const Tensor& x) override;
  std::string describe() const override { return "Flatten"; }
};

class Dropout : public Module {
 public:
  explicit Dropout(float p, Generator* gen = nullptr) : p(p), gen(gen) {}
  Tensor forward(const Tensor& x) override;
  std::string describe() const override;
  float p;
  Generator* gen;  // null: the default generator
};

class Sequential : public Module {
 public:
  Sequential() = default;
  Sequential(std::initializer_list<std::shared_ptr<Module>> modules);
  Sequential& add(std::shared_ptr<Module> m);  // named by its index
  Sequential& add(std::string name, std::shared_ptr<Module> m);
  Tensor forward(const Tensor& x) override;
  // residual + forward(x), with the add fused into a trailing norm run when there is one.
  Tensor forward_residual(const Tensor& x, const Tensor& residual);
  std::string describe() const override;  // its layers joined by " > "

 private:
  Tensor run(const Tensor& x, const Tensor* residual);
};

// out = x + body(x)
class Residual : public Module {
 public:
  explicit Residual(std::shared_ptr<Module> body);
  Tensor forward(const Tensor& x) override;
  std::string describe() const override { return "x + " + body_->describe(); }

 private:
  std::shared_ptr<Module> body_;
};

// One row per top-level layer of `model` (a Sequential): name, description, output shape,
// parameter count and receptive field, then the total. Runs one forward pass on zeros of
// `input` (batch 1 is fine) in eval mode without recording.
std::string summary(Sequential& model, const Shape& input);

}  // namespace nl::nn
