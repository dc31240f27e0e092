// Compiled by scripts/check-nvcc.sh only: ptxas checks the inline PTX of cuda_common.h's
// warp-level primitives through the test kernels that use them.
#include "tests/cuda/primitive_kernels.cuh"
