#pragma once
// Threading helpers for the CPU kernels (OpenMP underneath; nl::set_num_threads sets the count).
//
// Work is split into chunks whose boundaries do not depend on the thread count, and every
// reduction over chunks is summed in chunk order afterwards, so a kernel gives bitwise the
// same result with 1 or 16 threads. Eigen calls made inside a parallel region run
// single-threaded (Eigen checks omp_get_num_threads), which is what we want: one GEMM per thread.
#include <omp.h>

#include <cstdint>
#include <vector>

namespace nl::cpu {

// Calls f(begin, end) for [0, n) cut into pieces of `grain` (the last may be shorter), spread
// over the threads. Runs inline when there is one piece or one thread.
template <class F>
void parallel_for(int64_t n, int64_t grain, F&& f) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  const int64_t pieces = (n + grain - 1) / grain;
  if (pieces == 1 || omp_get_max_threads() == 1 || omp_in_parallel()) {
    for (int64_t b = 0; b < n; b += grain) f(b, b + grain < n ? b + grain : n);
    return;
  }
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < pieces; ++i) {
    const int64_t b = i * grain;
    f(b, b + grain < n ? b + grain : n);
  }
}

// Per-thread scratch that grows and is never freed, so steady-state training does not allocate:
// OpenMP keeps its pool threads alive, and with them their thread_local buffers. `slot` tells
// apart buffers one thread needs at the same time.
inline float* thread_scratch(int slot, size_t n) {
  thread_local std::vector<float> bufs[4];
  auto& v = bufs[slot];
  if (v.size() < n) v.resize(n);
  return v.data();
}

}  // namespace nl::cpu
