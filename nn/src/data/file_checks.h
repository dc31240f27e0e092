#pragma once
// What the dataset readers check before reading a byte of a file the user pointed them at.
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>

#include "normlab/core/error.h"

namespace nl::data {

// Refuses, naming the path and the reason, anything but a readable regular file of at most
// max_bytes: a missing file, a dangling symbolic link, a folder, a device (/dev/zero would be
// read until memory runs out), an unreadable file. Returns the size.
inline uintmax_t check_data_file(const std::string& path, const char* what, uintmax_t max_bytes) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status link = fs::symlink_status(path, ec);
  NL_CHECK(fs::exists(link), what, " ", path, " does not exist");
  const fs::file_status st = fs::status(path, ec);
  if (fs::is_symlink(link) && !fs::exists(st))
    NL_FAIL(what, " ", path, " is a symbolic link to ", fs::read_symlink(path, ec).string(),
            ", which does not exist");
  NL_CHECK(!fs::is_directory(st), what, " ", path, " is a folder, not a file");
  NL_CHECK(fs::is_regular_file(st), what, " ", path, " is not a regular file (a device or a pipe?)");
  const uintmax_t size = fs::file_size(path, ec);
  NL_CHECK(!ec, what, " ", path, ": cannot read its size: ", ec.message());
  NL_CHECK(size <= max_bytes, what, " ", path, " has ", size, " bytes, more than the ", max_bytes,
           " such a file can have");
  NL_CHECK(::access(path.c_str(), R_OK) == 0, what, " ", path, " is not readable: ", std::strerror(errno));
  return size;
}

}  // namespace nl::data
