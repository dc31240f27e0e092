#include "fiber.h"

#include <ucontext.h>

#include <cstdlib>
#include <stdexcept>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define CUEMU_ASAN 1
#else
#define CUEMU_ASAN 0
#endif

namespace cuemu {

struct Fiber::Impl {
  ucontext_t ctx;
  ucontext_t* caller = nullptr;
  std::vector<char> stack;
  Entry entry;
  void* arg;
  bool done = false;
#if CUEMU_ASAN
  void* fake_stack = nullptr;
  const void* caller_stack_bottom = nullptr;
  size_t caller_stack_size = 0;
#endif
};

namespace {
thread_local Fiber::Impl* g_current = nullptr;
thread_local ucontext_t g_scheduler_ctx;

void trampoline(unsigned lo, unsigned hi) {
  auto* f = reinterpret_cast<Fiber::Impl*>((static_cast<uintptr_t>(hi) << 32) | lo);
#if CUEMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &f->caller_stack_bottom, &f->caller_stack_size);
#endif
  f->entry(f->arg);
  f->done = true;
#if CUEMU_ASAN
  // nullptr: this fiber's stack frame is finished, ASan may drop its fake stack.
  __sanitizer_start_switch_fiber(nullptr, f->caller_stack_bottom, f->caller_stack_size);
#endif
  // Returning switches to uc_link (the scheduler).
}
}  // namespace

Fiber::Fiber(size_t stack_bytes) : impl_(std::make_unique<Impl>()) {
  impl_->stack.resize(stack_bytes);
}

void Fiber::start(Entry entry, void* arg) {
  impl_->entry = entry;
  impl_->arg = arg;
  impl_->done = false;
  if (getcontext(&impl_->ctx) != 0) throw std::runtime_error("cuemu: getcontext failed");
  impl_->ctx.uc_stack.ss_sp = impl_->stack.data();
  impl_->ctx.uc_stack.ss_size = impl_->stack.size();
  impl_->ctx.uc_link = &g_scheduler_ctx;
  auto p = reinterpret_cast<uintptr_t>(impl_.get());
  makecontext(&impl_->ctx, reinterpret_cast<void (*)()>(trampoline), 2,
              static_cast<unsigned>(p & 0xffffffffu), static_cast<unsigned>(p >> 32));
}

Fiber::~Fiber() = default;

bool Fiber::finished() const { return impl_->done; }

void Fiber::resume() {
  g_current = impl_.get();
#if CUEMU_ASAN
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, impl_->stack.data(), impl_->stack.size());
#endif
  swapcontext(&g_scheduler_ctx, &impl_->ctx);
#if CUEMU_ASAN
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
  g_current = nullptr;
}

void Fiber::yield_to_scheduler() {
  Impl* f = g_current;
#if CUEMU_ASAN
  __sanitizer_start_switch_fiber(&f->fake_stack, f->caller_stack_bottom, f->caller_stack_size);
#endif
  swapcontext(&f->ctx, &g_scheduler_ctx);
#if CUEMU_ASAN
  __sanitizer_finish_switch_fiber(f->fake_stack, &f->caller_stack_bottom, &f->caller_stack_size);
#endif
}

}  // namespace cuemu
