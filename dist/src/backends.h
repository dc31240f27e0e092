#pragma once
// Between process_group.cpp, backends.cpp and the engine files; not installed.
#include <memory>

#include "normlab/dist/process_group.h"

namespace nl::dist {
std::unique_ptr<ProcessGroup> make_single_group();
std::unique_ptr<ProcessGroup> make_mpi_group(const Options& options);   // mpi.cpp
bool launched_by_mpi();                                                 // mpi.cpp
std::unique_ptr<ProcessGroup> make_nccl_group(const Options& options);  // nccl.cpp
}  // namespace nl::dist
