// Fashion-MNIST reader: IDX files, gzip-compressed as Debian's dataset-fashion-mnist ships them.
#include <zlib.h>

#include <filesystem>

#include "normlab/core/error.h"
#include "normlab/nn/data.h"

namespace nl::data {
namespace fs = std::filesystem;

std::vector<uint8_t> read_idx(const std::string& path, std::vector<int64_t>& dims) {
  NL_CHECK(fs::exists(path), "IDX file not found: ", path);
  // gzread reads plain files too, so .gz and uncompressed IDX both work.
  gzFile f = gzopen(path.c_str(), "rb");
  NL_CHECK(f != nullptr, "cannot open IDX file ", path);
  std::vector<uint8_t> bytes;
  uint8_t buf[1 << 16];
  int n;
  while ((n = gzread(f, buf, sizeof buf)) > 0) bytes.insert(bytes.end(), buf, buf + n);
  int err = 0;
  const char* msg = gzerror(f, &err);
  std::string err_msg = msg ? msg : "";
  gzclose(f);
  NL_CHECK(n == 0 && (err == Z_OK || err == Z_STREAM_END), "IDX file ", path,
           " is not readable gzip: ", err_msg);
  NL_CHECK(bytes.size() >= 4 && bytes[0] == 0 && bytes[1] == 0 && bytes[2] == 0x08,
           "IDX file ", path, " has a bad magic number (expected 0x000008NN for unsigned bytes)");
  const size_t nd = bytes[3];
  NL_CHECK(nd >= 1 && nd <= 4 && bytes.size() >= 4 + 4 * nd, "IDX file ", path, " declares ", nd,
           " dimensions");
  dims.clear();
  size_t total = 1;
  for (size_t i = 0; i < nd; ++i) {
    const uint8_t* p = bytes.data() + 4 + 4 * i;
    int64_t d = (int64_t(p[0]) << 24) | (int64_t(p[1]) << 16) | (int64_t(p[2]) << 8) | p[3];
    dims.push_back(d);
    total *= static_cast<size_t>(d);
  }
  const size_t header = 4 + 4 * nd;
  NL_CHECK(bytes.size() == header + total, "IDX file ", path, " holds ", bytes.size() - header,
           " data bytes but its header declares ", total);
  return std::vector<uint8_t>(bytes.begin() + static_cast<int64_t>(header), bytes.end());
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
  NL_CHECK(fs::exists(fs::path(dir) / "train-images-idx3-ubyte.gz"),
           "Fashion-MNIST not found in ", dir,
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
