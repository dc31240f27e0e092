#pragma once
// Tensors to and from the safetensors format (https://github.com/huggingface/safetensors): an
// 8-byte little-endian header length, a JSON header naming each tensor's dtype, shape and byte
// range, then the raw little-endian data. The `safetensors` Python package, and so PyTorch,
// reads what this writes.
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "normlab/core/tensor.h"

namespace nl::nn {

using NamedTensorList = std::vector<std::pair<std::string, Tensor>>;

struct TensorFile {
  NamedTensorList tensors;                          // in file order, on the CPU
  std::map<std::string, std::string> metadata;      // the header's "__metadata__" (strings only)
  const Tensor& at(const std::string& name) const;  // throws naming the file's tensors
};

// Float32 and int32 tensors (any device) to path: written to a temporary file beside it,
// fsynced and renamed, so path holds the old or the new file, never a part of one.
void save_safetensors(const std::string& path, const NamedTensorList& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// Reads and validates everything before trusting it: header length within the file, JSON
// syntax, known dtypes (F32, I32), shapes, byte ranges inside the data, matching shape and size,
// no overlap, no gap, no duplicate names. Any violation throws naming the file and the field.
TensorFile load_safetensors(const std::string& path);
// The same on bytes in memory (the fuzzer's entry); `what` names the source in errors.
TensorFile parse_safetensors(const std::string& bytes, const std::string& what);

}  // namespace nl::nn
