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
struct RowPasses : TellRow<T> {
  using Row = TellRow<T>;  // (its members, named in this dependent base)
  using Row::b, Row::B, Row::D, Row::P, Row::grad, Row::grad_scale, Row::x, Row::d, Row::trial,
      Row::z, Row::z_scale, Row::S, Row::Y, Row::rho, Row::ring, Row::m, Row::pair;
  std::vector<const T*>& s;  // scratch of m entries each
  std::vector<const T*>& y;
  std::vector<T>& rho_row;
  std::vector<T>& alpha;

  RowPasses(const TellBuffers<T>& a, int64_t row, std::vector<const T*>& s_,
            std::vector<const T*>& y_, std::vector<T>& rho_, std::vector<T>& alpha_)
      : Row(a, row), s(s_), y(y_), rho_row(rho_), alpha(alpha_) {}

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
  const int64_t B = x.size(0), m = ring.size(1);
  if (B == 0) return;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lbfgs_tell", [&] {
    using T = scalar_t;
    const auto run = tell_settings<T>(c1, c2, lr, tolerance_grad, tolerance_change, max_ls,
                                      max_iter, max_eval, m, line_search, started);
    const auto buffers = tell_buffers<T>(grad, grad_scale, f, ask_scale, real, ints, ring, x, G, d,
                                         lo_g, g_prev, trial, z, S, Y, rho);
    at::parallel_for(0, B, 1, [&](int64_t first_row, int64_t end_row) {
      std::vector<const T*> s(m), y(m);
      std::vector<T> rho_row(m), alpha(m);
      for (int64_t b = first_row; b < end_row; ++b) {
        const RowPasses<T> passes(buffers, b, s, y, rho_row, alpha);
        TellState<T> st;
        load_state(buffers, b, st);
        tell_row(run, st, passes, buffers.f[b]);
        store_state(buffers, b, st);
      }
    });
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(pyinvert, CPU, m) { m.impl("lbfgs_tell", &lbfgs_tell_kernel); }

}  // namespace pyinvert
