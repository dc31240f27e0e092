#include "trainer.h"

#include "checkpoint.h"

#include <unistd.h>

#include <chrono>
#include <deque>
#include <cmath>
#include <filesystem>
#include <cstdio>
#include <map>

#include "normlab/core/autograd.h"
#include "normlab/core/error.h"
#include "normlab/core/ops.h"
#include "normlab/dist/process_group.h"
#include "normlab/nn/optim.h"
#include "normlab/nn/scheduler.h"

namespace compare {
using namespace nl;
using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

namespace {

constexpr uint64_t kDropoutStream = 0x9E3779B97F4A7C15ull;  // keeps dropout apart from init
// Data parallel: rank r's dropout stream (each process masks its own rows; one process's masks
// cannot be sliced, since a mask is drawn per tensor), restarted every epoch at a point that
// depends only on (seed, rank, epoch), so a resume needs no other process's generator state.
constexpr uint64_t kRankStream = 0xD1B54A32D192ED03ull;
constexpr uint64_t kEpochStride = uint64_t(1) << 40;

int64_t count_correct(const Tensor& logp, const Tensor& labels, std::vector<int32_t>* preds) {
  std::vector<float> l = logp.to_vector();
  std::vector<int32_t> t = labels.to_int_vector();
  const int64_t C = logp.size(1);
  int64_t correct = 0;
  for (size_t i = 0; i < t.size(); ++i) {
    int32_t best = 0;
    for (int32_t c = 1; c < C; ++c) best = l[i * C + c] > l[i * C + best] ? c : best;
    correct += best == t[i];
    if (preds) preds->push_back(best);
  }
  return correct;
}

struct Eval {
  double loss;
  int64_t correct;
};

Eval evaluate(nn::Module& net, const data::Dataset& d, Device device, std::vector<int32_t>* preds) {
  net.eval();
  NoGradGuard no_grad;
  double loss = 0;
  int64_t correct = 0;
  const int64_t chunk = 500;
  for (int64_t b = 0; b < d.test.N; b += chunk) {
    const int64_t e = std::min(d.test.N, b + chunk);
    Tensor x = data::to_tensor(d.test, d.mean, d.std, b, e).to(device);
    Tensor y = Tensor::from_ints(std::vector<int32_t>(d.test.labels.begin() + b, d.test.labels.begin() + e),
                                 {e - b}, device);
    Tensor logp = net.forward(x);
    loss += double(nll_loss(logp, y).item()) * double(e - b);
    correct += count_correct(logp, y, preds);
  }
  net.train();
  return {loss / double(d.test.N), correct};
}

// Dotted path of every module below root ("C4.norm"), for messages.
void name_modules(const nn::Module& m, const std::string& prefix,
                  std::map<const nn::Module*, std::string>& names) {
  names[&m] = prefix.empty() ? "(network)" : prefix;
  for (const auto& [name, child] : m.children())
    name_modules(*child, prefix.empty() ? name : prefix + "." + name, names);
}

std::string type_name(const nn::Module& m) {
  const std::string d = m.describe();
  return d.substr(0, d.find('('));
}

std::string nonfinite_text(int64_t bad, int64_t total) {
  return std::to_string(bad) + " non-finite values (NaN/Inf) of " + std::to_string(total);
}

// The first parameter (in named order) whose tensor or gradient has NaN/Inf, or "".
std::string first_bad_tensor(const nn::NamedTensors& params, bool grads) {
  std::vector<Tensor> ts;
  for (const auto& [name, t] : params) ts.push_back(grads ? t.grad() : t);
  const std::vector<int64_t> bad = nonfinite_counts(ts);
  for (size_t i = 0; i < bad.size(); ++i)
    if (bad[i])
      return std::string(grads ? "gradient of " : "parameter ") + params[i].first + " has " +
             nonfinite_text(bad[i], ts[i].numel());
  return "";
}

void draw_progress(const std::string& tag, int64_t epoch, int64_t epochs, int64_t b, int64_t nb, double loss,
                   double acc, double ips, double eta) {
  const int width = 24;
  int filled = static_cast<int>(width * b / std::max<int64_t>(nb, 1));
  std::fprintf(stderr,
               "\r%s epoch %lld/%lld [%.*s%*s] %lld/%lld loss %.4f acc %.2f%% %.0f img/s ETA %.0f s  ",
               tag.c_str(), (long long)epoch, (long long)epochs, filled, "########################",
               width - filled, "", (long long)b, (long long)nb, loss, acc, ips, eta);
  std::fflush(stderr);
}

// Steps whose loss jumps above kSpikeFactor x the median of the kSpikeWindow steps before.
constexpr double kSpikeFactor = 3.0;
constexpr size_t kSpikeWindow = 50;

double l2(const Tensor& t) { return std::sqrt(double(sum(mul(t, t)).item())); }

// The epoch's stability telemetry (TrainConfig::telemetry). Runs after the epoch's evaluation;
// touches no generator and restores every buffer, so a run's trajectory is the same with it off.
nlohmann::json epoch_telemetry(nn::Module& net, const data::Dataset& d, Device device, float lr,
                               int64_t spikes, double max_ratio, bool batch_stats) {
  nlohmann::json layers = nlohmann::json::array();
  std::map<std::string, size_t> row;  // "C4.body" -> index in layers
  for (const auto& [name, w] : net.named_parameters()) {
    const std::string suffix = ".conv.weight";
    if (name.size() <= suffix.size() || name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0)
      continue;
    const std::string layer = name.substr(0, name.size() - suffix.size());
    const double wn = l2(w);
    row[layer] = layers.size();
    layers.push_back({{"layer", layer},
                      {"weight_norm", wn},
                      {"grad_norm", w.grad().defined() ? l2(w.grad()) : 0.0},
                      {"eff_lr", double(lr) / (wn * wn)}});
  }
  // Each norm's output on the first 256 test images in eval mode, unfused (before its ReLU).
  std::map<const nn::Module*, std::string> names;
  name_modules(net, "", names);
  const bool fused = nn::fusion_enabled();
  nn::set_fusion_enabled(false);
  net.eval();
  {
    NoGradGuard no_grad;
    nn::set_output_check([&](const nn::Module& m, const Tensor& y) {
      const std::string& n = names[&m];
      if (n.size() < 5 || n.compare(n.size() - 5, 5, ".norm") != 0) return;
      const auto it = row.find(n.substr(0, n.size() - 5));
      if (it == row.end()) return;
      const double count = double(y.numel()), mean = double(sum(y).item()) / count;
      const double sq = double(sum(mul(y, y)).item()) / count;
      layers[it->second]["out_mean"] = mean;
      layers[it->second]["out_std"] = std::sqrt(std::max(0.0, sq - mean * mean));
    });
    try {
      net.forward(data::to_tensor(d.test, d.mean, d.std, 0, std::min<int64_t>(256, d.test.N)).to(device));
    } catch (...) {
      nn::set_output_check(nullptr);
      nn::set_fusion_enabled(fused);
      throw;
    }
    nn::set_output_check(nullptr);
  }
  nn::set_fusion_enabled(fused);
  nlohmann::json t = {
      {"loss_spikes", spikes}, {"max_loss_ratio", max_ratio}, {"bn_gap", nullptr}, {"layers", layers}};
  if (batch_stats) {
    // BatchNorm's train/eval gap: the test set normalised with its own batch statistics (chunks of
    // 500, as evaluate() runs) against the running statistics. Only the norms switch to training
    // mode (dropout stays off), and their buffers are put back after.
    net.eval();
    std::vector<std::pair<Tensor, Tensor>> saved;
    for (const auto& [name, b] : net.named_buffers()) saved.emplace_back(b, b.clone());
    std::function<void(nn::Module&)> norms_train = [&](nn::Module& m) {
      for (const auto& [name, child] : m.children()) {
        if (name == "norm")
          child->train(true);
        else
          norms_train(*child);
      }
    };
    norms_train(net);
    int64_t correct = 0;
    {
      NoGradGuard no_grad;
      for (int64_t b = 0; b < d.test.N; b += 500) {
        const int64_t e = std::min(d.test.N, b + 500);
        Tensor x = data::to_tensor(d.test, d.mean, d.std, b, e).to(device);
        Tensor y = Tensor::from_ints(
            std::vector<int32_t>(d.test.labels.begin() + b, d.test.labels.begin() + e), {e - b}, device);
        correct += count_correct(net.forward(x), y, nullptr);
      }
    }
    for (auto& [live, copy] : saved) live.copy_(copy);
    t["bn_gap_batch_stats_acc"] = 100.0 * double(correct) / double(d.test.N);
  }
  net.train();
  return t;
}

}  // namespace

// Runs x through net once more with every module's output checked, and names the first module
// whose output is not finite ("" when every output is finite).
std::string first_nonfinite_output(nn::Module& net, const Tensor& x) {
  if (const int64_t bad = nonfinite_counts({x})[0])
    return "the input batch has " + nonfinite_text(bad, x.numel());
  std::map<const nn::Module*, std::string> names;
  name_modules(net, "", names);
  std::string found;
  nn::set_output_check([&](const nn::Module& m, const Tensor& y) {
    if (!found.empty()) return;
    if (const int64_t bad = nonfinite_counts({y})[0])
      found = type_name(m) + " " + names[&m] + ": output has " + nonfinite_text(bad, y.numel());
  });
  try {
    NoGradGuard no_grad;
    net.forward(x);
  } catch (...) {
    nn::set_output_check(nullptr);
    throw;
  }
  nn::set_output_check(nullptr);
  return found;
}

RunResult train_one(NormRef norm, uint64_t seed, const data::Dataset& d, const TrainConfig& cfg,
                    std::ostream& log, const std::function<void(const RunResult&)>& on_epoch) {
  RunResult res;
  res.norm = norm;
  res.seed = seed;
  dist::ProcessGroup* group = cfg.group && cfg.group->size() > 1 ? cfg.group : nullptr;
  const int64_t ranks = group ? group->size() : 1, rank = group ? group->rank() : 0;
  Generator init(seed), drop(seed ^ kDropoutStream);
  NetOptions o = cfg.net;
  o.in_channels = d.train.C;
  o.classes = static_cast<int64_t>(d.classes.size());
  o.sync = group;
  auto net = make_net(norm, init, &drop, o);
  net->to(cfg.device);
  res.parameters = net->parameter_count();
  // Equal already (the same seed); the broadcast makes it so whatever each process computed.
  if (group) dist::broadcast_parameters(*group, *net);
  // Gradients averaged in buckets while backward still runs for the earlier layers.
  std::unique_ptr<dist::GradientReducer> reducer;
  if (group) reducer = std::make_unique<dist::GradientReducer>(*group, *net);

  data::LoaderOptions lo;
  lo.batch_size = cfg.batch_size;
  lo.augment = d.augment && cfg.augment;
  lo.crop_pad = cfg.crop_pad;
  lo.drop_last = cfg.drop_last;
  lo.seed = seed;
  lo.shard_rank = rank, lo.shard_count = ranks;
  data::DataLoader loader(d.train, d.mean, d.std, lo);
  const int64_t steps = loader.batches_per_epoch();

  nn::SGD opt(net->parameters(),
              {.lr = cfg.max_lr / 25.0f, .momentum = 0.95f, .weight_decay = cfg.weight_decay});
  nn::OneCycleLR sched(opt, cfg.max_lr, cfg.epochs * steps);
  const std::string tag = "[" + norm_key(norm) + " seed " + std::to_string(seed) + "]";
  auto run_start = Clock::now();

  const TrainState state{net.get(), &opt, &sched, &drop};
  const bool checkpoints = !cfg.checkpoint_stem.empty();
  nlohmann::json fingerprint = checkpoints ? run_fingerprint(*net, norm, seed, d, cfg) : nlohmann::json();
  // A resume needs the same process count: it decides every batch's slices and BatchNorm's statistics.
  if (checkpoints && group) fingerprint["recipe"]["processes"] = ranks;
  int64_t first_epoch = 1;
  if (checkpoints && cfg.resume) {
    if (auto c = load_checkpoint(cfg.checkpoint_stem, fingerprint)) {
      restore_checkpoint(*c, state, res);
      if (c->finished()) {
        log << tag << " finished before (" << res.status << "): kept from its checkpoint" << std::endl;
        return res;
      }
      first_epoch = static_cast<int64_t>(res.epochs.size()) + 1;
      // Time already spent counts toward the run's total.
      run_start -= std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(res.seconds));
      log << tag << " resumed after epoch " << first_epoch - 1 << " from its checkpoint" << std::endl;
    }
  }
  auto checkpoint = [&](bool finished) {
    if (!checkpoints || !cfg.write_files) return;
    res.seconds = std::chrono::duration<double>(Clock::now() - run_start).count();
    save_checkpoint(cfg.checkpoint_stem, state, res, fingerprint, finished);
  };

