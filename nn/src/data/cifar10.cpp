// CIFAR-10 binary version reader.
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "file_checks.h"
#include "normlab/core/error.h"
#include "normlab/nn/data.h"

namespace nl::data {
namespace fs = std::filesystem;

namespace {
constexpr int64_t kRecord = 3073;       // 1 label byte + 3 * 32 * 32 pixels
constexpr int64_t kMaxRecords = 60000;  // all of CIFAR-10 in one file would be the most
const char* kTrainFiles[] = {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin",
                             "data_batch_5.bin"};
const char* kDefaultClasses[] = {"airplane", "automobile", "bird",  "cat",  "deer",
                                 "dog",      "frog",       "horse", "ship", "truck"};

void append(ImageSet& into, const ImageSet& part) {
  into.C = part.C, into.H = part.H, into.W = part.W;
  into.N += part.N;
  into.pixels.insert(into.pixels.end(), part.pixels.begin(), part.pixels.end());
  into.labels.insert(into.labels.end(), part.labels.begin(), part.labels.end());
}

std::string missing_message(const std::string& data_dir) {
  return "CIFAR-10 not found: expected " + (fs::path(data_dir) / "cifar-10-batches-bin").string() +
         "/ with data_batch_1.bin ... data_batch_5.bin and test_batch.bin. Fetch it with "
         "--download (about 163 MB), or point --data-dir at a folder that contains "
         "cifar-10-batches-bin/ (for example ../shared/data/cifar10-subset), or use "
         "--dataset fashion-mnist, which works offline";
}
}  // namespace

ImageSet ImageSet::head(int64_t n) const {
  if (n <= 0 || n >= N) return *this;
  ImageSet out;
  out.N = n, out.C = C, out.H = H, out.W = W;
  out.pixels.assign(pixels.begin(), pixels.begin() + n * C * H * W);
  out.labels.assign(labels.begin(), labels.begin() + n);
  return out;
}

ImageSet parse_cifar10(const uint8_t* bytes, size_t n, const std::string& path) {
  const int64_t size = static_cast<int64_t>(n);
  NL_CHECK(size > 0 && size % kRecord == 0, "CIFAR-10 file ", path, " has ", size,
           " bytes, which is not a positive multiple of the 3073-byte record: truncated or not "
           "CIFAR-10's binary version");
  ImageSet s;
  s.N = size / kRecord, s.C = 3, s.H = 32, s.W = 32;
  s.pixels.resize(static_cast<size_t>(s.N * 3072));
  s.labels.resize(static_cast<size_t>(s.N));
  for (int64_t i = 0; i < s.N; ++i) {
    const uint8_t* rec = bytes + i * kRecord;
    NL_CHECK(rec[0] <= 9, "CIFAR-10 file ", path, ": record ", i, " has label ", int(rec[0]),
             ", but labels are 0-9");
    s.labels[static_cast<size_t>(i)] = rec[0];
    std::copy(rec + 1, rec + kRecord, s.pixels.begin() + i * 3072);
  }
  return s;
}

ImageSet read_cifar10_file(const std::string& path) {
  // Header and size before data: a folder, a device (/dev/zero reads forever), a dangling link
  // or a file too large for CIFAR-10 is refused by name before a byte is read.
  const uintmax_t size_u = check_data_file(path, "CIFAR-10 file", kMaxRecords * kRecord);
  std::ifstream in(path, std::ios::binary);
  NL_CHECK(in.good(), "cannot open CIFAR-10 file ", path, ": ", std::strerror(errno));
  std::vector<uint8_t> bytes(static_cast<size_t>(size_u));
  in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  NL_CHECK(in.gcount() == static_cast<std::streamsize>(bytes.size()), "CIFAR-10 file ", path, ": read ",
           in.gcount(), " of its ", size_u, " bytes (changed while reading?)");
  return parse_cifar10(bytes.data(), bytes.size(), path);
}

std::vector<std::string> missing_files(const std::string& data_dir) {
  const fs::path d = fs::path(data_dir) / "cifar-10-batches-bin";
  std::vector<std::string> out;
  std::error_code ec;
  for (const char* f : kTrainFiles)
    if (!fs::exists(d / f, ec)) out.push_back(f);
  if (!fs::exists(d / "test_batch.bin", ec)) out.push_back("test_batch.bin");
  return out;
}

bool cifar10_present(const std::string& data_dir) { return missing_files(data_dir).empty(); }

Dataset load_cifar10(const std::string& data_dir) {
  const std::vector<std::string> missing = missing_files(data_dir);
  std::error_code ec;
  const fs::path d0 = fs::path(data_dir) / "cifar-10-batches-bin";
  // A folder that exists but lacks some files is a damaged copy, not a missing data set.
  if (!missing.empty() && fs::is_directory(d0, ec) && missing.size() < 6) {
    std::string names;
    for (const std::string& m : missing) names += (names.empty() ? "" : ", ") + m;
    NL_FAIL("CIFAR-10 in ", d0.string(), " is incomplete: ", names, " missing (or a dangling link)");
  }
  NL_CHECK(missing.empty(), missing_message(data_dir));
  fs::path d = fs::path(data_dir) / "cifar-10-batches-bin";
  Dataset ds;
  ds.name = "cifar10";
  for (const char* f : kTrainFiles) append(ds.train, read_cifar10_file((d / f).string()));
  ds.test = read_cifar10_file((d / "test_batch.bin").string());
  std::ifstream meta(d / "batches.meta.txt");
  for (std::string line; std::getline(meta, line);)
    if (!line.empty() && line.find_first_not_of(" \r\t") != std::string::npos)
      ds.classes.push_back(line.substr(0, line.find_last_not_of(" \r\t") + 1));
  if (ds.classes.size() != 10) ds.classes.assign(std::begin(kDefaultClasses), std::end(kDefaultClasses));
  ds.mean = {0.4914f, 0.4822f, 0.4465f};
  ds.std = {0.2470f, 0.2435f, 0.2616f};
  ds.augment = true;
  return ds;
}

}  // namespace nl::data
