// The CPU backend's one registration point: each op family's file registers its kernels (as the
// CUDA backend's kernels/cuda/register.cu), so adding a kernel touches only its family's file.
namespace nl::cpu {
void register_memory_kernels();
void register_elementwise_kernels();
void register_norm_kernels();
void register_conv_kernels();
void register_pooling_kernels();
void register_loss_kernels();
void register_optim_kernels();

void register_kernels() {
  register_memory_kernels();
  register_elementwise_kernels();
  register_norm_kernels();
  register_conv_kernels();
  register_pooling_kernels();
  register_loss_kernels();
  register_optim_kernels();
}

}  // namespace nl::cpu
