#include "normlab/core/tensor.h"

#include <cstring>

#include "normlab/core/kernel/stubs.h"
#include "normlab/core/autograd.h"
#include "normlab/core/error.h"
#include "normlab/core/rng.h"

namespace nl {

std::vector<int64_t> contiguous_strides(const Shape& shape) {
  std::vector<int64_t> strides(static_cast<size_t>(shape.ndim()));
  int64_t s = 1;
  for (int64_t i = shape.ndim() - 1; i >= 0; --i) {
    strides[static_cast<size_t>(i)] = s;
    s *= shape[i];
  }
  return strides;
}

namespace {

void check_shape(const Shape& shape) {
  NL_CHECK(shape.ndim() <= kMaxDims, "tensors have at most ", kMaxDims, " dimensions, got shape ", shape);
  for (int64_t d : shape) NL_CHECK(d >= 0, "negative extent in shape ", shape);
}

std::shared_ptr<TensorImpl> make_impl(const Shape& shape, DType dtype, Device device) {
  check_shape(shape);
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>(static_cast<size_t>(shape.numel()) * dtype_size(dtype), device);
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  return impl;
}

int64_t wrap_dim(int64_t d, int64_t ndim, const char* what) {
  int64_t w = d < 0 ? d + ndim : d;
  NL_CHECK(w >= 0 && w < std::max<int64_t>(ndim, 1), what, ": dimension ", d,
           " is out of range for a tensor with ", ndim, " dimensions");
  return w;
}

// A tensor sharing t's storage with new geometry and no autograd history.
Tensor alias(const Tensor& t, const Shape& shape, std::vector<int64_t> strides, int64_t offset) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = t.impl()->storage;
  impl->shape = shape;
  impl->strides = std::move(strides);
  impl->offset = offset;
  impl->dtype = t.dtype();
  return Tensor(impl);
}

}  // namespace

// --- creation ------------------------------------------------------------------------------

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  return Tensor(make_impl(shape, dtype, device));
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  // All-zero bits are 0.0f and 0 alike, so one fill serves both dtypes.
  fill_stub(device, t.numel(), 0.0f, static_cast<float*>(t.impl()->storage->data()));
  return t;
}

Tensor Tensor::full(const Shape& shape, float value, Device device) {
  Tensor t = empty(shape, DType::F32, device);
  fill_stub(device, t.numel(), value, t.data_f32());
  return t;
}

Tensor Tensor::from_vector(const std::vector<float>& values, const Shape& shape, Device device) {
  NL_CHECK(static_cast<int64_t>(values.size()) == shape.numel(), "from_vector: ", values.size(),
           " values do not fill shape ", shape, " (", shape.numel(), " elements)");
  Tensor t = empty(shape, DType::F32, device);
  copy_bytes_stub(device, t.data_f32(), values.data(), values.size() * sizeof(float), device, Device::cpu());
  return t;
}

Tensor Tensor::from_ints(const std::vector<int32_t>& values, const Shape& shape, Device device) {
  NL_CHECK(static_cast<int64_t>(values.size()) == shape.numel(), "from_ints: ", values.size(),
           " values do not fill shape ", shape, " (", shape.numel(), " elements)");
  Tensor t = empty(shape, DType::I32, device);
  copy_bytes_stub(device, t.data_i32(), values.data(), values.size() * sizeof(int32_t), device,
                  Device::cpu());
  return t;
}

Tensor Tensor::randn(const Shape& shape, Generator& gen, Device device) {
  check_shape(shape);
  std::vector<float> v(static_cast<size_t>(shape.numel()));
  for (float& x : v) x = gen.next_normal();
  return from_vector(v, shape, device);
}

Tensor Tensor::uniform(const Shape& shape, float lo, float hi, Generator& gen, Device device) {
  check_shape(shape);
  NL_CHECK(lo <= hi, "uniform: empty range [", lo, ", ", hi, ")");
  std::vector<float> v(static_cast<size_t>(shape.numel()));
  for (float& x : v) x = lo + (hi - lo) * gen.next_uniform();
  return from_vector(v, shape, device);
}

// --- metadata ------------------------------------------------------------------------------

const TensorImpl& Tensor::checked() const {
  NL_CHECK(impl_ != nullptr, "use of an undefined (default-constructed) tensor");
  return *impl_;
}
const Shape& Tensor::shape() const { return checked().shape; }
int64_t Tensor::size(int64_t d) const { return shape()[wrap_dim(d, dim(), "size")]; }
const std::vector<int64_t>& Tensor::strides() const { return checked().strides; }
int64_t Tensor::offset() const { return checked().offset; }
DType Tensor::dtype() const { return checked().dtype; }
Device Tensor::device() const { return checked().storage->device(); }

bool Tensor::is_contiguous() const {
  const TensorImpl& t = checked();
  int64_t expected = 1;
  for (int64_t i = t.shape.ndim() - 1; i >= 0; --i) {
    if (t.shape[i] != 1 && t.strides[static_cast<size_t>(i)] != expected) return false;
    expected *= t.shape[i];
  }
  return true;
}

