// The single place that knows which engines this build has (NORMLAB_DIST_MPI and
// NORMLAB_DIST_NCCL come from dist/CMakeLists.txt for this file only).
#include "backends.h"

#include <cstdlib>

#include "normlab/core/error.h"

namespace nl::dist {

namespace {
constexpr bool kHaveMpi = NORMLAB_DIST_MPI != 0;
constexpr bool kHaveNccl = NORMLAB_DIST_NCCL != 0;
}  // namespace

#if !NORMLAB_DIST_NCCL
std::unique_ptr<ProcessGroup> make_nccl_group(const Options&) {
  NL_FAIL(
      "dist: this build of normlab has no NCCL backend (it needs -DNORMLAB_CUDA=ON, Open MPI and the CUDA "
      "toolkit's NCCL: see docs/scaling-out.md)");
}
#endif

#if !NORMLAB_DIST_MPI
std::unique_ptr<ProcessGroup> make_mpi_group(const Options&) {
  NL_FAIL(
      "dist: this build of normlab has no MPI (configure with -DNORMLAB_DIST=ON and Open MPI installed: "
      "scripts/install-deps.sh)");
}
bool launched_by_mpi() {
  // Open MPI's and PMI's launchers set these; without MPI built we can still say why it fails.
  return std::getenv("OMPI_COMM_WORLD_SIZE") || std::getenv("PMI_SIZE") || std::getenv("PMIX_RANK");
}
#endif

bool has_backend(const std::string& name) {
  return name == "single" || (name == "mpi" && kHaveMpi) || (name == "nccl" && kHaveNccl);
}

std::unique_ptr<ProcessGroup> init(const std::string& backend, const Options& options) {
  NL_CHECK(options.timeout_seconds > 0, "dist: timeout_seconds must be positive, got ",
           options.timeout_seconds);
  if (backend == "single") return make_single_group();
  if (backend == "mpi") return make_mpi_group(options);
  if (backend == "nccl") return make_nccl_group(options);
  NL_CHECK(backend == "auto", "dist: unknown backend '", backend, "' (auto, mpi, nccl or single)");
  if (launched_by_mpi()) return make_mpi_group(options);  // throws, saying so, when MPI is not built
  return make_single_group();
}

}  // namespace nl::dist
