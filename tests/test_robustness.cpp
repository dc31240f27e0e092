// What a demanding user does to a long study: hostile class names and --out paths (nothing may
// reach a shell or gnuplot's command substitution), reused output folders, bad flags and bad
// files, and a run that diverges. Each case failed on the code before the robustness issue.
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "checkpoint.h"
#include "data_helpers.h"
#include "helpers.h"
#include "normlab/nn/models.h"
#include "normlab/core/ops.h"
#include "normlab/nn/data.h"
#include "normlab/nn/safetensors.h"
#include "report.h"
#include "run_dir.h"
#include "trainer.h"

extern char** environ;

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using namespace nl::test;

namespace {

// The app run with an argument vector (no shell: paths with quotes stay intact), in cwd, with
// extra environment variables.
Run run_app(const std::vector<std::string>& args, const fs::path& cwd = {},
            const std::vector<std::string>& env = {}) {
  return run_bin(NORMLAB_COMPARE_NORMS_BIN, args, cwd, env);
}

bool is_png(const fs::path& p) { return slurp(p).substr(0, 8) == "\x89PNG\r\n\x1a\n"; }

// Flag/value pairs of a quick run.
const std::vector<std::string> kQuick = {"--epochs",  "1", "--batch-size", "16",
                                         "--threads", "1", "--device",     "cpu"};

std::vector<std::string> args(const fs::path& data, const fs::path& out, std::vector<std::string> more = {}) {
  std::vector<std::string> a = {"--data-dir", data.string(), "--out", out.string()};
  // kQuick's defaults, except the flags `more` sets itself (CLI11 refuses a flag given twice).
  for (size_t i = 0; i + 1 < kQuick.size(); i += 2) {
    if (std::find(more.begin(), more.end(), kQuick[i]) != more.end()) continue;
    a.push_back(kQuick[i]);
    a.push_back(kQuick[i + 1]);
  }
  if (std::find(more.begin(), more.end(), "--no-progress") == more.end()) a.push_back("--no-progress");
  a.insert(a.end(), more.begin(), more.end());
  return a;
}

}  // namespace

TEST_CASE("hostile class names and --out paths reach no shell and still give pictures",
          "[app][robust][security][quick]") {
  TempDir t;
  // Each would run `touch` if it reached a shell or gnuplot's backtick substitution.
  const std::vector<std::string> classes = {"`touch PWNED_backtick`",
                                            "$(touch PWNED_dollar)",
                                            "quote\"and\\backslash",
                                            "it's",
                                            "@macro {x}_^",
                                            "system('touch PWNED_system')",
                                            "dog",
                                            "frog",
                                            "horse",
                                            "truck"};
  const fs::path data = make_cifar(t.path / "data", classes);
  for (const std::string out_name : {"bob's runs", "x';touch F;'", "a\"b`touch G`"}) {
    CAPTURE(out_name);
    const fs::path out = t.path / out_name;
    Run r = run_app(args(data, out, {"--norms", "bn"}), t.path);
    INFO(r.output);
    REQUIRE(r.status == 0);
    if (nl::test::gnuplot_expected()) {
      for (const char* png :
           {"train_loss.png", "test_accuracy.png", "misclassified_bn.png", "confusion_bn.png"}) {
        CAPTURE(png);
        CHECK(is_png(out / png));
      }
    } else {
      CHECK_THAT(r.output, Contains("gnuplot not found"));
    }
    // The class names are in the script as literal strings, printed as they are.
    const std::string gp = slurp(out / "plots.gp");
    CHECK_THAT(gp, Contains("'`touch PWNED_backtick`'") && Contains("'it''s'"));
    CHECK_THAT(gp, Contains("'quote\"and\\backslash'"));
  }
  // Nothing ran: no file named by any of the injected commands appeared anywhere.
  for (const auto& e : fs::recursive_directory_iterator(t.path)) {
    const std::string name = e.path().filename().string();
    CHECK(name.rfind("PWNED", 0) != 0);
    CHECK(name != "F");
    CHECK(name != "G");
  }
}

