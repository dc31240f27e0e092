#pragma once
// The fusion planner: which layers of a Sequential run as one fused norm kernel.
#include <cstddef>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "normlab/nn/layers.h"

namespace nl::nn {

struct FusedRun {
  FusableNorm* norm = nullptr;  // null: layers[i] runs alone
  NormEpilogue epilogue;        // ReLU, dropout and residual folded into the norm
  size_t end = 0;               // the first layer after the run
};

// The run starting at layers[i]: `norm > [ReLU] > [Dropout]`, plus the residual add when the run
// ends the Sequential and `residual` (not yet added; null otherwise) has the shape of h. Nothing
// fuses when fusion is off, layers[i] is not a FusableNorm or the norm cannot fuse.
FusedRun plan_fused_run(const std::vector<std::pair<std::string, std::shared_ptr<Module>>>& layers, size_t i,
                        const Tensor& h, const Tensor* residual);

}  // namespace nl::nn
