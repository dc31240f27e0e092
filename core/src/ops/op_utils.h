#pragma once
// Input checks shared by the functional ops: every message names the op and the argument.
#include <initializer_list>
#include <utility>

#include "normlab/core/autograd.h"
#include "normlab/core/error.h"
#include "normlab/core/tensor.h"

namespace nl::detail {

struct Arg {
  const char* name;
  const Tensor* t;
};

// Checks that every defined argument is float32 and on the first argument's device.
inline void check_inputs(const char* op, std::initializer_list<Arg> args) {
  const Tensor* first = nullptr;
  for (const Arg& a : args) {
    if (!a.t->defined()) continue;
    NL_CHECK(a.t->dtype() == DType::F32, op, ": ", a.name, " must be float32, got ", a.t->dtype());
    if (!first) {
      first = a.t;
      continue;
    }
    NL_CHECK(a.t->device() == first->device(), op, ": ", a.name, " is on ", a.t->device(), " but ",
             args.begin()->name, " is on ", first->device(), "; move them to one device with .to()");
  }
}

inline void check_ndim(const char* op, const char* name, const Tensor& t, int64_t ndim, const char* layout) {
  NL_CHECK(t.dim() == ndim, op, ": ", name, " must be ", ndim, "-D ", layout, ", got shape ", t.shape());
}

inline void check_vec(const char* op, const char* name, const Tensor& t, int64_t n) {
  if (!t.defined()) return;
  NL_CHECK(t.dim() == 1 && t.size(0) == n, op, ": ", name, " must have shape [", n, "], got ", t.shape());
}

// Kernel pointer of an optional tensor (null when undefined).
inline const float* opt_ptr(const Tensor& t) { return t.defined() ? t.data_f32() : nullptr; }
inline float* opt_mut(const Tensor& t) { return t.defined() ? t.data_f32() : nullptr; }

// An output-shaped gradient buffer when the input needs one, else undefined.
inline Tensor grad_buffer(bool needed, const Tensor& like) {
  return needed ? Tensor::empty(like.shape(), DType::F32, like.device()) : Tensor();
}

// A saved input: same data, no history (a node must not keep its inputs' graph alive twice).
inline Tensor save(const Tensor& t) { return t.defined() ? t.detach() : Tensor(); }

inline bool needs(const Tensor& t) { return t.defined() && t.requires_grad(); }

}  // namespace nl::detail
