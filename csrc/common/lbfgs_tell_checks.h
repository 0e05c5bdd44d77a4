#pragma once
// lbfgs_tell's argument checks, shared by the CPU and CUDA host functions.
#include <torch/types.h>

#include "common/lbfgs_tell_math.h"
#include "common/rowwise_checks.h"

namespace pyinvert {

inline void check_tell_tensor(const char* name, const at::Tensor& t, const at::Tensor& like,
                              at::IntArrayRef shape, bool written) {
  check_rows_tensor("lbfgs_tell", name, t, like, shape);
  if (written) check_rows_output("lbfgs_tell", name, t);
}

// x, d, lo_g, g_prev, trial [B, D]; G [2, B, D]; z [B, D] or empty (then ask_scale empty too,
// else [B]); grad [B, D]; grad_scale [B] or empty; f [B]; real, ints as above; ring [B, m]
// int64, m >= 1; S, Y [P, B, D], P >= 1; rho [P, B].
inline void check_tell_arguments(const at::Tensor& grad, const at::Tensor& grad_scale,
                                 const at::Tensor& f, const at::Tensor& ask_scale,
                                 const at::Tensor& real, const at::Tensor& ints,
                                 const at::Tensor& ring, const at::Tensor& x, const at::Tensor& G,
                                 const at::Tensor& d, const at::Tensor& lo_g,
                                 const at::Tensor& g_prev, const at::Tensor& trial,
                                 const at::Tensor& z, const at::Tensor& S, const at::Tensor& Y,
                                 const at::Tensor& rho) {
  constexpr const char* op = "lbfgs_tell";
  TORCH_CHECK(x.dim() == 2, op, ": expected x of shape (B, D), got ", x.sizes());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, op,
              ": expected x of dtype float32 or float64, got ", x.scalar_type());
  TORCH_CHECK(x.is_contiguous(), op, ": expected x to be contiguous (it is written in place)");
  const int64_t B = x.size(0), D = x.size(1);
  check_tell_tensor("grad", grad, x, {B, D}, false);
  check_tell_tensor("f", f, x, {B}, false);
  if (grad_scale.numel() > 0) check_tell_tensor("grad_scale", grad_scale, x, {B}, false);
  for (const auto& [t, name] : {std::pair<const at::Tensor&, const char*>{d, "d"},
                                {lo_g, "lo_g"},
                                {g_prev, "g_prev"},
                                {trial, "trial"}}) {
    check_tell_tensor(name, t, x, {B, D}, true);
  }
  check_tell_tensor("G", G, x, {2, B, D}, true);
  if (z.numel() == 0) {
    TORCH_CHECK(ask_scale.numel() == 0, op, ": expected an empty ask_scale without z, got ",
                ask_scale.sizes());
  } else {
    check_tell_tensor("z", z, x, {B, D}, true);
    check_tell_tensor("ask_scale", ask_scale, x, {B}, false);
  }
  check_tell_tensor("real", real, x, {B, kTellReals}, true);
  TORCH_CHECK(ints.sizes() == at::IntArrayRef({B, kTellInts}) && ints.scalar_type() == at::kLong &&
                  ints.is_contiguous(),
              op, ": expected ints of shape (", B, ", ", int64_t(kTellInts),
              "), int64, contiguous; got ", ints.sizes(), ", ", ints.scalar_type());
  TORCH_CHECK(ring.dim() == 2 && ring.size(0) == B && ring.size(1) >= 1 &&
                  ring.scalar_type() == at::kLong && ring.is_contiguous(),
              op, ": expected ring of shape (", B, ", m >= 1), int64, contiguous; got ",
              ring.sizes(), ", ", ring.scalar_type());
  TORCH_CHECK(S.dim() == 3 && S.size(0) >= 1, op, ": expected S of shape (P >= 1, ", B, ", ", D,
              "), got ", S.sizes());
  check_tell_tensor("S", S, x, {S.size(0), B, D}, true);
  check_tell_tensor("Y", Y, x, S.sizes(), true);
  check_tell_tensor("rho", rho, x, {S.size(0), B}, true);
  for (const auto& [t, name] :
       {std::pair<const at::Tensor&, const char*>{ints, "ints"}, {ring, "ring"}}) {
    TORCH_CHECK(t.device() == x.device(), op, ": expected ", name, " on ", x.device(), ", got ",
                t.device());
  }
}

// The settings cast to the run's dtype, and the buffers of lbfgs_tell's (checked) arguments;
// grad, grad_scale, f and ask_scale contiguous (the caller's copies).
template <typename T>
TellSettings<T> tell_settings(double c1, double c2, double lr, double tolerance_grad,
                              double tolerance_change, int64_t max_ls, int64_t max_iter,
                              int64_t max_eval, int64_t m, bool line_search, bool started) {
  return {T(c1),       T(-c2), T(lr),    T(tolerance_grad), T(tolerance_change),
          T(1e-10),    max_ls, max_iter, max_eval,          m,
          line_search, started};
}

template <typename T>
TellBuffers<T> tell_buffers(const at::Tensor& grad, const at::Tensor& grad_scale,
                            const at::Tensor& f, const at::Tensor& ask_scale, at::Tensor& real,
                            at::Tensor& ints, at::Tensor& ring, at::Tensor& x, at::Tensor& G,
                            at::Tensor& d, at::Tensor& lo_g, at::Tensor& g_prev, at::Tensor& trial,
                            at::Tensor& z, at::Tensor& S, at::Tensor& Y, at::Tensor& rho) {
  const bool scaled = ask_scale.numel() > 0;
  return {grad.const_data_ptr<T>(),
          grad_scale.numel() ? grad_scale.const_data_ptr<T>() : nullptr,
          f.const_data_ptr<T>(),
          scaled ? ask_scale.const_data_ptr<T>() : nullptr,
          real.mutable_data_ptr<T>(),
          ints.mutable_data_ptr<int64_t>(),
          ring.mutable_data_ptr<int64_t>(),
          x.mutable_data_ptr<T>(),
          G.mutable_data_ptr<T>(),
          d.mutable_data_ptr<T>(),
          lo_g.mutable_data_ptr<T>(),
          g_prev.mutable_data_ptr<T>(),
          trial.mutable_data_ptr<T>(),
          scaled ? z.mutable_data_ptr<T>() : nullptr,
          S.mutable_data_ptr<T>(),
          Y.mutable_data_ptr<T>(),
          rho.mutable_data_ptr<T>(),
          x.size(0),
          x.size(1),
          ring.size(1),
          S.size(0)};
}

}  // namespace pyinvert
