#include "cpu_peak.h"

#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <stdexcept>
#include <thread>
#include <vector>

namespace bench {
namespace {

constexpr int kChains = 24;

// One function per instruction set, each with its own target attribute (a shared template would
// be compiled for one target only). Each returns a value that depends on every chain, so the
// loop cannot be dropped.
__attribute__((target("avx2,fma"))) float fma_avx2(long iters) {
  __m256 acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm256_set1_ps(1.0f + 1e-3f * float(i));
  const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-6f);
  for (long n = 0; n < iters; ++n)
#pragma GCC unroll 32
    for (int i = 0; i < kChains; ++i) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
  __m256 s = acc[0];
  for (int i = 1; i < kChains; ++i) s = _mm256_add_ps(s, acc[i]);
  return _mm256_cvtss_f32(s);
}

__attribute__((target("avx512f"))) float fma_avx512(long iters) {
  __m512 acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm512_set1_ps(1.0f + 1e-3f * float(i));
  const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-6f);
  for (long n = 0; n < iters; ++n)
#pragma GCC unroll 32
    for (int i = 0; i < kChains; ++i) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
  __m512 s = acc[0];
  for (int i = 1; i < kChains; ++i) s = _mm512_add_ps(s, acc[i]);
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, s);
  return lanes[0] + lanes[15];
}

__attribute__((target("avx512f,avx512bf16"))) float dot_bf16(long iters) {
  __m512 acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm512_set1_ps(1e-3f * float(i));
  // Small products: each lane grows by 2 * 1e-6 a step (two pairs) and stays far from overflow.
  const __m512bh a = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-3f), _mm512_set1_ps(1e-3f));
  const __m512bh b = a;
  for (long n = 0; n < iters; ++n)
#pragma GCC unroll 32
    for (int i = 0; i < kChains; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
  __m512 s = acc[0];
  for (int i = 1; i < kChains; ++i) s = _mm512_add_ps(s, acc[i]);
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, s);
  return lanes[0] + lanes[15];
}

// GFLOP/s of `kernel` on `threads` threads at once: `flops_per_iter` per loop trip per thread,
// the trip count sized from a short probe to about 0.1 s, best of three rounds.
double rate(float (*kernel)(long), double flops_per_iter, int threads) {
  using Clock = std::chrono::steady_clock;
  volatile float sink = 0.0f;
  auto run = [&](long iters) {
    std::vector<std::thread> pool;
    std::vector<float> out(size_t(threads), 0.0f);
    const auto t0 = Clock::now();
    for (int t = 0; t < threads; ++t) pool.emplace_back([&, t] { out[size_t(t)] = kernel(iters); });
    for (std::thread& th : pool) th.join();
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    for (float v : out) sink = sink + v;
    return s;
  };
  long iters = 1 << 16;
  double s = run(iters);
  while (s < 0.01) iters *= 4, s = run(iters);
  iters = std::max<long>(1, long(double(iters) * 0.1 / s));
  double best = 1e300;
  for (int round = 0; round < 3; ++round) best = std::min(best, run(iters));
  return flops_per_iter * double(iters) * threads / best / 1e9;
}

}  // namespace

CpuPeak measure_cpu_peak(int threads) {
  if (threads < 1) throw std::invalid_argument("measure_cpu_peak: threads must be at least 1");
  CpuPeak p;
  p.threads = threads;
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    p.fp32_avx2 = rate(fma_avx2, 2.0 * 8 * kChains, threads);
  if (__builtin_cpu_supports("avx512f")) p.fp32_avx512 = rate(fma_avx512, 2.0 * 16 * kChains, threads);
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bf16"))
    p.bf16_avx512 = rate(dot_bf16, 64.0 * kChains, threads);
  return p;
}

std::string CpuPeak::describe() const {
  char line[256];
  std::snprintf(
      line, sizeof line,
      "measured peak on %d thread%s: FP32 FMA %.0f GFLOP/s (256-bit), %.0f (512-bit); bf16 dot %.0f", threads,
      threads == 1 ? "" : "s", fp32_avx2, fp32_avx512, bf16_avx512);
  return line;
}

}  // namespace bench
