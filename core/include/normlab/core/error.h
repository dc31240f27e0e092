#pragma once
// Errors a user can cause are reported by throwing nl::Error; the library never exits the process.
#include <sstream>
#include <stdexcept>
#include <string>

namespace nl {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {

template <typename... Args>
std::string str_cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

template <typename... Args>
[[noreturn]] void throw_error(const char* file, int line, const char* cond, const Args&... args) {
  // The message comes first because that is what a user reads; file:line is for us.
  std::string msg = str_cat(args...);
  if (msg.empty()) msg = std::string("check failed: ") + cond;
  throw Error(str_cat("normlab: ", msg, " [", file, ":", line, "]"));
}

}  // namespace detail
}  // namespace nl

// NL_CHECK(cond, parts...) throws nl::Error with the streamed parts and file:line when cond is false.
#define NL_CHECK(cond, ...)                                                         \
  do {                                                                              \
    if (!(cond)) ::nl::detail::throw_error(__FILE__, __LINE__, #cond, __VA_ARGS__); \
  } while (0)

#define NL_FAIL(...) ::nl::detail::throw_error(__FILE__, __LINE__, "", __VA_ARGS__)
