#pragma once
// One training run of the comparison network: the recipe's SGD + OneCycle schedule, an
// evaluation after every epoch, per-epoch statistics and the final test predictions.
#include <cstdint>
#include <functional>
#include <ostream>
#include <vector>

#include "model.h"
#include "normlab/core/device.h"
#include "normlab/nn/data.h"

namespace compare {

struct TrainConfig {
  int64_t epochs = 20;
  int64_t batch_size = 128;
  float max_lr = 0.1f;
  float weight_decay = 5e-4f;
  nl::Device device = nl::Device::cpu();
  bool progress = false;  // live progress bar on stderr
};

struct EpochStats {
  int64_t epoch = 0;
  double train_loss = 0, train_acc = 0;  // running over the epoch, in train mode
  double test_loss = 0, test_acc = 0;    // eval mode after the epoch
  int64_t test_correct = 0, test_total = 0;
  double seconds = 0;
};

struct RunResult {
  NormKind norm;
  uint64_t seed = 0;
  int64_t parameters = 0;
  std::vector<EpochStats> epochs;
  std::vector<int32_t> test_predictions;  // after the last epoch
  double seconds = 0;
};

// log receives the per-epoch lines. The data loader seeds shuffling and augmentation with
// `seed`, the weights with `seed` and dropout with a stream derived from it, so the three norms
// see identical data and start from identical conv weights.
RunResult train_one(NormKind norm, uint64_t seed, const nl::data::Dataset& data,
                    const TrainConfig& cfg, std::ostream& log);

}  // namespace compare
