// CPU driver of lbfgs_tell (common/lbfgs_tell_math.h): each row by one thread, start to end
// (rows are independent), its vector passes the row loops of the lbfgs_observe/accept/advance
// ops (cpu/rowwise_rows.h), so a row's bits depend on neither the batch nor the thread count.
// The tensor path does the same with some 300 small tensor operations per tell, and the NumPy
// version this replaced with some 300 Python scalar operations: after the network's forward and
// backward both run cold, and cost more than the vector passes (bench/bench_texture.py).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

#include <cstring>
#include <vector>

#include "common/lbfgs_tell_checks.h"
#include "common/lbfgs_tell_math.h"
#include "cpu/rowwise_rows.h"

namespace pyinvert {
namespace {

// The vector passes of one row (the Passes of common/lbfgs_tell_math.h).
template <typename T>
struct RowPasses {
  int64_t b, B, D, P;
  const T* grad;
  T grad_scale;
  T *x, *G0, *G1, *d, *lo_g, *g_prev, *trial, *z;  // z: nullptr when not written
  T z_scale;
  T *S, *Y, *rho;
  int64_t* ring;  // the row's m slots, newest first
  int64_t m;
  std::vector<const T*>& s;  // scratch of m entries each
  std::vector<const T*>& y;
  std::vector<T>& rho_row;
  std::vector<T>& alpha;

  T* gradient(int64_t sel) const { return sel ? G1 : G0; }
  T* pair(T* base, int64_t slot) const { return base + (slot * B + b) * D; }
  int64_t checked_slot(int64_t slot) const {
    TORCH_CHECK_INDEX(slot >= 0 && slot < P, "lbfgs_tell: expected history slots in [0, ", P,
                      "), got ", slot, " (a corrupted ring)");
    return slot;
  }
  T observe(T* g_new, T* gmax) const {
    return static_cast<T>(observe_row(grad, grad_scale, d, g_new, D, gmax));
  }
  T accept(const T* g_new, const T* g_old, T t, int64_t slot, T* yy) const {
    double yy_sum;
    const T ys =
        static_cast<T>(accept_row(g_new, g_old, d, t, x, pair(S, slot), pair(Y, slot), D, &yy_sum));
    *yy = static_cast<T>(yy_sum);
    return ys;
  }
  // rho of the pair in `slot` = inv_ys, and the slot the newest in the ring; returns the slot
  // that was the oldest.
  int64_t keep_pair(int64_t slot, T inv_ys) const {
    rho[slot * B + b] = inv_ys;
    const int64_t oldest = ring[m - 1];
    std::memmove(ring + 1, ring, sizeof(int64_t) * (m - 1));
    ring[0] = slot;
    return oldest;
  }
  void two_loop(const T* g, int64_t K, T h) const {
    for (int64_t k = 0; k < K; ++k) {
      const int64_t slot = checked_slot(ring[k]);
      s[k] = pair(S, slot), y[k] = pair(Y, slot);
      rho_row[k] = rho[slot * B + b];
    }
    two_loop_row(g, s.data(), y.data(), rho_row.data(), K, h, D, d, alpha.data());
  }
  T direction_trial(const T* g, T t, T* dmax) const {
    return static_cast<T>(direction_trial_row(g, d, x, t, z_scale, trial, z, D, dmax));
  }
  void trial_point(T t, bool stay) const { trial_row(d, x, t, stay, z_scale, trial, z, D); }
  void copy(T* dst, const T* src) const { std::memcpy(dst, src, sizeof(T) * D); }
  T abs_sum(const T* g) const { return static_cast<T>(abs_sum_row(g, D)); }
  // torch.sqrt's own result (its float32 kernel is not always the correctly rounded sqrtf):
  // rare, only the line search's cubic steps take a square root.
  T sqrt(T v) const {
    at::Tensor one =
        at::full({1}, v, at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value));
    at::sqrt_(one);
    return one.const_data_ptr<T>()[0];
  }
};

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
  const int64_t B = x.size(0), D = x.size(1), m = ring.size(1), P = S.size(0);
  if (B == 0) return;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lbfgs_tell", [&] {
    using T = scalar_t;
    const TellSettings<T> run{T(c1),       T(-c2), T(lr),    T(tolerance_grad), T(tolerance_change),
                              T(1e-10),    max_ls, max_iter, max_eval,          m,
                              line_search, started};
    const T* gr = grad.const_data_ptr<T>();
    const T* gs = grad_scale.numel() ? grad_scale.const_data_ptr<T>() : nullptr;
    const T* fv = f.const_data_ptr<T>();
    const T* as = ask_scale.numel() ? ask_scale.const_data_ptr<T>() : nullptr;
    T *rs = real.mutable_data_ptr<T>(), *xs = x.mutable_data_ptr<T>();
    T *Gs = G.mutable_data_ptr<T>(), *ds = d.mutable_data_ptr<T>();
    T *lg = lo_g.mutable_data_ptr<T>(), *gp = g_prev.mutable_data_ptr<T>();
    T *ts = trial.mutable_data_ptr<T>(), *zs = as ? z.mutable_data_ptr<T>() : nullptr;
    T *Ss = S.mutable_data_ptr<T>(), *Ys = Y.mutable_data_ptr<T>();
    T* rh = rho.mutable_data_ptr<T>();
    int64_t *ns = ints.mutable_data_ptr<int64_t>(), *rg = ring.mutable_data_ptr<int64_t>();
    at::parallel_for(0, B, 1, [&](int64_t first_row, int64_t end_row) {
      std::vector<const T*> s(m), y(m);
      std::vector<T> rho_row(m), alpha(m);
      for (int64_t b = first_row; b < end_row; ++b) {
        const int64_t o = b * D;
        const RowPasses<T> passes{b,
                                  B,
                                  D,
                                  P,
                                  gr + o,
                                  gs ? gs[b] : T(1),
                                  xs + o,
                                  Gs + o,
                                  Gs + B * D + o,
                                  ds + o,
                                  lg + o,
                                  gp + o,
                                  ts + o,
                                  zs ? zs + o : nullptr,
                                  as ? as[b] : T(1),
                                  Ss,
                                  Ys,
                                  rh,
                                  rg + b * m,
                                  m,
                                  s,
                                  y,
                                  rho_row,
                                  alpha};
        TellState<T> st;
        std::memcpy(st.r, rs + b * kTellReals, sizeof(st.r));
        std::memcpy(st.n, ns + b * kTellInts, sizeof(st.n));
        tell_row(run, st, passes, fv[b]);
        std::memcpy(rs + b * kTellReals, st.r, sizeof(st.r));
        std::memcpy(ns + b * kTellInts, st.n, sizeof(st.n));
      }
    });
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(pyinvert, CPU, m) { m.impl("lbfgs_tell", &lbfgs_tell_kernel); }

}  // namespace pyinvert
