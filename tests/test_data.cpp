// Dataset readers (the real CIFAR-10 subset, Fashion-MNIST, corrupt files) and the loader's
// determinism and augmentation. The download path is in test_download.cpp.
#include <zlib.h>

#include <filesystem>
#include <fstream>

#include "data_helpers.h"
#include "helpers.h"
#include "normlab/core/error.h"
#include "normlab/nn/data.h"

using namespace nl;
using namespace nl::data;
using namespace nl::test;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {
const std::string kSubset = NORMLAB_CIFAR_SUBSET;
}  // namespace

TEST_CASE("the real CIFAR-10 subset reads with its known counts and first labels", "[data][cifar][quick]") {
  Dataset d = load_cifar10(kSubset);
  CHECK(d.train.N == 5170);
  CHECK(d.test.N == 1017);
  CHECK(d.train.C == 3);
  CHECK(d.classes[0] == "airplane");
  CHECK(d.classes[9] == "truck");
  std::vector<int32_t> first(d.train.labels.begin(), d.train.labels.begin() + 10);
  CHECK(first == std::vector<int32_t>{6, 9, 9, 4, 1, 1, 2, 7, 8, 3});
  std::vector<int32_t> test_first(d.test.labels.begin(), d.test.labels.begin() + 10);
  CHECK(test_first == std::vector<int32_t>{3, 8, 8, 0, 6, 6, 1, 6, 3, 1});
  // data_batch_2 starts right after data_batch_1's 1102 records.
  ImageSet b2 = read_cifar10_file(kSubset + "/cifar-10-batches-bin/data_batch_2.bin");
  CHECK(b2.N == 1017);
  CHECK(std::equal(b2.pixels.begin(), b2.pixels.begin() + 3072, d.train.image(1102)));
  for (int c = 0; c < 10; ++c) CHECK(std::count(d.test.labels.begin(), d.test.labels.end(), c) >= 83);
}

TEST_CASE("corrupt CIFAR-10 files are rejected with the file named", "[data][cifar][errors][quick]") {
  TempDir t;
  write_bytes(t.path / "short.bin", cifar_records(2).substr(0, 3073 + 100));
  CHECK_THROWS_WITH(
      read_cifar10_file((t.path / "short.bin").string()),
      Contains("short.bin has 3173 bytes, which is not a positive multiple of the 3073-byte record"));
  std::string bad = cifar_records(3);
  bad[3073] = 10;  // second record's label
  write_bytes(t.path / "label.bin", bad);
  CHECK_THROWS_WITH(read_cifar10_file((t.path / "label.bin").string()),
                    Contains("label.bin: record 1 has label 10"));
  CHECK_THROWS_WITH(read_cifar10_file((t.path / "absent.bin").string()),
                    Contains("absent.bin does not exist"));
  CHECK_THROWS_WITH(load_cifar10(t.path.string()), Contains("--download"));
  CHECK_FALSE(cifar10_present(t.path.string()));
}

TEST_CASE("Fashion-MNIST reads from the Debian package", "[data][fashion][quick]") {
  if (!fs::exists(std::string(kFashionMnistDir) + "/train-images-idx3-ubyte.gz")) {
    FAIL("dataset-fashion-mnist is not installed: scripts/install-deps.sh installs it");
  }
  Dataset d = load_fashion_mnist();
  CHECK(d.train.N == 60000);
  CHECK(d.test.N == 10000);
  CHECK(d.train.C == 1);
  CHECK(d.train.H == 28);
  // The first training labels of Fashion-MNIST: ankle boot, T-shirt/top, T-shirt/top, dress.
  CHECK(std::vector<int32_t>(d.train.labels.begin(), d.train.labels.begin() + 4) ==
        std::vector<int32_t>{9, 0, 0, 3});
}

TEST_CASE("corrupt IDX files are rejected with the file named", "[data][fashion][errors][quick]") {
  TempDir t;
  auto gz = [&](const std::string& name, const std::string& bytes) {
    gzFile f = gzopen((t.path / name).c_str(), "wb");
    gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
    gzclose(f);
    return (t.path / name).string();
  };
  std::vector<int64_t> dims;
  std::string ok = std::string("\0\0\x08\x01\0\0\0\x03", 8) + "abc";
  CHECK(read_idx(gz("ok.gz", ok), dims) == std::vector<uint8_t>{'a', 'b', 'c'});
  CHECK(dims == std::vector<int64_t>{3});
  CHECK_THROWS_WITH(read_idx(gz("magic.gz", std::string("\x12\x34\x08\x01\0\0\0\x03", 8) + "abc"), dims),
                    Contains("magic.gz has a bad magic number"));
  CHECK_THROWS_WITH(read_idx(gz("short.gz", std::string("\0\0\x08\x01\0\0\0\x09", 8) + "abc"), dims),
                    Contains("short.gz holds 3 data bytes but its header declares 9"));
  write_bytes(t.path / "notgz.gz", std::string("\x1f\x8b garbage", 10));
  CHECK_THROWS_AS(read_idx((t.path / "notgz.gz").string(), dims), nl::Error);
  CHECK_THROWS_WITH(load_fashion_mnist(t.path.string()), Contains("dataset-fashion-mnist"));
}

