#include <algorithm>
#include <numeric>

#include "normlab/core/error.h"
#include "normlab/core/rng.h"
#include "normlab/nn/data.h"

namespace nl::data {

namespace {
// Epoch e draws from its own Philox stream, so an epoch's order and augmentation depend only on
// (seed, e), never on how many draws earlier epochs made.
constexpr uint64_t kEpochStride = uint64_t(1) << 40;

void check_norm(const ImageSet& s, const std::vector<float>& mean, const std::vector<float>& std) {
  NL_CHECK(static_cast<int64_t>(mean.size()) == s.C && static_cast<int64_t>(std.size()) == s.C,
           "normalisation has ", mean.size(), " means and ", std.size(), " stds for ", s.C,
           "-channel images");
  for (float v : std) NL_CHECK(v > 0.0f, "normalisation std must be positive, got ", v);
}
// Reflects an index that a shift of at most the image's extent - 1 moved outside [0, n): -1 -> 1,
// n -> n - 2 (the edge pixel is not repeated).
int64_t reflect_index(int64_t i, int64_t n) { return i < 0 ? -i : (i >= n ? 2 * (n - 1) - i : i); }
}  // namespace

CropPad parse_crop_pad(const std::string& name, const std::string& what) {
  if (name == "black") return CropPad::black;
  if (name == "mean") return CropPad::mean;
  if (name == "reflect") return CropPad::reflect;
  NL_FAIL(what,
          " must be black (0 before normalising), mean (0 after normalising) or reflect (the image mirrored "
          "at its edge), got '",
          name, "'");
}

const char* crop_pad_name(CropPad pad) {
  switch (pad) {
    case CropPad::black: return "black";
    case CropPad::mean: return "mean";
    case CropPad::reflect: return "reflect";
  }
  NL_FAIL("crop_pad_name: invalid CropPad value ", static_cast<int>(pad));
}

Tensor to_tensor(const ImageSet& s, const std::vector<float>& mean, const std::vector<float>& std,
                 int64_t begin, int64_t end) {
  check_norm(s, mean, std);
  if (end < 0) end = s.N;
  NL_CHECK(begin >= 0 && begin <= end && end <= s.N, "to_tensor: range [", begin, ", ", end, ") outside ",
           s.N, " images");
  const int64_t HW = s.H * s.W, n = end - begin;
  std::vector<float> v(static_cast<size_t>(n * s.C * HW));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < s.C; ++c) {
      const float scale = 1.0f / (255.0f * std[c]), shift = mean[c] / std[c];
      const uint8_t* src = s.image(begin + i) + c * HW;
      float* dst = v.data() + (i * s.C + c) * HW;
      for (int64_t j = 0; j < HW; ++j) dst[j] = src[j] * scale - shift;
    }
  return Tensor::from_vector(v, {n, s.C, s.H, s.W});
}

DataLoader::DataLoader(ImageSet set, std::vector<float> mean, std::vector<float> std, LoaderOptions options)
    : set_(std::move(set)), mean_(std::move(mean)), std_(std::move(std)), opt_(options) {
  check_norm(set_, mean_, std_);
  NL_CHECK(opt_.batch_size > 0, "batch size must be positive, got ", opt_.batch_size);
  NL_CHECK(set_.N > 0, "the dataset is empty");
  NL_CHECK(opt_.pad >= 0, "augmentation padding must be >= 0, got ", opt_.pad);
  NL_CHECK(
      opt_.crop_pad == CropPad::black || opt_.crop_pad == CropPad::mean || opt_.crop_pad == CropPad::reflect,
      "invalid crop padding value ", static_cast<int>(opt_.crop_pad));
  NL_CHECK(!opt_.augment || opt_.crop_pad != CropPad::reflect || (opt_.pad < set_.H && opt_.pad < set_.W),
           "reflect padding by ", opt_.pad, " needs images larger than that, got ", set_.H, "x", set_.W);
  NL_CHECK(opt_.shard_count >= 1 && opt_.shard_rank >= 0 && opt_.shard_rank < opt_.shard_count,
           "loader shard ", opt_.shard_rank, " of ", opt_.shard_count, " does not exist");
  // Every shard needs a row of every batch (a BatchNorm of an empty slice has no statistics).
  const int64_t K = opt_.shard_count, tail = set_.N % opt_.batch_size;
  NL_CHECK(std::min(opt_.batch_size, set_.N) >= K, "batch size ", std::min(opt_.batch_size, set_.N),
           " leaves some of the ", K, " processes without images: use a batch of at least ", K);
  NL_CHECK(opt_.drop_last || tail == 0 || set_.N < opt_.batch_size || tail >= K,
           "the epoch's last batch has ", tail, " images, fewer than the ", K,
           " processes: drop it (drop_last, --drop-last) or pick a batch size ",
           "that leaves no remainder below ", K);
}

DataLoader::~DataLoader() { stop(); }

int64_t DataLoader::batches_per_epoch() const {
  return opt_.drop_last ? set_.N / opt_.batch_size : (set_.N + opt_.batch_size - 1) / opt_.batch_size;
}