TEST_CASE("a run owns its --out: no mixing, --overwrite removes only its own files", "[app][robust][quick]") {
  TempDir t;
  const fs::path data = make_cifar(t.path / "data", {});
  const fs::path out = t.path / "out";
  fs::create_directories(out);
  // A user's files, which must survive every run and --overwrite.
  write_bytes(out / "notes", "mine");
  write_bytes(out / "notes.tmp", "mine too");
  write_bytes(out / "plot.png.tmp", "and this");
  // A temporary of ours that a killed run left: removed by the next run.
  write_bytes(out / "train_loss.png.4242-0-abc.normlab-tmp", "half a picture");
  Run r = run_app(args(data, out));
  INFO(r.output);
  REQUIRE(r.status == 0);
  // Without gnuplot (NORMLAB_TEST_NO_GNUPLOT=1) a grid's data file stands for its picture.
  const char* pic = nl::test::gnuplot_expected() ? ".png" : ".dat";
  CHECK(fs::exists(out / ("misclassified_gn" + std::string(pic))));

  r = run_app(args(data, out, {"--norms", "bn"}));
  CHECK(r.status == 1);
  CHECK_THAT(r.output, Contains("already holds the results of another run") && Contains("--overwrite"));
  CHECK_THAT(r.output, !Contains("epoch  1 |"));  // stopped before any training

  r = run_app(args(data, out, {"--norms", "bn", "--overwrite"}));
  REQUIRE(r.status == 0);
  CHECK(fs::exists(out / ("misclassified_bn" + std::string(pic))));
  CHECK_FALSE(
      fs::exists(out / ("misclassified_gn" + std::string(pic))));  // the old run's stale pictures are gone
  CHECK_FALSE(fs::exists(out / "curves_ln.dat"));
  CHECK(slurp(out / "notes") == "mine");
  CHECK(slurp(out / "notes.tmp") == "mine too");
  CHECK(slurp(out / "plot.png.tmp") == "and this");
  CHECK_FALSE(fs::exists(out / "train_loss.png.4242-0-abc.normlab-tmp"));
  // No temporary of ours is left behind.
  for (const auto& e : fs::directory_iterator(out))
    CHECK(e.path().filename().string().find(".normlab-tmp") == std::string::npos);
  // metrics.csv holds exactly this run (bn, 1 epoch).
  CHECK(slurp(out / "metrics.csv").find("\ngn,") == std::string::npos);
}

TEST_CASE("recipe flags (--dropout, --no-augment, --drop-last) are recorded and must match on --resume",
          "[app][robust][resume][quick]") {
  TempDir t;
  const fs::path data = make_cifar(t.path / "data", {});
  const fs::path out = t.path / "out";
  // 80 training images in batches of 24: three full batches and one of 8, which --drop-last skips.
  const std::vector<std::string> recipe = {"--norms",   "bn", "--batch-size", "24",
                                           "--dropout", "0",  "--no-augment", "--drop-last"};
  Run r = run_app(args(data, out, recipe));
  INFO(r.output);
  REQUIRE(r.status == 0);
  const nlohmann::json res = nlohmann::json::parse(slurp(out / "results.json"));
  CHECK(res["config"]["dropout"] == 0.0);
  CHECK(res["config"]["augment"] == false);
  CHECK(res["config"]["drop_last"] == true);
  // The same folder continued with the recipe's defaults would mix two recipes: refused.
  r = run_app(args(data, out, {"--norms", "bn", "--batch-size", "24", "--resume"}));
  CHECK(r.status == 1);
  // The default crop padding (reflect) is recorded where the run before had no crop at all.
  CHECK_THAT(r.output,
             Contains("had another configuration (crop_pad: not recorded before, now \"reflect\")"));
  // Black padding is what a folder without the key ran, so the next difference shows.
  r = run_app(args(data, out, {"--norms", "bn", "--batch-size", "24", "--crop-pad", "black", "--resume"}));
  CHECK(r.status == 1);
  CHECK_THAT(r.output, Contains("had another configuration (augment: was false, now not given)"));
}

TEST_CASE("an --out that cannot be written stops before training", "[app][robust][quick]") {
  TempDir t;
  const fs::path data = make_cifar(t.path / "data", {});
  write_bytes(t.path / "a-file", "x");
  Run r = run_app(args(data, t.path / "a-file" / "sub"));
  CHECK(r.status == 1);
  CHECK_THAT(r.output, Contains("--out") && Contains("a-file"));
  CHECK_THAT(r.output, !Contains("epoch  1 |"));
}

