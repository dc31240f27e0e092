#pragma once
// One training run of the comparison network: the recipe's SGD + OneCycle schedule, an
// evaluation after every epoch, per-epoch statistics and the final test predictions.
#include <atomic>
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <ostream>
#include <vector>

#include "normlab/nn/models.h"
#include "normlab/core/device.h"
#include "normlab/nn/data.h"

namespace nl::dist {
class ProcessGroup;
}

namespace compare {

// The library's norm registry and comparison network, under the names the app uses throughout.
using nl::nn::make_net;
using nl::nn::NetOptions;
using nl::nn::norm_key;
using nl::nn::norm_keys;
using nl::nn::norm_title;
using nl::nn::NormRef;
using nl::nn::parse_norm;

struct TrainConfig {
  NetOptions net;  // the norms' options (groups, ghost batch, eps); channels and classes from the data
  int64_t epochs = 20;
  int64_t batch_size = 128;
  float max_lr = 0.1f;
  float weight_decay = 5e-4f;
  // The recipe's crop + flip, on datasets it suits (CIFAR-10); off: the images as they are.
  bool augment = true;
  // What fills the border the crop shifts into view (nl::data::CropPad: black, mean or reflect).
  nl::data::CropPad crop_pad = nl::data::kDefaultCropPad;
  bool drop_last = false;  // skip each epoch's last partial batch (the recipe keeps it)
  nl::Device device = nl::Device::cpu();
  bool progress = false;  // live progress bar on stderr
  // Checks every parameter and gradient for NaN/Inf after every step (one fused reduction each;
  // the loss and the test loss are always checked).
  bool guard = true;
  // Stability telemetry after every epoch (EpochStats::telemetry): per conv before a norm its
  // weight norm, last-step gradient norm and effective learning rate lr / |w|^2, per norm the mean
  // and std of its output on a probe batch, loss spikes, BatchNorm's train/eval gap.
  bool telemetry = true;
  // Checkpoints after every epoch to checkpoint_stem.{safetensors,json} when not empty; with
  // resume, a run that has one continues from it (or is taken as it is when it had finished).
  std::string checkpoint_stem;
  bool resume = false;
  // Set (by a signal handler) to stop: the step in progress finishes, the run returns with status
  // "interrupted" and its last checkpoint is where a resume continues.
  const std::atomic<int>* stop = nullptr;
  // Data parallel over this group's processes when it has more than one (docs/scaling-out.md):
  // each trains on its slice of every batch of batch_size (the one-process batch), gradients are
  // averaged, SyncBatchNorm (sbn) sums its statistics over the group, plain BatchNorm keeps each
  // process's own (PyTorch DDP's default) and rank 0's running statistics are broadcast before
  // every evaluation. Every process evaluates the whole test set (the same weights, the same
  // numbers), so nothing waits on rank 0. Only processes with write_files save checkpoints and
  // the final model (rank 0); every process reads them to resume.
  nl::dist::ProcessGroup* group = nullptr;
  bool write_files = true;
};

struct EpochStats {
  int64_t epoch = 0;
  double train_loss = 0, train_acc = 0;  // running over the epoch, in train mode
  double test_loss = 0, test_acc = 0;    // eval mode after the epoch
  int64_t test_correct = 0, test_total = 0;
  double seconds = 0;
  // {"loss_spikes": steps whose loss exceeded 3x the median of the 50 before, "max_loss_ratio",
  //  "bn_gap": test accuracy with batch statistics minus with running statistics (pp; null for
  //  norms without running statistics), "layers": [{"layer", "weight_norm", "grad_norm", "eff_lr",
  //  "out_mean", "out_std"}]}; null when telemetry was off.
  nlohmann::json telemetry;
};

struct RunResult {
  NormRef norm = nullptr;
  uint64_t seed = 0;
  int64_t parameters = 0;
  std::vector<EpochStats> epochs;         // the finished epochs (all of them unless diverged)
  std::vector<int32_t> test_predictions;  // after the last epoch; empty when diverged
  double seconds = 0;
  // "ok", "interrupted" (stopped by a signal; its checkpoint holds the finished epochs), or
  // "diverged" with the reason naming the first module whose output (or the first
  // parameter whose gradient) was not finite, e.g.
  //   "LayerNorm C4.norm: output has 312 non-finite values (NaN/Inf) at epoch 3, batch 41 (lr 2.4e+08)"
  std::string status = "ok";
  std::string reason;
  int64_t diverged_epoch = 0;  // the epoch in progress when it diverged
  bool diverged() const { return status == "diverged"; }
  bool interrupted() const { return status == "interrupted"; }
};

// log receives the per-epoch lines. The data loader seeds shuffling and augmentation with
// `seed`, the weights with `seed` and dropout with a stream derived from it, so the three norms
// see identical data and start from identical conv weights.
// Runs x through net once more (no gradient) with every module's output checked, and names the
// first module whose output has NaN/Inf, e.g. "LayerNorm C4.body.norm: output has 312 non-finite
// values (NaN/Inf) of 32768"; "" when every output is finite.
std::string first_nonfinite_output(nl::nn::Module& net, const nl::Tensor& x);

// on_epoch (may be empty) sees the run after each finished epoch, so the caller can write its
// metrics to disk as they come. A run that diverges returns with status "diverged" instead of
// throwing, so the other runs of a comparison go on.
RunResult train_one(NormRef norm, uint64_t seed, const nl::data::Dataset& data, const TrainConfig& cfg,
                    std::ostream& log, const std::function<void(const RunResult&)>& on_epoch = {});

}  // namespace compare
