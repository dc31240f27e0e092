// normlab_study: the statistics of its report against tabulated and independently integrated
// values, the grid's canonical form, and the done-when of the study harness: a study killed at
// any moment and continued with --resume ends with the same study.csv as an uninterrupted one.
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "data_helpers.h"
#include "helpers.h"
#include "stats.h"
#include "study.h"

using Catch::Matchers::Contains;
using namespace nl::test;
using namespace compare;
using Catch::Detail::Approx;

TEST_CASE("study statistics: Student's t quantiles, CDF and Welch's t-test", "[study][stats][quick]") {
  // t(0.975, df) from the tables.
  CHECK(student_t_quantile(0.975, 1) == Approx(12.706205).epsilon(1e-6));
  CHECK(student_t_quantile(0.975, 2) == Approx(4.302653).epsilon(1e-6));
  CHECK(student_t_quantile(0.975, 4) == Approx(2.776445).epsilon(1e-6));
  CHECK(student_t_quantile(0.975, 30) == Approx(2.042272).epsilon(1e-6));
  CHECK(student_t_cdf(0.0, 3.0) == Approx(0.5));
  // P(T > 1.5) at df 2.5 by numerical integration of the density (Python, 200k midpoints).
  CHECK(1.0 - student_t_cdf(1.5, 2.5) == Approx(0.1239182265).epsilon(1e-7));
  CHECK(student_t_cdf(-1.5, 2.5) == Approx(0.1239182265).epsilon(1e-7));

  // Welch's example 1 (unequal variances, 15 vs 15): t -2.46, df 25.0, p 0.021.
  const std::vector<double> a = {27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1,
                                 21.9, 22.6, 23.1, 19.6, 19.0, 21.7, 21.4};
  const std::vector<double> b = {27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0,
                                 24.8, 20.2, 21.9, 22.1, 22.9, 20.5, 24.4};
  Welch w = welch_t_test(a, b);
  REQUIRE(w.defined);
  CHECK(w.t == Approx(-2.45535639828601).epsilon(1e-9));
  CHECK(w.df == Approx(24.98852929023142).epsilon(1e-9));
  CHECK(w.p == Approx(0.021378001462863207).epsilon(1e-6));
  // Three seeds against two, as a study has them (p integrated the same way).
  w = welch_t_test({61.2, 62.5, 60.9}, {58.0, 57.1});
  CHECK(w.t == Approx(5.980609452025619).epsilon(1e-9));
  CHECK(w.df == Approx(2.808347271880401).epsilon(1e-9));
  CHECK(w.p == Approx(0.011259414381517575).epsilon(1e-6));
  CHECK_FALSE(welch_t_test({1.0}, {2.0, 3.0}).defined);
  CHECK(welch_t_test({1.0, 1.0}, {1.0, 1.0}).p == 1.0);
  CHECK(welch_t_test({1.0, 1.0}, {2.0, 2.0}).p == 0.0);

  const Summary s = summarize({1.0, 2.0, 3.0});
  CHECK(s.mean == Approx(2.0));
  CHECK(s.std == Approx(1.0));
  CHECK(s.ci_high - s.mean == Approx(4.30265272974946 / std::sqrt(3.0)).epsilon(1e-6));
}

