#pragma once
#include <cstdint>
#include <ostream>

namespace nl {

enum class DeviceType : uint8_t { CPU = 0, CUDA = 1 };
inline constexpr int kNumDeviceTypes = 2;

struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;

  static constexpr Device cpu() { return {DeviceType::CPU, 0}; }
  static constexpr Device cuda(int index = 0) { return {DeviceType::CUDA, index}; }
  bool is_cpu() const { return type == DeviceType::CPU; }
  bool is_cuda() const { return type == DeviceType::CUDA; }
  friend bool operator==(const Device&, const Device&) = default;
};

inline std::ostream& operator<<(std::ostream& os, DeviceType t) {
  return os << (t == DeviceType::CPU ? "cpu" : "cuda");
}
inline std::ostream& operator<<(std::ostream& os, const Device& d) {
  os << d.type;
  if (d.is_cuda()) os << ':' << d.index;
  return os;
}

enum class DType : uint8_t { F32 = 0, I32 = 1 };

inline size_t dtype_size(DType) { return 4; }  // both dtypes are 4 bytes wide
inline std::ostream& operator<<(std::ostream& os, DType t) {
  return os << (t == DType::F32 ? "float32" : "int32");
}

}  // namespace nl
