#include "helpers.h"
#include "normlab/core/kernel/philox.h"

using namespace nl;

TEST_CASE("Philox4x32-10 matches the Random123 known-answer vectors", "[rng][quick]") {
  // From Random123's kat_vectors (philox4x32 with 10 rounds).
  Philox4x32 r = philox4x32_10({{0, 0, 0, 0}}, 0, 0);
  CHECK(r.v[0] == 0x6627e8d5u);
  CHECK(r.v[1] == 0xe169c58du);
  CHECK(r.v[2] == 0xbc57ac4cu);
  CHECK(r.v[3] == 0x9b00dbd8u);
  r = philox4x32_10({{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}}, 0xffffffffu, 0xffffffffu);
  CHECK(r.v[0] == 0x408f276du);
  CHECK(r.v[1] == 0x41c83b0eu);
  CHECK(r.v[2] == 0xa20bc7c6u);
  CHECK(r.v[3] == 0x6d5451fdu);
  r = philox4x32_10({{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}}, 0xa4093822u, 0x299f31d0u);
  CHECK(r.v[0] == 0xd16cfe09u);
  CHECK(r.v[1] == 0x94fdccebu);
  CHECK(r.v[2] == 0x5001e420u);
  CHECK(r.v[3] == 0x24126ea1u);
}

TEST_CASE("the same seed gives the same stream and different seeds differ", "[rng][quick]") {
  Generator a(123), b(123), c(124);
  std::vector<uint32_t> va, vb, vc;
  for (int i = 0; i < 100; ++i)
    va.push_back(a.next_u32()), vb.push_back(b.next_u32()), vc.push_back(c.next_u32());
  CHECK(va == vb);
  CHECK(va != vc);
}

TEST_CASE("uniform and normal draws have the right moments", "[rng][quick]") {
  Generator g(5);
  const int n = 100000;
  double su = 0, sn = 0, sn2 = 0;
  for (int i = 0; i < n; ++i) {
    float u = g.next_uniform();
    REQUIRE(u >= 0.0f);
    REQUIRE(u < 1.0f);
    su += u;
    double z = g.next_normal();
    sn += z, sn2 += z * z;
  }
  CHECK(su / n == Approx(0.5).margin(0.005));
  CHECK(sn / n == Approx(0.0).margin(0.02));
  CHECK(sn2 / n == Approx(1.0).margin(0.02));
  std::vector<int> hits(7, 0);
  for (int i = 0; i < 7000; ++i) ++hits[g.next_below(7)];
  for (int h : hits) CHECK(h > 800);
}

TEST_CASE("kernel draws and host draws never overlap", "[rng][quick]") {
  Generator g(9);
  g.next_u32();
  uint64_t first = g.reserve(10);  // blocks first .. first + 2
  CHECK(first == 1);
  CHECK(g.offset() == 4);
  Generator h(9);
  h.set_state(9, 4);
  CHECK(g.next_u32() == h.next_u32());
}
