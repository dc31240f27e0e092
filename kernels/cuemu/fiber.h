#pragma once
// The fiber layer under cuemu: one fiber per emulated CUDA thread. Kept behind create / switch /
// destroy so a faster implementation than glibc's ucontext can be dropped in.
#include <cstddef>
#include <memory>

namespace cuemu {

class Fiber {
 public:
  using Entry = void (*)(void* arg);
  explicit Fiber(size_t stack_bytes);
  // (Re)starts the fiber at entry(arg) on its existing stack; stacks are reused across blocks.
  void start(Entry entry, void* arg);
  ~Fiber();
  Fiber(const Fiber&) = delete;
  Fiber& operator=(const Fiber&) = delete;

  // Runs the fiber until it calls yield_to_scheduler() or its entry returns.
  void resume();
  bool finished() const;
  // Called from inside a running fiber.
  static void yield_to_scheduler();
  // The ThreadSanitizer fiber of the race-check build (null otherwise), for naming.
  void* tsan_fiber() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace cuemu
