// CPU driver of rowwise_dot, rowwise_two_loop and the fused L-BFGS steps: parallel over rows
// (at::parallel_for), each row by one thread with the row loops of cpu/rowwise_rows.h, in
// common/rowwise_math.h's fixed order, so a row's bits depend on neither the batch nor the
// thread count.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

#include <algorithm>
#include <limits>
#include <tuple>
#include <vector>

#include "common/rowwise_checks.h"
#include "cpu/rowwise_rows.h"

namespace pyinvert {
namespace {

template <typename T>
void rowwise_dot_impl(const T* a, int64_t a_stride, const T* b, int64_t b_stride, int64_t B,
                      int64_t D, T* out) {
  // Rows are independent; a row is never split between threads.
  const int64_t grain = D >= 4096 ? 1 : (4096 + D) / (D + 1);
  at::parallel_for(0, B, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      out[r] = static_cast<T>(rowwise_dot_row(a + r * a_stride, b + r * b_stride, D));
    }
  });
}

at::Tensor rowwise_dot_kernel(const at::Tensor& a_in, const at::Tensor& b_in) {
  TORCH_CHECK(a_in.dim() == 2, "rowwise_dot: expected a of shape (B, D), got ", a_in.sizes());
  TORCH_CHECK(b_in.sizes() == a_in.sizes(), "rowwise_dot: expected b of shape ", a_in.sizes(),
              " (as a), got ", b_in.sizes());
  TORCH_CHECK(a_in.scalar_type() == at::kFloat || a_in.scalar_type() == at::kDouble,
              "rowwise_dot: expected a of dtype float32 or float64, got ", a_in.scalar_type());
  TORCH_CHECK(b_in.scalar_type() == a_in.scalar_type(), "rowwise_dot: expected b of dtype ",
              a_in.scalar_type(), " (as a), got ", b_in.scalar_type());
  TORCH_CHECK(b_in.device() == a_in.device(), "rowwise_dot: expected b on ", a_in.device(),
              " (as a), got ", b_in.device());
  // Rows must be contiguous; any row stride is taken as it is (a slice of a larger buffer).
  const at::Tensor a = a_in.stride(1) == 1 ? a_in : a_in.contiguous();
  const at::Tensor b = b_in.stride(1) == 1 ? b_in : b_in.contiguous();
  const int64_t B = a.size(0), D = a.size(1);
  at::Tensor out = at::empty({B}, a.options());
  if (B == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "rowwise_dot", [&] {
    rowwise_dot_impl<scalar_t>(a.const_data_ptr<scalar_t>(), a.stride(0),
                               b.const_data_ptr<scalar_t>(), b.stride(0), B, D,
                               out.mutable_data_ptr<scalar_t>());
  });
  return out;
}

template <typename T>
void two_loop_impl(const T* g, const T* S, const T* Y, const T* rho, const T* h,
                   const int64_t* slots, int64_t B, int64_t D, int64_t K, T* out) {
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    std::vector<const T*> s(K), y(K);
    std::vector<T> alpha(K), rho_row(K);
    for (int64_t b = begin; b < end; ++b) {
      int64_t k = 0;
      for (; k < K && slots[b * K + k] >= 0; ++k) {
        const int64_t slot = slots[b * K + k];
        s[k] = S + (slot * B + b) * D;
        y[k] = Y + (slot * B + b) * D;
        rho_row[k] = rho[slot * B + b];
      }
      two_loop_row(g + b * D, s.data(), y.data(), rho_row.data(), k, h[b], D, out + b * D,
                   alpha.data());
    }
  });
}

