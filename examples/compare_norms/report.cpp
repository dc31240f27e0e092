#include "report.h"

#include <cmath>
#include <filesystem>
#include <iomanip>
#include <sstream>

#include "normlab/core/error.h"
#include "normlab/nn/atomic_file.h"
#include "report_detail.h"

namespace compare {
namespace fs = std::filesystem;
using nlohmann::json;

namespace detail {

std::vector<NormRef> norms_in(const ReportInput& in) {
  std::vector<NormRef> out;
  for (const RunResult& r : in.runs) {
    bool seen = false;
    for (NormRef k : out) seen |= k == r.norm;
    if (!seen) out.push_back(r.norm);
  }
  return out;
}

std::vector<const RunResult*> runs_of(const ReportInput& in, NormRef k) {
  std::vector<const RunResult*> out;
  for (const RunResult& r : in.runs)
    if (r.norm == k) out.push_back(&r);
  return out;
}

const RunResult* first_ok(const std::vector<const RunResult*>& runs) {
  for (const RunResult* r : runs)
    if (r->status == "ok" && !r->test_predictions.empty()) return r;
  return nullptr;
}

std::string path_in(const ReportInput& in, const std::string& name) {
  return (fs::path(in.out_dir) / name).string();
}

std::string fmt(double v, int digits) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(digits) << v;
  return os.str();
}

bool any_telemetry(const ReportInput& in) {
  for (const RunResult& r : in.runs)
    for (const EpochStats& e : r.epochs)
      if (!e.telemetry.is_null()) return true;
  return false;
}

bool any_bn_gap(const ReportInput& in) {
  for (const RunResult& r : in.runs)
    for (const EpochStats& e : r.epochs)
      if (!e.telemetry.is_null() && e.telemetry.value("bn_gap", json()).is_number()) return true;
  return false;
}

}  // namespace detail

using namespace detail;

std::pair<double, double> mean_std(const std::vector<double>& v) {
  if (v.empty()) return {0, 0};
  double m = 0;
  for (double x : v) m += x / double(v.size());
  if (v.size() < 2) return {m, 0};
  double s = 0;
  for (double x : v) s += (x - m) * (x - m);
  return {m, std::sqrt(s / double(v.size() - 1))};
}

void write_metrics_csv(const ReportInput& in) {
  std::ostringstream os;
  os << "norm,seed,epoch,train_loss,train_acc,test_loss,test_acc,seconds,status\n";
  for (const RunResult& r : in.runs) {
    for (const EpochStats& e : r.epochs)
      os << norm_key(r.norm) << ',' << r.seed << ',' << e.epoch << ',' << fmt(e.train_loss, 6) << ','
         << fmt(e.train_acc, 4) << ',' << fmt(e.test_loss, 6) << ',' << fmt(e.test_acc, 4) << ','
         << fmt(e.seconds, 3) << ",ok\n";
    // The epoch a run diverged in gets a row of its own with no numbers (its reason is in
    // results.json and report.md).
    if (r.diverged())
      os << norm_key(r.norm) << ',' << r.seed << ',' << r.diverged_epoch << ",,,,,,diverged\n";
  }
  nl::nn::write_file_atomic(path_in(in, "metrics.csv"), os.str());
  // The stability telemetry, one row per norm layer and epoch; the epoch's loss spikes and
  // BatchNorm train/eval gap repeated on each of its rows.
  std::ostringstream ts;
  ts << "norm,seed,epoch,layer,weight_norm,grad_norm,eff_lr,out_mean,out_std,loss_spikes,max_loss_ratio,bn_"
        "gap\n";
  auto num = [](const json& j, const char* k) {
    return j.contains(k) && j[k].is_number() ? fmt(j[k].get<double>(), 6) : std::string();
  };
  bool any = false;
  for (const RunResult& r : in.runs)
    for (const EpochStats& e : r.epochs) {
      if (e.telemetry.is_null()) continue;
      any = true;
      for (const json& l : e.telemetry["layers"])
        ts << norm_key(r.norm) << ',' << r.seed << ',' << e.epoch << ',' << l["layer"].get<std::string>()
           << ',' << num(l, "weight_norm") << ',' << num(l, "grad_norm") << ',' << num(l, "eff_lr") << ','
           << num(l, "out_mean") << ',' << num(l, "out_std") << ','
           << e.telemetry["loss_spikes"].get<int64_t>() << ',' << num(e.telemetry, "max_loss_ratio") << ','
           << num(e.telemetry, "bn_gap") << '\n';
    }
  if (any) nl::nn::write_file_atomic(path_in(in, "telemetry.csv"), ts.str());
}

