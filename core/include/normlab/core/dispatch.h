#pragma once
// Per-device function tables, in the spirit of PyTorch's DispatchStub. Backends fill them through
// one explicit registration function each (see core/src/backends.cpp, the only file that knows
// which backends were built); self-registering static objects are avoided because static
// libraries silently drop them.
#include <array>

#include "normlab/core/device.h"
#include "normlab/core/error.h"
#include "normlab/core/kernel/params.h"

namespace nl {

// Runs every backend's registration function once; called lazily by the first stub lookup.
void ensure_backends_registered();
// A short description of what this build contains, for error messages ("cpu", "cpu, cuda").
const char* built_backends();

// Whether CUDA convolutions may use TF32 tensor cores (inputs rounded to a 10-bit mantissa,
// products summed in FP32: about 3 significant digits per product instead of 7). On by default,
// as PyTorch's torch.backends.cudnn.allow_tf32; NORMLAB_CONV_TF32=0 in the environment or
// set_conv_tf32(false) selects the FP32 kernels. Linear layers stay FP32 (PyTorch's default for
// matmul). The CPU always computes in FP32. Read when an op is called.
void set_conv_tf32(bool allow);
bool conv_tf32();

// Which CUDA convolution kernels run (ConvAlgo in kernel/params.h): "auto" by default, "gemm"
// forces the general implicit GEMM. NORMLAB_CONV_ALGO=auto|gemm in the environment or
// set_conv_algo(). Results differ only by the order of FP32 sums. Read when an op is called.
void set_conv_algo(ConvAlgo algo);
ConvAlgo conv_algo();

template <typename Fn>
class DispatchStub;

template <typename R, typename... Args>
class DispatchStub<R(Args...)> {
 public:
  using FnPtr = R (*)(Args...);

  explicit constexpr DispatchStub(const char* name) : name_(name) {}
  DispatchStub(const DispatchStub&) = delete;
  DispatchStub& operator=(const DispatchStub&) = delete;

  void set(DeviceType type, FnPtr fn) { table_[static_cast<size_t>(type)] = fn; }

  FnPtr get(Device device) const {
    ensure_backends_registered();
    FnPtr fn = table_[static_cast<size_t>(device.type)];
    NL_CHECK(fn != nullptr, "op '", name_, "' has no kernel for device ", device,
             " (this build has backends: ", built_backends(), ")");
    return fn;
  }

  R operator()(Device device, Args... args) const { return get(device)(args...); }
  const char* name() const { return name_; }

 private:
  const char* name_;
  std::array<FnPtr, kNumDeviceTypes> table_{};
};

}  // namespace nl
