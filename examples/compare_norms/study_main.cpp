// normlab_study: one command for a whole study. Expands a grid of compare_norms runs, runs them
// --jobs at a time (each its share of the cores), one folder per run under --out/runs/, and
// writes study.csv, study.json and study.md (tables, Welch's t-tests, plots) as runs finish.
// Every run checkpoints; --resume continues a killed study without redoing a finished run.
//
//   normlab_study --norms bn,gn,ln,gn+ws,brn --ghost-batch 2,8,32,128 --seeds 0,1,2
//                 --data-dir ../shared/data/cifar10-subset --jobs 2 --out runs/ghost
#include <fcntl.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <deque>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "normlab/core/error.h"
#include "normlab/nn/atomic_file.h"
#include "run_dir.h"
#include "study.h"

namespace fs = std::filesystem;
using nlohmann::json;
using namespace compare;
using Clock = std::chrono::steady_clock;

namespace {

std::atomic<int> g_stop{0};
extern "C" void on_stop(int sig) { g_stop.store(sig); }

template <class T>
std::vector<T> parse_list(const std::string& flag, const std::string& text) {
  std::vector<T> out;
  std::stringstream ss(text);
  for (std::string item; std::getline(ss, item, ',');) {
    std::istringstream is(item);
    T v{};
    if constexpr (std::is_same_v<T, std::string>)
      v = item;
    else {
      is >> v;
      NL_CHECK(!is.fail() && is.eof() && !item.empty() && item[0] != '-' && item[0] != '+', flag, ": '", item,
               "' is not a valid value (a comma-separated list, e.g. ", flag == "--lr" ? "0.05,0.1" : "1,2,4",
               ")");
    }
    out.push_back(v);
  }
  NL_CHECK(!out.empty(), flag, " is empty");
  return out;
}

// The compare_norms next to this program (the build tree and an install put both in one folder).
std::string default_app() {
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    for (const fs::path& p :
         {self.parent_path() / "compare_norms", self.parent_path() / "../compare_norms/compare_norms"})
      if (fs::exists(p)) return fs::weakly_canonical(p).string();
  }
  return "compare_norms";  // on PATH
}

