// libFuzzer: the CIFAR-10 record parser on arbitrary bytes. Errors must be nl::Error; anything
// else (a crash, a sanitizer report, another exception) is a finding.
#include <cstddef>
#include <cstdint>

#include "normlab/core/error.h"
#include "normlab/nn/data.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    nl::data::ImageSet s = nl::data::parse_cifar10(data, size, "fuzz input");
    if (s.N * 3073 != static_cast<int64_t>(size)) __builtin_trap();
  } catch (const nl::Error&) {
  }
  return 0;
}
