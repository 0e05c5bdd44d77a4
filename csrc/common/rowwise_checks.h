#pragma once
// Argument checks of the rowwise ops, shared by the CPU and CUDA host functions.
#include <torch/types.h>

namespace pyinvert {

// rowwise_two_loop(g [B, D], S [m, B, D], Y [m, B, D], rho [m, B], h [B], slots [B, K] int64):
// every slot index in [-1, m) (checked by the Python wrapper, which builds them).
inline void check_two_loop_arguments(const at::Tensor& g, const at::Tensor& S, const at::Tensor& Y,
                                     const at::Tensor& rho, const at::Tensor& h,
                                     const at::Tensor& slots) {
  constexpr const char* op = "rowwise_two_loop";
  TORCH_CHECK(g.dim() == 2, op, ": expected g of shape (B, D), got ", g.sizes());
  TORCH_CHECK(g.scalar_type() == at::kFloat || g.scalar_type() == at::kDouble, op,
              ": expected g of dtype float32 or float64, got ", g.scalar_type());
  const int64_t B = g.size(0), D = g.size(1);
  TORCH_CHECK(S.dim() == 3 && S.size(1) == B && S.size(2) == D, op, ": expected S of shape (m, ", B,
              ", ", D, "), got ", S.sizes());
  TORCH_CHECK(Y.sizes() == S.sizes(), op, ": expected Y of shape ", S.sizes(), " (as S), got ",
              Y.sizes());
  TORCH_CHECK(rho.dim() == 2 && rho.size(0) == S.size(0) && rho.size(1) == B, op,
              ": expected rho of shape (", S.size(0), ", ", B, "), got ", rho.sizes());
  TORCH_CHECK(h.dim() == 1 && h.size(0) == B, op, ": expected h of shape (", B, ",), got ",
              h.sizes());
  TORCH_CHECK(slots.dim() == 2 && slots.size(0) == B, op, ": expected slots of shape (", B,
              ", K), got ", slots.sizes());
  TORCH_CHECK(slots.scalar_type() == at::kLong, op, ": expected slots of dtype int64, got ",
              slots.scalar_type());
  for (const auto& [t, name] :
       {std::pair<const at::Tensor&, const char*>{S, "S"}, {Y, "Y"}, {rho, "rho"}, {h, "h"}}) {
    TORCH_CHECK(t.scalar_type() == g.scalar_type(), op, ": expected ", name, " of dtype ",
                g.scalar_type(), " (as g), got ", t.scalar_type());
    TORCH_CHECK(t.device() == g.device(), op, ": expected ", name, " on ", g.device(),
                " (as g), got ", t.device());
  }
  TORCH_CHECK(slots.device() == g.device(), op, ": expected slots on ", g.device(), " (as g), got ",
              slots.device());
}

// The fused L-BFGS steps: every [B, D] argument a contiguous float32/float64 tensor of g's dtype
// and device (the outputs are written in place, so no copies are made); per-row scalars [B].
inline void check_rows_tensor(const char* op, const char* name, const at::Tensor& t,
                              const at::Tensor& like, at::IntArrayRef shape) {
  TORCH_CHECK(t.sizes() == shape, op, ": expected ", name, " of shape ", shape, ", got ",
              t.sizes());
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), op, ": expected ", name, " of dtype ",
              like.scalar_type(), ", got ", t.scalar_type());
  TORCH_CHECK(t.device() == like.device(), op, ": expected ", name, " on ", like.device(), ", got ",
              t.device());
}

inline void check_rows_output(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.is_contiguous(), op, ": expected ", name,
              " to be contiguous (it is written "
              "in place)");
}

inline void check_rows_mask(const char* op, const char* name, const at::Tensor& t,
                            const at::Tensor& like, at::ScalarType type) {
  TORCH_CHECK(t.dim() == 1 && t.size(0) == like.size(0), op, ": expected ", name, " of shape (",
              like.size(0), ",), got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == type, op, ": expected ", name, " of dtype ", type, ", got ",
              t.scalar_type());
  TORCH_CHECK(t.device() == like.device(), op, ": expected ", name, " on ", like.device(), ", got ",
              t.device());
}

