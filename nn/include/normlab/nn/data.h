#pragma once
// Datasets (CIFAR-10 binary version, Fashion-MNIST IDX), download, and a batch loader with
// seeded shuffling, per-sample augmentation, per-channel normalisation and a background thread
// that prepares the next batch while the current step runs.
#include <array>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "normlab/core/rng.h"
#include "normlab/core/tensor.h"

namespace nl::data {

// uint8 images [N, C, H, W] with int labels.
struct ImageSet {
  int64_t N = 0, C = 0, H = 0, W = 0;
  std::vector<uint8_t> pixels;
  std::vector<int32_t> labels;
  const uint8_t* image(int64_t i) const { return pixels.data() + i * C * H * W; }
  // The first n images (all when n <= 0 or n >= N).
  ImageSet head(int64_t n) const;
};

struct Dataset {
  std::string name;
  ImageSet train, test;
  std::vector<std::string> classes;
  std::vector<float> mean, std;  // per channel, of pixels scaled to [0, 1]
  bool augment = false;          // the recipe's crop + flip suits this dataset
};

// --- CIFAR-10 (binary version) -------------------------------------------------------------------

// One file of 3073-byte records (label, 1024 R, 1024 G, 1024 B). Any record count; a size that is
// not a multiple of 3073 or a label above 9 is an error naming the file.
ImageSet read_cifar10_file(const std::string& path);
// The same on bytes in memory; `path` names the source in errors.
ImageSet parse_cifar10(const uint8_t* bytes, size_t n, const std::string& path);
// data_dir contains cifar-10-batches-bin/ with data_batch_1..5.bin, test_batch.bin and
// batches.meta.txt. A missing folder is an error that says how to get it (--download).
Dataset load_cifar10(const std::string& data_dir);
bool cifar10_present(const std::string& data_dir);

inline constexpr const char* kCifar10Url = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz";
inline constexpr const char* kCifar10Md5 = "c32a1d4ab5d03f1284b67883e8d87530";

struct DownloadOptions {
  std::string url = kCifar10Url;
  std::string md5 = kCifar10Md5;
  long connect_timeout_seconds = 20;
  // A slow but healthy link is fine; a stalled one is not: abort when fewer than
  // low_speed_bytes per second arrive for low_speed_seconds. timeout_seconds caps the whole
  // transfer when above 0 (default: no cap).
  long low_speed_bytes = 1024;
  long low_speed_seconds = 60;
  long timeout_seconds = 0;
  long max_redirects = 5;
  // Caps, against a hostile server or archive: the body (the published 170,052,171 bytes plus
  // a margin), each extracted member (the largest is 30,730,000) and all members together.
  int64_t max_body_bytes = 200'000'000;
  int64_t max_member_bytes = 40'000'000;
  int64_t max_extracted_bytes = 200'000'000;
  // Called with (bytes so far, total or 0 if unknown); may be empty.
  std::function<void(int64_t, int64_t)> progress;
  // Polled during the transfer; true aborts it (e.g. on Ctrl-C), leaving nothing behind.
  std::function<bool()> cancelled;
};

// Downloads the CIFAR-10 binary tarball, verifies its MD5, extracts it into a temporary folder
// inside data_dir and renames it to data_dir/cifar-10-batches-bin only when everything succeeded:
// a failure (unreachable host, HTTP error, truncated transfer, wrong checksum, bad archive, a cap
// exceeded, a link or device in the archive, cancellation) throws and leaves nothing behind.
// Temporary folders that a killed earlier download left in data_dir are removed first.
void download_cifar10(const std::string& data_dir, const DownloadOptions& options = {});
// Extracts a (compressed) tar archive into dest with the checks and caps of download_cifar10
// (regular files and folders only, nothing outside dest, member and total size limits).
void extract_archive(const std::string& tarball, const std::string& dest,
                     const DownloadOptions& options = {});
// Lower-case hex MD5 of a file's bytes.
std::string md5_file(const std::string& path);

// --- Fashion-MNIST (IDX, gzip) -------------------------------------------------------------------

// Where Debian's dataset-fashion-mnist package installs the files.
inline constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";
// Reads an IDX file (gzip-compressed or plain): magic 0x0000080N, N big-endian extents, uint8 data.
std::vector<uint8_t> read_idx(const std::string& path, std::vector<int64_t>& dims);
Dataset load_fashion_mnist(const std::string& dir = kFashionMnistDir);

// --- Loader -------------------------------------------------------------------------------------

// What fills the border that the random crop shifts into view (docs/results.md, "The crop's
// padding"). It matters: the per-sample norms normalise each image by its own statistics, and a
// border moves them in training only (test images have none).
//   black:   0 before normalising (torchvision's RandomCrop(padding=4) before Normalize)
//   mean:    0 after normalising, the dataset's mean colour
//   reflect: the image mirrored at its edge without repeating it (numpy's and torch's "reflect")
enum class CropPad { black, mean, reflect };
inline constexpr CropPad kDefaultCropPad = CropPad::reflect;
// "black", "mean", "reflect"; anything else throws "<what> must be black (...), mean (...) or
// reflect, got '<name>'" (what: the flag or field the name came from).
CropPad parse_crop_pad(const std::string& name, const std::string& what = "the crop padding");
const char* crop_pad_name(CropPad pad);

struct LoaderOptions {
  int64_t batch_size = 128;
  bool shuffle = true;
  bool augment = false;  // random crop from the image padded by `pad` (filled as crop_pad), horizontal flip
  int64_t pad = 4;
  CropPad crop_pad = kDefaultCropPad;
  uint64_t seed = 0;       // shuffling and augmentation stream; the same for every model trained
  bool drop_last = false;  // skip the last batch when it is smaller than batch_size
  bool background = true;  // prepare batches on a worker thread
  // Data parallel: this process is shard_rank of shard_count and gets its slice of every batch,
  // rows [B r / K, B (r + 1) / K) of the batch one process would get (B rows, K shards), with
  // the same augmentation draws: the K slices together are exactly the one-process batch.
  int64_t shard_rank = 0;
  int64_t shard_count = 1;
};

struct Batch {
  Tensor images;                 // float32 [B, C, H, W], normalised
  Tensor labels;                 // int32 [B]
  std::vector<int64_t> indices;  // positions in the ImageSet
  int64_t global_size = 0;       // rows of the whole batch over every shard (= B with one shard)
};

// Iterates one epoch at a time: start_epoch(e), then next() until it returns false. Epoch e's
// order and augmentation depend only on (seed, e), so runs are reproducible and every model sees
// the same stream.
class DataLoader {
 public:
  // Keeps its own copy of the images (a copy costs far less than one epoch and leaves no
  // lifetime to get wrong); std::move a set in to avoid it.
  DataLoader(ImageSet set, std::vector<float> mean, std::vector<float> std, LoaderOptions options);
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  void start_epoch(int64_t epoch);
  bool next(Batch& out);
  int64_t batches_per_epoch() const;
  int64_t size() const { return set_.N; }

 private:
  void stop();
  void prepare(int64_t epoch);  // the epoch's order and augmentation stream
  void produce();               // worker: prepares every batch of the epoch in order
  Batch make_batch(int64_t b, const std::vector<int64_t>& order, Generator& gen) const;

  const ImageSet set_;
  std::vector<float> mean_, std_;
  LoaderOptions opt_;
  // Hand-off between the worker and the consumer.
  std::thread worker_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Batch> ready_;
  std::exception_ptr error_;
  bool done_ = true, cancel_ = false;
  std::vector<int64_t> order_;
  std::unique_ptr<Generator> gen_;
  int64_t next_batch_ = 0;  // without a worker
};

// Normalises a whole ImageSet into one tensor (evaluation data).
Tensor to_tensor(const ImageSet& set, const std::vector<float>& mean, const std::vector<float>& std,
                 int64_t begin = 0, int64_t end = -1);

}  // namespace nl::data
