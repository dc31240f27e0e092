// libFuzzer: archive extraction on arbitrary (compressed) tar bytes, into a folder in /dev/shm.
// Besides crashes, a finding is any file appearing outside the target folder (a link or ".."
// that escaped) or a file larger than the member cap.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>

#include "normlab/core/error.h"
#include "normlab/nn/data.h"

namespace fs = std::filesystem;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const fs::path root = "/dev/shm/normlab-fuzz-archive-" + std::to_string(::getpid());
  static const fs::path tarball = root / "in.tar";
  static const fs::path dest = root / "out";
  std::error_code ec;
  fs::remove_all(dest, ec);
  fs::create_directories(dest);
  std::FILE* f = std::fopen(tarball.c_str(), "wb");
  if (!f) return 0;
  std::fwrite(data, 1, size, f);
  std::fclose(f);
  nl::data::DownloadOptions o;
  o.max_member_bytes = 1 << 20;
  o.max_extracted_bytes = 4 << 20;
  try {
    nl::data::extract_archive(tarball.string(), dest.string(), o);
  } catch (const nl::Error&) {
  }
  for (const auto& e : fs::directory_iterator(root))
    if (e.path() != tarball && e.path() != dest) __builtin_trap();  // escaped the target folder
  for (const auto& e : fs::recursive_directory_iterator(dest)) {
    if (e.is_symlink()) __builtin_trap();
    if (e.is_regular_file() && e.file_size() > static_cast<uintmax_t>(o.max_member_bytes)) __builtin_trap();
  }
  fs::remove_all(dest, ec);
  return 0;
}
