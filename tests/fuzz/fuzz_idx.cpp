// libFuzzer: the IDX reader (gzip or plain) on arbitrary file contents, through the real file
// path (a file in /dev/shm per input). Header overflows and gzip bombs are the targets.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "normlab/core/error.h"
#include "normlab/nn/data.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = "/dev/shm/normlab-fuzz-idx-" + std::to_string(::getpid());
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return 0;
  std::fwrite(data, 1, size, f);
  std::fclose(f);
  try {
    std::vector<int64_t> dims;
    std::vector<uint8_t> v = nl::data::read_idx(path, dims);
    uint64_t total = 1;
    for (int64_t d : dims) total *= static_cast<uint64_t>(d);
    if (total != v.size()) __builtin_trap();  // the reader returned what its header did not declare
  } catch (const nl::Error&) {
  }
  return 0;
}
