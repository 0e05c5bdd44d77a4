#pragma once
// Argument checks of the Fields-of-Experts ops (foe_energy_grad, foe_param_grad), shared by the
// CPU and CUDA host functions; the Python wrapper (pyinvert/priors/foe_op.py) checks the same
// things with the same words first.
#include <torch/types.h>

#include <string>

#include "common/checks.h"
#include "common/foe_math.h"

namespace pyinvert {

struct FoeShape {
  int64_t B, C, H, W, n, k;
  int expert;
  // Positions of the valid correlation: (H - k + 1) x (W - k + 1), or none.
  int64_t Hp() const { return H >= k ? H - k + 1 : 0; }
  int64_t Wp() const { return W >= k ? W - k + 1 : 0; }
};

inline FoeShape check_foe_arguments(const at::Tensor& x, const at::Tensor& filters,
                                    const at::Tensor& alphas, const std::string& expert,
                                    const char* op) {
  check_image_batch(x, op);
  TORCH_CHECK(filters.dim() == 4 && filters.size(1) == x.size(1) &&
                  filters.size(2) == filters.size(3) && filters.size(2) >= 1,
              op, ": expected filters of shape (n, ", x.size(1), ", k, k) with k >= 1, got ",
              filters.sizes());
  check_same_device_dtype(filters, x, op, "filters");
  TORCH_CHECK(alphas.dim() == 1 && alphas.size(0) == filters.size(0), op,
              ": expected alphas of shape (", filters.size(0), ",), got ", alphas.sizes());
  check_same_device_dtype(alphas, x, op, "alphas");
  const int kind = foe::parse_expert(expert.c_str());
  TORCH_CHECK_VALUE(kind >= 0, op, ": expected expert 'student_t' or 'logcosh', got '", expert,
                    "'");
  return FoeShape{x.size(0),       x.size(1),       x.size(2), x.size(3),
                  filters.size(0), filters.size(2), kind};
}

}  // namespace pyinvert
