#include "checkpoint.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "normlab/core/error.h"
#include "normlab/nn/atomic_file.h"
#include "report.h"

namespace compare {
namespace fs = std::filesystem;
using nl::Tensor;
using nlohmann::json;

namespace {

constexpr const char* kFormat = "normlab-checkpoint-1";

uint64_t fnv1a(const void* data, size_t n, uint64_t h = 1469598103934665603ull) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

std::string hex(uint64_t v) {
  std::ostringstream os;
  os << std::hex << v;
  return os.str();
}

json epoch_json(const EpochStats& e) {
  return {{"epoch", e.epoch},           {"train_loss", e.train_loss}, {"train_acc", e.train_acc},
          {"test_loss", e.test_loss},   {"test_acc", e.test_acc},     {"test_correct", e.test_correct},
          {"test_total", e.test_total}, {"seconds", e.seconds},       {"telemetry", e.telemetry}};
}

// Doubles go through JSON as their shortest round-trip text (nlohmann writes %.17g): the
// resumed metrics are the very same bits.
EpochStats epoch_from(const json& j) {
  EpochStats e;
  e.epoch = j.at("epoch").get<int64_t>();
  e.train_loss = j.at("train_loss").get<double>();
  e.train_acc = j.at("train_acc").get<double>();
  e.test_loss = j.at("test_loss").get<double>();
  e.test_acc = j.at("test_acc").get<double>();
  e.test_correct = j.at("test_correct").get<int64_t>();
  e.test_total = j.at("test_total").get<int64_t>();
  e.seconds = j.at("seconds").get<double>();
  if (j.contains("telemetry")) e.telemetry = j["telemetry"];  // absent in checkpoints before it
  return e;
}

}  // namespace

std::string checkpoint_stem(const std::string& out_dir, NormRef norm, uint64_t seed) {
  return (fs::path(out_dir) / ("ckpt_" + norm_key(norm) + "_s" + std::to_string(seed))).string();
}

json run_fingerprint(const nl::nn::Module& net, NormRef norm, uint64_t seed, const nl::data::Dataset& d,
                     const TrainConfig& cfg) {
  std::string layout;
  for (const auto& [name, p] : net.named_parameters()) {
    std::ostringstream os;
    os << name << p.shape() << ';';
    layout += os.str();
  }
  uint64_t h = fnv1a(d.train.labels.data(), d.train.labels.size() * sizeof(int32_t));
  h = fnv1a(d.test.labels.data(), d.test.labels.size() * sizeof(int32_t), h);
  h = fnv1a(d.train.pixels.data(), std::min<size_t>(d.train.pixels.size(), 1 << 20), h);
  json j = {
      {"network",
       {{"norm", norm_key(norm)},
        {"parameters", net.parameter_count()},
        {"layout", hex(fnv1a(layout.data(), layout.size()))},
        {"groups", cfg.net.groups},
        {"ghost_batch", cfg.net.ghost_batch},
        {"eps", cfg.net.eps},
        {"dropout", cfg.net.dropout}}},
      {"data",
       {{"dataset", d.name}, {"train_images", d.train.N}, {"test_images", d.test.N}, {"content", hex(h)}}},
      {"recipe",
       {{"seed", seed},
        {"epochs", cfg.epochs},
        {"batch_size", cfg.batch_size},
        {"max_lr", cfg.max_lr},
        {"weight_decay", cfg.weight_decay},
        {"augment", cfg.augment},
        {"drop_last", cfg.drop_last},
        {"device", cfg.device.is_cpu() ? "cpu" : "cuda"}}}};
  // The padding matters only where the crop runs (not on Fashion-MNIST, not with --no-augment).
  if (d.augment && cfg.augment) j["recipe"]["crop_pad"] = nl::data::crop_pad_name(cfg.crop_pad);
  return j;
}

std::string first_difference(const json& saved, const json& now, const std::string& path,
                             const json& optional) {
  if (saved.is_object() && now.is_object()) {
    for (const auto& [k, v] : now.items()) {
      const std::string p = path.empty() ? k : path + "." + k;
      if (!saved.contains(k) && optional.contains(p) && optional[p] == v) continue;
      if (!saved.contains(k)) return p + ": missing in the checkpoint, now " + v.dump();
      if (std::string d = first_difference(saved[k], v, p, optional); !d.empty()) return d;
    }
    for (const auto& [k, v] : saved.items())
      if (!now.contains(k))
        return (path.empty() ? k : path + "." + k) + ": checkpoint " + v.dump() + ", now absent";
    return "";
  }
  return saved == now ? "" : path + ": checkpoint " + saved.dump() + ", now " + now.dump();
}

void save_checkpoint(const std::string& stem, const TrainState& s, const RunResult& res,
                     const json& fingerprint, bool finished) {
  const int64_t epoch = static_cast<int64_t>(res.epochs.size());
  nl::nn::NamedTensorList tensors;
  for (const auto& [name, t] : s.net->named_parameters()) tensors.emplace_back("model." + name, t);
  for (const auto& [name, t] : s.net->named_buffers()) tensors.emplace_back("model." + name, t);
  for (const auto& [name, t] : s.opt->state()) tensors.emplace_back("optim." + name, t);
  if (!res.test_predictions.empty())
    tensors.emplace_back(
        "test_predictions",
        Tensor::from_ints(res.test_predictions, {static_cast<int64_t>(res.test_predictions.size())}));
  nl::nn::save_safetensors(stem + ".safetensors", tensors,
                           {{"format", kFormat}, {"epoch", std::to_string(epoch)}});

  json epochs = json::array();
  for (const EpochStats& e : res.epochs) epochs.push_back(epoch_json(e));
  json side = {{"format", kFormat},
               {"fingerprint", fingerprint},
               {"epoch", epoch},
               {"finished", finished},
               {"scheduler_step", s.sched->step_count()},
               {"dropout", {{"seed", s.dropout->seed()}, {"offset", s.dropout->offset()}}},
               {"result",
                {{"status", res.status},
                 {"reason", res.reason},
                 {"diverged_epoch", res.diverged_epoch},
                 {"parameters", res.parameters},
                 {"seconds", res.seconds},
                 {"epochs", epochs}}}};
  nl::nn::write_file_atomic(stem + ".json", side.dump(1) + "\n");
}

std::optional<Checkpoint> load_checkpoint(const std::string& stem, const json& fingerprint) {
  const std::string side_path = stem + ".json";
  std::error_code ec;
  if (!fs::exists(side_path, ec)) return std::nullopt;
  Checkpoint c;
  std::ifstream in(side_path);
  try {
    c.sidecar = json::parse(in);
  } catch (const json::exception& e) {
    NL_FAIL("checkpoint ", side_path, " is not valid JSON: ", e.what());
  }
  NL_CHECK(c.sidecar.is_object() && c.sidecar.value("format", "") == kFormat, "checkpoint ", side_path,
           " is not a ", kFormat, " file");
  // Checkpoints written before --groups, --ghost-batch, --eps, --dropout, --no-augment,
  // --drop-last and --crop-pad existed ran at these values.
  const json optional = {{"network.groups", 4},       {"network.ghost_batch", 32},
                         {"network.eps", 0.0},        {"network.dropout", 0.05f},
                         {"recipe.augment", true},    {"recipe.drop_last", false},
                         {"recipe.crop_pad", "black"}};
  if (std::string d =
          first_difference(c.sidecar.value("fingerprint", json::object()), fingerprint, "", optional);
      !d.empty())
    NL_FAIL("checkpoint ", side_path, " was written by another configuration (", d,
            "): use the same flags as the interrupted run, or --overwrite to start over");
  c.tensors = nl::nn::load_safetensors(stem + ".safetensors");
  const auto it = c.tensors.metadata.find("epoch");
  NL_CHECK(
      it != c.tensors.metadata.end() && it->second == std::to_string(c.sidecar.value("epoch", int64_t(-1))),
      "checkpoint ", stem, ".safetensors is from epoch ",
      it == c.tensors.metadata.end() ? std::string("?") : it->second, " but its sidecar says epoch ",
      c.sidecar.value("epoch", int64_t(-1)),
      " (a crash between the two writes): start over with --overwrite");
  return c;
}

void restore_checkpoint(const Checkpoint& c, const TrainState& s, RunResult& res) {
  const std::string what = "checkpoint of " + norm_key(res.norm) + " seed " + std::to_string(res.seed);
  try {
    for (const auto& [name, t] : s.net->named_parameters()) t.copy_(c.tensors.at("model." + name));
    for (const auto& [name, t] : s.net->named_buffers()) t.copy_(c.tensors.at("model." + name));
    nl::nn::Optimizer::State st;
    for (const auto& [name, t] : c.tensors.tensors)
      if (name.rfind("optim.", 0) == 0) st.emplace_back(name.substr(6), t);
    s.opt->load_state(st);
    const json& side = c.sidecar;
    s.sched->set_step_count(side.at("scheduler_step").get<int64_t>());
    s.dropout->set_state(side.at("dropout").at("seed").get<uint64_t>(),
                         side.at("dropout").at("offset").get<uint64_t>());
    const json& r = side.at("result");
    res.status = r.at("status").get<std::string>();
    res.reason = r.at("reason").get<std::string>();
    res.diverged_epoch = r.at("diverged_epoch").get<int64_t>();
    res.seconds = r.at("seconds").get<double>();
    res.epochs.clear();
    for (const json& e : r.at("epochs")) res.epochs.push_back(epoch_from(e));
    NL_CHECK(static_cast<int64_t>(res.epochs.size()) == side.at("epoch").get<int64_t>(), "its metrics hold ",
             res.epochs.size(), " epochs but it is from epoch ", side.at("epoch").get<int64_t>());
    res.test_predictions.clear();
    for (const auto& [name, t] : c.tensors.tensors)
      if (name == "test_predictions") res.test_predictions = t.to_int_vector();
  } catch (const json::exception& e) {
    NL_FAIL(what, ": a field is missing or has the wrong type: ", e.what());
  } catch (const std::exception& e) {
    NL_FAIL(what, ": ", e.what());
  }
}

void save_model(const std::string& path, const nl::nn::Module& net) {
  nl::nn::NamedTensorList tensors;
  for (const auto& [name, t] : net.named_parameters()) tensors.emplace_back(name, t);
  for (const auto& [name, t] : net.named_buffers()) tensors.emplace_back(name, t);
  nl::nn::save_safetensors(path, tensors, {{"format", "normlab-model-1"}});
}

}  // namespace compare
