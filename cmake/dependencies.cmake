# Every dependency is a Debian package; scripts/install-deps.sh installs them.
find_package(Eigen3 3.4 REQUIRED NO_MODULE)
find_package(Threads REQUIRED)
find_package(OpenMP REQUIRED)  # Eigen parallelises its GEMM with OpenMP
find_package(nlohmann_json 3 REQUIRED)  # safetensors headers, results.json, golden fixtures
if(NORMLAB_BUILD_TESTS)
  find_package(Catch2 2.13 REQUIRED)
endif()
# normlab::data: IDX gzip (zlib); with NORMLAB_DOWNLOAD also download (libcurl, OpenSSL for the
# MD5) and extraction (libarchive).
find_package(ZLIB REQUIRED)
if(NORMLAB_DOWNLOAD)
  find_package(CURL REQUIRED)
  find_package(LibArchive REQUIRED)
  find_package(OpenSSL REQUIRED)
endif()
