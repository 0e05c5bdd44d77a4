// CPU driver of lbfgs_tell: one evaluation of the per-row L-BFGS (optim/lbfgs_rows.py) taken by
// every row in one call: the observed gradient, the strong-Wolfe line search's step (N&W Alg.
// 3.5 and 3.6), the accepted step and its history pair, the stopping tests, and the next
// direction and trial point. The tensor path (optim/lbfgs_state.py) does the same with some 300
// small tensor operations, and the NumPy version this replaces with some 300 Python scalar
// operations per evaluation: after the network's forward and backward both run cold, and cost
// more than the vector passes (bench/bench_texture.py).
//
// Bit for bit the tensor path (tests/test_lbfgs_rows.py): every scalar operation is its, in its
// order and dtype (the file is built for baseline x86-64 and without -ffast-math, so each float
// operation rounds once, as torch's float32 kernels; constants are cast to the dtype first, as
// torch casts a Python scalar), torch.minimum/maximum/clamp are mirrored with their NaN
// propagation, the square root is torch's own, and the vector passes are the row loops of the
// lbfgs_observe/accept/advance ops (cpu/rowwise_rows.h). Rows are independent: each is done by
// one thread, start to end.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "common/lbfgs_tell_checks.h"
#include "cpu/rowwise_rows.h"

namespace pyinvert {
namespace {

// torch.minimum / torch.maximum of two scalars: NaN propagates; a tie gives a.
template <typename T>
T torch_min(T a, T b) {
  if (a != a) return a;
  if (b != b) return b;
  return b < a ? b : a;
}
template <typename T>
T torch_max(T a, T b) {
  if (a != a) return a;
  if (b != b) return b;
  return a < b ? b : a;
}
template <typename T>
bool finite(T v) {
  return v - v == T(0);
}

// torch.sqrt's own result (its float32 kernel is not always the correctly rounded sqrtf): rare,
// only the line search's cubic steps take a square root.
template <typename T>
T torch_sqrt(T v) {
  at::Tensor one = at::full({1}, v, at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value));
  at::sqrt_(one);
  return one.const_data_ptr<T>()[0];
}

// The run's settings, cast to its dtype; the history; the sizes.
template <typename T>
struct Run {
  T c1, neg_c2, lr, tol_grad, tol_change, tiny;
  int64_t max_ls, max_iter, max_eval, m;
  bool wolfe, started;
  T *S, *Y, *rho;
  int64_t B, D, P;

  T* pair(T* base, int64_t slot, int64_t b) const { return base + (slot * B + b) * D; }
  int64_t checked_slot(int64_t slot) const {
    TORCH_CHECK_INDEX(slot >= 0 && slot < P, "lbfgs_tell: expected history slots in [0, ", P,
                      "), got ", slot, " (a corrupted ring)");
    return slot;
  }
};

// One row's state and vectors.
template <typename T>
struct Row {
  int64_t b;
  T* r;
  int64_t* n;
  int64_t* ring;
  T *x, *G0, *G1, *d, *lo_g, *g_prev, *trial, *z;
  T z_scale;

  T* g() const { return n[kGSel] ? G1 : G0; }  // the accepted gradient
  T* g_new() const { return n[kGSel] ? G0 : G1; }
  void take_new_gradient() const { n[kGSel] ^= 1; }
};

template <typename T>
void copy_row(T* dst, const T* src, int64_t D) {
  std::memcpy(dst, src, sizeof(T) * D);
}

template <typename T>
void set_point(T* dst, T t, T f, T gtd) {
  dst[0] = t, dst[1] = f, dst[2] = gtd;
}

// rowwise.cubic_minimizer on scalars: the minimizer of the cubic through (x1, f1, g1) and
// (x2, f2, g2) clamped to [lo, hi], or the midpoint where it has none (N&W eq. 3.59).
template <typename T>
T cubic(T x1, T f1, T g1, T x2, T f2, T g2, T lo, T hi) {
  const T d1 = g1 + g2 - T(3) * (f1 - f2) / (x1 - x2);
  const T d2sq = d1 * d1 - g1 * g2;
  const T d2 = torch_sqrt(T(0) > d2sq ? T(0) : d2sq);  // clamp(min=0): NaN stays NaN
  const T pos = x1 <= x2 ? x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + T(2) * d2))
                         : x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + T(2) * d2));
  if (d2sq >= 0 && finite(pos)) return torch_min(torch_max(pos, lo), hi);
  return (lo + hi) / T(2);
}

