// The tape: accumulation, shared subexpressions, NoGradGuard, freed graphs.
#include "helpers.h"
#include "normlab/core/autograd.h"
#include "normlab/core/error.h"
#include "normlab/core/ops.h"

using namespace nl;
using namespace nl::test;
using Catch::Matchers::Contains;

TEST_CASE("gradients of a diamond graph add up", "[autograd][quick]") {
  Tensor a = Tensor::from_vector({1, 2, 3}, {3}, test_device()).set_requires_grad();
  Tensor b = Tensor::from_vector({4, 5, 6}, {3}, test_device()).set_requires_grad();
  Tensor c = mul(a, b);
  Tensor loss = sum(add(mul(c, a), c));  // sum(a^2 b + a b)
  loss.backward();
  // d/da = 2ab + b, d/db = a^2 + a
  CHECK(a.grad().to_vector() == std::vector<float>{12, 25, 42});
  CHECK(b.grad().to_vector() == std::vector<float>{2, 6, 12});
  CHECK(loss.item() == Approx(4 + 20 + 54 + 4 + 10 + 18));
}

TEST_CASE("backward reports each leaf once, when its gradient is final, last layers first",
          "[autograd][quick]") {
  // w1 -> h = relu(x w1-ish) -> w2 feeds the loss twice (a diamond), w3 last; u gets no gradient
  // (its only path is cut by detach).
  Tensor x = Tensor::from_vector({1, -2, 3}, {3}, test_device());
  Tensor w1 = Tensor::from_vector({0.5f, 1, -1}, {3}, test_device()).set_requires_grad();
  Tensor w2 = Tensor::from_vector({2, 3, 4}, {3}, test_device()).set_requires_grad();
  Tensor w3 = Tensor::from_vector({1, 1, 2}, {3}, test_device()).set_requires_grad();
  Tensor u = Tensor::from_vector({7, 7, 7}, {3}, test_device()).set_requires_grad();
  Tensor h = relu(mul(x, w1));
  Tensor z = add(mul(h, w2), mul(add(h, mul(u, x).detach()), w2));
  Tensor loss = sum(mul(z, w3));
  std::vector<std::pair<const TensorImpl*, std::vector<float>>> seen;
  backward(loss, Tensor(),
           [&](const Tensor& leaf) { seen.emplace_back(leaf.impl().get(), leaf.grad().to_vector()); });
  REQUIRE(seen.size() == 3);  // u got none
  CHECK(seen[0].first == w3.impl().get());
  CHECK(seen[1].first == w2.impl().get());
  CHECK(seen[2].first == w1.impl().get());
  // Final when reported: w2's two contributions were both in.
  CHECK(seen[1].second == w2.grad().to_vector());
  CHECK(seen[0].second == w3.grad().to_vector());
  CHECK(seen[2].second == w1.grad().to_vector());
  CHECK_FALSE(u.grad().defined());
}

TEST_CASE("backward accumulates into .grad until it is zeroed", "[autograd][quick]") {
  Tensor a = Tensor::from_vector({1, 2}, {2}, test_device()).set_requires_grad();
  sum(mul(a, a)).backward();
  sum(mul(a, a)).backward();
  CHECK(a.grad().to_vector() == std::vector<float>{4, 8});
  a.zero_grad();
  CHECK_FALSE(a.grad().defined());
  sum(a).backward();
  CHECK(a.grad().to_vector() == std::vector<float>{1, 1});
}

TEST_CASE("the same tensor used twice in one op gets both contributions", "[autograd][quick]") {
  Tensor a = Tensor::from_vector({3}, {1}, test_device()).set_requires_grad();
  sum(add(a, a)).backward();
  CHECK(a.grad().to_vector() == std::vector<float>{2});
}

TEST_CASE("NoGradGuard records nothing", "[autograd][quick]") {
  Tensor a = Tensor::ones({2}, test_device()).set_requires_grad();
  Tensor y;
  {
    NoGradGuard g;
    CHECK_FALSE(grad_enabled());
    y = mul(a, a);
  }
  CHECK(grad_enabled());
  CHECK_FALSE(y.requires_grad());
  CHECK(y.grad_fn() == nullptr);
  CHECK_THROWS_WITH(sum(y).backward(), Contains("does not require grad"));
}

TEST_CASE("backward through a freed graph, or from a non-scalar, is an error", "[autograd][errors][quick]") {
  Tensor a = Tensor::ones({2}, test_device()).set_requires_grad();
  Tensor y = mul(a, a);
  Tensor loss = sum(y);
  loss.backward();
  CHECK_THROWS_WITH(loss.backward(), Contains("a second time"));
  CHECK_THROWS_WITH(mul(a, a).backward(), Contains("gradient must be given for a non-scalar"));
  CHECK_THROWS_WITH(mul(a, a).backward(Tensor::ones({3}, test_device())), Contains("gradient of shape [3]"));
}

TEST_CASE("inputs that do not require grad get none and detach cuts the graph", "[autograd][quick]") {
  Tensor a = Tensor::ones({2}, test_device()).set_requires_grad();
  Tensor b = Tensor::full({2}, 3.0f, test_device());
  sum(mul(a, b)).backward();
  CHECK_FALSE(b.grad().defined());
  Tensor d = mul(a, a).detach();
  CHECK_FALSE(d.requires_grad());
  CHECK_THROWS_WITH(mul(a, a).set_requires_grad(false), Contains("only leaf"));
}

TEST_CASE("a graph no longer referenced frees its saved tensors", "[autograd][quick]") {
  Tensor a = Tensor::ones({1000}, test_device()).set_requires_grad();
  std::weak_ptr<TensorImpl> saved;
  {
    Tensor h = mul(a, a);
    saved = h.impl();
    Tensor loss = sum(relu(h));
  }
  CHECK(saved.expired());
}
