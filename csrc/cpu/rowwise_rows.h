#pragma once
// The CPU's row loops of the rowwise ops and of the per-row L-BFGS (rowwise_kernel.cpp,
// lbfgs_tell.cpp): one row of D values each, in common/rowwise_math.h's lane order, so a row's
// bits depend on neither the batch nor the thread count. The loops get an AVX2 clone *without*
// FMA (cpu/simd.h: PYI_CLONES_EXACT), which rounds as the baseline does. (Internal linkage:
// each driver file gets its own clones.)
#include <cstdint>

#include "common/rowwise_math.h"
#include "cpu/simd.h"

namespace pyinvert {
namespace {

// The lanes' fixed pairwise tree (common/rowwise_math.h): lane k (< h) takes lane k + h.
inline double lanes_total(double* lane) {
  for (int h = kRowwiseLanes / 2; h > 0; h /= 2) {
    for (int k = 0; k < h; ++k) lane[k] = rowwise_combine(lane[k], lane[k + h]);
  }
  return lane[0];
}

template <typename T>
T lanes_absmax(const T* mx) {
  T m = mx[0];
  for (int k = 1; k < kRowwiseLanes; ++k) m = absmax_combine(m, mx[k]);
  return m;
}

// body(i, k) for i = 0 .. D - 1 with lane k = i % kRowwiseLanes: full blocks of lanes (a loop
// of fixed length, which the compiler vectorizes), then the tail.
template <typename Body>
inline void for_lanes(int64_t D, Body&& body) {
  int64_t i = 0;
  for (; i + kRowwiseLanes <= D; i += kRowwiseLanes) {
    for (int k = 0; k < kRowwiseLanes; ++k) body(i + k, k);
  }
  for (int k = 0; i + k < D; ++k) body(i + k, k);
}

template <typename T>
PYI_CLONES_EXACT double rowwise_dot_row(const T* __restrict__ a, const T* __restrict__ b,
                                        int64_t D) {
  double lane[kRowwiseLanes];
  for (int k = 0; k < kRowwiseLanes; ++k) lane[k] = 0.0;
  for_lanes(D, [&](int64_t i, int k) { lane[k] = rowwise_term(lane[k], a[i], b[i]); });
  return lanes_total(lane);
}

// One pass of the two-loop recursion over a row: x = update(x, v, c), and (kDot) the fixed-order
// dot product of w with the new x, in rowwise_dot_row's lanes.
template <TwoLoopUpdate kUpdate, bool kDot, typename T>
PYI_CLONES_EXACT double two_loop_pass(T* __restrict__ x, const T* __restrict__ v, T c,
                                      const T* __restrict__ w, int64_t D) {
  double lane[kRowwiseLanes];
  for (int k = 0; k < kRowwiseLanes; ++k) lane[k] = 0.0;
  for_lanes(D, [&](int64_t i, int k) {
    const T xi = two_loop_update<kUpdate>(x[i], v[i], c);
    x[i] = xi;
    if (kDot) lane[k] = rowwise_term(lane[k], w[i], xi);
  });
  return kDot ? lanes_total(lane) : 0.0;
}

// -H g of one row from its K newest pairs (S, Y: the row's pair j at j * pair_stride; rho at
// j * rho_stride), K >= 0; `alpha` holds K scalars.
template <typename T>
void two_loop_row(const T* g, const T* const* s, const T* const* y, const T* rho, int64_t K, T h,
                  int64_t D, T* out, T* alpha) {
  using U = TwoLoopUpdate;
  if (K == 0) {
    two_loop_pass<U::kNegate, false>(out, g, T(0), g, D);
    two_loop_pass<U::kScale, false>(out, g, h, g, D);
    return;
  }
  double dot = two_loop_pass<U::kNegate, true>(out, g, T(0), s[0], D);
  for (int64_t j = 0; j < K; ++j) {
    alpha[j] = rn_mul(static_cast<T>(dot), rho[j]);
    if (j + 1 < K) {
      dot = two_loop_pass<U::kAxpy, true>(out, y[j], T(-alpha[j]), s[j + 1], D);
    } else {
      two_loop_pass<U::kAxpy, false>(out, y[j], T(-alpha[j]), y[j], D);
    }
  }
  dot = two_loop_pass<U::kScale, true>(out, g, h, y[K - 1], D);
  for (int64_t j = K - 1; j >= 0; --j) {
    const T beta = rn_mul(static_cast<T>(dot), rho[j]);
    const T c = rn_sub(alpha[j], beta);
    if (j > 0) {
      dot = two_loop_pass<U::kAxpy, true>(out, s[j], c, y[j - 1], D);
    } else {
      two_loop_pass<U::kAxpy, false>(out, s[j], c, s[j], D);
    }
  }
}

// g = grad * c; returns g.d in rowwise_dot's order and sets *gmax = max |g| (NaN if any).
template <typename T>
PYI_CLONES_EXACT double observe_row(const T* __restrict__ grad, T c, const T* __restrict__ d,
                                    T* __restrict__ g, int64_t D, T* gmax) {
  double lane[kRowwiseLanes];
  T mx[kRowwiseLanes];
  for (int k = 0; k < kRowwiseLanes; ++k) lane[k] = 0.0, mx[k] = T(0);
  for_lanes(D, [&](int64_t i, int k) {
    const T v = rn_mul(grad[i], c);
    g[i] = v;
    mx[k] = absmax_step(mx[k], v);
    lane[k] = rowwise_term(lane[k], v, d[i]);
  });
  *gmax = lanes_absmax(mx);
  return lanes_total(lane);
}

// s = t d; x += s; y = g - g_old; s and y stored; returns y.s and sets *yy = y.y.
template <typename T>
PYI_CLONES_EXACT double accept_row(const T* __restrict__ g, const T* __restrict__ g_old,
                                   const T* __restrict__ d, T t, T* __restrict__ x,
                                   T* __restrict__ s_out, T* __restrict__ y_out, int64_t D,
                                   double* yy) {
  double ys_lane[kRowwiseLanes], yy_lane[kRowwiseLanes];
  for (int k = 0; k < kRowwiseLanes; ++k) ys_lane[k] = yy_lane[k] = 0.0;
  for_lanes(D, [&](int64_t i, int k) {
    const T s = rn_mul(t, d[i]);
    x[i] = rn_add(x[i], s);
    s_out[i] = s;
    const T y = rn_sub(g[i], g_old[i]);
    y_out[i] = y;
    ys_lane[k] = rowwise_term(ys_lane[k], y, s);
    yy_lane[k] = rowwise_term(yy_lane[k], y, y);
  });
  *yy = lanes_total(yy_lane);
  return lanes_total(ys_lane);
}

// trial = x + t d (or x when stay) and z = trial c (when z is given).
template <typename T>
PYI_CLONES_EXACT void trial_row(const T* __restrict__ d, const T* __restrict__ x, T t, bool stay,
                                T c, T* __restrict__ trial, T* __restrict__ z, int64_t D) {
  for (int64_t i = 0; i < D; ++i) {
    const T v = stay ? x[i] : rn_add(x[i], rn_mul(t, d[i]));
    trial[i] = v;
    if (z != nullptr) z[i] = rn_mul(v, c);
  }
}

// A new direction's trial (trial_row with stay = false) with g.d in rowwise_dot's order and
// *dmax = max |d|.
template <typename T>
PYI_CLONES_EXACT double direction_trial_row(const T* __restrict__ g, const T* __restrict__ d,
                                            const T* __restrict__ x, T t, T c,
                                            T* __restrict__ trial, T* __restrict__ z, int64_t D,
                                            T* dmax) {
  double lane[kRowwiseLanes];
  T mx[kRowwiseLanes];
  for (int k = 0; k < kRowwiseLanes; ++k) lane[k] = 0.0, mx[k] = T(0);
  for_lanes(D, [&](int64_t i, int k) {
    const T v = rn_add(x[i], rn_mul(t, d[i]));
    trial[i] = v;
    if (z != nullptr) z[i] = rn_mul(v, c);
    mx[k] = absmax_step(mx[k], d[i]);
    lane[k] = rowwise_term(lane[k], g[i], d[i]);
  });
  *dmax = lanes_absmax(mx);
  return lanes_total(lane);
}

// sum |g| over the row in rowwise_dot's order (rowwise_dot(|g|, 1): the products are exact).
template <typename T>
PYI_CLONES_EXACT double abs_sum_row(const T* __restrict__ g, int64_t D) {
  double lane[kRowwiseLanes];
  for (int k = 0; k < kRowwiseLanes; ++k) lane[k] = 0.0;
  for_lanes(D, [&](int64_t i, int k) {
    lane[k] = rowwise_term(lane[k], g[i] < T(0) ? -g[i] : g[i], T(1));
  });
  return lanes_total(lane);
}

}  // namespace
}  // namespace pyinvert
