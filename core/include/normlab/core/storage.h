#pragma once
#include <cstddef>
#include <memory>
#include <string>

#include "normlab/core/device.h"

namespace nl {

// Raw memory of one device. A backend registers one Allocator per device type.
class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual void* allocate(size_t nbytes) = 0;
  virtual void deallocate(void* ptr, size_t nbytes) noexcept = 0;
};

void set_allocator(DeviceType type, Allocator* allocator);
// Whether tensors can live on the device type here: its backend is built in *and* found a device
// (a CUDA build on a machine without a usable GPU registers no allocator).
bool device_available(DeviceType type);
// One line for a program's first lines: what the device is ("NVIDIA H200 (sm_90, 132 SMs,
// 139.8 GiB)") or why it is not available ("built with CUDA, but no usable GPU: ...").
std::string device_description(DeviceType type);
// Backends call this when they register.
void set_device_description(DeviceType type, std::string text);
// Throws a clear error when the device type has no allocator in this build.
Allocator& get_allocator(Device device);
// For a library that enqueues its own work on the device (nl::dist's NCCL backend): the native
// stream (a cudaStream_t: 0, the legacy default stream, unless nl::cuda::set_stream chose
// another) on which normlab orders this thread's work for the device; nullptr for the CPU. Work
// ordered after it (an event recorded on it) sees the results of every op already returned.
void* native_stream(Device device);

// A refcounted block of device memory shared by tensors that view it.
class Storage {
 public:
  Storage(size_t nbytes, Device device);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }

 private:
  void* data_ = nullptr;
  size_t nbytes_ = 0;
  Device device_;
  Allocator* allocator_ = nullptr;
};

}  // namespace nl
