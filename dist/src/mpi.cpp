// The MPI backend (Open MPI from Debian). Collectives are the non-blocking MPI-3 ones, polled
// against a deadline: MPI has no timeouts of its own, and a blocking MPI_Allreduce that a dead or
// stuck rank never joins would hang this rank for ever.
#include <mpi.h>

#include <chrono>
#include <algorithm>
#include <climits>
#include <cstdlib>
#include <thread>

#include "backends.h"
#include "normlab/core/error.h"

namespace nl::dist {

namespace {

int g_groups = 0;  // live MPI groups in this process
bool g_we_initialised = false;

class MpiGroup final : public ProcessGroup {
 public:
  explicit MpiGroup(const Options& o) : timeout_(o.timeout_seconds) {
    int initialised = 0, finalised = 0;
    MPI_Initialized(&initialised);
    MPI_Finalized(&finalised);
    NL_CHECK(!finalised, "dist (mpi): MPI was already finalised in this process");
    if (!initialised) {
      // Only the thread that made the group calls MPI (the kernels' OpenMP threads never do).
      int provided = 0;
      NL_CHECK(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided) == MPI_SUCCESS,
               "dist (mpi): MPI_Init_thread failed");
      g_we_initialised = true;
    }
    // Our own communicator, returning errors instead of aborting the job, so they become
    // exceptions with a message.
    check(MPI_Comm_dup(MPI_COMM_WORLD, &comm_), "MPI_Comm_dup");
    check(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
    ++g_groups;
  }

  ~MpiGroup() override {
    --g_groups;
    // After a timeout a collective is still pending: freeing the communicator or finalising
    // would wait for it. The process ends without MPI_Finalize, and mpirun stops the others.
    if (broken_) return;
    MPI_Comm_free(&comm_);
    if (g_groups == 0 && g_we_initialised) MPI_Finalize();
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "mpi"; }

  // In chunks of at most 2^30 (MPI counts are ints). n = 0 still issues one collective, so every
  // rank's sequence of collectives stays the same whatever it passes.
  void all_reduce_sum(float* data, int64_t n) override {
    for (int64_t done = 0; done < n || (n == 0 && done == 0);) {
      const int count = int(std::min<int64_t>(n - done, kChunk));
      MPI_Request req;
      check(MPI_Iallreduce(MPI_IN_PLACE, data + done, count, MPI_FLOAT, MPI_SUM, comm_, &req),
            "MPI_Iallreduce");
      wait(req, "all_reduce_sum", n);
      done += count;
      if (n == 0) break;
    }
  }

  void broadcast(float* data, int64_t n, int root) override {
    NL_CHECK(root >= 0 && root < size_, "dist (mpi): broadcast from rank ", root, " in a group of ", size_);
    for (int64_t done = 0; done < n || (n == 0 && done == 0);) {
      const int count = int(std::min<int64_t>(n - done, kChunk));
      MPI_Request req;
      check(MPI_Ibcast(data + done, count, MPI_FLOAT, root, comm_, &req), "MPI_Ibcast");
      wait(req, "broadcast", n);
      done += count;
      if (n == 0) break;
    }
  }

  void barrier() override {
    MPI_Request req;
    check(MPI_Ibarrier(comm_, &req), "MPI_Ibarrier");
    wait(req, "barrier", 0);
  }

  using ProcessGroup::all_reduce_sum_async;  // the tensor one: through this one

  // One MPI_Iallreduce left in flight (GradientReducer overlaps it with backward). Open MPI
  // progresses it inside MPI calls, so test() is called between backward's nodes.
  std::unique_ptr<Work> all_reduce_sum_async(float* data, int64_t n) override {
    if (n == 0 || n > kChunk) return ProcessGroup::all_reduce_sum_async(data, n);
    auto w = std::make_unique<MpiWork>(this, n);
    check(MPI_Iallreduce(MPI_IN_PLACE, data, int(n), MPI_FLOAT, MPI_SUM, comm_, &w->req), "MPI_Iallreduce");
    return w;
  }

 private:
  static constexpr int64_t kChunk = int64_t(1) << 30;  // MPI counts are ints

  struct MpiWork final : Work {
    MpiWork(MpiGroup* g, int64_t n) : group(g), n(n) {}
    // Dropped while still in flight (an exception unwound past it): the request cannot be
    // freed, so the group is marked unusable and the process ends without MPI_Finalize.
    ~MpiWork() override {
      if (!done) group->broken_ = true;
    }
    bool test() override {
      if (!done) {
        int flag = 0;
        group->check(MPI_Test(&req, &flag, MPI_STATUS_IGNORE), "MPI_Test");
        done = flag != 0;
        if (done) ++group->seq_;
      }
      return done;
    }
    void wait() override {
      if (done) return;
      group->wait(req, "all_reduce_sum (a gradient bucket)", n);
      done = true;
    }
    MpiGroup* group;
    int64_t n;
    MPI_Request req = MPI_REQUEST_NULL;
    bool done = false;
  };

  void check(int rc, const char* call) {
    if (rc == MPI_SUCCESS) return;
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, text, &len);
    NL_FAIL("dist (mpi): rank ", rank_, " of ", size_, ": ", call,
            " failed: ", std::string(text, size_t(len)));
  }

  // Polls until the collective completes or the deadline passes. Spinning first keeps the
  // latency of the many small collectives (statistics, buckets) low; sleeping after leaves the
  // cores to the other ranks and the kernels' threads.
  void wait(MPI_Request& req, const char* what, int64_t n) {
    ++seq_;
    const auto start = std::chrono::steady_clock::now();
    const auto deadline = start + std::chrono::duration<double>(timeout_);
    for (int polls = 0;; ++polls) {
      int done = 0;
      check(MPI_Test(&req, &done, MPI_STATUS_IGNORE), "MPI_Test");
      if (done) return;
      if (polls > 2000) std::this_thread::sleep_for(std::chrono::microseconds(50));
      if ((polls & 63) == 0 && std::chrono::steady_clock::now() > deadline) {
        broken_ = true;
        NL_FAIL("dist (mpi): rank ", rank_, " of ", size_, ": ", what, " #", seq_, " (", n,
                " floats) did not complete within ", timeout_,
                " s: another rank died, hangs, or called a different collective; the group cannot be used "
                "any more");
      }
    }
  }

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
  double timeout_;
  int64_t seq_ = 0;  // collectives so far: the number in a timeout's message
  bool broken_ = false;
};

}  // namespace

std::unique_ptr<ProcessGroup> make_mpi_group(const Options& options) {
  return std::make_unique<MpiGroup>(options);
}

bool launched_by_mpi() {
  return std::getenv("OMPI_COMM_WORLD_SIZE") || std::getenv("PMI_SIZE") || std::getenv("PMIX_RANK");
}

}  // namespace nl::dist