TEST_CASE("study grid: an axis that does not change a norm runs once, BatchNorm below the batch is Ghost BN",
          "[study][quick]") {
  StudyAxes axes;
  axes.norms = {"bn", "gn", "ln", "brn"};
  axes.ghost_batch = {2, 128, 256};
  axes.seeds = {0, 1};
  axes.groups = {2, 4};
  const std::vector<RunSpec> runs = expand_grid(axes);
  // bn, brn: 2 ghost batches (128 and 256 are the whole batch) x 2 seeds; gn: 2 group counts x 2
  // seeds; ln: 2 seeds.
  REQUIRE(runs.size() == 4 + 4 + 4 + 2);
  int gbn = 0, gbrn = 0;
  for (const RunSpec& r : runs) {
    CAPTURE(r.id);
    gbn += r.app_norm == "gbn", gbrn += r.app_norm == "gbrn";
    if (r.norm == "gn") CHECK((r.ghost_batch == 0 && (r.groups == 2 || r.groups == 4)));
    if (r.norm == "ln") CHECK((r.ghost_batch == 0 && r.groups == 0));
    if (r.app_norm == "gbn") {
      CHECK(r.ghost_batch == 2);
      const auto args = r.app_args();
      CHECK(std::find(args.begin(), args.end(), "--ghost-batch") + 1 != args.end());
      CHECK(*(std::find(args.begin(), args.end(), "--ghost-batch") + 1) == "2");
    }
    if (r.norm == "bn" && r.app_norm == "bn") CHECK(r.ghost_batch == 128);
  }
  CHECK(gbn == 2);
  CHECK(gbrn == 2);
  axes = {};
  axes.batch = {64, 256};
  axes.scale_lr = true;
  const std::vector<RunSpec> scaled = expand_grid(axes);
  REQUIRE(scaled.size() == 6);
  CHECK(scaled[0].lr == Approx(0.05));
  CHECK(scaled[3].lr == Approx(0.2));
  // The crop padding: an axis of every norm on CIFAR-10, none on Fashion-MNIST (no crop there).
  axes = {};
  axes.norms = {"gn"};
  axes.crop_pad = {"black", "mean", "reflect"};
  axes.datasets = {"cifar10", "fashion-mnist"};
  const std::vector<RunSpec> padded = expand_grid(axes);
  REQUIRE(padded.size() == 3 + 1);
  CHECK(padded[0].id == "gn_cifar10_e20_b128_gb0_lr0.1_G4_padblack_s0");
  CHECK(padded[2].crop_pad == "reflect");
  const auto pad_args = padded[2].app_args();
  REQUIRE(std::find(pad_args.begin(), pad_args.end(), "--crop-pad") + 1 < pad_args.end());
  CHECK(*(std::find(pad_args.begin(), pad_args.end(), "--crop-pad") + 1) == "reflect");
  CHECK(padded[3].crop_pad.empty());
  CHECK(padded[3].id == "gn_fashion-mnist_e20_b128_gb0_lr0.1_G4_s0");
  axes.crop_pad = {"zero"};
  CHECK_THROWS_WITH(expand_grid(axes), Contains("study: crop-pad must be black") && Contains("got 'zero'"));
  axes = {};
  axes.norms = {"bn", "xn"};
  CHECK_THROWS_WITH(expand_grid(axes), Contains("unknown norm 'xn'"));
  axes = {};
  axes.groups = {3};
  CHECK_THROWS_WITH(expand_grid(axes), Contains("groups must divide"));
}

