#pragma once
// Direct 3x3 "same" convolution (stride 1, padding 1) on AVX-512, for rows of 16 or 32 pixels.
//
// im2col + GEMM copies every input pixel 9 times into the column matrix, and the GEMM then
// packs that matrix once more; at this network's sizes the two copies cost about as much as a
// third of the multiply-adds. Here the input is copied once, into a zero-bordered plane per
// channel, and the kernel loads its rows straight into registers: 8 output channels x 2 vectors
// of 16 pixels = 16 accumulators, and for each (input channel, tap) 2 unaligned loads and 8
// weight broadcasts feed 16 FMAs. Weights are repacked so the 8 broadcasts read consecutive
// floats. Backward-data is the same kernel on dy with the filter flipped and its channel axes
// swapped.
//
// conv3x3_direct_*_ok() say when it applies (and never without AVX-512); everything else
// takes im2col + GEMM.
#include <cstdint>

#include "normlab/core/kernel/params.h"

namespace nl::cpu {

// Forward needs K, backward-data C, in blocks of 8 channels (they are the outputs);
// backward-weight needs K even.
bool conv3x3_direct_fwd_ok(const Conv2dParams& p);
bool conv3x3_direct_bwd_data_ok(const Conv2dParams& p);
bool conv3x3_direct_bwd_weight_ok(const Conv2dParams& p);

// y [N, K, H, W] = conv(x [N, C, H, W], w [K, C, 3, 3]) (+ bias [K] if not null).
void conv3x3_direct_fwd(const Conv2dParams& p, const float* x, const float* w, const float* bias, float* y);

// dx [N, C, H, W] from dy [N, K, H, W]: the transposed convolution, as a direct convolution.
void conv3x3_direct_bwd_data(const Conv2dParams& p, const float* w, const float* dy, float* dx);

// dw [K, C, 3, 3] = sum over samples and pixels of dy * shifted x. Vectors run along image
// rows; each (input channel, pair of output channels) keeps 2 x 9 accumulators over a chunk of 8
// samples, reduced across lanes once per chunk. Chunks sum into their own partial dW, added in
// chunk order: the same result for any thread count.
void conv3x3_direct_bwd_weight(const Conv2dParams& p, const float* x, const float* dy, float* dw);

}  // namespace nl::cpu
