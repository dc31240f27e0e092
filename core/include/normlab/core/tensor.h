#pragma once
// Tensor: a strided view of refcounted Storage, with a device tag and autograd metadata.
// Copying a Tensor is cheap and aliases the same data (like torch.Tensor); clone() copies data.
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <vector>

#include "normlab/core/device.h"
#include "normlab/core/shape.h"
#include "normlab/core/storage.h"

namespace nl {

class Generator;
struct Node;
struct TensorImpl;

class Tensor {
 public:
  Tensor() = default;

  // --- creation ---------------------------------------------------------------------------
  static Tensor empty(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu());
  static Tensor zeros(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu());
  static Tensor full(const Shape& shape, float value, Device device = Device::cpu());
  static Tensor ones(const Shape& shape, Device device = Device::cpu()) { return full(shape, 1.0f, device); }
  static Tensor from_vector(const std::vector<float>& values, const Shape& shape,
                            Device device = Device::cpu());
  static Tensor from_ints(const std::vector<int32_t>& values, const Shape& shape,
                          Device device = Device::cpu());
  // N(0, 1) and U[lo, hi) from a seeded generator (reproducible across runs and machines).
  static Tensor randn(const Shape& shape, Generator& gen, Device device = Device::cpu());
  static Tensor uniform(const Shape& shape, float lo, float hi, Generator& gen,
                        Device device = Device::cpu());

  // --- metadata ---------------------------------------------------------------------------
  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const;
  int64_t dim() const { return shape().ndim(); }
  int64_t size(int64_t d) const;  // negative d counts from the end
  int64_t numel() const { return shape().numel(); }
  const std::vector<int64_t>& strides() const;
  int64_t offset() const;
  DType dtype() const;
  Device device() const;
  bool is_contiguous() const;

  // --- views and copies (autograd-aware) ----------------------------------------------------
  Tensor contiguous() const;
  Tensor view(const Shape& shape) const;     // requires a contiguous tensor; shares storage
  Tensor reshape(const Shape& shape) const;  // view when possible, else a contiguous copy
  Tensor flatten(int64_t start_dim = 0, int64_t end_dim = -1) const;
  Tensor transpose(int64_t d0, int64_t d1) const;  // a strided (non-contiguous) view
  // A contiguous view of `shape` starting `at` elements into this contiguous tensor, sharing its
  // storage, without autograd history (flat buffers cut into pieces: nl::dist's gradient buckets).
  Tensor view_at(int64_t at, const Shape& shape) const;
  Tensor clone() const;
  Tensor to(Device device) const;  // copy to another device (not recorded by autograd)
  // Overwrites this tensor's elements in place with src's (same shape and dtype, any device);
  // not recorded by autograd. This tensor must be contiguous.
  void copy_(const Tensor& src) const;

  // --- raw data ------------------------------------------------------------------------------
  // Pointers to the first element; require the dtype and a contiguous layout, so kernels can
  // assume dense memory.
  float* data_f32() const;
  int32_t* data_i32() const;
  // Element access for tests and small host code: bounds-checked, any device (one copy per
  // call, so not for loops over large device tensors).
  float at(std::initializer_list<int64_t> index) const;
  void set(std::initializer_list<int64_t> index, float value) const;
  float item() const;  // the value of a one-element tensor (copies from the device if needed)
  std::vector<float> to_vector() const;  // logical order, any device, any layout
  std::vector<int32_t> to_int_vector() const;

  // --- autograd ------------------------------------------------------------------------------
  bool requires_grad() const;
  // Marks a leaf tensor as a parameter whose .grad() backward() fills.
  Tensor& set_requires_grad(bool value = true);
  Tensor grad() const;  // undefined until a backward reaches this tensor
  void set_grad(const Tensor& g) const;
  void zero_grad() const;  // drops the gradient (the next backward starts from zero)
  Tensor detach() const;   // same data, no history
  const std::shared_ptr<Node>& grad_fn() const;
  bool is_leaf() const { return grad_fn() == nullptr; }
  // Backpropagates from this tensor. grad defaults to ones for a one-element tensor.
  void backward(const Tensor& grad = Tensor()) const;

  // For ops and the autograd engine.
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}
  const std::shared_ptr<TensorImpl>& impl() const { return impl_; }
  bool same(const Tensor& other) const { return impl_ == other.impl_; }

 private:
  const TensorImpl& checked() const;
  int64_t linear_index(std::initializer_list<int64_t> index) const;
  std::shared_ptr<TensorImpl> impl_;
};

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape shape;
  std::vector<int64_t> strides;
  int64_t offset = 0;  // in elements
  DType dtype = DType::F32;
  // autograd
  bool requires_grad = false;
  std::shared_ptr<TensorImpl> grad;
  std::shared_ptr<Node> grad_fn;
};

std::vector<int64_t> contiguous_strides(const Shape& shape);
std::ostream& operator<<(std::ostream& os, const Tensor& t);  // shape, dtype, device

}  // namespace nl
