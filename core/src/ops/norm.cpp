// batch_norm, group_norm (with the fused ReLU / dropout / residual epilogue), layer_norm: shape
// checks, saved statistics and tape nodes.
#include <algorithm>
#include <vector>

#include "normlab/core/kernel/stubs.h"
#include "normlab/core/ops.h"
#include "op_utils.h"

namespace nl {
using namespace detail;

namespace {

void check_eps(const char* op, float eps) { NL_CHECK(eps > 0.0f, op, ": eps must be positive, got ", eps); }

// Checks the epilogue and fills its part of p: the dropout draw is reserved here, once per call,
// exactly as nl::dropout reserves it, so fused and unfused runs see the same mask.
void prepare_epilogue(const char* op, const NormEpilogue& e, const Tensor& x, NormParams& p) {
  NL_CHECK(e.dropout >= 0.0f && e.dropout < 1.0f, op, ": dropout probability must be in [0, 1), got ",
           e.dropout);
  if (e.residual.defined()) {
    check_inputs(op, {{"input", &x}, {"residual", &e.residual}});
    NL_CHECK(e.residual.shape() == x.shape(), op, ": residual has shape ", e.residual.shape(),
             " but the input has shape ", x.shape(), "; a residual add needs equal shapes");
  }
  if (e.tau.defined()) {
    NL_CHECK(!e.relu, op, ": TLU (tau) and ReLU are both activations; give one");
    check_inputs(op, {{"input", &x}, {"tau", &e.tau}});
    NL_CHECK(e.tau.dim() == 1 && x.dim() >= 2 && e.tau.size(0) == x.size(1), op, ": tau must be [C] = [",
             x.dim() >= 2 ? x.size(1) : 0, "], got shape ", e.tau.shape());
  }
  p.relu = e.relu;
  p.tlu = e.tau.defined();
  p.dropout = e.dropout;
  if (e.dropout > 0.0f) {
    Generator& g = e.gen ? *e.gen : default_generator();
    p.seed = g.seed();
    p.offset = g.reserve(static_cast<uint64_t>(x.numel()));
  }
}

// One byte per element, in an int32 tensor (the tensor core has no byte dtype).
Tensor mask_buffer(const NormParams& p, const Tensor& x) {
  if (!p.has_mask()) return Tensor();
  return Tensor::empty({(x.numel() + 3) / 4}, DType::I32, x.device());
}
uint8_t* mask_ptr(const Tensor& m) {
  return m.defined() ? reinterpret_cast<uint8_t*>(m.data_i32()) : nullptr;
}

struct NormSaved {
  Tensor x, gamma, mean, rstd, mask, renorm;
};

// [chunks, C] -> [C], rows added in order (deterministic); one chunk is returned as is.
Tensor sum_chunks(const Tensor& t, int64_t chunks, int64_t C) {
  if (!t.defined() || chunks == 1) return t.defined() ? t.view({C}) : t;
  Tensor out = Tensor::empty({C}, DType::F32, t.device());
  add_fwd_stub(t.device(), C, t.data_f32(), t.data_f32() + C, out.data_f32());
  for (int64_t j = 2; j < chunks; ++j)
    add_fwd_stub(t.device(), C, out.data_f32(), t.data_f32() + j * C, out.data_f32());
  return out;
}

Tensor contiguous_or_none(const Tensor& t) { return t.defined() ? t.contiguous() : Tensor(); }

}  // namespace

namespace {

// SyncBatchNorm (spec.sync, training): BatchNorm with the statistics of every process's batch
// together, in the BatchNorm kernels' split phases (kernel/stubs.h), so it runs on every backend
// and keeps the fused epilogue. Forward: this process's per-channel mean and variance (the
// statistics-only phase: one read of x); every process's (count, means, variances) gathered in one
// collective (a sum of [K, 2C + 1] buffers, each zero outside its process's row: x + 0 is exact),
// and combined here by count, the variance by Chan et al.'s parallel formula, sum of
// n_k (var_k + (mean_k - mean)^2) / M, in double: no sum-of-squares cancellation, and one
// collective (a barrier, the cost that grows with the process count) where summing the means
// first and the squared deviations about them next took two. Then an eval-mode call with the
// global statistics writes the output, epilogue included. Backward: the sums-only phase gives this process's
// S_g and S_gxhat (also its dbeta and dgamma); those are summed across processes, and the dx phase writes dx
// = gamma*r*(g - S_g/M - xhat*S_gxhat/M) from them in one pass. The traffic of BatchNorm's two passes each
// way, plus a host round trip of a few C floats per call (the all-reduce reads host memory;
// docs/scaling-out.md).
Tensor sync_batch_norm(const char* op, const NormParams& p, const NormSpec& spec, const Tensor& x,
                       const Tensor& gamma, const Tensor& beta, const Tensor& residual,
                       const Tensor& running_mean, const Tensor& running_var) {
  const int64_t C = p.C;
  const Device dev = x.device();
  const double n_local = static_cast<double>(p.N * p.HxW);
  // 1. This process's statistics: no output, no epilogue, no running update.
  NormParams ps = p;
  ps.relu = ps.tlu = false, ps.dropout = 0.0f;
  Tensor local_mean = Tensor::empty({C}, DType::F32, dev), local_rstd = Tensor::empty({C}, DType::F32, dev);
  {
    NormFwdArgs a;
    a.x = x.data_f32(), a.mean = local_mean.data_f32(), a.rstd = local_rstd.data_f32();
    norm_fwd_stub(dev, ps, a);
  }
  const std::vector<float> lm = local_mean.to_vector(), lr = local_rstd.to_vector();
  // 2. Every process's row [n, means, variances], gathered; a process without values (n = 0) has
  // no statistics of its own and is skipped.
  const int K = spec.sync->size(), rank = spec.sync->rank();
  NL_CHECK(K >= 1 && rank >= 0 && rank < K, op, ": SyncBatchNorm's process group says rank ", rank, " of ",
           K);
  const size_t row = size_t(2 * C + 1);
  std::vector<float> all(size_t(K) * row, 0.0f);
  float* mine = all.data() + size_t(rank) * row;
  mine[0] = static_cast<float>(n_local);
  for (int64_t c = 0; c < C; ++c) {
    const double r = lr[size_t(c)];
    mine[1 + c] = lm[size_t(c)];
    mine[1 + C + c] = static_cast<float>(std::max(0.0, 1.0 / (r * r) - static_cast<double>(p.eps)));
  }
  spec.sync->sum(all.data(), int64_t(all.size()));
  double M = 0;
  for (int k = 0; k < K; ++k) M += all[size_t(k) * row];
  NL_CHECK(M > 1, op, ": SyncBatchNorm needs more than one value per channel over all processes, got ", M);
  std::vector<float> gmean(static_cast<size_t>(C)), gvar(static_cast<size_t>(C));
  for (int64_t c = 0; c < C; ++c) {
    double mean = 0, m2 = 0;
    for (int k = 0; k < K; ++k)
      if (const float* rk = all.data() + size_t(k) * row; rk[0] != 0.0f) mean += double(rk[0]) * rk[1 + c];
    mean /= M;
    for (int k = 0; k < K; ++k)
      if (const float* rk = all.data() + size_t(k) * row; rk[0] != 0.0f) {
        const double d = double(rk[1 + c]) - mean;
        m2 += double(rk[0]) * (double(rk[1 + C + c]) + d * d);
      }
    gmean[size_t(c)] = static_cast<float>(mean);
    gvar[size_t(c)] = static_cast<float>(m2 / M);
  }
  // 3. Normalise with the global statistics (eval mode reads them as its running statistics).
  Tensor gm = Tensor::from_vector(gmean, {C}, dev), gv = Tensor::from_vector(gvar, {C}, dev);
  NormParams pe = p;
  pe.training = false;
  Tensor y = Tensor::empty(x.shape(), DType::F32, dev);
  Tensor mean = Tensor::empty({C}, DType::F32, dev), rstd = Tensor::empty({C}, DType::F32, dev);
  Tensor mask = mask_buffer(p, x);
  {
    NormFwdArgs a;
    a.x = x.data_f32(), a.gamma = opt_ptr(gamma), a.beta = opt_ptr(beta), a.residual = opt_ptr(residual);
    a.running_mean = gm.data_f32(), a.running_var = gv.data_f32();
    a.y = y.data_f32(), a.mean = mean.data_f32(), a.rstd = rstd.data_f32(), a.mask = mask_ptr(mask);
    norm_fwd_stub(dev, pe, a);
  }
  // 4. Running statistics from the global ones, as BatchNorm's (unbiased variance).
  if (running_mean.defined()) {
    std::vector<float> rm = running_mean.to_vector(), rv = running_var.to_vector();
    for (int64_t c = 0; c < C; ++c) {
      const size_t i = size_t(c);
      rm[i] = static_cast<float>((1.0 - p.momentum) * rm[i] + p.momentum * static_cast<double>(gmean[i]));
      rv[i] = static_cast<float>((1.0 - p.momentum) * rv[i] +
                                 p.momentum * static_cast<double>(gvar[i]) * M / (M - 1));
    }
    running_mean.copy_(Tensor::from_vector(rm, {C}, running_mean.device()));
    running_var.copy_(Tensor::from_vector(rv, {C}, running_var.device()));
  }
  if (!any_requires_grad({&x, &gamma, &beta, &residual})) return y;
  const bool gx = needs(x), gg = needs(gamma), gb = needs(beta), gr = needs(residual);
  NormSaved s{save(x), save(gamma), mean, rstd, mask, Tensor()};
  CrossProcessSum* sync = spec.sync;
  record_node(y, op, {&x, &gamma, &beta, &residual}, [p, s, sync, M, gx, gg, gb, gr](const Tensor& dy) {
    const Device dev = dy.device();
    const int64_t C = p.C;
    // 1. This process's S_g (dbeta) and S_gxhat (dgamma): the sums-only phase.
    Tensor dgamma = Tensor::empty({C}, DType::F32, dev), dbeta = Tensor::empty({C}, DType::F32, dev);
    NormBwdArgs a;
    a.x = s.x.data_f32(), a.dy = dy.data_f32(), a.gamma = opt_ptr(s.gamma);
    a.mean = s.mean.data_f32(), a.rstd = s.rstd.data_f32(),
    a.mask = s.mask.defined() ? mask_ptr(s.mask) : nullptr;
    a.dgamma = dgamma.data_f32(), a.dbeta = dbeta.data_f32();
    norm_bwd_stub(dev, p, a);
    Tensor dx;
    if (gx) {
      // 2. Every process's sums, over the global count; 3. dx from them in one pass.
      std::vector<float> terms = dbeta.to_vector();
      const std::vector<float> sgx = dgamma.to_vector();
      terms.insert(terms.end(), sgx.begin(), sgx.end());
      sync->sum(terms.data(), 2 * C);
      for (float& t : terms) t = static_cast<float>(t / M);
      Tensor tt = Tensor::from_vector(terms, {2 * C}, dev);
      dx = Tensor::empty(s.x.shape(), DType::F32, dev);
      NormBwdArgs b = a;
      b.dgamma = b.dbeta = nullptr;
      b.dx_terms = tt.data_f32(), b.dx = dx.data_f32();
      norm_bwd_stub(dev, p, b);
    }
    return std::vector<Tensor>{dx, gg ? dgamma : Tensor(), gb ? dbeta : Tensor(), gr ? dy : Tensor()};
  });
  return y;
}

// BatchNorm and its relatives: statistics per channel over the batch, or over micro-batches of
// spec.ghost_batch samples (one kernel call per micro-batch on its contiguous [b, C, H, W] slice),
// optionally renormalised (Batch Renorm).
Tensor batch_norm_impl(const char* op, const Tensor& x_in, const NormSpec& spec, const Tensor& gamma_in,
                       const Tensor& beta_in, const Tensor& running_mean, const Tensor& running_var,
                       bool training, const NormEpilogue& epilogue, const Tensor& steps = Tensor()) {
  check_inputs(op, {{"input", &x_in},
                    {"weight", &gamma_in},
                    {"bias", &beta_in},
                    {"running_mean", &running_mean},
                    {"running_var", &running_var}});
  NL_CHECK(x_in.dim() >= 2, op, ": input must be [N, C, ...], got shape ", x_in.shape());
  check_eps(op, spec.eps);
  NL_CHECK(spec.momentum >= 0.0f && spec.momentum <= 1.0f, op, ": momentum must be in [0, 1], got ",
           spec.momentum);
  NL_CHECK(running_mean.defined() == running_var.defined(), op,
           ": give both running_mean and running_var, or neither");
  NL_CHECK(training || running_mean.defined(), op,
           ": eval mode needs running statistics (running_mean/running_var)");
  NL_CHECK(spec.ghost_batch >= 0, op, ": ghost batch must be >= 0 (0: the whole batch), got ",
           spec.ghost_batch);
  if (spec.renorm) {
    NL_CHECK(running_mean.defined(), op, ": Batch Renorm needs running statistics");
    NL_CHECK(spec.r_max >= 1.0f && spec.d_max >= 0.0f, op,
             ": Batch Renorm needs r_max >= 1 and d_max >= 0, got ", spec.r_max, " and ", spec.d_max);
    NL_CHECK(spec.renorm_warmup >= 0, op, ": the warm-up must be >= 0 steps, got ", spec.renorm_warmup);
    if (spec.renorm_warmup > 0 && training) {
      NL_CHECK(steps.defined(), op, ": a warm-up of ", spec.renorm_warmup,
               " steps needs the step counter (steps)");
      check_inputs(op, {{"input", &x_in}, {"steps", &steps}});
      NL_CHECK(steps.numel() == 1 && steps.is_contiguous(), op, ": steps must be one float, got shape ",
               steps.shape());
    }
  }
  NormParams p;
  p.kind = NormKind::Batch;
  p.N = x_in.size(0), p.C = x_in.size(1), p.HxW = x_in.numel() / std::max<int64_t>(p.N * p.C, 1);
  p.eps = spec.eps, p.momentum = spec.momentum, p.training = training;
  p.renorm = spec.renorm && training, p.r_max = spec.r_max, p.d_max = spec.d_max;
  p.renorm_warmup = spec.renorm_warmup;
  for (const auto& [name, t] : {std::pair{"weight", &gamma_in},
                                {"bias", &beta_in},
                                {"running_mean", &running_mean},
                                {"running_var", &running_var}}) {
    check_vec(op, name, *t, p.C);
    NL_CHECK(!t->defined() || t->is_contiguous(), op, ": ", name, " must be contiguous");
  }
  // Micro-batches of b samples (training only: eval normalises with the running statistics).
  const int64_t b = training && spec.ghost_batch > 0 ? std::min(spec.ghost_batch, p.N) : p.N;
  const int64_t chunks = p.N == 0 ? 1 : (p.N + b - 1) / b;
  const int64_t last = p.N - (chunks - 1) * b;
  NL_CHECK(!training || std::min(b, last) * p.HxW > 1, op, ": training needs more than one value per channel",
           chunks > 1 ? " in every ghost batch" : "", ", got input of shape ", x_in.shape(),
           chunks > 1 ? " split into ghost batches of " + std::to_string(b) : std::string());
  NL_CHECK(!epilogue.tau.defined(), op, ": TLU (tau) fuses into per-sample norms only (FRN's)");
  prepare_epilogue(op, epilogue, x_in, p);

  Tensor x = x_in.contiguous();
  Tensor gamma = contiguous_or_none(gamma_in), beta = contiguous_or_none(beta_in);
  Tensor residual = contiguous_or_none(epilogue.residual);
  if (spec.sync && training) {
    NL_CHECK(
        spec.ghost_batch == 0 && !spec.renorm, op,
        ": SyncBatchNorm takes the whole batch of every process: not with ghost batches or Batch Renorm");
    return sync_batch_norm(op, p, spec, x, gamma, beta, residual, running_mean, running_var);
  }
  Tensor y = Tensor::empty(x.shape(), DType::F32, x.device());
  Tensor mean = Tensor::empty({chunks, p.C}, DType::F32, x.device());
  Tensor rstd = Tensor::empty({chunks, p.C}, DType::F32, x.device());
  Tensor renorm = p.renorm ? Tensor::empty({chunks, 2, p.C}, DType::F32, x.device()) : Tensor();
  Tensor mask = mask_buffer(p, x);
  const int64_t per_sample = p.C * p.HxW;
  auto chunk_params = [p, b, per_sample](int64_t j, int64_t N) {
    NormParams q = p;
    q.N = std::min(b, N - j * b);
    q.index_base = j * b * per_sample;
    return q;
  };
  for (int64_t j = 0; j < chunks; ++j) {
    const NormParams q = chunk_params(j, p.N);
    const int64_t off = q.index_base;
    NormFwdArgs a;
    a.x = x.data_f32() + off, a.gamma = opt_ptr(gamma), a.beta = opt_ptr(beta);
    a.residual = residual.defined() ? residual.data_f32() + off : nullptr;
    a.running_mean = opt_mut(running_mean), a.running_var = opt_mut(running_var);
    a.y = y.data_f32() + off, a.mean = mean.data_f32() + j * p.C, a.rstd = rstd.data_f32() + j * p.C;
    a.renorm = renorm.defined() ? renorm.data_f32() + j * 2 * p.C : nullptr;
    a.renorm_step = p.renorm && p.renorm_warmup > 0 ? steps.data_f32() : nullptr;
    a.mask = mask.defined() ? mask_ptr(mask) + off : nullptr;
    norm_fwd_stub(x.device(), q, a);
  }
  // One step per training call (all micro-batches of a ghost batch share it), on the device.
  if (p.renorm && p.renorm_warmup > 0) {
    const Tensor one = Tensor::ones({1}, x.device());
    add_fwd_stub(x.device(), 1, steps.data_f32(), one.data_f32(), steps.data_f32());
  }
  if (!any_requires_grad({&x, &gamma, &beta, &residual})) return y;
  const bool gx = needs(x), gg = needs(gamma), gb = needs(beta), gr = needs(residual);
  NormSaved s{save(x), save(gamma), mean, rstd, mask, renorm};
  record_node(y, op, {&x, &gamma, &beta, &residual},
              [p, s, gx, gg, gb, gr, chunks, chunk_params](const Tensor& dy) {
                Tensor dx = grad_buffer(gx, s.x);
                // One [C] slice of dgamma/dbeta per micro-batch, summed in order after.
                Tensor dgamma = gg ? Tensor::empty({chunks, p.C}, DType::F32, dy.device()) : Tensor();
                Tensor dbeta = gb ? Tensor::empty({chunks, p.C}, DType::F32, dy.device()) : Tensor();
                for (int64_t j = 0; j < chunks; ++j) {
                  const NormParams q = chunk_params(j, p.N);
                  const int64_t off = q.index_base;
                  NormBwdArgs a;
                  a.x = s.x.data_f32() + off, a.dy = dy.data_f32() + off, a.gamma = opt_ptr(s.gamma);
                  a.mean = s.mean.data_f32() + j * p.C, a.rstd = s.rstd.data_f32() + j * p.C;
                  a.renorm = s.renorm.defined() ? s.renorm.data_f32() + j * 2 * p.C : nullptr;
                  a.mask = s.mask.defined() ? mask_ptr(s.mask) + off : nullptr;
                  a.dx = dx.defined() ? dx.data_f32() + off : nullptr;
                  a.dgamma = dgamma.defined() ? dgamma.data_f32() + j * p.C : nullptr;
                  a.dbeta = dbeta.defined() ? dbeta.data_f32() + j * p.C : nullptr;
                  norm_bwd_stub(dy.device(), q, a);
                }
                return std::vector<Tensor>{dx, sum_chunks(dgamma, chunks, p.C),
                                           sum_chunks(dbeta, chunks, p.C), gr ? dy : Tensor()};
              });
  return y;
}

}  // namespace

Tensor batch_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& running_mean,
                  const Tensor& running_var, bool training, float momentum, float eps,
                  const NormEpilogue& epilogue) {
  return batch_norm_impl("batch_norm", x, NormSpec::batch(momentum, eps), gamma, beta, running_mean,
                         running_var, training, epilogue);
}

