#pragma once
// The comparison network of ../shared/design/comparison-recipe.md (43,600 parameters for 3-channel
// input with any norm of per-channel affine; FRN adds its thresholds tau, 216):
//   C1 C2 c3 P1 C3 C4 C5 c6 P2 C7 C8 C9 GAP c10, every Cn = conv3x3 (no bias) > norm > ReLU >
//   dropout(0.05), C4 C5 C8 C9 residual, cN = 1x1 conv, then log-softmax.
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "normlab/core/ops.h"
#include "normlab/core/rng.h"
#include "normlab/nn/layers.h"

namespace compare {

struct NetOptions {
  int64_t in_channels = 3;
  int64_t classes = 10;
  int64_t groups = 4;       // GroupNorm
  int64_t ghost_batch = 32;  // Ghost BatchNorm's micro-batch (samples)
  float eps = 0.0f;          // every norm's eps; 0: each variant's own default
  float dropout = 0.05f;
  // SyncBatchNorm's (sbn) group: its statistics are summed over these processes; null (one
  // process): sbn is BatchNorm.
  nl::CrossProcessSum* sync = nullptr;
};

// The norms the app compares: one row each in norm_variants() (model.cpp), the only place that
// knows them. Everything else (flags, file names, report titles, the network) reads the row.
struct NormVariant {
  std::string key;    // --norms key, file names, results.json: "bn"
  std::string title;  // the report's name: "BatchNorm"
  std::function<std::shared_ptr<nl::nn::Module>(int64_t channels, const NetOptions&)> make;
  // The norm brings its own activation (FRN's TLU): the block has no ReLU after it.
  bool own_activation = false;
  // The conv before the norm uses Weight Standardization (nn::Conv2d::weight_standardization).
  bool weight_standardization = false;
};
const std::vector<NormVariant>& norm_variants();

// A row of norm_variants(); compare with ==.
using NormKind = const NormVariant*;
NormKind parse_norm(const std::string& key);  // throws naming the known keys
std::string norm_key(NormKind k);
std::string norm_title(NormKind k);
std::string norm_keys();  // "bn (BatchNorm), gn (GroupNorm), ln (LayerNorm)", for help and errors

// Conv weights are drawn from `init` in layer order, so nets built from equal generators have
// equal weights for every norm; dropout draws from `dropout_gen`.
std::shared_ptr<nl::nn::Sequential> make_net(NormKind norm, nl::Generator& init,
                                             nl::Generator* dropout_gen, NetOptions o = {});

}  // namespace compare
