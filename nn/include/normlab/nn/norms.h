#pragma once
// The norm family's registry: key -> a norm layer with its title and defaults. The one place that
// knows the variants; the comparison network (models.h), compare_norms, normlab_study, the
// benchmarks and the tests read its rows. A new variant is a row here and a row in the tests' norm
// table (tests/test_norm_table.cpp).
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "normlab/core/ops.h"
#include "normlab/nn/module.h"

namespace nl::nn {

// What a norm's constructor may read beyond the channel count.
struct NormOptions {
  int64_t groups = 4;        // GroupNorm and GN+WS
  int64_t ghost_batch = 32;  // Ghost BatchNorm's micro-batch (samples)
  float eps = 0.0f;          // 0: each variant's own default
  // SyncBatchNorm's (sbn) group: its statistics are summed over these processes; null (one
  // process): sbn is BatchNorm.
  CrossProcessSum* sync = nullptr;
};

struct NormVariant {
  std::string key;    // --norms key, file names, results.json: "bn"
  std::string title;  // the report's name: "BatchNorm"
  std::function<std::shared_ptr<Module>(int64_t channels, const NormOptions&)> make;
  // The norm brings its own activation (FRN's TLU): the block has no ReLU after it.
  bool own_activation = false;
  // The conv before the norm uses Weight Standardization (nn::Conv2d::weight_standardization).
  bool weight_standardization = false;
  // Reads NormOptions::groups (a study's groups axis varies it; other norms run once).
  bool uses_groups = false;
  // Batch-statistics norms: the variant at the whole batch and the one over ghost batches (a
  // study's ghost-batch axis picks between them); empty for per-sample norms.
  std::string whole_batch_key;
  std::string ghost_batch_key;
};

const std::vector<NormVariant>& norm_variants();

// A row of norm_variants(); compare with ==.
using NormRef = const NormVariant*;
NormRef parse_norm(const std::string& key);  // throws naming the known keys
inline const std::string& norm_key(NormRef k) { return k->key; }
inline const std::string& norm_title(NormRef k) { return k->title; }
std::string norm_keys();  // "bn (BatchNorm), gn (GroupNorm), ...", for help and errors

}  // namespace nl::nn
