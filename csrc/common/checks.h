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
