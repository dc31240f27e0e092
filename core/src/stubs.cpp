// Definitions of the stubs declared in normlab/core/kernel/stubs.h.
#include "normlab/core/kernel/stubs.h"

#include <utility>
#include <vector>

#define NL_DEFINE_STUB(name) \
  ::nl::DispatchStub<name##_fn> name##_stub { #name }

namespace nl {
NL_DEFINE_STUB(copy_bytes);
NL_DEFINE_STUB(copy_strided);
NL_DEFINE_STUB(fill);
NL_DEFINE_STUB(native_stream);
NL_DEFINE_STUB(launch_trace_begin);
NL_DEFINE_STUB(launch_trace_end);
NL_DEFINE_STUB(add_fwd);
NL_DEFINE_STUB(mul_fwd);
NL_DEFINE_STUB(sum_fwd);
NL_DEFINE_STUB(sum_bwd);
NL_DEFINE_STUB(nonfinite_count);
NL_DEFINE_STUB(relu_fwd);
NL_DEFINE_STUB(relu_bwd);
NL_DEFINE_STUB(dropout_fwd);
NL_DEFINE_STUB(dropout_bwd);
NL_DEFINE_STUB(conv2d_fwd);
NL_DEFINE_STUB(conv2d_bwd);
NL_DEFINE_STUB(norm_fwd);
NL_DEFINE_STUB(norm_bwd);
NL_DEFINE_STUB(max_pool2d_fwd);
NL_DEFINE_STUB(max_pool2d_bwd);
NL_DEFINE_STUB(global_avg_pool_fwd);
NL_DEFINE_STUB(global_avg_pool_bwd);
NL_DEFINE_STUB(linear_fwd);
NL_DEFINE_STUB(linear_bwd);
NL_DEFINE_STUB(log_softmax_fwd);
NL_DEFINE_STUB(log_softmax_bwd);
NL_DEFINE_STUB(nll_loss_fwd);
NL_DEFINE_STUB(nll_loss_bwd);
NL_DEFINE_STUB(sgd_step);
NL_DEFINE_STUB(adam_step);

namespace detail {
thread_local bool op_profile_on = false;
namespace {
thread_local std::vector<OpRecord> op_records;
}  // namespace
void op_profile_record(const char* op, double us, const OpCost& cost) {
  op_records.push_back({op, us, cost});
}
}  // namespace detail

void op_profile_begin() {
  detail::op_records.clear();
  detail::op_profile_on = true;
}
std::vector<OpRecord> op_profile_end() {
  detail::op_profile_on = false;
  return std::move(detail::op_records);
}
}  // namespace nl