at::Tensor rowwise_two_loop_kernel(const at::Tensor& g, const at::Tensor& S, const at::Tensor& Y,
                                   const at::Tensor& rho, const at::Tensor& h,
                                   const at::Tensor& slots) {
  check_two_loop_arguments(g, S, Y, rho, h, slots);
  const int64_t B = g.size(0), D = g.size(1), K = slots.size(1);
  const at::Tensor gc = g.contiguous(), Sc = S.contiguous(), Yc = Y.contiguous();
  const at::Tensor rc = rho.contiguous(), hc = h.contiguous(), sc = slots.contiguous();
  const int64_t m = S.size(0);
  const int64_t* slot = sc.const_data_ptr<int64_t>();
  for (int64_t i = 0; i < B * K; ++i) {
    TORCH_CHECK_INDEX(slot[i] >= -1 && slot[i] < m, "rowwise_two_loop: expected slots in [-1, ", m,
                      "), got ", slot[i]);
  }
  at::Tensor out = at::empty({B, D}, g.options());
  if (B == 0 || D == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "rowwise_two_loop", [&] {
    two_loop_impl<scalar_t>(gc.const_data_ptr<scalar_t>(), Sc.const_data_ptr<scalar_t>(),
                            Yc.const_data_ptr<scalar_t>(), rc.const_data_ptr<scalar_t>(),
                            hc.const_data_ptr<scalar_t>(), sc.const_data_ptr<int64_t>(), B, D, K,
                            out.mutable_data_ptr<scalar_t>());
  });
  return out;
}

// ---- the fused steps of the per-row L-BFGS (common/rowwise_math.h) -------------------------

std::tuple<at::Tensor, at::Tensor> lbfgs_observe_kernel(const at::Tensor& grad,
                                                        const at::Tensor& scale,
                                                        const at::Tensor& d, at::Tensor& g) {
  check_observe_arguments(grad, scale, d, g);
  const int64_t B = g.size(0), D = g.size(1);
  const at::Tensor gc = grad.contiguous(), sc = scale.contiguous();
  at::Tensor gmax = at::empty({B}, g.options()), gtd = at::empty({B}, g.options());
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "lbfgs_observe", [&] {
    const scalar_t *src = gc.const_data_ptr<scalar_t>(), *c = sc.const_data_ptr<scalar_t>();
    const scalar_t* dd = d.const_data_ptr<scalar_t>();
    scalar_t* out = g.mutable_data_ptr<scalar_t>();
    scalar_t *gm = gmax.mutable_data_ptr<scalar_t>(), *dot = gtd.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        dot[b] = static_cast<scalar_t>(
            observe_row(src + b * D, c[b], dd + b * D, out + b * D, D, gm + b));
      }
    });
  });
  return {gmax, gtd};
}

std::tuple<at::Tensor, at::Tensor> lbfgs_accept_kernel(const at::Tensor& g, const at::Tensor& g_old,
                                                       const at::Tensor& d, const at::Tensor& t,
                                                       const at::Tensor& rows,
                                                       const at::Tensor& spare, at::Tensor& x,
                                                       at::Tensor& S, at::Tensor& Y) {
  check_accept_arguments(g, g_old, d, t, rows, spare, x, S, Y);
  const int64_t B = g.size(0), D = g.size(1), P = S.size(0);
  const at::Tensor rc = rows.contiguous(), pc = spare.contiguous(), tc = t.contiguous();
  const bool* take = rc.const_data_ptr<bool>();
  const int64_t* slot = pc.const_data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b) {
    TORCH_CHECK_INDEX(!take[b] || (slot[b] >= 0 && slot[b] < P),
                      "lbfgs_accept: expected spare slots in [0, ", P, "), got ", slot[b]);
  }
  at::Tensor ys = at::zeros({B}, g.options()), yy = at::zeros({B}, g.options());
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "lbfgs_accept", [&] {
    const scalar_t *gn = g.const_data_ptr<scalar_t>(), *go = g_old.const_data_ptr<scalar_t>();
    const scalar_t *dd = d.const_data_ptr<scalar_t>(), *tt = tc.const_data_ptr<scalar_t>();
    scalar_t* xx = x.mutable_data_ptr<scalar_t>();
    scalar_t *SS = S.mutable_data_ptr<scalar_t>(), *YY = Y.mutable_data_ptr<scalar_t>();
    scalar_t *o1 = ys.mutable_data_ptr<scalar_t>(), *o2 = yy.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        if (!take[b]) continue;
        const int64_t row = (slot[b] * B + b) * D;
        double yyb = 0.0;
        o1[b] = static_cast<scalar_t>(accept_row(gn + b * D, go + b * D, dd + b * D, tt[b],
                                                 xx + b * D, SS + row, YY + row, D, &yyb));
        o2[b] = static_cast<scalar_t>(yyb);
      }
    });
  });
  return {ys, yy};
}