TEST_CASE("every flag is checked up front with a message naming it", "[app][robust][errors][quick]") {
  TempDir t;
  const fs::path data = make_cifar(t.path / "data", {});
  struct Case {
    std::vector<std::string> flags;
    const char* message;
  };
  for (const Case& c : std::vector<Case>{
           {{"--epochs", "0"}, "--epochs must be at least 1 (got 0)"},
           {{"--lr", "nan"}, "--lr must be a positive finite number"},
           {{"--lr", "-1"}, "--lr must be a positive finite number"},
           {{"--seed", "-1"}, "--seed must be a whole number from 0 to 18446744073709551615 (got '-1')"},
           {{"--seed", "18446744073709551616"}, "--seed must be a whole number"},
           {{"--threads", "1000"}, "--threads must be from 0 (all cores) to"},
           {{"--seeds", "0"}, "--seeds must be at least 1"},
           {{"--limit-train", "-5"}, "--limit-train must be 0 (all) or more"},
           {{"--groups", "3"},
            "--groups must divide the network's widths 16, 24 and 32: 1, 2, 4 or 8 (got 3)"},
           {{"--ghost-batch", "0"}, "--ghost-batch must be at least 1 sample (got 0)"},
           {{"--eps", "-1e-5"}, "--eps must be a positive finite number, or 0 for each norm's default"},
           {{"--eps", "inf"}, "--eps must be a positive finite number"},
           {{"--dropout", "1"}, "--dropout must be a probability in [0, 1) (got 1)"},
           {{"--dropout", "-0.1"}, "--dropout must be a probability in [0, 1)"},
       }) {
    std::vector<std::string> a = {"--data-dir", data.string(), "--out", (t.path / "o").string()};
    a.insert(a.end(), c.flags.begin(), c.flags.end());
    Run r = run_app(a);
    CAPTURE(c.flags[0], c.flags[1], r.output);
    CHECK(r.status == 2);
    CHECK_THAT(r.output, Contains(c.message));
    CHECK(r.output.size() < 400);  // one clear line, not a 309-digit bound
  }
  // Known only once the data is read: one batch larger than the training set.
  Run r = run_app({"--data-dir", data.string(), "--out", (t.path / "o2").string(), "--batch-size", "4096",
                   "--limit-train", "64", "--no-progress"});
  CHECK(r.status == 1);
  CHECK_THAT(r.output,
             Contains("--batch-size 4096 is larger than the 64 training images (after --limit-train)"));
  // One epoch of one batch: the one-cycle schedule has no room; said before training.
  r = run_app({"--data-dir", data.string(), "--out", (t.path / "o3").string(), "--batch-size", "64",
               "--limit-train", "64", "--epochs", "1", "--no-progress"});
  CHECK(r.status == 1);
  CHECK_THAT(r.output, Contains("makes 1 step; the one-cycle schedule needs at least 2"));
  CHECK_THAT(r.output, !Contains("OneCycleLR"));
}

TEST_CASE("a study or checkpoint from before --groups/--ghost-batch/--eps resumes at their old values only",
          "[app][robust][resume][quick]") {
  using nlohmann::json;
  const json optional = {{"groups", 4}, {"ghost_batch", 32}, {"eps", 0.0}};
  const json old_config = {{"norms", "bn,gn"}, {"epochs", 20}};
  json now = old_config;
  now.update({{"groups", 4}, {"ghost_batch", 32}, {"eps", 0.0}});
  CHECK(compare::first_config_difference(old_config, now, optional).empty());
  now["groups"] = 8;  // the old version ran 4 groups: a resume with 8 would mix two studies
  CHECK(compare::first_config_difference(old_config, now, optional) == "groups: not recorded before, now 8");
  const json old_print = {{"network", {{"norm", "gn"}, {"parameters", 43600}}}};
  json print = old_print;
  print["network"].update({{"groups", 4}, {"ghost_batch", 32}, {"eps", 0.0}});
  const json paths = {{"network.groups", 4}, {"network.ghost_batch", 32}, {"network.eps", 0.0}};
  CHECK(compare::first_difference(old_print, print, "", paths).empty());
  print["network"]["ghost_batch"] = 8;
  CHECK(compare::first_difference(old_print, print, "", paths) ==
        "network.ghost_batch: missing in the checkpoint, now 8");
}

