#include "study.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <map>
#include <set>
#include <sstream>

#include "normlab/nn/models.h"
#include "normlab/core/error.h"
#include "normlab/nn/atomic_file.h"
#include "process.h"
#include "report.h"
#include "stats.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace compare {

namespace {

std::string num(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.9g", v);
  return b;
}

std::string fixed(double v, int digits) {
  if (!std::isfinite(v)) return "";
  std::ostringstream os;
  os << std::fixed << std::setprecision(digits) << v;
  return os.str();
}

}  // namespace

bool uses_ghost_batch(const std::string& norm) { return !nl::nn::parse_norm(norm)->ghost_batch_key.empty(); }
bool uses_groups(const std::string& norm) { return nl::nn::parse_norm(norm)->uses_groups; }

std::vector<std::string> RunSpec::app_args() const {
  std::vector<std::string> args = {
      "--norms",       app_norm,
      "--dataset",     dataset,
      "--epochs",      std::to_string(epochs),
      "--batch-size",  std::to_string(batch),
      "--lr",          num(lr),
      "--seed",        std::to_string(seed),
      "--seeds",       "1",
      "--groups",      std::to_string(groups > 0 ? groups : 4),
      "--ghost-batch", std::to_string(ghost_batch > 0 && ghost_batch < batch ? ghost_batch : 32),
      "--no-progress"};
  if (!crop_pad.empty()) args.insert(args.end(), {"--crop-pad", crop_pad});
  return args;
}

json RunSpec::to_json() const {
  return {{"id", id},           {"norm", norm},   {"app_norm", app_norm},       {"dataset", dataset},
          {"epochs", epochs},   {"batch", batch}, {"ghost_batch", ghost_batch}, {"groups", groups},
          {"base_lr", base_lr}, {"lr", lr},       {"crop_pad", crop_pad},       {"seed", seed}};
}

std::vector<RunSpec> expand_grid(const StudyAxes& a) {
  auto nonempty = [](const auto& v, const char* axis) {
    NL_CHECK(!v.empty(), "study: the ", axis, " axis is empty");
  };
  nonempty(a.norms, "norm"), nonempty(a.batch, "batch"), nonempty(a.ghost_batch, "ghost-batch");
  nonempty(a.lr, "lr"), nonempty(a.groups, "groups"), nonempty(a.seeds, "seed");
  nonempty(a.epochs, "epochs"), nonempty(a.datasets, "dataset"), nonempty(a.crop_pad, "crop-pad");
  for (const std::string& p : a.crop_pad) (void)nl::data::parse_crop_pad(p, "study: crop-pad");
  for (const std::string& n : a.norms) (void)parse_norm(n);  // throws naming the known keys
  for (int64_t b : a.batch) NL_CHECK(b >= 1, "study: batch must be at least 1, got ", b);
  for (int64_t g : a.ghost_batch)
    NL_CHECK(g >= 0, "study: ghost-batch must be 0 (the whole batch) or more, got ", g);
  for (double lr : a.lr)
    NL_CHECK(std::isfinite(lr) && lr > 0, "study: lr must be positive and finite, got ", lr);
  for (int64_t g : a.groups)
    NL_CHECK(g == 1 || g == 2 || g == 4 || g == 8,
             "study: groups must divide the network's widths 16, 24 and 32: 1, 2, 4 or 8, got ", g);
  for (int64_t e : a.epochs) NL_CHECK(e >= 1, "study: epochs must be at least 1, got ", e);
  for (const std::string& d : a.datasets)
    NL_CHECK(d == "cifar10" || d == "fashion-mnist", "study: dataset must be cifar10 or fashion-mnist, got '",
             d, "'");

  std::vector<RunSpec> out;
  std::set<std::string> seen;
  for (const std::string& ds : a.datasets)
    for (int64_t ep : a.epochs)
      for (int64_t B : a.batch)
        for (double lr : a.lr)
          for (int64_t G : a.groups)
            for (int64_t gb : a.ghost_batch)
              for (const std::string& pad : a.crop_pad)
                for (const std::string& norm : a.norms)
                  for (uint64_t seed : a.seeds) {
                    RunSpec r;
                    r.crop_pad = ds == "cifar10" ? pad : "";  // Fashion-MNIST trains without the crop
                    r.norm = norm, r.dataset = ds, r.epochs = ep, r.batch = B, r.seed = seed;
                    r.base_lr = lr;
                    r.lr = a.scale_lr ? lr * double(B) / 128.0 : lr;
                    r.groups = uses_groups(norm) ? G : 0;
                    r.app_norm = norm;
                    if (uses_ghost_batch(norm)) {
                      r.ghost_batch = gb == 0 || gb >= B ? B : gb;
                      const nl::nn::NormRef v = nl::nn::parse_norm(norm);
                      const std::string& whole = v->whole_batch_key;
                      const std::string& ghost = v->ghost_batch_key;
                      r.app_norm = r.ghost_batch < B ? ghost : whole;
                    }
                    r.id = norm + "_" + ds + "_e" + std::to_string(ep) + "_b" + std::to_string(B) + "_gb" +
                           std::to_string(r.ghost_batch) + "_lr" + num(r.lr) + "_G" +
                           std::to_string(r.groups) + (r.crop_pad.empty() ? "" : "_pad" + r.crop_pad) + "_s" +
                           std::to_string(seed);
                    if (seen.insert(r.id).second) out.push_back(r);
                  }
  return out;
}

