#include <omp.h>

#include <Eigen/Core>

#include "normlab/core/threading.h"

namespace nl {

void set_num_threads(int n) {
  if (n <= 0) n = omp_get_num_procs();
  omp_set_num_threads(n);
  Eigen::setNbThreads(n);
}

int get_num_threads() { return Eigen::nbThreads(); }

}  // namespace nl