TEST_CASE("the readers name the file and the reason", "[data][robust][errors][quick]") {
  using namespace nl::data;
  TempDir t;
  fs::create_directories(t.path / "dir.bin");
  CHECK_THROWS_WITH(read_cifar10_file((t.path / "dir.bin").string()),
                    Contains("dir.bin is a folder, not a file"));
  fs::create_symlink(t.path / "gone.bin", t.path / "dangling.bin");
  CHECK_THROWS_WITH(read_cifar10_file((t.path / "dangling.bin").string()),
                    Contains("dangling.bin is a symbolic link to") && Contains("which does not exist"));
  CHECK_THROWS_WITH(read_cifar10_file("/dev/zero"), Contains("/dev/zero is not a regular file"));
  std::vector<int64_t> dims;
  CHECK_THROWS_WITH(read_idx("/dev/zero", dims), Contains("/dev/zero is not a regular file"));
  // A copy of CIFAR-10 without its test batch is named as incomplete, with the missing file.
  const fs::path data = make_cifar(t.path / "data", {});
  fs::remove(data / "cifar-10-batches-bin" / "test_batch.bin");
  CHECK_THROWS_WITH(load_cifar10(data.string()), Contains("is incomplete: test_batch.bin missing"));
  // A gzip bomb: the header declares 10 bytes, 64 MiB of zeros follow; refused after reading
  // one byte past the declared data, not after inflating it all.
  {
    gzFile g = gzopen((t.path / "bomb.gz").c_str(), "wb9");
    gzwrite(g, "\0\0\x08\x01\0\0\0\x0a", 8);
    std::string zeros(1 << 20, '\0');
    for (int i = 0; i < 64; ++i) gzwrite(g, zeros.data(), static_cast<unsigned>(zeros.size()));
    gzclose(g);
  }
  CHECK(fs::file_size(t.path / "bomb.gz") < 200000);
  CHECK_THROWS_WITH(read_idx((t.path / "bomb.gz").string(), dims),
                    Contains("holds more data bytes than its header declares (10)"));
  // An IDX header whose extents multiply past any real file is refused before reading data
  // (0xFFFFFFFF^3 wraps a 64-bit product).
  write_bytes(t.path / "huge.idx",
              std::string("\0\0\x08\x03\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", 16));
  CHECK_THROWS_WITH(read_idx((t.path / "huge.idx").string(), dims), Contains("whose product exceeds"));
}

TEST_CASE("nonfinite_counts counts NaN and Inf per tensor, every tail, in one pass", "[ops][guard][quick]") {
  const nl::Device dev = test_device();
  std::vector<nl::Tensor> ts;
  std::vector<int64_t> want;
  // 70 tensors: more than one 64-tensor launch; sizes with every tail of a 256-thread block.
  for (int t = 0; t < 70; ++t) {
    const int64_t n = 1 + t * 37;
    std::vector<float> v(static_cast<size_t>(n), 1.0f);
    for (int64_t i = t % 3; i < n; i += 5 + t % 7)
      v[static_cast<size_t>(i)] = (i % 2) ? std::numeric_limits<float>::quiet_NaN()
                                          : (i % 3 ? std::numeric_limits<float>::infinity()
                                                   : -std::numeric_limits<float>::infinity());
    if (t % 4 == 1) v.back() = std::numeric_limits<float>::quiet_NaN();  // the very last element
    ts.push_back(nl::Tensor::from_vector(v, {n}, dev));
    int64_t count = 0;
    for (float x : v) count += !std::isfinite(x);
    want.push_back(count);
  }
  ts.push_back(nl::Tensor());  // undefined: counts 0
  want.push_back(0);
  CHECK(nl::nonfinite_counts(ts) == want);
}

TEST_CASE("the NaN guard names the first module whose output is not finite", "[app][robust][guard][quick]") {
  using namespace compare;
  nl::Generator g(0);
  auto net = make_net(parse_norm("gn"), g, nullptr, {});
  nl::Tensor x = nl::Tensor::randn({2, 3, 32, 32}, g);
  CHECK(first_nonfinite_output(*net, x).empty());
  // Poison the conv of the fourth block: the message names it, not a later module. (A NaN in a
  // norm's gamma would not do: the fused ReLU maps NaN to 0, as fmaxf does; the parameter check
  // after the step catches that case.)
  for (auto& [name, p] : net->named_parameters())
    if (name == "C4.body.conv.weight") {
      std::vector<float> v = p.to_vector();
      v[3] = NAN;
      p.copy_(nl::Tensor::from_vector(v, p.shape()));
    }
  const std::string why = first_nonfinite_output(*net, x);
  CHECK_THAT(why, Contains("Conv2d C4.body.conv: output has") && Contains("non-finite values"));
}