void read_study_file(const std::string& path, StudyAxes& a) {
  std::ifstream in(path);
  NL_CHECK(in.good(), "--study ", path, ": cannot read the file");
  json j;
  try {
    j = json::parse(in);
  } catch (const std::exception& e) {
    NL_FAIL("--study ", path, ": not valid JSON: ", e.what());
  }
  NL_CHECK(j.is_object(), "--study ", path,
           ": must be a JSON object of axes, e.g. {\"norm\": [\"bn\", \"gn\"]}");
  static const std::set<std::string> known = {"norm", "batch",  "ghost_batch", "lr",       "groups",
                                              "seed", "epochs", "dataset",     "crop_pad", "scale_lr"};
  for (const auto& [k, v] : j.items()) {
    NL_CHECK(known.count(k), "--study ", path, ": unknown key '", k,
             "' (known: norm, batch, ghost_batch, lr, groups, seed, epochs, dataset, crop_pad, scale_lr)");
    try {
      if (k == "scale_lr")
        a.scale_lr = v.get<bool>();
      else {
        NL_CHECK(v.is_array(), "--study ", path, ": '", k, "' must be a list");
        if (k == "norm") a.norms = v.get<std::vector<std::string>>();
        if (k == "batch") a.batch = v.get<std::vector<int64_t>>();
        if (k == "ghost_batch") a.ghost_batch = v.get<std::vector<int64_t>>();
        if (k == "lr") a.lr = v.get<std::vector<double>>();
        if (k == "groups") a.groups = v.get<std::vector<int64_t>>();
        if (k == "seed") a.seeds = v.get<std::vector<uint64_t>>();
        if (k == "epochs") a.epochs = v.get<std::vector<int64_t>>();
        if (k == "dataset") a.datasets = v.get<std::vector<std::string>>();
        if (k == "crop_pad") a.crop_pad = v.get<std::vector<std::string>>();
      }
    } catch (const json::exception& e) {
      NL_FAIL("--study ", path, ": '", k, "' has the wrong type: ", e.what());
    }
  }
}

json axes_to_json(const StudyAxes& a) {
  return {{"norm", a.norms},
          {"batch", a.batch},
          {"ghost_batch", a.ghost_batch},
          {"lr", a.lr},
          {"groups", a.groups},
          {"seed", a.seeds},
          {"epochs", a.epochs},
          {"dataset", a.datasets},
          {"crop_pad", a.crop_pad},
          {"scale_lr", a.scale_lr}};
}