namespace {

std::vector<std::string> study_args(const fs::path& data, const fs::path& out) {
  return {"--norms",   "bn,gn", "--ghost-batch",     "4,16", "--seeds",       "0,1",
          "--epochs",  "2",     "--batch",           "16",   "--data-dir",    data.string(),
          "--jobs",    "2",     "--threads-per-job", "1",    "--no-progress", "--out",
          out.string()};
}

// Starts the study, kills it with `sig` after `ms` milliseconds (or when it ends first).
void start_and_kill(const std::vector<std::string>& args, int ms, int sig) {
  const pid_t pid = spawn_bin(NORMLAB_STUDY_BIN, args, {}, {}, -1);
  int status = 0;
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  while (std::chrono::steady_clock::now() < until) {
    if (::waitpid(pid, &status, WNOHANG) == pid) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ::kill(pid, sig);
  ::waitpid(pid, &status, 0);
  // No pause before the next study: after a SIGKILL the runs are still finishing their step
  // (PR_SET_PDEATHSIG) and holding their folders, and the resumed study must wait for them
  // rather than fail (it did, under ASan, before it waited).
}

}  // namespace

TEST_CASE("a study killed at any moment and continued with --resume ends with the uninterrupted study.csv",
          "[study][app][resume][quick]") {
  TempDir t;
  const fs::path data = make_cifar(t.path / "data", {});
  const fs::path whole = t.path / "whole";
  Run r = run_bin(NORMLAB_STUDY_BIN, study_args(data, whole));
  INFO(r.output);
  REQUIRE(r.status == 0);
  const std::string expected = slurp(whole / "study.csv");
  // Header + bn at ghost 4 and 16 x 2 seeds + gn x 2 seeds (gn has no ghost batch: run once).
  CHECK(std::count(expected.begin(), expected.end(), '\n') == 1 + 4 + 2);
  CHECK_THAT(expected,
             Contains("bn_cifar10_e2_b16_gb4_lr0.1_G0_padreflect_s1,bn,cifar10,2,16,4,0.1,0,reflect,1,ok,"));
  CHECK_THAT(slurp(whole / "study.md"),
             Contains("## Significance") && Contains("| ghost batch 4 | BatchNorm | GroupNorm |"));
  // Telemetry curves per setting: epochs 1 and 2, each the mean of the norm's two seeds; the
  // train/eval gap only for BatchNorm.
  CHECK_THAT(slurp(whole / "study.md"), Contains("## Telemetry") && Contains("](telemetry_1.png)"));
  const std::string tel_bn = slurp(whole / "telemetry_1_bn.dat"),
                    tel_gn = slurp(whole / "telemetry_1_gn.dat");
  CHECK(std::count(tel_bn.begin(), tel_bn.end(), '\n') == 3);
  CHECK_THAT(tel_bn, Contains("\n2 ") && Contains(" 2\n") && !Contains("NaN"));
  CHECK_THAT(tel_gn, Contains(" NaN 2\n"));
  const nlohmann::json j = nlohmann::json::parse(slurp(whole / "study.json"));
  CHECK(j["runs"].size() == 6);
  CHECK(j["runs"][0]["app_norm"] == "gbn");

  // Kills at several moments (before any run finished, with runs in flight, during a resume),
  // by SIGKILL (nothing runs in the study after it) and SIGINT; then one --resume to the end.
  const fs::path broken = t.path / "broken";
  std::vector<std::string> args = study_args(data, broken);
  start_and_kill(args, 150, SIGKILL);
  args.push_back("--resume");
  for (const auto& [ms, sig] :
       std::vector<std::pair<int, int>>{{400, SIGKILL}, {250, SIGINT}, {700, SIGKILL}}) {
    CAPTURE(ms, sig);
    start_and_kill(args, ms, sig);
  }
  r = run_bin(NORMLAB_STUDY_BIN, args);
  INFO(r.output);
  REQUIRE(r.status == 0);
  CHECK(slurp(broken / "study.csv") == expected);

  // A finished study is not redone: its runs are all skipped.
  r = run_bin(NORMLAB_STUDY_BIN, args);
  CHECK(r.status == 0);
  CHECK_THAT(r.output, Contains("6 runs (6 already finished)"));
}

TEST_CASE("normlab_study refuses what it cannot do, naming the problem", "[study][app][robust][quick]") {
  TempDir t;
  const fs::path data = make_cifar(t.path / "data", {});
  const fs::path out = t.path / "s";
  std::vector<std::string> args = study_args(data, out);
  args[5] = "0";  // one seed: quick
  REQUIRE(run_bin(NORMLAB_STUDY_BIN, args).status == 0);
  Run r = run_bin(NORMLAB_STUDY_BIN, args);
  CHECK(r.status == 1);
  CHECK_THAT(r.output, Contains("already holds a study") && Contains("--resume"));
  std::vector<std::string> other = args;
  other[5] = "0,1";
  other.push_back("--resume");
  r = run_bin(NORMLAB_STUDY_BIN, other);
  CHECK(r.status == 1);
  CHECK_THAT(r.output, Contains("had another configuration") && Contains("seed"));
  r = run_bin(NORMLAB_STUDY_BIN, {"--ghost-batch", "8,x", "--out", (t.path / "x").string()});
  CHECK(r.status == 2);
  CHECK_THAT(r.output, Contains("--ghost-batch: 'x' is not a valid value"));
  r = run_bin(NORMLAB_STUDY_BIN, {"--norms", "bn,zz", "--out", (t.path / "x").string()});
  CHECK(r.status == 2);
  CHECK_THAT(r.output, Contains("unknown norm 'zz'"));
  r = run_bin(NORMLAB_STUDY_BIN, {"--resume", "--out", (t.path / "none").string()});
  CHECK(r.status == 1);
  CHECK_THAT(r.output, Contains("holds no study to continue"));
  r = run_bin(NORMLAB_STUDY_BIN,
              {"--study", (t.path / "missing.json").string(), "--out", (t.path / "y").string()});
  CHECK(r.status == 2);
  CHECK_THAT(r.output, Contains("cannot read the file"));
}

TEST_CASE("stability telemetry is written per layer and epoch and leaves the trajectory unchanged",
          "[app][telemetry][quick]") {
  TempDir t;
  const fs::path data = make_cifar(t.path / "data", {});
  auto run = [&](const fs::path& out, bool telemetry) {
    std::vector<std::string> a = {"--data-dir", data.string(), "--out",    out.string(),   "--norms",
                                  "bn,gn",      "--epochs",    "2",        "--batch-size", "16",
                                  "--threads",  "1",           "--device", "cpu"};
    if (!telemetry) a.push_back("--no-telemetry");
    if (light_tests()) a.insert(a.end(), {"--limit-train", "32"});
    Run r = run_bin(NORMLAB_COMPARE_NORMS_BIN, a);
    INFO(r.output);
    REQUIRE(r.status == 0);
    // metrics.csv without its seconds column.
    std::istringstream in(slurp(out / "metrics.csv"));
    std::string kept;
    for (std::string line; std::getline(in, line);) {
      std::vector<std::string> f;
      std::stringstream ls(line);
      for (std::string x; std::getline(ls, x, ',');) f.push_back(x);
      for (size_t i = 0; i < f.size(); ++i)
        if (i != 7) kept += f[i] + ",";
      kept += "\n";
    }
    return kept;
  };
  const std::string with = run(t.path / "on", true), without = run(t.path / "off", false);
  CHECK(with == without);
  CHECK_FALSE(fs::exists(t.path / "off" / "telemetry.csv"));
  const std::string csv = slurp(t.path / "on" / "telemetry.csv");
  // 8 convs before a norm (C1, C2, C3, C4.body, C5.body, C7, C8.body, C9.body) x 2 epochs x 2 norms.
  CHECK(std::count(csv.begin(), csv.end(), '\n') == 1 + 8 * 2 * 2);
  CHECK_THAT(csv, Contains("bn,0,2,C4.body,"));
  const nlohmann::json j = nlohmann::json::parse(slurp(t.path / "on" / "results.json"));
  const nlohmann::json& bn = j["norms"]["bn"]["runs"][0]["telemetry"];
  const nlohmann::json& gn = j["norms"]["gn"]["runs"][0]["telemetry"];
  REQUIRE(bn.size() == 2);
  CHECK(bn[1]["bn_gap"].is_number());
  CHECK(gn[1]["bn_gap"].is_null());
  for (const nlohmann::json& l : bn[1]["layers"]) {
    CAPTURE(l.dump());
    CHECK(l["weight_norm"].get<double>() > 0);
    CHECK(l["grad_norm"].get<double>() > 0);
    CHECK(l["eff_lr"].get<double>() == Approx(0.0).margin(1.0));
    CHECK(l["out_std"].get<double>() > 0);
  }
}
