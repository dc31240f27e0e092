#pragma once
// Per-device function tables, in the spirit of PyTorch's DispatchStub. Backends fill them through
// one explicit registration function each (see core/src/backends.cpp, the only file that knows
// which backends were built); self-registering static objects are avoided because static
// libraries silently drop them.
#include <array>
#include <chrono>
#include <cstdint>
#include <type_traits>
#include <vector>

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

// The CPU op profile (bench_train_step --profile on the CPU): while on, every CPU kernel this
// thread calls through a stub is timed, with the FLOPs and the least bytes of the call where its
// parameters say them (op_cost: convolutions, linear layers, norms, pooling; 0 for the rest). The
// GPU has its launch trace (launch_trace_begin) instead.
struct OpCost {
  double flops = 0, bytes = 0;
  int64_t shape[5] = {0, 0, 0, 0, 0};  // N C H W K of the call where it has them
};
struct OpRecord {
  const char* op;  // the stub: "conv2d_fwd", "norm_bwd", ...
  double us;
  OpCost cost;
};
void op_profile_begin();
std::vector<OpRecord> op_profile_end();
// The cost of a stub call from its arguments: this default knows nothing; the overloads for the
// parameter structs (end of kernel/stubs.h) are found by argument-dependent lookup.
template <typename... A>
OpCost op_cost(const A&...) {
  return {};
}
namespace detail {
extern thread_local bool op_profile_on;
void op_profile_record(const char* op, double us, const OpCost& cost);
}  // namespace detail

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

  R operator()(Device device, Args... args) const {
    if (device.type == DeviceType::CPU && detail::op_profile_on) return profiled(device, args...);
    return get(device)(args...);
  }
  const char* name() const { return name_; }

 private:
  R profiled(Device device, Args... args) const {
    using Clock = std::chrono::steady_clock;
    const FnPtr fn = get(device);
    const OpCost cost = op_cost(args...);
    const auto t0 = Clock::now();
    auto record = [&] {
      detail::op_profile_record(name_, std::chrono::duration<double, std::micro>(Clock::now() - t0).count(),
                                cost);
    };
    if constexpr (std::is_void_v<R>) {
      fn(args...);
      record();
    } else {
      R r = fn(args...);
      record();
      return r;
    }
  }
  const char* name_;
  std::array<FnPtr, kNumDeviceTypes> table_{};
};

}  // namespace nl