// --- views and copies ----------------------------------------------------------------------

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  const TensorImpl& t = checked();
  Tensor out = empty(t.shape, t.dtype, device());
  StridedCopyParams p{};
  p.ndim = t.shape.ndim();
  p.numel = t.shape.numel();
  for (int64_t i = 0; i < p.ndim; ++i) {
    p.shape[i] = t.shape[i];
    p.src_strides[i] = t.strides[static_cast<size_t>(i)];
  }
  auto* base = static_cast<const uint32_t*>(t.storage->data()) + t.offset;
  copy_strided_stub(device(), p, base, static_cast<uint32_t*>(out.impl()->storage->data()));
  if (any_requires_grad({this})) {
    record_node(out, "contiguous", {this}, [](const Tensor& g) { return std::vector<Tensor>{g}; });
  }
  return out;
}

Tensor Tensor::view(const Shape& new_shape) const {
  const TensorImpl& t = checked();
  check_shape(new_shape);
  NL_CHECK(new_shape.numel() == t.shape.numel(), "view: cannot view a tensor of shape ", t.shape, " (",
           t.shape.numel(), " elements) as ", new_shape, " (", new_shape.numel(), " elements)");
  NL_CHECK(is_contiguous(), "view: tensor of shape ", t.shape,
           " is not contiguous; call contiguous() first or use reshape()");
  Tensor out = alias(*this, new_shape, contiguous_strides(new_shape), t.offset);
  if (any_requires_grad({this})) {
    Shape in_shape = t.shape;
    record_node(out, "view", {this},
                [in_shape](const Tensor& g) { return std::vector<Tensor>{g.reshape(in_shape)}; });
  }
  return out;
}

Tensor Tensor::reshape(const Shape& new_shape) const {
  return is_contiguous() ? view(new_shape) : contiguous().view(new_shape);
}

Tensor Tensor::flatten(int64_t start_dim, int64_t end_dim) const {
  int64_t nd = dim();
  if (nd == 0) return reshape({1});
  int64_t s = wrap_dim(start_dim, nd, "flatten");
  int64_t e = wrap_dim(end_dim, nd, "flatten");
  NL_CHECK(s <= e, "flatten: start_dim ", start_dim, " comes after end_dim ", end_dim);
  std::vector<int64_t> dims;
  for (int64_t i = 0; i < s; ++i) dims.push_back(shape()[i]);
  int64_t m = 1;
  for (int64_t i = s; i <= e; ++i) m *= shape()[i];
  dims.push_back(m);
  for (int64_t i = e + 1; i < nd; ++i) dims.push_back(shape()[i]);
  return reshape(Shape(dims));
}

Tensor Tensor::transpose(int64_t d0, int64_t d1) const {
  const TensorImpl& t = checked();
  int64_t a = wrap_dim(d0, dim(), "transpose"), b = wrap_dim(d1, dim(), "transpose");
  Shape s = t.shape;
  std::vector<int64_t> st = t.strides;
  std::swap(s[a], s[b]);
  std::swap(st[static_cast<size_t>(a)], st[static_cast<size_t>(b)]);
  Tensor out = alias(*this, s, st, t.offset);
  if (any_requires_grad({this})) {
    record_node(out, "transpose", {this},
                [a, b](const Tensor& g) { return std::vector<Tensor>{g.transpose(a, b)}; });
  }
  return out;
}

Tensor Tensor::clone() const { return to(device()); }

Tensor Tensor::to(Device target) const {
  Tensor out = empty(shape(), dtype(), target);
  out.copy_(*this);
  return out;
}

void Tensor::copy_(const Tensor& src) const {
  NL_CHECK(src.shape() == shape(), "copy_: source of shape ", src.shape(), " into a tensor of shape ",
           shape());
  NL_CHECK(src.dtype() == dtype(), "copy_: source of dtype ", src.dtype(), " into ", dtype());
  NL_CHECK(is_contiguous(), "copy_: destination of shape ", shape(), " is not contiguous");
  Tensor s = src.detach().contiguous();
  Device runner = device().is_cpu() ? s.device() : device();
  copy_bytes_stub(runner, static_cast<uint32_t*>(impl_->storage->data()) + offset(),
                  static_cast<const uint32_t*>(s.impl()->storage->data()) + s.offset(),
                  static_cast<size_t>(numel()) * dtype_size(dtype()), device(), s.device());
}

// --- raw data -------------------------------------------------------------------------------

float* Tensor::data_f32() const {
  const TensorImpl& t = checked();
  NL_CHECK(t.dtype == DType::F32, "expected a float32 tensor, got ", t.dtype, " of shape ", t.shape);
  NL_CHECK(is_contiguous(), "raw data of a non-contiguous tensor of shape ", t.shape,
           " was requested; call contiguous() first");
  return static_cast<float*>(t.storage->data()) + t.offset;
}

int32_t* Tensor::data_i32() const {
  const TensorImpl& t = checked();
  NL_CHECK(t.dtype == DType::I32, "expected an int32 tensor, got ", t.dtype, " of shape ", t.shape);
  NL_CHECK(is_contiguous(), "raw data of a non-contiguous tensor of shape ", t.shape,
           " was requested; call contiguous() first");
  return static_cast<int32_t*>(t.storage->data()) + t.offset;
}