void DataLoader::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    cancel_ = true;
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
}

Batch DataLoader::make_batch(int64_t b, const std::vector<int64_t>& order, Generator& gen) const {
  const int64_t begin = b * opt_.batch_size, end = std::min(set_.N, begin + opt_.batch_size);
  const int64_t G = end - begin, C = set_.C, H = set_.H, W = set_.W, HW = H * W;
  // This shard's rows [lo, hi) of the G-row batch.
  const int64_t lo = G * opt_.shard_rank / opt_.shard_count,
                hi = G * (opt_.shard_rank + 1) / opt_.shard_count;
  const int64_t B = hi - lo;
  std::vector<float> x(static_cast<size_t>(B * C * HW));
  std::vector<int32_t> y(static_cast<size_t>(B));
  Batch out;
  out.global_size = G;
  for (int64_t g = 0; g < G; ++g) {
    // Every row's draws are made, kept or not, so each shard's stream stays the one process's.
    // Crop offset in [0, 2 pad] of the padded image, i.e. a shift in [-pad, pad].
    int64_t dy = 0, dx = 0;
    bool flip = false;
    if (opt_.augment) {
      dy = static_cast<int64_t>(gen.next_below(2 * opt_.pad + 1)) - opt_.pad;
      dx = static_cast<int64_t>(gen.next_below(2 * opt_.pad + 1)) - opt_.pad;
      flip = gen.next_u32() & 1u;
    }
    if (g < lo || g >= hi) continue;
    const int64_t i = g - lo;
    const int64_t idx = order[static_cast<size_t>(begin + g)];
    out.indices.push_back(idx);
    y[static_cast<size_t>(i)] = set_.labels[static_cast<size_t>(idx)];
    const uint8_t* img = set_.image(idx);
    const bool reflect = opt_.crop_pad == CropPad::reflect;
    for (int64_t c = 0; c < C; ++c) {
      const float scale = 1.0f / (255.0f * std_[c]), shift = mean_[c] / std_[c];
      // The mean colour is exactly 0 after normalising; computed from pixels it would not be.
      const float fill = opt_.crop_pad == CropPad::mean ? 0.0f : -shift;
      float* dst = x.data() + (i * C + c) * HW;
      for (int64_t h = 0; h < H; ++h)
        for (int64_t w = 0; w < W; ++w) {
          int64_t sh = h + dy, sw = (flip ? W - 1 - w : w) + dx;
          if (reflect) sh = reflect_index(sh, H), sw = reflect_index(sw, W);
          dst[h * W + w] =
              (sh >= 0 && sh < H && sw >= 0 && sw < W) ? img[c * HW + sh * W + sw] * scale - shift : fill;
        }
    }
  }
  out.images = Tensor::from_vector(x, {B, C, H, W});
  out.labels = Tensor::from_ints(y, {B});
  return out;
}

void DataLoader::prepare(int64_t epoch) {
  gen_ = std::make_unique<Generator>(opt_.seed);
  gen_->set_state(opt_.seed, static_cast<uint64_t>(epoch) * kEpochStride);
  order_.resize(static_cast<size_t>(set_.N));
  std::iota(order_.begin(), order_.end(), 0);
  if (opt_.shuffle) {
    for (size_t i = order_.size(); i > 1; --i) std::swap(order_[i - 1], order_[gen_->next_below(i)]);
  }
  next_batch_ = 0;
}

void DataLoader::produce() {
  try {
    for (int64_t b = 0; b < batches_per_epoch(); ++b) {
      Batch batch = make_batch(b, order_, *gen_);
      std::unique_lock<std::mutex> lock(mu_);
      // Two batches ahead is enough to hide preparation behind a training step.
      cv_.wait(lock, [&] { return cancel_ || ready_.size() < 2; });
      if (cancel_) return;
      ready_.push_back(std::move(batch));
      cv_.notify_all();
    }
  } catch (...) {
    std::lock_guard<std::mutex> lock(mu_);
    error_ = std::current_exception();
  }
  std::lock_guard<std::mutex> lock(mu_);
  done_ = true;
  cv_.notify_all();
}

void DataLoader::start_epoch(int64_t epoch) {
  stop();
  ready_.clear();
  error_ = nullptr;
  cancel_ = false;
  done_ = false;
  prepare(epoch);
  if (opt_.background) worker_ = std::thread([this] { produce(); });
}

bool DataLoader::next(Batch& out) {
  NL_CHECK(gen_ != nullptr, "DataLoader: call start_epoch() before next()");
  if (!opt_.background) {
    if (next_batch_ >= batches_per_epoch()) return false;
    out = make_batch(next_batch_++, order_, *gen_);
    return true;
  }
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return !ready_.empty() || done_ || error_; });
  if (error_) std::rethrow_exception(error_);
  if (ready_.empty()) return false;
  out = std::move(ready_.front());
  ready_.pop_front();
  cv_.notify_all();
  return true;
}

}  // namespace nl::data
