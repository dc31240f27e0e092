#include "report.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <map>
#include <regex>
#include <sstream>

#include "normlab/core/error.h"
#include "normlab/nn/atomic_file.h"

extern char** environ;

namespace compare {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::vector<NormKind> norms_in(const ReportInput& in) {
  std::vector<NormKind> out;
  for (const RunResult& r : in.runs) {
    bool seen = false;
    for (NormKind k : out) seen |= k == r.norm;
    if (!seen) out.push_back(r.norm);
  }
  return out;
}

std::vector<const RunResult*> runs_of(const ReportInput& in, NormKind k) {
  std::vector<const RunResult*> out;
  for (const RunResult& r : in.runs)
    if (r.norm == k) out.push_back(&r);
  return out;
}

// The first run of the list that finished (not diverged, not interrupted), or null.
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

// Ten distinguishable colours (matplotlib's tab10): the family's nine norms each get their own.
const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                         "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
constexpr size_t kNumColors = sizeof kColors / sizeof kColors[0];

// Whether some epoch has telemetry (the effective-lr chart) and some a BatchNorm train/eval gap
// (the gap chart): gnuplot refuses a chart whose every point is undefined (--no-telemetry, or no
// norm with running statistics), so such a chart is neither drawn nor linked.
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

}  // namespace

// gnuplot string literal for any text (class names come from the data set's batches.meta.txt):
// single quotes, inside which gnuplot performs no backtick command substitution, no macro
// expansion and no backslash escapes; an embedded ' is doubled, and control characters (a line
// break would end the command) become spaces. Print it with `noenhanced`, so ^ _ { } @ & ~ stay
// literal too.
std::string gp_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') out += "''";
    else if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) out += ' ';
    else out += c;
  }
  return out + "'";
}

bool is_own_output(const std::string& name) {
  static const std::regex own(
      R"(metrics\.csv|telemetry\.csv|results\.json|report\.md|plots\.gp|gnuplot\.log|run\.json)"
      R"(|(train_loss|test_loss|test_accuracy|effective_lr|bn_gap)\.(png|svg))"
      R"(|(curves|misclassified|confusion)_[a-z0-9+]+\.(dat|txt|png))"
      R"(|ckpt_[a-z0-9+]+_s[0-9]+\.(safetensors|json)|model_[a-z0-9+]+_s[0-9]+\.safetensors)");
  return std::regex_match(name, own);
}

void claim_out_dir(const std::string& dir, bool overwrite, bool resume, const json& config) {
  NL_CHECK(!(overwrite && resume), "--overwrite and --resume exclude each other: --resume continues the "
                                   "run in --out, --overwrite replaces it");
  std::error_code ec;
  fs::create_directories(dir, ec);
  NL_CHECK(!ec, "--out ", dir, ": cannot create the folder: ", ec.message());
  NL_CHECK(fs::is_directory(dir), "--out ", dir, " exists and is not a folder");
  // One run at a time: an advisory lock held until the process ends (the kernel drops it even
  // after a SIGKILL), so two runs started into one folder cannot mix their results.
  static int lock_fd = -1;
  if (lock_fd < 0) {
    const std::string lock = (fs::path(dir) / ".compare_norms.lock").string();
    lock_fd = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    NL_CHECK(lock_fd >= 0, "--out ", dir, " is not writable: cannot create ", lock, ": ", std::strerror(errno));
    NL_CHECK(::flock(lock_fd, LOCK_EX | LOCK_NB) == 0, "--out ", dir,
             " is in use by another compare_norms run that is still going; choose another --out");
  }
  std::vector<fs::path> results;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (!fs::is_regular_file(e.symlink_status())) continue;  // never follow a link, never a folder
    if (name.size() > 12 && name.compare(name.size() - 12, 12, ".normlab-tmp") == 0) {
      fs::remove(e.path(), ec);  // a killed run's temporary: ours by its name
    } else if (is_own_output(name)) {
      results.push_back(e.path());
    }
  }
  const fs::path run_json = fs::path(dir) / "run.json";
  if (resume) {
    std::ifstream in(run_json);
    NL_CHECK(in.good(), "--resume: ", dir, " holds no run to continue (no run.json); start without --resume");
    json saved;
    try {
      saved = json::parse(in);
    } catch (const json::exception& e) {
      NL_FAIL("--resume: ", run_json.string(), " is not valid JSON: ", e.what());
    }
    // Studies started before --groups, --ghost-batch and --eps existed ran at these values.
    const json optional = {{"groups", 4}, {"ghost_batch", 32}, {"eps", 0.0}};
    const std::string diff = first_config_difference(saved.value("config", json::object()), config, optional);
    NL_CHECK(diff.empty(), "--resume: the run in ", dir, " had another configuration (", diff,
             "): give the same flags, or --overwrite to start over");
    results.clear();  // kept: the finished runs are part of the resumed study
  }
  if (!results.empty()) {
    std::sort(results.begin(), results.end());
    std::string names;
    for (size_t i = 0; i < results.size() && i < 4; ++i) names += (i ? ", " : "") + results[i].filename().string();
    if (results.size() > 4) names += ", ...";
    NL_CHECK(overwrite, "--out ", dir, " already holds the results of another run (", names,
             "): pass --overwrite to replace them (only compare_norms' own files are removed), or "
             "choose another --out");
    for (const fs::path& p : results) {
      fs::remove(p, ec);
      NL_CHECK(!ec, "--overwrite: cannot remove ", p.string(), ": ", ec.message());
    }
  }
  // Writable now, not after hours of training: run.json records the configuration --resume
  // must match.
  if (!resume) nl::nn::write_file_atomic(run_json.string(), json{{"config", config}}.dump(1) + "\n");
}

