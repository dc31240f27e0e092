// The machine's FP32 FMA and bf16 dot-product peaks, measured now (bench/cpu_peak.h).
//
//   bench_peak [--threads 2] [--json]
//
// bench_train_step measures the same in its own run and reports the step against it.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <exception>
#include <thread>

#include "cpu_peak.h"

int main(int argc, char** argv) {
  CLI::App app{"normlab: the CPU's measured FP32 FMA and bf16 dot-product peaks"};
  int threads = 0;
  bool json = false;
  app.add_option("--threads", threads, "threads at once (0: every core)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_flag("--json", json, "one JSON object instead of a line");
  CLI11_PARSE(app, argc, argv);
  try {
    if (threads == 0) threads = int(std::max(1u, std::thread::hardware_concurrency()));
    const bench::CpuPeak p = bench::measure_cpu_peak(threads);
    if (json)
      std::printf(
          "{\"threads\":%d,\"fp32_avx2_gflops\":%.1f,\"fp32_avx512_gflops\":%.1f,\"bf16_avx512_gflops\":%.1f}"
          "\n",
          p.threads, p.fp32_avx2, p.fp32_avx512, p.bf16_avx512);
    else
      std::printf("bench_peak: %s\n", p.describe().c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_peak: %s\n", e.what());
    return 1;
  }
  return 0;
}
