#pragma once
// The machine's own arithmetic peak, measured in the run that reports against it (machines change
// under the project: a Zen 4 and a Zen 5 differ twice in FMA throughput, so a percentage of a
// figure from another day means nothing).
//
// Each thread runs 24 independent accumulator chains of one vector instruction (acc = acc * a + b,
// or bf16 acc += dot(a, b)) long enough to take about 0.1 s; 24 chains cover the latency (4-6
// cycles) times the pipes (2) of every x86 core in use, so the loop is bound by throughput. Every
// thread at once, best of three rounds; GFLOP/s count a multiply-add as 2 FLOPs (a bf16 dot
// instruction: 32 pairs, 64 FLOPs). A variant the CPU lacks (checked with __builtin_cpu_supports)
// reports 0. Hand-written because no library measures this: vendors publish datasheet peaks, and a
// GEMM library's rate is a kernel's, not the machine's.
#include <string>

namespace bench {

struct CpuPeak {
  int threads = 0;
  double fp32_avx2 = 0;    // GFLOP/s, 256-bit FMA (AVX2 + FMA)
  double fp32_avx512 = 0;  // GFLOP/s, 512-bit FMA (AVX-512F)
  double bf16_avx512 = 0;  // GFLOP/s, vdpbf16ps (AVX512-BF16)
  double fp32() const { return fp32_avx512 > fp32_avx2 ? fp32_avx512 : fp32_avx2; }
  std::string describe() const;  // one line
};

// Runs on `threads` threads at once (>= 1).
CpuPeak measure_cpu_peak(int threads);

}  // namespace bench