  bool running_stats = false;  // a norm with running statistics (BatchNorm's family): the train/eval gap
  for (const auto& [name, b] : net->named_buffers())
    running_stats |= name.find("running_mean") != std::string::npos;
  for (int64_t epoch = first_epoch; epoch <= cfg.epochs; ++epoch) {
    const auto t0 = Clock::now();
    loader.start_epoch(epoch);
    if (group)
      drop.set_state(seed ^ kDropoutStream ^ (kRankStream * uint64_t(rank + 1)),
                     uint64_t(epoch) * kEpochStride);
    double loss_sum = 0;
    int64_t correct = 0, seen = 0, b = 0;
    int64_t spikes = 0;
    double max_ratio = 0;
    // The last kSpikeWindow step losses of this epoch: per epoch, so a run resumed at an epoch
    // boundary counts the same spikes as an uninterrupted one.
    std::deque<double> recent;
    data::Batch batch;
    const nn::NamedTensors params = net->named_parameters();
    auto diverge = [&](const std::string& what) {
      char where[96];
      std::snprintf(where, sizeof where, " at epoch %lld, batch %lld (lr %.3g)", (long long)epoch,
                    (long long)b, double(opt.lr()));
      res.status = "diverged";
      res.reason = what + where;
      res.diverged_epoch = epoch;
      if (cfg.progress) std::fprintf(stderr, "\r\033[K");
      log << tag << " diverged: " << res.reason << "; this run stops here, the others go on" << std::endl;
    };
    bool stop = false;
    while (loader.next(batch)) {
      Tensor x = batch.images.to(cfg.device), y = batch.labels.to(cfg.device);
      ++b;
      opt.zero_grad();
      Tensor logp = net->forward(x);
      Tensor loss = nll_loss(logp, y);
      // Checked before backward: a NaN loss would only spread into every gradient and weight.
      double l = loss.item();
      // This process's share of the batch's loss, its weight in the one-process mean.
      double share = 1.0;
      stop = cfg.stop && cfg.stop->load();
      if (group) {
        // The batch's loss and whether any process was asked to stop, in one small collective:
        // every process takes the same decisions (diverged, stop) at the same step.
        const double n = double(x.size(0)), total = double(batch.global_size);
        float agree[2] = {float(l * n / total), stop ? 1.0f : 0.0f};
        group->all_reduce_sum(agree, 2);
        l = agree[0];
        stop = agree[1] > 0;
        share = n / total;
      }
      if (!std::isfinite(l)) {
        const std::string culprit = first_nonfinite_output(*net, x);
        diverge(culprit.empty()
                    ? "the training loss is " + std::to_string(l) + " (every module's output was finite)"
                    : culprit + "; training loss " + std::to_string(l));
        break;
      }
      if (cfg.telemetry) {
        if (recent.size() >= 10) {
          std::vector<double> sorted(recent.begin(), recent.end());
          std::nth_element(sorted.begin(), sorted.begin() + long(sorted.size() / 2), sorted.end());
          const double ratio = l / sorted[sorted.size() / 2];
          max_ratio = std::max(max_ratio, ratio);
          spikes += ratio > kSpikeFactor;
        }
        recent.push_back(l);
        if (recent.size() > kSpikeWindow) recent.pop_front();
      }
      if (group) {
        // Seeded with share x ranks, each process's gradient is ranks x its share of the
        // one-process gradient, and the reducer's mean over ranks is that gradient (exact for
        // unequal slices, and for SyncBatchNorm, whose backward mixes every process's dy).
        const double seed_grad = share * double(ranks);
        reducer->backward(loss,
                          seed_grad == 1.0 ? Tensor() : Tensor::full({}, float(seed_grad), loss.device()));
      } else {
        loss.backward();
      }
      if (cfg.guard) {
        if (std::string bad = first_bad_tensor(params, true); !bad.empty()) {
          diverge(bad);
          break;
        }
      }
      opt.step();
      if (cfg.guard) {
        if (std::string bad = first_bad_tensor(params, false); !bad.empty()) {
          diverge(bad + " after the optimizer step");
          break;
        }
      }
      // PyTorch steps OneCycleLR after every batch; the step after the very last batch would
      // only compute an unused rate past the end of the cycle, so it is skipped.
      if (sched.step_count() + 1 < cfg.epochs * steps) sched.step();
      loss_sum += l * double(batch.global_size);
      correct += count_correct(logp.detach(), y, nullptr);
      seen += batch.global_size;
      if (stop) {
        // The epoch in progress is dropped: the last checkpoint is the epoch before it.
        res.status = "interrupted";
        if (cfg.progress) std::fprintf(stderr, "\r\033[K");
        log << tag << " interrupted in epoch " << epoch << " after batch " << b << "; its checkpoint holds "
            << res.epochs.size() << " finished epochs" << std::endl;
        break;
      }
      if (cfg.progress) {
        const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
        draw_progress(tag, epoch, cfg.epochs, b, steps, loss_sum / double(seen),
                      100.0 * double(correct) / double(seen), double(seen) / secs,
                      secs / double(b) * double(steps - b));
      }
    }
    if (res.diverged()) {
      checkpoint(true);  // a resume keeps the diverged run as it is
      break;
    }
    if (res.interrupted()) break;
    if (group) {
      // The epoch's training accuracy over every process's rows; rank 0's running statistics for
      // evaluation (PyTorch DDP broadcasts rank 0's buffers likewise).
      float c = float(correct);
      group->all_reduce_sum(&c, 1);
      correct = int64_t(c);
      dist::broadcast_buffers(*group, *net);
    }
    std::vector<int32_t>* preds = epoch == cfg.epochs ? &res.test_predictions : nullptr;
    Eval ev = evaluate(*net, d, cfg.device, preds);
    if (!std::isfinite(ev.loss)) {
      // Eval mode (running statistics) can break where training mode did not: name the module.
      net->eval();
      const int64_t n = std::min<int64_t>(d.test.N, 500);
      const std::string culprit =
          first_nonfinite_output(*net, data::to_tensor(d.test, d.mean, d.std, 0, n).to(cfg.device));
      net->train();
      res.test_predictions.clear();
      diverge((culprit.empty() ? std::string("the test loss is not finite")
                               : culprit + " (eval mode, test images)") +
              ", after the epoch");
      checkpoint(true);
      break;
    }
    EpochStats s;
    s.epoch = epoch;
    s.train_loss = loss_sum / double(seen);
    s.train_acc = 100.0 * double(correct) / double(seen);
    s.test_loss = ev.loss;
    s.test_correct = ev.correct;
    s.test_total = d.test.N;
    s.test_acc = 100.0 * double(ev.correct) / double(d.test.N);
    if (cfg.telemetry) {
      s.telemetry = epoch_telemetry(*net, d, cfg.device, opt.lr(), spikes, max_ratio, running_stats);
      if (s.telemetry.contains("bn_gap_batch_stats_acc")) {
        s.telemetry["bn_gap"] = s.telemetry["bn_gap_batch_stats_acc"].get<double>() - s.test_acc;
        s.telemetry.erase("bn_gap_batch_stats_acc");
      }
    }
    s.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    res.epochs.push_back(s);
    if (cfg.progress) std::fprintf(stderr, "\r\033[K");
    char line[256];
    std::snprintf(line, sizeof line,
                  "%s epoch %2lld | train loss %.4f acc %.2f%% | test loss %.4f acc %lld/%lld "
                  "(%.2f%%) | %.0f s",
                  tag.c_str(), (long long)epoch, s.train_loss, s.train_acc, s.test_loss,
                  (long long)s.test_correct, (long long)s.test_total, s.test_acc, s.seconds);
    log << line << std::endl;
    checkpoint(epoch == cfg.epochs);
    if (on_epoch) on_epoch(res);
  }
  res.seconds = std::chrono::duration<double>(Clock::now() - run_start).count();
  if (checkpoints && cfg.write_files && res.status == "ok") {
    // The final weights alone, named as in the network: model_<norm>_s<seed>.safetensors.
    const fs::path stem(cfg.checkpoint_stem);
    save_model(
        (stem.parent_path() / ("model_" + stem.filename().string().substr(5) + ".safetensors")).string(),
        *net);
  }
  return res;
}

}  // namespace compare
