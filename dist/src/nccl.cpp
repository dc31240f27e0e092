// The NCCL backend: all-reduce and broadcast between GPUs, on device memory. NCCL's unique id
// travels over MPI when an MPI launcher started the processes and MPI is built (mpi.cpp);
// otherwise the launcher's environment gives rank and size (torchrun's RANK/WORLD_SIZE, Open MPI's
// or Slurm's variables) and rank 0 publishes the id in Options::init_file (rendezvous.cpp); one
// process alone needs neither. So a GPU machine without Open MPI runs it too. Built with
// NORMLAB_CUDA=ON when NCCL is found (NORMLAB_DIST_NCCL, dist/CMakeLists.txt); backends.cpp is
// the only file that knows.
//
// Each process drives the GPU of its local rank (local rank modulo the GPUs it sees). The
// communicator is non-blocking (ncclConfig_t::blocking = 0), so every wait is a poll against
// Options::timeout_seconds: a rank that died or never joins makes the others fail naming the
// collective, after which the communicator is aborted (ncclCommAbort), never a silent hang.
#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "backends.h"
#include "normlab/core/error.h"
#include "normlab/core/storage.h"
#include "rendezvous.h"

namespace nl::dist {

namespace {

class NcclGroup final : public ProcessGroup {
 public:
  explicit NcclGroup(const Options& o) : timeout_(o.timeout_seconds) {
    Launch launch;
    if (has_backend("mpi") && launched_by_mpi()) {
      boot_ = make_mpi_group(o);
      rank_ = boot_->rank(), size_ = boot_->size();
      // Only the local rank is read from the environment here: a stray variable of another
      // launcher must not stop an MPI job.
      try {
        launch = launch_from_env();
      } catch (const Error&) {
        launch = Launch{};
      }
    } else {
      launch = launch_from_env();
      rank_ = launch.rank, size_ = launch.size;
    }
    int devices = 0;
    cuda(cudaGetDeviceCount(&devices), "cudaGetDeviceCount");
    NL_CHECK(devices > 0, "dist (nccl): rank ", rank_, " sees no GPU");
    device_ = (launch.source.empty() ? rank_ : launch.local_rank) % devices;
    cuda(cudaSetDevice(device_), "cudaSetDevice");
    ncclUniqueId id{};
    if (rank_ == 0) nccl(ncclGetUniqueId(&id), "ncclGetUniqueId");
    std::unique_ptr<FileRendezvous> meeting;
    if (boot_) {
      // The id's bytes as the floats 0..255, which MPI carries exactly.
      std::vector<float> bytes(sizeof id.internal);
      for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = float(static_cast<unsigned char>(id.internal[i]));
      boot_->broadcast(bytes.data(), int64_t(bytes.size()), 0);
      for (size_t i = 0; i < bytes.size(); ++i)
        id.internal[i] = static_cast<char>(static_cast<unsigned char>(bytes[i]));
    } else if (size_ > 1) {
      const char* env = std::getenv("NORMLAB_DIST_INIT_FILE");
      const std::string path = !o.init_file.empty() ? o.init_file : env ? env : "";
      NL_CHECK(!path.empty(), "dist (nccl): rank ", rank_, " of ", size_, " (", launch.source,
               ") has no way to meet the others: set NORMLAB_DIST_INIT_FILE (or Options::init_file) to a new "
               "file's path that every process sees, or start them with mpirun and a build with MPI");
      meeting = std::make_unique<FileRendezvous>(path, rank_, size_, timeout_);
      const std::string got = meeting->exchange(std::string(id.internal, sizeof id.internal));
      NL_CHECK(got.size() == sizeof id.internal, "dist (nccl): rank ", rank_, ": the rendezvous file ", path,
               " holds ", got.size(), " bytes, not an NCCL id of ", sizeof id.internal);
      std::memcpy(id.internal, got.data(), got.size());
    }
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    nccl(ncclCommInitRankConfig(&comm_, size_, id, rank_, &config), "ncclCommInitRankConfig");
    settle("ncclCommInitRank");
    // Every rank has joined, so every rank has read the id: rank 0 removes the file it made.
    if (meeting) meeting->finish();
    cuda(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
  }

  ~NcclGroup() override {
    if (comm_) {
      // After a failure the communicator may hold a collective that never completes: abort it.
      if (broken_)
        ncclCommAbort(comm_);
      else
        ncclCommDestroy(comm_);
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

  // Without MPI, a one-float all-reduce: it completes on no rank before every rank joined it.
  void barrier() override {
    if (boot_) return boot_->barrier();
    float token = 0.0f;
    all_reduce_sum(&token, 1);
  }

  // CUDA tensors in place on their device, no host copy.
  void all_reduce_sum(Tensor& t) override {
    if (!t.device().is_cuda()) return ProcessGroup::all_reduce_sum(t);
    start_all_reduce(t, "all_reduce_sum")->wait();
  }

  using ProcessGroup::all_reduce_sum_async;

  // Queued on our stream behind an event on normlab's stream: NCCL reads the tensor once the ops
  // that wrote it have run, while this thread goes on queueing backward's next kernels (the
  // overlap GradientReducer is for). wait() orders normlab's stream after the sum.
  std::unique_ptr<Work> all_reduce_sum_async(const Tensor& t) override {
    if (!t.device().is_cuda()) return ProcessGroup::all_reduce_sum_async(t);
    return start_all_reduce(t, "all_reduce_sum (a gradient bucket)");
  }

  void broadcast(Tensor& t, int root) override {
    if (!t.device().is_cuda()) return ProcessGroup::broadcast(t, root);
    check_tensor(t);
    // The tensor was written on normlab's stream: ours waits for it.
    cudaEvent_t ready = nullptr;
    cuda(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming), "cudaEventCreate");
    cudaEventRecord(ready, static_cast<cudaStream_t>(native_stream(t.device())));
    cudaStreamWaitEvent(stream_, ready, 0);
    cudaEventDestroy(ready);
    nccl(ncclBroadcast(t.data_f32(), t.data_f32(), size_t(t.numel()), ncclFloat, root, comm_, stream_),
         "ncclBroadcast");
    finish("broadcast", t.numel());
  }

 private:
  struct NcclWork;

  std::unique_ptr<Work> start_all_reduce(const Tensor& t, const char* what) {
    check_tensor(t);
    auto w = std::make_unique<NcclWork>(this, t.numel(), static_cast<cudaStream_t>(native_stream(t.device())),
                                        what);
    cuda(cudaEventRecord(w->ready, w->lib), "cudaEventRecord");
    cuda(cudaStreamWaitEvent(stream_, w->ready, 0), "cudaStreamWaitEvent");
    nccl(ncclAllReduce(t.data_f32(), t.data_f32(), size_t(t.numel()), ncclFloat, ncclSum, comm_, stream_),
         "ncclAllReduce");
    ++seq_;
    settle(what);  // a non-blocking communicator: enqueued once settled
    cuda(cudaEventRecord(w->done, stream_), "cudaEventRecord");
    return w;
  }

  struct NcclWork final : Work {
    NcclWork(NcclGroup* g, int64_t floats, cudaStream_t normlab_stream, const char* collective)
        : group(g), n(floats), lib(normlab_stream), what(collective) {
      g->cuda(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming), "cudaEventCreate");
      g->cuda(cudaEventCreateWithFlags(&done, cudaEventDisableTiming), "cudaEventCreate");
    }
    // Dropped in flight (an exception unwound past it): NCCL may still write the tensor, whose
    // memory is about to be reused; the group is marked unusable.
    ~NcclWork() override {
      if (!finished) group->broken_ = true;
      cudaEventDestroy(ready);
      cudaEventDestroy(done);
    }
    bool test() override {
      if (!finished) {
        const cudaError_t rc = cudaEventQuery(done);
        if (rc != cudaErrorNotReady) group->cuda(rc, "cudaEventQuery"), complete();
      }
      return finished;
    }
    void wait() override {
      if (finished) return;
      group->poll(
          [&] {
            const cudaError_t rc = cudaEventQuery(done);
            if (rc == cudaErrorNotReady) return false;
            group->cuda(rc, "cudaEventQuery");
            return true;
          },
          what, n);
      complete();
    }
    void complete() {
      finished = true;
      // normlab's later work on the tensor (unpacking a bucket) runs after the sum.
      group->cuda(cudaStreamWaitEvent(lib, done, 0), "cudaStreamWaitEvent");
    }
    NcclGroup* group;
    int64_t n;
    cudaStream_t lib;  // normlab's
    const char* what;
    cudaEvent_t ready = nullptr, done = nullptr;
    bool finished = false;
  };

  void check_tensor(const Tensor& t) const {
    // The device: this process's current one, which the constructor chose (normlab's CUDA
    // backend allocates on the current device; make the group before any CUDA work).
    NL_CHECK(t.dtype() == DType::F32, "dist (nccl): needs a float32 tensor, got ", t);
    NL_CHECK(t.is_contiguous(),
             "dist (nccl): needs a contiguous tensor (it writes in place), got a view of shape ", t.shape());
  }

  float* stage(const float* host, int64_t n) {
    if (n > capacity_) {
      if (staging_) cuda(cudaFree(staging_), "cudaFree");
      staging_ = nullptr;
      cuda(cudaMalloc(reinterpret_cast<void**>(&staging_), size_t(n) * sizeof(float)), "cudaMalloc");
      capacity_ = n;
    }
    if (n > 0)
      cuda(cudaMemcpy(staging_, host, size_t(n) * sizeof(float), cudaMemcpyHostToDevice), "cudaMemcpy");
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
        NL_FAIL("dist (nccl): rank ", rank_, " of ", size_, ": ", what, " #", seq_,
                " failed: ", ncclGetErrorString(async), "; the group cannot be used any more");
      }
      if (polls > 2000) std::this_thread::sleep_for(std::chrono::microseconds(50));
      if ((polls & 63) == 0 && std::chrono::steady_clock::now() > deadline) {
        broken_ = true;
        NL_FAIL("dist (nccl): rank ", rank_, " of ", size_, ": ", what, " #", seq_, " (", n,
                " floats) did not complete within ", timeout_,
                " s: another rank died, hangs, or called a different collective; the group cannot be used "
                "any more");
      }
    }
  }

  void settle(const char* what) {
    poll(
        [&] {
          ncclResult_t state = ncclInProgress;
          ncclCommGetAsyncError(comm_, &state);
          return state == ncclSuccess;
        },
        what, 0);
  }

  // The collective just enqueued on stream_: done when the stream is.
  void finish(const char* what, int64_t n) {
    ++seq_;
    settle(what);
    poll(
        [&] {
          const cudaError_t rc = cudaStreamQuery(stream_);
          if (rc == cudaErrorNotReady) return false;
          cuda(rc, "cudaStreamQuery");
          return true;
        },
        what, n);
  }

  std::unique_ptr<ProcessGroup> boot_;  // MPI when it launched us: the unique id, barriers
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

std::unique_ptr<ProcessGroup> make_nccl_group(const Options& options) {
  return std::make_unique<NcclGroup>(options);
}

}  // namespace nl::dist
