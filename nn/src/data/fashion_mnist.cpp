// Fashion-MNIST reader: IDX files, gzip-compressed as Debian's dataset-fashion-mnist ships them.
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>

#include "file_checks.h"
#include "normlab/core/error.h"
#include "normlab/nn/data.h"

namespace nl::data {
namespace fs = std::filesystem;

namespace {
constexpr uintmax_t kMaxIdxFile = 256ull << 20;  // on disk (Fashion-MNIST's largest: 26 MB)
constexpr uint64_t kMaxIdxData = 256ull << 20;   // declared by the header, after gunzip

// Reads exactly n bytes (fewer only at the end of the data); throws on a gzip error.
size_t gz_read_exact(gzFile f, uint8_t* out, size_t n, const std::string& path) {
  size_t done = 0;
  while (done < n) {
    const unsigned chunk = static_cast<unsigned>(std::min<size_t>(n - done, 1u << 20));
    const int got = gzread(f, out + done, chunk);
    if (got < 0) {
      int err = 0;
      const char* msg = gzerror(f, &err);
      NL_FAIL("IDX file ", path, " is not readable gzip: ", msg ? msg : "unknown error");
    }
    if (got == 0) break;
    done += static_cast<size_t>(got);
  }
  return done;
}
}  // namespace

std::vector<uint8_t> read_idx(const std::string& path, std::vector<int64_t>& dims) {
  check_data_file(path, "IDX file", kMaxIdxFile);
  // gzread reads plain files too, so .gz and uncompressed IDX both work. The header is read and
  // checked first, then exactly the bytes it declares: a gzip bomb is never inflated past that.
  gzFile f = gzopen(path.c_str(), "rb");
  NL_CHECK(f != nullptr, "cannot open IDX file ", path, ": ", std::strerror(errno));
  std::unique_ptr<gzFile_s, int (*)(gzFile)> closer(f, gzclose);
  uint8_t head[4 + 4 * 4];
  NL_CHECK(gz_read_exact(f, head, 4, path) == 4 && head[0] == 0 && head[1] == 0 && head[2] == 0x08,
           "IDX file ", path, " has a bad magic number (expected 0x000008NN for unsigned bytes)");
  const size_t nd = head[3];
  NL_CHECK(nd >= 1 && nd <= 4 && gz_read_exact(f, head + 4, 4 * nd, path) == 4 * nd, "IDX file ", path,
           " declares ", nd, " dimensions (1 to 4, each a 4-byte extent, are supported)");
  dims.clear();
  uint64_t total = 1;
  for (size_t i = 0; i < nd; ++i) {
    const uint8_t* p = head + 4 + 4 * i;
    const uint64_t d = (uint64_t(p[0]) << 24) | (uint64_t(p[1]) << 16) | (uint64_t(p[2]) << 8) | p[3];
    dims.push_back(static_cast<int64_t>(d));
    // Checked per factor, so the product can never wrap around.
    NL_CHECK(d == 0 || total <= kMaxIdxData / d, "IDX file ", path,
             " declares extents whose product exceeds ", kMaxIdxData, " bytes");
    total *= d;
  }
  std::vector<uint8_t> data(static_cast<size_t>(total));
  const size_t got = gz_read_exact(f, data.data(), data.size(), path);
  NL_CHECK(got == total, "IDX file ", path, " holds ", got, " data bytes but its header declares ", total);
  uint8_t extra;
  NL_CHECK(gz_read_exact(f, &extra, 1, path) == 0, "IDX file ", path,
           " holds more data bytes than its header declares (", total, ")");
  return data;
}

namespace {
ImageSet read_split(const fs::path& dir, const std::string& prefix) {
  std::vector<int64_t> idims, ldims;
  std::string images = (dir / (prefix + "-images-idx3-ubyte.gz")).string();
  std::string labels = (dir / (prefix + "-labels-idx1-ubyte.gz")).string();
  ImageSet s;
  s.pixels = read_idx(images, idims);
  std::vector<uint8_t> l = read_idx(labels, ldims);
  NL_CHECK(idims.size() == 3, "IDX file ", images, " should hold [N, H, W] images");
  NL_CHECK(ldims.size() == 1 && ldims[0] == idims[0], "IDX file ", labels, " holds ",
           ldims.empty() ? 0 : ldims[0], " labels for ", idims[0], " images");
  s.N = idims[0], s.C = 1, s.H = idims[1], s.W = idims[2];
  for (size_t i = 0; i < l.size(); ++i) {
    NL_CHECK(l[i] <= 9, "IDX file ", labels, ": label ", int(l[i]), " at ", i, " is above 9");
    s.labels.push_back(l[i]);
  }
  return s;
}
}  // namespace

Dataset load_fashion_mnist(const std::string& dir) {
  NL_CHECK(fs::exists(fs::path(dir) / "train-images-idx3-ubyte.gz"), "Fashion-MNIST not found in ", dir,
           ": install Debian's dataset-fashion-mnist package (apt-get install "
           "dataset-fashion-mnist) or point --data-dir at a folder with the four *-ubyte.gz files");
  Dataset ds;
  ds.name = "fashion-mnist";
  ds.train = read_split(dir, "train");
  ds.test = read_split(dir, "t10k");
  ds.classes = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  ds.mean = {0.2860f};
  ds.std = {0.3530f};
  ds.augment = false;
  return ds;
}

}  // namespace nl::data
