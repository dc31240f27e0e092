#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "normlab/core/dispatch.h"

// The suite's tolerances are FP32's: CUDA convolutions run their FP32 kernels here unless a test
// asks for TF32 (the "[tf32]" cases hold the tensor-core path to its own derived bound).
int main(int argc, char** argv) {
  nl::set_conv_tf32(false);
  return Catch::Session().run(argc, argv);
}
