// The single registration point: the only file that knows which backends this build contains.
// Ops and kernels never test NORMLAB_WITH_CUDA themselves.
#include <mutex>

#include "normlab/core/dispatch.h"

namespace nl {
namespace cpu {
void register_kernels();
}
#if NORMLAB_WITH_CUDA
namespace cuda {
void register_kernels();
}
#endif

void ensure_backends_registered() {
  static std::once_flag once;
  std::call_once(once, [] {
    cpu::register_kernels();
#if NORMLAB_WITH_CUDA
    cuda::register_kernels();
#endif
  });
}

const char* built_backends() {
#if NORMLAB_WITH_CUDA
  return "cpu, cuda";
#else
  return "cpu only; configure with -DNORMLAB_CUDA=ON or EMULATE for cuda";
#endif
}

}  // namespace nl
