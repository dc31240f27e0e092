#include "normlab/core/kernel/stubs.h"
#include "normlab/core/ops.h"
#include "op_utils.h"

namespace nl {
using namespace detail;

Tensor max_pool2d(const Tensor& x_in, int64_t kernel, int64_t stride) {
  const char* op = "max_pool2d";
  check_inputs(op, {{"input", &x_in}});
  check_ndim(op, "input", x_in, 4, "[N, C, H, W]");
  NL_CHECK(kernel >= 1 && stride >= 1, op, ": kernel and stride must be >= 1, got ", kernel, " and ", stride);
  Pool2dParams p{x_in.size(0), x_in.size(1), x_in.size(2), x_in.size(3), kernel, stride, 0, 0};
  NL_CHECK(p.H >= kernel && p.W >= kernel, op, ": input ", p.H, "x", p.W, " is smaller than the ", kernel,
           "x", kernel, " window");
  p.P = (p.H - kernel) / stride + 1;
  p.Q = (p.W - kernel) / stride + 1;
  Tensor x = x_in.contiguous();
  Tensor y = Tensor::empty({p.N, p.C, p.P, p.Q}, DType::F32, x.device());
  Tensor argmax = Tensor::empty({p.N, p.C, p.P, p.Q}, DType::I32, x.device());
  max_pool2d_fwd_stub(x.device(), p, x.data_f32(), y.data_f32(), argmax.data_i32());
  if (any_requires_grad({&x})) {
    record_node(y, op, {&x}, [p, argmax](const Tensor& dy) {
      Tensor dx = Tensor::empty({p.N, p.C, p.H, p.W}, DType::F32, dy.device());
      max_pool2d_bwd_stub(dy.device(), p, dy.data_f32(), argmax.data_i32(), dx.data_f32());
      return std::vector<Tensor>{dx};
    });
  }
  return y;
}

Tensor global_avg_pool(const Tensor& x_in) {
  const char* op = "global_avg_pool";
  check_inputs(op, {{"input", &x_in}});
  check_ndim(op, "input", x_in, 4, "[N, C, H, W]");
  NL_CHECK(x_in.size(2) * x_in.size(3) > 0, op, ": empty spatial extent in shape ", x_in.shape());
  Tensor x = x_in.contiguous();
  int64_t NC = x.size(0) * x.size(1), HxW = x.size(2) * x.size(3);
  Tensor y = Tensor::empty({x.size(0), x.size(1), 1, 1}, DType::F32, x.device());
  global_avg_pool_fwd_stub(x.device(), NC, HxW, x.data_f32(), y.data_f32());
  if (any_requires_grad({&x})) {
    Shape s = x.shape();
    record_node(y, op, {&x}, [s, NC, HxW](const Tensor& dy) {
      Tensor dx = Tensor::empty(s, DType::F32, dy.device());
      global_avg_pool_bwd_stub(dy.device(), NC, HxW, dy.data_f32(), dx.data_f32());
      return std::vector<Tensor>{dx};
    });
  }
  return y;
}

}  // namespace nl
