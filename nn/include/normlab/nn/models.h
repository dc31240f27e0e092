#pragma once
// The comparison network of ../shared/design/comparison-recipe.md (43,600 parameters for 3-channel
// input with any norm of per-channel affine; FRN adds its thresholds tau, 216):
//   C1 C2 c3 P1 C3 C4 C5 c6 P2 C7 C8 C9 GAP c10, every Cn = conv3x3 (no bias) > norm > ReLU >
//   dropout(0.05), C4 C5 C8 C9 residual, cN = 1x1 conv, then log-softmax.
#include <memory>

#include "normlab/core/rng.h"
#include "normlab/nn/layers.h"
#include "normlab/nn/norms.h"

namespace nl::nn {

struct NetOptions : NormOptions {
  int64_t in_channels = 3;
  int64_t classes = 10;
  float dropout = 0.05f;
};

// Conv weights are drawn from `init` in layer order, so nets built from equal generators have
// equal weights for every norm; dropout draws from `dropout_gen`.
std::shared_ptr<Sequential> make_net(NormRef norm, Generator& init, Generator* dropout_gen,
                                     NetOptions o = {});

}  // namespace nl::nn
