#include "normlab/core/storage.h"

#include <array>

#include "normlab/core/dispatch.h"
#include "normlab/core/error.h"
#include "normlab/core/kernel/stubs.h"

namespace nl {
namespace {
std::array<Allocator*, kNumDeviceTypes>& allocators() {
  static std::array<Allocator*, kNumDeviceTypes> table{};
  return table;
}
std::array<std::string, kNumDeviceTypes>& descriptions() {
  static std::array<std::string, kNumDeviceTypes> table{};
  return table;
}
}  // namespace

void set_device_description(DeviceType type, std::string text) {
  descriptions()[static_cast<size_t>(type)] = std::move(text);
}

std::string device_description(DeviceType type) {
  ensure_backends_registered();
  const std::string& d = descriptions()[static_cast<size_t>(type)];
  if (!d.empty()) return d;
  if (type == DeviceType::CUDA)
    return std::string("this build has no CUDA backend (") + built_backends() + ")";
  return "CPU";
}

void set_allocator(DeviceType type, Allocator* allocator) {
  allocators()[static_cast<size_t>(type)] = allocator;
}

bool device_available(DeviceType type) {
  ensure_backends_registered();
  return allocators()[static_cast<size_t>(type)] != nullptr;
}

Allocator& get_allocator(Device device) {
  ensure_backends_registered();
  Allocator* a = allocators()[static_cast<size_t>(device.type)];
  NL_CHECK(a != nullptr, "device ", device, " is not available (this build has backends: ", built_backends(),
           ")");
  return *a;
}

void* native_stream(Device device) {
  if (device.is_cpu()) return nullptr;
  return native_stream_stub(device);
}

Storage::Storage(size_t nbytes, Device device) : nbytes_(nbytes), device_(device) {
  allocator_ = &get_allocator(device);
  // Zero-byte tensors still get a distinct, valid pointer so views of them behave uniformly.
  data_ = allocator_->allocate(nbytes == 0 ? 1 : nbytes);
}

Storage::~Storage() {
  if (data_) allocator_->deallocate(data_, nbytes_ == 0 ? 1 : nbytes_);
}

}  // namespace nl
