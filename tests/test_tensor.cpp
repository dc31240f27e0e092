// Tensor core: geometry, views, copies, element access and the errors users can cause.
#include "helpers.h"
#include "normlab/core/error.h"
#include "normlab/core/ops.h"

using namespace nl;
using namespace nl::test;
using Catch::Matchers::Contains;

TEST_CASE("tensors are created with contiguous strides and the requested fill", "[tensor][quick]") {
  Tensor t = Tensor::zeros({2, 3, 4});
  CHECK(t.shape() == Shape{2, 3, 4});
  CHECK(t.strides() == std::vector<int64_t>{12, 4, 1});
  CHECK(t.numel() == 24);
  CHECK(t.is_contiguous());
  CHECK(t.device() == Device::cpu());
  CHECK(t.at({1, 2, 3}) == 0.0f);
  CHECK(Tensor::full({3}, 2.5f).to_vector() == std::vector<float>{2.5f, 2.5f, 2.5f});
  CHECK(Tensor::zeros({2}, DType::I32).to_int_vector() == std::vector<int32_t>{0, 0});
  Tensor s = Tensor::from_vector({4.0f}, {});
  CHECK(s.dim() == 0);
  CHECK(s.item() == 4.0f);
  CHECK(Tensor::empty({0, 3}).numel() == 0);
}

TEST_CASE("views share storage and reshape copies only when it must", "[tensor][quick]") {
  Tensor t = Tensor::from_vector({0, 1, 2, 3, 4, 5}, {2, 3});
  Tensor v = t.view({3, 2});
  v.set({2, 1}, 50.0f);
  CHECK(t.at({1, 2}) == 50.0f);  // same storage
  Tensor tt = t.transpose(0, 1);
  CHECK(tt.shape() == Shape{3, 2});
  CHECK_FALSE(tt.is_contiguous());
  CHECK(tt.at({2, 0}) == 2.0f);
  CHECK(tt.at({2, 1}) == 50.0f);
  CHECK(tt.to_vector() == std::vector<float>{0, 3, 1, 4, 2, 50});
  Tensor c = tt.contiguous();
  CHECK(c.is_contiguous());
  CHECK(c.to_vector() == tt.to_vector());
  c.set({0, 0}, -1.0f);
  CHECK(t.at({0, 0}) == 0.0f);  // a copy, not a view
  CHECK(tt.reshape({6}).to_vector() == std::vector<float>{0, 3, 1, 4, 2, 50});
  CHECK(t.flatten().shape() == Shape{6});
  CHECK(Tensor::zeros({2, 3, 4, 5}).flatten(1).shape() == Shape{2, 60});
  CHECK(Tensor::zeros({2, 3, 4, 5}).flatten(1, 2).shape() == Shape{2, 12, 5});
  Tensor k = t.clone();
  k.set({0, 1}, 9.0f);
  CHECK(t.at({0, 1}) == 1.0f);
  // view_at: a piece of a flat buffer, sharing it; a view of a view adds the offsets.
  Tensor flat = Tensor::from_vector({0, 1, 2, 3, 4, 5, 6, 7}, {8});
  Tensor piece = flat.view_at(2, {2, 2});
  CHECK(piece.to_vector() == std::vector<float>{2, 3, 4, 5});
  piece.copy_(Tensor::from_vector({20, 30, 40, 50}, {2, 2}));
  CHECK(flat.to_vector() == std::vector<float>{0, 1, 20, 30, 40, 50, 6, 7});
  CHECK(piece.view_at(3, {1}).item() == 50.0f);
  CHECK_THROWS_WITH(flat.view_at(5, {4}), Catch::Contains("elements [5, 9) are outside a tensor of 8"));
  CHECK_THROWS_WITH(t.transpose(0, 1).view_at(0, {2}), Catch::Contains("needs a contiguous tensor"));
}

