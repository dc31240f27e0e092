// Fibers for cuemu. On x86-64 a dozen instructions of assembly switch stacks (callee-saved
// registers + stack pointer), about 50x faster than glibc's swapcontext, which makes two
// sigprocmask system calls per switch. Elsewhere the portable ucontext version is used.
#include "fiber.h"

#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define CUEMU_ASAN 1
#else
#define CUEMU_ASAN 0
#endif

// CUEMU_TSAN (the race-check build, NORMLAB_RACECHECK): every fiber is also a ThreadSanitizer
// fiber, and each switch is announced without synchronisation, so TSan sees the CUDA threads of
// a block as concurrent threads; the runtime adds exactly the happens-before edges CUDA has.
#if CUEMU_TSAN
#include <sanitizer/tsan_interface.h>
#endif

#if defined(__x86_64__)
#define CUEMU_ASM_SWITCH 1
#else
#define CUEMU_ASM_SWITCH 0
#include <ucontext.h>
#endif

#if CUEMU_ASM_SWITCH
// cuemu_switch(save, next): pushes the callee-saved registers, stores the stack pointer in
// *save, loads `next` and pops the registers saved there.
// cuemu_fiber_start: where a new fiber's first switch "returns" to; r12 holds the fiber and
// r13 the C++ entry, which never returns.
asm(R"(
  .text
  .globl cuemu_switch
  .type cuemu_switch, @function
cuemu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size cuemu_switch, .-cuemu_switch

  .globl cuemu_fiber_start
  .type cuemu_fiber_start, @function
cuemu_fiber_start:
  movq %r12, %rdi
  callq *%r13
  ud2
  .size cuemu_fiber_start, .-cuemu_fiber_start
)");
extern "C" void cuemu_switch(void** save, void* next);
extern "C" void cuemu_fiber_start();
#endif

