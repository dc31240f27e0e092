#pragma once
// nl::dist: a process group over an existing engine, for data-parallel training.
//
//   auto pg = nl::dist::init();            // MPI under mpirun/srun, else a group of one
//   pg->all_reduce_sum(t);                 // in place, every rank the same shape, same order
//   nl::dist::broadcast_parameters(*pg, net);
//   ... backward ...
//   nl::dist::average_gradients(*pg, net);
//
// Backends: "mpi" (Open MPI; host memory, so a CUDA tensor travels through the host), "nccl"
// (GPUs: CUDA tensors reduced in place by NCCL, bootstrapped over MPI under mpirun, else through
// Options::init_file; built with NORMLAB_CUDA=ON when NCCL is found) and "single" (one process, every
// collective a no-op). Every collective has a deadline: one that another rank never joins (it died, hangs, or
// called a different collective) throws nl::Error naming this rank, the collective and its sequence number
// after Options::timeout_seconds, instead of hanging; a rank that dies is also reported by mpirun itself,
// which ends the others. After a timeout the group is unusable: end the process (the other ranks are stopped
// by mpirun when it does).
#include <cstdint>
#include <memory>
#include <string>

#include "normlab/core/ops.h"
#include "normlab/core/tensor.h"

namespace nl::nn {
class Module;
}

namespace nl::dist {

struct Options {
  // A collective not complete after this long fails. The default leaves room for a slow first
  // epoch on a busy machine; tests use seconds.
  double timeout_seconds = 300.0;
  // The NCCL backend without MPI (processes started by torchrun, Slurm or a script, with RANK and
  // WORLD_SIZE set): a new file's path that every process sees, where rank 0 publishes NCCL's id
  // and removes it once all have joined. Empty: $NORMLAB_DIST_INIT_FILE. Unused by one process
  // alone and under MPI.
  std::string init_file;
};

// A CrossProcessSum, so SyncBatchNorm (NormSpec::sync) can sum its statistics through it.
class ProcessGroup : public CrossProcessSum {
 public:
  ~ProcessGroup() override = default;
  int rank() const override = 0;
  int size() const override = 0;
  virtual std::string backend() const = 0;
  // Host memory. Sum over every rank, in place; every rank passes the same n.
  virtual void all_reduce_sum(float* data, int64_t n) = 0;
  // Host memory. Root's n floats to every rank.
  virtual void broadcast(float* data, int64_t n, int root) = 0;
  virtual void barrier() = 0;

  // A collective in flight. wait() returns once it completed (throwing as the blocking call
  // would, timeout included); test() says whether it has, and lets the engine progress.
  class Work {
   public:
    virtual ~Work() = default;
    virtual bool test() = 0;
    virtual void wait() = 0;
  };
  // Host memory, summed in place once wait() returned; data must stay untouched until then.
  // Default: the blocking all_reduce_sum at once (the MPI backend overrides it).
  virtual std::unique_ptr<Work> all_reduce_sum_async(float* data, int64_t n);

  // A contiguous float32 tensor on any device, summed in place once wait() returned; its memory
  // must stay untouched until then. Default: a CPU tensor through the call above, another through
  // a host copy made now and copied back by wait(). The NCCL backend reduces a CUDA tensor on the
  // GPU, queued behind the work normlab already queued there, without waiting for it.
  virtual std::unique_ptr<Work> all_reduce_sum_async(const Tensor& t);

  void sum(float* host, int64_t n) override { all_reduce_sum(host, n); }

  // Contiguous float32 tensors on any device: CPU ones in place, others through a host copy
  // (the NCCL backend reduces CUDA tensors in place on the GPU).
  virtual void all_reduce_sum(Tensor& t);
  virtual void broadcast(Tensor& t, int root);
};

// Which backends this build has: "single" always, "mpi" when built with MPI (NORMLAB_DIST),
// "nccl" when built with CUDA and NCCL (NORMLAB_DIST_NCCL).
bool has_backend(const std::string& name);
// backend: "auto" (MPI when this process was started by an MPI launcher and MPI is built, else
// "single"), "mpi", "nccl" (one GPU per process: the local rank's; rank and size from MPI, else
// from RANK/WORLD_SIZE, Open MPI's or Slurm's variables, else a group of one) or "single". MPI is
// initialised here when nobody has yet, and finalised when the last group of this process is
// destroyed.
std::unique_ptr<ProcessGroup> init(const std::string& backend = "auto", const Options& options = {});

// Every parameter and buffer of `net` set to root's (call after construction on every rank).
void broadcast_parameters(ProcessGroup& pg, nn::Module& net, int root = 0);
// Every float buffer (BatchNorm's running statistics) set to root's, as PyTorch DDP's
// broadcast_buffers.
void broadcast_buffers(ProcessGroup& pg, nn::Module& net, int root = 0);
// Every parameter's gradient replaced by the mean over ranks, in flat buckets of about
// bucket_bytes (one collective per bucket rather than per tensor). Gradients that are undefined
// on one rank must be undefined on all.
void average_gradients(ProcessGroup& pg, nn::Module& net, int64_t bucket_bytes = 1 << 20);
// Averages gradients while backward still runs, like PyTorch DDP's reducer: the parameters are
// grouped into buckets of about bucket_bytes in reverse order (the order backward finishes them),
// and a bucket's all-reduce starts as soon as its last gradient is final, overlapping the backward
// of earlier layers. A bucket lives on its parameters' device (a new bucket starts where the
// device changes): gradients are packed and unpacked there, so a GPU's cross a bus once per
// bucket (MPI) or never (NCCL), not once per tensor. backward(loss) returns with every gradient the mean over
// ranks. Every rank must call it at the same step with the same net; a parameter without a gradient on one
// rank must have none on all (its bucket then reduces zeros for it and leaves it undefined).
class GradientReducer {
 public:
  GradientReducer(ProcessGroup& pg, nn::Module& net, int64_t bucket_bytes = 256 << 10);
  ~GradientReducer();
  void backward(const Tensor& loss, const Tensor& seed = Tensor());
  int64_t buckets() const;

 private:
  struct State;
  std::unique_ptr<State> s_;
};

// Turns every BatchNorm of `net` (nn::Norm with per-channel statistics, no ghost batches, no
// Batch Renorm) into SyncBatchNorm over `pg` (NormSpec::sync), as PyTorch's
// convert_sync_batchnorm; pg must outlive the net's use. Returns how many it turned.
int convert_sync_batch_norm(ProcessGroup& pg, nn::Module& net);

}  // namespace nl::dist
