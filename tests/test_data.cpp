// Dataset readers (the real CIFAR-10 subset, Fashion-MNIST, corrupt files), the download path
// against a local HTTP server, and the loader's determinism and augmentation.
#include <archive.h>
#include <archive_entry.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>

#include "helpers.h"
#include "http_server.h"
#include "normlab/core/error.h"
#include "normlab/nn/data.h"

using namespace nl;
using namespace nl::data;
using nl::test::LocalHttpServer;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

const std::string kSubset = NORMLAB_CIFAR_SUBSET;

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / ("normlab-test-" + std::to_string(::getpid()) + "-" +
                                         std::to_string(counter()++));
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  static int& counter() {
    static int c = 0;
    return c;
  }
};

void write_bytes(const fs::path& p, const std::string& bytes) {
  std::ofstream(p, std::ios::binary) << bytes;
}

// n records whose label is i % 10 and whose pixels encode the record and channel.
std::string cifar_records(int n, int label_offset = 0) {
  std::string s;
  for (int i = 0; i < n; ++i) {
    s += static_cast<char>((i + label_offset) % 10);
    for (int j = 0; j < 3072; ++j) s += static_cast<char>((i * 7 + j) % 251);
  }
  return s;
}

std::string make_cifar_tarball(const fs::path& where) {
  const fs::path tar = where / "cifar-10-binary.tar.gz";
  archive* a = archive_write_new();
  archive_write_add_filter_gzip(a);
  archive_write_set_format_pax_restricted(a);
  archive_write_open_filename(a, tar.c_str());
  auto add = [&](const std::string& name, const std::string& body) {
    archive_entry* e = archive_entry_new();
    archive_entry_set_pathname(e, ("cifar-10-batches-bin/" + name).c_str());
    archive_entry_set_size(e, static_cast<la_int64_t>(body.size()));
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, 0644);
    archive_write_header(a, e);
    archive_write_data(a, body.data(), body.size());
    archive_entry_free(e);
  };
  for (int b = 1; b <= 5; ++b) add("data_batch_" + std::to_string(b) + ".bin", cifar_records(4, b));
  add("test_batch.bin", cifar_records(3));
  add("batches.meta.txt", "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n");
  archive_write_close(a);
  archive_write_free(a);
  std::ifstream in(tar, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Only the pre-existing entries remain: no dataset, no temporary folder.
void require_nothing_written(const fs::path& dir) {
  for (const auto& e : fs::directory_iterator(dir)) FAIL("left behind: " << e.path());
}

}  // namespace

