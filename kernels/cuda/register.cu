// The CUDA backend's one registration point: each op family's file registers its kernels.
#include "kernels/families.h"

namespace nl::cuda {
NL_KERNEL_FAMILIES(NL_DECLARE_FAMILY_REGISTRATION)

void register_kernels() { NL_KERNEL_FAMILIES(NL_CALL_FAMILY_REGISTRATION) }

}  // namespace nl::cuda