namespace {
// GroupNorm and its relatives: statistics per (sample, group), centred or not.
Tensor group_norm_impl(const char* op, const Tensor& x_in, int64_t groups, bool center,
                       const Tensor& gamma_in, const Tensor& beta_in, float eps,
                       const NormEpilogue& epilogue) {
  check_inputs(op, {{"input", &x_in}, {"weight", &gamma_in}, {"bias", &beta_in}});
  NL_CHECK(x_in.dim() >= 2, op, ": input must be [N, C, ...], got shape ", x_in.shape());
  check_eps(op, eps);
  NormParams p;
  p.kind = NormKind::Group;
  p.N = x_in.size(0), p.C = x_in.size(1), p.G = groups == 0 ? p.C : groups, p.eps = eps, p.center = center;
  p.HxW = x_in.numel() / std::max<int64_t>(p.N * p.C, 1);
  NL_CHECK(groups >= 0 && p.G >= 1 && p.C % p.G == 0, op, ": groups (", groups,
           ") must be >= 1 and divide the channel count ", p.C, ", or 0 for one group per channel");
  check_vec(op, "weight", gamma_in, p.C);
  check_vec(op, "bias", beta_in, p.C);
  prepare_epilogue(op, epilogue, x_in, p);

  Tensor x = x_in.contiguous();
  Tensor gamma = contiguous_or_none(gamma_in), beta = contiguous_or_none(beta_in);
  Tensor residual = contiguous_or_none(epilogue.residual);
  Tensor y = Tensor::empty(x.shape(), DType::F32, x.device());
  Tensor mean = Tensor::empty({p.N, p.G}, DType::F32, x.device());
  Tensor rstd = Tensor::empty({p.N, p.G}, DType::F32, x.device());
  Tensor mask = mask_buffer(p, x);
  Tensor tau = contiguous_or_none(epilogue.tau);
  NormFwdArgs a;
  a.x = x.data_f32(), a.gamma = opt_ptr(gamma), a.beta = opt_ptr(beta), a.tau = opt_ptr(tau);
  a.residual = opt_ptr(residual), a.y = y.data_f32(), a.mean = mean.data_f32(), a.rstd = rstd.data_f32();
  a.mask = mask_ptr(mask);
  norm_fwd_stub(x.device(), p, a);
  if (!any_requires_grad({&x, &gamma, &beta, &residual, &tau})) return y;
  const bool gx = needs(x), gg = needs(gamma), gb = needs(beta), gr = needs(residual), gt = needs(tau);
  NormSaved s{save(x), save(gamma), mean, rstd, mask, Tensor()};
  record_node(y, op, {&x, &gamma, &beta, &residual, &tau}, [p, s, gx, gg, gb, gr, gt](const Tensor& dy) {
    Tensor dx = grad_buffer(gx, s.x);
    Tensor dgamma = gg ? Tensor::empty({p.C}, DType::F32, dy.device()) : Tensor();
    Tensor dbeta = gb ? Tensor::empty({p.C}, DType::F32, dy.device()) : Tensor();
    Tensor dtau = gt ? Tensor::empty({p.C}, DType::F32, dy.device()) : Tensor();
    NormBwdArgs a;
    a.x = s.x.data_f32(), a.dy = dy.data_f32(), a.gamma = opt_ptr(s.gamma), a.mean = s.mean.data_f32();
    a.rstd = s.rstd.data_f32(), a.mask = mask_ptr(s.mask);
    a.dx = opt_mut(dx), a.dgamma = opt_mut(dgamma), a.dbeta = opt_mut(dbeta), a.dtau = opt_mut(dtau);
    norm_bwd_stub(dy.device(), p, a);
    return std::vector<Tensor>{dx, dgamma, dbeta, gr ? dy : Tensor(), dtau};
  });
  return y;
}
}  // namespace

