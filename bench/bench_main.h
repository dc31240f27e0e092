#pragma once
// The shared main of the Google Benchmark programs: takes `--threads N` (0: all cores) before
// Google Benchmark sees the flags, sets it for normlab (and thereby for OpenMP, which oneDNN
// and Eigen use too, so every library in a run gets the same count), records it in the output's
// context, then runs what `register_extra` adds besides the BENCHMARK() macros.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "normlab/core/threading.h"

namespace bench {

inline int run_main(int argc, char** argv, void (*register_extra)() = nullptr) {
  int threads = 0;
  std::vector<char*> rest;
  for (int i = 0; i < argc; ++i) {
    if (std::strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
      threads = std::atoi(argv[++i]);
      continue;
    }
    rest.push_back(argv[i]);
  }
  nl::set_num_threads(threads);
  int n = static_cast<int>(rest.size());
  benchmark::Initialize(&n, rest.data());
  benchmark::AddCustomContext("threads", std::to_string(nl::get_num_threads()));
  if (register_extra) register_extra();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

}  // namespace bench