// The epoch a run's log last reported ("[bn seed 0] epoch  7 | ..."), 0 before the first.
int64_t last_epoch_in_log(const std::string& log) {
  std::ifstream in(log, std::ios::binary);
  if (!in) return 0;
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  const std::streamoff from = size > 8192 ? size - 8192 : 0;
  in.seekg(from);
  std::string tail((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t at = tail.rfind("] epoch ");
  if (at == std::string::npos) return 0;
  return std::atoll(tail.c_str() + at + 8);
}

std::string tail_lines(const std::string& path, int n) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  std::string out;
  for (size_t i = lines.size() > size_t(n) ? lines.size() - n : 0; i < lines.size(); ++i)
    out += "    " + lines[i] + "\n";
  return out;
}

struct Job {
  size_t index;
  Clock::time_point start;
  int64_t start_epoch;  // epochs already done when this attempt started (a resumed run)
};

std::string hms(double s) {
  char b[32];
  if (s >= 3600)
    std::snprintf(b, sizeof b, "%dh%02dm", int(s / 3600), int(s / 60) % 60);
  else if (s >= 60)
    std::snprintf(b, sizeof b, "%dm%02ds", int(s / 60), int(s) % 60);
  else
    std::snprintf(b, sizeof b, "%ds", int(s));
  return b;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "normlab_study: a grid of compare_norms runs (norm x batch x ghost batch x lr x groups x crop padding "
      "x seed x "
      "epochs x dataset), run --jobs at a time, resumable, reported with error bars and significance tests.\n"
      "Every list flag is comma-separated. Outputs in --out: study.csv, study.json, study.md, plots, "
      "runs/<id>/."};
  std::string norms = "bn,gn,ln", batch = "128", ghost = "0", lr = "0.1", groups = "4", seeds = "0",
              epochs = "20", datasets = "cifar10",
              crop_pad = nl::data::crop_pad_name(nl::data::kDefaultCropPad), study_file, data_dir,
              fashion_dir, out = "runs/study", device = "cpu", app_path;
  bool scale_lr = false, resume = false, no_progress = false;
  int jobs = 1, threads = 0, processes = 1;
  std::string launcher = "mpirun";
  int64_t limit_train = 0, limit_test = 0;
  app.add_option("--study", study_file,
                 "JSON study file: {\"norm\": [...], \"ghost_batch\": [...], ...}; flags given "
                 "on the command line override its axes");
  app.add_option("--norms", norms, "Norms (compare_norms' keys)")->capture_default_str();
  app.add_option("--batch", batch, "Batch sizes")->capture_default_str();
  app.add_option(
         "--ghost-batch", ghost,
         "BatchNorm/BatchRenorm statistics over this many samples while the step uses the whole batch "
         "(0: the whole batch); no effect on per-sample norms, which run once")
      ->capture_default_str();
  app.add_option("--lr", lr, "Peak learning rates of the one-cycle schedule")->capture_default_str();
  app.add_flag("--scale-lr", scale_lr, "Linear scaling rule: lr = value * batch / 128");
  app.add_option("--groups", groups, "GroupNorm group counts (1, 2, 4, 8)")->capture_default_str();
  app.add_option("--seeds", seeds, "Seeds")->capture_default_str();
  app.add_option("--epochs", epochs, "Epochs per run")->capture_default_str();
  app.add_option("--dataset", datasets, "cifar10, fashion-mnist")->capture_default_str();
  app.add_option(
         "--crop-pad", crop_pad,
         "What fills the border of the CIFAR-10 random crop: black, mean, reflect (compare_norms --crop-pad)")
      ->capture_default_str();
  app.add_option("--data-dir", data_dir, "CIFAR-10 folder (as compare_norms --data-dir)");
  app.add_option("--fashion-dir", fashion_dir, "Fashion-MNIST folder (default: compare_norms' default)");
  app.add_option("--jobs", jobs, "Runs at a time")->capture_default_str();
  app.add_option("--threads-per-job", threads, "CPU threads per run (0: the cores divided by --jobs)")
      ->capture_default_str();
  app.add_option("--device", device, "cpu, cuda or auto, for every run")
      ->capture_default_str()
      ->check(CLI::IsMember({"cpu", "cuda", "auto"}));
  app.add_option("--out", out, "Study folder")->capture_default_str();
  app.add_flag("--resume", resume,
               "Continue the study in --out: finished runs are kept, interrupted ones continue "
               "from their last epoch; the result equals an uninterrupted study's");
  app.add_option("--limit-train", limit_train, "Only the first N training images (tests, quick looks)");
  app.add_option("--limit-test", limit_test, "Only the first N test images");
  app.add_option("--processes", processes,
                 "Data-parallel processes per run (compare_norms under the --launcher; the batch is split "
                 "among them)")
      ->capture_default_str();
  app.add_option(
         "--launcher", launcher,
         "MPI launcher for --processes above 1, as words (no shell), e.g. \"mpirun --oversubscribe\"; "
         "\"-np K\" is appended")
      ->capture_default_str();
  app.add_option("--app", app_path, "The compare_norms program (default: the one beside this program)");
  app.add_flag("--no-progress", no_progress, "No live progress lines, even on a terminal");
  CLI11_PARSE(app, argc, argv);

  StudyAxes axes;
  std::vector<RunSpec> runs;
  json config;
  try {
    if (!study_file.empty()) read_study_file(study_file, axes);
    auto given = [&](const char* f) { return app.count(f) > 0 || study_file.empty(); };
    if (given("--norms")) axes.norms = parse_list<std::string>("--norms", norms);
    if (given("--batch")) axes.batch = parse_list<int64_t>("--batch", batch);
    if (given("--ghost-batch")) axes.ghost_batch = parse_list<int64_t>("--ghost-batch", ghost);
    if (given("--lr")) axes.lr = parse_list<double>("--lr", lr);
    if (given("--groups")) axes.groups = parse_list<int64_t>("--groups", groups);
    if (given("--seeds")) axes.seeds = parse_list<uint64_t>("--seeds", seeds);
    if (given("--epochs")) axes.epochs = parse_list<int64_t>("--epochs", epochs);
    if (given("--dataset")) axes.datasets = parse_list<std::string>("--dataset", datasets);
    if (given("--crop-pad")) axes.crop_pad = parse_list<std::string>("--crop-pad", crop_pad);
    if (scale_lr) axes.scale_lr = true;
    runs = expand_grid(axes);
    const int cores = int(std::max(1u, std::thread::hardware_concurrency()));
    NL_CHECK(jobs >= 1 && jobs <= 64, "--jobs must be from 1 to 64 (got ", jobs, ")");
    NL_CHECK(threads >= 0 && threads <= cores, "--threads-per-job must be from 0 to ", cores, " (got ",
             threads, ")");
    NL_CHECK(processes >= 1 && processes <= 1024, "--processes must be from 1 to 1024 (got ", processes, ")");
    if (threads == 0) threads = std::max(1, cores / jobs);
    // --threads-per-job is the run's: shared among its processes.
    if (processes > 1) threads = std::max(1, threads / processes);
    NL_CHECK(processes == 1 || launcher.find_first_not_of(" \t") != std::string::npos,
             "--launcher is empty: --processes ", processes, " needs an MPI launcher such as mpirun");
    NL_CHECK(limit_train >= 0 && limit_test >= 0, "--limit-train and --limit-test must be 0 (all) or more");
    if (app_path.empty()) app_path = default_app();
    // What --resume must match: the grid and what changes results (threads do not: compare_norms'
    // results are bitwise equal for any thread count).
    config = {{"axes", axes_to_json(axes)}, {"data_dir", data_dir},       {"fashion_dir", fashion_dir},
              {"device", device},           {"limit_train", limit_train}, {"limit_test", limit_test}};
    // Only when used, so study folders of earlier versions still resume.
    if (processes > 1) config["processes"] = processes;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "normlab_study: %s\n", e.what());
    return 2;
  }

  try {
    std::error_code ec;
    fs::create_directories(fs::path(out) / "runs", ec);
    NL_CHECK(!ec, "--out ", out, ": cannot create the folder: ", ec.message());
    fs::create_directories(fs::path(out) / "logs", ec);
    // One study process per folder at a time.
    const std::string lock = (fs::path(out) / ".study.lock").string();
    const int lock_fd = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    NL_CHECK(lock_fd >= 0, "--out ", out, " is not writable");
    NL_CHECK(::flock(lock_fd, LOCK_EX | LOCK_NB) == 0, "--out ", out, " is in use by another normlab_study");
    const fs::path plan = fs::path(out) / "study-plan.json";
    if (fs::exists(plan)) {
      NL_CHECK(resume, "--out ", out,
               " already holds a study: continue it with --resume, or choose another --out");
      std::ifstream in(plan);
      json saved;
      try {
        saved = json::parse(in);
      } catch (const std::exception& e) {
        NL_FAIL("--resume: ", plan.string(), " is not valid JSON: ", e.what());
      }
      const std::string diff = first_config_difference(saved, config);
      NL_CHECK(diff.empty(), "--resume: the study in ", out, " had another configuration (", diff,
               "); use the same flags, or another --out");
    } else {
      NL_CHECK(!resume, "--resume: ", out,
               " holds no study to continue (no study-plan.json); start without --resume");
      nl::nn::write_file_atomic(plan.string(), config.dump(1) + "\n");
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "normlab_study: %s\n", e.what());
    return 1;
  }
  config["jobs"] = jobs, config["threads_per_job"] = threads;

  struct sigaction sa {};
  sa.sa_handler = on_stop;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  std::vector<RunOutcome> outcomes(runs.size());
  std::vector<size_t> pending;
  int64_t total_epochs = 0, done_epochs = 0;
  for (size_t i = 0; i < runs.size(); ++i) {
    outcomes[i] = read_outcome((fs::path(out) / "runs" / runs[i].id).string(), runs[i]);
    total_epochs += runs[i].epochs;
    if (outcomes[i].finished())
      done_epochs += runs[i].epochs;
    else
      pending.push_back(i);
  }
  std::printf(
      "normlab_study: %zu runs (%zu already finished), %d at a time with %d thread%s each, %s -> %s\n",
      runs.size(), runs.size() - pending.size(), jobs, threads, threads == 1 ? "" : "s", app_path.c_str(),
      out.c_str());
  if (processes > 1)
    std::printf("normlab_study: each run data parallel over %d processes (%s -np %d)\n", processes,
                launcher.c_str(), processes);
  std::fflush(stdout);
  auto save = [&] {
    write_study_csv((fs::path(out) / "study.csv").string(), runs, outcomes);
    write_study_json((fs::path(out) / "study.json").string(), config, runs, outcomes);
  };
  save();

  const bool tty = !no_progress && isatty(STDOUT_FILENO);
  std::map<pid_t, Job> running;
  std::deque<size_t> queue(pending.begin(), pending.end());
  // A run folder whose compare_norms still holds its lock: a run of a study that was killed (by
  // SIGKILL, say) finishing its last step after the kill. Its run waits for it instead of failing.
  auto busy = [&](const RunSpec& r) {
    const std::string lock = (fs::path(out) / "runs" / r.id / ".compare_norms.lock").string();
    const int fd = ::open(lock.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    const bool held = ::flock(fd, LOCK_EX | LOCK_NB) != 0;
    ::close(fd);
    return held;
  };
  auto last_wait_note = Clock::now() - std::chrono::hours(1);
  int failed = 0;
  bool signalled_children = false;
  double epoch_seconds_sum = 0;  // measured in this process: finished epochs' wall time per job
  int64_t epoch_count = 0;
  auto last_note = Clock::now();
  size_t drawn = 0;  // lines of the live block on the terminal
  const pid_t self = ::getpid();

  while (!queue.empty() || !running.empty()) {
    // Start runs while slots are free (never after a stop request).
    for (size_t tries = queue.size(); g_stop.load() == 0 && running.size() < size_t(jobs) && tries > 0;
         --tries) {
      const size_t i = queue.front();
      queue.pop_front();
      const RunSpec& r = runs[i];
      if (busy(r)) {
        queue.push_back(i);
        if (Clock::now() - last_wait_note > std::chrono::seconds(30)) {
          std::printf(
              "%snormlab_study: %s is still held by an earlier compare_norms (of a study that was killed) "
              "finishing its step; its run waits for it\n",
              tty ? "\r\033[K" : "", r.id.c_str());
          last_wait_note = Clock::now();
          drawn = 0;
        }
        continue;
      }
      const fs::path dir = fs::path(out) / "runs" / r.id;
      std::vector<std::string> args;
      if (processes > 1) {
        std::istringstream words(launcher);
        for (std::string w; words >> w;) args.push_back(w);
        args.insert(args.end(), {"-np", std::to_string(processes)});
      }
      args.push_back(app_path);
      for (const std::string& a : r.app_args()) args.push_back(a);
      args.insert(args.end(),
                  {"--out", dir.string(), "--threads", std::to_string(threads), "--device", device});
      if (r.dataset == "cifar10" && !data_dir.empty()) args.insert(args.end(), {"--data-dir", data_dir});
      if (r.dataset == "fashion-mnist" && !fashion_dir.empty())
        args.insert(args.end(), {"--data-dir", fashion_dir});
      if (limit_train) args.insert(args.end(), {"--limit-train", std::to_string(limit_train)});
      if (limit_test) args.insert(args.end(), {"--limit-test", std::to_string(limit_test)});
      if (fs::exists(dir / "run.json")) args.push_back("--resume");
      const std::string log = (fs::path(out) / "logs" / (r.id + ".log")).string();
      std::vector<char*> cargs;
      for (std::string& a : args) cargs.push_back(a.data());
      cargs.push_back(nullptr);
      const pid_t pid = ::fork();
      if (pid < 0) {
        std::fprintf(stderr, "normlab_study: cannot start a run: fork failed\n");
        g_stop.store(SIGTERM);
        break;
      }
      if (pid == 0) {
        // The run ends (checkpointing its last epoch) when the study dies, even by SIGKILL.
        ::prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (::getppid() != self) ::_exit(143);
        const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
        const int null_fd = ::open("/dev/null", O_RDONLY);
        if (fd < 0 || null_fd < 0) ::_exit(126);
        ::dup2(null_fd, STDIN_FILENO), ::dup2(fd, STDOUT_FILENO), ::dup2(fd, STDERR_FILENO);
        // execvp: the launcher is found on PATH (the app's path is given in full).
        ::execvp(cargs[0], cargs.data());
        const std::string msg = "normlab_study: cannot run " + args[0] + ": " + std::strerror(errno) + "\n";
        [[maybe_unused]] ssize_t n = ::write(STDERR_FILENO, msg.data(), msg.size());
        ::_exit(127);
      }
      running[pid] = {i, Clock::now(), last_epoch_in_log(log)};
    }
    if (g_stop.load() != 0 && !signalled_children) {
      // A terminal's Ctrl-C reached the runs too; a kill of the study alone is passed on.
      for (const auto& [pid, job] : running) ::kill(pid, SIGTERM);
      signalled_children = true;
    }
    // Reap finished runs.
    int status = 0;
    pid_t pid;
    while ((pid = ::waitpid(-1, &status, WNOHANG)) > 0) {
      auto it = running.find(pid);
      if (it == running.end()) continue;
      const Job job = it->second;
      running.erase(it);
      const RunSpec& r = runs[job.index];
      const std::string log = (fs::path(out) / "logs" / (r.id + ".log")).string();
      RunOutcome o = read_outcome((fs::path(out) / "runs" / r.id).string(), r);
      const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      const double secs = std::chrono::duration<double>(Clock::now() - job.start).count();
      if (code == 0 && o.finished()) {
        const int64_t ran = r.epochs - job.start_epoch;
        if (ran > 0 && o.status == "ok") epoch_seconds_sum += secs, epoch_count += ran;
        done_epochs += r.epochs;
      } else if (g_stop.load() != 0 && (code == 130 || code == 143)) {
        o.status = "interrupted";
      } else {
        ++failed;
        o.status = "failed";
        std::fprintf(stderr, "%snormlab_study: run %s failed (exit %d); the end of %s:\n%s",
                     tty ? "\r\033[K" : "", r.id.c_str(), code, log.c_str(), tail_lines(log, 5).c_str());
      }
      outcomes[job.index] = o;
      save();
      if (!tty || o.finished()) {
        char acc[64] = "";
        if (o.status == "ok") std::snprintf(acc, sizeof acc, ": test acc %.2f%%", o.final_test_acc);
        std::printf("%s[%s] %s%s\n", tty ? "\r\033[K" : "", r.id.c_str(), o.status.c_str(), acc);
      }
      drawn = 0;
    }
    // Progress: a line per running run and the study's ETA from measured epoch times.
    int64_t running_epochs = 0;
    double running_rate_sum = 0;
    int rate_n = 0;
    std::vector<std::string> lines;
    for (const auto& [p, job] : running) {
      const RunSpec& r = runs[job.index];
      const int64_t e = last_epoch_in_log((fs::path(out) / "logs" / (r.id + ".log")).string());
      running_epochs += e;
      const double el = std::chrono::duration<double>(Clock::now() - job.start).count();
      if (e > job.start_epoch) running_rate_sum += el / double(e - job.start_epoch), ++rate_n;
      char b[256];
      std::snprintf(b, sizeof b, "  %-48s epoch %3lld/%lld  %s", r.id.c_str(), (long long)e,
                    (long long)r.epochs, hms(el).c_str());
      lines.push_back(b);
    }
    const double per_epoch = epoch_count ? epoch_seconds_sum / double(epoch_count)
                             : rate_n    ? running_rate_sum / rate_n
                                         : 0.0;
    const int64_t left = total_epochs - done_epochs - running_epochs;
    size_t finished_n = 0;
    for (const RunOutcome& o : outcomes) finished_n += o.finished();
    char head[256];
    std::snprintf(head, sizeof head, "normlab_study: %zu/%zu runs finished, %zu running, ETA %s", finished_n,
                  runs.size(), running.size(),
                  per_epoch > 0 ? hms(per_epoch * double(left) / double(std::max(1, jobs))).c_str()
                                : "after the first epoch");
    if (tty) {
      std::string block;
      if (drawn) block += "\033[" + std::to_string(drawn) + "A";
      block += "\r\033[K" + std::string(head) + "\n";
      for (const std::string& l : lines) block += "\r\033[K" + l + "\n";
      block += "\033[J";
      std::fputs(block.c_str(), stdout);
      drawn = lines.size() + 1;
      std::fflush(stdout);
    } else if (Clock::now() - last_note > std::chrono::seconds(60)) {
      std::printf("%s\n", head);
      for (const std::string& l : lines) std::printf("%s\n", l.c_str());
      std::fflush(stdout);
      last_note = Clock::now();
    }
    if (queue.empty() && running.empty()) break;
    if (g_stop.load() != 0 && running.empty()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  save();
  try {
    const bool pictures = write_study_report(out, config, runs, outcomes);
    std::printf("normlab_study: wrote %s/{study.csv, study.json, study.md%s}\n", out.c_str(),
                pictures ? ", plots" : "");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "normlab_study: the report failed: %s\n", e.what());
    return 1;
  }
  if (g_stop.load() != 0) {
    std::fprintf(stderr,
                 "normlab_study: stopped by %s; finished runs and epochs are saved in %s. Continue with "
                 "the same flags and --resume.\n",
                 g_stop.load() == SIGTERM ? "SIGTERM" : "SIGINT", out.c_str());
    return 128 + g_stop.load();
  }
  if (failed) {
    std::fprintf(stderr,
                 "normlab_study: %d run%s failed (logs in %s/logs); rerun with --resume to retry them\n",
                 failed, failed == 1 ? "" : "s", out.c_str());
    return 1;
  }
  return 0;
}