TEST_CASE("a diverging run leaves a complete report for the others and a diverged row for itself",
          "[app][robust][guard][quick]") {
  using namespace compare;
  TempDir t;
  const fs::path data = make_cifar(t.path / "data", {});
  nl::data::Dataset d = nl::data::load_cifar10(data.string());
  ReportInput rep;
  rep.out_dir = (t.path / "out").string();
  fs::create_directories(rep.out_dir);
  rep.data = &d;
  rep.config = {{"epochs", 2}, {"batch_size", 16}, {"lr", 0.1}, {"seed", 0}, {"seeds", 1}};
  TrainConfig cfg;
  cfg.epochs = 2;
  cfg.batch_size = 16;
  std::ostringstream log;
  rep.runs.push_back(train_one(parse_norm("bn"), 0, d, cfg, log));
  cfg.max_lr = 1e30f;  // diverges in its first steps
  rep.runs.push_back(train_one(parse_norm("gn"), 0, d, cfg, log));
  INFO(log.str());
  REQUIRE(rep.runs[0].status == "ok");
  REQUIRE(rep.runs[1].status == "diverged");
  CHECK_THAT(rep.runs[1].reason, Contains("at epoch 1, batch") && Contains("(lr "));
  CHECK_THAT(log.str(), Contains("[gn seed 0] diverged: "));

  write_metrics_csv(rep);
  nlohmann::json j = write_results_json(rep);
  const bool pictures = write_plots(rep);
  write_report_md(rep, j, pictures);
  // results.json is valid JSON (no bare NaN) with the status and the reason.
  nlohmann::json back = nlohmann::json::parse(slurp(fs::path(rep.out_dir) / "results.json"));
  CHECK(back["norms"]["gn"]["runs"][0]["status"] == "diverged");
  CHECK(back["norms"]["gn"]["runs"][0]["reason"] == rep.runs[1].reason);
  CHECK(back["norms"]["gn"]["final_test_acc"]["mean"].is_null());
  CHECK(back["norms"]["bn"]["runs"][0]["status"] == "ok");
  CHECK(back["norms"]["bn"]["final_test_acc"]["mean"].is_number());
  const std::string csv = slurp(fs::path(rep.out_dir) / "metrics.csv");
  CHECK_THAT(csv, Contains("\ngn,0,1,,,,,,diverged\n") && Contains("\nbn,0,2,"));
  const std::string md = slurp(fs::path(rep.out_dir) / "report.md");
  CHECK_THAT(md, Contains("## Diverged runs") && Contains("**GroupNorm, seed 0**: " + rep.runs[1].reason));
  CHECK_THAT(md, Contains("| GroupNorm | 43600 | diverged |"));
  if (nl::test::gnuplot_expected()) {
    REQUIRE(pictures);
    CHECK(is_png(fs::path(rep.out_dir) / "misclassified_bn.png"));
    CHECK(is_png(fs::path(rep.out_dir) / "train_loss.png"));
  } else {
    CHECK_FALSE(pictures);
  }
  CHECK_FALSE(fs::exists(fs::path(rep.out_dir) / "misclassified_gn.png"));
  CHECK_FALSE(fs::exists(fs::path(rep.out_dir) / "misclassified_gn.dat"));
  CHECK_THAT(md, !Contains("misclassified_gn.png"));
}

TEST_CASE("the app exits 0 with a warning when a run diverged, 3 with --strict",
          "[app][robust][guard][quick]") {
  TempDir t;
  const fs::path data = make_cifar(t.path / "data", {});
  Run r = run_app(args(data, t.path / "o1", {"--norms", "bn,gn", "--lr", "1e30"}));
  INFO(r.output);
  CHECK(r.status == 0);
  CHECK_THAT(r.output, Contains("warning: 2 of 2 runs diverged"));
  CHECK(fs::exists(t.path / "o1" / "report.md"));
  r = run_app(args(data, t.path / "o2", {"--norms", "bn", "--lr", "1e30", "--strict"}));
  CHECK(r.status == 3);
}

