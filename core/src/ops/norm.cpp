// batch_norm, group_norm, layer_norm: shape checks, saved statistics and tape nodes.
#include "kernels/stubs.h"
#include "normlab/core/ops.h"
#include "op_utils.h"

namespace nl {
using namespace detail;

namespace {

// The per-set statistics the forward saves, and the three gradients a backward returns.
struct NormSaved {
  Tensor x, gamma, mean, rstd;
};

using NormBwdStub = DispatchStub<batch_norm_bwd_fn>;

BackwardFn norm_backward(const NormBwdStub& stub, const NormParams& p, NormSaved s, bool gx,
                         bool gg, bool gb, int64_t affine_size) {
  return [&stub, p, s, gx, gg, gb, affine_size](const Tensor& dy) {
    Tensor dx = grad_buffer(gx, s.x);
    Tensor dgamma = gg ? Tensor::empty({affine_size}, DType::F32, dy.device()) : Tensor();
    Tensor dbeta = gb ? Tensor::empty({affine_size}, DType::F32, dy.device()) : Tensor();
    stub(dy.device(), p, s.x.data_f32(), dy.data_f32(), opt_ptr(s.gamma), s.mean.data_f32(),
         s.rstd.data_f32(), opt_mut(dx), opt_mut(dgamma), opt_mut(dbeta));
    return std::vector<Tensor>{dx, dgamma, dbeta};
  };
}

void check_eps(const char* op, float eps) {
  NL_CHECK(eps > 0.0f, op, ": eps must be positive, got ", eps);
}

using NormFwdStub = DispatchStub<group_norm_fwd_fn>;

// The shared tail of group_norm and layer_norm (checked inputs, stats of shape `stats`):
// allocate, dispatch, record.
Tensor normalize(const char* op, const NormFwdStub& fwd, const NormBwdStub& bwd, const NormParams& p,
                 const Tensor& x_in, const Tensor& gamma_in, const Tensor& beta_in, const Shape& stats) {
  Tensor x = x_in.contiguous();
  Tensor gamma = gamma_in.defined() ? gamma_in.contiguous() : Tensor();
  Tensor beta = beta_in.defined() ? beta_in.contiguous() : Tensor();
  Tensor y = Tensor::empty(x.shape(), DType::F32, x.device());
  Tensor mean = Tensor::empty(stats, DType::F32, x.device());
  Tensor rstd = Tensor::empty(stats, DType::F32, x.device());
  fwd(x.device(), p, x.data_f32(), opt_ptr(gamma), opt_ptr(beta), y.data_f32(), mean.data_f32(),
      rstd.data_f32());
  if (any_requires_grad({&x, &gamma, &beta})) {
    record_node(y, op, {&x, &gamma, &beta},
                norm_backward(bwd, p, {save(x), save(gamma), mean, rstd}, needs(x), needs(gamma), needs(beta), p.C));
  }
  return y;
}

}  // namespace

Tensor batch_norm(const Tensor& x_in, const Tensor& gamma_in, const Tensor& beta_in,
                  const Tensor& running_mean, const Tensor& running_var, bool training,
                  float momentum, float eps) {
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

  Tensor x = x_in.contiguous();
  Tensor gamma = gamma_in.defined() ? gamma_in.contiguous() : Tensor();
  Tensor beta = beta_in.defined() ? beta_in.contiguous() : Tensor();
  Tensor y = Tensor::empty(x.shape(), DType::F32, x.device());
  Tensor mean = Tensor::empty({p.C}, DType::F32, x.device());
  Tensor rstd = Tensor::empty({p.C}, DType::F32, x.device());
  batch_norm_fwd_stub(x.device(), p, x.data_f32(), opt_ptr(gamma), opt_ptr(beta),
                      opt_mut(running_mean), opt_mut(running_var), y.data_f32(),
                      mean.data_f32(), rstd.data_f32());
  if (any_requires_grad({&x, &gamma, &beta})) {
    record_node(y, op, {&x, &gamma, &beta},
                norm_backward(batch_norm_bwd_stub, p, {save(x), save(gamma), mean, rstd}, needs(x), needs(gamma), needs(beta), p.C));
  }
  return y;
}

Tensor group_norm(const Tensor& x_in, int64_t groups, const Tensor& gamma_in,
                  const Tensor& beta_in, float eps) {
  const char* op = "group_norm";
  check_inputs(op, {{"input", &x_in}, {"weight", &gamma_in}, {"bias", &beta_in}});
  NL_CHECK(x_in.dim() >= 2, op, ": input must be [N, C, ...], got shape ", x_in.shape());
  check_eps(op, eps);
  NormParams p;
  p.N = x_in.size(0), p.C = x_in.size(1), p.G = groups, p.eps = eps;
  p.HxW = x_in.numel() / std::max<int64_t>(p.N * p.C, 1);
  NL_CHECK(groups >= 1 && p.C % groups == 0, op, ": groups (", groups,
           ") must be >= 1 and divide the channel count ", p.C);
  check_vec(op, "weight", gamma_in, p.C);
  check_vec(op, "bias", beta_in, p.C);
  return normalize(op, group_norm_fwd_stub, group_norm_bwd_stub, p, x_in, gamma_in, beta_in, {p.N, p.G});
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
  return normalize(op, layer_norm_fwd_stub, layer_norm_bwd_stub, p, x_in, gamma_in, beta_in, {p.N});
}

}  // namespace nl