RunOutcome read_outcome(const std::string& run_dir, const RunSpec& spec) {
  RunOutcome o;
  o.status = "missing";
  std::ifstream in(fs::path(run_dir) / "results.json");
  if (!in.good()) return o;
  json j;
  try {
    j = json::parse(in);
    const json& runs = j.at("norms").at(spec.app_norm).at("runs");
    if (runs.empty()) return o;
    const json& r = runs.at(0);
    o.status = r.at("status").get<std::string>();
    o.epochs_finished = r.value("epochs_finished", int64_t(0));
    o.seconds = r.value("seconds", NAN);
    if (r.contains("final")) {
      o.final_test_acc = r["final"]["test_acc"], o.final_test_loss = r["final"]["test_loss"];
      o.final_train_acc = r["final"]["train_acc"], o.final_train_loss = r["final"]["train_loss"];
    }
    if (r.contains("best")) o.best_test_acc = r["best"]["test_acc"];
    if (r.contains("telemetry") && r["telemetry"].is_array() && !r["telemetry"].empty()) {
      // The last epoch's, plus the run's loss spikes over all epochs.
      o.telemetry = r["telemetry"].back();
      o.telemetry_epochs = r["telemetry"];
      int64_t spikes = 0;
      for (const json& e : r["telemetry"]) spikes += e.value("loss_spikes", int64_t(0));
      o.loss_spikes = spikes;
      if (o.telemetry.contains("bn_gap") && o.telemetry["bn_gap"].is_number())
        o.bn_gap = o.telemetry["bn_gap"];
    }
  } catch (const std::exception&) {
    o.status = "missing";  // half a study's results.json cannot exist (written atomically): a foreign file
  }
  return o;
}

void write_study_csv(const std::string& path, const std::vector<RunSpec>& runs,
                     const std::vector<RunOutcome>& outs) {
  std::ostringstream os;
  os << "id,norm,dataset,epochs,batch,ghost_batch,lr,groups,crop_pad,seed,status,final_test_acc,best_test_"
        "acc,"
        "final_test_loss,final_train_acc,final_train_loss,loss_spikes,bn_gap\n";
  for (size_t i = 0; i < runs.size(); ++i) {
    const RunSpec& r = runs[i];
    const RunOutcome& o = outs[i];
    if (!o.finished()) continue;
    os << r.id << ',' << r.norm << ',' << r.dataset << ',' << r.epochs << ',' << r.batch << ','
       << r.ghost_batch << ',' << num(r.lr) << ',' << r.groups << ',' << r.crop_pad << ',' << r.seed << ','
       << o.status << ',' << fixed(o.final_test_acc, 4) << ',' << fixed(o.best_test_acc, 4) << ','
       << fixed(o.final_test_loss, 6) << ',' << fixed(o.final_train_acc, 4) << ','
       << fixed(o.final_train_loss, 6) << ',' << (o.loss_spikes >= 0 ? std::to_string(o.loss_spikes) : "")
       << ',' << fixed(o.bn_gap, 4) << '\n';
  }
  nl::nn::write_file_atomic(path, os.str());
}

namespace {

// A run's coordinates in the report: every axis but norm and seed, "*" where the axis does not
// apply to the norm (GroupNorm's ghost batch), so that it belongs to every value of that axis.
const std::vector<std::string> kCoords = {"dataset", "epochs",      "batch",   "lr",
                                          "groups",  "ghost_batch", "crop_pad"};
const std::map<std::string, std::string> kCoordTitle = {
    {"dataset", "dataset"}, {"epochs", "epochs"},           {"batch", "batch"},          {"lr", "peak lr"},
    {"groups", "groups"},   {"ghost_batch", "ghost batch"}, {"crop_pad", "crop padding"}};
// Axes whose values are names, not numbers: plotted at evenly spaced positions.
bool categorical(const std::string& axis) { return axis == "dataset" || axis == "crop_pad"; }

std::map<std::string, std::string> coords_of(const RunSpec& r) {
  return {{"dataset", r.dataset},
          {"epochs", std::to_string(r.epochs)},
          {"batch", std::to_string(r.batch)},
          {"lr", num(r.base_lr)},
          {"groups", r.groups ? std::to_string(r.groups) : "*"},
          {"ghost_batch", r.ghost_batch ? std::to_string(r.ghost_batch) : "*"},
          {"crop_pad", r.crop_pad.empty() ? "*" : r.crop_pad}};
}

bool numeric_less(const std::string& a, const std::string& b) {
  char* ea = nullptr;
  char* eb = nullptr;
  const double x = std::strtod(a.c_str(), &ea), y = std::strtod(b.c_str(), &eb);
  if (*ea == '\0' && *eb == '\0' && !a.empty() && !b.empty()) return x < y;
  return a < b;
}

using Cell = std::map<std::string, std::string>;

bool matches(const Cell& cell, const std::map<std::string, std::string>& c) {
  for (const auto& [k, v] : cell)
    if (c.at(k) != "*" && c.at(k) != v) return false;
  return true;
}

struct PointStats {
  Summary test, train, best;
  std::vector<double> test_values;
  int64_t diverged = 0;
};

}  // namespace

