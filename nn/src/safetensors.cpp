// safetensors writer and validating reader. nlohmann-json parses and writes the header (a
// private dependency: header-only, not part of the installed interface).
#include "normlab/nn/safetensors.h"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "normlab/core/error.h"
#include "normlab/nn/atomic_file.h"

namespace nl::nn {
namespace fs = std::filesystem;
using nlohmann::json;

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; this writer copies memory as it is");

namespace {

constexpr uint64_t kMaxHeader = 100ull << 20;  // the reference implementation's own limit

const char* dtype_name(DType t) { return t == DType::F32 ? "F32" : "I32"; }

}  // namespace

const Tensor& TensorFile::at(const std::string& name) const {
  for (const auto& [n, t] : tensors)
    if (n == name) return t;
  std::string names;
  for (const auto& [n, t] : tensors) names += (names.empty() ? "" : ", ") + n;
  NL_FAIL("no tensor '", name, "' in the file (it has: ", names.empty() ? "none" : names, ")");
}

void save_safetensors(const std::string& path, const NamedTensorList& tensors,
                      const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<Tensor>
      host;  // contiguous CPU copies, alive until written: their bytes are written as they are
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    NL_CHECK(t.defined(), "save_safetensors: tensor '", name, "' is undefined");
    NL_CHECK(!header.contains(name), "save_safetensors: tensor name '", name, "' appears twice");
    NL_CHECK(name != "__metadata__", "save_safetensors: '__metadata__' is reserved");
    host.push_back(t.to(Device::cpu()).contiguous());
    const uint64_t bytes = static_cast<uint64_t>(host.back().numel()) * 4;
    json shape = json::array();
    for (int64_t d : host.back().shape()) shape.push_back(d);
    header[name] = {{"dtype", dtype_name(host.back().dtype())},
                    {"shape", shape},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');  // the format pads the header with spaces to 8 bytes
  const uint64_t hlen = h.size();
  std::vector<std::string_view> pieces{{reinterpret_cast<const char*>(&hlen), 8}, h};
  for (const Tensor& c : host) {
    const void* src = c.dtype() == DType::F32 ? static_cast<const void*>(c.data_f32()) : c.data_i32();
    pieces.emplace_back(static_cast<const char*>(src), static_cast<size_t>(c.numel()) * 4);
  }
  write_file_atomic(path, pieces);
}

TensorFile parse_safetensors(const std::string& bytes, const std::string& what) {
  NL_CHECK(bytes.size() >= 8, what, " is not a safetensors file: ", bytes.size(),
           " bytes, less than the 8-byte header length");
  uint64_t hlen = 0;
  std::memcpy(&hlen, bytes.data(), 8);
  NL_CHECK(hlen <= kMaxHeader && hlen <= bytes.size() - 8, what, ": header length ", hlen,
           " does not fit the file's ", bytes.size(), " bytes (or exceeds 100 MiB)");
  json header;
  try {
    header = json::parse(bytes.begin() + 8, bytes.begin() + 8 + static_cast<std::ptrdiff_t>(hlen));
  } catch (const json::exception& e) {
    NL_FAIL(what, ": the header is not valid JSON: ", e.what());
  }
  NL_CHECK(header.is_object(), what, ": the header is not a JSON object");
  const uint64_t data_size = bytes.size() - 8 - hlen;
  const char* data = bytes.data() + 8 + hlen;

  TensorFile out;
  struct Range {
    uint64_t begin, end;
    std::string name;
  };
  std::vector<Range> ranges;
  for (const auto& [name, v] : header.items()) {
    if (name == "__metadata__") {
      NL_CHECK(v.is_object(), what, ": __metadata__ must be an object of strings");
      for (const auto& [k, s] : v.items()) {
        NL_CHECK(s.is_string(), what, ": __metadata__['", k, "'] is not a string");
        out.metadata[k] = s.get<std::string>();
      }
      continue;
    }
    NL_CHECK(v.is_object() && v.contains("dtype") && v.contains("shape") && v.contains("data_offsets"), what,
             ": tensor '", name, "' lacks dtype, shape or data_offsets");
    const json& dt = v["dtype"];
    NL_CHECK(dt.is_string() && (dt == "F32" || dt == "I32"), what, ": tensor '", name, "' has dtype ",
             dt.dump(), "; only F32 and I32 are supported");
    const json& shape = v["shape"];
    NL_CHECK(shape.is_array() && shape.size() <= 8, what, ": tensor '", name, "' has a bad shape ",
             shape.dump());
    std::vector<int64_t> dims;
    uint64_t numel = 1;
    for (const json& d : shape) {
      NL_CHECK(d.is_number_unsigned() || (d.is_number_integer() && d.get<int64_t>() >= 0), what, ": tensor '",
               name, "' has a bad extent ", d.dump());
      const uint64_t e = d.get<uint64_t>();
      NL_CHECK(e == 0 || numel <= (data_size / 4) / e, what, ": tensor '", name, "' with shape ",
               shape.dump(), " is larger than the file's data");
      numel *= e;
      dims.push_back(static_cast<int64_t>(e));
    }
    const json& off = v["data_offsets"];
    NL_CHECK(off.is_array() && off.size() == 2 && off[0].is_number_unsigned() && off[1].is_number_unsigned(),
             what, ": tensor '", name, "' has bad data_offsets ", off.dump());
    const uint64_t b = off[0].get<uint64_t>(), e = off[1].get<uint64_t>();
    NL_CHECK(b <= e && e <= data_size, what, ": tensor '", name, "' has data_offsets [", b, ", ", e,
             "] outside the ", data_size, " data bytes");
    NL_CHECK(e - b == numel * 4, what, ": tensor '", name, "' has ", e - b, " bytes for shape ", shape.dump(),
             ", which needs ", numel * 4);
    ranges.push_back({b, e, name});
    Tensor t = Tensor::empty(Shape(dims), dt == "F32" ? DType::F32 : DType::I32);
    void* dst = t.dtype() == DType::F32 ? static_cast<void*>(t.data_f32()) : t.data_i32();
    if (numel) std::memcpy(dst, data + b, static_cast<size_t>(numel * 4));
    out.tensors.emplace_back(name, t);
  }
  // The byte ranges must tile the data exactly: no overlap (two names, one buffer) and no gap.
  std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) {
    return a.begin < b.begin || (a.begin == b.begin && a.end < b.end);
  });
  uint64_t at = 0;
  for (const Range& r : ranges) {
    NL_CHECK(r.begin == at, what, ": tensor '", r.name, "' starts at byte ", r.begin, " where ", at,
             " was expected (overlapping or missing data)");
    at = r.end;
  }
  NL_CHECK(at == data_size, what, ": ", data_size - at, " data bytes belong to no tensor");
  return out;
}

TensorFile load_safetensors(const std::string& path) {
  std::error_code ec;
  NL_CHECK(fs::is_regular_file(path, ec), "checkpoint ", path, " is missing or not a regular file");
  const uintmax_t size = fs::file_size(path, ec);
  NL_CHECK(!ec && size <= (8ull << 30), "checkpoint ", path, ": cannot read its size, or it exceeds 8 GiB");
  std::ifstream in(path, std::ios::binary);
  NL_CHECK(in.good(), "cannot open ", path, ": ", std::strerror(errno));
  std::string bytes(static_cast<size_t>(size), '\0');
  in.read(bytes.data(), static_cast<std::streamsize>(size));
  NL_CHECK(in.gcount() == static_cast<std::streamsize>(size), "reading ", path, " failed");
  return parse_safetensors(bytes, path);
}

}  // namespace nl::nn
