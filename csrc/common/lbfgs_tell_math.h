#pragma once
// One evaluation of the per-row L-BFGS for one row (lbfgs_tell; optim/lbfgs_rows.py): the
// observed gradient, the strong-Wolfe line search's step (N&W Alg. 3.5 and 3.6), the accepted
// step and its history pair, the stopping tests, and the next direction and trial point. The
// scalar logic lives here once; each driver supplies the vector passes over the row (`Passes`:
// cpu/lbfgs_tell.cpp runs them in one thread, cuda/lbfgs_tell.cu with the row's block).
//
// Bit for bit the tensor path (optim/lbfgs_state.py; tests/test_lbfgs_rows.py): every scalar
// operation is its, in its order and dtype, each rounded once (the rn_* helpers: plain operators
// on the host, built without FMA and fast math; the _rn intrinsics on the device, where nvcc's
// fast math would otherwise contract and approximate; its float32 denormals are kept: setup.py
// builds with -ftz=false, as PyTorch's kernels); constants are cast to the dtype first, as
// torch casts a Python scalar; torch.minimum/maximum/clamp are mirrored with their NaN
// propagation; the square root is the driver's (torch's CPU float32 sqrt is not always the
// correctly rounded one).
//
// On the device every thread of the block runs this code on its own copy of the row's scalar
// state (the same values: the control flow is uniform, so the passes may synchronize), and one
// thread stores the state at the end.
#include <cstdint>

#include "common/macros.h"
#include "common/rounding.h"

namespace pyinvert {

// real [B, kTellReals] in the run's dtype: the value and step, the line search's start (f0,
// g.d at 0), max |d|, its points (t, f, g.d): the previous trial and the bracket's low and high
// ends, the initial Hessian scale, and max |g| of the accepted gradient, of lo's and of prev's.
enum TellReal : int64_t {
  kF,
  kT,
  kF0,
  kGtd0,
  kDNorm,
  kPrev,
  kLo = kPrev + 3,
  kHi = kLo + 3,
  kHDiag = kHi + 3,
  kGMax,
  kLoGMax,
  kPrevGMax,
  kTellReals
};

// ints [B, kTellInts] int64: the stopping code (0 running), the counters, the line search's
// flags and count, the history's counts, the ring's spare slot and slots written so far, whether
// prev's gradient is the accepted one, and which half of G holds the accepted gradient.
enum TellInt : int64_t {
  kStatus,
  kIterations,
  kEvaluations,
  kZoom,
  kInsuf,
  kLineSteps,
  kUpdates,
  kCount,
  kSpare,
  kUsed,
  kPrevIsG,
  kGSel,
  kTellInts
};

// The stopping codes of optim/lbfgs_status.py.
enum TellStatus : int64_t {
  kRunning,
  kGradient,
  kStepSmall,
  kValueSmall,
  kDirection,
  kMaxIter,
  kMaxEval,
  kLineSearch,
  kNonfinite
};

// The run's settings, cast to its dtype.
template <typename T>
struct TellSettings {
  T c1, neg_c2, lr, tol_grad, tol_change, tiny;
  int64_t max_ls, max_iter, max_eval, m;
  bool wolfe, started;
};

// The op's buffers (base pointers; z and the scales nullptr when empty) and sizes: m the ring's
// slots per row, P the history's physical slots.
template <typename T>
struct TellBuffers {
  const T *grad, *grad_scale, *f, *ask_scale;
  T* real;
  int64_t *ints, *ring;
  T *x, *G, *d, *lo_g, *g_prev, *trial, *z, *S, *Y, *rho;
  int64_t B, D, m, P;
};

// Row b's view of the buffers: what both drivers' passes work on.
template <typename T>
struct TellRow {
  int64_t b, B, D, P;
  const T* grad;
  T grad_scale;
  T *x, *G0, *G1, *d, *lo_g, *g_prev, *trial, *z;  // z: nullptr when not written
  T z_scale;
  T *S, *Y, *rho;
  int64_t* ring;  // the row's m slots, newest first
  int64_t m;