json write_results_json(const ReportInput& in) {
  json j;
  j["config"] = in.config;
  j["dataset"] = {{"name", in.data->name},
                  {"train_images", in.data->train.N},
                  {"test_images", in.data->test.N},
                  {"classes", in.data->classes}};
  for (NormRef k : norms_in(in)) {
    json n;
    std::vector<double> finals, final_losses, final_train, bests, secs;
    n["runs"] = json::array();
    for (const RunResult* r : runs_of(in, k)) {
      n["parameters"] = r->parameters;
      json run = {{"seed", r->seed},
                  {"status", r->status},
                  {"seconds", r->seconds},
                  {"epochs_finished", r->epochs.size()}};
      if (r->diverged()) run["reason"] = r->reason, run["diverged_epoch"] = r->diverged_epoch;
      if (!r->epochs.empty()) {
        const EpochStats& last = r->epochs.back();
        const EpochStats* best = &r->epochs.front();
        for (const EpochStats& e : r->epochs)
          if (e.test_acc > best->test_acc) best = &e;
        run["final"] = {{"epoch", last.epoch},         {"train_loss", last.train_loss},
                        {"train_acc", last.train_acc}, {"test_loss", last.test_loss},
                        {"test_acc", last.test_acc},   {"test_correct", last.test_correct}};
        run["best"] = {{"epoch", best->epoch}, {"test_acc", best->test_acc}};
        json tel = json::array();
        for (const EpochStats& e : r->epochs)
          if (!e.telemetry.is_null()) {
            json t = e.telemetry;
            t["epoch"] = e.epoch;
            tel.push_back(t);
          }
        if (!tel.empty()) run["telemetry"] = tel;
        // Only runs that finished enter the means: a diverged or interrupted run's last epoch is
        // no result.
        if (r->status == "ok") {
          finals.push_back(last.test_acc);
          final_losses.push_back(last.test_loss);
          final_train.push_back(last.train_acc);
          bests.push_back(best->test_acc);
          secs.push_back(r->seconds);
        }
      }
      n["runs"].push_back(run);
    }
    auto ms = [](const std::vector<double>& v) {
      if (v.empty()) return json{{"mean", nullptr}, {"std", nullptr}, {"n", 0}};
      auto [m, s] = mean_std(v);
      return json{{"mean", m}, {"std", s}, {"n", v.size()}};
    };
    n["final_test_acc"] = ms(finals);
    n["final_test_loss"] = ms(final_losses);
    n["final_train_acc"] = ms(final_train);
    n["best_test_acc"] = ms(bests);
    n["seconds"] = ms(secs);
    n["title"] = norm_title(k);
    int64_t diverged = 0;
    for (const RunResult* r : runs_of(in, k)) diverged += r->diverged();
    n["diverged_runs"] = diverged;
    j["norms"][norm_key(k)] = n;
  }
  nl::nn::write_file_atomic(path_in(in, "results.json"), j.dump(2) + "\n");
  return j;
}