int64_t Tensor::linear_index(std::initializer_list<int64_t> index) const {
  const TensorImpl& t = checked();
  NL_CHECK(static_cast<int64_t>(index.size()) == t.shape.ndim(), "index with ", index.size(),
           " coordinates for a tensor of shape ", t.shape);
  int64_t off = t.offset, i = 0;
  for (int64_t c : index) {
    NL_CHECK(c >= 0 && c < t.shape[i], "index ", c, " is out of range for dimension ", i,
             " of a tensor of shape ", t.shape);
    off += c * t.strides[static_cast<size_t>(i)];
    ++i;
  }
  return off;
}

// One element through copy_bytes, so element access works on every device (slowly off the
// CPU: it is meant for tests and small host code, not loops over big tensors).
float Tensor::at(std::initializer_list<int64_t> index) const {
  const int64_t off = linear_index(index);
  uint32_t bits = 0;
  copy_bytes_stub(device(), &bits, static_cast<const uint32_t*>(impl_->storage->data()) + off, sizeof bits,
                  Device::cpu(), device());
  if (dtype() == DType::I32) {
    int32_t v;
    std::memcpy(&v, &bits, sizeof v);
    return static_cast<float>(v);
  }
  float v;
  std::memcpy(&v, &bits, sizeof v);
  return v;
}

void Tensor::set(std::initializer_list<int64_t> index, float value) const {
  const int64_t off = linear_index(index);
  uint32_t bits;
  if (dtype() == DType::I32) {
    const int32_t v = static_cast<int32_t>(value);
    std::memcpy(&bits, &v, sizeof bits);
  } else {
    std::memcpy(&bits, &value, sizeof bits);
  }
  copy_bytes_stub(device(), static_cast<uint32_t*>(impl_->storage->data()) + off, &bits, sizeof bits,
                  device(), Device::cpu());
}

float Tensor::item() const {
  NL_CHECK(numel() == 1, "item() needs a one-element tensor, got shape ", shape());
  std::vector<float> v = to_vector();
  return v[0];
}

std::vector<float> Tensor::to_vector() const {
  NL_CHECK(dtype() == DType::F32, "to_vector() reads float32, the tensor is ", dtype(),
           "; use to_int_vector()");
  Tensor host = to(Device::cpu());
  return std::vector<float>(host.data_f32(), host.data_f32() + host.numel());
}

std::vector<int32_t> Tensor::to_int_vector() const {
  NL_CHECK(dtype() == DType::I32, "to_int_vector() reads int32, the tensor is ", dtype());
  Tensor host = to(Device::cpu());
  return std::vector<int32_t>(host.data_i32(), host.data_i32() + host.numel());
}

// --- autograd --------------------------------------------------------------------------------

bool Tensor::requires_grad() const { return checked().requires_grad; }

Tensor& Tensor::set_requires_grad(bool value) {
  NL_CHECK(is_leaf(),
           "set_requires_grad: only leaf tensors can change requires_grad; "
           "use detach() to cut a computed tensor from its graph");
  NL_CHECK(!value || dtype() == DType::F32, "only float32 tensors can require grad");
  impl_->requires_grad = value;
  return *this;
}

Tensor Tensor::grad() const {
  const TensorImpl& t = checked();
  return t.grad ? Tensor(t.grad) : Tensor();
}

void Tensor::set_grad(const Tensor& g) const {
  checked();
  if (g.defined()) {
    NL_CHECK(g.shape() == shape(), "set_grad: gradient of shape ", g.shape(), " for a tensor of shape ",
             shape());
    NL_CHECK(g.device() == device(), "set_grad: gradient on ", g.device(), " for a tensor on ", device());
  }
  impl_->grad = g.impl();
}

void Tensor::zero_grad() const { checked(), impl_->grad.reset(); }

Tensor Tensor::view_at(int64_t at, const Shape& shape) const {
  const TensorImpl& t = checked();
  NL_CHECK(is_contiguous(), "view_at: needs a contiguous tensor, got a view of shape ", t.shape);
  check_shape(shape);
  NL_CHECK(at >= 0 && at + shape.numel() <= numel(), "view_at: elements [", at, ", ", at + shape.numel(),
           ") are outside a tensor of ", numel());
  return alias(*this, shape, contiguous_strides(shape), t.offset + at);
}

Tensor Tensor::detach() const {
  const TensorImpl& t = checked();
  return alias(*this, t.shape, t.strides, t.offset);
}

const std::shared_ptr<Node>& Tensor::grad_fn() const { return checked().grad_fn; }

void Tensor::backward(const Tensor& grad) const { nl::backward(*this, grad); }

std::ostream& operator<<(std::ostream& os, const Tensor& t) {
  if (!t.defined()) return os << "Tensor(undefined)";
  return os << "Tensor(" << t.shape() << ", " << t.dtype() << ", " << t.device() << ")";
}

}  // namespace nl
