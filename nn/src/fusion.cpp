#include "fusion.h"

#include <atomic>

namespace nl::nn {

namespace {
std::atomic<bool> g_fusion{true};
}  // namespace

void set_fusion_enabled(bool on) { g_fusion = on; }
bool fusion_enabled() { return g_fusion; }

FusedRun plan_fused_run(const std::vector<std::pair<std::string, std::shared_ptr<Module>>>& layers, size_t i,
                        const Tensor& h, const Tensor* residual) {
  FusedRun run;
  auto* norm = dynamic_cast<FusableNorm*>(layers[i].second.get());
  if (!g_fusion || !norm || !norm->can_fuse()) return run;
  run.norm = norm;
  const size_t n = layers.size();
  size_t j = i + 1;
  if (j < n && norm->fuses_relu() && dynamic_cast<ReLU*>(layers[j].second.get()))
    run.epilogue.relu = true, ++j;
  if (j < n) {
    if (auto* d = dynamic_cast<Dropout*>(layers[j].second.get())) {
      // Dropout in eval mode is the identity: it joins the run with p = 0.
      run.epilogue.dropout = d->is_training() ? d->p : 0.0f;
      run.epilogue.gen = d->gen;
      ++j;
    }
  }
  // The norm keeps its input's shape, so the run's output has h's shape.
  if (j == n && residual && residual->shape() == h.shape()) run.epilogue.residual = *residual;
  run.end = j;
  return run;
}

}  // namespace nl::nn
