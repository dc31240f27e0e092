#pragma once
// Shared test utilities: closeness checks with informative failures, random inputs.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "normlab/core/rng.h"
#include "normlab/core/tensor.h"

namespace nl::test {

// Pictures need gnuplot: scripts/install-deps.sh installs it and `make test` requires the PNGs.
// Only a machine that cannot have it (the lent GPU machine: no Debian packages) sets
// NORMLAB_TEST_NO_GNUPLOT=1, as scripts/gpu-check.sh does there and says so; the app tests then
// check what the app leaves instead (plots.gp, its data and the message saying how to draw them).
inline bool gnuplot_expected() {
  const char* e = std::getenv("NORMLAB_TEST_NO_GNUPLOT");
  return !(e && std::string(e) == "1");
}

// The sanitizer stage sets NORMLAB_TEST_LIGHT=1 (Makefile, test-asan): the app tests then train on
// fewer images per epoch. They are there for the app's own code (flags, files, reports,
// checkpoints, signals), which runs the same for 2 steps as for 8; the training steps themselves
// run under the sanitizers in the op and gradient tests. The CPU and emulate stages run them whole.
inline bool light_tests() {
  const char* e = std::getenv("NORMLAB_TEST_LIGHT");
  return e && std::string(e) == "1";
}

// The device the op tests run on: NORMLAB_TEST_DEVICE=cuda runs the same tests on the CUDA
// backend (emulated by cuemu where no GPU exists); otherwise the CPU.
inline Device test_device() {
  static const Device d = [] {
    const char* e = std::getenv("NORMLAB_TEST_DEVICE");
    return e && std::string(e) == "cuda" ? Device::cuda() : Device::cpu();
  }();
  return d;
}

// Largest violation of |a - b| <= atol + rtol * |b|, as a ratio (<= 1 passes), with the index.
struct Closeness {
  double worst_ratio = 0.0;
  size_t worst_index = 0;
  double a = 0.0, b = 0.0;
  std::string describe(const std::string& what) const {
    std::ostringstream os;
    os << what << ": worst element " << worst_index << " got " << a << " expected " << b
       << " (error/tolerance = " << worst_ratio << ")";
    return os.str();
  }
};

inline Closeness closeness(const std::vector<float>& a, const std::vector<double>& b, double rtol,
                           double atol) {
  REQUIRE(a.size() == b.size());
  Closeness c;
  for (size_t i = 0; i < a.size(); ++i) {
    double tol = atol + rtol * std::abs(b[i]);
    double ratio = std::abs(a[i] - b[i]) / tol;
    if (!(ratio <= c.worst_ratio)) {  // also catches NaN
      c.worst_ratio = std::isnan(ratio) ? INFINITY : ratio;
      c.worst_index = i, c.a = a[i], c.b = b[i];
    }
  }
  return c;
}

inline double rms(const std::vector<double>& v) {
  double s = 0.0;
  for (double x : v) s += x * x;
  return v.empty() ? 0.0 : std::sqrt(s / static_cast<double>(v.size()));
}

// Relative comparison floored at the reference's RMS, so near-zero elements of a tensor are held
// to the tensor's own scale instead of to an impossible relative bound.
inline void require_close(const Tensor& got, const std::vector<double>& expected, double rtol,
                          const std::string& what) {
  std::vector<float> a = got.to_vector();
  Closeness c = closeness(a, expected, rtol, rtol * rms(expected) + 1e-30);
  INFO(c.describe(what));
  REQUIRE(c.worst_ratio <= 1.0);
}

inline std::vector<double> to_double(const Tensor& t) {
  std::vector<float> v = t.to_vector();
  return std::vector<double>(v.begin(), v.end());
}

inline Tensor randn(const Shape& s, uint64_t seed, float scale = 1.0f, float shift = 0.0f) {
  Generator g(seed);
  std::vector<float> v(static_cast<size_t>(s.numel()));
  for (float& x : v) x = g.next_normal() * scale + shift;
  return Tensor::from_vector(v, s, test_device());
}

}  // namespace nl::test