TEST_CASE("misuse gives errors that name the problem", "[tensor][errors][quick]") {
  Tensor t = Tensor::zeros({2, 3});
  CHECK_THROWS_WITH(t.view({4, 2}), Contains("cannot view a tensor of shape [2, 3]"));
  CHECK_THROWS_WITH(t.transpose(0, 1).view({6}), Contains("not contiguous"));
  CHECK_THROWS_WITH(t.transpose(0, 1).data_f32(), Contains("non-contiguous"));
  CHECK_THROWS_WITH(t.at({2, 0}), Contains("out of range for dimension 0"));
  CHECK_THROWS_WITH(t.at({0}), Contains("1 coordinates for a tensor of shape [2, 3]"));
  CHECK_THROWS_WITH(t.data_i32(), Contains("expected an int32 tensor"));
  CHECK_THROWS_WITH(t.item(), Contains("one-element"));
  CHECK_THROWS_WITH(Tensor::from_vector({1, 2, 3}, {2, 2}), Contains("do not fill shape [2, 2]"));
  CHECK_THROWS_WITH(Tensor().shape(), Contains("undefined"));
  CHECK_THROWS_WITH(t.size(2), Contains("dimension 2 is out of range"));
  CHECK_THROWS_AS(Tensor::zeros({-1}), Error);
  // Errors carry file:line for us and start with the library's name for users.
  CHECK_THROWS_WITH(t.view({5}), Catch::Matchers::StartsWith("normlab: "));
  CHECK_THROWS_WITH(t.view({5}), Contains("tensor.cpp:"));
}

TEST_CASE("ops reject wrong shapes, dtypes and devices with the op's name", "[ops][errors][quick]") {
  Tensor x = Tensor::zeros({2, 3, 5, 5});
  CHECK_THROWS_WITH(conv2d(x, Tensor::zeros({4, 2, 3, 3})),
                    Contains("conv2d: input has 3 channels but weight of shape [4, 2, 3, 3]"));
  CHECK_THROWS_WITH(conv2d(Tensor::zeros({3, 5, 5}), Tensor::zeros({4, 3, 3, 3})),
                    Contains("conv2d: input must be 4-D"));
  CHECK_THROWS_WITH(conv2d(x, Tensor::zeros({4, 3, 7, 7})), Contains("larger than the padded input"));
  CHECK_THROWS_WITH(group_norm(x, 2, Tensor(), Tensor()), Contains("groups (2) must be >= 1 and divide"));
  CHECK_THROWS_WITH(batch_norm(x, Tensor::ones({4}), Tensor(), Tensor(), Tensor(), true),
                    Contains("batch_norm: weight must have shape [3]"));
  CHECK_THROWS_WITH(batch_norm(x, Tensor(), Tensor(), Tensor(), Tensor(), false),
                    Contains("eval mode needs running statistics"));
  CHECK_THROWS_WITH(add(Tensor::zeros({2}), Tensor::zeros({3})), Contains("add: shapes [2] and [3] differ"));
  CHECK_THROWS_WITH(add(Tensor::zeros({2}), Tensor::zeros({2}, DType::I32)), Contains("must be float32"));
  CHECK_THROWS_WITH(nll_loss(Tensor::zeros({2, 10}), Tensor::from_ints({1, 10}, {2})),
                    Contains("target[1] = 10 is not a class index in [0, 10)"));
  CHECK_THROWS_WITH(nll_loss(Tensor::zeros({2, 10}), Tensor::zeros({2})), Contains("must be int32"));
  CHECK_THROWS_WITH(max_pool2d(Tensor::zeros({1, 1, 1, 1})), Contains("smaller than the 2x2 window"));
  CHECK_THROWS_WITH(dropout(x, 1.0f, true), Contains("dropout: probability must be in [0, 1)"));
}

TEST_CASE("a device without a backend is refused with the build's backends", "[dispatch][errors][quick]") {
  if (device_available(DeviceType::CUDA)) {
    // This build has CUDA and a device answered: the same path must hand out cuda tensors, and
    // the description names the device (cuemu, or a real GPU with its architecture).
    CHECK(Tensor::zeros({2}, DType::F32, Device::cuda()).device() == Device::cuda());
    CHECK_THAT(device_description(DeviceType::CUDA), Contains("cuemu") || Contains("(sm_"));
    return;
  }
  // No allocator: either no CUDA backend, or one that found no GPU; the description says which.
  CHECK_THAT(device_description(DeviceType::CUDA), Contains("no CUDA backend") || Contains("no usable GPU"));
  CHECK_THROWS_WITH(Tensor::zeros({2}, DType::F32, Device::cuda()),
                    Contains("device cuda:0 is not available"));
  CHECK_THROWS_WITH(Tensor::zeros({2}, DType::F32, Device::cuda()), Contains("NORMLAB_CUDA"));
}
