#include "run_dir.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <vector>

#include "normlab/core/error.h"
#include "normlab/nn/atomic_file.h"

namespace compare {
namespace fs = std::filesystem;
using nlohmann::json;

bool is_own_output(const std::string& name) {
  static const std::regex own(
      R"(metrics\.csv|telemetry\.csv|results\.json|report\.md|plots\.gp|gnuplot\.log|run\.json)"
      R"(|(train_loss|test_loss|test_accuracy|effective_lr|bn_gap)\.(png|svg))"
      R"(|(curves|misclassified|confusion)_[a-z0-9+]+\.(dat|txt|png))"
      R"(|ckpt_[a-z0-9+]+_s[0-9]+\.(safetensors|json)|model_[a-z0-9+]+_s[0-9]+\.safetensors)");
  return std::regex_match(name, own);
}

void claim_out_dir(const std::string& dir, bool overwrite, bool resume, const json& config) {
  NL_CHECK(!(overwrite && resume),
           "--overwrite and --resume exclude each other: --resume continues the "
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
    NL_CHECK(lock_fd >= 0, "--out ", dir, " is not writable: cannot create ", lock, ": ",
             std::strerror(errno));
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
    for (size_t i = 0; i < results.size() && i < 4; ++i)
      names += (i ? ", " : "") + results[i].filename().string();
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

}  // namespace compare
