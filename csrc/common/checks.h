#pragma once
// Input checks shared by every op's host function. Messages start with the op name and say
// what was expected and what was given, e.g. "hog: expected x of shape (B, C, H, W), got [3, 224]".
#include <torch/types.h>

namespace pyinvert {

inline void check_image_batch(const at::Tensor& x, const char* op) {
  TORCH_CHECK(x.dim() == 4, op, ": expected x of shape (B, C, H, W), got ", x.sizes());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, op,
              ": expected x of dtype float32 or float64, got ", x.scalar_type());
}

inline void check_same_device_dtype(const at::Tensor& t, const at::Tensor& x, const char* op,
                                    const char* name) {
  TORCH_CHECK(t.device() == x.device(), op, ": expected ", name, " on ", x.device(), ", got ",
              t.device());
  TORCH_CHECK(t.scalar_type() == x.scalar_type(), op, ": expected ", name, " of dtype ",
              x.scalar_type(), ", got ", t.scalar_type());
}

}  // namespace pyinvert

namespace pyinvert {

// Arguments of image_prior (also checked, with the same words, by the Python wrapper).
inline void check_prior_arguments(const at::Tensor& x, const at::Tensor& tv_weight,
                                  const at::Tensor& norm_weight, double beta, double alpha,
                                  double eps) {
  const int64_t B = x.size(0);
  for (const auto& [w, name] : {std::pair<const at::Tensor&, const char*>{tv_weight, "tv_weight"},
                                {norm_weight, "norm_weight"}}) {
    TORCH_CHECK(w.dim() == 1 && w.size(0) == B, "image_prior: expected ", name, " of shape (",
                B, ",), got ", w.sizes());
    check_same_device_dtype(w, x, "image_prior", name);
  }
  TORCH_CHECK(beta > 0, "image_prior: expected beta > 0, got ", beta);
  TORCH_CHECK(alpha > 0, "image_prior: expected alpha > 0, got ", alpha);
  TORCH_CHECK(eps >= 0, "image_prior: expected eps >= 0, got ", eps);
}

}  // namespace pyinvert
