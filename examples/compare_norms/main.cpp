// compare_norms: trains the comparison CNN with BatchNorm, GroupNorm and LayerNorm on the same
// data, seeds and initial weights, and reports them side by side.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <csignal>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <sstream>
#include <thread>

#include "checkpoint.h"
#include "normlab/nn/models.h"
#include "normlab/core/error.h"
#include "normlab/core/storage.h"
#include "normlab/core/threading.h"
#include "normlab/dist/process_group.h"
#include "report.h"
#include "run_dir.h"
#include "trainer.h"

namespace fs = std::filesystem;
using namespace compare;

namespace {

struct Options {
  std::string norms = "bn,gn,ln";
  int64_t groups = 4;
  int64_t ghost_batch = 32;
  float eps = 0.0f;  // 0: each norm's default
  float dropout = 0.05f;
  bool no_augment = false;
  std::string crop_pad = nl::data::crop_pad_name(nl::data::kDefaultCropPad);
  bool drop_last = false;
  int64_t epochs = 20;
  int64_t batch_size = 128;
  float lr = 0.1f;
  std::string seed = "0";  // text: parsed and range-checked by validate()
  uint64_t first_seed = 0;
  int64_t seeds = 1;
  std::string dataset = "cifar10";
  std::string data_dir;
  bool download = false;
  std::string device = "auto";
  int threads = 0;
  std::string out = "runs/compare_norms";
  int64_t limit_train = 0, limit_test = 0;
  bool no_progress = false;
  bool overwrite = false;
  bool resume = false;
  bool strict = false;
  bool no_guard = false;
  bool no_telemetry = false;
  std::string dist = "auto";
  double dist_timeout = 300;
};

// Every flag checked before any work, each message naming the flag (CLI11's own range checks
// print a 309-digit bound and let NaN through).
void validate(Options& o) {
  NL_CHECK(o.epochs >= 1, "--epochs must be at least 1 (got ", o.epochs, ")");
  NL_CHECK(o.batch_size >= 1, "--batch-size must be at least 1 (got ", o.batch_size, ")");
  NL_CHECK(std::isfinite(o.lr) && o.lr > 0, "--lr must be a positive finite number (got ", o.lr, ")");
  NL_CHECK(o.seeds >= 1, "--seeds must be at least 1 (got ", o.seeds, ")");
  // Every group count must divide the network's widths, 16, 24 and 32 channels.
  NL_CHECK(o.groups >= 1 && 16 % o.groups == 0 && 24 % o.groups == 0 && 32 % o.groups == 0,
           "--groups must divide the network's widths 16, 24 and 32: 1, 2, 4 or 8 (got ", o.groups, ")");
  NL_CHECK(o.ghost_batch >= 1, "--ghost-batch must be at least 1 sample (got ", o.ghost_batch, ")");
  NL_CHECK(o.eps == 0.0f || (std::isfinite(o.eps) && o.eps > 0.0f),
           "--eps must be a positive finite number, or 0 for each norm's default (got ", o.eps, ")");
  NL_CHECK(std::isfinite(o.dropout) && o.dropout >= 0.0f && o.dropout < 1.0f,
           "--dropout must be a probability in [0, 1) (got ", o.dropout, ")");
  const bool digits =
      !o.seed.empty() && o.seed.size() <= 20 && o.seed.find_first_not_of("0123456789") == std::string::npos;
  errno = 0;
  const unsigned long long seed = digits ? std::strtoull(o.seed.c_str(), nullptr, 10) : 0;
  NL_CHECK(digits && errno != ERANGE, "--seed must be a whole number from 0 to 18446744073709551615 (got '",
           o.seed, "')");
  o.first_seed = seed;
  NL_CHECK(uint64_t(o.seeds - 1) <= UINT64_MAX - o.first_seed, "--seed ", o.seed, " with --seeds ", o.seeds,
           " runs past the largest seed");
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  NL_CHECK(o.threads >= 0 && o.threads <= cores, "--threads must be from 0 (all cores) to ", cores,
           ", the cores of this machine (got ", o.threads, ")");
  NL_CHECK(o.limit_train >= 0, "--limit-train must be 0 (all) or more (got ", o.limit_train, ")");
  NL_CHECK(o.limit_test >= 0, "--limit-test must be 0 (all) or more (got ", o.limit_test, ")");
  NL_CHECK(!o.out.empty(), "--out must name a folder");
  (void)nl::data::parse_crop_pad(o.crop_pad, "--crop-pad");
  NL_CHECK(std::isfinite(o.dist_timeout) && o.dist_timeout > 0,
           "--dist-timeout must be a positive number of seconds (got ", o.dist_timeout, ")");
}

// Processes of this job on this machine (torchrun's, Open MPI's, then PMI's and Slurm's launchers
// say; else all of them).
int local_processes(int world) {
  for (const char* v :
       {"LOCAL_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS_PER_NODE"})
    if (const char* s = std::getenv(v)) {
      const int n = std::atoi(s);
      if (n >= 1) return n;
    }
  return world;
}

std::vector<NormRef> parse_norms(const std::string& list) {
  std::vector<NormRef> out;
  std::stringstream ss(list);
  for (std::string item; std::getline(ss, item, ',');) {
    NormRef k = parse_norm(item);
    for (NormRef seen : out) NL_CHECK(seen != k, "--norms lists '", item, "' twice");
    out.push_back(k);
  }
  NL_CHECK(!out.empty(), "--norms is empty: give some of the keys ", norm_keys());
  return out;
}

// The first SIGINT/SIGTERM asks the training loop to stop after its step (checkpoints and the
// report so far are then written); a second one ends the process at once, as it would without
// a handler.
std::atomic<int> g_stop_signal{0};

extern "C" void on_stop_signal(int sig) {
  if (g_stop_signal.load() != 0) {
    std::signal(sig, SIG_DFL);
    std::raise(sig);
    return;
  }
  g_stop_signal.store(sig);
  const char msg[] = "\ncompare_norms: stopping after this step (again to stop at once)\n";
  [[maybe_unused]] ssize_t n = ::write(STDERR_FILENO, msg, sizeof msg - 1);
}

void install_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

struct DeviceChoice {
  nl::Device device;
  std::string why;  // the first line the app prints: which backend and device, and why
};

DeviceChoice pick_device(const std::string& name, int threads) {
  const bool cuda = nl::device_available(nl::DeviceType::CUDA);
  const std::string gpu = nl::device_description(nl::DeviceType::CUDA);
  const std::string cpu = "cpu, " + std::to_string(threads) + (threads == 1 ? " thread" : " threads");
  if (name == "cpu") return {nl::Device::cpu(), cpu + " (--device cpu)"};
  if (name == "cuda") {
    NL_CHECK(cuda, "--device cuda: ", gpu, "; use --device cpu or auto");
    return {nl::Device::cuda(), "cuda: " + gpu + " (--device cuda)"};
  }
  if (cuda) return {nl::Device::cuda(), "cuda: " + gpu + " (--device auto found it)"};
  return {nl::Device::cpu(), cpu + " (--device auto: no GPU to use: " + gpu + ")"};
}

nl::data::Dataset load(const Options& o) {
  if (o.dataset == "fashion-mnist") {
    return nl::data::load_fashion_mnist(o.data_dir.empty() ? nl::data::kFashionMnistDir : o.data_dir);
  }
  const std::string dir = o.data_dir.empty() ? "data" : o.data_dir;
  if (!nl::data::cifar10_present(dir) && o.download) {
    std::printf("downloading CIFAR-10 (binary version) into %s ...\n", dir.c_str());
    nl::data::DownloadOptions d;
    d.cancelled = [] { return g_stop_signal.load() != 0; };  // Ctrl-C aborts cleanly
    const bool tty = isatty(STDERR_FILENO);
    auto last = std::chrono::steady_clock::now();
    d.progress = [&](int64_t now, int64_t total) {
      auto t = std::chrono::steady_clock::now();
      if (t - last < std::chrono::milliseconds(tty ? 200 : 5000) && now != total) return;
      last = t;
      if (total > 0)
        std::fprintf(stderr, tty ? "\r  %6.1f / %.1f MB (%3.0f%%)" : "  %.1f / %.1f MB (%.0f%%)\n", now / 1e6,
                     total / 1e6, 100.0 * double(now) / double(total));
    };
    nl::data::download_cifar10(dir, d);
    if (tty) std::fprintf(stderr, "\n");
    std::printf("downloaded and verified (MD5 %s)\n", nl::data::kCifar10Md5);
  }
  return nl::data::load_cifar10(dir);
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{
      "compare_norms: train one small CNN (43,600 parameters) with BatchNorm, GroupNorm and "
      "LayerNorm on the same data, seeds and initial weights, and report how each learns.\n"
      "Outputs in --out: metrics.csv, results.json, curves (PNG, SVG), misclassified-image "
      "grids, confusion matrices and report.md."};
  app.add_option("--norms", o.norms,
                 "Comma-separated norms to train: " + norm_keys() + "; LayerNorm is over (C,H,W)")
      ->capture_default_str();
  app.add_option("--groups", o.groups, "Groups of GroupNorm (gn): 1, 2, 4 or 8")->capture_default_str();
  app.add_option("--ghost-batch", o.ghost_batch,
                 "Samples per ghost batch of Ghost BatchNorm (gbn): its statistics as a data-parallel worker "
                 "with this many samples would see them")
      ->capture_default_str();
  app.add_option("--eps", o.eps, "eps of every norm (0: each norm's own default, 1e-5; FRN 1e-6)")
      ->capture_default_str();
  app.add_option("--dropout", o.dropout,
                 "Dropout probability after every conv block's norm and ReLU (the recipe's 0.05; 0: none)")
      ->capture_default_str();
  app.add_flag("--no-augment", o.no_augment, "No crop + flip augmentation of the CIFAR-10 training images");
  app.add_option(
         "--crop-pad", o.crop_pad,
         "What fills the border of the random crop: black (0 before normalising, torchvision's "
         "RandomCrop), mean (0 after normalising: the mean colour) or reflect (the image mirrored at its "
         "edge); it moves GroupNorm and LayerNorm by points (docs/results.md)")
      ->capture_default_str();
  app.add_flag("--drop-last", o.drop_last, "Skip each epoch's last partial batch (the recipe trains on it)");
  app.add_option("--epochs", o.epochs, "Epochs per run")->capture_default_str();
  app.add_option("--batch-size", o.batch_size, "Training batch size")->capture_default_str();
  app.add_option("--lr", o.lr, "Peak learning rate of the one-cycle schedule")->capture_default_str();
  app.add_option("--seed", o.seed, "First seed (weights, data order, augmentation, dropout)")
      ->capture_default_str();
  app.add_option("--seeds", o.seeds, "Runs per norm, with seeds seed..seed+K-1, reported as mean ± std")
      ->capture_default_str();
  app.add_option("--dataset", o.dataset, "cifar10 or fashion-mnist")
      ->capture_default_str()
      ->check(CLI::IsMember({"cifar10", "fashion-mnist"}));
  app.add_option("--data-dir", o.data_dir,
                 "cifar10: folder containing cifar-10-batches-bin/ (default ./data); fashion-mnist: "
                 "folder with the *-ubyte.gz files (default /usr/share/datasets/fashion-mnist)");
  app.add_flag("--download", o.download,
               "Download CIFAR-10 into --data-dir if it is missing (~163 MB, MD5-checked)");
  app.add_option("--device", o.device,
                 "cpu, cuda or auto (cuda when this build has CUDA and a GPU answers, else cpu)")
      ->capture_default_str()
      ->check(CLI::IsMember({"cpu", "cuda", "auto"}));
  app.add_option("--threads", o.threads, "CPU threads (0: all cores)")->capture_default_str();
  app.add_option("--out", o.out, "Output folder; one run of the app owns it (see --overwrite)")
      ->capture_default_str();
  app.add_flag("--overwrite", o.overwrite,
               "Replace the results of an earlier run in --out (only compare_norms' own files are removed)");
  app.add_flag(
      "--resume", o.resume,
      "Continue the interrupted study in --out (same flags): finished runs are kept, the run in "
      "progress restarts from its last finished epoch, and the results equal an uninterrupted run's");
  app.add_option("--limit-train", o.limit_train, "Use only the first N training images (0: all)");
  app.add_option("--limit-test", o.limit_test, "Use only the first N test images (0: all)");
  app.add_flag("--no-progress", o.no_progress, "No live progress bar, even on a terminal");
  app.add_flag("--strict", o.strict, "Exit with status 3 when a run diverged (default: 0 and a warning)");
  app.add_flag(
      "--no-guard", o.no_guard,
      "Skip the per-step NaN/Inf check of every parameter and gradient (the loss is always checked)");
  app.add_flag("--no-telemetry", o.no_telemetry,
               "Skip the per-epoch stability telemetry (telemetry.csv; its cost is in docs/performance.md)");
  app.add_option("--dist", o.dist,
                 "Data parallel: auto (over MPI when started by mpirun or srun, else one process), mpi, nccl "
                 "(GPUs, one per process; under "
                 "mpirun, or started with RANK, WORLD_SIZE and NORMLAB_DIST_INIT_FILE set) or single; "
                 "--batch-size stays the whole batch over every process (docs/scaling-out.md)")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "mpi", "nccl", "single"}));
  app.add_option("--dist-timeout", o.dist_timeout,
                 "Seconds a collective may wait for the other processes before this one fails naming it")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    validate(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "compare_norms: %s\n", e.what());
    return 2;
  }

  // Before anything that can fail: an error must end every process (see the catch below).
  std::unique_ptr<nl::dist::ProcessGroup> group;
  try {
    nl::dist::Options dist_options;
    dist_options.timeout_seconds = o.dist_timeout;
    group = nl::dist::init(o.dist, dist_options);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "compare_norms: %s\n", e.what());
    return 1;
  }
  const int ranks = group->size();
  const bool lead = group->rank() == 0;  // rank 0 prints and writes every file
  const std::string who = ranks > 1 ? " (rank " + std::to_string(group->rank()) + ")" : "";
  // The other ranks' lines would repeat rank 0's.
  if (!lead) std::cout.setstate(std::ios::badbit);
  try {
    const std::vector<NormRef> norms = parse_norms(o.norms);
    NL_CHECK(ranks == 1 || !o.download, "--download with ", ranks,
             " processes: they would all download into one folder; download once with one process first");
    // Cores shared among this machine's processes unless --threads says otherwise.
    const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    nl::set_num_threads(o.threads > 0 || ranks == 1 ? o.threads
                                                    : std::max(1, cores / local_processes(ranks)));
    const DeviceChoice choice = pick_device(o.device, nl::get_num_threads());
    const nl::Device device = choice.device;
    if (lead) std::printf("compare_norms: running on %s\n", choice.why.c_str());
    if (ranks > 1 && lead)
      std::printf("compare_norms: data parallel over %d processes (%s), batch %lld split among them\n", ranks,
                  group->backend().c_str(), (long long)o.batch_size);
    // The output folder first: a folder we cannot write or that holds another run's results
    // stops the app before any data is read or any epoch is trained.
    // What --resume must match (threads are left out: results are bitwise equal for any count).
    nlohmann::json run_config = {{"norms", o.norms},
                                 {"epochs", o.epochs},
                                 {"batch_size", o.batch_size},
                                 {"lr", o.lr},
                                 {"seed", o.first_seed},
                                 {"seeds", o.seeds},
                                 {"dataset", o.dataset},
                                 {"device", device.is_cpu() ? "cpu" : "cuda"},
                                 {"limit_train", o.limit_train},
                                 {"limit_test", o.limit_test},
                                 {"groups", o.groups},
                                 {"ghost_batch", o.ghost_batch},
                                 {"eps", o.eps}};
    // Recipe changes enter only when made, so folders of earlier versions still resume.
    const auto add_recipe = [&](nlohmann::json& j) {
      if (o.dropout != 0.05f) j["dropout"] = o.dropout;
      if (o.no_augment) j["augment"] = false;
      // Folders without it ran with black padding; only the CIFAR-10 crop uses it.
      if (!o.no_augment && o.dataset == "cifar10" && o.crop_pad != "black") j["crop_pad"] = o.crop_pad;
      if (o.drop_last) j["drop_last"] = true;
    };
    add_recipe(run_config);
    if (ranks > 1) run_config["processes"] = ranks;
    {
      // Rank 0 owns the folder; the others learn whether it could claim it.
      std::exception_ptr refused;
      float claimed = 1;
      if (lead) {
        try {
          claim_out_dir(o.out, o.overwrite, o.resume, run_config);
        } catch (...) {
          refused = std::current_exception(), claimed = 0;
        }
      }
      group->broadcast(&claimed, 1, 0);
      if (refused) std::rethrow_exception(refused);
      if (!claimed) return 1;  // rank 0 says why
    }
    install_stop_handlers();
    nl::data::Dataset data = load(o);
    data.train = data.train.head(o.limit_train);
    data.test = data.test.head(o.limit_test);
    NL_CHECK(o.batch_size <= data.train.N, "--batch-size ", o.batch_size, " is larger than the ",
             data.train.N, " training images", o.limit_train ? " (after --limit-train)" : "",
             ": use at most ", data.train.N);
    // The one-cycle schedule needs two steps at least (it rises, then falls).
    const int64_t steps = (data.train.N + o.batch_size - 1) / o.batch_size * o.epochs;
    NL_CHECK(steps >= 2, "--epochs ", o.epochs, " with --batch-size ", o.batch_size, " and ", data.train.N,
             " training images makes ", steps,
             " step; the one-cycle schedule needs at least 2: "
             "more epochs, a smaller batch or more images");

    TrainConfig cfg;
    cfg.epochs = o.epochs;
    cfg.batch_size = o.batch_size;
    cfg.max_lr = o.lr;
    cfg.device = device;
    cfg.net.groups = o.groups, cfg.net.ghost_batch = o.ghost_batch, cfg.net.eps = o.eps;
    cfg.net.dropout = o.dropout, cfg.augment = !o.no_augment, cfg.drop_last = o.drop_last;
    cfg.crop_pad = nl::data::parse_crop_pad(o.crop_pad);
    cfg.progress = lead && !o.no_progress && isatty(STDERR_FILENO);
    cfg.guard = !o.no_guard;
    cfg.telemetry = !o.no_telemetry;

    cfg.group = group.get();
    cfg.write_files = lead;
    if (lead)
      std::printf(
          "compare_norms: %s, %lld training / %lld test images, %lld epochs, batch %lld, "
          "device %s, %d threads, seeds %llu..%llu\n",
          data.name.c_str(), (long long)data.train.N, (long long)data.test.N, (long long)o.epochs,
          (long long)o.batch_size, device.is_cpu() ? "cpu" : "cuda", nl::get_num_threads(),
          (unsigned long long)o.first_seed, (unsigned long long)(o.first_seed + o.seeds - 1));
    for (NormRef k : norms) {
      nl::Generator g(o.first_seed);
      NetOptions no = cfg.net;
      no.in_channels = data.train.C;
      auto net = make_net(k, g, nullptr, no);
      if (lead)
        std::printf("\n%s\n%s", norm_title(k).c_str(),
                    nl::nn::summary(*net, {1, data.train.C, data.train.H, data.train.W}).c_str());
    }

    ReportInput rep;
    rep.out_dir = o.out;
    rep.data = &data;
    rep.config = {{"norms", o.norms},
                  {"epochs", o.epochs},
                  {"batch_size", o.batch_size},
                  {"lr", o.lr},
                  {"seed", o.first_seed},
                  {"seeds", o.seeds},
                  {"dataset", data.name},
                  {"device", device.is_cpu() ? "cpu" : "cuda"},
                  {"threads", nl::get_num_threads()},
                  {"limit_train", o.limit_train},
                  {"limit_test", o.limit_test},
                  {"groups", o.groups},
                  {"ghost_batch", o.ghost_batch},
                  {"eps", o.eps},
                  {"dropout", o.dropout},
                  {"augment", !o.no_augment && data.augment},
                  {"crop_pad", o.crop_pad},
                  {"drop_last", o.drop_last},
                  {"processes", ranks}};
    const char* raise_env = std::getenv("NORMLAB_TEST_RAISE_AFTER_EPOCH");
    const std::string raise_at = raise_env ? raise_env : "";
    cfg.resume = o.resume;
    cfg.stop = &g_stop_signal;
    bool interrupted = false;
    for (int64_t s = 0; s < o.seeds && !interrupted; ++s) {
      for (NormRef k : norms) {
        const uint64_t seed = o.first_seed + static_cast<uint64_t>(s);
        if (lead) std::printf("\n== %s, seed %llu ==\n", norm_title(k).c_str(), (unsigned long long)seed);
        std::fflush(stdout);
        // metrics.csv after every epoch (atomically): a killed job loses at most the epoch in
        // progress, and a long one shows its progress on disk.
        RunResult placeholder;
        placeholder.norm = k, placeholder.seed = seed;
        rep.runs.push_back(placeholder);
        cfg.checkpoint_stem = checkpoint_stem(o.out, k, seed);
        rep.runs.back() = train_one(k, seed, data, cfg, std::cout, [&](const RunResult& partial) {
          rep.runs.back() = partial;
          if (lead) write_metrics_csv(rep);
          // Tests interrupt at an exact point through the real handler: "gn:1" raises SIGINT
          // once GroupNorm's first epoch is checkpointed, "gn:1:TERM" SIGTERM, "gn:1:INT2" SIGINT
          // twice (the second must end the process at once).
          const std::string at = norm_key(k) + ":" + std::to_string(partial.epochs.size());
          if (raise_at == at || raise_at == at + ":INT2") std::raise(SIGINT);
          if (raise_at == at + ":TERM") std::raise(SIGTERM);
          if (raise_at == at + ":INT2") std::raise(SIGINT);
        });
        if (lead) write_metrics_csv(rep);
        if (rep.runs.back().interrupted()) {
          interrupted = true;
          break;
        }
      }
    }
    if (!lead) return interrupted ? 128 + g_stop_signal.load() : 0;  // the rest is rank 0's
    nlohmann::json results = write_results_json(rep);
    bool pictures = write_plots(rep);
    write_report_md(rep, results, pictures);

    std::printf("\n%-15s %8s %18s %16s %18s\n", "norm", "params", "final test acc", "final test loss",
                "best test acc");
    for (NormRef k : norms) {
      const auto& n = results["norms"][norm_key(k)];
      if (n["final_test_acc"]["mean"].is_null()) {  // no seed of this norm finished
        bool stopped = false;
        for (const RunResult& r : rep.runs) stopped |= r.norm == k && r.interrupted();
        std::printf("%-15s %8lld %18s\n", norm_title(k).c_str(), (long long)n["parameters"].get<int64_t>(),
                    stopped ? "interrupted" : "diverged");
        continue;
      }
      // One seed has no standard deviation: no ±.
      const bool spread = n["final_test_acc"].value("n", size_t(0)) > 1;
      auto acc = [&](const char* key) {
        char buf[48];
        if (spread)
          std::snprintf(buf, sizeof buf, "%.2f%% ± %4.2f", n[key]["mean"].get<double>(),
                        n[key]["std"].get<double>());
        else
          std::snprintf(buf, sizeof buf, "%.2f%%", n[key]["mean"].get<double>());
        return std::string(buf);
      };
      std::printf("%-15s %8lld %18s %16.4f %18s\n", norm_title(k).c_str(),
                  (long long)n["parameters"].get<int64_t>(), acc("final_test_acc").c_str(),
                  n["final_test_loss"]["mean"].get<double>(), acc("best_test_acc").c_str());
    }
    std::printf("\nwrote %s/{metrics.csv, results.json, report.md%s}\n", o.out.c_str(),
                pictures ? ", *.png, *.svg" : "");
    if (interrupted) {
      // Everything finished is on disk (checkpoints, metrics, the report so far).
      const int sig = g_stop_signal.load();
      std::fprintf(stderr,
                   "compare_norms: stopped by %s; finished runs and epochs are saved in %s. Continue with "
                   "the same flags and --resume.\n",
                   sig == SIGTERM ? "SIGTERM" : "SIGINT", o.out.c_str());
      return 128 + sig;
    }
    int diverged = 0;
    for (const RunResult& r : rep.runs) diverged += r.diverged();
    if (diverged) {
      std::fprintf(stderr, "compare_norms: warning: %d of %zu runs diverged (see report.md)%s\n", diverged,
                   rep.runs.size(), o.strict ? "; exit status 3 (--strict)" : "");
      if (o.strict) return 3;
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "compare_norms%s: %s\n", who.c_str(), e.what());
    // With other processes, end without MPI_Finalize: it would wait for them, and they may be
    // waiting in a collective for us. mpirun stops the job when one process exits non-zero.
    if (ranks > 1) (void)group.release();
    return 1;
  }
}