Tensor group_norm(const Tensor& x, int64_t groups, const Tensor& gamma, const Tensor& beta, float eps,
                  const NormEpilogue& epilogue) {
  return group_norm_impl("group_norm", x, groups, true, gamma, beta, eps, epilogue);
}

Tensor layer_norm(const Tensor& x_in, const Tensor& gamma_in, const Tensor& beta_in, float eps) {
  const char* op = "layer_norm";
  check_inputs(op, {{"input", &x_in}, {"weight", &gamma_in}, {"bias", &beta_in}});
  NL_CHECK(x_in.dim() >= 1, op, ": input must have at least one dimension");
  check_eps(op, eps);
  NormParams p;
  p.kind = NormKind::Row;
  p.C = x_in.size(-1), p.N = x_in.numel() / std::max<int64_t>(p.C, 1), p.eps = eps;
  check_vec(op, "weight", gamma_in, p.C);
  check_vec(op, "bias", beta_in, p.C);
  Tensor x = x_in.contiguous();
  Tensor gamma = contiguous_or_none(gamma_in), beta = contiguous_or_none(beta_in);
  Tensor y = Tensor::empty(x.shape(), DType::F32, x.device());
  Tensor mean = Tensor::empty({p.N}, DType::F32, x.device());
  Tensor rstd = Tensor::empty({p.N}, DType::F32, x.device());
  NormFwdArgs a;
  a.x = x.data_f32(), a.gamma = opt_ptr(gamma), a.beta = opt_ptr(beta);
  a.y = y.data_f32(), a.mean = mean.data_f32(), a.rstd = rstd.data_f32();
  norm_fwd_stub(x.device(), p, a);
  if (any_requires_grad({&x, &gamma, &beta})) {
    const bool gx = needs(x), gg = needs(gamma), gb = needs(beta);
    NormSaved s{save(x), save(gamma), mean, rstd, Tensor(), Tensor()};
    record_node(y, op, {&x, &gamma, &beta}, [p, s, gx, gg, gb](const Tensor& dy) {
      Tensor dx = grad_buffer(gx, s.x);
      Tensor dgamma = gg ? Tensor::empty({p.C}, DType::F32, dy.device()) : Tensor();
      Tensor dbeta = gb ? Tensor::empty({p.C}, DType::F32, dy.device()) : Tensor();
      NormBwdArgs a;
      a.x = s.x.data_f32(), a.dy = dy.data_f32(), a.gamma = opt_ptr(s.gamma);
      a.mean = s.mean.data_f32(), a.rstd = s.rstd.data_f32();
      a.dx = opt_mut(dx), a.dgamma = opt_mut(dgamma), a.dbeta = opt_mut(dbeta);
      norm_bwd_stub(dy.device(), p, a);
      return std::vector<Tensor>{dx, dgamma, dbeta};
    });
  }
  return y;
}