std::string first_config_difference(const json& saved, const json& now, const json& optional) {
  for (const auto& [k, v] : now.items()) {
    if (!saved.contains(k) && optional.contains(k) && optional[k] == v) continue;
    if (!saved.contains(k)) return k + ": not recorded before, now " + v.dump();
    if (saved[k] != v) return "--" + k + ": was " + saved[k].dump() + ", now " + v.dump();
  }
  for (const auto& [k, v] : saved.items())
    if (!now.contains(k)) return k + ": was " + v.dump() + ", now not given";
  return "";
}

int run_program(const std::vector<std::string>& argv, const std::string& dir, const std::string& log) {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  // The child changes into dir and opens its log there: no shell, so no quoting of dir ever.
  if (!dir.empty()) posix_spawn_file_actions_addchdir_np(&fa, dir.c_str());
  posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, STDOUT_FILENO, STDERR_FILENO);
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  const int e = ::posix_spawnp(&pid, args[0], &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (e != 0) return -1;
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

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
      os << norm_key(r.norm) << ',' << r.seed << ',' << e.epoch << ',' << fmt(e.train_loss, 6)
         << ',' << fmt(e.train_acc, 4) << ',' << fmt(e.test_loss, 6) << ',' << fmt(e.test_acc, 4)
         << ',' << fmt(e.seconds, 3) << ",ok\n";
    // The epoch a run diverged in gets a row of its own with no numbers (its reason is in
    // results.json and report.md).
    if (r.diverged()) os << norm_key(r.norm) << ',' << r.seed << ',' << r.diverged_epoch << ",,,,,,diverged\n";
  }
  nl::nn::write_file_atomic(path_in(in, "metrics.csv"), os.str());
  // The stability telemetry, one row per norm layer and epoch; the epoch's loss spikes and
  // BatchNorm train/eval gap repeated on each of its rows.
  std::ostringstream ts;
  ts << "norm,seed,epoch,layer,weight_norm,grad_norm,eff_lr,out_mean,out_std,loss_spikes,max_loss_ratio,bn_gap\n";
  auto num = [](const json& j, const char* k) {
    return j.contains(k) && j[k].is_number() ? fmt(j[k].get<double>(), 6) : std::string();
  };
  bool any = false;
  for (const RunResult& r : in.runs)
    for (const EpochStats& e : r.epochs) {
      if (e.telemetry.is_null()) continue;
      any = true;
      for (const json& l : e.telemetry["layers"])
        ts << norm_key(r.norm) << ',' << r.seed << ',' << e.epoch << ',' << l["layer"].get<std::string>() << ','
           << num(l, "weight_norm") << ',' << num(l, "grad_norm") << ',' << num(l, "eff_lr") << ',' << num(l, "out_mean")
           << ',' << num(l, "out_std") << ',' << e.telemetry["loss_spikes"].get<int64_t>() << ','
           << num(e.telemetry, "max_loss_ratio") << ',' << num(e.telemetry, "bn_gap") << '\n';
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
  for (NormKind k : norms_in(in)) {
    json n;
    std::vector<double> finals, final_losses, final_train, bests, secs;
    n["runs"] = json::array();
    for (const RunResult* r : runs_of(in, k)) {
      n["parameters"] = r->parameters;
      json run = {{"seed", r->seed}, {"status", r->status}, {"seconds", r->seconds},
                  {"epochs_finished", r->epochs.size()}};
      if (r->diverged()) run["reason"] = r->reason, run["diverged_epoch"] = r->diverged_epoch;
      if (!r->epochs.empty()) {
        const EpochStats& last = r->epochs.back();
        const EpochStats* best = &r->epochs.front();
        for (const EpochStats& e : r->epochs)
          if (e.test_acc > best->test_acc) best = &e;
        run["final"] = {{"epoch", last.epoch},          {"train_loss", last.train_loss},
                        {"train_acc", last.train_acc},  {"test_loss", last.test_loss},
                        {"test_acc", last.test_acc},    {"test_correct", last.test_correct}};
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

bool write_plots(const ReportInput& in) {
  const auto norms = norms_in(in);
  const nl::data::Dataset& d = *in.data;
  std::vector<NormKind> curved, pictured;  // norms with a curve / with a finished run
  // Per norm key, the (true, predicted) captions of the misclassified grid, in panel order.
  std::map<std::string, std::vector<std::pair<std::string, std::string>>> captions;
  // --- data files ---
  for (NormKind k : norms) {
    auto runs = runs_of(in, k);
    std::ostringstream os;
    os << "# epoch train_loss train_acc test_loss test_acc test_acc_std eff_lr bn_gap out_std loss_spikes (means over "
       << runs.size() << " seed(s); eff_lr and out_std also over the norm layers; NaN: no telemetry)\n";
    size_t epochs = 0;
    for (const RunResult* r : runs) epochs = std::max(epochs, r->epochs.size());
    if (epochs > 0) curved.push_back(k);
    // A diverged run's curve stops at its last finished epoch: later points average the others.
    for (size_t e = 0; e < epochs; ++e) {
      std::vector<double> tl, ta, vl, va, lr, gap, ostd, spikes;
      for (const RunResult* r : runs) {
        if (e >= r->epochs.size()) continue;
        tl.push_back(r->epochs[e].train_loss), ta.push_back(r->epochs[e].train_acc);
        vl.push_back(r->epochs[e].test_loss), va.push_back(r->epochs[e].test_acc);
        const json& t = r->epochs[e].telemetry;
        if (t.is_null()) continue;
        std::vector<double> l, o;
        for (const json& layer : t["layers"]) {
          l.push_back(layer.value("eff_lr", 0.0));
          if (layer.contains("out_std")) o.push_back(layer["out_std"].get<double>());
        }
        if (!l.empty()) lr.push_back(mean_std(l).first);
        if (!o.empty()) ostd.push_back(mean_std(o).first);
        if (t["bn_gap"].is_number()) gap.push_back(t["bn_gap"].get<double>());
        spikes.push_back(double(t.value("loss_spikes", int64_t(0))));
      }
      auto m = [](const std::vector<double>& v) { return v.empty() ? std::string("NaN") : fmt(mean_std(v).first, 8); };
      os << e + 1 << ' ' << mean_std(tl).first << ' ' << mean_std(ta).first << ' '
         << mean_std(vl).first << ' ' << mean_std(va).first << ' ' << mean_std(va).second << ' ' << m(lr) << ' '
         << m(gap) << ' ' << m(ostd) << ' ' << m(spikes) << '\n';
    }
    nl::nn::write_file_atomic(path_in(in, "curves_" + norm_key(k) + ".dat"), os.str());

    // Misclassified test images of the first finished seed: "x y r g b" blocks, one per image.
    const RunResult* ok = first_ok(runs);
    if (!ok) continue;  // every seed diverged: no predictions to show
    pictured.push_back(k);
    const RunResult& r = *ok;
    std::ostringstream img, cap;
    int shown = 0;
    for (int64_t i = 0; i < d.test.N && shown < 10; ++i) {
      const int32_t truth = d.test.labels[static_cast<size_t>(i)];
      const int32_t pred = r.test_predictions[static_cast<size_t>(i)];
      if (truth == pred) continue;
      const uint8_t* p = d.test.image(i);
      const int64_t HW = d.test.H * d.test.W;
      for (int64_t y = 0; y < d.test.H; ++y) {
        for (int64_t x = 0; x < d.test.W; ++x) {
          int v[3];
          for (int c = 0; c < 3; ++c) v[c] = p[(d.test.C == 3 ? c : 0) * HW + y * d.test.W + x];
          img << x << ' ' << y << ' ' << v[0] << ' ' << v[1] << ' ' << v[2] << '\n';
        }
        img << '\n';
      }
      img << "\n";
      cap << "test #" << i << "|true: " << d.classes[truth] << "|pred: " << d.classes[pred] << '\n';
      captions[norm_key(k)].emplace_back("true: " + d.classes[truth], "pred: " + d.classes[pred]);
      ++shown;
    }
    nl::nn::write_file_atomic(path_in(in, "misclassified_" + norm_key(k) + ".dat"), img.str());
    nl::nn::write_file_atomic(path_in(in, "misclassified_" + norm_key(k) + ".txt"), cap.str());

    // Confusion matrix of the first seed: rows true class, columns predicted.
    const size_t C = d.classes.size();
    std::vector<int64_t> cm(C * C, 0);
    for (int64_t i = 0; i < d.test.N; ++i)
      ++cm[static_cast<size_t>(d.test.labels[i]) * C + static_cast<size_t>(r.test_predictions[i])];
    std::ostringstream cmo;
    for (size_t t = 0; t < C; ++t) {
      for (size_t p = 0; p < C; ++p) cmo << cm[t * C + p] << (p + 1 < C ? " " : "\n");
    }
    nl::nn::write_file_atomic(path_in(in, "confusion_" + norm_key(k) + ".dat"), cmo.str());
  }

  // --- scripts ---
  // Every picture is drawn into a temporary name of ours and renamed once gnuplot succeeded, so
  // a killed plot leaves no half-written PNG under a final name and no file of the user's is
  // ever renamed or removed.
  std::vector<std::pair<std::string, std::string>> outputs;  // (temporary, final), in out_dir
  auto output = [&](const std::string& name) {
    outputs.emplace_back(fs::path(nl::nn::temp_name_for(path_in(in, name))).filename().string(), name);
    return outputs.back().first;
  };
  std::ostringstream gp;
  gp << "# Renders the charts of this folder: gnuplot plots.gp (run inside the folder).\n"
     << "set encoding utf8\nset key outside right top box\nset grid\nset xlabel 'epoch'\n"
     << "set xtics 1\n";
  struct Chart {
    const char* name;
    const char* title;
    const char* ylabel;
    int column;
  };
  const std::string ds = d.name + " (" + std::to_string(d.train.N) + " train / " +
                         std::to_string(d.test.N) + " test images)";
  // No curve at all when every run diverged in its first epoch: nothing to plot.
  std::vector<Chart> charts;
  if (!curved.empty()) {
    charts = {Chart{"train_loss", "Training loss", "loss (NLL)", 2}, Chart{"test_loss", "Test loss", "loss (NLL)", 4},
              Chart{"test_accuracy", "Test accuracy", "accuracy (%)", 5}};
    if (any_telemetry(in))
      charts.push_back({"effective_lr", "Effective learning rate lr/|w|^2 (mean over the convs before a norm)", "lr / |w|^2", 7});
    if (any_bn_gap(in))
      charts.push_back({"bn_gap", "BatchNorm train/eval gap (test acc, batch minus running statistics)", "pp", 8});
  }
  for (Chart c : charts) {
    for (const char* term : {"png", "svg"}) {
      gp << (std::string(term) == "png" ? "set terminal pngcairo size 960,600 font 'Sans,11'\n"
                                        : "set terminal svg size 960,600 font 'Sans,11'\n");
      gp << "set output " << gp_quote(output(std::string(c.name) + "." + term)) << "\n";
      // Two lines: the longest title on one line ran past the picture's left edge.
      gp << "set title " << gp_quote(std::string(c.title) + " per epoch") << " . \"\\n\" . " << gp_quote(ds) << "\n";
      gp << (std::string(c.name) == "effective_lr" ? "set logscale y\nset format y '%.0e'\n"
                                                   : "unset logscale y\nset format y '%g'\n");
      gp << "set ylabel '" << c.ylabel << "'\nplot ";
      for (size_t i = 0; i < curved.size(); ++i) {
        gp << (i ? ", \\\n     " : "") << "'curves_" << norm_key(curved[i]) << ".dat' using 1:"
           << c.column << " with linespoints lw 2 pt 7 ps 0.6 lc rgb '" << kColors[i % kNumColors]
           << "' title '" << norm_title(curved[i]) << "'";
      }
      gp << "\nset output\n";
    }
  }
  gp << "reset\n";
  for (NormKind k : pictured) {
    const std::string key = norm_key(k);
    const auto& lines = captions[key];
    gp << "\n# misclassified test images, " << norm_title(k) << "\n"
       << "set terminal pngcairo size 1100,560 font 'Sans,10'\n"
       << "set output " << gp_quote(output("misclassified_" + key + ".png")) << "\n"
       << "set multiplot layout 2,5 title " << gp_quote(norm_title(k) + ": misclassified test images (first seed)") << "\n"
       << "unset key\nunset tics\nunset border\nset size ratio -1\n"
       << "set xrange [-0.5:" << d.test.W - 0.5 << "]\nset yrange [" << d.test.H - 0.5 << ":-0.5]\n";
    for (size_t i = 0; i < lines.size(); ++i) {
      // The two captions quoted and joined by a line break (gnuplot's "\n" is the script's only
      // double-quoted string, and it holds no input).
      gp << "set title " << gp_quote(lines[i].first) << " . \"\\n\" . " << gp_quote(lines[i].second)
         << " noenhanced\n"
         << "plot 'misclassified_" << key << ".dat' index " << i
         << " using 1:2:3:4:5 with rgbimage\n";
    }
    gp << "unset multiplot\nset output\nreset\n";
    // Confusion matrix with counts.
    gp << "set terminal pngcairo size 760,680 font 'Sans,10'\n"
       << "set output " << gp_quote(output("confusion_" + key + ".png")) << "\n"
       << "set title " << gp_quote(norm_title(k) + ": confusion matrix on the test set (first seed)") << "\n"
       << "unset key\nset xlabel 'predicted'\nset ylabel 'true'\nset palette defined (0 'white', 1 '#f28e2b')\n"
       << "set xrange [-0.5:" << d.classes.size() - 0.5 << "]\nset yrange [" << d.classes.size() - 0.5 << ":-0.5]\n"
       << "set xtics rotate by 45 right (";
    for (size_t c = 0; c < d.classes.size(); ++c) gp << (c ? ", " : "") << gp_quote(d.classes[c]) << " " << c;
    gp << ") noenhanced\nset ytics (";
    for (size_t c = 0; c < d.classes.size(); ++c) gp << (c ? ", " : "") << gp_quote(d.classes[c]) << " " << c;
    gp << ") noenhanced\nplot 'confusion_" << key << ".dat' matrix with image, '' matrix using 1:2:(sprintf('%d', $3)) "
       << "with labels tc rgb 'black'\nset output\nreset\n";
  }
  nl::nn::write_file_atomic(path_in(in, "plots.gp"), gp.str());

  // The script that is kept names the final files, so that `gnuplot plots.gp` by hand works.
  std::string kept = gp.str();
  for (const auto& [tmp, name] : outputs) {
    for (size_t at = kept.find(tmp); at != std::string::npos; at = kept.find(tmp, at + name.size()))
      kept.replace(at, tmp.size(), name);
  }
  nl::nn::write_file_atomic(path_in(in, "plots.gp"), kept);
  const std::string run_script = nl::nn::temp_name_for(path_in(in, "plots.gp"));
  nl::nn::write_file_atomic(run_script, gp.str());
  auto remove_ours = [&] {
    std::error_code ec;
    fs::remove(run_script, ec);
    for (const auto& o : outputs) fs::remove(path_in(in, o.first), ec);
  };

  if (run_program({"gnuplot", "--version"}, "", "/dev/null") != 0) {
    remove_ours();
    std::fprintf(stderr,
                 "compare_norms: gnuplot not found, so no pictures were drawn; the data and the "
                 "script are in %s (install gnuplot-nox and run `gnuplot plots.gp` there)\n",
                 in.out_dir.c_str());
    return false;
  }
  // gnuplot runs in out_dir with the script's file name as its one argument: no shell, so no
  // character of --out (quotes, semicolons) is ever interpreted.
  const int status = run_program({"gnuplot", fs::path(run_script).filename().string()}, in.out_dir, "gnuplot.log");
  if (status != 0) {
    remove_ours();
    std::fprintf(stderr, "compare_norms: gnuplot failed (exit %d) on %s/plots.gp; see %s/gnuplot.log\n",
                 status, in.out_dir.c_str(), in.out_dir.c_str());
    return false;
  }
  std::error_code ec;
  fs::remove(run_script, ec);
  for (const auto& [tmp, name] : outputs) {
    fs::rename(path_in(in, tmp), path_in(in, name), ec);
    if (ec) {
      remove_ours();
      std::fprintf(stderr, "compare_norms: gnuplot did not write %s (%s); see %s/gnuplot.log\n",
                   name.c_str(), ec.message().c_str(), in.out_dir.c_str());
      return false;
    }
  }
  return true;
}

void write_report_md(const ReportInput& in, const json& results, bool pictures) {
  const auto norms = norms_in(in);
  const nl::data::Dataset& d = *in.data;
  std::ostringstream md;
  const int64_t epochs = in.config.value("epochs", int64_t(0));
  std::string title;
  for (NormKind k : norms) title += (title.empty() ? "" : " vs ") + norm_title(k);
  md << "# compare_norms: " << title << "\n\n"
     << "Dataset **" << d.name << "**: " << d.train.N << " training and " << d.test.N
     << " test images. " << epochs << " epochs, batch " << in.config.value("batch_size", 0)
     << ", SGD + OneCycle (max lr " << in.config.value("lr", 0.0) << "), seeds "
     << in.config.value("seed", 0) << ".." << in.config.value("seed", 0) + in.config.value("seeds", 1) - 1
     << ", device " << in.config.value("device", std::string("cpu"));
  if (in.config.value("augment", false))
    md << ", augmentation: random crop from the image padded by 4 (" << in.config.value("crop_pad", std::string("black"))
       << " padding) and horizontal flip";
  else
    md << ", no augmentation";
  if (const int64_t k = in.config.value("processes", int64_t(1)); k > 1)
    md << ", data parallel over " << k << " processes (each " << "a slice of every batch; BatchNorm's statistics "
       << "per process, SyncBatchNorm's over all)";
  md << ".\n\n";
  md << "| norm | parameters | final train acc | final test loss | final test acc | best test acc | time per run |\n"
     << "|---|---|---|---|---|---|---|\n";
  for (NormKind k : norms) {
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
      if (r.diverged()) md << "- **" << norm_title(r.norm) << ", seed " << r.seed << "**: " << r.reason << "\n";
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
      md << "## Stability telemetry\n\nPer epoch (telemetry.csv has every layer): the effective learning rate "
            "lr/‖w‖² of the convs before a norm, and BatchNorm's train/eval gap (a norm without running "
            "statistics has none).\n\n![effective learning rate](effective_lr.png)\n\n";
      if (any_bn_gap(in)) md << "![train/eval gap](bn_gap.png)\n\n";
    }
    md << "## Misclassified test images\n\n";
    for (NormKind k : norms)
      if (first_ok(runs_of(in, k)))
        md << "![" << norm_title(k) << " misclassified](misclassified_" << norm_key(k) << ".png)\n\n";
    md << "## Confusion matrices\n\n";
    for (NormKind k : norms)
      if (first_ok(runs_of(in, k)))
        md << "![" << norm_title(k) << " confusion](confusion_" << norm_key(k) << ".png)\n\n";
  } else {
    md << "Pictures were not rendered (gnuplot missing or failed): run `gnuplot plots.gp` in this "
          "folder.\n";
  }
  nl::nn::write_file_atomic(path_in(in, "report.md"), md.str());
}

}  // namespace compare
