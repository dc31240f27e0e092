#pragma once
// Shared by the data, download, app and study tests: a self-removing temporary folder, synthetic
// CIFAR-10 records and folders, and a program run with an argument vector.
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <vector>

#include <filesystem>
#include <fstream>
#include <string>

#include "normlab/nn/data.h"

extern char** environ;

namespace nl::test {
namespace fs = std::filesystem;

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() /
           ("normlab-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter()++));
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  static int& counter() {
    static int c = 0;
    return c;
  }
};

// A whole file's bytes ("" when it cannot be read).
inline std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

inline void write_bytes(const fs::path& p, const std::string& bytes) {
  std::ofstream(p, std::ios::binary) << bytes;
}

// n records whose label is i % 10 and whose pixels encode the record and channel.
inline std::string cifar_records(int n, int label_offset = 0) {
  std::string s;
  for (int i = 0; i < n; ++i) {
    s += static_cast<char>((i + label_offset) % 10);
    for (int j = 0; j < 3072; ++j) s += static_cast<char>((i * 7 + j) % 251);
  }
  return s;
}

// A small synthetic CIFAR-10 copy (5 x 16 training, 30 test images) whose batches.meta.txt holds
// the given class names.
inline fs::path make_cifar(const fs::path& root, const std::vector<std::string>& classes) {
  const fs::path d = root / "cifar-10-batches-bin";
  fs::create_directories(d);
  for (int b = 1; b <= 5; ++b)
    write_bytes(d / ("data_batch_" + std::to_string(b) + ".bin"), cifar_records(16, b));
  write_bytes(d / "test_batch.bin", cifar_records(30));
  std::string meta;
  for (const std::string& c : classes) meta += c + "\n";
  write_bytes(d / "batches.meta.txt", meta);
  return root;
}

struct Run {
  int status;
  std::string output;
};

// Starts bin with args (no shell), in cwd, with extra environment variables; its stdout and
// stderr go to out_fd (a pipe's write end) when >= 0. Returns the pid.
inline pid_t spawn_bin(const std::string& bin, const std::vector<std::string>& args, const fs::path& cwd,
                       const std::vector<std::string>& env, int out_fd, int close_fd = -1) {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  if (!cwd.empty()) posix_spawn_file_actions_addchdir_np(&fa, cwd.c_str());
  if (out_fd >= 0) {
    posix_spawn_file_actions_adddup2(&fa, out_fd, STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&fa, out_fd, STDERR_FILENO);
  }
  if (close_fd >= 0) posix_spawn_file_actions_addclose(&fa, close_fd);
  std::vector<std::string> all = {bin};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& a : all) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> envs(env);
  for (char** e = environ; *e; ++e) envs.emplace_back(*e);
  std::vector<char*> envp;
  for (std::string& e : envs) envp.push_back(e.data());
  envp.push_back(nullptr);
  pid_t pid = -1;
  REQUIRE(::posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), envp.data()) == 0);
  posix_spawn_file_actions_destroy(&fa);
  return pid;
}

// Runs bin to its end and returns its exit status (-1 if killed) and its output.
inline Run run_bin(const std::string& bin, const std::vector<std::string>& args, const fs::path& cwd = {},
                   const std::vector<std::string>& env = {}) {
  int pipefd[2];
  REQUIRE(::pipe(pipefd) == 0);
  const pid_t pid = spawn_bin(bin, args, cwd, env, pipefd[1], pipefd[0]);
  ::close(pipefd[1]);
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(pipefd[0], buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  ::close(pipefd[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

}  // namespace nl::test
