#pragma once
// normlab_study: a grid of compare_norms runs (norm x batch x ghost batch x lr x groups x crop
// padding x seed x epochs x dataset), one folder per run, resumable, with study.csv, study.json and study.md.
// This file holds what needs no processes: the grid, the files and the report; study_main.cpp
// schedules the runs.
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "normlab/nn/data.h"

namespace compare {

struct StudyAxes {
  std::vector<std::string> norms{"bn", "gn", "ln"};
  std::vector<int64_t> batch{128};
  std::vector<int64_t> ghost_batch{0};  // 0: the whole batch
  std::vector<double> lr{0.1};
  std::vector<int64_t> groups{4};
  std::vector<uint64_t> seeds{0};
  std::vector<int64_t> epochs{20};
  std::vector<std::string> datasets{"cifar10"};
  // The crop's border fill (black, mean, reflect); only where the dataset is augmented (CIFAR-10).
  std::vector<std::string> crop_pad{nl::data::crop_pad_name(nl::data::kDefaultCropPad)};
  bool scale_lr = false;  // linear scaling rule: lr = base * batch / 128
};

// One run of the grid, in its canonical form: an axis that does not change what a norm computes
// is "n/a" (0) for it (GroupNorm has no ghost batch; BatchNorm no groups), so equal runs are one.
struct RunSpec {
  std::string id;        // folder name under runs/, unique: "bn_cifar10_e20_b128_gb8_lr0.1_G0_padmean_s0"
  std::string norm;      // the study's norm key: bn, gn, ln, brn, gn+ws, ...
  std::string app_norm;  // what compare_norms runs: bn at a ghost batch below the batch is gbn
  std::string dataset;
  int64_t epochs = 0, batch = 0, ghost_batch = 0, groups = 0;
  std::string crop_pad;        // "" where the dataset has no crop (Fashion-MNIST)
  double base_lr = 0, lr = 0;  // lr: after the scaling rule
  uint64_t seed = 0;
  // The compare_norms flags (without --out, --threads, --data-dir, --resume).
  std::vector<std::string> app_args() const;
  nlohmann::json to_json() const;
};

// Whether an axis changes what a norm computes.
bool uses_ghost_batch(const std::string& norm);  // the registry's batch-statistics rows
bool uses_groups(const std::string& norm);       // the registry's rows reading groups
// The grid in order (datasets, epochs, batch, lr, groups, ghost batch, crop padding, norm, seed: the seed
// fastest, so the seeds of a point finish together), duplicates removed. Throws on an unknown
// norm or an invalid value, naming the axis.
std::vector<RunSpec> expand_grid(const StudyAxes& axes);
// Reads axes from a study file (JSON: {"norm": [...], "ghost_batch": [...], ...}); keys it does
// not set keep their value in `axes`.
void read_study_file(const std::string& path, StudyAxes& axes);
nlohmann::json axes_to_json(const StudyAxes& axes);

// A finished run's numbers, read from its compare_norms results.json.
struct RunOutcome {
  std::string status;  // ok, diverged (finished); interrupted, failed, missing (not)
  double final_test_acc = NAN, best_test_acc = NAN, final_test_loss = NAN, final_train_acc = NAN,
         final_train_loss = NAN, seconds = NAN;
  int64_t epochs_finished = 0;
  nlohmann::json telemetry;         // the last epoch's telemetry when the run wrote it
  nlohmann::json telemetry_epochs;  // every epoch's (an array), for the study's telemetry curves
  int64_t loss_spikes = -1;         // over all epochs; -1 without telemetry
  double bn_gap = NAN;              // the last epoch's BatchNorm train/eval gap (pp)
  bool finished() const { return status == "ok" || status == "diverged"; }
};
RunOutcome read_outcome(const std::string& run_dir, const RunSpec& spec);

// study.csv: one row per finished run in grid order; no wall times, so an interrupted and
// resumed study writes the same file as an uninterrupted one.
void write_study_csv(const std::string& path, const std::vector<RunSpec>& runs,
                     const std::vector<RunOutcome>& outcomes);
// study.json: the axes, every run with its outcome and seconds, and the per-point summaries.
void write_study_json(const std::string& path, const nlohmann::json& config, const std::vector<RunSpec>& runs,
                      const std::vector<RunOutcome>& outcomes);
// study.md and its plots (accuracy against each swept axis per norm with error bars over seeds,
// training against test accuracy, a table with mean +- std and 95% CI, Welch's t-test between the
// norms at each point). Returns whether gnuplot drew the pictures.
bool write_study_report(const std::string& dir, const nlohmann::json& config,
                        const std::vector<RunSpec>& runs, const std::vector<RunOutcome>& outcomes);

}  // namespace compare