void write_study_json(const std::string& path, const json& config, const std::vector<RunSpec>& runs,
                      const std::vector<RunOutcome>& outs) {
  json j = {{"config", config}, {"runs", json::array()}};
  for (size_t i = 0; i < runs.size(); ++i) {
    json r = runs[i].to_json();
    const RunOutcome& o = outs[i];
    r["status"] = o.status;
    r["epochs_finished"] = o.epochs_finished;
    auto put = [&](const char* k, double v) { r[k] = std::isfinite(v) ? json(v) : json(nullptr); };
    put("final_test_acc", o.final_test_acc), put("best_test_acc", o.best_test_acc);
    put("final_test_loss", o.final_test_loss), put("final_train_acc", o.final_train_acc);
    put("final_train_loss", o.final_train_loss), put("seconds", o.seconds), put("bn_gap", o.bn_gap);
    if (o.loss_spikes >= 0) r["loss_spikes"] = o.loss_spikes;
    if (!o.telemetry.is_null()) r["telemetry"] = o.telemetry;
    j["runs"].push_back(r);
  }
  nl::nn::write_file_atomic(path, j.dump(1) + "\n");
}

namespace {
// The terminal and output lines of one picture (stem.term), drawn to a temporary that is renamed
// once gnuplot succeeds (recorded in `pictures`).
std::string picture_header(const std::string& stem, const std::string& term, const std::string& size_font,
                           std::vector<std::pair<std::string, std::string>>& pictures) {
  const std::string name = stem + "." + term, tmp = name + ".normlab-tmp";
  pictures.emplace_back(tmp, name);
  return std::string(term == "png" ? "set terminal pngcairo size " : "set terminal svg size ") + size_font +
         "\n" + "set output " + gp_quote(tmp) + "\nset encoding utf8\n";
}
}  // namespace

