#pragma once
// Shared by the data and download tests: a self-removing temporary folder and synthetic CIFAR-10
// records.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "normlab/nn/data.h"

namespace nl::test {
namespace fs = std::filesystem;

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

// A whole file's bytes ("" when it cannot be read).
inline std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

inline void write_bytes(const fs::path& p, const std::string& bytes) {
  std::ofstream(p, std::ios::binary) << bytes;
}

// n records whose label is i % 10 and whose pixels encode the record and channel.
inline std::string cifar_records(int n, int label_offset = 0) {
  std::string s;
  for (int i = 0; i < n; ++i) {
    s += static_cast<char>((i + label_offset) % 10);
    for (int j = 0; j < 3072; ++j) s += static_cast<char>((i * 7 + j) % 251);
  }
  return s;
}

}  // namespace nl::test
