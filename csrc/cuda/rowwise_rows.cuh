#pragma once
// The CUDA drivers' block passes over one row (rowwise_kernel.cu, lbfgs_tell.cu): the row's
// block of kRowwiseLanes threads, thread k lane k of common/rowwise_math.h (it visits elements
// k, k + kRowwiseLanes, ...: every element of a row is only ever touched by one thread, in every
// pass), the lanes combined by the CPU driver's pairwise tree in shared memory. Values that the
// block computes are returned to every thread.
#include <cstdint>

#include "common/rowwise_math.h"

namespace pyinvert {
namespace {

// The block's fixed-order total of its lanes (every thread gets it).
__device__ double block_total(double acc, double* lane) {
  const int k = threadIdx.x;
  lane[k] = acc;
  __syncthreads();
  for (int h = kRowwiseLanes / 2; h > 0; h /= 2) {
    if (k < h) lane[k] = rowwise_combine(lane[k], lane[k + h]);
    __syncthreads();
  }
  const double total = lane[0];
  __syncthreads();
  return total;
}

// The block's pass over its row: x = update(x, v, c) and (w != nullptr) the fixed-order dot of w
// with the new x, returned to every thread of the block.
template <TwoLoopUpdate kUpdate, typename T>
__device__ double two_loop_pass(T* x, const T* v, T c, const T* w, int64_t D, double* lane) {
  const int k = threadIdx.x;
  double acc = 0.0;
  for (int64_t i = k; i < D; i += kRowwiseLanes) {
    const T xi = two_loop_update<kUpdate>(x[i], v[i], c);
    x[i] = xi;
    if (w != nullptr) acc = rowwise_term(acc, w[i], xi);
  }
  if (w == nullptr) return 0.0;  // (uniform over the block: no thread waits below)
  return block_total(acc, lane);
}

// -H g of row b into x by the block, the passes of the CPU's two_loop_row in order. alpha: the
// row's K scratch values; m: the slots of S and Y. A slot outside [0, m) ends the row's history.
template <typename T>
__device__ void two_loop_block_row(const T* __restrict__ gb, const T* __restrict__ S,
                                   const T* __restrict__ Y, const T* __restrict__ rho, T hb,
                                   const int64_t* __restrict__ sl, int64_t b, int64_t B, int64_t D,
                                   int64_t K, int64_t m, T* __restrict__ x, T* __restrict__ ab,
                                   double* lane) {
  using U = TwoLoopUpdate;
  int64_t n = 0;
  while (n < K && sl[n] >= 0 && sl[n] < m) ++n;
  const auto pair = [&](const T* base, int64_t j) { return base + (sl[j] * B + b) * D; };
  const auto rho_of = [&](int64_t j) { return rho[sl[j] * B + b]; };
  if (n == 0) {
    two_loop_pass<U::kNegate>(x, gb, T(0), static_cast<const T*>(nullptr), D, lane);
    two_loop_pass<U::kScale>(x, gb, hb, static_cast<const T*>(nullptr), D, lane);
    return;
  }
  double dot = two_loop_pass<U::kNegate>(x, gb, T(0), pair(S, 0), D, lane);
  for (int64_t j = 0; j < n; ++j) {
    const T a = rn_mul(static_cast<T>(dot), rho_of(j));
    if (threadIdx.x == 0) ab[j] = a;
    dot = two_loop_pass<U::kAxpy>(x, pair(Y, j), T(-a), j + 1 < n ? pair(S, j + 1) : nullptr, D,
                                  lane);
  }
  dot = two_loop_pass<U::kScale>(x, gb, hb, pair(Y, n - 1), D, lane);
  for (int64_t j = n - 1; j >= 0; --j) {
    const T beta = rn_mul(static_cast<T>(dot), rho_of(j));
    const T c = rn_sub(ab[j], beta);
    dot = two_loop_pass<U::kAxpy>(x, pair(S, j), c, j > 0 ? pair(Y, j - 1) : nullptr, D, lane);
  }
}

// The block's max |v| of the threads' absmax_step maxima (NaN propagates; exact in any order).
template <typename T>
__device__ T block_absmax(T m, double* lane) {
  const int k = threadIdx.x;
  lane[k] = static_cast<double>(m);
  __syncthreads();
  for (int h = kRowwiseLanes / 2; h > 0; h /= 2) {
    if (k < h) lane[k] = absmax_combine(lane[k], lane[k + h]);
    __syncthreads();
  }
  const T total = static_cast<T>(lane[0]);
  __syncthreads();
  return total;
}

// g = grad * c; returns g.d (rowwise_dot's order) and sets *gmax = max |g| (NaN if any).
template <typename T>
__device__ T observe_block_row(const T* __restrict__ grad, T c, const T* __restrict__ d,
                               T* __restrict__ g, int64_t D, T* gmax, double* lane) {
  double acc = 0.0;
  T m = T(0);
  for (int64_t i = threadIdx.x; i < D; i += kRowwiseLanes) {
    const T v = rn_mul(grad[i], c);
    g[i] = v;
    m = absmax_step(m, v);
    acc = rowwise_term(acc, v, d[i]);
  }
  const double dot = block_total(acc, lane);
  *gmax = block_absmax(m, lane);
  return static_cast<T>(dot);
}

// s = t d; x += s; y = g - g_old; s and y stored; returns y.s and sets *yy = y.y.
template <typename T>
__device__ T accept_block_row(const T* __restrict__ g, const T* __restrict__ g_old,
                              const T* __restrict__ d, T t, T* __restrict__ x,
                              T* __restrict__ s_out, T* __restrict__ y_out, int64_t D, T* yy,
                              double* lane) {
  double a1 = 0.0, a2 = 0.0;
  for (int64_t i = threadIdx.x; i < D; i += kRowwiseLanes) {
    const T s = rn_mul(t, d[i]);
    x[i] = rn_add(x[i], s);
    s_out[i] = s;
    const T y = rn_sub(g[i], g_old[i]);
    y_out[i] = y;
    a1 = rowwise_term(a1, y, s);
    a2 = rowwise_term(a2, y, y);
  }
  const double ys = block_total(a1, lane);
  *yy = static_cast<T>(block_total(a2, lane));
  return static_cast<T>(ys);
}

// trial = x + t d (or x when stay) and z = trial c (when z is given).
template <typename T>
__device__ void trial_block_row(const T* __restrict__ d, const T* __restrict__ x, T t, bool stay,
                                T c, T* __restrict__ trial, T* __restrict__ z, int64_t D) {
  for (int64_t i = threadIdx.x; i < D; i += kRowwiseLanes) {
    const T v = stay ? x[i] : rn_add(x[i], rn_mul(t, d[i]));
    trial[i] = v;
    if (z != nullptr) z[i] = rn_mul(v, c);
  }
}

// A new direction's trial (trial_block_row with stay = false), returning g.d and setting
// *dmax = max |d|.
template <typename T>
__device__ T direction_trial_block_row(const T* __restrict__ g, const T* __restrict__ d,
                                       const T* __restrict__ x, T t, T c, T* __restrict__ trial,
                                       T* __restrict__ z, int64_t D, T* dmax, double* lane) {
  double acc = 0.0;
  T m = T(0);
  for (int64_t i = threadIdx.x; i < D; i += kRowwiseLanes) {
    const T v = rn_add(x[i], rn_mul(t, d[i]));
    trial[i] = v;
    if (z != nullptr) z[i] = rn_mul(v, c);
    m = absmax_step(m, d[i]);
    acc = rowwise_term(acc, g[i], d[i]);
  }
  const double dot = block_total(acc, lane);
  *dmax = block_absmax(m, lane);
  return static_cast<T>(dot);
}

}  // namespace
}  // namespace pyinvert
