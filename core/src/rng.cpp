#include "normlab/core/rng.h"

#include <cmath>

#include "normlab/core/kernel/philox.h"
#include "normlab/core/error.h"

namespace nl {

uint64_t Generator::reserve(uint64_t n) {
  // Start on a fresh block so a kernel's draws never overlap what the host already consumed.
  lane_ = 4;
  uint64_t first = counter_;
  counter_ += (n + 3) / 4;
  return first;
}

uint32_t Generator::next_u32() {
  if (lane_ == 4) {
    Philox4x32 ctr = {{static_cast<uint32_t>(counter_), static_cast<uint32_t>(counter_ >> 32), 0u, 0u}};
    Philox4x32 r = philox4x32_10(ctr, static_cast<uint32_t>(seed_), static_cast<uint32_t>(seed_ >> 32));
    for (int i = 0; i < 4; ++i) buf_[i] = r.v[i];
    ++counter_;
    lane_ = 0;
  }
  return buf_[lane_++];
}

float Generator::next_uniform() { return static_cast<float>(next_u32() >> 8) * (1.0f / 16777216.0f); }

float Generator::next_normal() {
  // 1 - u lies in (0, 1], so the log is finite.
  double u1 = 1.0 - static_cast<double>(next_uniform());
  double u2 = static_cast<double>(next_uniform());
  return static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2));
}

uint64_t Generator::next_below(uint64_t n) {
  NL_CHECK(n > 0 && n <= 0xFFFFFFFFull, "next_below(n) needs 0 < n < 2^32, got ", n);
  uint32_t limit = static_cast<uint32_t>((0x100000000ull / n) * n - 1);
  for (;;) {
    uint32_t r = next_u32();
    if (r <= limit) return r % n;
  }
}

Generator& default_generator() {
  static Generator gen(0);
  return gen;
}

void manual_seed(uint64_t seed) { default_generator().set_state(seed, 0); }

}  // namespace nl
