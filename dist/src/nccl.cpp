// The NCCL backend: all-reduce and broadcast between GPUs, on device memory, with NCCL's unique id
// sent over the MPI group that bootstraps it (mpi.cpp). Built with NORMLAB_CUDA=ON when NCCL is
// found (NORMLAB_DIST_NCCL, dist/CMakeLists.txt); backends.cpp is the only file that knows.
//
// Each process drives the GPU of its local rank (local rank modulo the GPUs it sees). The
// communicator is non-blocking (ncclConfig_t::blocking = 0), so every wait is a poll against
// Options::timeout_seconds: a rank that died or never joins makes the others fail naming the
// collective, after which the communicator is aborted (ncclCommAbort), never a silent hang.
#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <cstdlib>
#include <thread>
#include <vector>

#include "backends.h"
#include "normlab/core/error.h"

namespace nl::dist {

namespace {

int local_rank(int rank) {
  for (const char* v : {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID"})
    if (const char* s = std::getenv(v)) return std::atoi(s);
  return rank;
}

class NcclGroup final : public ProcessGroup {
 public:
  explicit NcclGroup(const Options& o) : boot_(make_mpi_group(o)), timeout_(o.timeout_seconds) {
    rank_ = boot_->rank(), size_ = boot_->size();
    int devices = 0;
    cuda(cudaGetDeviceCount(&devices), "cudaGetDeviceCount");
    NL_CHECK(devices > 0, "dist (nccl): rank ", rank_, " sees no GPU");
    device_ = local_rank(rank_) % devices;
    cuda(cudaSetDevice(device_), "cudaSetDevice");
    ncclUniqueId id{};
    if (rank_ == 0) nccl(ncclGetUniqueId(&id), "ncclGetUniqueId");
    // The id's bytes as the floats 0..255, which MPI carries exactly.
    std::vector<float> bytes(sizeof id.internal);
    for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = float(static_cast<unsigned char>(id.internal[i]));
    boot_->broadcast(bytes.data(), int64_t(bytes.size()), 0);
    for (size_t i = 0; i < bytes.size(); ++i) id.internal[i] = static_cast<char>(static_cast<unsigned char>(bytes[i]));
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    nccl(ncclCommInitRankConfig(&comm_, size_, id, rank_, &config), "ncclCommInitRankConfig");
    settle("ncclCommInitRank");
    cuda(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
  }

  ~NcclGroup() override {
    if (comm_) {
      // After a failure the communicator may hold a collective that never completes: abort it.
      if (broken_) ncclCommAbort(comm_);
      else ncclCommDestroy(comm_);
    }
    if (stream_) cudaStreamDestroy(stream_);
    if (staging_) cudaFree(staging_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "nccl"; }

  using ProcessGroup::all_reduce_sum;
  using ProcessGroup::broadcast;

  // Host memory: through a device buffer (SyncBatchNorm's statistics, the app's scalars).
  void all_reduce_sum(float* host, int64_t n) override {
    float* dev = stage(host, n);
    nccl(ncclAllReduce(dev, dev, size_t(n), ncclFloat, ncclSum, comm_, stream_), "ncclAllReduce");
    finish("all_reduce_sum", n);
    cuda(cudaMemcpy(host, dev, size_t(n) * sizeof(float), cudaMemcpyDeviceToHost), "cudaMemcpy");
  }

  void broadcast(float* host, int64_t n, int root) override {
    float* dev = stage(host, n);
    nccl(ncclBroadcast(dev, dev, size_t(n), ncclFloat, root, comm_, stream_), "ncclBroadcast");
    finish("broadcast", n);
    cuda(cudaMemcpy(host, dev, size_t(n) * sizeof(float), cudaMemcpyDeviceToHost), "cudaMemcpy");
  }

  void barrier() override { boot_->barrier(); }

  // CUDA tensors in place on their device, no host copy.
  void all_reduce_sum(Tensor& t) override {
    if (!t.device().is_cuda()) return ProcessGroup::all_reduce_sum(t);
    check_tensor(t);
    // The tensor was written on the library's stream: wait for it, since ours is another.
    cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
    nccl(ncclAllReduce(t.data_f32(), t.data_f32(), size_t(t.numel()), ncclFloat, ncclSum, comm_, stream_),
         "ncclAllReduce");
    finish("all_reduce_sum", t.numel());
  }

  void broadcast(Tensor& t, int root) override {
    if (!t.device().is_cuda()) return ProcessGroup::broadcast(t, root);
    check_tensor(t);
    cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
    nccl(ncclBroadcast(t.data_f32(), t.data_f32(), size_t(t.numel()), ncclFloat, root, comm_, stream_),
         "ncclBroadcast");
    finish("broadcast", t.numel());
  }

 private:
  void check_tensor(const Tensor& t) const {
    // The device: this process's current one, which the constructor chose (normlab's CUDA
    // backend allocates on the current device; make the group before any CUDA work).
    NL_CHECK(t.dtype() == DType::F32, "dist (nccl): needs a float32 tensor, got ", t);
    NL_CHECK(t.is_contiguous(), "dist (nccl): needs a contiguous tensor (it writes in place), got a view of shape ",
             t.shape());
  }

  float* stage(const float* host, int64_t n) {
    if (n > capacity_) {
      if (staging_) cuda(cudaFree(staging_), "cudaFree");
      staging_ = nullptr;
      cuda(cudaMalloc(reinterpret_cast<void**>(&staging_), size_t(n) * sizeof(float)), "cudaMalloc");
      capacity_ = n;
    }
    if (n > 0) cuda(cudaMemcpy(staging_, host, size_t(n) * sizeof(float), cudaMemcpyHostToDevice), "cudaMemcpy");
    return staging_;
  }

  void cuda(cudaError_t rc, const char* call) const {
    if (rc != cudaSuccess)
      NL_FAIL("dist (nccl): rank ", rank_, " of ", size_, ": ", call, " failed: ", cudaGetErrorString(rc));
  }

  // A non-blocking communicator may answer ncclInProgress: settle() waits for that.
  void nccl(ncclResult_t rc, const char* call) {
    if (rc == ncclSuccess || rc == ncclInProgress) return;
    broken_ = comm_ != nullptr;
    NL_FAIL("dist (nccl): rank ", rank_, " of ", size_, ": ", call, " failed: ", ncclGetErrorString(rc), " (",
            ncclGetLastError(comm_), ")");
  }

  template <class Done>
  void poll(Done done, const char* what, int64_t n) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_);
    for (int polls = 0;; ++polls) {
      if (done()) return;
      ncclResult_t async = ncclSuccess;
      ncclCommGetAsyncError(comm_, &async);
      if (async != ncclSuccess && async != ncclInProgress) {
        broken_ = true;
        NL_FAIL("dist (nccl): rank ", rank_, " of ", size_, ": ", what, " #", seq_, " failed: ",
                ncclGetErrorString(async), "; the group cannot be used any more");
      }
      if (polls > 2000) std::this_thread::sleep_for(std::chrono::microseconds(50));
      if ((polls & 63) == 0 && std::chrono::steady_clock::now() > deadline) {
        broken_ = true;
        NL_FAIL("dist (nccl): rank ", rank_, " of ", size_, ": ", what, " #", seq_, " (", n,
                " floats) did not complete within ", timeout_,
                " s: another rank died, hangs, or called a different collective; the group cannot be used any more");
      }
    }
  }

  void settle(const char* what) {
    poll([&] {
      ncclResult_t state = ncclInProgress;
      ncclCommGetAsyncError(comm_, &state);
      return state == ncclSuccess;
    }, what, 0);
  }

  // The collective just enqueued on stream_: done when the stream is.
  void finish(const char* what, int64_t n) {
    ++seq_;
    settle(what);
    poll([&] {
      const cudaError_t rc = cudaStreamQuery(stream_);
      if (rc == cudaErrorNotReady) return false;
      cuda(rc, "cudaStreamQuery");
      return true;
    }, what, n);
  }

  std::unique_ptr<ProcessGroup> boot_;  // MPI: the unique id, barriers
  double timeout_;
  int rank_ = 0, size_ = 1, device_ = 0;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  float* staging_ = nullptr;
  int64_t capacity_ = 0;
  int64_t seq_ = 0;
  bool broken_ = false;
};

}  // namespace

std::unique_ptr<ProcessGroup> make_nccl_group(const Options& options) { return std::make_unique<NcclGroup>(options); }

}  // namespace nl::dist