Tensor normalize(const Tensor& x, const NormSpec& spec, const Tensor& gamma, const Tensor& beta,
                 const Tensor& running_mean, const Tensor& running_var, bool training,
                 const NormEpilogue& epilogue, const Tensor& steps) {
  NL_CHECK(spec.center || spec.stats == NormSpec::Stats::PerGroup,
           "normalize: center = false (RMSNorm) is implemented for per-group statistics only");
  NL_CHECK(spec.stats == NormSpec::Stats::PerChannel || (spec.ghost_batch == 0 && !spec.renorm),
           "normalize: ghost batches and Batch Renorm need per-channel (BatchNorm) statistics");
  NL_CHECK(spec.tlu == epilogue.tau.defined(), "normalize: ",
           spec.tlu ? "a TLU spec (FRN) needs the threshold tau in the epilogue"
                    : "tau given in the epilogue but the spec has no TLU");
  switch (spec.stats) {
    case NormSpec::Stats::PerChannel:
      return batch_norm_impl(spec.renorm            ? "batch_renorm"
                             : spec.ghost_batch > 0 ? "ghost_batch_norm"
                                                    : "batch_norm",
                             x, spec, gamma, beta, running_mean, running_var, training, epilogue, steps);
    case NormSpec::Stats::PerGroup:
      return group_norm_impl(spec.tlu      ? "frn"
                             : spec.center ? "group_norm"
                                           : "rms_norm",
                             x, spec.groups, spec.center, gamma, beta, spec.eps, epilogue);
    case NormSpec::Stats::PerRow: {
      NL_CHECK(!epilogue.relu && epilogue.dropout == 0.0f && !epilogue.residual.defined(),
               "normalize: a per-row (last-dimension) norm has no fused epilogue");
      return layer_norm(x, gamma, beta, spec.eps);
    }
  }
  NL_FAIL("normalize: unknown statistics kind");
}

}  // namespace nl