namespace cuemu {

struct Fiber::Impl {
  std::vector<char> stack;
  Entry entry = nullptr;
  void* arg = nullptr;
  bool done = false;
#if CUEMU_ASM_SWITCH
  void* sp = nullptr;
#else
  ucontext_t ctx;
#endif
#if CUEMU_ASAN
  void* fake_stack = nullptr;
  const void* caller_stack_bottom = nullptr;
  size_t caller_stack_size = 0;
#endif
#if CUEMU_TSAN
  void* tsan = nullptr;
#endif
};

namespace {
thread_local Fiber::Impl* g_current = nullptr;
#if CUEMU_TSAN
thread_local void* g_scheduler_tsan = nullptr;
// No happens-before from the switch itself: the scheduler is not a CUDA-level synchronisation.
void tsan_switch(void* to) { __tsan_switch_to_fiber(to, __tsan_switch_to_fiber_no_sync); }
#endif
#if CUEMU_ASM_SWITCH
thread_local void* g_scheduler_sp = nullptr;
#else
thread_local ucontext_t g_scheduler_ctx;
#endif

void switch_to_scheduler(Fiber::Impl* f) {
#if CUEMU_ASM_SWITCH
  cuemu_switch(&f->sp, g_scheduler_sp);
#else
  swapcontext(&f->ctx, &g_scheduler_ctx);
#endif
}

[[noreturn]] void run_fiber(Fiber::Impl* f) {
#if CUEMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &f->caller_stack_bottom, &f->caller_stack_size);
#endif
  f->entry(f->arg);
  f->done = true;
#if CUEMU_TSAN
  tsan_switch(g_scheduler_tsan);
#endif
#if CUEMU_ASAN
  // nullptr: this fiber's frames are finished, ASan may drop its fake stack.
  __sanitizer_start_switch_fiber(nullptr, f->caller_stack_bottom, f->caller_stack_size);
#endif
  switch_to_scheduler(f);
  std::abort();  // a finished fiber is never resumed
}

#if CUEMU_ASM_SWITCH
extern "C" [[noreturn]] void cuemu_fiber_entry(Fiber::Impl* f) { run_fiber(f); }
#else
void trampoline(unsigned lo, unsigned hi) {
  run_fiber(reinterpret_cast<Fiber::Impl*>((static_cast<uintptr_t>(hi) << 32) | lo));
}
#endif
}  // namespace

Fiber::Fiber(size_t stack_bytes) : impl_(std::make_unique<Impl>()) {
  impl_->stack.resize(stack_bytes);
#if CUEMU_TSAN
  impl_->tsan = __tsan_create_fiber(0);
#endif
}

Fiber::~Fiber() {
#if CUEMU_TSAN
  __tsan_destroy_fiber(impl_->tsan);
#endif
}

void* Fiber::tsan_fiber() const {
#if CUEMU_TSAN
  return impl_->tsan;
#else
  return nullptr;
#endif
}

void Fiber::start(Entry entry, void* arg) {
  impl_->entry = entry;
  impl_->arg = arg;
  impl_->done = false;
#if CUEMU_ASAN
  // A kernel abandoned mid-way (a failed launch) leaves its frames' redzones poisoned on this
  // stack; the next kernel's frames would land on them and be reported as overflows.
  ASAN_UNPOISON_MEMORY_REGION(impl_->stack.data(), impl_->stack.size());
#endif
#if CUEMU_ASM_SWITCH
  // Initial frame, from the top: a 16-byte-aligned empty slot, the address cuemu_switch's ret
  // jumps to, then rbp rbx r12 r13 r14 r15 as cuemu_switch pops them.
  auto top = (reinterpret_cast<uintptr_t>(impl_->stack.data() + impl_->stack.size())) & ~uintptr_t(15);
  auto* slot = reinterpret_cast<void**>(top - 16);
  slot[-1] = reinterpret_cast<void*>(&cuemu_fiber_start);  // return address
  slot[-2] = nullptr;                                      // rbp
  slot[-3] = nullptr;                                      // rbx
  slot[-4] = impl_.get();                                  // r12: the fiber
  slot[-5] = reinterpret_cast<void*>(&cuemu_fiber_entry);  // r13: the entry
  slot[-6] = nullptr;                                      // r14
  slot[-7] = nullptr;                                      // r15
  impl_->sp = &slot[-7];
#else
  if (getcontext(&impl_->ctx) != 0) throw std::runtime_error("cuemu: getcontext failed");
  impl_->ctx.uc_stack.ss_sp = impl_->stack.data();
  impl_->ctx.uc_stack.ss_size = impl_->stack.size();
  impl_->ctx.uc_link = nullptr;
  auto p = reinterpret_cast<uintptr_t>(impl_.get());
  makecontext(&impl_->ctx, reinterpret_cast<void (*)()>(trampoline), 2,
              static_cast<unsigned>(p & 0xffffffffu), static_cast<unsigned>(p >> 32));
#endif
}

bool Fiber::finished() const { return impl_->done; }

void Fiber::resume() {
  g_current = impl_.get();
#if CUEMU_TSAN
  if (!g_scheduler_tsan) g_scheduler_tsan = __tsan_get_current_fiber();
  tsan_switch(impl_->tsan);
#endif
#if CUEMU_ASAN
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, impl_->stack.data(), impl_->stack.size());
#endif
#if CUEMU_ASM_SWITCH
  cuemu_switch(&g_scheduler_sp, impl_->sp);
#else
  swapcontext(&g_scheduler_ctx, &impl_->ctx);
#endif
#if CUEMU_ASAN
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
  g_current = nullptr;
}

void Fiber::yield_to_scheduler() {
  Impl* f = g_current;
#if CUEMU_TSAN
  tsan_switch(g_scheduler_tsan);
#endif
#if CUEMU_ASAN
  __sanitizer_start_switch_fiber(&f->fake_stack, f->caller_stack_bottom, f->caller_stack_size);
#endif
  switch_to_scheduler(f);
#if CUEMU_ASAN
  __sanitizer_finish_switch_fiber(f->fake_stack, &f->caller_stack_bottom, &f->caller_stack_size);
#endif
}

}  // namespace cuemu
