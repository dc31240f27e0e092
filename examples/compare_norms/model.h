#pragma once
// The comparison network of ../shared/design/comparison-recipe.md (43,600 parameters for 3-channel
// input, whatever the norm):
//   C1 C2 c3 P1 C3 C4 C5 c6 P2 C7 C8 C9 GAP c10, every Cn = conv3x3 (no bias) > norm > ReLU >
//   dropout(0.05), C4 C5 C8 C9 residual, cN = 1x1 conv, then log-softmax.
#include <memory>
#include <string>

#include "normlab/core/rng.h"
#include "normlab/nn/layers.h"

namespace compare {

enum class NormKind { Batch, Group, Layer };

NormKind parse_norm(const std::string& name);  // "bn", "gn", "ln"
std::string norm_key(NormKind k);                // "bn", "gn", "ln"
std::string norm_title(NormKind k);              // "BatchNorm", "GroupNorm", "LayerNorm"

struct NetOptions {
  int64_t in_channels = 3;
  int64_t classes = 10;
  int64_t groups = 4;     // GroupNorm
  float dropout = 0.05f;
};

// Conv weights are drawn from `init` in layer order, so nets built from equal generators have
// equal weights for every norm; dropout draws from `dropout_gen`.
std::shared_ptr<nl::nn::Sequential> make_net(NormKind norm, nl::Generator& init,
                                             nl::Generator* dropout_gen, NetOptions o = {});

}  // namespace compare
