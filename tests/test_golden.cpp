// Outputs and gradients against fixtures written by PyTorch (tests/golden/make_golden.py).
// Tolerance: 1e-5 relative for forward values, 1e-4 for conv and norm gradients, each floored
// at the reference tensor's RMS (see require_close).
#include <fstream>
#include <set>
#include <nlohmann/json.hpp>

#include "helpers.h"
#include "normlab/core/ops.h"
#include "normlab/nn/layers.h"

using namespace nl;
using namespace nl::test;
using json = nlohmann::json;

namespace {

json load(const std::string& file) {
  std::ifstream in(std::string(NORMLAB_GOLDEN_DIR) + "/" + file);
  REQUIRE(in.good());
  return json::parse(in);
}

Tensor tensor_of(const json& j) {
  std::vector<int64_t> dims = j.at("shape").get<std::vector<int64_t>>();
  std::vector<double> d = j.at("data").get<std::vector<double>>();
  return Tensor::from_vector(std::vector<float>(d.begin(), d.end()), Shape(dims), test_device());
}

std::vector<double> values_of(const json& j) { return j.at("data").get<std::vector<double>>(); }

// Runs one fixture: builds leaves, calls op, backpropagates the stored output gradient and
// compares the named outputs and gradients.
void check_case(const json& c, double grad_rtol) {
  const std::string name = c.at("name"), op = c.at("op");
  const json& attrs = c.at("attrs");
  INFO("fixture " << name);
  std::map<std::string, Tensor> in;
  for (auto& [k, v] : c.at("inputs").items()) in[k] = tensor_of(v);
  for (auto& [k, v] : c.at("grads").items()) in[k].set_requires_grad(true);
  auto get = [&](const char* k) { return in.count(k) ? in[k] : Tensor(); };

  Tensor y;
  std::map<std::string, Tensor> extra;
  if (op == "conv2d") {
    y = conv2d(in["x"], in["w"], get("b"), attrs.at("stride"), attrs.at("padding"));
  } else if (op == "batch_norm") {
    y = batch_norm(in["x"], in["gamma"], in["beta"], in["running_mean"], in["running_var"],
                   attrs.at("training"), attrs.at("momentum"), attrs.at("eps"));
    extra["running_mean"] = in["running_mean"], extra["running_var"] = in["running_var"];
  } else if (op == "group_norm") {
    y = group_norm(in["x"], attrs.at("groups"), in["gamma"], in["beta"], attrs.at("eps"));
  } else if (op == "normalize") {
    // The norm family's variants: the attrs name the spec.
    const std::string kind = attrs.at("spec");
    const float eps = attrs.at("eps");
    NormSpec spec = kind == "in"    ? NormSpec::instance(eps)
                    : kind == "rms" ? NormSpec::rms(eps)
                    : kind == "gbn" ? NormSpec::ghost_batch_norm(attrs.at("ghost_batch"), 0.1f, eps)
                    : kind == "brn" ? NormSpec::batch_renorm(attrs.at("r_max"), attrs.at("d_max"), 0.1f, eps)
                    : kind == "frn" ? NormSpec::frn(eps)
                                    : NormSpec{};
    if (spec.stats == NormSpec::Stats::PerRow) FAIL("unknown variant " << kind);
    NormEpilogue e;
    e.tau = get("tau");
    y = normalize(in["x"], spec, in["gamma"], in["beta"], get("running_mean"), get("running_var"), true, e);
    if (in.count("running_mean"))
      extra["running_mean"] = in["running_mean"], extra["running_var"] = in["running_var"];
  } else if (op == "ws_conv2d") {
    Generator unused(0);  // the fixture's weights replace the drawn ones
    nn::Conv2d conv(in["x"].size(1), in["w"].size(0), in["w"].size(2), 1, attrs.at("padding"), false, unused);
    conv.weight_standardization = true, conv.ws_eps = attrs.at("eps");
    conv.weight = in["w"];
    y = conv.forward(in["x"]);
  } else if (op == "layer_norm") {
    y = layer_norm(in["x"], in["gamma"], in["beta"], attrs.at("eps"));
  } else if (op == "max_pool2d") {
    y = max_pool2d(in["x"], attrs.at("kernel"), attrs.at("stride"));
  } else if (op == "log_softmax") {
    y = log_softmax(in["x"]);
  } else if (op == "log_softmax_nll") {
    Tensor logp = log_softmax(in["x"]);
    extra["logp"] = logp;
    y = nll_loss(logp, Tensor::from_ints(c.at("target").get<std::vector<int32_t>>(), {in["x"].size(0)},
                                         test_device()));
  } else if (op == "linear") {
    y = linear(in["x"], in["w"], in["b"]);
  } else {
    FAIL("unknown fixture op " << op);
  }
  require_close(y, values_of(c.at("outputs").at("y")), 1e-5, name + " y");
  for (auto& [k, t] : extra) require_close(t, values_of(c.at("outputs").at(k)), 1e-5, name + " " + k);

  y.backward(tensor_of(c.at("grad_output")));
  for (auto& [k, v] : c.at("grads").items()) {
    REQUIRE(in[k].grad().defined());
    require_close(in[k].grad(), values_of(v), grad_rtol, name + " d" + k);
  }
}

}  // namespace

TEST_CASE("golden: conv2d against PyTorch", "[golden][conv2d][quick]") {
  json j = load("conv2d.json");
  REQUIRE(j.at("cases").size() >= 4);
  for (const json& c : j.at("cases")) check_case(c, 1e-4);
}

TEST_CASE("golden: batch, group and layer norm against PyTorch", "[golden][norm][quick]") {
  json j = load("norm.json");
  REQUIRE(j.at("cases").size() >= 7);
  for (const json& c : j.at("cases")) check_case(c, 1e-4);
}

TEST_CASE(
    "golden: the norm variants (InstanceNorm, RMSNorm, Ghost BN, Batch Renorm, FRN+TLU, WS) against PyTorch",
    "[golden][norm][quick]") {
  json j = load("norm_variants.json");
  std::set<std::string> names;
  for (const json& c : j.at("cases")) names.insert(c.at("name").get<std::string>()), check_case(c, 1e-4);
  CHECK(names == std::set<std::string>{"instance_norm", "rms_norm", "ghost_batch_norm_2", "batch_renorm",
                                       "frn_tlu", "ws_conv2d"});
}

TEST_CASE("golden: max-pool, log-softmax + NLL, linear against PyTorch", "[golden][quick]") {
  json j = load("misc.json");
  REQUIRE(j.at("cases").size() >= 5);
  for (const json& c : j.at("cases")) check_case(c, 1e-5);
}
