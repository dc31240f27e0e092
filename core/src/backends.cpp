// The single registration point: the only file that knows which backends this build contains.
// Ops and kernels never test NORMLAB_WITH_CUDA themselves.
#include <atomic>
#include <cstdlib>
#include <cstring>
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

namespace {
std::atomic<bool>& conv_tf32_flag() {
  static std::atomic<bool> flag{[] {
    const char* env = std::getenv("NORMLAB_CONV_TF32");
    if (!env || !*env) return true;
    for (const char* on : {"1", "on", "true"})
      if (std::strcmp(env, on) == 0) return true;
    for (const char* off : {"0", "off", "false"})
      if (std::strcmp(env, off) == 0) return false;
    throw Error(std::string("NORMLAB_CONV_TF32 must be 1/on/true or 0/off/false, got '") + env + "'");
  }()};
  return flag;
}
}  // namespace

void set_conv_tf32(bool allow) { conv_tf32_flag().store(allow); }
bool conv_tf32() { return conv_tf32_flag().load(); }

namespace {
std::atomic<ConvAlgo>& conv_algo_flag() {
  static std::atomic<ConvAlgo> flag{[] {
    const char* env = std::getenv("NORMLAB_CONV_ALGO");
    if (!env || !*env || std::strcmp(env, "auto") == 0) return ConvAlgo::Auto;
    if (std::strcmp(env, "gemm") == 0) return ConvAlgo::Gemm;
    throw Error(std::string("NORMLAB_CONV_ALGO must be auto or gemm, got '") + env + "'");
  }()};
  return flag;
}
}  // namespace

void set_conv_algo(ConvAlgo algo) { conv_algo_flag().store(algo); }
ConvAlgo conv_algo() { return conv_algo_flag().load(); }

const char* built_backends() {
#if NORMLAB_WITH_CUDA
  return "cpu, cuda";
#else
  return "cpu only; configure with -DNORMLAB_CUDA=ON or EMULATE for cuda";
#endif
}

}  // namespace nl
