// The norm family's one forward and one backward entry, shared by both backends: included inside
// namespace nl::cpu (kernels/cpu/norm.cpp) and nl::cuda (kernels/cuda/norm.cu) after that backend's
// per-family functions, whose unqualified names it calls. The kind picks the family's fast path.
#pragma once

void norm_fwd(const NormParams& p, const NormFwdArgs& a) {
  switch (p.kind) {
    case NormKind::Batch:
      return batch_norm_fwd(p, a.x, a.gamma, a.beta, a.residual, a.running_mean, a.running_var, a.y, a.mean,
                            a.rstd, a.renorm, a.renorm_step, a.mask);
    case NormKind::Group:
      return group_norm_fwd(p, a.x, a.gamma, a.beta, a.tau, a.residual, a.y, a.mean, a.rstd, a.mask);
    case NormKind::Row: return layer_norm_fwd(p, a.x, a.gamma, a.beta, a.y, a.mean, a.rstd);
  }
}

void norm_bwd(const NormParams& p, const NormBwdArgs& a) {
  switch (p.kind) {
    case NormKind::Batch:
      return batch_norm_bwd(p, a.x, a.dy, a.gamma, a.mean, a.rstd, a.renorm, a.mask, a.dx_terms, a.dx,
                            a.dgamma, a.dbeta);
    case NormKind::Group:
      return group_norm_bwd(p, a.x, a.dy, a.gamma, a.mean, a.rstd, a.mask, a.dx, a.dgamma, a.dbeta, a.dtau);
    case NormKind::Row: return layer_norm_bwd(p, a.x, a.dy, a.gamma, a.mean, a.rstd, a.dx, a.dgamma, a.dbeta);
  }
}
