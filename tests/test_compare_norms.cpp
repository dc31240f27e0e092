// A 2-epoch compare_norms run on a few hundred real CIFAR-10 images: every output file exists and
// parses; and the app's errors for missing data and bad flags.
#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "normlab/nn/data.h"
#include <sstream>

#include "helpers.h"
#include "normlab/core/storage.h"
#include "normlab/dist/process_group.h"
#include "normlab/nn/data.h"

namespace fs = std::filesystem;
using Catch::Matchers::Contains;

namespace {

struct Run {
  int status;
  std::string output;
};

Run run_app(const std::string& args) {
  const std::string cmd = std::string(NORMLAB_COMPARE_NORMS_BIN) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  std::string out;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  REQUIRE(in.good());
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

}  // namespace

TEST_CASE("compare_norms smoke run writes every output and they parse", "[app][slow][quick]") {
  const fs::path out = fs::temp_directory_path() / ("normlab-smoke-" + std::to_string(::getpid()));
  fs::remove_all(out);
  const bool light = nl::test::light_tests();
  const int test_images = light ? 40 : 120;
  const std::string limits =
      light ? " --limit-train 128 --batch-size 64 --limit-test 40" : " --limit-train 256 --limit-test 120";
  Run r = run_app("--data-dir " + std::string(NORMLAB_CIFAR_SUBSET) + " --epochs 2" + limits +
                  " --threads 1 --device cpu --no-progress --out " + out.string());
  INFO(r.output);
  REQUIRE(r.status == 0);
  // The first line says which backend and device run, and why.
  CHECK(r.output.rfind("compare_norms: running on cpu, 1 thread (--device cpu)\n", 0) == 0);
  CHECK_THAT(r.output, Contains("total parameters: 43600"));
  CHECK_THAT(r.output, Contains("[gn seed 0] epoch  2 | train loss"));

  // metrics.csv: header + 3 norms x 2 epochs, numeric fields.
  std::istringstream csv(slurp(out / "metrics.csv"));
  std::string line;
  std::getline(csv, line);
  CHECK(line == "norm,seed,epoch,train_loss,train_acc,test_loss,test_acc,seconds,status");
  int rows = 0;
  while (std::getline(csv, line)) {
    ++rows;
    std::istringstream fields(line);
    std::string f;
    std::vector<std::string> v;
    while (std::getline(fields, f, ',')) v.push_back(f);
    REQUIRE(v.size() == 9);
    CHECK((v[0] == "bn" || v[0] == "gn" || v[0] == "ln"));
    for (size_t i = 3; i < 8; ++i) CHECK(std::isfinite(std::stod(v[i])));
    CHECK(v[8] == "ok");
  }
  CHECK(rows == 6);

  nlohmann::json j = nlohmann::json::parse(slurp(out / "results.json"));
  for (const char* k : {"bn", "gn", "ln"}) {
    CAPTURE(k);
    CHECK(j["norms"][k]["parameters"] == 43600);
    CHECK(j["norms"][k]["runs"].size() == 1);
    double acc = j["norms"][k]["final_test_acc"]["mean"];
    CHECK(acc >= 0.0);
    CHECK(acc <= 100.0);
  }
  CHECK(j["config"]["epochs"] == 2);
  CHECK(j["dataset"]["test_images"] == test_images);

  for (const char* png : {"train_loss.png", "test_loss.png", "test_accuracy.png", "misclassified_bn.png",
                          "misclassified_gn.png", "misclassified_ln.png", "confusion_bn.png",
                          "confusion_gn.png", "confusion_ln.png"}) {
    CAPTURE(png);
    if (!nl::test::gnuplot_expected()) {
      WARN("NORMLAB_TEST_NO_GNUPLOT=1: " << png << " not checked (no gnuplot here)");
      continue;
    }
    std::string bytes = slurp(out / png);
    REQUIRE(bytes.size() > 1000);
    CHECK(bytes.substr(0, 8) == "\x89PNG\r\n\x1a\n");
  }
  for (const char* svg : {"train_loss.svg", "test_loss.svg", "test_accuracy.svg"}) {
    CAPTURE(svg);
    if (!nl::test::gnuplot_expected()) break;
    CHECK_THAT(slurp(out / svg), Contains("<svg") && Contains("BatchNorm") && Contains("LayerNorm"));
  }
  std::string md = slurp(out / "report.md");
  CHECK_THAT(md, Contains("| GroupNorm | 43600 |"));
  const std::string pad = nl::data::crop_pad_name(nl::data::kDefaultCropPad);
  CHECK(j["config"]["crop_pad"] == pad);
  CHECK_THAT(md, Contains("random crop from the image padded by 4 (" + pad + " padding)"));
  if (nl::test::gnuplot_expected()) CHECK_THAT(md, Contains("![test accuracy](test_accuracy.png)"));
  CHECK_THAT(slurp(out / "plots.gp"), Contains("misclassified_ln.dat"));
  for (const auto& e : fs::directory_iterator(out)) CHECK(e.path().extension() != ".tmp");
  fs::remove_all(out);
}

TEST_CASE("compare_norms explains missing data and bad flags", "[app][errors][quick]") {
  const fs::path empty = fs::temp_directory_path() / ("normlab-empty-" + std::to_string(::getpid()));
  fs::create_directories(empty);
  Run r = run_app("--data-dir " + empty.string() + " --out " + (empty / "out").string());
  CHECK(r.status == 1);
  CHECK_THAT(r.output, Contains("CIFAR-10 not found") && Contains("--download"));
  fs::remove_all(empty);

  r = run_app("--norms bn,xx");
  CHECK(r.status != 0);
  CHECK_THAT(r.output, Contains("unknown norm 'xx'"));
  r = run_app("--epochs 0");
  CHECK(r.status != 0);
  CHECK_THAT(r.output, Contains("--epochs"));
  r = run_app("--dataset imagenet");
  CHECK(r.status != 0);
  CHECK_THAT(r.output, Contains("--dataset"));
  if (!nl::device_available(nl::DeviceType::CUDA)) {
    r = run_app("--device cuda --data-dir " + std::string(NORMLAB_CIFAR_SUBSET));
    CHECK(r.status == 1);
    CHECK_THAT(r.output, Contains("no CUDA backend"));
  }
}

// A folder and checkpoints written before --crop-pad existed were trained with black padding: they
// continue under --crop-pad black only.
TEST_CASE("a run from before --crop-pad resumes with black padding only", "[app][resume][quick]") {
  const fs::path out = fs::temp_directory_path() / ("normlab-croppad-" + std::to_string(::getpid()));
  fs::remove_all(out);
  const std::string args =
      "--data-dir " + std::string(NORMLAB_CIFAR_SUBSET) +
      " --norms gn --epochs 2 --limit-train 64 --batch-size 32 --limit-test 20 --threads 1"
      " --device cpu --no-progress --no-telemetry --out " +
      out.string();
  Run r = run_app(args + " --crop-pad black");
  INFO(r.output);
  REQUIRE(r.status == 0);
  // What the earlier version wrote: no crop_pad in run.json nor in the checkpoint's fingerprint.
  nlohmann::json run = nlohmann::json::parse(slurp(out / "run.json"));
  CHECK_FALSE(run["config"].contains("crop_pad"));  // black is the value a missing key stands for
  nlohmann::json ckpt = nlohmann::json::parse(slurp(out / "ckpt_gn_s0.json"));
  REQUIRE(ckpt["fingerprint"]["recipe"]["crop_pad"] == "black");
  ckpt["fingerprint"]["recipe"].erase("crop_pad");
  std::ofstream(out / "ckpt_gn_s0.json") << ckpt.dump(1);
  r = run_app(args + " --crop-pad mean --resume");
  CHECK(r.status != 0);
  CHECK_THAT(r.output, Contains("crop_pad") && Contains("mean"));
  r = run_app(args + " --crop-pad black --resume");
  CHECK(r.status == 0);
  r = run_app(args + " --crop-pad zero");
  CHECK(r.status != 0);
  CHECK_THAT(r.output, Contains("--crop-pad") && Contains("zero"));
  fs::remove_all(out);
}

TEST_CASE("dist: a backend this build lacks, or an unknown one, is refused by name", "[dist][quick]") {
  using Catch::Matchers::Contains;
  auto single = nl::dist::init("single");
  CHECK(single->size() == 1);
  CHECK(single->backend() == "single");
  CHECK_THROWS_WITH(nl::dist::init("gloo"), Contains("unknown backend 'gloo' (auto, mpi, nccl or single)"));
  if (!nl::dist::has_backend("nccl"))
    CHECK_THROWS_WITH(nl::dist::init("nccl"), Contains("no NCCL backend (it needs -DNORMLAB_CUDA=ON"));
  if (!nl::dist::has_backend("mpi")) CHECK_THROWS_WITH(nl::dist::init("mpi"), Contains("has no MPI"));
  nl::dist::Options bad;
  bad.timeout_seconds = 0;
  CHECK_THROWS_WITH(nl::dist::init("single", bad), Contains("timeout_seconds must be positive"));
}
