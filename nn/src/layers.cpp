#include "normlab/nn/layers.h"

#include "fusion.h"

#include <cmath>
#include <sstream>

#include "normlab/core/error.h"
#include "normlab/core/ops.h"

namespace nl::nn {
namespace {
// PyTorch's default for conv and linear: kaiming_uniform_(a=sqrt(5)) gives bound 1/sqrt(fan_in)
// for the weight, and the bias uses the same bound.
Tensor default_uniform(const Shape& shape, int64_t fan_in, Generator& gen) {
  float bound = 1.0f / std::sqrt(static_cast<float>(fan_in));
  return Tensor::uniform(shape, -bound, bound, gen);
}
}  // namespace

Conv2d::Conv2d(int64_t in, int64_t out, int64_t k, int64_t s, int64_t p, bool has_bias, Generator& gen)
    : in_channels(in), out_channels(out), kernel(k), stride(s), padding(p) {
  NL_CHECK(in > 0 && out > 0 && k > 0 && s > 0 && p >= 0, "Conv2d: invalid configuration in=", in,
           " out=", out, " kernel=", k, " stride=", s, " padding=", p);
  weight = default_uniform({out, in, k, k}, in * k * k, gen);
  register_parameter("weight", weight);
  if (has_bias) {
    bias = default_uniform({out}, in * k * k, gen);
    register_parameter("bias", bias);
  }
}

Tensor Conv2d::forward(const Tensor& x) {
  if (!weight_standardization) return conv2d(x, weight, bias, stride, padding);
  const Tensor w =
      layer_norm(weight.reshape({out_channels, in_channels * kernel * kernel}), Tensor(), Tensor(), ws_eps);
  return conv2d(x, w.view(weight.shape()), bias, stride, padding);
}

std::string Conv2d::describe() const {
  std::ostringstream os;
  os << "Conv2d(" << in_channels << ", " << out_channels << ", k=" << kernel;
  if (stride != 1) os << ", s=" << stride;
  if (padding != 0) os << ", p=" << padding;
  if (!bias.defined()) os << ", no bias";
  if (weight_standardization) os << ", WS";
  return os.str() + ")";
}

void Conv2d::receptive_field(ReceptiveField& rf) const {
  rf.size += (kernel - 1) * rf.jump;
  rf.jump *= stride;
}

Linear::Linear(int64_t in, int64_t out, bool has_bias, Generator& gen) : in_features(in), out_features(out) {
  NL_CHECK(in > 0 && out > 0, "Linear: invalid configuration in=", in, " out=", out);
  weight = default_uniform({out, in}, in, gen);
  register_parameter("weight", weight);
  if (has_bias) {
    bias = default_uniform({out}, in, gen);
    register_parameter("bias", bias);
  }
}

Tensor Linear::forward(const Tensor& x) { return linear(x, weight, bias); }

std::string Linear::describe() const {
  std::ostringstream os;
  os << "Linear(" << in_features << ", " << out_features << ")";
  return os.str();
}

namespace {
// Checked before nn::Norm's own checks, so the message names the class the user constructed.
NormSpec batch_spec(int64_t c, float eps, float momentum) {
  NL_CHECK(c > 0, "BatchNorm2d: channels must be positive, got ", c);
  return NormSpec::batch(momentum, eps);
}
}  // namespace

BatchNorm2d::BatchNorm2d(int64_t c, float eps, float momentum, bool affine)
    : Norm(batch_spec(c, eps, momentum), c, affine) {}

std::string BatchNorm2d::describe() const { return "BatchNorm2d(" + std::to_string(channels) + ")"; }

namespace {
NormSpec group_spec(int64_t g, int64_t c, float eps) {
  NL_CHECK(g > 0 && c > 0 && c % g == 0, "GroupNorm: groups (", g, ") must be positive and divide channels (",
           c, ")");
  return NormSpec::group(g, eps);
}
}  // namespace

GroupNorm::GroupNorm(int64_t g, int64_t c, float eps, bool affine) : Norm(group_spec(g, c, eps), c, affine) {}

std::string GroupNorm::describe() const {
  return "GroupNorm(" + std::to_string(spec.groups) + ", " + std::to_string(channels) + ")";
}

Norm::Norm(const NormSpec& spec_in, int64_t c, bool affine) : spec(spec_in), channels(c) {
  NL_CHECK(
      spec.stats != NormSpec::Stats::PerRow,
      "nn::Norm: normalises [N, C, H, W] per channel or per group; use LayerNorm for last-dimension rows");
  NL_CHECK(c > 0, "nn::Norm: channels must be positive, got ", c);
  if (spec.stats == NormSpec::Stats::PerGroup)
    NL_CHECK(spec.groups >= 0 && (spec.groups == 0 || c % spec.groups == 0), "nn::Norm: groups (",
             spec.groups, ") must divide channels (", c, "), or be 0 for one group per channel");
  NL_CHECK(spec.ghost_batch >= 0, "nn::Norm: ghost batch must be >= 0 (0: the whole batch), got ",
           spec.ghost_batch);
  if (affine) {
    weight = Tensor::ones({c});
    bias = Tensor::zeros({c});
    register_parameter("weight", weight);
    register_parameter("bias", bias);
  }
  if (spec.tlu) {
    tau = Tensor::zeros({c});
    register_parameter("tau", tau);
  }
  if (spec.stats == NormSpec::Stats::PerChannel) {
    running_mean = Tensor::zeros({c});
    running_var = Tensor::ones({c});
    register_buffer("running_mean", running_mean);
    register_buffer("running_var", running_var);
  }
  if (spec.renorm && spec.renorm_warmup > 0) {
    // A buffer, so checkpoints carry it and a resumed run continues the warm-up where it was.
    num_batches_tracked = Tensor::zeros({1});
    register_buffer("num_batches_tracked", num_batches_tracked);
  }
}

Tensor Norm::forward(const Tensor& x) { return forward_fused(x, {}); }

Tensor Norm::forward_fused(const Tensor& x, const NormEpilogue& epilogue) {
  if (!spec.tlu)
    return normalize(x, spec, weight, bias, running_mean, running_var, is_training(), epilogue,
                     num_batches_tracked);
  NormEpilogue e = epilogue;
  e.tau = tau;
  return normalize(x, spec, weight, bias, running_mean, running_var, is_training(), e);
}

std::string Norm::describe() const {
  const std::string c = std::to_string(channels);
  if (spec.stats == NormSpec::Stats::PerChannel) {
    if (spec.renorm) return "BatchRenorm(" + c + ")";
    if (spec.ghost_batch > 0)
      return "GhostBatchNorm(" + c + ", ghost " + std::to_string(spec.ghost_batch) + ")";
    return "BatchNorm(" + c + ")";
  }
  if (spec.tlu) return "FRN+TLU(" + c + ")";
  if (!spec.center) return "RMSNorm(groups " + std::to_string(spec.groups) + ", " + c + ")";
  return "Norm(groups " + std::to_string(spec.groups) + ", " + c + ")";
}

namespace {
NormSpec layer_spec(int64_t c, float eps) {
  NL_CHECK(c > 0, "LayerNorm: channels must be positive, got ", c);
  return NormSpec::group(1, eps);
}
}  // namespace

LayerNorm::LayerNorm(int64_t c, float eps, LayerNormAffine affine, int64_t h, int64_t w)
    : Norm(layer_spec(c, eps), c, affine == LayerNormAffine::PerChannel),
      height(h),
      width(w),
      affine(affine) {
  if (affine != LayerNormAffine::PerElement) return;
  NL_CHECK(h > 0 && w > 0, "LayerNorm: a per-element affine needs the height and width, got ", h, "x", w);
  weight = Tensor::ones({c, h, w});
  bias = Tensor::zeros({c, h, w});
  register_parameter("weight", weight);
  register_parameter("bias", bias);
}

Tensor LayerNorm::forward_fused(const Tensor& x, const NormEpilogue& epilogue) {
  NL_CHECK(can_fuse(), "LayerNorm: the per-element affine does not fuse with what follows");
  return Norm::forward_fused(x, epilogue);
}

Tensor LayerNorm::forward(const Tensor& x) {
  if (affine != LayerNormAffine::PerElement) return Norm::forward_fused(x, {});
  NL_CHECK(x.dim() == 4 && x.size(1) == channels && x.size(2) == height && x.size(3) == width,
           "LayerNorm: built for [N, ", channels, ", ", height, ", ", width, "] inputs, got ", x.shape());
  const int64_t D = channels * height * width;
  return layer_norm(x.reshape({x.size(0), D}), weight.view({D}), bias.view({D}), spec.eps).view(x.shape());
}

std::string LayerNorm::describe() const {
  const char* a = affine == LayerNormAffine::PerChannel   ? ""
                  : affine == LayerNormAffine::PerElement ? ", per-element affine"
                                                          : ", no affine";
  return "LayerNorm(" + std::to_string(channels) + a + ")";
}

Tensor ReLU::forward(const Tensor& x) { return relu(x); }

Tensor MaxPool2d::forward(const Tensor& x) { return max_pool2d(x, kernel, stride); }
void MaxPool2d::receptive_field(ReceptiveField& rf) const {
  rf.size += (kernel - 1) * rf.jump;
  rf.jump *= stride;
}
std::string MaxPool2d::describe() const {
  return "MaxPool2d(" + std::to_string(kernel) + ", s=" + std::to_string(stride) + ")";
}

Tensor GlobalAvgPool::forward(const Tensor& x) { return global_avg_pool(x); }

Tensor Flatten::forward(const Tensor& x) { return x.flatten(1); }

Tensor Dropout::forward(const Tensor& x) { return dropout(x, p, is_training(), gen); }
std::string Dropout::describe() const {
  std::ostringstream os;
  os << "Dropout(" << p << ")";
  return os.str();
}

Sequential::Sequential(std::initializer_list<std::shared_ptr<Module>> modules) {
  for (auto& m : modules) add(m);
}

Sequential& Sequential::add(std::shared_ptr<Module> m) {
  return add(std::to_string(children().size()), std::move(m));
}

Sequential& Sequential::add(std::string name, std::shared_ptr<Module> m) {
  NL_CHECK(m != nullptr, "Sequential: null module '", name, "'");
  for (const auto& [existing, child] : children())
    NL_CHECK(existing != name, "Sequential: two layers named '", name, "'");
  register_module(std::move(name), std::move(m));
  return *this;
}

std::string Sequential::describe() const {
  std::string out;
  for (const auto& [name, m] : children()) out += (out.empty() ? "" : " > ") + m->describe();
  return out;
}

OutputCheck g_output_check;
void set_output_check(OutputCheck check) { g_output_check = std::move(check); }

Tensor Sequential::forward(const Tensor& x) { return run(x, nullptr); }

Tensor Sequential::forward_residual(const Tensor& x, const Tensor& residual) { return run(x, &residual); }

Tensor Sequential::run(const Tensor& x, const Tensor* residual) {
  const auto& layers = children();
  const size_t n = layers.size();
  Tensor h = x;
  bool residual_done = residual == nullptr;
  for (size_t i = 0; i < n;) {
    Module* m = layers[i].second.get();
    const FusedRun run = plan_fused_run(layers, i, h, residual_done ? nullptr : residual);
    if (!run.norm) {
      h = m->forward(h);
      if (g_output_check) g_output_check(*m, h);
      ++i;
      continue;
    }
    residual_done = residual_done || run.epilogue.residual.defined();
    h = run.norm->forward_fused(h, run.epilogue);
    if (g_output_check) g_output_check(*m, h);
    i = run.end;
  }
  if (!residual_done) {
    NL_CHECK(h.shape() == residual->shape(), "Residual: body maps ", residual->shape(), " to ", h.shape(),
             "; a residual add needs equal shapes");
    h = nl::add(*residual, h);
  }
  return h;
}

Residual::Residual(std::shared_ptr<Module> body) : body_(register_module("body", std::move(body))) {
  NL_CHECK(body_ != nullptr, "Residual: null body");
}

Tensor Residual::forward(const Tensor& x) {
  if (auto* seq = dynamic_cast<Sequential*>(body_.get())) return seq->forward_residual(x, x);
  Tensor y = body_->forward(x);
  NL_CHECK(y.shape() == x.shape(), "Residual: body maps ", x.shape(), " to ", y.shape(),
           "; a residual add needs equal shapes");
  return add(x, y);
}

}  // namespace nl::nn
