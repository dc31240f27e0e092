// add, mul, sum, relu, dropout.
#include "normlab/core/kernel/stubs.h"
#include "normlab/core/ops.h"
#include "op_utils.h"

namespace nl {
using namespace detail;

namespace {
void check_same_shape(const char* op, const Tensor& a, const Tensor& b) {
  NL_CHECK(a.shape() == b.shape(), op, ": shapes ", a.shape(), " and ", b.shape(),
           " differ (no broadcasting)");
}
}  // namespace

Tensor add(const Tensor& a_in, const Tensor& b_in) {
  check_inputs("add", {{"a", &a_in}, {"b", &b_in}});
  check_same_shape("add", a_in, b_in);
  Tensor a = a_in.contiguous(), b = b_in.contiguous();
  Tensor y = Tensor::empty(a.shape(), DType::F32, a.device());
  add_fwd_stub(a.device(), a.numel(), a.data_f32(), b.data_f32(), y.data_f32());
  if (any_requires_grad({&a, &b})) {
    record_node(y, "add", {&a, &b}, [](const Tensor& g) { return std::vector<Tensor>{g, g}; });
  }
  return y;
}

std::vector<int64_t> nonfinite_counts(const std::vector<Tensor>& xs) {
  std::vector<int64_t> out(xs.size(), 0);
  std::vector<Tensor> dense(xs.size());
  for (size_t i = 0; i < xs.size(); ++i) {
    if (!xs[i].defined()) continue;
    NL_CHECK(xs[i].dtype() == DType::F32, "nonfinite_counts: tensor ", i, " must be float32");
    dense[i] = xs[i].contiguous();
  }
  // Group by device, then in chunks of NonfiniteParams::kMaxTensors: one launch and one copy each.
  std::vector<bool> done(xs.size(), false);
  for (size_t first = 0; first < xs.size(); ++first) {
    if (done[first] || !dense[first].defined()) continue;
    const Device dev = dense[first].device();
    std::vector<size_t> idx;
    for (size_t i = first; i < xs.size(); ++i)
      if (!done[i] && dense[i].defined() && dense[i].device() == dev) idx.push_back(i), done[i] = true;
    for (size_t c = 0; c < idx.size(); c += NonfiniteParams::kMaxTensors) {
      NonfiniteParams p{};
      p.count = static_cast<int>(std::min<size_t>(NonfiniteParams::kMaxTensors, idx.size() - c));
      for (int t = 0; t < p.count; ++t) {
        p.x[t] = dense[idx[c + t]].data_f32();
        p.n[t] = dense[idx[c + t]].numel();
      }
      Tensor counts = Tensor::empty({p.count}, DType::I32, dev);
      nonfinite_count_stub(dev, p, counts.data_i32());
      const std::vector<int32_t> host = counts.to_int_vector();
      for (int t = 0; t < p.count; ++t) out[idx[c + t]] = host[static_cast<size_t>(t)];
    }
  }
  return out;
}

Tensor mul(const Tensor& a_in, const Tensor& b_in) {
  check_inputs("mul", {{"a", &a_in}, {"b", &b_in}});
  check_same_shape("mul", a_in, b_in);
  Tensor a = a_in.contiguous(), b = b_in.contiguous();
  Tensor y = Tensor::empty(a.shape(), DType::F32, a.device());
  mul_fwd_stub(a.device(), a.numel(), a.data_f32(), b.data_f32(), y.data_f32());
  if (any_requires_grad({&a, &b})) {
    Tensor sa = a.detach(), sb = b.detach();
    bool ga = needs(a), gb = needs(b);
    record_node(y, "mul", {&a, &b}, [sa, sb, ga, gb](const Tensor& g) {
      Tensor da, db;
      if (ga) da = mul(g, sb);
      if (gb) db = mul(g, sa);
      return std::vector<Tensor>{da, db};
    });
  }
  return y;
}

Tensor sum(const Tensor& x_in) {
  check_inputs("sum", {{"x", &x_in}});
  Tensor x = x_in.contiguous();
  Tensor y = Tensor::empty({}, DType::F32, x.device());
  sum_fwd_stub(x.device(), x.numel(), x.data_f32(), y.data_f32());
  if (any_requires_grad({&x})) {
    Shape s = x.shape();
    record_node(y, "sum", {&x}, [s](const Tensor& g) {
      Tensor dx = Tensor::empty(s, DType::F32, g.device());
      sum_bwd_stub(g.device(), dx.numel(), g.data_f32(), dx.data_f32());
      return std::vector<Tensor>{dx};
    });
  }
  return y;
}

Tensor relu(const Tensor& x_in) {
  check_inputs("relu", {{"x", &x_in}});
  Tensor x = x_in.contiguous();
  Tensor y = Tensor::empty(x.shape(), DType::F32, x.device());
  relu_fwd_stub(x.device(), x.numel(), x.data_f32(), y.data_f32());
  if (any_requires_grad({&x})) {
    // Saves the output (detached: the node must not own the tensor that owns the node).
    Tensor sy = y.detach();
    record_node(y, "relu", {&x}, [sy](const Tensor& g) {
      Tensor dx = Tensor::empty(sy.shape(), DType::F32, sy.device());
      relu_bwd_stub(sy.device(), sy.numel(), sy.data_f32(), g.data_f32(), dx.data_f32());
      return std::vector<Tensor>{dx};
    });
  }
  return y;
}

Tensor dropout(const Tensor& x_in, float p, bool training, Generator* gen) {
  check_inputs("dropout", {{"x", &x_in}});
  NL_CHECK(p >= 0.0f && p < 1.0f, "dropout: probability must be in [0, 1), got ", p);
  if (!training || p == 0.0f) return x_in;
  Tensor x = x_in.contiguous();
  Generator& g = gen ? *gen : default_generator();
  DropoutParams params{x.numel(), p, g.seed(), g.reserve(static_cast<uint64_t>(x.numel()))};
  Tensor y = Tensor::empty(x.shape(), DType::F32, x.device());
  dropout_fwd_stub(x.device(), params, x.data_f32(), y.data_f32());
  if (any_requires_grad({&x})) {
    record_node(y, "dropout", {&x}, [params](const Tensor& grad) {
      Tensor dx = Tensor::empty(grad.shape(), DType::F32, grad.device());
      dropout_bwd_stub(grad.device(), params, grad.data_f32(), dx.data_f32());
      return std::vector<Tensor>{dx};
    });
  }
  return y;
}

}  // namespace nl
