// The CPU backend's one registration point: each op family's file registers its kernels (as the
// CUDA backend's kernels/cuda/register.cu), so adding a kernel touches only its family's file.
#include "kernels/families.h"

namespace nl::cpu {
NL_KERNEL_FAMILIES(NL_DECLARE_FAMILY_REGISTRATION)

void register_kernels() { NL_KERNEL_FAMILIES(NL_CALL_FAMILY_REGISTRATION) }

}  // namespace nl::cpu
