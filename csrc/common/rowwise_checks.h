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

}  // namespace pyinvert