void write_report_md(const ReportInput& in, const json& results, bool pictures) {
  const auto norms = norms_in(in);
  const nl::data::Dataset& d = *in.data;
  std::ostringstream md;
  const int64_t epochs = in.config.value("epochs", int64_t(0));
  std::string title;
  for (NormRef k : norms) title += (title.empty() ? "" : " vs ") + norm_title(k);
  md << "# compare_norms: " << title << "\n\n"
     << "Dataset **" << d.name << "**: " << d.train.N << " training and " << d.test.N << " test images. "
     << epochs << " epochs, batch " << in.config.value("batch_size", 0) << ", SGD + OneCycle (max lr "
     << in.config.value("lr", 0.0) << "), seeds " << in.config.value("seed", 0) << ".."
     << in.config.value("seed", 0) + in.config.value("seeds", 1) - 1 << ", device "
     << in.config.value("device", std::string("cpu"));
  if (in.config.value("augment", false))
    md << ", augmentation: random crop from the image padded by 4 ("
       << in.config.value("crop_pad", std::string("black")) << " padding) and horizontal flip";
  else
    md << ", no augmentation";
  if (const int64_t k = in.config.value("processes", int64_t(1)); k > 1)
    md << ", data parallel over " << k << " processes (each "
       << "a slice of every batch; BatchNorm's statistics "
       << "per process, SyncBatchNorm's over all)";
  md << ".\n\n";
  md << "| norm | parameters | final train acc | final test loss | final test acc | best test acc | time per "
        "run |\n"
     << "|---|---|---|---|---|---|---|\n";
  for (NormRef k : norms) {
    const json& n = results["norms"][norm_key(k)];
    auto pm = [&](const char* key, int digits, const char* unit) {
      if (n[key]["mean"].is_null()) return std::string("diverged");
      std::string s = fmt(n[key]["mean"].get<double>(), digits) + unit;
      if (n[key]["n"].get<size_t>() > 1) s += " ± " + fmt(n[key]["std"].get<double>(), digits);
      return s;
    };
    md << "| " << norm_title(k) << " | " << n["parameters"].get<int64_t>() << " | "
       << pm("final_train_acc", 2, "%") << " | " << pm("final_test_loss", 4, "") << " | **"
       << pm("final_test_acc", 2, "%") << "** | " << pm("best_test_acc", 2, "%") << " | "
       << pm("seconds", 0, " s") << " |\n";
  }
  md << "\nMeans ± sample standard deviation over the seeds that finished; per-epoch numbers are in "
        "`metrics.csv`, everything above in `results.json`.\n\n";
  bool any_curve = false, any_diverged = false;
  for (const RunResult& r : in.runs) any_curve |= !r.epochs.empty(), any_diverged |= r.diverged();
  if (any_diverged) {
    md << "## Diverged runs\n\nThese runs stopped at the first non-finite value; their curves end "
          "at their last finished epoch and they are left out of the means above.\n\n";
    for (const RunResult& r : in.runs)
      if (r.diverged())
        md << "- **" << norm_title(r.norm) << ", seed " << r.seed << "**: " << r.reason << "\n";
    md << "\n";
  }
  for (const RunResult& r : in.runs)
    if (r.interrupted())
      md << "**Interrupted** during " << norm_title(r.norm) << ", seed " << r.seed << " after "
         << r.epochs.size() << " finished epochs: this report covers what finished. Continue with the "
         << "same flags and `--resume`.\n\n";
  if (pictures) {
    if (any_curve)
      md << "## Curves\n\n![training loss](train_loss.png)\n\n![test loss](test_loss.png)\n\n"
         << "![test accuracy](test_accuracy.png)\n\n";
    if (any_curve && any_telemetry(in)) {
      md << "## Stability telemetry\n\nPer epoch (telemetry.csv has every layer): the effective learning "
            "rate "
            "lr/‖w‖² of the convs before a norm, and BatchNorm's train/eval gap (a norm without running "
            "statistics has none).\n\n![effective learning rate](effective_lr.png)\n\n";
      if (any_bn_gap(in)) md << "![train/eval gap](bn_gap.png)\n\n";
    }
    md << "## Misclassified test images\n\n";
    for (NormRef k : norms)
      if (first_ok(runs_of(in, k)))
        md << "![" << norm_title(k) << " misclassified](misclassified_" << norm_key(k) << ".png)\n\n";
    md << "## Confusion matrices\n\n";
    for (NormRef k : norms)
      if (first_ok(runs_of(in, k)))
        md << "![" << norm_title(k) << " confusion](confusion_" << norm_key(k) << ".png)\n\n";
  } else {
    md << "Pictures were not rendered (gnuplot missing or failed): run `gnuplot plots.gp` in this "
          "folder.\n";
  }
  nl::nn::write_file_atomic(path_in(in, "report.md"), md.str());
}

}  // namespace compare