  PYI_HOST_DEVICE TellRow(const TellBuffers<T>& a, int64_t row)
      : b(row), B(a.B), D(a.D), P(a.P), grad(a.grad + row * a.D),
        grad_scale(a.grad_scale != nullptr ? a.grad_scale[row] : T(1)), x(a.x + row * a.D),
        G0(a.G + row * a.D), G1(a.G + (a.B + row) * a.D), d(a.d + row * a.D),
        lo_g(a.lo_g + row * a.D), g_prev(a.g_prev + row * a.D), trial(a.trial + row * a.D),
        z(a.z != nullptr ? a.z + row * a.D : nullptr),
        z_scale(a.ask_scale != nullptr ? a.ask_scale[row] : T(1)), S(a.S), Y(a.Y), rho(a.rho),
        ring(a.ring + row * a.m), m(a.m) {}
  PYI_HOST_DEVICE T* gradient(int64_t sel) const { return sel ? G1 : G0; }
  PYI_HOST_DEVICE T* pair(T* base, int64_t slot) const { return base + (slot * B + b) * D; }
};

// One row's scalar state (a copy of its rows of `real` and `ints`).
template <typename T>
struct TellState {
  T r[kTellReals];
  int64_t n[kTellInts];
};

template <typename T>
PYI_HOST_DEVICE void load_state(const TellBuffers<T>& a, int64_t b, TellState<T>& st) {
  for (int k = 0; k < kTellReals; ++k) st.r[k] = a.real[b * kTellReals + k];
  for (int k = 0; k < kTellInts; ++k) st.n[k] = a.ints[b * kTellInts + k];
}
template <typename T>
PYI_HOST_DEVICE void store_state(const TellBuffers<T>& a, int64_t b, const TellState<T>& st) {
  for (int k = 0; k < kTellReals; ++k) a.real[b * kTellReals + k] = st.r[k];
  for (int k = 0; k < kTellInts; ++k) a.ints[b * kTellInts + k] = st.n[k];
}

// torch.minimum / torch.maximum of two scalars: NaN propagates; a tie gives a.
template <typename T>
PYI_HOST_DEVICE T torch_min(T a, T b) {
  if (a != a) return a;
  if (b != b) return b;
  return b < a ? b : a;
}
template <typename T>
PYI_HOST_DEVICE T torch_max(T a, T b) {
  if (a != a) return a;
  if (b != b) return b;
  return a < b ? b : a;
}
template <typename T>
PYI_HOST_DEVICE T abs_of(T v) {
  return v < T(0) ? -v : v;
}
template <typename T>
PYI_HOST_DEVICE void set_point(T* dst, T t, T f, T gtd) {
  dst[0] = t, dst[1] = f, dst[2] = gtd;
}

// rowwise.cubic_minimizer on scalars: the minimizer of the cubic through (x1, f1, g1) and
// (x2, f2, g2) clamped to [lo, hi], or the midpoint where it has none (N&W eq. 3.59).
template <typename T, typename Passes>
PYI_HOST_DEVICE T tell_cubic(Passes& p, T x1, T f1, T g1, T x2, T f2, T g2, T lo, T hi) {
  const T d1 = rn_sub(rn_add(g1, g2), rn_div(rn_mul(T(3), rn_sub(f1, f2)), rn_sub(x1, x2)));
  const T d2sq = rn_sub(rn_mul(d1, d1), rn_mul(g1, g2));
  const T d2 = p.sqrt(T(0) > d2sq ? T(0) : d2sq);  // clamp(min=0): NaN stays NaN
  const T pos =
      x1 <= x2
          ? rn_sub(x2, rn_mul(rn_sub(x2, x1), rn_div(rn_sub(rn_add(g2, d2), d1),
                                                     rn_add(rn_sub(g2, g1), rn_mul(T(2), d2)))))
          : rn_sub(x1, rn_mul(rn_sub(x1, x2), rn_div(rn_sub(rn_add(g1, d2), d1),
                                                     rn_add(rn_sub(g1, g2), rn_mul(T(2), d2)))));
  if (d2sq >= T(0) && rn_sub(pos, pos) == T(0)) return torch_min(torch_max(pos, lo), hi);
  return rn_div(rn_add(lo, hi), T(2));
}

// A new direction and line-search start at the accepted point (the tensor path's _begin), with
// its first trial point. The first direction is -g with t = min(1 / |g|_1, 1) lr.
template <typename T, typename Passes>
PYI_HOST_DEVICE void tell_begin(const TellSettings<T>& run, TellState<T>& st, Passes& p) {
  T* r = st.r;
  int64_t* n = st.n;
  const T* g = p.gradient(n[kGSel]);
  const bool first = n[kIterations] == 0;
  T t = run.lr;
  if (first) {
    const T inv = rn_div(T(1), p.abs_sum(g));
    t = rn_mul(T(1) < inv ? T(1) : inv, run.lr);  // clamp(max=1): NaN stays NaN
  }
  p.two_loop(g, first ? 0 : n[kCount], r[kHDiag]);
  T dmax;
  const T gtd = p.direction_trial(g, t, &dmax);
  if (gtd > -run.tol_change) {  // not a descent direction
    n[kStatus] = kDirection;
    return;
  }
  r[kT] = t;
  r[kF0] = r[kF], r[kGtd0] = gtd;
  set_point(r + kPrev, T(0), r[kF], gtd);
  r[kPrevGMax] = r[kGMax];
  r[kDNorm] = dmax;
  n[kZoom] = n[kInsuf] = n[kLineSteps] = 0;
  n[kPrevIsG] = 1;
}

// The end of an iteration for an accepted step t (value f, max |g| gmax, its gradient the new
// one; the tensor path's _finish): the step and its pair, the stopping tests, the history update
// and the next direction. Returns whether the row was given a new direction.
template <typename T, typename Passes>
PYI_HOST_DEVICE bool tell_finish(const TellSettings<T>& run, TellState<T>& st, Passes& p, T t, T f,
                                 T gmax) {
  T* r = st.r;
  int64_t* n = st.n;
  if (t == T(0)) {
    n[kStatus] = kLineSearch;
    return false;
  }
  const int64_t spare = p.checked_slot(n[kSpare]);
  T yy;
  const T ys = p.accept(p.gradient(!n[kGSel]), p.gradient(n[kGSel]), t, spare, &yy);
  n[kGSel] ^= 1;  // the new gradient is the accepted one
  const T f_old = r[kF];
  r[kF] = f, r[kGMax] = gmax;
  n[kIterations] += 1;
  if (gmax <= run.tol_grad) {
    n[kStatus] = kGradient;
  } else if (rn_mul(abs_of(t), r[kDNorm]) <= run.tol_change) {  // max |t d| = |t| max |d|
    n[kStatus] = kStepSmall;
  } else if (abs_of(rn_sub(f, f_old)) < run.tol_change) {
    n[kStatus] = kValueSmall;
  } else if (n[kIterations] >= run.max_iter) {
    n[kStatus] = kMaxIter;
  } else if (n[kEvaluations] >= run.max_eval) {
    n[kStatus] = kMaxEval;
  }
  if (n[kStatus] != kRunning) return false;
  if (ys > run.tiny) {  // keep the pair: the spare slot becomes the newest in the ring
    const int64_t oldest = p.keep_pair(spare, rn_div(T(1), ys));
    if (n[kCount] == run.m) {  // the ring was full: its oldest slot is free again
      n[kSpare] = oldest;
    } else {
      n[kSpare] = n[kUsed]++;
    }
    n[kUpdates] += 1;
    n[kCount] = n[kCount] + 1 < run.m ? n[kCount] + 1 : run.m;
    r[kHDiag] = rn_div(ys, yy);
  }
  tell_begin(run, st, p);
  return true;
}

// One evaluation (value f, max |g| gmax, g.d gtd; the gradient the new one) of a running row's
// line search (the tensor path's _wolfe), then tell_finish() when it accepts a step. Returns
// whether the row was given a new direction.
template <typename T, typename Passes>
PYI_HOST_DEVICE bool tell_wolfe(const TellSettings<T>& run, TellState<T>& st, Passes& p, T f, T gtd,
                                T gmax) {
  T* r = st.r;
  int64_t* n = st.n;
  const T t = r[kT];
  n[kLineSteps] += 1;
  const bool out = n[kLineSteps] >= run.max_ls;
  const T gtd0 = r[kGtd0];
  const bool armijo_fail = f > rn_add(r[kF0], rn_mul(rn_mul(run.c1, t), gtd0));
  const bool curv = abs_of(gtd) <= rn_mul(run.neg_c2, gtd0);
  const T prev[3] = {r[kPrev], r[kPrev + 1], r[kPrev + 2]};
  const T lo[3] = {r[kLo], r[kLo + 1], r[kLo + 2]};
  const T hi0 = r[kHi];
  const T f_prev = prev[1], lo_f = lo[1];
  // Bracketing: a step too long (A), or where the slope turned (C), brackets a minimizer with
  // the previous trial; one meeting both conditions (W) is taken; else extrapolate (E). Zoom:
  // the new point replaces the high end (H; the ends swap if it is lower than the low end), or
  // becomes the low end (L; taken if it meets the curvature condition: Z).
  bool A = false, W = false, C = false, E = false, enter = false, new_lo = false;
  bool H = false, swap = false, L = false, Z = false, flip = false;
  const bool zoom = n[kZoom] != 0;
  if (!zoom) {
    A = armijo_fail || (n[kLineSteps] > 2 && f >= f_prev);
    W = !A && curv;
    C = !A && !W && gtd >= T(0);
    E = !(A || W || C);
    enter = A || C;
    new_lo = enter && f < f_prev;
  } else {
    H = armijo_fail || f >= lo_f;
    swap = H && f < lo_f;
    L = !H;
    Z = L && curv;
    flip = L && !curv && rn_mul(gtd, rn_sub(hi0, lo[0])) >= T(0);
  }
  if ((enter && !new_lo) || (H && !swap)) {
    set_point(r + kHi, t, f, gtd);
  } else if (swap || flip) {
    set_point(r + kHi, lo[0], lo[1], lo[2]);
  } else if (new_lo) {
    set_point(r + kHi, prev[0], prev[1], prev[2]);
  }
  const bool to_new = new_lo || swap || L, to_prev = !to_new && enter;
  if (to_new) {
    set_point(r + kLo, t, f, gtd);
    r[kLoGMax] = gmax;
  } else if (to_prev) {
    set_point(r + kLo, prev[0], prev[1], prev[2]);
    r[kLoGMax] = r[kPrevGMax];
  }
  n[kZoom] = zoom || enter;
  const T lo_t = r[kLo], hi_t = r[kHi];
  const bool take_new = W || Z || (E && out);
  bool zooming = enter || (zoom && !Z);
  const bool take_lo =
      zooming && (out || rn_mul(abs_of(rn_sub(hi_t, lo_t)), r[kDNorm]) < run.tol_change);
  zooming = zooming && !take_lo;
  const bool extrapolate = E && !out;
  if (extrapolate) {  // a cubic step in [t + 0.01 (t - t_prev), 10 t]
    const T t_prev = prev[0];
    r[kT] = tell_cubic(p, t_prev, f_prev, prev[2], t, f, gtd,
                       rn_add(t, rn_mul(T(0.01), rn_sub(t, t_prev))), rn_mul(t, T(10)));
    set_point(r + kPrev, t, f, gtd);
    r[kPrevGMax] = gmax;
  }
  if (zooming) {  // a cubic step in the bracket, 10% from its ends after too little progress
    const T lo_b = torch_min(lo_t, hi_t), hi_b = torch_max(lo_t, hi_t);
    T t_z =
        tell_cubic(p, r[kLo], r[kLo + 1], r[kLo + 2], r[kHi], r[kHi + 1], r[kHi + 2], lo_b, hi_b);
    const T eps = rn_mul(T(0.1), rn_sub(hi_b, lo_b));
    const bool near = torch_min(rn_sub(hi_b, t_z), rn_sub(t_z, lo_b)) < eps;
    const bool move = near && (n[kInsuf] || t_z >= hi_b || t_z <= lo_b);
    if (move) {
      t_z = abs_of(rn_sub(t_z, hi_b)) < abs_of(rn_sub(t_z, lo_b)) ? rn_sub(hi_b, eps)
                                                                  : rn_add(lo_b, eps);
    }
    n[kInsuf] = near && !move;
    r[kT] = t_z;
  }
  // the line search's gradients: lo's, and prev's where it is not the accepted one
  T* g_new = p.gradient(!n[kGSel]);
  if (to_prev) p.copy(p.lo_g, n[kPrevIsG] ? p.gradient(n[kGSel]) : p.g_prev);
  if (to_new) p.copy(p.lo_g, g_new);
  if (extrapolate) {
    p.copy(p.g_prev, g_new);
    n[kPrevIsG] = 0;
  }
  if (take_new) return tell_finish(run, st, p, t, f, gmax);
  if (!take_lo) return false;
  p.copy(g_new, p.lo_g);  // the bracket's low end is taken
  return tell_finish(run, st, p, lo_t, r[kLo + 1], r[kLoGMax]);
}

// One evaluation of a row (value f; the driver's observe pass gives the gradient times its
// scale), then its next trial point. A stopped row is left as it is.
template <typename T, typename Passes>
PYI_HOST_DEVICE void tell_row(const TellSettings<T>& run, TellState<T>& st, Passes& p, T f) {
  int64_t* n = st.n;
  T* r = st.r;
  if (n[kStatus] != kRunning) return;
  T gmax;
  const T gtd = p.observe(p.gradient(!n[kGSel]), &gmax);
  n[kEvaluations] += 1;
  bool begun = false;
  if (rn_sub(f, f) != T(0) || rn_sub(gmax, gmax) != T(0)) {
    n[kStatus] = kNonfinite;
  } else if (!run.started) {
    r[kF] = f, r[kGMax] = gmax;
    n[kGSel] ^= 1;
    if (r[kGMax] <= run.tol_grad) {
      n[kStatus] = kGradient;
    } else {
      tell_begin(run, st, p);
      begun = true;
    }
  } else {
    begun =
        run.wolfe ? tell_wolfe(run, st, p, f, gtd, gmax) : tell_finish(run, st, p, r[kT], f, gmax);
  }
  if (begun && n[kStatus] == kRunning) return;  // tell_begin wrote the trial
  // a line-search trial along d, or x itself for a row that has stopped
  p.trial_point(r[kT], n[kStatus] != kRunning);
}

}  // namespace pyinvert
