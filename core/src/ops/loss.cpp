// log_softmax, nll_loss, cross_entropy.
#include "normlab/core/kernel/stubs.h"
#include "normlab/core/ops.h"
#include "op_utils.h"

namespace nl {
using namespace detail;

Tensor log_softmax(const Tensor& x_in) {
  const char* op = "log_softmax";
  check_inputs(op, {{"input", &x_in}});
  check_ndim(op, "input", x_in, 2, "[M, C]");
  Tensor x = x_in.contiguous();
  int64_t M = x.size(0), C = x.size(1);
  NL_CHECK(C > 0, op, ": no classes in input of shape ", x.shape());
  Tensor y = Tensor::empty(x.shape(), DType::F32, x.device());
  log_softmax_fwd_stub(x.device(), M, C, x.data_f32(), y.data_f32());
  if (any_requires_grad({&x})) {
    Tensor sy = y.detach();
    record_node(y, op, {&x}, [sy, M, C](const Tensor& dy) {
      Tensor dx = Tensor::empty(sy.shape(), DType::F32, dy.device());
      log_softmax_bwd_stub(dy.device(), M, C, sy.data_f32(), dy.data_f32(), dx.data_f32());
      return std::vector<Tensor>{dx};
    });
  }
  return y;
}

Tensor nll_loss(const Tensor& logp_in, const Tensor& target_in) {
  const char* op = "nll_loss";
  check_inputs(op, {{"input", &logp_in}});
  check_ndim(op, "input", logp_in, 2, "[M, C]");
  NL_CHECK(target_in.dtype() == DType::I32, op, ": target must be int32 class indices, got ",
           target_in.dtype());
  NL_CHECK(target_in.device() == logp_in.device(), op, ": target is on ", target_in.device(),
           " but input is on ", logp_in.device());
  int64_t M = logp_in.size(0), C = logp_in.size(1);
  NL_CHECK(target_in.dim() == 1 && target_in.size(0) == M, op, ": target must have shape [", M,
           "] to match input ", logp_in.shape(), ", got ", target_in.shape());
  NL_CHECK(M > 0, op, ": empty batch");
  Tensor logp = logp_in.contiguous(), target = target_in.contiguous();
  // Labels come from user data: the kernels check them where they are (no copy to the host, no
  // synchronisation per step on a GPU; see nll_loss_fwd in normlab/core/kernel/stubs.h).
  Tensor loss = Tensor::empty({}, DType::F32, logp.device());
  nll_loss_fwd_stub(logp.device(), M, C, logp.data_f32(), target.data_i32(), loss.data_f32());
  if (any_requires_grad({&logp})) {
    record_node(loss, op, {&logp}, [M, C, target](const Tensor& dloss) {
      Tensor dlogp = Tensor::empty({M, C}, DType::F32, dloss.device());
      nll_loss_bwd_stub(dloss.device(), M, C, target.data_i32(), dloss.data_f32(), dlogp.data_f32());
      return std::vector<Tensor>{dlogp};
    });
  }
  return loss;
}

Tensor cross_entropy(const Tensor& logits, const Tensor& target) {
  return nll_loss(log_softmax(logits), target);
}

}  // namespace nl
