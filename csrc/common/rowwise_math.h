#pragma once
// Per-row dot products whose rounding depends on the row length D only: a row of [B, D] gives
// the same bits for any B, any number of CPU threads, and on the CPU and the GPU.
//
// The order (the same in both drivers): kRowwiseLanes partial sums; lane k adds the products
// a[i] * b[i] for i = k, k + kRowwiseLanes, k + 2 kRowwiseLanes, ... < D in that order, then
// the lanes are combined by a fixed pairwise tree (level h = kRowwiseLanes / 2, ..., 1: lane k
// += lane k + h for k < h). Products and sums are in double and rounded one by one (no fused
// multiply-add: the rn_* helpers are the _rn intrinsics on the device, and the CPU driver is
// built without FMA), so a float32 product is exact and the float32 result is the double sum
// rounded once; float64 rows round every product and sum. The CPU lanes are one block of
// kRowwiseLanes doubles a thread keeps in L1 (the compiler vectorizes the lane loop); on the
// GPU they are the threads of the row's block.
#include "common/macros.h"
#include "common/rounding.h"

namespace pyinvert {

// Partial sums per row: a CUDA block's threads, and the CPU driver's accumulator block.
constexpr int kRowwiseLanes = 256;

// Lane update: acc + a * b in double, the product and the sum rounded separately.
template <typename T>
PYI_HOST_DEVICE double rowwise_term(double acc, T a, T b) {
  return rn_add(acc, rn_mul(static_cast<double>(a), static_cast<double>(b)));
}

// One level of the combining tree: lane k (< h) takes lane k + h.
PYI_HOST_DEVICE double rowwise_combine(double lane, double upper) { return rn_add(lane, upper); }

}  // namespace pyinvert

namespace pyinvert {

// The L-BFGS two-loop recursion of one row (Nocedal & Wright Alg. 7.4), fused: each pass over
// the row updates the vector and accumulates the next dot product in the same lane order, so
// it gives the bits of the unfused sequence (rowwise_dot, then elementwise ops that each round
// once: a = T(s.q) * rho; q = q - a * y; r = q * h; b = T(y.r) * rho; r = r + (a - b) * s).
// The vector update of one element; the passes differ only in it.
enum class TwoLoopUpdate { kNegate, kScale, kAxpy };

template <TwoLoopUpdate kUpdate, typename T>
PYI_HOST_DEVICE T two_loop_update(T x, T v, T c) {
  if (kUpdate == TwoLoopUpdate::kNegate) return -v;           // x = -v (q = -g)
  if (kUpdate == TwoLoopUpdate::kScale) return rn_mul(x, c);  // x = x * c (r = q h)
  return rn_add(x, rn_mul(c, v));                             // x = x + c v (c = -a, or a - b)
}

}  // namespace pyinvert

namespace pyinvert {

// The per-row L-BFGS's fused passes (the row loops of lbfgs_tell, common/lbfgs_tell_math.h;
// also ops of their own, lbfgs_observe/accept/advance, tested one by one): each computes what
// the tensor path's elementwise ops and rowwise_dot calls compute, one rounding per operation in
// their order, in fewer passes.

// max |v| with NaN propagation (torch.maximum(v.amax(), -v.amin()) of the tensor path), one
// value at a time: a NaN replaces the running maximum and then stays (branch-free, so that the
// CPU's lane loops vectorize).
template <typename T>
PYI_HOST_DEVICE T absmax_step(T m, T v) {
  const T a = v < T(0) ? -v : v;
  return (a > m || a != a) ? a : m;
}

// Two running maxima of absmax_step combined (NaN propagates).
template <typename T>
PYI_HOST_DEVICE T absmax_combine(T m, T n) {
  return (n > m || n != n) && m == m ? n : m;
}

// What the row's trial point becomes (lbfgs_advance's per-row mode).
enum class AdvanceMode : int64_t {
  kSkip = 0,       // untouched
  kDirection = 1,  // d = the two-loop direction, then the trial x + t d
  kStep = 2,       // the trial x + t d with the row's d (a line-search trial)
  kStay = 3,       // the trial is x
};

}  // namespace pyinvert
