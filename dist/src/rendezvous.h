#pragma once
// How processes started without MPI find each other (the NCCL backend's bootstrap when no MPI
// launched them, and a single GPU needs none): their rank and count from the launcher's
// environment, and a few bytes (NCCL's unique id) that rank 0 publishes in a file the others poll
// for, as PyTorch's FileStore does. Device-independent, so it is tested on any machine
// (tests/test_dist_rendezvous.cpp). Not installed.
#include <string>
#include <sys/types.h>

namespace nl::dist {

struct Launch {
  int rank = 0, size = 1, local_rank = 0;
  std::string source;  // the variables that said so, for messages; empty: none (a group of one)
};
// torchrun's RANK, WORLD_SIZE (and LOCAL_RANK, default the rank); else Open MPI's
// OMPI_COMM_WORLD_RANK/_SIZE/_LOCAL_RANK; else Slurm's SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID;
// else rank 0 of 1. Throws naming the variable when one is missing from its pair, is not a whole
// number, or the rank is not in [0, size).
Launch launch_from_env();

class FileRendezvous {
 public:
  FileRendezvous(std::string path, int rank, int size, double timeout_seconds);
  FileRendezvous(const FileRendezvous&) = delete;
  FileRendezvous& operator=(const FileRendezvous&) = delete;
  // Rank 0 publishes payload at path and returns it; path must not exist (a file left by another
  // job is reported, never replaced). Every other rank waits up to timeout_seconds for the file,
  // checks it was made for a group of the same size, and returns its payload.
  std::string exchange(const std::string& payload);
  // Rank 0, once every rank has read the file (NCCL's communicator is complete): removes it if it
  // is still the file rank 0 made. Other ranks: nothing. Also done, quietly, by the destructor.
  void finish();
  ~FileRendezvous();

 private:
  std::string path_;
  int rank_, size_;
  double timeout_;
  bool created_ = false;
  std::string content_;
  dev_t dev_ = 0;
  ino_t ino_ = 0;
};

}  // namespace nl::dist
