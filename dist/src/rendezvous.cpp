#include "rendezvous.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>
#include <thread>

#include "normlab/core/error.h"
#include "normlab/nn/atomic_file.h"

namespace nl::dist {

namespace {

const char* kMagic = "normlab rendezvous 1";

// The variable as a whole number >= 0, or -1 when unset.
int env_int(const char* name) {
  const char* s = std::getenv(name);
  if (!s) return -1;
  char* end = nullptr;
  errno = 0;
  const long v = std::strtol(s, &end, 10);
  NL_CHECK(*s != '\0' && *end == '\0' && errno == 0 && v >= 0 && v <= 1 << 20, "dist: ", name, "='", s,
           "' is not a whole number of processes or a rank");
  return int(v);
}

std::string to_hex(const std::string& bytes) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) out += digits[c >> 4], out += digits[c & 15];
  return out;
}

}  // namespace

Launch launch_from_env() {
  struct Names {
    const char *rank, *size, *local, *source;
  };
  for (const Names& n :
       {Names{"RANK", "WORLD_SIZE", "LOCAL_RANK", "RANK/WORLD_SIZE"},
        Names{"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "Open MPI"},
        Names{"SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "Slurm"}}) {
    const int rank = env_int(n.rank), size = env_int(n.size);
    if (rank < 0 && size < 0) continue;
    NL_CHECK(rank >= 0 && size >= 0, "dist: ", rank < 0 ? n.size : n.rank, " is set but ",
             rank < 0 ? n.rank : n.size, " is not: a launcher sets both");
    NL_CHECK(size >= 1 && rank < size, "dist: ", n.rank, "=", rank, " is not a rank of ", n.size, "=", size);
    const int local = env_int(n.local);
    return Launch{rank, size, local < 0 ? rank : local, n.source};
  }
  return Launch{};
}

FileRendezvous::FileRendezvous(std::string path, int rank, int size, double timeout_seconds)
    : path_(std::move(path)), rank_(rank), size_(size), timeout_(timeout_seconds) {
  NL_CHECK(!path_.empty(), "dist: the rendezvous file's path is empty");
}

std::string FileRendezvous::exchange(const std::string& payload) {
  if (rank_ == 0) {
    std::ostringstream os;
    os << kMagic << "\nsize " << size_ << '\n' << to_hex(payload) << '\n';
    content_ = os.str();
    NL_CHECK(nn::create_file_atomic(path_, content_), "dist: rank 0: the rendezvous file ", path_,
             " already exists (left by an earlier job, or another job uses it): remove it or choose another "
             "path; it is not replaced");
    created_ = true;
    struct stat st {};
    if (::stat(path_.c_str(), &st) == 0) dev_ = st.st_dev, ino_ = st.st_ino;
    return payload;
  }
  // Polled: the file appears complete or not at all (create_file_atomic links a finished file).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_);
  for (struct stat st{}; ::stat(path_.c_str(), &st) != 0;) {
    NL_CHECK(errno == ENOENT, "dist: rank ", rank_, ": cannot read the rendezvous file ", path_, ": ",
             std::strerror(errno));
    NL_CHECK(std::chrono::steady_clock::now() < deadline, "dist: rank ", rank_, " of ", size_,
             ": rank 0's rendezvous file ", path_, " did not appear within ", timeout_,
             " s (is rank 0 running, and does every rank see this path?)");
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::ifstream in(path_);
  NL_CHECK(in.good(), "dist: rank ", rank_, ": cannot open the rendezvous file ", path_);
  std::string magic, word, hex;
  int size = 0;
  std::getline(in, magic);
  in >> word >> size >> hex;
  NL_CHECK(magic == kMagic && word == "size" && in && hex.size() % 2 == 0 &&
               hex.find_first_not_of("0123456789abcdef") == std::string::npos,
           "dist: rank ", rank_, ": ", path_, " is not a normlab rendezvous file");
  NL_CHECK(size == size_, "dist: rank ", rank_, ": the rendezvous file ", path_, " was made for ", size,
           " processes, this one is in a group of ", size_, " (a file left by another job?)");
  std::string got(hex.size() / 2, '\0');
  for (size_t i = 0; i < got.size(); ++i) got[i] = char(std::stoi(hex.substr(2 * i, 2), nullptr, 16));
  return got;
}

void FileRendezvous::finish() {
  if (!created_) return;
  created_ = false;
  // Only the file rank 0 made: a user may have replaced it meanwhile (and a new file may reuse the
  // inode number, hence the content too).
  struct stat st {};
  if (::stat(path_.c_str(), &st) != 0 || st.st_dev != dev_ || st.st_ino != ino_) return;
  std::ifstream in(path_, std::ios::binary);
  const std::string now((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (now == content_) ::unlink(path_.c_str());
}

FileRendezvous::~FileRendezvous() { finish(); }

}  // namespace nl::dist
