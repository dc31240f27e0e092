// CIFAR-10 download: libcurl for the transfer, OpenSSL for the MD5, libarchive to extract.
// Everything happens in a temporary folder inside data_dir; the dataset appears by one rename at
// the end, so an interrupted or failed download never leaves a half-written dataset.
#include <archive.h>
#include <archive_entry.h>
#include <curl/curl.h>
#include <openssl/evp.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>

#include "normlab/core/error.h"
#include "normlab/nn/data.h"

namespace nl::data {
namespace fs = std::filesystem;

namespace {

// Removes the temporary folder unless the download was committed.
struct TempDir {
  fs::path path;
  ~TempDir() {
    std::error_code ec;
    if (!path.empty()) fs::remove_all(path, ec);
  }
};

struct Transfer {
  std::FILE* file;
  const DownloadOptions* opt;
  int64_t received = 0;
  bool too_big = false, cancelled = false;
};

size_t write_cb(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  t->received += static_cast<int64_t>(size * n);
  // Counted as it streams: a server that sends no Content-Length (or lies) is stopped too.
  if (t->received > t->opt->max_body_bytes) {
    t->too_big = true;
    return 0;  // curl aborts with CURLE_WRITE_ERROR
  }
  return std::fwrite(data, size, n, t->file) * size;
}

int progress_cb(void* user, curl_off_t total, curl_off_t now, curl_off_t, curl_off_t) {
  auto* t = static_cast<Transfer*>(user);
  if (t->opt->cancelled && t->opt->cancelled()) {
    t->cancelled = true;
    return 1;  // aborts the transfer
  }
  if (t->opt->progress) t->opt->progress(static_cast<int64_t>(now), static_cast<int64_t>(total));
  return 0;
}

void fetch(const std::string& url, const fs::path& dest, const DownloadOptions& opt) {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> curl(curl_easy_init(), curl_easy_cleanup);
  NL_CHECK(curl != nullptr, "download: could not initialise libcurl");
  std::unique_ptr<std::FILE, decltype(&std::fclose)> file(std::fopen(dest.c_str(), "wb"), std::fclose);
  NL_CHECK(file != nullptr, "download: cannot write ", dest.string());
  Transfer t{file.get(), &opt};
  char errbuf[CURL_ERROR_SIZE] = {0};
  CURL* c = curl.get();
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  // HTTP(S) only, also after a redirect: no file://, ftp:// or anything else a server names.
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, write_cb);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &t);
  curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, progress_cb);
  curl_easy_setopt(c, CURLOPT_XFERINFODATA, &t);
  curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(c, CURLOPT_MAXREDIRS, opt.max_redirects);
  curl_easy_setopt(c, CURLOPT_FAILONERROR, 1L);  // HTTP >= 400 is an error, not a body to keep
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, opt.connect_timeout_seconds);
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, opt.low_speed_bytes);
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, opt.low_speed_seconds);
  if (opt.timeout_seconds > 0) curl_easy_setopt(c, CURLOPT_TIMEOUT, opt.timeout_seconds);
  // Refused at once when the server announces a larger body.
  curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, static_cast<curl_off_t>(opt.max_body_bytes));
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
  CURLcode rc = curl_easy_perform(c);
  NL_CHECK(!t.cancelled, "download of ", url, " cancelled; nothing was kept");
  NL_CHECK(!t.too_big && rc != CURLE_FILESIZE_EXCEEDED, "download of ", url, " exceeds the ",
           opt.max_body_bytes, "-byte limit (CIFAR-10 is 170,052,171 bytes); aborted");
  NL_CHECK(rc == CURLE_OK, "download of ", url, " failed: ", errbuf[0] ? errbuf : curl_easy_strerror(rc));
  NL_CHECK(std::fflush(file.get()) == 0, "download: writing ", dest.string(), " failed (disk full?)");
}

}  // namespace

std::string md5_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  NL_CHECK(in.good(), "cannot read ", path);
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  NL_CHECK(ctx && EVP_DigestInit_ex(ctx.get(), EVP_md5(), nullptr) == 1, "MD5 is unavailable");
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    EVP_DigestUpdate(ctx.get(), buf.data(), static_cast<size_t>(in.gcount()));
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx.get(), digest, &len);
  std::string hex;
  char two[3];
  for (unsigned int i = 0; i < len; ++i) std::snprintf(two, sizeof two, "%02x", digest[i]), hex += two;
  return hex;
}