TEST_CASE("the loader is deterministic per (seed, epoch) with or without its worker thread",
          "[data][loader][quick]") {
  Dataset d = load_cifar10(kSubset);
  ImageSet small = d.train.head(300);
  auto epoch_of = [&](uint64_t seed, int64_t epoch, bool background) {
    LoaderOptions o;
    o.batch_size = 64;
    o.augment = true;
    o.seed = seed;
    o.background = background;
    DataLoader loader(small, d.mean, d.std, o);
    loader.start_epoch(epoch);
    std::vector<float> all;
    std::vector<int64_t> idx;
    Batch b;
    int batches = 0;
    while (loader.next(b)) {
      auto v = b.images.to_vector();
      all.insert(all.end(), v.begin(), v.end());
      idx.insert(idx.end(), b.indices.begin(), b.indices.end());
      ++batches;
    }
    CHECK(batches == 5);  // 300 / 64, last batch partial
    return std::make_pair(all, idx);
  };
  auto a = epoch_of(1, 3, true), b = epoch_of(1, 3, false), c = epoch_of(1, 4, true),
       e = epoch_of(2, 3, true);
  CHECK(a == b);
  CHECK(a.second != c.second);
  CHECK(a.second != e.second);
  std::vector<int64_t> sorted = a.second;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 300; ++i) REQUIRE(sorted[i] == i);  // a permutation
}

TEST_CASE("drop_last skips the partial batch and keeps the order of the rest", "[data][loader][quick]") {
  Dataset d = load_cifar10(kSubset);
  ImageSet small = d.train.head(300);
  auto indices = [&](bool drop_last, bool background) {
    LoaderOptions o;
    o.batch_size = 64;
    o.seed = 5;
    o.drop_last = drop_last;
    o.background = background;
    DataLoader loader(small, d.mean, d.std, o);
    CHECK(loader.batches_per_epoch() == (drop_last ? 4 : 5));
    loader.start_epoch(2);
    std::vector<int64_t> idx;
    Batch b;
    while (loader.next(b)) {
      CHECK(b.images.shape()[0] == (drop_last || idx.size() < 256 ? 64 : 44));
      idx.insert(idx.end(), b.indices.begin(), b.indices.end());
    }
    return idx;
  };
  const std::vector<int64_t> all = indices(false, true), kept = indices(true, true);
  REQUIRE(kept.size() == 256);
  CHECK(std::equal(kept.begin(), kept.end(), all.begin()));
  CHECK(indices(true, false) == kept);
}

TEST_CASE("data-parallel shards of every batch put together are the one-process batch, augmentation included",
          "[data][loader][dist][quick]") {
  Dataset d = load_cifar10(kSubset);
  ImageSet small = d.train.head(203);  // batches of 64: 64 64 64 11, the last split 3 / 4 / 4
  auto epoch = [&](int64_t rank, int64_t count) {
    LoaderOptions o;
    o.batch_size = 64, o.augment = true, o.seed = 9, o.shard_rank = rank, o.shard_count = count;
    DataLoader loader(small, d.mean, d.std, o);
    loader.start_epoch(3);
    std::vector<Batch> out;
    for (Batch b; loader.next(b);) out.push_back(b);
    return out;
  };
  const std::vector<Batch> one = epoch(0, 1);
  std::vector<std::vector<Batch>> shards;
  for (int64_t r = 0; r < 3; ++r) shards.push_back(epoch(r, 3));
  REQUIRE(one.size() == 4);
  for (size_t b = 0; b < one.size(); ++b) {
    std::vector<float> x;
    std::vector<int32_t> y;
    std::vector<int64_t> idx;
    for (int64_t r = 0; r < 3; ++r) {
      const Batch& s = shards[size_t(r)][b];
      const int64_t G = one[b].images.size(0);
      CHECK(s.global_size == G);
      CHECK(s.images.size(0) == G * (r + 1) / 3 - G * r / 3);  // rows [G r / K, G (r + 1) / K)
      const std::vector<float> sx = s.images.to_vector();
      const std::vector<int32_t> sy = s.labels.to_int_vector();
      x.insert(x.end(), sx.begin(), sx.end()), y.insert(y.end(), sy.begin(), sy.end());
      idx.insert(idx.end(), s.indices.begin(), s.indices.end());
    }
    // The same images in the same order, cropped and flipped alike: bit for bit.
    CHECK(idx == one[b].indices);
    CHECK(y == one[b].labels.to_int_vector());
    CHECK(x == one[b].images.to_vector());
  }
  // A shard left without rows is refused, naming the remedy.
  LoaderOptions o;
  o.batch_size = 64, o.shard_count = 3;
  CHECK_THROWS_WITH(DataLoader(small.head(194), d.mean, d.std, o),  // last batch: 2 images for 3 processes
                    Contains("last batch has 2 images, fewer than the 3 processes"));
  o.drop_last = true;
  CHECK_NOTHROW(DataLoader(small.head(194), d.mean, d.std, o));
  o.batch_size = 2;
  CHECK_THROWS_WITH(DataLoader(small, d.mean, d.std, o), Contains("batch size 2 leaves some"));
  o.shard_rank = 3, o.batch_size = 64;
  CHECK_THROWS_WITH(DataLoader(small, d.mean, d.std, o), Contains("shard 3 of 3 does not exist"));
}