bool write_study_report(const std::string& dir, const json& config, const std::vector<RunSpec>& runs,
                        const std::vector<RunOutcome>& outs) {
  // Norms in study order, distinct coordinate values per axis.
  std::vector<std::string> norms;
  std::map<std::string, std::vector<std::string>> values;
  for (const RunSpec& r : runs) {
    if (std::find(norms.begin(), norms.end(), r.norm) == norms.end()) norms.push_back(r.norm);
    for (const auto& [k, v] : coords_of(r))
      if (v != "*" && std::find(values[k].begin(), values[k].end(), v) == values[k].end())
        values[k].push_back(v);
  }
  for (auto& [k, v] : values) std::sort(v.begin(), v.end(), numeric_less);
  std::vector<std::string> swept;
  for (const std::string& k : kCoords)
    if (values[k].size() > 1) swept.push_back(k);
  // Every cell: the product of the axes' values ("*" for an axis no norm of the study uses).
  std::vector<Cell> cells(1);
  for (const std::string& k : kCoords) {
    const std::vector<std::string> vs = values[k].empty() ? std::vector<std::string>{"*"} : values[k];
    std::vector<Cell> next;
    for (const Cell& c : cells)
      for (const std::string& v : vs) {
        Cell d = c;
        d[k] = v;
        next.push_back(d);
      }
    cells = next;
  }
  auto stats_of = [&](const Cell& cell, const std::string& norm) {
    PointStats p;
    std::vector<double> train, best;
    for (size_t i = 0; i < runs.size(); ++i) {
      if (runs[i].norm != norm || !matches(cell, coords_of(runs[i]))) continue;
      if (outs[i].status == "diverged") ++p.diverged;
      if (outs[i].status != "ok") continue;
      p.test_values.push_back(outs[i].final_test_acc);
      train.push_back(outs[i].final_train_acc);
      best.push_back(outs[i].best_test_acc);
    }
    p.test = summarize(p.test_values), p.train = summarize(train), p.best = summarize(best);
    return p;
  };
  auto title = [](const std::string& key) {
    try {
      return norm_title(parse_norm(key));
    } catch (const std::exception&) {
      return key;
    }
  };
  auto cell_label = [&](const Cell& c) {
    std::string s;
    for (const std::string& k : swept) s += (s.empty() ? "" : ", ") + kCoordTitle.at(k) + " " + c.at(k);
    return s.empty() ? std::string("the study's one setting") : s;
  };
  // "t | df | p | verdict" of Welch's test of A against B.
  auto welch_cells = [](const PointStats& a, const PointStats& b) {
    const Welch w = welch_t_test(a.test_values, b.test_values);
    if (!w.defined) return std::string("— | — | — | fewer than 2 runs");
    return (std::isfinite(w.t) ? fixed(w.t, 2) : std::string(w.t > 0 ? "∞" : "−∞")) + " | " + fixed(w.df, 1) +
           " | " + (w.p < 0.001 ? std::string("< 0.001") : fixed(w.p, 3)) + " | " +
           (w.p < 0.05 ? (w.diff > 0 ? "A higher" : "B higher") : "within the noise");
  };
  auto pm = [](const Summary& s, int d) {
    if (s.n == 0) return std::string("—");
    return fixed(s.mean, d) + (s.n > 1 ? " ± " + fixed(s.std, d) : "");
  };

  std::ostringstream md;
  int64_t finished = 0, diverged = 0;
  for (const RunOutcome& o : outs) finished += o.finished(), diverged += o.status == "diverged";
  md << "# normlab study\n\n"
     << finished << " of " << runs.size() << " runs finished"
     << (diverged ? " (" + std::to_string(diverged) + " diverged)" : "") << ". Axes: `"
     << config["axes"].dump() << "`. Per-run results: study.csv; everything: study.json; each run's "
     << "own report: runs/<id>/report.md.\n\n"
     << "Final test accuracy (%) over seeds: mean ± sample std, n runs, 95% confidence interval of the mean "
        "from "
        "Student's t (n − 1 degrees of freedom). Norms whose statistics do not depend on an axis (GroupNorm, "
        "LayerNorm and GN+WS on the ghost batch; all but GroupNorm on the groups) were run once per seed and "
        "appear at every value of that axis.\n\n";

  // The accuracy table.
  md << "## Accuracy\n\n| setting | norm | n | test acc | 95% CI | train acc | best test acc | diverged |\n"
     << "|---|---|---|---|---|---|---|---|\n";
  for (const Cell& c : cells)
    for (const std::string& n : norms) {
      const PointStats p = stats_of(c, n);
      if (p.test.n == 0 && p.diverged == 0) continue;
      md << "| " << cell_label(c) << " | " << title(n) << " | " << p.test.n << " | " << pm(p.test, 2) << " | "
         << (p.test.n > 1 ? "[" + fixed(p.test.ci_low, 2) + ", " + fixed(p.test.ci_high, 2) + "]" : "—")
         << " | " << pm(p.train, 2) << " | " << pm(p.best, 2) << " | " << p.diverged << " |\n";
    }

  // Welch's t-test between every pair of norms in every cell.
  md << "\n## Significance\n\nWelch's unequal-variance t-test on the final test accuracy of each pair of "
        "norms at "
        "each setting (two-sided; Welch–Satterthwaite degrees of freedom). With 2–3 seeds per side only "
        "large "
        "gaps can be told from seed noise: \"within the noise\" means p ≥ 0.05, not that the norms are "
        "equal.\n\n"
     << "| setting | A | B | A − B (pp) | t | df | p | verdict |\n|---|---|---|---|---|---|---|---|\n";
  for (const Cell& c : cells)
    for (size_t i = 0; i < norms.size(); ++i)
      for (size_t k = i + 1; k < norms.size(); ++k) {
        const PointStats a = stats_of(c, norms[i]), b = stats_of(c, norms[k]);
        if (a.test.n == 0 || b.test.n == 0) continue;
        md << "| " << cell_label(c) << " | " << title(norms[i]) << " | " << title(norms[k]) << " | "
           << fixed(a.test.mean - b.test.mean, 2) << " | " << welch_cells(a, b) << " |\n";
      }

  // The same test between the values of each swept axis, per norm, the other axes held fixed: how
  // much a setting moves a norm.
  bool along_header = false;
  // A norm that an axis does not change ("*") has the same runs at every value of it: one row.
  std::set<std::pair<std::vector<size_t>, std::vector<size_t>>> compared;
  auto members = [&](const Cell& cell, const std::string& norm) {
    std::vector<size_t> v;
    for (size_t i = 0; i < runs.size(); ++i)
      if (runs[i].norm == norm && matches(cell, coords_of(runs[i]))) v.push_back(i);
    return v;
  };
  for (const std::string& x : swept) {
    for (const std::string& n : norms)
      for (size_t i = 0; i < values[x].size(); ++i)
        for (size_t k = i + 1; k < values[x].size(); ++k)
          for (const Cell& c : cells) {
            if (c.at(x) != values[x][i]) continue;  // each combination of the other axes once
            Cell other = c;
            other[x] = values[x][k];
            const PointStats a = stats_of(c, n), b = stats_of(other, n);
            if (a.test.n == 0 || b.test.n == 0) continue;
            const auto ma = members(c, n), mb = members(other, n);
            if (ma == mb || !compared.insert({ma, mb}).second) continue;
            if (!along_header)
              md << "\n## Between settings\n\nThe same test between two values of a swept axis, per norm, "
                    "the other "
                    "axes held fixed.\n\n| norm | axis | A | B | other axes | A − B (pp) | t | df | p | "
                    "verdict |\n"
                    "|---|---|---|---|---|---|---|---|---|---|\n";
            along_header = true;
            std::string rest;
            for (const std::string& k2 : swept)
              if (k2 != x) rest += (rest.empty() ? "" : ", ") + kCoordTitle.at(k2) + " " + c.at(k2);
            md << "| " << title(n) << " | " << kCoordTitle.at(x) << " | " << values[x][i] << " | "
               << values[x][k] << " | " << (rest.empty() ? "—" : rest) << " | "
               << fixed(a.test.mean - b.test.mean, 2) << " | " << welch_cells(a, b) << " |\n";
          }
  }

  // One plot per swept numeric axis and per combination of the other swept axes.
  std::ostringstream gp;
  std::vector<std::pair<std::string, std::string>> pictures;  // (temporary name, final name)
  for (const std::string& x : swept) {
    if (x == "dataset") continue;
    std::map<std::string, std::vector<Cell>> groups;  // other swept coordinates -> cells along x
    for (const Cell& c : cells) {
      std::string key;
      for (const std::string& k : swept)
        if (k != x) key += (key.empty() ? "" : ", ") + kCoordTitle.at(k) + " " + c.at(k);
      groups[key].push_back(c);
    }
    int gi = 0;
    for (const auto& [key, along] : groups) {
      const std::string stem = "acc_vs_" + x + (groups.size() > 1 ? "_" + std::to_string(++gi) : "");
      std::vector<std::string> series;
      for (const std::string& n : norms) {
        std::ostringstream dat;
        dat << "# " << (categorical(x) ? "position" : x) << " test_mean test_std train_mean train_std n"
            << (categorical(x) ? " " + x : "") << "\n";
        bool any = false;
        for (const Cell& c : along) {
          const PointStats p = stats_of(c, n);
          if (p.test.n == 0) continue;
          any = true;
          const auto& vs = values[x];
          const auto pos = std::find(vs.begin(), vs.end(), c.at(x)) - vs.begin();
          dat << (categorical(x) ? std::to_string(pos) : c.at(x)) << ' ' << fixed(p.test.mean, 4) << ' '
              << fixed(p.test.std, 4) << ' ' << fixed(p.train.mean, 4) << ' ' << fixed(p.train.std, 4) << ' '
              << p.test.n << (categorical(x) ? " " + c.at(x) : "") << '\n';
        }
        if (!any) continue;
        const std::string dat_name = stem + "_" + n + ".dat";
        nl::nn::write_file_atomic((fs::path(dir) / dat_name).string(), dat.str());
        series.push_back(n);
      }
      if (series.empty()) continue;
      for (const char* term : {"png", "svg"}) {
        gp << picture_header(stem, term, "1100,600 font 'Sans,11'", pictures)
           << "set key outside right noenhanced\n"
           << "set grid\nset offsets graph 0.04, graph 0.04, 0, 0\nunset logscale x\n"
           << (categorical(x)  ? "set offsets 0.3, 0.3, 0, 0\n"
               : x != "epochs" ? "set logscale x 2\n"
                               : "")
           << "set xlabel " << gp_quote(kCoordTitle.at(x)) << "\nset ylabel 'accuracy (%)'\n"
           << "set title "
           << gp_quote("final accuracy vs " + kCoordTitle.at(x) + (key.empty() ? "" : " (" + key + ")") +
                       ": test (solid, mean ± std over seeds), training (dashed)")
           << " noenhanced\nplot ";
        for (size_t s = 0; s < series.size(); ++s) {
          const std::string dat = gp_quote(stem + "_" + series[s] + ".dat");
          gp << (s ? ", \\\n     " : "") << dat << " using 1:2:3" << (categorical(x) ? ":xtic(7)" : "")
             << " with yerrorlines lw 2 lc " << s + 1 << " title " << gp_quote(title(series[s])) << ", "
             << dat << " using 1:4 with lines dt 2 lc " << s + 1 << " notitle";
        }
        gp << "\n";
      }
      md << "\n![accuracy vs " << kCoordTitle.at(x) << "](" << stem << ".png)"
         << (key.empty() ? "" : " " + key) << "\n";
    }
  }
  if (swept.empty() || (swept.size() == 1 && swept[0] == "dataset"))
    md << "\nNo numeric axis was swept: no plots (the tables above hold the comparison).\n";

  // Telemetry curves per setting: each norm's per-epoch mean over its seeds of the effective
  // learning rate lr/|w|^2 (geometric mean over the convs before norms: the layers differ by
  // orders of magnitude), the gradient norm (root mean square over those convs) and, for the
  // batch-statistics norms, the train/eval gap.
  bool any_telemetry = false;
  int ti = 0;
  for (const Cell& c : cells) {
    std::vector<std::string> series;
    bool has_gap = false;  // gnuplot stops on a panel whose every point is undefined
    for (const std::string& n : norms) {
      std::map<int64_t, std::vector<std::array<double, 3>>>
          per_epoch;  // epoch -> (log eff lr, grad^2, gap) per seed
      for (size_t i = 0; i < runs.size(); ++i) {
        if (runs[i].norm != n || !matches(c, coords_of(runs[i])) || !outs[i].finished() ||
            !outs[i].telemetry_epochs.is_array())
          continue;
        for (const json& e : outs[i].telemetry_epochs) {
          double log_lr = 0, g2 = 0;
          int layers = 0;
          for (const json& l : e.value("layers", json::array())) {
            if (!l.contains("eff_lr") || !l["eff_lr"].is_number() || !l.contains("grad_norm")) continue;
            log_lr += std::log(std::max(l["eff_lr"].get<double>(), 1e-300));
            g2 += std::pow(l["grad_norm"].get<double>(), 2);
            ++layers;
          }
          if (layers == 0) continue;
          const double gap =
              e.contains("bn_gap") && e["bn_gap"].is_number() ? e["bn_gap"].get<double>() : NAN;
          per_epoch[e.value("epoch", int64_t(0))].push_back({log_lr / layers, g2 / layers, gap});
        }
      }
      if (per_epoch.empty()) continue;
      std::ostringstream dat;
      dat << "# epoch eff_lr_geomean grad_norm_rms bn_gap_pp runs (means over runs)\n";
      for (const auto& [epoch, v] : per_epoch) {
        double a = 0, b = 0, g = 0;
        int ng = 0;
        for (const auto& x : v) {
          a += x[0], b += x[1];
          if (std::isfinite(x[2])) g += x[2], ++ng;
        }
        has_gap = has_gap || ng > 0;
        dat << epoch << ' ' << num(std::exp(a / double(v.size()))) << ' '
            << num(std::sqrt(b / double(v.size()))) << ' ' << (ng ? num(g / ng) : std::string("NaN")) << ' '
            << v.size() << '\n';
      }
      nl::nn::write_file_atomic(
          (fs::path(dir) / ("telemetry_" + std::to_string(ti + 1) + "_" + n + ".dat")).string(), dat.str());
      series.push_back(n);
    }
    if (series.empty()) continue;
    if (!any_telemetry)
      md << "\n## Telemetry\n\nPer setting, each norm's mean over its seeds, per epoch: effective learning "
            "rate lr/‖w‖² (geometric mean over the convs before a norm), last-step gradient norm (root "
            "mean square over those convs) and BatchNorm's train/eval gap (test accuracy with batch "
            "statistics minus with running statistics). Data in telemetry_<k>_<norm>.dat; per-layer "
            "values in each run's telemetry.csv.\n";
    any_telemetry = true;
    const std::string stem = "telemetry_" + std::to_string(++ti);
    for (const char* term : {"png", "svg"}) {
      gp << picture_header(stem, term, "1500,450 font 'Sans,10'", pictures)
         << "set grid\nunset logscale\nset offsets 0, 0, 0, 0\n"
         << "set key inside top right noenhanced\nset xlabel 'epoch'\nunset ylabel\n"
         << "set multiplot layout 1," << (has_gap ? 3 : 2) << " title "
         << gp_quote("telemetry: " + cell_label(c) + " (means over seeds)") << " noenhanced\n";
      const char* panels[3][3] = {
          {"2", "effective lr  lr/|w|^2", "set logscale y\nset format y '%.0e'\n"},
          {"3", "gradient norm (rms over convs)", "unset logscale y\nset format y '%g'\n"},
          {"4", "BatchNorm train/eval gap (pp)", "unset logscale y\nset format y '%g'\n"}};
      for (const auto& panel : panels) {
        if (!has_gap && panel[0][0] == '4') continue;
        gp << panel[2] << "set title " << gp_quote(panel[1]) << "\nplot ";
        for (size_t s = 0; s < series.size(); ++s)
          gp << (s ? ", \\\n     " : "") << gp_quote(stem + "_" + series[s] + ".dat")
             << " using 1:" << panel[0] << " with linespoints lw 2 pt 7 ps 0.5 lc " << s + 1 << " title "
             << gp_quote(title(series[s]));
        gp << "\n";
      }
      gp << "unset multiplot\n";
    }
    md << "\n![telemetry, " << cell_label(c) << "](" << stem << ".png)\n";
  }
  nl::nn::write_file_atomic((fs::path(dir) / "study.md").string(), md.str());
  if (pictures.empty()) return false;
  nl::nn::write_file_atomic((fs::path(dir) / "study_plots.gp").string(), gp.str());
  if (run_program({"gnuplot", "--version"}, "", "/dev/null") != 0) {
    std::fprintf(
        stderr,
        "normlab_study: gnuplot not found, so no pictures were drawn; run `gnuplot study_plots.gp` in %s\n",
        dir.c_str());
    return false;
  }
  const int status = run_program({"gnuplot", "study_plots.gp"}, dir, "study_gnuplot.log");
  bool ok = status == 0;
  for (const auto& [tmp, name] : pictures) {
    std::error_code ec;
    if (ok) fs::rename(fs::path(dir) / tmp, fs::path(dir) / name, ec);
    if (!ok || ec) fs::remove(fs::path(dir) / tmp, ec), ok = false;
  }
  if (!ok)
    std::fprintf(stderr, "normlab_study: gnuplot failed on %s/study_plots.gp; see study_gnuplot.log there\n",
                 dir.c_str());
  return ok;
}

}  // namespace compare
