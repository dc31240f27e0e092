#include "normlab/nn/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <sstream>

#include "normlab/core/error.h"

namespace nl::nn {

std::string temp_name_for(const std::string& path) {
  static std::atomic<uint64_t> counter{0};
  const auto t = std::chrono::steady_clock::now().time_since_epoch().count();
  std::ostringstream os;
  os << path << '.' << ::getpid() << '-' << counter++ << '-' << std::hex << (t & 0xffffff) << ".normlab-tmp";
  return os.str();
}

namespace {

// content in a new temporary beside path (O_EXCL: never an existing file), fsynced and closed;
// returns its name. On an error the temporary is removed and nl::Error says why.
std::string write_temporary(const std::string& path, const std::vector<std::string_view>& pieces) {
  const std::string tmp = temp_name_for(path);
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  NL_CHECK(fd >= 0, "cannot write ", tmp, ": ", std::strerror(errno));
  auto fail = [&](const char* what, int e) {
    ::close(fd);
    ::unlink(tmp.c_str());
    NL_FAIL(what, tmp, " failed: ", std::strerror(e));
  };
  for (std::string_view piece : pieces) {
    while (!piece.empty()) {
      const ssize_t w = ::write(fd, piece.data(), piece.size());
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) fail("writing ", w < 0 ? errno : EIO);
      piece.remove_prefix(static_cast<size_t>(w));
    }
  }
  // fsync before the rename or link: after a crash the name shows either the old or the new
  // content.
  if (::fsync(fd) != 0) fail("writing ", errno);
  if (::close(fd) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    NL_FAIL("writing ", tmp, " failed: ", std::strerror(e));
  }
  return tmp;
}

}  // namespace

void write_file_atomic(const std::string& path, const std::vector<std::string_view>& pieces) {
  const std::string tmp = write_temporary(path, pieces);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    NL_FAIL("cannot move ", tmp, " to ", path, ": ", std::strerror(e));
  }
}

bool create_file_atomic(const std::string& path, std::string_view content) {
  const std::string tmp = write_temporary(path, {content});
  // link, unlike rename, fails when path exists.
  const int rc = ::link(tmp.c_str(), path.c_str());
  const int e = errno;
  ::unlink(tmp.c_str());
  if (rc == 0) return true;
  if (e == EEXIST) return false;
  NL_FAIL("cannot create ", path, ": ", std::strerror(e));
}

}  // namespace nl::nn
