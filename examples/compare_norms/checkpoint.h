#pragma once
// Per-epoch checkpoints of one run, so an interrupted study resumes where it stopped and ends
// bit for bit where an uninterrupted one would:
//   ckpt_<norm>_s<seed>.safetensors  weights, BatchNorm running statistics ("model.*"), SGD
//                                    momentum buffers ("optim.*"), the final test predictions
//   ckpt_<norm>_s<seed>.json         the rest: configuration fingerprint, epoch, scheduler step,
//                                    dropout stream, metrics so far, status
// The tensors are written first and the JSON sidecar last, each to a temporary file that is
// fsynced and renamed: the sidecar is the commit point, and it names the epoch the tensors must
// carry too. Data order and augmentation need no state: they are functions of (seed, epoch).
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "normlab/core/rng.h"
#include "normlab/nn/module.h"
#include "normlab/nn/optim.h"
#include "normlab/nn/safetensors.h"
#include "normlab/nn/scheduler.h"
#include "trainer.h"

namespace compare {

// out_dir/ckpt_<key>_s<seed> (add .safetensors or .json).
std::string checkpoint_stem(const std::string& out_dir, NormRef norm, uint64_t seed);

// What must match for a checkpoint to be continued: network, data and recipe.
nlohmann::json run_fingerprint(const nl::nn::Module& net, NormRef norm, uint64_t seed,
                               const nl::data::Dataset& data, const TrainConfig& cfg);

// The first difference between two JSON values as "path: checkpoint A, now B", or "".
// optional: dotted paths that a saved fingerprint may lack when now holds the given value (fields
// added later, at the value earlier versions used implicitly).
std::string first_difference(const nlohmann::json& saved, const nlohmann::json& now,
                             const std::string& path = "",
                             const nlohmann::json& optional = nlohmann::json::object());

struct TrainState {
  nl::nn::Module* net;
  nl::nn::Optimizer* opt;
  nl::nn::Scheduler* sched;
  nl::Generator* dropout;
};

// After epoch res.epochs.size() (finished: the run is over, ok or diverged).
void save_checkpoint(const std::string& stem, const TrainState& s, const RunResult& res,
                     const nlohmann::json& fingerprint, bool finished);

struct Checkpoint {
  nlohmann::json sidecar;
  nl::nn::TensorFile tensors;
  bool finished() const { return sidecar.value("finished", false); }
};

// nullopt when the run has no checkpoint yet; throws naming the file and the problem when it is
// damaged or was written by another configuration (naming the first difference).
std::optional<Checkpoint> load_checkpoint(const std::string& stem, const nlohmann::json& fingerprint);

// Puts the checkpoint's state into the run: weights, buffers, optimizer, scheduler, dropout
// stream, and the metrics so far into res.
void restore_checkpoint(const Checkpoint& c, const TrainState& s, RunResult& res);

// The final weights alone (model_<key>_s<seed>.safetensors), named as in the network.
void save_model(const std::string& path, const nl::nn::Module& net);

}  // namespace compare
