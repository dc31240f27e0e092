// normlab::data built with NORMLAB_DOWNLOAD=OFF: no libcurl, libarchive or OpenSSL. The two
// entry points stay, so programs link either way and say at run time what is missing.
#include "normlab/core/error.h"
#include "normlab/nn/data.h"

namespace nl::data {

void download_cifar10(const std::string& data_dir, const DownloadOptions&) {
  NL_FAIL("cannot download CIFAR-10 into ", data_dir,
          ": this normlab was built with -DNORMLAB_DOWNLOAD=OFF (no libcurl/libarchive); "
          "copy cifar-10-batches-bin/ there, or rebuild with -DNORMLAB_DOWNLOAD=ON");
}

void extract_archive(const std::string& tarball, const std::string&, const DownloadOptions&) {
  NL_FAIL("cannot extract ", tarball, ": this normlab was built with -DNORMLAB_DOWNLOAD=OFF (no libarchive)");
}

std::string md5_file(const std::string& path) {
  NL_FAIL("md5_file(", path, "): this normlab was built with -DNORMLAB_DOWNLOAD=OFF (no OpenSSL)");
}

}  // namespace nl::data
