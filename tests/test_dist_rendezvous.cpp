// nl::dist's file rendezvous and launcher environment (dist/src/rendezvous.h): how the NCCL
// backend's processes meet when no MPI started them. Device-independent, so tested here with
// threads as ranks; the NCCL group that uses it runs only on GPUs (scripts/gpu-check.sh).
#include <cstdlib>
#include <future>
#include <optional>
#include <thread>

#include "data_helpers.h"
#include "dist/src/rendezvous.h"
#include "normlab/core/error.h"

using namespace nl;
namespace fs = std::filesystem;
using nl::test::slurp;
using nl::test::TempDir;
using nl::test::write_bytes;

namespace {

// Sets (or with nullptr unsets) environment variables for one scope, restoring them after.
struct ScopedEnv {
  std::vector<std::pair<std::string, std::optional<std::string>>> saved;
  ScopedEnv(std::initializer_list<std::pair<const char*, const char*>> vars) {
    for (auto [name, value] : vars) {
      const char* old = std::getenv(name);
      saved.emplace_back(name, old ? std::optional<std::string>(old) : std::nullopt);
      if (value)
        ::setenv(name, value, 1);
      else
        ::unsetenv(name);
    }
  }
  ~ScopedEnv() {
    for (auto& [name, value] : saved) {
      if (value)
        ::setenv(name.c_str(), value->c_str(), 1);
      else
        ::unsetenv(name.c_str());
    }
  }
};

// Every launcher variable launch_from_env reads, unset.
ScopedEnv no_launcher() {
  return ScopedEnv{{"RANK", nullptr},
                   {"WORLD_SIZE", nullptr},
                   {"LOCAL_RANK", nullptr},
                   {"OMPI_COMM_WORLD_RANK", nullptr},
                   {"OMPI_COMM_WORLD_SIZE", nullptr},
                   {"OMPI_COMM_WORLD_LOCAL_RANK", nullptr},
                   {"SLURM_PROCID", nullptr},
                   {"SLURM_NTASKS", nullptr},
                   {"SLURM_LOCALID", nullptr}};
}

}  // namespace

TEST_CASE("dist rendezvous: 3 ranks get rank 0's bytes through a file, which is removed after",
          "[dist][quick]") {
  TempDir dir;
  const std::string path = (dir.path / "id").string();
  // Every byte value, as NCCL's id may hold any.
  std::string id(128, '\0');
  for (int i = 0; i < 128; ++i) id[size_t(i)] = char((i * 37 + 200) & 255);
  // The readers start first, so they wait for the file.
  std::vector<std::future<std::string>> readers;
  for (int r : {1, 2})
    readers.push_back(std::async(std::launch::async, [&, r] {
      dist::FileRendezvous meet(path, r, 3, 20.0);
      return meet.exchange(std::string(128, 'x'));  // ignored on ranks > 0
    }));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  dist::FileRendezvous host(path, 0, 3, 20.0);
  REQUIRE(host.exchange(id) == id);
  for (auto& f : readers) REQUIRE(f.get() == id);
  REQUIRE(fs::exists(path));
  host.finish();
  REQUIRE_FALSE(fs::exists(path));
  // No temporary left beside it.
  REQUIRE(fs::is_empty(dir.path));
}

TEST_CASE("dist rendezvous: a file already there is reported by rank 0 and left as it was", "[dist][quick]") {
  TempDir dir;
  const std::string path = (dir.path / "id").string();
  write_bytes(path, "someone else's file\n");
  {
    dist::FileRendezvous host(path, 0, 2, 5.0);
    REQUIRE_THROWS_WITH(host.exchange("abc"), Catch::Contains("already exists") && Catch::Contains(path) &&
                                                  Catch::Contains("not replaced"));
  }  // the destructor must not remove it either
  REQUIRE(slurp(path) == "someone else's file\n");
  // A reader of that file is told it is not a rendezvous file.
  dist::FileRendezvous reader(path, 1, 2, 5.0);
  REQUIRE_THROWS_WITH(reader.exchange(""), Catch::Contains("is not a normlab rendezvous file"));
}

TEST_CASE("dist rendezvous: a missing rank 0 or another group's file end in a clear error", "[dist][quick]") {
  TempDir dir;
  const std::string path = (dir.path / "id").string();
  dist::FileRendezvous late(path, 1, 2, 0.3);
  const auto t0 = std::chrono::steady_clock::now();
  REQUIRE_THROWS_WITH(late.exchange(""), Catch::Contains("rank 1 of 2: rank 0's rendezvous file") &&
                                             Catch::Contains("did not appear within 0.3 s"));
  REQUIRE(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5));
  // Made for 4 processes, read by a group of 2.
  dist::FileRendezvous four(path, 0, 4, 5.0);
  four.exchange("id");
  dist::FileRendezvous two(path, 1, 2, 5.0);
  REQUIRE_THROWS_WITH(two.exchange(""),
                      Catch::Contains("was made for 4 processes") && Catch::Contains("in a group of 2"));
  // A file replaced after rank 0 made it is not rank 0's to remove.
  fs::remove(path);
  write_bytes(path, "replaced\n");
  four.finish();
  REQUIRE(slurp(path) == "replaced\n");
}

TEST_CASE("dist launcher environment: torchrun's, Open MPI's and Slurm's variables, checked",
          "[dist][quick]") {
  auto clean = no_launcher();
  {
    const dist::Launch l = dist::launch_from_env();
    REQUIRE((l.rank == 0 && l.size == 1 && l.source.empty()));
  }
  {
    ScopedEnv e{{"RANK", "3"},
                {"WORLD_SIZE", "4"},
                {"LOCAL_RANK", "1"},
                {"SLURM_PROCID", "0"},
                {"SLURM_NTASKS", "9"}};
    const dist::Launch l = dist::launch_from_env();
    REQUIRE((l.rank == 3 && l.size == 4 && l.local_rank == 1 && l.source == "RANK/WORLD_SIZE"));
  }
  {
    ScopedEnv e{{"OMPI_COMM_WORLD_RANK", "1"}, {"OMPI_COMM_WORLD_SIZE", "2"}};
    const dist::Launch l = dist::launch_from_env();
    REQUIRE((l.rank == 1 && l.size == 2 && l.local_rank == 1 && l.source == "Open MPI"));
  }
  {
    ScopedEnv e{{"SLURM_PROCID", "5"}, {"SLURM_NTASKS", "8"}, {"SLURM_LOCALID", "1"}};
    const dist::Launch l = dist::launch_from_env();
    REQUIRE((l.rank == 5 && l.size == 8 && l.local_rank == 1 && l.source == "Slurm"));
  }
  {
    ScopedEnv e{{"RANK", "2"}, {"WORLD_SIZE", "2"}};
    REQUIRE_THROWS_WITH(dist::launch_from_env(), Catch::Contains("RANK=2 is not a rank of WORLD_SIZE=2"));
  }
  {
    ScopedEnv e{{"RANK", "1"}};
    REQUIRE_THROWS_WITH(dist::launch_from_env(), Catch::Contains("RANK is set but WORLD_SIZE is not"));
  }
  {
    ScopedEnv e{{"RANK", "0"}, {"WORLD_SIZE", "two"}};
    REQUIRE_THROWS_WITH(dist::launch_from_env(), Catch::Contains("WORLD_SIZE='two' is not a whole number"));
  }
}