std::tuple<at::Tensor, at::Tensor> lbfgs_advance_kernel(
    const at::Tensor& g, const at::Tensor& S, const at::Tensor& Y, const at::Tensor& rho,
    const at::Tensor& h, const at::Tensor& slots, const at::Tensor& mode, const at::Tensor& t,
    const at::Tensor& x, const at::Tensor& scale, at::Tensor& d, at::Tensor& trial, at::Tensor& z) {
  check_advance_arguments(g, S, Y, rho, h, slots, mode, t, x, scale, d, trial, z);
  const int64_t B = g.size(0), D = g.size(1), K = slots.size(1), P = S.size(0);
  const at::Tensor sc = slots.contiguous(), mc = mode.contiguous(), tc = t.contiguous();
  const at::Tensor rc = rho.contiguous(), hc = h.contiguous(), cc = scale.contiguous();
  const int64_t *slot = sc.const_data_ptr<int64_t>(), *md = mc.const_data_ptr<int64_t>();
  for (int64_t i = 0; i < B * K; ++i) {
    TORCH_CHECK_INDEX(slot[i] >= -1 && slot[i] < P, "lbfgs_advance: expected slots in [-1, ", P,
                      "), got ", slot[i]);
  }
  for (int64_t b = 0; b < B; ++b) {
    TORCH_CHECK(md[b] >= 0 && md[b] <= 3, "lbfgs_advance: expected modes in [0, 3], got ", md[b]);
  }
  const bool scaled = z.numel() > 0;
  at::Tensor gtd = at::zeros({B}, g.options()), dmax = at::zeros({B}, g.options());
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "lbfgs_advance", [&] {
    const scalar_t *gg = g.const_data_ptr<scalar_t>(), *SS = S.const_data_ptr<scalar_t>();
    const scalar_t *YY = Y.const_data_ptr<scalar_t>(), *rr = rc.const_data_ptr<scalar_t>();
    const scalar_t *hh = hc.const_data_ptr<scalar_t>(), *tt = tc.const_data_ptr<scalar_t>();
    const scalar_t *xx = x.const_data_ptr<scalar_t>(), *c = cc.const_data_ptr<scalar_t>();
    scalar_t *dd = d.mutable_data_ptr<scalar_t>(), *tr = trial.mutable_data_ptr<scalar_t>();
    scalar_t* zz = scaled ? z.mutable_data_ptr<scalar_t>() : nullptr;
    scalar_t *o1 = gtd.mutable_data_ptr<scalar_t>(), *o2 = dmax.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      std::vector<const scalar_t*> s(K), y(K);
      std::vector<scalar_t> alpha(K), rho_row(K);
      for (int64_t b = begin; b < end; ++b) {
        const auto m = static_cast<AdvanceMode>(md[b]);
        if (m == AdvanceMode::kSkip) continue;
        const int64_t o = b * D;
        scalar_t* zb = scaled ? zz + o : nullptr;
        const scalar_t cb = scaled ? c[b] : scalar_t(1);
        if (m != AdvanceMode::kDirection) {
          trial_row(dd + o, xx + o, tt[b], m == AdvanceMode::kStay, cb, tr + o, zb, D);
          continue;
        }
        int64_t k = 0;
        for (; k < K && slot[b * K + k] >= 0; ++k) {
          s[k] = SS + (slot[b * K + k] * B + b) * D;
          y[k] = YY + (slot[b * K + k] * B + b) * D;
          rho_row[k] = rr[slot[b * K + k] * B + b];
        }
        two_loop_row(gg + o, s.data(), y.data(), rho_row.data(), k, hh[b], D, dd + o, alpha.data());
        o1[b] = static_cast<scalar_t>(
            direction_trial_row(gg + o, dd + o, xx + o, tt[b], cb, tr + o, zb, D, o2 + b));
      }
    });
  });
  return {gtd, dmax};
}

}  // namespace

TORCH_LIBRARY_IMPL(pyinvert, CPU, m) {
  m.impl("rowwise_dot", &rowwise_dot_kernel);
  m.impl("rowwise_two_loop", &rowwise_two_loop_kernel);
  m.impl("lbfgs_observe", &lbfgs_observe_kernel);
  m.impl("lbfgs_accept", &lbfgs_accept_kernel);
  m.impl("lbfgs_advance", &lbfgs_advance_kernel);
}

}  // namespace pyinvert