namespace {
// metrics.csv without its seconds column (wall time differs between any two runs).
std::string metrics_without_seconds(const fs::path& p) {
  std::istringstream in(slurp(p));
  std::string out, line;
  while (std::getline(in, line)) {
    std::vector<std::string> f;
    std::istringstream fields(line);
    for (std::string x; std::getline(fields, x, ',');) f.push_back(x);
    if (line.back() == ',') f.push_back("");
    for (size_t i = 0; i < f.size(); ++i)
      if (i != 7) out += f[i] + (i + 1 < f.size() ? "," : "\n");
  }
  return out;
}
}  // namespace

// Tiers and stages: full: it trains whole networks several times. On cuda not under the sanitizers (4
// minutes under ASan; its CPU registration there runs the same checkpoint code) nor TSan (a training
// loop whose kernels the op tests run).
TEST_CASE("an interrupted study resumes to bitwise-identical metrics and weights",
          "[app][robust][resume][train][full][cuda-no-sanitize][no-race]") {
  TempDir t;
  const fs::path data = make_cifar(t.path / "data", {});
  const std::string device = test_device().is_cpu() ? "cpu" : "cuda";
  // Emulated CUDA trains about 100x slower than the CPU: a smaller study there (one step per
  // epoch), and in forward order only; the kernels' order-dependence is the op tests' job.
  const char* order = std::getenv("NORMLAB_CUEMU_ORDER");
  if (device == "cuda" && order && std::string(order) != "forward") {
    WARN("resume on cuda is checked in forward order only");
    return;
  }
  // The smaller study also where the CPU runs under the sanitizers (light_tests).
  const bool small = device == "cuda" || light_tests();
  const std::string epochs = small ? "2" : "3";
  std::vector<std::string> flags = {"--norms", "bn,gn", "--epochs", epochs, "--device", device};
  // One step of 16 images per epoch: the checkpoint and resume code runs the same as for many.
  if (small) flags.insert(flags.end(), {"--limit-train", "16", "--limit-test", "16"});
  Run whole = run_app(args(data, t.path / "whole", flags));
  INFO(whole.output);
  REQUIRE(whole.status == 0);

  // SIGINT once GroupNorm's first epoch is checkpointed: BatchNorm has finished, GroupNorm is in
  // its second epoch.
  Run cut = run_app(args(data, t.path / "cut", flags), {}, {"NORMLAB_TEST_RAISE_AFTER_EPOCH=gn:1"});
  INFO(cut.output);
  REQUIRE(cut.status == 130);
  CHECK_THAT(cut.output, Contains("stopped by SIGINT") && Contains("--resume"));
  CHECK_THAT(cut.output, Contains("[gn seed 0] interrupted in epoch 2"));
  // Nothing finished was lost: BatchNorm's three epochs and GroupNorm's first are on disk, and
  // the report so far says how to continue.
  const std::string partial = slurp(t.path / "cut" / "metrics.csv");
  CHECK_THAT(partial, Contains("\nbn,0," + epochs + ",") && Contains("\ngn,0,1,"));
  CHECK_THAT(partial, !Contains("\ngn,0,2,"));
  CHECK_THAT(slurp(t.path / "cut" / "report.md"), Contains("**Interrupted** during GroupNorm"));
  CHECK(fs::exists(t.path / "cut" / "model_bn_s0.safetensors"));

  // Resuming with other flags is refused, naming the difference.
  std::vector<std::string> other = flags;
  other[3] = "4";  // --epochs
  Run wrong = run_app(args(data, t.path / "cut", other), {}, {});
  CHECK(wrong.status == 1);
  CHECK_THAT(wrong.output, Contains("already holds the results"));
  other.push_back("--resume");
  wrong = run_app(args(data, t.path / "cut", other));
  CHECK(wrong.status == 1);
  CHECK_THAT(wrong.output, Contains("--epochs: was " + epochs + ", now 4"));

  std::vector<std::string> again = flags;
  again.push_back("--resume");
  Run resumed = run_app(args(data, t.path / "cut", again));
  INFO(resumed.output);
  REQUIRE(resumed.status == 0);
  CHECK_THAT(resumed.output,
             Contains("[bn seed 0] finished before (ok)") && Contains("[gn seed 0] resumed after epoch 1"));
  CHECK(metrics_without_seconds(t.path / "cut" / "metrics.csv") ==
        metrics_without_seconds(t.path / "whole" / "metrics.csv"));
  for (const char* f : {"ckpt_bn_s0.safetensors", "ckpt_gn_s0.safetensors", "model_bn_s0.safetensors",
                        "model_gn_s0.safetensors"}) {
    CAPTURE(f);
    const std::string a = slurp(t.path / "whole" / f), b = slurp(t.path / "cut" / f);
    CHECK(a.size() > 100000);  // weights, not an empty file
    CHECK(a == b);
  }
  nlohmann::json jw = nlohmann::json::parse(slurp(t.path / "whole" / "results.json"));
  nlohmann::json jc = nlohmann::json::parse(slurp(t.path / "cut" / "results.json"));
  for (const char* k : {"bn", "gn"})
    CHECK(jw["norms"][k]["runs"][0]["final"] == jc["norms"][k]["runs"][0]["final"]);
}

