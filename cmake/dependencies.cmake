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
# nl::dist: Open MPI (Debian libopenmpi-dev), its C API from C++ (the project enables no C;
# MPI_CXX_SKIP_MPICXX leaves out the deprecated C++ bindings).
set(MPI_CXX_SKIP_MPICXX ON)
set(NORMLAB_HAVE_MPI OFF)
if(NOT NORMLAB_DIST STREQUAL "OFF")
  if(NORMLAB_DIST STREQUAL "ON")
    find_package(MPI REQUIRED COMPONENTS CXX)
  else()
    find_package(MPI QUIET COMPONENTS CXX)
  endif()
  if(MPI_CXX_FOUND)
    set(NORMLAB_HAVE_MPI ON)
  else()
    message(STATUS "normlab: MPI not found, nl::dist has only its single-process group (scripts/install-deps.sh installs Open MPI)")
  endif()
endif()
# nl::dist's NCCL backend: the CUDA toolkit's NCCL, with NORMLAB_CUDA=ON (MPI, when built, is its
# bootstrap under mpirun; without it the processes meet through a file).
# NORMLAB_DIST_NCCL AUTO builds it when found, ON requires it (make test-nvcc), OFF leaves it out.
set(NORMLAB_HAVE_NCCL OFF)
if(NORMLAB_CUDA STREQUAL "ON" AND NOT NORMLAB_DIST_NCCL STREQUAL "OFF")
  find_path(NORMLAB_NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS})
  find_library(NORMLAB_NCCL_LIBRARY nccl HINTS ${CUDAToolkit_LIBRARY_DIR} ${CUDAToolkit_LIBRARY_ROOT}/lib64)
  if(NORMLAB_NCCL_INCLUDE_DIR AND NORMLAB_NCCL_LIBRARY)
    set(NORMLAB_HAVE_NCCL ON)
  elseif(NORMLAB_DIST_NCCL STREQUAL "ON")
    message(FATAL_ERROR "NORMLAB_DIST_NCCL=ON: NCCL (nccl.h: '${NORMLAB_NCCL_INCLUDE_DIR}', libnccl: "
                        "'${NORMLAB_NCCL_LIBRARY}') not found")
  endif()
elseif(NORMLAB_DIST_NCCL STREQUAL "ON")
  message(FATAL_ERROR "NORMLAB_DIST_NCCL=ON needs NORMLAB_CUDA=ON")
endif()
if(NORMLAB_DOWNLOAD)
  find_package(CURL REQUIRED)
  find_package(LibArchive REQUIRED)
  find_package(OpenSSL REQUIRED)
endif()
