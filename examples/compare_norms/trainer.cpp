#include "trainer.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>

#include "normlab/core/autograd.h"
#include "normlab/core/error.h"
#include "normlab/core/ops.h"
#include "normlab/nn/optim.h"
#include "normlab/nn/scheduler.h"

namespace compare {
using namespace nl;
using Clock = std::chrono::steady_clock;

namespace {

constexpr uint64_t kDropoutStream = 0x9E3779B97F4A7C15ull;  // keeps dropout apart from init

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

void draw_progress(const std::string& tag, int64_t epoch, int64_t epochs, int64_t b, int64_t nb,
                   double loss, double acc, double ips, double eta) {
  const int width = 24;
  int filled = static_cast<int>(width * b / std::max<int64_t>(nb, 1));
  std::fprintf(stderr, "\r%s epoch %lld/%lld [%.*s%*s] %lld/%lld loss %.4f acc %.2f%% %.0f img/s ETA %.0f s  ",
               tag.c_str(), (long long)epoch, (long long)epochs, filled,
               "########################", width - filled, "", (long long)b, (long long)nb, loss,
               acc, ips, eta);
  std::fflush(stderr);
}

}  // namespace

RunResult train_one(NormKind norm, uint64_t seed, const data::Dataset& d, const TrainConfig& cfg,
                    std::ostream& log) {
  RunResult res;
  res.norm = norm;
  res.seed = seed;
  Generator init(seed), drop(seed ^ kDropoutStream);
  NetOptions o;
  o.in_channels = d.train.C;
  o.classes = static_cast<int64_t>(d.classes.size());
  auto net = make_net(norm, init, &drop, o);
  net->to(cfg.device);
  res.parameters = net->parameter_count();

  data::LoaderOptions lo;
  lo.batch_size = cfg.batch_size;
  lo.augment = d.augment;
  lo.seed = seed;
  data::DataLoader loader(d.train, d.mean, d.std, lo);
  const int64_t steps = loader.batches_per_epoch();

  nn::SGD opt(net->parameters(), {.lr = cfg.max_lr / 25.0f, .momentum = 0.95f,
                                  .weight_decay = cfg.weight_decay});
  nn::OneCycleLR sched(opt, cfg.max_lr, cfg.epochs * steps);
  const std::string tag = "[" + norm_key(norm) + " seed " + std::to_string(seed) + "]";
  const auto run_start = Clock::now();

  for (int64_t epoch = 1; epoch <= cfg.epochs; ++epoch) {
    const auto t0 = Clock::now();
    loader.start_epoch(epoch);
    double loss_sum = 0;
    int64_t correct = 0, seen = 0, b = 0;
    data::Batch batch;
    while (loader.next(batch)) {
      Tensor x = batch.images.to(cfg.device), y = batch.labels.to(cfg.device);
      opt.zero_grad();
      Tensor logp = net->forward(x);
      Tensor loss = nll_loss(logp, y);
      loss.backward();
      opt.step();
      ++b;
      // PyTorch steps OneCycleLR after every batch; the step after the very last batch would
      // only compute an unused rate past the end of the cycle, so it is skipped.
      if (sched.step_count() + 1 < cfg.epochs * steps) sched.step();
      const double l = loss.item();
      NL_CHECK(std::isfinite(l), tag, " epoch ", epoch, " batch ", b,
               ": the loss is not finite; training diverged (try a lower --lr)");
      loss_sum += l * double(x.size(0));
      correct += count_correct(logp.detach(), y, nullptr);
      seen += x.size(0);
      if (cfg.progress) {
        const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
        draw_progress(tag, epoch, cfg.epochs, b, steps, loss_sum / double(seen),
                      100.0 * double(correct) / double(seen), double(seen) / secs,
                      secs / double(b) * double(steps - b));
      }
    }
    std::vector<int32_t>* preds = epoch == cfg.epochs ? &res.test_predictions : nullptr;
    Eval ev = evaluate(*net, d, cfg.device, preds);
    EpochStats s;
    s.epoch = epoch;
    s.train_loss = loss_sum / double(seen);
    s.train_acc = 100.0 * double(correct) / double(seen);
    s.test_loss = ev.loss;
    s.test_correct = ev.correct;
    s.test_total = d.test.N;
    s.test_acc = 100.0 * double(ev.correct) / double(d.test.N);
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
  }
  res.seconds = std::chrono::duration<double>(Clock::now() - run_start).count();
  return res;
}

}  // namespace compare
