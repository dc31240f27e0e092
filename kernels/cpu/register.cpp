// The CPU backend's one registration point. Each kernel is declared here through its stub's
// function type, so a kernel whose signature drifts from the stub fails to link.
#include "kernels/stubs.h"
#include "normlab/core/storage.h"

namespace nl::cpu {

Allocator& allocator();

#define NL_CPU_KERNELS(X)                                                                   \
  X(copy_bytes) X(copy_strided) X(fill) X(add_fwd) X(mul_fwd) X(sum_fwd) X(sum_bwd)          \
  X(nonfinite_count) X(relu_fwd) X(relu_bwd) X(dropout_fwd) X(dropout_bwd) X(conv2d_fwd)        \
  X(conv2d_bwd)                                                                             \
  X(batch_norm_fwd) X(batch_norm_bwd) X(group_norm_fwd) X(group_norm_bwd) X(layer_norm_fwd)  \
  X(layer_norm_bwd) X(max_pool2d_fwd) X(max_pool2d_bwd) X(global_avg_pool_fwd)               \
  X(global_avg_pool_bwd) X(linear_fwd) X(linear_bwd) X(log_softmax_fwd) X(log_softmax_bwd)   \
  X(nll_loss_fwd) X(nll_loss_bwd) X(sgd_step) X(adam_step)

#define NL_DECLARE_KERNEL(name) name##_fn name;
NL_CPU_KERNELS(NL_DECLARE_KERNEL)
#undef NL_DECLARE_KERNEL

void register_kernels() {
  set_allocator(DeviceType::CPU, &allocator());
#define NL_REGISTER_KERNEL(name) name##_stub.set(DeviceType::CPU, &name);
  NL_CPU_KERNELS(NL_REGISTER_KERNEL)
#undef NL_REGISTER_KERNEL
}

}  // namespace nl::cpu
