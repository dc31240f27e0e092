#pragma once

namespace nl {
// Threads the CPU kernels may use (Eigen's GEMM and the kernels' own parallel loops).
// n <= 0 means all hardware threads.
void set_num_threads(int n);
int get_num_threads();
}  // namespace nl
