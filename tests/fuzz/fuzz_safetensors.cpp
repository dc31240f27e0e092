// libFuzzer: the checkpoint loader's safetensors parser on arbitrary bytes.
#include <cstddef>
#include <cstdint>
#include <string>

#include "normlab/core/error.h"
#include "normlab/nn/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    nl::nn::TensorFile f =
        nl::nn::parse_safetensors(std::string(reinterpret_cast<const char*>(data), size), "fuzz input");
    for (const auto& [name, t] : f.tensors) (void)t.numel();
  } catch (const nl::Error&) {
  }
  return 0;
}
