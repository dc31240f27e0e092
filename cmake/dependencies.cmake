# Every dependency is a Debian package; scripts/install-deps.sh installs them.
find_package(Eigen3 3.4 REQUIRED NO_MODULE)
find_package(Threads REQUIRED)
find_package(OpenMP REQUIRED)  # Eigen parallelises its GEMM with OpenMP
if(NORMLAB_BUILD_TESTS)
  find_package(Catch2 2.13 REQUIRED)
  find_package(nlohmann_json 3 REQUIRED)
endif()
# normlab::data: download (libcurl, OpenSSL for MD5), extraction (libarchive), IDX gzip (zlib).
find_package(CURL REQUIRED)
find_package(LibArchive REQUIRED)
find_package(OpenSSL REQUIRED)
find_package(ZLIB REQUIRED)