namespace {

void extract(const fs::path& tarball, const fs::path& dest, const DownloadOptions& opt) {
  std::unique_ptr<archive, decltype(&archive_read_free)> in(archive_read_new(), archive_read_free);
  std::unique_ptr<archive, decltype(&archive_write_free)> out(archive_write_disk_new(), archive_write_free);
  archive_read_support_filter_all(in.get());
  archive_read_support_format_all(in.get());
  // Refuse entries that would escape dest: ".." and symlinked parents here, absolute names
  // below (the prefix we add makes every final path absolute, so libarchive's own absolute-path
  // check cannot be used).
  archive_write_disk_set_options(out.get(), ARCHIVE_EXTRACT_SECURE_NODOTDOT |
                                                ARCHIVE_EXTRACT_SECURE_SYMLINKS |
                                                ARCHIVE_EXTRACT_NO_OVERWRITE);
  NL_CHECK(archive_read_open_filename(in.get(), tarball.c_str(), 1 << 16) == ARCHIVE_OK,
           "cannot open archive ", tarball.string(), ": ", archive_error_string(in.get()));
  archive_entry* entry;
  int r;
  int64_t total = 0;
  while ((r = archive_read_next_header(in.get(), &entry)) == ARCHIVE_OK) {
    const std::string name = archive_entry_pathname(entry);
    NL_CHECK(!name.empty() && name[0] != '/', "archive ", tarball.string(), " contains an absolute path '",
             name, "'; refusing to extract it");
    // Regular files and folders only: a hard link (which may carry data to any path), a
    // symbolic link, a device or a FIFO has no place in a data set.
    const auto type = archive_entry_filetype(entry);
    NL_CHECK(archive_entry_hardlink(entry) == nullptr, "archive ", tarball.string(),
             " contains a hard link '", name, "' -> '", archive_entry_hardlink(entry),
             "'; refusing to extract it");
    NL_CHECK(type == AE_IFREG || type == AE_IFDIR, "archive ", tarball.string(), " contains '", name,
             "', which is not a regular file or folder (",
             type == AE_IFLNK ? "a symbolic link" : "a device, FIFO or socket", "); refusing to extract it");
    NL_CHECK(archive_entry_size(entry) <= opt.max_member_bytes, "archive ", tarball.string(), ": member '",
             name, "' declares ", archive_entry_size(entry), " bytes, more than the ", opt.max_member_bytes,
             " allowed");
    std::string target = (dest / name).string();
    archive_entry_set_pathname(entry, target.c_str());
    NL_CHECK(archive_write_header(out.get(), entry) == ARCHIVE_OK, "extracting ",
             archive_entry_pathname(entry), " failed: ", archive_error_string(out.get()));
    const void* block;
    size_t size;
    la_int64_t offset;
    int d;
    int64_t member = 0;
    while ((d = archive_read_data_block(in.get(), &block, &size, &offset)) == ARCHIVE_OK) {
      // Counted as written, whatever the header said (sparse entries can claim little).
      member += static_cast<int64_t>(size), total += static_cast<int64_t>(size);
      NL_CHECK(member <= opt.max_member_bytes && total <= opt.max_extracted_bytes, "archive ",
               tarball.string(), ": extracting '", name, "' passed the limit of ",
               member > opt.max_member_bytes ? opt.max_member_bytes : opt.max_extracted_bytes,
               member > opt.max_member_bytes ? " bytes per member" : " bytes in all", "; refusing");
      NL_CHECK(archive_write_data_block(out.get(), block, size, offset) == ARCHIVE_OK, "writing ", target,
               " failed: ", archive_error_string(out.get()));
    }
    NL_CHECK(d == ARCHIVE_EOF, "archive ", tarball.string(), " is corrupt: ", archive_error_string(in.get()));
    NL_CHECK(archive_write_finish_entry(out.get()) == ARCHIVE_OK, "finishing ", target, " failed");
  }
  NL_CHECK(r == ARCHIVE_EOF, "archive ", tarball.string(), " is corrupt: ", archive_error_string(in.get()));
}

}  // namespace

namespace {
const std::string kTempPrefix = ".cifar10-download-";

// .cifar10-download-<pid> folders of processes that no longer run: a download killed before it
// could clean up. A live process's folder (a download in progress) is left alone.
void remove_stale_downloads(const std::string& data_dir) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(data_dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind(kTempPrefix, 0) != 0 || !e.is_directory(ec)) continue;
    const std::string pid = name.substr(kTempPrefix.size());
    if (pid.empty() || pid.size() > 9 || pid.find_first_not_of("0123456789") != std::string::npos) continue;
    if (::kill(static_cast<pid_t>(std::stol(pid)), 0) == 0 || errno != ESRCH) continue;
    fs::remove_all(e.path(), ec);
  }
}
}  // namespace

void extract_archive(const std::string& tarball, const std::string& dest, const DownloadOptions& options) {
  extract(tarball, dest, options);
}

void download_cifar10(const std::string& data_dir, const DownloadOptions& opt) {
  const fs::path final_dir = fs::path(data_dir) / "cifar-10-batches-bin";
  NL_CHECK(!fs::exists(final_dir), "download: ", final_dir.string(),
           " already exists; remove it first to download again");
  fs::create_directories(data_dir);
  remove_stale_downloads(data_dir);
  TempDir tmp;
  tmp.path = fs::path(data_dir) / (kTempPrefix + std::to_string(::getpid()));
  fs::remove_all(tmp.path);
  fs::create_directories(tmp.path / "extract");

  const fs::path tarball = tmp.path / "cifar-10-binary.tar.gz";
  fetch(opt.url, tarball, opt);
  if (!opt.md5.empty()) {
    std::string got = md5_file(tarball.string());
    NL_CHECK(got == opt.md5, "download of ", opt.url, " is corrupt: MD5 ", got, ", expected ", opt.md5,
             "; nothing was written to ", data_dir);
  }
  extract(tarball, tmp.path / "extract", opt);
  const fs::path extracted = tmp.path / "extract" / "cifar-10-batches-bin";
  NL_CHECK(fs::exists(extracted / "test_batch.bin") && fs::exists(extracted / "data_batch_1.bin"),
           "download: the archive from ", opt.url,
           " has no cifar-10-batches-bin/ folder with "
           "the CIFAR-10 binary files");
  for (const auto& f : fs::directory_iterator(extracted)) {
    if (f.path().extension() == ".bin") read_cifar10_file(f.path().string());  // validate
  }
  fs::rename(extracted, final_dir);  // the commit point: atomic within one filesystem
}

}  // namespace nl::data