inline void check_rows_matrix(const char* op, const at::Tensor& g) {
  TORCH_CHECK(g.dim() == 2, op, ": expected g of shape (B, D), got ", g.sizes());
  TORCH_CHECK(g.scalar_type() == at::kFloat || g.scalar_type() == at::kDouble, op,
              ": expected g of dtype float32 or float64, got ", g.scalar_type());
  check_rows_output(op, "g", g);
}

// lbfgs_observe(grad [B, D], scale [B], d [B, D], g [B, D] written).
inline void check_observe_arguments(const at::Tensor& grad, const at::Tensor& scale,
                                    const at::Tensor& d, const at::Tensor& g) {
  constexpr const char* op = "lbfgs_observe";
  check_rows_matrix(op, g);
  check_rows_tensor(op, "grad", grad, g, g.sizes());
  check_rows_tensor(op, "d", d, g, g.sizes());
  check_rows_output(op, "d", d);
  check_rows_tensor(op, "scale", scale, g, {g.size(0)});
}

// lbfgs_accept(g, g_old, d [B, D], t [B], rows [B] bool, spare [B] int64, x [B, D] written,
// S, Y [P, B, D] written at (spare[b], b)).
inline void check_accept_arguments(const at::Tensor& g, const at::Tensor& g_old,
                                   const at::Tensor& d, const at::Tensor& t, const at::Tensor& rows,
                                   const at::Tensor& spare, const at::Tensor& x,
                                   const at::Tensor& S, const at::Tensor& Y) {
  constexpr const char* op = "lbfgs_accept";
  check_rows_matrix(op, g);
  for (const auto& [v, name] :
       {std::pair<const at::Tensor&, const char*>{g_old, "g_old"}, {d, "d"}, {x, "x"}}) {
    check_rows_tensor(op, name, v, g, g.sizes());
    check_rows_output(op, name, v);
  }
  check_rows_tensor(op, "t", t, g, {g.size(0)});
  check_rows_mask(op, "rows", rows, g, at::kBool);
  check_rows_mask(op, "spare", spare, g, at::kLong);
  TORCH_CHECK(S.dim() == 3, op, ": expected S of shape (P, ", g.size(0), ", ", g.size(1), "), got ",
              S.sizes());
  check_rows_tensor(op, "S", S, g, {S.size(0), g.size(0), g.size(1)});
  check_rows_tensor(op, "Y", Y, g, S.sizes());
  check_rows_output(op, "S", S);
  check_rows_output(op, "Y", Y);
}

// lbfgs_advance(g, S, Y, rho, h, slots as rowwise_two_loop; mode [B] int64 (AdvanceMode), t [B],
// x [B, D], scale [B] or empty; d, trial [B, D] and z [B, D] (or empty) written).
inline void check_advance_arguments(const at::Tensor& g, const at::Tensor& S, const at::Tensor& Y,
                                    const at::Tensor& rho, const at::Tensor& h,
                                    const at::Tensor& slots, const at::Tensor& mode,
                                    const at::Tensor& t, const at::Tensor& x,
                                    const at::Tensor& scale, const at::Tensor& d,
                                    const at::Tensor& trial, const at::Tensor& z) {
  constexpr const char* op = "lbfgs_advance";
  check_two_loop_arguments(g, S, Y, rho, h, slots);
  check_rows_output(op, "g", g);
  for (const auto& v : {S, Y, rho, h, slots}) {
    TORCH_CHECK(v.is_contiguous(), op, ": expected contiguous S, Y, rho, h and slots");
  }
  check_rows_mask(op, "mode", mode, g, at::kLong);
  check_rows_tensor(op, "t", t, g, {g.size(0)});
  for (const auto& [v, name] :
       {std::pair<const at::Tensor&, const char*>{x, "x"}, {d, "d"}, {trial, "trial"}}) {
    check_rows_tensor(op, name, v, g, g.sizes());
    check_rows_output(op, name, v);
  }
  if (z.numel() == 0) {
    TORCH_CHECK(scale.numel() == 0, op, ": expected an empty scale without z, got ", scale.sizes());
  } else {
    check_rows_tensor(op, "z", z, g, g.sizes());
    check_rows_output(op, "z", z);
    check_rows_tensor(op, "scale", scale, g, {g.size(0)});
  }
}

}  // namespace pyinvert
