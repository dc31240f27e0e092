// What the crop's border does to the statistics a per-sample norm normalises by: one epoch of the
// training loader's crops under each padding, against the same images without augmentation and
// against the test set, through the comparison network's first conv (the first norm's input).
//
//   bench_crop_pad_stats --data-dir ../shared/data/cifar10-subset [--model model_gn_s0.safetensors]
//
// Per image: the mean and the standard deviation over (C, H, W) of the normalised input, and of
// the first conv's output per group of GroupNorm (--groups, 4; 1 is LayerNorm). Printed as a
// markdown table: the average over images, and paired with the same image's clean statistics the
// median ratio of spreads. Without --model the conv has the recipe's initial weights (seed 0).
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "normlab/nn/models.h"
#include "normlab/core/error.h"
#include "normlab/core/ops.h"
#include "normlab/core/threading.h"
#include "normlab/nn/data.h"
#include "normlab/nn/safetensors.h"

using namespace nl;

namespace {

struct PerImage {
  std::vector<double> in_mean, in_std;    // one per image
  std::vector<double> act_mean, act_std;  // one per (image, group)
};

// Mean and population std of n floats.
std::pair<double, double> moments(const float* p, int64_t n) {
  double s = 0, s2 = 0;
  for (int64_t i = 0; i < n; ++i) s += p[i];
  const double m = s / double(n);
  for (int64_t i = 0; i < n; ++i) s2 += (p[i] - m) * (p[i] - m);
  return {m, std::sqrt(s2 / double(n))};
}

void add_batch(const Tensor& x, const Tensor& w, int64_t groups, PerImage& out) {
  const int64_t N = x.shape()[0], per_image = x.numel() / N;
  const std::vector<float> xv = x.to_vector();
  for (int64_t i = 0; i < N; ++i) {
    const auto [m, s] = moments(xv.data() + i * per_image, per_image);
    out.in_mean.push_back(m), out.in_std.push_back(s);
  }
  const Tensor y = conv2d(x, w, Tensor(), 1, 1);
  const std::vector<float> yv = y.to_vector();
  const int64_t per_group = y.numel() / N / groups;  // channels of a group are contiguous in NCHW
  for (int64_t i = 0; i < N * groups; ++i) {
    const auto [m, s] = moments(yv.data() + i * per_group, per_group);
    out.act_mean.push_back(m), out.act_std.push_back(s);
  }
}

double average(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? NAN : s / double(v.size());
}

double median_ratio(const std::vector<double>& a, const std::vector<double>& b) {
  std::vector<double> r;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) r.push_back(a[i] / b[i]);
  if (r.empty()) return NAN;
  std::nth_element(r.begin(), r.begin() + long(r.size() / 2), r.end());
  return r[r.size() / 2];
}

// Root mean square over images of (mean - clean mean) / clean std: how far the border moves what a
// per-sample norm subtracts, in units of what it divides by.
double rms_shift(const std::vector<double>& m, const std::vector<double>& clean_m,
                 const std::vector<double>& clean_s) {
  double s = 0;
  for (size_t i = 0; i < m.size(); ++i) s += std::pow((m[i] - clean_m[i]) / clean_s[i], 2);
  return m.empty() ? NAN : std::sqrt(s / double(m.size()));
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "bench_crop_pad_stats: per-image statistics of the input and of the first norm's input under each "
      "crop padding, against the same images without augmentation"};
  std::string data_dir = "../shared/data/cifar10-subset", model;
  int64_t groups = 4;
  uint64_t seed = 0;
  app.add_option("--data-dir", data_dir, "CIFAR-10 folder")->capture_default_str();
  app.add_option("--model", model,
                 "A compare_norms model_<norm>_s<seed>.safetensors for the first conv's weights");
  app.add_option("--groups", groups, "Groups of the first norm (1: LayerNorm)")->capture_default_str();
  app.add_option("--seed", seed, "Loader seed (the epoch-0 crops) and, without --model, the weights' seed")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    NL_CHECK(groups == 1 || groups == 2 || groups == 4 || groups == 8, "--groups must be 1, 2, 4 or 8, got ",
             groups);
    set_num_threads(1);
    data::Dataset d = data::load_cifar10(data_dir);
    Tensor w;
    if (!model.empty()) {
      w = nn::load_safetensors(model).at("C1.conv.weight");
    } else {
      Generator g(seed);
      auto net = nl::nn::make_net(nl::nn::parse_norm("gn"), g, nullptr);
      for (const auto& [name, p] : net->named_parameters())
        if (name == "C1.conv.weight") w = p;
    }
    NL_CHECK(w.defined() && w.shape().ndim() == 4 && w.shape()[0] % groups == 0,
             "the first conv's weight (C1.conv.weight) is missing or does not split into ", groups,
             " groups");

    struct Row {
      std::string name;
      PerImage s;
    };
    std::vector<Row> rows;
    const auto epoch = [&](bool augment, data::CropPad pad) {
      data::LoaderOptions o;
      o.batch_size = 256, o.augment = augment, o.crop_pad = pad, o.seed = seed, o.shuffle = false;
      o.background = false;
      data::DataLoader loader(d.train, d.mean, d.std, o);
      loader.start_epoch(0);
      PerImage s;
      for (data::Batch b; loader.next(b);) add_batch(b.images, w, groups, s);
      return s;
    };
    rows.push_back({"training images, no augmentation", epoch(false, data::CropPad::black)});
    for (data::CropPad p : {data::CropPad::black, data::CropPad::mean, data::CropPad::reflect})
      rows.push_back({std::string("training crops, ") + data::crop_pad_name(p) + " padding", epoch(true, p)});
    {
      PerImage s;
      for (int64_t b = 0; b < d.test.N; b += 256)
        add_batch(data::to_tensor(d.test, d.mean, d.std, b, std::min(d.test.N, b + 256)), w, groups, s);
      rows.push_back({"test images", s});
    }
    const PerImage& clean = rows[0].s;
    std::printf(
        "| images | input: mean | std | std / clean std (median) | mean shift / clean std (rms) "
        "| first norm input: mean | std | std / clean std (median) | mean shift / clean std (rms) |\n"
        "|---|---|---|---|---|---|---|---|---|\n");
    for (const Row& r : rows) {
      const bool paired = r.s.in_std.size() == clean.in_std.size();  // the test set is other images
      auto cell = [&](double v) {
        char b[32];
        std::snprintf(b, sizeof b, "%.3f", v);
        return std::string(b);
      };
      const std::string none = "—";
      std::printf("| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", r.name.c_str(),
                  cell(average(r.s.in_mean)).c_str(), cell(average(r.s.in_std)).c_str(),
                  (paired ? cell(median_ratio(r.s.in_std, clean.in_std)) : none).c_str(),
                  (paired ? cell(rms_shift(r.s.in_mean, clean.in_mean, clean.in_std)) : none).c_str(),
                  cell(average(r.s.act_mean)).c_str(), cell(average(r.s.act_std)).c_str(),
                  (paired ? cell(median_ratio(r.s.act_std, clean.act_std)) : none).c_str(),
                  (paired ? cell(rms_shift(r.s.act_mean, clean.act_mean, clean.act_std)) : none).c_str());
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_crop_pad_stats: %s\n", e.what());
    return 1;
  }
}
