#pragma once
// The norm cases of bench_norm_cuda (timed on a GPU against cuDNN), shared with bench/gpu_model,
// which predicts a time for each of them: scripts/gpu-check.sh joins the two by row name, so both
// must enumerate the same cases under the same names.
#include <cstdint>
#include <string>

namespace bench {

enum NormKind { kBN, kGN, kLN };
enum NormPass { kFwdTrain, kFwdEval, kBwd };
inline const char* const kNormKindName[] = {"BN", "GN4", "LN"};
inline const char* const kNormPassName[] = {"fwd_train", "fwd_eval", "bwd"};
inline constexpr int64_t kNormBatches[] = {128, 512};
// (C, H*W): the network's layer shapes.
inline constexpr int64_t kNormShapes[][2] = {{32, 32 * 32}, {32, 16 * 16}, {24, 8 * 8}};

inline int64_t norm_groups(int kind) { return kind == kGN ? 4 : 1; }

// "BN/fwd_train/128x32x1024": a row's name without the implementation suffix ("/normlab", ...).
inline std::string norm_case_name(int kind, int pass, int64_t N, int64_t C, int64_t HW) {
  return std::string(kNormKindName[kind]) + "/" + kNormPassName[pass] + "/" + std::to_string(N) + "x" +
         std::to_string(C) + "x" + std::to_string(HW);
}

}  // namespace bench
