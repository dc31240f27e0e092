#pragma once
// Seeded, counter-based random numbers: the same seed gives bitwise-identical runs on every
// machine (no std:: distributions, whose output is implementation-defined).
#include <cstdint>

namespace nl {

class Generator {
 public:
  explicit Generator(uint64_t seed = 0) : seed_(seed) {}

  uint64_t seed() const { return seed_; }
  uint64_t offset() const { return counter_; }
  void set_state(uint64_t seed, uint64_t offset) {
    seed_ = seed;
    counter_ = offset;
    lane_ = 4;
  }

  // Reserves counter blocks for n draws made by a kernel (see normlab/core/kernel/philox.h) and returns
  // the first block; the host stream continues after them.
  uint64_t reserve(uint64_t n);

  uint32_t next_u32();
  float next_uniform();  // [0, 1)
  float next_normal();   // N(0, 1), Box-Muller
  // An integer in [0, n), unbiased (rejection sampling).
  uint64_t next_below(uint64_t n);

 private:
  uint64_t seed_;
  uint64_t counter_ = 0;
  uint32_t buf_[4] = {0, 0, 0, 0};
  int lane_ = 4;  // 4 = buffer exhausted
};

// The process-wide generator used where none is passed explicitly.
Generator& default_generator();
void manual_seed(uint64_t seed);

}  // namespace nl
