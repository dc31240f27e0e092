#pragma once
// cuDNN 9's LayerNorm through the backend graph API (CUDNN_BACKEND_OPERATION_NORM_FORWARD/
// BACKWARD_DESCRIPTOR, CUDNN_LAYER_NORM) for bench_norm_cuda: X [N, C, H, W] normalised over
// (C, H, W) per sample, scale/bias [1, C, H, W] (cuDNN's LayerNorm affine is per element),
// mean/inv_variance [N, 1, 1, 1], epsilon passed by value. Any failure (no engine for fp32 on
// this device, say) throws std::runtime_error with the cuDNN status, and the benchmark reports
// that instead of a time.
#include <cudnn.h>

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace bench {

inline void graph_check(cudnnStatus_t s, const char* what) {
  if (s != CUDNN_STATUS_SUCCESS) throw std::runtime_error(std::string(what) + ": " + cudnnGetErrorString(s));
}

// Owns one backend descriptor.
class BackendDesc {
 public:
  explicit BackendDesc(cudnnBackendDescriptorType_t type) {
    graph_check(cudnnBackendCreateDescriptor(type, &d_), "cudnnBackendCreateDescriptor");
  }
  ~BackendDesc() {
    if (d_) cudnnBackendDestroyDescriptor(d_);
  }
  BackendDesc(const BackendDesc&) = delete;
  BackendDesc& operator=(const BackendDesc&) = delete;
  cudnnBackendDescriptor_t get() const { return d_; }
  template <class T>
  BackendDesc& set(cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type, int64_t count,
                   const T* v) {
    graph_check(cudnnBackendSetAttribute(d_, name, type, count, v), "cudnnBackendSetAttribute");
    return *this;
  }
  BackendDesc& set_desc(cudnnBackendAttributeName_t name, const BackendDesc& other) {
    cudnnBackendDescriptor_t o = other.get();
    return set(name, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &o);
  }
  void finalize(const char* what) { graph_check(cudnnBackendFinalize(d_), what); }

 private:
  cudnnBackendDescriptor_t d_ = nullptr;
};

class GraphLayerNorm {
 public:
  enum Uid : int64_t { kX = 1, kY, kMean, kInvVar, kScale, kBias, kEps, kDy, kDx, kDscale, kDbias };

  // phase: 0 forward training, 1 forward inference, 2 backward.
  GraphLayerNorm(cudnnHandle_t handle, int64_t N, int64_t C, int64_t H, int64_t W, int phase)
      : handle_(handle) {
    const std::vector<int64_t> data{N, C, H, W}, affine{1, C, H, W}, stat{N, 1, 1, 1}, scalar{1, 1, 1, 1};
    auto x = tensor(kX, data), y = tensor(kY, data), mean = tensor(kMean, stat);
    auto inv_var = tensor(kInvVar, stat), scale = tensor(kScale, affine), bias = tensor(kBias, affine);
    auto eps = tensor(kEps, scalar, true);
    const cudnnBackendNormMode_t mode = CUDNN_LAYER_NORM;
    std::unique_ptr<BackendDesc> op;
    std::unique_ptr<BackendDesc> dy, dx, dscale, dbias;
    if (phase < 2) {
      op = std::make_unique<BackendDesc>(CUDNN_BACKEND_OPERATION_NORM_FORWARD_DESCRIPTOR);
      const cudnnBackendNormFwdPhase_t ph = phase == 0 ? CUDNN_NORM_FWD_TRAINING : CUDNN_NORM_FWD_INFERENCE;
      op->set(CUDNN_ATTR_OPERATION_NORM_FWD_MODE, CUDNN_TYPE_NORM_MODE, 1, &mode)
          .set(CUDNN_ATTR_OPERATION_NORM_FWD_PHASE, CUDNN_TYPE_NORM_FWD_PHASE, 1, &ph)
          .set_desc(CUDNN_ATTR_OPERATION_NORM_FWD_XDESC, *x)
          .set_desc(CUDNN_ATTR_OPERATION_NORM_FWD_SCALE_DESC, *scale)
          .set_desc(CUDNN_ATTR_OPERATION_NORM_FWD_BIAS_DESC, *bias)
          .set_desc(CUDNN_ATTR_OPERATION_NORM_FWD_EPSILON_DESC, *eps)
          .set_desc(CUDNN_ATTR_OPERATION_NORM_FWD_YDESC, *y);
      if (phase == 0)
        op->set_desc(CUDNN_ATTR_OPERATION_NORM_FWD_MEAN_DESC, *mean)
            .set_desc(CUDNN_ATTR_OPERATION_NORM_FWD_INV_VARIANCE_DESC, *inv_var);
      uids_ = {kX, kScale, kBias, kEps, kY};
      if (phase == 0) uids_.insert(uids_.end(), {kMean, kInvVar});
    } else {
      dy = tensor(kDy, data), dx = tensor(kDx, data);
      dscale = tensor(kDscale, affine), dbias = tensor(kDbias, affine);
      op = std::make_unique<BackendDesc>(CUDNN_BACKEND_OPERATION_NORM_BACKWARD_DESCRIPTOR);
      op->set(CUDNN_ATTR_OPERATION_NORM_BWD_MODE, CUDNN_TYPE_NORM_MODE, 1, &mode)
          .set_desc(CUDNN_ATTR_OPERATION_NORM_BWD_XDESC, *x)
          .set_desc(CUDNN_ATTR_OPERATION_NORM_BWD_MEAN_DESC, *mean)
          .set_desc(CUDNN_ATTR_OPERATION_NORM_BWD_INV_VARIANCE_DESC, *inv_var)
          .set_desc(CUDNN_ATTR_OPERATION_NORM_BWD_DYDESC, *dy)
          .set_desc(CUDNN_ATTR_OPERATION_NORM_BWD_SCALE_DESC, *scale)
          .set_desc(CUDNN_ATTR_OPERATION_NORM_BWD_EPSILON_DESC, *eps)
          .set_desc(CUDNN_ATTR_OPERATION_NORM_BWD_DSCALE_DESC, *dscale)
          .set_desc(CUDNN_ATTR_OPERATION_NORM_BWD_DBIAS_DESC, *dbias)
          .set_desc(CUDNN_ATTR_OPERATION_NORM_BWD_DXDESC, *dx);
      uids_ = {kX, kMean, kInvVar, kDy, kScale, kEps, kDscale, kDbias, kDx};
    }
    op->finalize("norm operation");

    BackendDesc graph(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
    cudnnBackendDescriptor_t ops = op->get();
    graph.set(CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &ops)
        .set(CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle_);
    graph.finalize("operation graph");

    BackendDesc heur(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
    const cudnnBackendHeurMode_t heur_mode = CUDNN_HEUR_MODE_A;
    heur.set_desc(CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, graph)
        .set(CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &heur_mode);
    heur.finalize("engine heuristics");
    BackendDesc config(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR);
    cudnnBackendDescriptor_t cfg = config.get();
    int64_t found = 0;
    graph_check(cudnnBackendGetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                         CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &found, &cfg),
                "engine heuristics results");
    if (found < 1) throw std::runtime_error("no cuDNN engine for fp32 LayerNorm on this device");

    plan_ = std::make_unique<BackendDesc>(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
    plan_->set(CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle_)
        .set_desc(CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, config);
    plan_->finalize("execution plan");
    int64_t ws = 0, n = 0;
    graph_check(cudnnBackendGetAttribute(plan_->get(), CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE,
                                         CUDNN_TYPE_INT64, 1, &n, &ws),
                "workspace size");
    workspace_bytes_ = size_t(ws);
  }

  size_t workspace_bytes() const { return workspace_bytes_; }

  // ptr(uid) gives each tensor's device pointer (the epsilon's is a host float).
  template <class PtrOf>
  void run(PtrOf&& ptr, void* workspace) {
    std::vector<void*> ptrs;
    for (int64_t u : uids_) ptrs.push_back(ptr(u));
    BackendDesc pack(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR);
    pack.set(CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, int64_t(uids_.size()), uids_.data())
        .set(CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, int64_t(ptrs.size()), ptrs.data())
        .set(CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &workspace);
    pack.finalize("variant pack");
    graph_check(cudnnBackendExecute(handle_, plan_->get(), pack.get()), "cudnnBackendExecute");
  }

 private:
  std::unique_ptr<BackendDesc> tensor(int64_t uid, const std::vector<int64_t>& dims, bool by_value = false) {
    std::vector<int64_t> strides(dims.size(), 1);
    for (size_t i = dims.size() - 1; i > 0; --i) strides[i - 1] = strides[i] * dims[i];
    auto t = std::make_unique<BackendDesc>(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
    const cudnnDataType_t dt = CUDNN_DATA_FLOAT;
    const int64_t align = 16;
    t->set(CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &dt)
        .set(CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, int64_t(dims.size()), dims.data())
        .set(CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, int64_t(strides.size()), strides.data())
        .set(CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid)
        .set(CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &align);
    if (by_value) {
      const bool yes = true;
      t->set(CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &yes);
    }
    t->finalize("tensor descriptor");
    return t;
  }

  cudnnHandle_t handle_;
  std::vector<int64_t> uids_;
  std::unique_ptr<BackendDesc> plan_;
  size_t workspace_bytes_ = 0;
};

}  // namespace bench