// One row per crop padding: the border pixels must be exactly the chosen fill, the image pixels
// exactly the image's own normalised pixels (to_tensor computes them the loader's way).
TEST_CASE("augmented images are shifted, possibly flipped copies whose border is exactly the chosen fill",
          "[data][loader][quick]") {
  Dataset d = load_cifar10(kSubset);
  ImageSet small = d.train.head(40);
  const std::vector<float> clean = to_tensor(small, d.mean, d.std).to_vector();
  ImageSet black = small.head(1);
  std::fill(black.pixels.begin(), black.pixels.end(), uint8_t(0));
  const std::vector<float> black_px = to_tensor(black, d.mean, d.std).to_vector();  // channel c at c * 1024
  const auto reflect = [](int i) { return i < 0 ? -i : (i > 31 ? 62 - i : i); };
  for (CropPad pad : {CropPad::black, CropPad::mean, CropPad::reflect}) {
    DYNAMIC_SECTION(crop_pad_name(pad)) {
      LoaderOptions o;
      o.batch_size = 40;
      o.augment = true;
      o.crop_pad = pad;
      o.seed = 5;
      DataLoader loader(small, d.mean, d.std, o);
      loader.start_epoch(1);
      Batch b;
      REQUIRE(loader.next(b));
      const std::vector<float> x = b.images.to_vector();
      int flipped = 0, shifted = 0;
      int64_t border = 0;
      for (int64_t i = 0; i < 40; ++i) {
        const float* img = clean.data() + b.indices[i] * 3 * 1024;
        bool found = false;
        for (int flip = 0; flip < 2 && !found; ++flip)
          for (int dy = -4; dy <= 4 && !found; ++dy)
            for (int dx = -4; dx <= 4 && !found; ++dx) {
              bool match = true;
              int64_t outside = 0;
              for (int c = 0; c < 3 && match; ++c)
                for (int h = 0; h < 32 && match; ++h)
                  for (int w = 0; w < 32 && match; ++w) {
                    int sh = h + dy, sw = (flip ? 31 - w : w) + dx;
                    const bool in = sh >= 0 && sh < 32 && sw >= 0 && sw < 32;
                    float expected = 0.0f;  // the mean colour: 0 after normalising, exactly
                    if (in)
                      expected = img[c * 1024 + sh * 32 + sw];
                    else if (pad == CropPad::black)
                      expected = black_px[c * 1024];
                    else if (pad == CropPad::reflect)
                      expected = img[c * 1024 + reflect(sh) * 32 + reflect(sw)];
                    outside += !in;
                    match = x[((i * 3 + c) * 32 + h) * 32 + w] == expected;
                  }
              if (match) found = true, flipped += flip, shifted += (dy != 0 || dx != 0), border += outside;
            }
        INFO(crop_pad_name(pad) << " padding, image " << i);
        REQUIRE(found);
      }
      CHECK(flipped > 5);  // about half of 40
      CHECK(flipped < 35);
      CHECK(shifted > 30);                 // 80 of 81 shifts move the image
      CHECK(border > 40 * 3 * 1024 / 10);  // about 13% of the pixels are border: they were all checked
    }
  }
  CHECK(parse_crop_pad("reflect") == CropPad::reflect);
  CHECK_THROWS_WITH(parse_crop_pad("zero"),
                    Contains("the crop padding must be black") && Contains("got 'zero'"));
  LoaderOptions o;
  o.augment = true, o.crop_pad = CropPad::reflect, o.pad = 32;
  CHECK_THROWS_WITH(DataLoader(small, d.mean, d.std, o),
                    Contains("reflect padding by 32 needs images larger"));
}
