#include <cmath>

#include "normlab/core/kernel/stubs.h"
#include "normlab/core/ops.h"
#include "op_utils.h"

namespace nl {
using namespace detail;

namespace {
// Every state tensor is a dense float32 tensor of the parameter's shape on its device.
void check_state(const char* op, const Tensor& param, std::initializer_list<Arg> state) {
  NL_CHECK(param.defined() && param.is_contiguous(), op,
           ": the parameter must be a defined, contiguous tensor");
  for (const Arg& a : state) {
    NL_CHECK(a.t->defined() && a.t->shape() == param.shape() && a.t->is_contiguous(), op, ": ", a.name,
             " must be contiguous with the parameter's shape ", param.shape(), ", got ",
             a.t->defined() ? a.t->shape() : Shape{});
  }
}
}  // namespace

void sgd_step_(const Tensor& param, const Tensor& grad, const Tensor& momentum_buf, const SgdOptions& o,
               bool first) {
  const char* op = "sgd_step_";
  check_inputs(op, {{"param", &param}, {"grad", &grad}, {"momentum_buf", &momentum_buf}});
  check_state(op, param, {{"grad", &grad}});
  NL_CHECK(o.momentum == 0.0f || momentum_buf.defined(), op, ": momentum ", o.momentum,
           " needs a momentum buffer");
  if (momentum_buf.defined()) check_state(op, param, {{"momentum_buf", &momentum_buf}});
  const SgdParams p{param.numel(), o.lr, o.momentum, o.dampening, o.weight_decay, o.nesterov, first};
  sgd_step_stub(param.device(), p, param.data_f32(), grad.data_f32(),
                momentum_buf.defined() ? momentum_buf.data_f32() : nullptr);
}

void adam_step_(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v,
                const AdamOptions& o, int64_t step) {
  const char* op = "adam_step_";
  check_inputs(op, {{"param", &param}, {"grad", &grad}, {"m", &m}, {"v", &v}});
  check_state(op, param, {{"grad", &grad}, {"m", &m}, {"v", &v}});
  NL_CHECK(step >= 1, op, ": step counts from 1, got ", step);
  // The bias corrections in double on the host, once per step.
  const AdamParams p{param.numel(),
                     o.lr,
                     o.beta1,
                     o.beta2,
                     o.eps,
                     o.weight_decay,
                     o.decoupled,
                     static_cast<float>(1.0 - std::pow(double(o.beta1), double(step))),
                     static_cast<float>(1.0 - std::pow(double(o.beta2), double(step)))};
  adam_step_stub(param.device(), p, param.data_f32(), grad.data_f32(), m.data_f32(), v.data_f32());
}

}  // namespace nl
