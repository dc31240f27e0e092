// The CIFAR-10 download path against a local HTTP server on 127.0.0.1 (built with
// NORMLAB_DOWNLOAD=ON only).
#include <archive.h>
#include <archive_entry.h>

#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>

#include "data_helpers.h"
#include "helpers.h"
#include "http_server.h"
#include "normlab/core/error.h"
#include "normlab/nn/data.h"

using namespace nl;
using namespace nl::data;
using namespace nl::test;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

// extra (may be empty) adds entries of its own after the data set's files.
std::string make_cifar_tarball(const fs::path& where, const std::function<void(archive*)>& extra = {}) {
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
  if (extra) extra(a);
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

TEST_CASE("download fetches, verifies and extracts from a local server", "[data][download][quick]") {
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

TEST_CASE("a failed download leaves nothing behind", "[data][download][errors][quick]") {
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
    LocalHttpServer server("/cifar-10-binary.tar.gz", tarball, LocalHttpServer::Mode::Truncate);
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

namespace {
DownloadOptions quick(const std::string& url, const std::string& md5 = "") {
  DownloadOptions o;
  o.url = url;
  o.md5 = md5;
  o.connect_timeout_seconds = 5;
  o.timeout_seconds = 30;
  return o;
}

void add_entry(archive* a, const std::string& name, unsigned type, const std::string& body = "",
               const std::string& link = "", bool hard = false) {
  archive_entry* e = archive_entry_new();
  archive_entry_set_pathname(e, name.c_str());
  archive_entry_set_filetype(e, type);
  archive_entry_set_perm(e, 0644);
  archive_entry_set_size(e, static_cast<la_int64_t>(body.size()));
  if (!link.empty()) (hard ? archive_entry_set_hardlink : archive_entry_set_symlink)(e, link.c_str());
  archive_write_header(a, e);
  if (!body.empty()) archive_write_data(a, body.data(), body.size());
  archive_entry_free(e);
}
}  // namespace

TEST_CASE("a hostile server is cut off: redirects, stalls, oversized bodies, cancellation",
          "[data][download][errors][quick]") {
  TempDir src, dst;
  const std::string tarball = make_cifar_tarball(src.path);
  SECTION("redirect loop") {
    LocalHttpServer server("/cifar-10-binary.tar.gz", tarball, LocalHttpServer::Mode::RedirectLoop);
    CHECK_THROWS_WITH(download_cifar10(dst.path.string(), quick(server.url())), Contains("redirects"));
  }
  SECTION("a stalled transfer") {
    LocalHttpServer server("/cifar-10-binary.tar.gz", tarball, LocalHttpServer::Mode::Slow);
    DownloadOptions o = quick(server.url());
    o.low_speed_bytes = 1000;  // the server sends 20 bytes a second
    o.low_speed_seconds = 1;
    CHECK_THROWS_WITH(download_cifar10(dst.path.string(), o), Contains("too slow"));
  }
  SECTION("a body larger than announced limits, with and without Content-Length") {
    for (auto mode : {LocalHttpServer::Mode::Normal, LocalHttpServer::Mode::NoLength}) {
      LocalHttpServer server("/cifar-10-binary.tar.gz", tarball, mode);
      DownloadOptions o = quick(server.url());
      o.max_body_bytes = 1000;
      CHECK_THROWS_WITH(download_cifar10(dst.path.string(), o), Contains("exceeds the 1000-byte limit"));
    }
  }
  SECTION("cancelled (Ctrl-C in the app)") {
    LocalHttpServer server("/cifar-10-binary.tar.gz", tarball, LocalHttpServer::Mode::Slow);
    DownloadOptions o = quick(server.url());
    o.cancelled = [] { return true; };
    CHECK_THROWS_WITH(download_cifar10(dst.path.string(), o), Contains("cancelled"));
  }
  require_nothing_written(dst.path);
}

TEST_CASE("extraction takes only regular files and folders, within size limits",
          "[data][download][errors][quick]") {
  TempDir src, dst, outside;
  const fs::path victim = outside.path / "victim";
  write_bytes(victim, "untouched");
  auto refused = [&](const std::function<void(archive*)>& extra, DownloadOptions o,
                     const std::string& message) {
    const std::string tarball = make_cifar_tarball(src.path, extra);
    LocalHttpServer server("/cifar-10-binary.tar.gz", tarball);
    o.url = server.url();
    CHECK_THROWS_WITH(download_cifar10(dst.path.string(), o), Contains(message));
    require_nothing_written(dst.path);
  };
  // A hard link that carries data to an absolute path overwrote that file before.
  refused(
      [&](archive* a) {
        add_entry(a, "cifar-10-batches-bin/evil", AE_IFREG, "pwned", victim.string(), true);
      },
      quick(""), "contains a hard link");
  refused([&](archive* a) { add_entry(a, "cifar-10-batches-bin/link", AE_IFLNK, "", victim.string()); },
          quick(""), "a symbolic link");
  refused([&](archive* a) { add_entry(a, "cifar-10-batches-bin/fifo", AE_IFIFO); }, quick(""),
          "not a regular file or folder");
  DownloadOptions small = quick("");
  small.max_member_bytes = 1000;
  refused({}, small, "more than the 1000 allowed");
  DownloadOptions total = quick("");
  total.max_extracted_bytes = 20000;
  refused({}, total, "bytes in all");
  CHECK(slurp(victim) == "untouched");
}

TEST_CASE("a killed download's temporary folder is removed by the next one", "[data][download][quick]") {
  TempDir src, dst;
  // A pid that surely ran and ended: a child that exited and was reaped.
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  ::waitpid(child, nullptr, 0);
  const fs::path stale = dst.path / (".cifar10-download-" + std::to_string(child));
  const fs::path live = dst.path / (".cifar10-download-" + std::to_string(::getppid()));
  fs::create_directories(stale / "extract");
  fs::create_directories(live);
  const std::string tarball = make_cifar_tarball(src.path);
  LocalHttpServer server("/cifar-10-binary.tar.gz", tarball);
  download_cifar10(dst.path.string(), quick(server.url()));
  CHECK_FALSE(fs::exists(stale));
  CHECK(fs::exists(live));  // another process's download in progress is left alone
  CHECK(fs::exists(dst.path / "cifar-10-batches-bin" / "test_batch.bin"));
}
