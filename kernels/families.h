#pragma once
// The op families every backend implements, one file each (kernels/cpu/<family>.cpp,
// kernels/cuda/<family>.cu), each ending in its register_<family>_kernels(). Both backends'
// registration points expand this list, so a family missing from a backend fails to link.
#define NL_KERNEL_FAMILIES(X) X(memory) X(elementwise) X(norm) X(conv) X(pooling) X(loss) X(optim)

#define NL_DECLARE_FAMILY_REGISTRATION(family) void register_##family##_kernels();
#define NL_CALL_FAMILY_REGISTRATION(family) register_##family##_kernels();
