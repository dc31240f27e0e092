// max-pool and global average pool, forward and backward. Threads take whole planes.
#include "kernels/cpu/eigen_types.h"
#include "kernels/cpu/parallel.h"
#include "normlab/core/kernel/stubs.h"

namespace nl::cpu {

void max_pool2d_fwd(const Pool2dParams& p, const float* x, float* y, int32_t* argmax) {
  parallel_for(p.N * p.C, 64, [&](int64_t b, int64_t e) {
    for (int64_t plane = b; plane < e; ++plane) {
      const float* xp = x + plane * p.H * p.W;
      for (int64_t oh = 0; oh < p.P; ++oh) {
        for (int64_t ow = 0; ow < p.Q; ++ow) {
          int64_t h0 = oh * p.stride, w0 = ow * p.stride;
          int64_t best_i = h0 * p.W + w0;
          float best = xp[best_i];
          // Strict '>' keeps the first maximum in row-major window order, as PyTorch does.
          for (int64_t kh = 0; kh < p.kernel; ++kh)
            for (int64_t kw = 0; kw < p.kernel; ++kw) {
              int64_t i = (h0 + kh) * p.W + (w0 + kw);
              if (xp[i] > best) best = xp[i], best_i = i;
            }
          int64_t o = plane * p.P * p.Q + oh * p.Q + ow;
          y[o] = best;
          argmax[o] = static_cast<int32_t>(best_i);
        }
      }
    }
  });
}

void max_pool2d_bwd(const Pool2dParams& p, const float* dy, const int32_t* argmax, float* dx) {
  parallel_for(p.N * p.C, 64, [&](int64_t b, int64_t e) {
    VecMap(dx + b * p.H * p.W, (e - b) * p.H * p.W).setZero();
    // += because windows overlap when stride < kernel.
    for (int64_t plane = b; plane < e; ++plane)
      for (int64_t o = 0; o < p.P * p.Q; ++o)
        dx[plane * p.H * p.W + argmax[plane * p.P * p.Q + o]] += dy[plane * p.P * p.Q + o];
  });
}

void global_avg_pool_fwd(int64_t NC, int64_t HxW, const float* x, float* y) {
  VecMap(y, NC) = CMapR(x, NC, HxW).rowwise().mean();
}

void global_avg_pool_bwd(int64_t NC, int64_t HxW, const float* dy, float* dx) {
  MapR(dx, NC, HxW).colwise() = CVecMap(dy, NC) / static_cast<float>(HxW);
}

// Registration: a kernel whose signature drifts from its stub fails to compile here.
void register_pooling_kernels() {
  max_pool2d_fwd_stub.set(DeviceType::CPU, &max_pool2d_fwd);
  max_pool2d_bwd_stub.set(DeviceType::CPU, &max_pool2d_bwd);
  global_avg_pool_fwd_stub.set(DeviceType::CPU, &global_avg_pool_fwd);
  global_avg_pool_bwd_stub.set(DeviceType::CPU, &global_avg_pool_bwd);
}

}  // namespace nl::cpu