TEST_CASE("the real CIFAR-10 subset reads with its known counts and first labels", "[data][cifar]") {
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

TEST_CASE("corrupt CIFAR-10 files are rejected with the file named", "[data][cifar][errors]") {
  TempDir t;
  write_bytes(t.path / "short.bin", cifar_records(2).substr(0, 3073 + 100));
  CHECK_THROWS_WITH(read_cifar10_file((t.path / "short.bin").string()),
                    Contains("short.bin has 3173 bytes, which is not a positive multiple of the 3073-byte record"));
  std::string bad = cifar_records(3);
  bad[3073] = 10;  // second record's label
  write_bytes(t.path / "label.bin", bad);
  CHECK_THROWS_WITH(read_cifar10_file((t.path / "label.bin").string()),
                    Contains("label.bin: record 1 has label 10"));
  CHECK_THROWS_WITH(read_cifar10_file((t.path / "absent.bin").string()), Contains("cannot open"));
  CHECK_THROWS_WITH(load_cifar10(t.path.string()), Contains("--download"));
  CHECK_FALSE(cifar10_present(t.path.string()));
}

TEST_CASE("Fashion-MNIST reads from the Debian package", "[data][fashion]") {
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

TEST_CASE("corrupt IDX files are rejected with the file named", "[data][fashion][errors]") {
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

TEST_CASE("download fetches, verifies and extracts from a local server", "[data][download]") {
  TempDir src, dst;
  std::string tarball = make_cifar_tarball(src.path);
  LocalHttpServer server("/cifar-10-binary.tar.gz", tarball);
  DownloadOptions o;
  o.url = server.url();
  o.md5 = md5_file((src.path / "cifar-10-binary.tar.gz").string());
  int64_t last_seen = 0;
  o.progress = [&](int64_t now, int64_t) { last_seen = now; };
  download_cifar10(dst.path.string(), o);
  CHECK(last_seen == static_cast<int64_t>(tarball.size()));
  Dataset d = load_cifar10(dst.path.string());
  CHECK(d.train.N == 20);
  CHECK(d.test.N == 3);
  CHECK(d.train.labels[0] == 1);  // data_batch_1 was written with label offset 1
  // Only the dataset folder is there: the temporary folder is gone.
  int entries = 0;
  for (const auto& e : fs::directory_iterator(dst.path)) {
    ++entries;
    CHECK(e.path().filename() == "cifar-10-batches-bin");
  }
  CHECK(entries == 1);
  CHECK_THROWS_WITH(download_cifar10(dst.path.string(), o), Contains("already exists"));
}

TEST_CASE("a failed download leaves nothing behind", "[data][download][errors]") {
  TempDir src, dst;
  std::string tarball = make_cifar_tarball(src.path);
  const std::string good_md5 = md5_file((src.path / "cifar-10-binary.tar.gz").string());
  DownloadOptions o;
  o.timeout_seconds = 20;
  o.connect_timeout_seconds = 5;
  SECTION("wrong checksum") {
    LocalHttpServer server("/cifar-10-binary.tar.gz", tarball);
    o.url = server.url();
    o.md5 = std::string(32, '0');
    CHECK_THROWS_WITH(download_cifar10(dst.path.string(), o), Contains("is corrupt: MD5 " + good_md5));
  }
  SECTION("truncated transfer") {
    LocalHttpServer server("/cifar-10-binary.tar.gz", tarball, /*truncate=*/true);
    o.url = server.url();
    o.md5 = good_md5;
    CHECK_THROWS_WITH(download_cifar10(dst.path.string(), o), Contains("failed"));
  }
  SECTION("HTTP 404") {
    LocalHttpServer server("/cifar-10-binary.tar.gz", tarball);
    o.url = server.url() + ".missing";
    CHECK_THROWS_WITH(download_cifar10(dst.path.string(), o), Contains("404"));
  }
  SECTION("unreachable host") {
    o.url = LocalHttpServer::unreachable_url();
    CHECK_THROWS_WITH(download_cifar10(dst.path.string(), o), Contains("failed"));
  }
  SECTION("not an archive") {
    LocalHttpServer server("/cifar-10-binary.tar.gz", std::string(5000, 'x'));
    o.url = server.url();
    o.md5.clear();
    CHECK_THROWS_AS(download_cifar10(dst.path.string(), o), nl::Error);
  }
  require_nothing_written(dst.path);
}

TEST_CASE("the loader is deterministic per (seed, epoch) with or without its worker thread", "[data][loader]") {
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
  auto a = epoch_of(1, 3, true), b = epoch_of(1, 3, false), c = epoch_of(1, 4, true), e = epoch_of(2, 3, true);
  CHECK(a == b);
  CHECK(a.second != c.second);
  CHECK(a.second != e.second);
  std::vector<int64_t> sorted = a.second;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 300; ++i) REQUIRE(sorted[i] == i);  // a permutation
}

TEST_CASE("augmented images are shifted, zero-padded, possibly flipped copies", "[data][loader]") {
  Dataset d = load_cifar10(kSubset);
  ImageSet small = d.train.head(40);
  LoaderOptions o;
  o.batch_size = 40;
  o.augment = true;
  o.seed = 5;
  DataLoader loader(small, d.mean, d.std, o);
  loader.start_epoch(1);
  Batch b;
  REQUIRE(loader.next(b));
  std::vector<float> x = b.images.to_vector();
  int flipped = 0, shifted = 0;
  for (int64_t i = 0; i < 40; ++i) {
    const uint8_t* img = small.image(b.indices[i]);
    bool found = false;
    for (int flip = 0; flip < 2 && !found; ++flip)
      for (int dy = -4; dy <= 4 && !found; ++dy)
        for (int dx = -4; dx <= 4 && !found; ++dx) {
          bool match = true;
          for (int c = 0; c < 3 && match; ++c)
            for (int h = 0; h < 32 && match; ++h)
              for (int w = 0; w < 32 && match; ++w) {
                int sh = h + dy, sw = (flip ? 31 - w : w) + dx;
                float v = (sh >= 0 && sh < 32 && sw >= 0 && sw < 32) ? img[c * 1024 + sh * 32 + sw] : 0;
                float expected = (v / 255.0f - d.mean[c]) / d.std[c];
                match = std::abs(x[((i * 3 + c) * 32 + h) * 32 + w] - expected) < 1e-5f;
              }
          if (match) found = true, flipped += flip, shifted += (dy != 0 || dx != 0);
        }
    INFO("image " << i);
    REQUIRE(found);
  }
  CHECK(flipped > 5);   // about half of 40
  CHECK(flipped < 35);
  CHECK(shifted > 30);  // 80 of 81 shifts move the image
}
