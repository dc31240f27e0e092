#pragma once
// Datasheet figures of the GPUs the benchmarks and the GPU model speak of (dense, no sparsity;
// boost clock), and the per-SM limits of the CUDA C++ Programming Guide's compute capability
// tables (sm_80, sm_90). One table for bench/gpu_model, bench_train_step --profile and
// bench_conv --device cuda.
#include <string>

namespace bench {

struct GpuDatasheet {
  const char* name;
  const char* arch;
  int sms;
  double bandwidth;  // DRAM bytes/s
  double fp32;       // FLOP/s
  double tf32;       // FLOP/s, tensor cores
  double l2;         // bytes
  int smem_per_sm;   // bytes usable by blocks
  double clock;      // Hz
};

inline constexpr GpuDatasheet kGpus[] = {
    {"A100", "sm_80", 108, 2.039e12, 19.5e12, 156e12, 40.0 * (1 << 20), 164 * 1024, 1.41e9},
    {"H100", "sm_90", 132, 3.35e12, 66.9e12, 494.7e12, 50.0 * (1 << 20), 228 * 1024, 1.98e9},
    {"H200", "sm_90", 132, 4.8e12, 66.9e12, 494.7e12, 50.0 * (1 << 20), 228 * 1024, 1.98e9},
};

// The entry whose name the device's description contains ("NVIDIA H200", "cuemu (... H100
// profile ...)"); the H100's for any other.
inline const GpuDatasheet& datasheet_for(const std::string& device) {
  for (const GpuDatasheet& g : kGpus)
    if (device.find(g.name) != std::string::npos) return g;
  return kGpus[1];
}

}  // namespace bench