TEST_CASE("SIGTERM stops like SIGINT with 143, and a second signal ends the process at once",
          "[app][robust][resume][quick]") {
  TempDir t;
  const fs::path data = make_cifar(t.path / "data", {});
  const std::vector<std::string> flags = {"--norms", "bn,gn", "--epochs", "2"};
  Run term = run_app(args(data, t.path / "term", flags), {}, {"NORMLAB_TEST_RAISE_AFTER_EPOCH=gn:1:TERM"});
  INFO(term.output);
  CHECK(term.status == 143);
  CHECK_THAT(term.output, Contains("stopped by SIGTERM"));
  Run twice = run_app(args(data, t.path / "twice", flags), {}, {"NORMLAB_TEST_RAISE_AFTER_EPOCH=gn:1:INT2"});
  INFO(twice.output);
  CHECK(twice.status == -1);  // killed by the signal itself, no orderly stop
  CHECK_THAT(twice.output, !Contains("stopped by"));
  // What was finished before the signals is still on disk.
  CHECK_THAT(slurp(t.path / "twice" / "metrics.csv"), Contains("\ngn,0,1,"));
}

TEST_CASE("checkpoints are safetensors that a damaged copy or another configuration cannot fool",
          "[app][robust][resume][quick]") {
  using namespace compare;
  TempDir t;
  // A file PyTorch's safetensors reads: header length, JSON header, little-endian data.
  nl::nn::save_safetensors(
      (t.path / "a.safetensors").string(),
      {{"w", nl::Tensor::from_vector({1.0f, 2.0f, 3.0f}, {3})}, {"i", nl::Tensor::from_ints({7}, {1})}},
      {{"k", "v"}});
  const std::string bytes = slurp(t.path / "a.safetensors");
  uint64_t hlen;
  std::memcpy(&hlen, bytes.data(), 8);
  CHECK(hlen % 8 == 0);
  CHECK_THAT(bytes.substr(8, hlen),
             Contains("\"w\":{\"data_offsets\":[0,12],\"dtype\":\"F32\",\"shape\":[3]}"));
  nl::nn::TensorFile f = nl::nn::load_safetensors((t.path / "a.safetensors").string());
  CHECK(f.at("w").to_vector() == std::vector<float>{1, 2, 3});
  CHECK(f.at("i").to_int_vector() == std::vector<int32_t>{7});
  CHECK(f.metadata.at("k") == "v");
  auto bad = [&](std::string b, const char* message) {
    CAPTURE(message);
    CHECK_THROWS_WITH(nl::nn::parse_safetensors(b, "x.safetensors"), Contains(message));
  };
  bad(bytes.substr(0, 5), "less than the 8-byte header length");
  bad(bytes.substr(0, bytes.size() - 4), "outside the");
  bad(bytes + "junk", "belong to no tensor");
  std::string h = bytes;
  h[0] = '\xff';
  bad(h, "header length");
  std::string wrong_dtype = bytes;
  wrong_dtype.replace(wrong_dtype.find("F32"), 3, "F64");
  bad(wrong_dtype, "only F32 and I32");
  std::string wrong_shape = bytes;
  wrong_shape.replace(wrong_shape.find("[3]"), 3, "[4]");
  bad(wrong_shape, "which needs 16");
  std::string overlap = bytes;
  overlap.replace(overlap.find("[12,16]"), 7, "[8, 12]");
  bad(overlap, "overlapping or missing");
}
