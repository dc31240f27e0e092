// batch_norm, group_norm (with the fused ReLU / dropout / residual epilogue), layer_norm: shape
// checks, saved statistics and tape nodes.
#include "normlab/core/kernel/stubs.h"
#include "normlab/core/ops.h"
#include "op_utils.h"

namespace nl {
using namespace detail;

namespace {

void check_eps(const char* op, float eps) {
  NL_CHECK(eps > 0.0f, op, ": eps must be positive, got ", eps);
}

// Checks the epilogue and fills its part of p: the dropout draw is reserved here, once per call,
// exactly as nl::dropout reserves it, so fused and unfused runs see the same mask.
void prepare_epilogue(const char* op, const NormEpilogue& e, const Tensor& x, NormParams& p) {
  NL_CHECK(e.dropout >= 0.0f && e.dropout < 1.0f, op, ": dropout probability must be in [0, 1), got ",
           e.dropout);
  if (e.residual.defined()) {
    check_inputs(op, {{"input", &x}, {"residual", &e.residual}});
    NL_CHECK(e.residual.shape() == x.shape(), op, ": residual has shape ", e.residual.shape(),
             " but the input has shape ", x.shape(), "; a residual add needs equal shapes");
  }
  p.relu = e.relu;
  p.dropout = e.dropout;
  if (e.dropout > 0.0f) {
    Generator& g = e.gen ? *e.gen : default_generator();
    p.seed = g.seed();
    p.offset = g.reserve(static_cast<uint64_t>(x.numel()));
  }
}

// One byte per element, in an int32 tensor (the tensor core has no byte dtype).
Tensor mask_buffer(const NormParams& p, const Tensor& x) {
  if (!p.has_mask()) return Tensor();
  return Tensor::empty({(x.numel() + 3) / 4}, DType::I32, x.device());
}
uint8_t* mask_ptr(const Tensor& m) {
  return m.defined() ? reinterpret_cast<uint8_t*>(m.data_i32()) : nullptr;
}

struct NormSaved {
  Tensor x, gamma, mean, rstd, mask;
};

using NormBwdStub = DispatchStub<batch_norm_bwd_fn>;

// Inputs of the node: x, gamma, beta, residual (any may be undefined or not need a gradient).
void record_norm(const char* op, Tensor& y, const NormBwdStub& stub, const NormParams& p,
                 const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& residual,
                 NormSaved s) {
  if (!any_requires_grad({&x, &gamma, &beta, &residual})) return;
  const bool gx = needs(x), gg = needs(gamma), gb = needs(beta), gr = needs(residual);
  record_node(y, op, {&x, &gamma, &beta, &residual},
              [&stub, p, s, gx, gg, gb, gr](const Tensor& dy) {
                Tensor dx = grad_buffer(gx, s.x);
                Tensor dgamma = gg ? Tensor::empty({p.C}, DType::F32, dy.device()) : Tensor();
                Tensor dbeta = gb ? Tensor::empty({p.C}, DType::F32, dy.device()) : Tensor();
                stub(dy.device(), p, s.x.data_f32(), dy.data_f32(), opt_ptr(s.gamma),
                     s.mean.data_f32(), s.rstd.data_f32(), mask_ptr(s.mask), opt_mut(dx),
                     opt_mut(dgamma), opt_mut(dbeta));
                return std::vector<Tensor>{dx, dgamma, dbeta, gr ? dy : Tensor()};
              });
}

Tensor contiguous_or_none(const Tensor& t) { return t.defined() ? t.contiguous() : Tensor(); }

}  // namespace

Tensor batch_norm(const Tensor& x_in, const Tensor& gamma_in, const Tensor& beta_in,
                  const Tensor& running_mean, const Tensor& running_var, bool training,
                  float momentum, float eps, const NormEpilogue& epilogue) {
  const char* op = "batch_norm";
  check_inputs(op, {{"input", &x_in}, {"weight", &gamma_in}, {"bias", &beta_in},
                    {"running_mean", &running_mean}, {"running_var", &running_var}});
  NL_CHECK(x_in.dim() >= 2, op, ": input must be [N, C, ...], got shape ", x_in.shape());
  check_eps(op, eps);
  NL_CHECK(momentum >= 0.0f && momentum <= 1.0f, op, ": momentum must be in [0, 1], got ",
           momentum);
  NL_CHECK(running_mean.defined() == running_var.defined(), op,
           ": give both running_mean and running_var, or neither");
  NL_CHECK(training || running_mean.defined(), op,
           ": eval mode needs running statistics (running_mean/running_var)");
  NormParams p;
  p.N = x_in.size(0), p.C = x_in.size(1), p.HxW = x_in.numel() / std::max<int64_t>(p.N * p.C, 1);
  p.eps = eps, p.momentum = momentum, p.training = training;
  for (const auto& [name, t] : {std::pair{"weight", &gamma_in}, {"bias", &beta_in},
                                {"running_mean", &running_mean}, {"running_var", &running_var}}) {
    check_vec(op, name, *t, p.C);
    NL_CHECK(!t->defined() || t->is_contiguous(), op, ": ", name, " must be contiguous");
  }
  NL_CHECK(!training || p.N * p.HxW > 1, op, ": training needs more than one value per channel, "
           "got input of shape ", x_in.shape());
  prepare_epilogue(op, epilogue, x_in, p);

  Tensor x = x_in.contiguous();
  Tensor gamma = contiguous_or_none(gamma_in), beta = contiguous_or_none(beta_in);
  Tensor residual = contiguous_or_none(epilogue.residual);
  Tensor y = Tensor::empty(x.shape(), DType::F32, x.device());
  Tensor mean = Tensor::empty({p.C}, DType::F32, x.device());
  Tensor rstd = Tensor::empty({p.C}, DType::F32, x.device());
  Tensor mask = mask_buffer(p, x);
  batch_norm_fwd_stub(x.device(), p, x.data_f32(), opt_ptr(gamma), opt_ptr(beta), opt_ptr(residual),
                      opt_mut(running_mean), opt_mut(running_var), y.data_f32(), mean.data_f32(),
                      rstd.data_f32(), mask_ptr(mask));
  record_norm(op, y, batch_norm_bwd_stub, p, x, gamma, beta, residual,
              {save(x), save(gamma), mean, rstd, mask});
  return y;
}

namespace {
// GroupNorm and its relatives: statistics per (sample, group), centred or not.
Tensor group_norm_impl(const char* op, const Tensor& x_in, int64_t groups, bool center, const Tensor& gamma_in,
                       const Tensor& beta_in, float eps, const NormEpilogue& epilogue) {
  check_inputs(op, {{"input", &x_in}, {"weight", &gamma_in}, {"bias", &beta_in}});
  NL_CHECK(x_in.dim() >= 2, op, ": input must be [N, C, ...], got shape ", x_in.shape());
  check_eps(op, eps);
  NormParams p;
  p.N = x_in.size(0), p.C = x_in.size(1), p.G = groups, p.eps = eps, p.center = center;
  p.HxW = x_in.numel() / std::max<int64_t>(p.N * p.C, 1);
  NL_CHECK(groups >= 1 && p.C % groups == 0, op, ": groups (", groups,
           ") must be >= 1 and divide the channel count ", p.C);
  check_vec(op, "weight", gamma_in, p.C);
  check_vec(op, "bias", beta_in, p.C);
  prepare_epilogue(op, epilogue, x_in, p);

  Tensor x = x_in.contiguous();
  Tensor gamma = contiguous_or_none(gamma_in), beta = contiguous_or_none(beta_in);
  Tensor residual = contiguous_or_none(epilogue.residual);
  Tensor y = Tensor::empty(x.shape(), DType::F32, x.device());
  Tensor mean = Tensor::empty({p.N, p.G}, DType::F32, x.device());
  Tensor rstd = Tensor::empty({p.N, p.G}, DType::F32, x.device());
  Tensor mask = mask_buffer(p, x);
  group_norm_fwd_stub(x.device(), p, x.data_f32(), opt_ptr(gamma), opt_ptr(beta), opt_ptr(residual),
                      y.data_f32(), mean.data_f32(), rstd.data_f32(), mask_ptr(mask));
  record_norm(op, y, group_norm_bwd_stub, p, x, gamma, beta, residual,
              {save(x), save(gamma), mean, rstd, mask});
  return y;
}
}  // namespace

Tensor group_norm(const Tensor& x, int64_t groups, const Tensor& gamma, const Tensor& beta, float eps,
                  const NormEpilogue& epilogue) {
  return group_norm_impl("group_norm", x, groups, true, gamma, beta, eps, epilogue);
}

Tensor layer_norm(const Tensor& x_in, const Tensor& gamma_in, const Tensor& beta_in, float eps) {
  const char* op = "layer_norm";
  check_inputs(op, {{"input", &x_in}, {"weight", &gamma_in}, {"bias", &beta_in}});
  NL_CHECK(x_in.dim() >= 1, op, ": input must have at least one dimension");
  check_eps(op, eps);
  NormParams p;
  p.C = x_in.size(-1), p.N = x_in.numel() / std::max<int64_t>(p.C, 1), p.eps = eps;
  check_vec(op, "weight", gamma_in, p.C);
  check_vec(op, "bias", beta_in, p.C);
  Tensor x = x_in.contiguous();
  Tensor gamma = contiguous_or_none(gamma_in), beta = contiguous_or_none(beta_in);
  Tensor y = Tensor::empty(x.shape(), DType::F32, x.device());
  Tensor mean = Tensor::empty({p.N}, DType::F32, x.device());
  Tensor rstd = Tensor::empty({p.N}, DType::F32, x.device());
  layer_norm_fwd_stub(x.device(), p, x.data_f32(), opt_ptr(gamma), opt_ptr(beta), y.data_f32(),
                      mean.data_f32(), rstd.data_f32());
  if (any_requires_grad({&x, &gamma, &beta})) {
    const bool gx = needs(x), gg = needs(gamma), gb = needs(beta);
    NormSaved s{save(x), save(gamma), mean, rstd, Tensor()};
    record_node(y, op, {&x, &gamma, &beta}, [p, s, gx, gg, gb](const Tensor& dy) {
      Tensor dx = grad_buffer(gx, s.x);
      Tensor dgamma = gg ? Tensor::empty({p.C}, DType::F32, dy.device()) : Tensor();
      Tensor dbeta = gb ? Tensor::empty({p.C}, DType::F32, dy.device()) : Tensor();
      layer_norm_bwd_stub(dy.device(), p, s.x.data_f32(), dy.data_f32(), opt_ptr(s.gamma),
                          s.mean.data_f32(), s.rstd.data_f32(), opt_mut(dx), opt_mut(dgamma),
                          opt_mut(dbeta));
      return std::vector<Tensor>{dx, dgamma, dbeta};
    });
  }
  return y;
}

Tensor normalize(const Tensor& x, const NormSpec& spec, const Tensor& gamma, const Tensor& beta,
                 const Tensor& running_mean, const Tensor& running_var, bool training, const NormEpilogue& epilogue) {
  NL_CHECK(spec.center || spec.stats == NormSpec::Stats::PerGroup,
           "normalize: center = false (RMSNorm) is implemented for per-group statistics only");
  switch (spec.stats) {
    case NormSpec::Stats::PerChannel:
      return batch_norm(x, gamma, beta, running_mean, running_var, training, spec.momentum, spec.eps, epilogue);
    case NormSpec::Stats::PerGroup:
      return group_norm_impl(spec.center ? "group_norm" : "rms_norm", x, spec.groups, spec.center, gamma, beta,
                             spec.eps, epilogue);
    case NormSpec::Stats::PerRow: {
      NL_CHECK(!epilogue.relu && epilogue.dropout == 0.0f && !epilogue.residual.defined(),
               "normalize: a per-row (last-dimension) norm has no fused epilogue");
      return layer_norm(x, gamma, beta, spec.eps);
    }
  }
  NL_FAIL("normalize: unknown statistics kind");
}

}  // namespace nl