// A new direction and line-search start at the accepted point (the tensor path's _begin), with
// its first trial point. The first direction is -g with t = min(1 / |g|_1, 1) lr.
template <typename T>
void begin(const Run<T>& run, const Row<T>& row, std::vector<const T*>& s, std::vector<const T*>& y,
           std::vector<T>& rho, std::vector<T>& alpha) {
  T* r = row.r;
  int64_t* n = row.n;
  const int64_t D = run.D;
  const bool first = n[kIterations] == 0;
  T t = run.lr;
  if (first) {
    const T l1 = static_cast<T>(abs_sum_row(row.g(), D));
    const T inv = T(1) / l1;
    t = (T(1) < inv ? T(1) : inv) * run.lr;  // clamp(max=1): NaN stays NaN
  }
  const int64_t K = first ? 0 : n[kCount];
  for (int64_t k = 0; k < K; ++k) {
    const int64_t slot = run.checked_slot(row.ring[k]);
    s[k] = run.pair(run.S, slot, row.b);
    y[k] = run.pair(run.Y, slot, row.b);
    rho[k] = run.rho[slot * run.B + row.b];
  }
  two_loop_row(row.g(), s.data(), y.data(), rho.data(), K, r[kHDiag], D, row.d, alpha.data());
  T dmax;
  const T gtd = static_cast<T>(
      direction_trial_row(row.g(), row.d, row.x, t, row.z_scale, row.trial, row.z, D, &dmax));
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

// The end of an iteration for an accepted step t (value f, max |g| gmax, its gradient in g_new;
// the tensor path's _finish): the step and its pair, the stopping tests, the history update and
// the next direction. Returns whether the row was given a new direction.
template <typename T>
bool finish(const Run<T>& run, const Row<T>& row, T t, T f, T gmax, std::vector<const T*>& s,
            std::vector<const T*>& y, std::vector<T>& rho, std::vector<T>& alpha) {
  T* r = row.r;
  int64_t* n = row.n;
  if (t == T(0)) {
    n[kStatus] = kLineSearch;
    return false;
  }
  const int64_t spare = run.checked_slot(n[kSpare]);
  double yy_sum;
  const T ys = static_cast<T>(accept_row(row.g_new(), row.g(), row.d, t, row.x,
                                         run.pair(run.S, spare, row.b),
                                         run.pair(run.Y, spare, row.b), run.D, &yy_sum));
  const T yy = static_cast<T>(yy_sum);
  row.take_new_gradient();
  const T f_old = r[kF];
  r[kF] = f, r[kGMax] = gmax;
  n[kIterations] += 1;
  if (gmax <= run.tol_grad) {
    n[kStatus] = kGradient;
  } else if (std::abs(t) * r[kDNorm] <= run.tol_change) {  // max |t d| = |t| max |d|
    n[kStatus] = kStepSmall;
  } else if (std::abs(f - f_old) < run.tol_change) {
    n[kStatus] = kValueSmall;
  } else if (n[kIterations] >= run.max_iter) {
    n[kStatus] = kMaxIter;
  } else if (n[kEvaluations] >= run.max_eval) {
    n[kStatus] = kMaxEval;
  }
  if (n[kStatus] != kRunning) return false;
  if (ys > run.tiny) {  // keep the pair: the spare slot becomes the newest
    const int64_t m = run.m;
    run.rho[spare * run.B + row.b] = T(1) / ys;
    const int64_t oldest = row.ring[m - 1];
    std::memmove(row.ring + 1, row.ring, sizeof(int64_t) * (m - 1));
    row.ring[0] = spare;
    if (n[kCount] == m) {  // the ring was full: its oldest slot is free again
      n[kSpare] = oldest;
    } else {
      n[kSpare] = n[kUsed]++;
    }
    n[kUpdates] += 1;
    n[kCount] = std::min(n[kCount] + 1, m);
    r[kHDiag] = ys / yy;
  }
  begin(run, row, s, y, rho, alpha);
  return true;
}

// One evaluation (value f, max |g| gmax, g.d gtd; the gradient in g_new) of a running row's line
// search (the tensor path's _wolfe), then finish() when it accepts a step. Returns whether the
// row was given a new direction.
template <typename T>
bool wolfe(const Run<T>& run, const Row<T>& row, T f, T gtd, T gmax, std::vector<const T*>& s,
           std::vector<const T*>& y, std::vector<T>& rho, std::vector<T>& alpha) {
  T* r = row.r;
  int64_t* n = row.n;
  const int64_t D = run.D;
  const T t = r[kT];
  n[kLineSteps] += 1;
  const bool out = n[kLineSteps] >= run.max_ls;
  const T gtd0 = r[kGtd0];
  const bool armijo_fail = f > r[kF0] + run.c1 * t * gtd0;
  const bool curv = std::abs(gtd) <= run.neg_c2 * gtd0;
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
    C = !A && !W && gtd >= 0;
    E = !(A || W || C);
    enter = A || C;
    new_lo = enter && f < f_prev;
  } else {
    H = armijo_fail || f >= lo_f;
    swap = H && f < lo_f;
    L = !H;
    Z = L && curv;
    flip = L && !curv && gtd * (hi0 - lo[0]) >= 0;
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
  const bool take_lo = zooming && (out || std::abs(hi_t - lo_t) * r[kDNorm] < run.tol_change);
  zooming = zooming && !take_lo;
  const bool extrapolate = E && !out;
  if (extrapolate) {  // a cubic step in [t + 0.01 (t - t_prev), 10 t]
    const T t_prev = prev[0];
    r[kT] = cubic(t_prev, f_prev, prev[2], t, f, gtd, t + T(0.01) * (t - t_prev), t * T(10));
    set_point(r + kPrev, t, f, gtd);
    r[kPrevGMax] = gmax;
  }
  if (zooming) {  // a cubic step in the bracket, 10% from its ends after too little progress
    const T lo_b = torch_min(lo_t, hi_t), hi_b = torch_max(lo_t, hi_t);
    T t_z = cubic(r[kLo], r[kLo + 1], r[kLo + 2], r[kHi], r[kHi + 1], r[kHi + 2], lo_b, hi_b);
    const T eps = T(0.1) * (hi_b - lo_b);
    const bool near = torch_min(hi_b - t_z, t_z - lo_b) < eps;
    const bool move = near && (n[kInsuf] || t_z >= hi_b || t_z <= lo_b);
    if (move) t_z = std::abs(t_z - hi_b) < std::abs(t_z - lo_b) ? hi_b - eps : lo_b + eps;
    n[kInsuf] = near && !move;
    r[kT] = t_z;
  }
  // the line search's gradients: lo's, prev's (where it is not the accepted one)
  if (to_prev) copy_row(row.lo_g, n[kPrevIsG] ? row.g() : row.g_prev, D);
  if (to_new) copy_row(row.lo_g, row.g_new(), D);
  if (extrapolate) {
    copy_row(row.g_prev, row.g_new(), D);
    n[kPrevIsG] = 0;
  }
  if (!(take_new || take_lo)) return false;
  if (!take_new) copy_row(row.g_new(), row.lo_g, D);  // the bracket's low end is taken
  return take_new ? finish(run, row, t, f, gmax, s, y, rho, alpha)
                  : finish(run, row, lo_t, r[kLo + 1], r[kLoGMax], s, y, rho, alpha);
}

// One evaluation of one row (the tensor path's tell), then its next trial point.
template <typename T>
void tell_row(const Run<T>& run, const Row<T>& row, const T* grad, T grad_scale, T f,
              std::vector<const T*>& s, std::vector<const T*>& y, std::vector<T>& rho,
              std::vector<T>& alpha) {
  int64_t* n = row.n;
  T* r = row.r;
  if (n[kStatus] != kRunning) return;  // a stopped row keeps its state and trial
  T gmax;
  const T gtd = static_cast<T>(observe_row(grad, grad_scale, row.d, row.g_new(), run.D, &gmax));
  n[kEvaluations] += 1;
  if (!(finite(f) && finite(gmax))) {
    n[kStatus] = kNonfinite;
  } else if (!run.started) {
    r[kF] = f, r[kGMax] = gmax;
    row.take_new_gradient();
    if (r[kGMax] <= run.tol_grad) {
      n[kStatus] = kGradient;
    } else {
      begin(run, row, s, y, rho, alpha);
      if (n[kStatus] != kRunning)
        trial_row(row.d, row.x, T(0), true, row.z_scale, row.trial, row.z, run.D);
      return;
    }
  } else {
    const bool begun = run.wolfe ? wolfe(run, row, f, gtd, gmax, s, y, rho, alpha)
                                 : finish(run, row, r[kT], f, gmax, s, y, rho, alpha);
    if (begun && n[kStatus] == kRunning) return;  // begin() wrote the trial
  }
  // a line-search trial along d, or x itself for a row that has stopped
  const bool stay = n[kStatus] != kRunning;
  trial_row(row.d, row.x, r[kT], stay, row.z_scale, row.trial, row.z, run.D);
}

void lbfgs_tell_kernel(const at::Tensor& grad_in, const at::Tensor& grad_scale_in,
                       const at::Tensor& f_in, const at::Tensor& ask_scale_in, at::Tensor& real,
                       at::Tensor& ints, at::Tensor& ring, at::Tensor& x, at::Tensor& G,
                       at::Tensor& d, at::Tensor& lo_g, at::Tensor& g_prev, at::Tensor& trial,
                       at::Tensor& z, at::Tensor& S, at::Tensor& Y, at::Tensor& rho, double c1,
                       double c2, double lr, double tolerance_grad, double tolerance_change,
                       int64_t max_ls, int64_t max_iter, int64_t max_eval, bool line_search,
                       bool started) {
  check_tell_arguments(grad_in, grad_scale_in, f_in, ask_scale_in, real, ints, ring, x, G, d, lo_g,
                       g_prev, trial, z, S, Y, rho);
  const at::Tensor grad = grad_in.contiguous(), grad_scale = grad_scale_in.contiguous();
  const at::Tensor f = f_in.contiguous(), ask_scale = ask_scale_in.contiguous();
  const int64_t B = x.size(0), D = x.size(1), m = ring.size(1);
  if (B == 0) return;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lbfgs_tell", [&] {
    using T = scalar_t;
    Run<T> run{T(c1),
               T(-c2),
               T(lr),
               T(tolerance_grad),
               T(tolerance_change),
               T(1e-10),
               max_ls,
               max_iter,
               max_eval,
               m,
               line_search,
               started,
               S.mutable_data_ptr<T>(),
               Y.mutable_data_ptr<T>(),
               rho.mutable_data_ptr<T>(),
               B,
               D,
               S.size(0)};
    const T* gr = grad.const_data_ptr<T>();
    const T* gs = grad_scale.numel() ? grad_scale.const_data_ptr<T>() : nullptr;
    const T* fv = f.const_data_ptr<T>();
    const T* as = ask_scale.numel() ? ask_scale.const_data_ptr<T>() : nullptr;
    T *rs = real.mutable_data_ptr<T>(), *xs = x.mutable_data_ptr<T>();
    T *Gs = G.mutable_data_ptr<T>(), *ds = d.mutable_data_ptr<T>();
    T *lg = lo_g.mutable_data_ptr<T>(), *gp = g_prev.mutable_data_ptr<T>();
    T *ts = trial.mutable_data_ptr<T>(), *zs = as ? z.mutable_data_ptr<T>() : nullptr;
    int64_t *ns = ints.mutable_data_ptr<int64_t>(), *rg = ring.mutable_data_ptr<int64_t>();
    at::parallel_for(0, B, 1, [&](int64_t begin_row, int64_t end_row) {
      std::vector<const T*> s(m), y(m);
      std::vector<T> rho_row(m), alpha(m);
      for (int64_t b = begin_row; b < end_row; ++b) {
        const int64_t o = b * D;
        const Row<T> row{b,
                         rs + b * kTellReals,
                         ns + b * kTellInts,
                         rg + b * m,
                         xs + o,
                         Gs + o,
                         Gs + B * D + o,
                         ds + o,
                         lg + o,
                         gp + o,
                         ts + o,
                         zs ? zs + o : nullptr,
                         as ? as[b] : T(1)};
        tell_row(run, row, gr + o, gs ? gs[b] : T(1), fv[b], s, y, rho_row, alpha);
      }
    });
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(pyinvert, CPU, m) { m.impl("lbfgs_tell", &lbfgs_tell_kernel); }

}  // namespace pyinvert
