#include "normlab/core/kernel/stubs.h"
#include "normlab/core/dispatch.h"
#include "normlab/core/ops.h"
#include "op_utils.h"

namespace nl {
using namespace detail;

Tensor conv2d(const Tensor& x_in, const Tensor& w_in, const Tensor& bias_in, int64_t stride,
              int64_t padding) {
  const char* op = "conv2d";
  check_inputs(op, {{"input", &x_in}, {"weight", &w_in}, {"bias", &bias_in}});
  check_ndim(op, "input", x_in, 4, "[N, C, H, W]");
  check_ndim(op, "weight", w_in, 4, "[K, C, R, S]");
  NL_CHECK(stride >= 1, op, ": stride must be >= 1, got ", stride);
  NL_CHECK(padding >= 0, op, ": padding must be >= 0, got ", padding);
  NL_CHECK(x_in.size(1) == w_in.size(1), op, ": input has ", x_in.size(1), " channels but weight of shape ",
           w_in.shape(), " expects ", w_in.size(1));
  Conv2dParams p{};
  p.N = x_in.size(0), p.C = x_in.size(1), p.H = x_in.size(2), p.W = x_in.size(3);
  p.K = w_in.size(0), p.R = w_in.size(2), p.S = w_in.size(3);
  p.stride_h = p.stride_w = stride;
  p.pad_h = p.pad_w = padding;
  p.tf32 = conv_tf32();
  p.algo = conv_algo();
  NL_CHECK(p.H + 2 * padding >= p.R && p.W + 2 * padding >= p.S, op, ": filter ", p.R, "x", p.S,
           " is larger than the padded input ", p.H + 2 * padding, "x", p.W + 2 * padding);
  p.P = (p.H + 2 * padding - p.R) / stride + 1;
  p.Q = (p.W + 2 * padding - p.S) / stride + 1;
  check_vec(op, "bias", bias_in, p.K);

  Tensor x = x_in.contiguous(), w = w_in.contiguous();
  Tensor bias = bias_in.defined() ? bias_in.contiguous() : Tensor();
  Tensor y = Tensor::empty({p.N, p.K, p.P, p.Q}, DType::F32, x.device());
  conv2d_fwd_stub(x.device(), p, x.data_f32(), w.data_f32(), opt_ptr(bias), y.data_f32());

  if (any_requires_grad({&x, &w, &bias})) {
    Tensor sx = x.detach(), sw = w.detach();
    bool gx = needs(x), gw = needs(w), gb = needs(bias);
    record_node(y, op, {&x, &w, &bias}, [=](const Tensor& dy) {
      Tensor dx = grad_buffer(gx, sx), dw = grad_buffer(gw, sw);
      Tensor db = gb ? Tensor::empty({p.K}, DType::F32, dy.device()) : Tensor();
      conv2d_bwd_stub(dy.device(), p, sx.data_f32(), sw.data_f32(), dy.data_f32(), opt_mut(dx), opt_mut(dw),
                      opt_mut(db));
      return std::vector<Tensor>{dx, dw, db};
    });
  }
  return y;
}

Tensor linear(const Tensor& x_in, const Tensor& w_in, const Tensor& bias_in) {
  const char* op = "linear";
  check_inputs(op, {{"input", &x_in}, {"weight", &w_in}, {"bias", &bias_in}});
  check_ndim(op, "input", x_in, 2, "[M, K]");
  check_ndim(op, "weight", w_in, 2, "[N, K]");
  NL_CHECK(x_in.size(1) == w_in.size(1), op, ": input of shape ", x_in.shape(), " has ", x_in.size(1),
           " features but weight of shape ", w_in.shape(), " expects ", w_in.size(1));
  LinearParams p{x_in.size(0), x_in.size(1), w_in.size(0)};
  check_vec(op, "bias", bias_in, p.N);
  Tensor x = x_in.contiguous(), w = w_in.contiguous();
  Tensor bias = bias_in.defined() ? bias_in.contiguous() : Tensor();
  Tensor y = Tensor::empty({p.M, p.N}, DType::F32, x.device());
  linear_fwd_stub(x.device(), p, x.data_f32(), w.data_f32(), opt_ptr(bias), y.data_f32());
  if (any_requires_grad({&x, &w, &bias})) {
    Tensor sx = x.detach(), sw = w.detach();
    bool gx = needs(x), gw = needs(w), gb = needs(bias);
    record_node(y, op, {&x, &w, &bias}, [=](const Tensor& dy) {
      Tensor dx = grad_buffer(gx, sx), dw = grad_buffer(gw, sw);
      Tensor db = gb ? Tensor::empty({p.N}, DType::F32, dy.device()) : Tensor();
      linear_bwd_stub(dy.device(), p, sx.data_f32(), sw.data_f32(), dy.data_f32(), opt_mut(dx), opt_mut(dw),
                      opt_mut(db));
      return std::vector<Tensor>{dx, dw, db};
    });
  }
  return y;
}

}  // namespace nl
