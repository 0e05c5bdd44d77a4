#pragma once
// Input checks shared by every op's host function. Messages start with the op name and say
// what was expected and what was given, e.g. "hog: expected x of shape (B, C, H, W), got [3, 224]".
// Checks of values (not shapes) raise ValueError in Python (TORCH_CHECK_VALUE).
#include <torch/types.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

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

// The lowest image index reported by the tasks of a parallel loop (or none): CPU drivers report
// an image with a non-finite pixel from the pass that reads it, and raise after the loop, so the
// error names the same image whatever the number of threads.
class FirstBadImage {
 public:
  void report(int64_t b) {
    int64_t current = first_.load(std::memory_order_relaxed);
    while (b < current && !first_.compare_exchange_weak(current, b, std::memory_order_relaxed)) {
    }
  }
  // -1 when nothing was reported.
  int64_t get() const {
    const int64_t v = first_.load(std::memory_order_relaxed);
    return v == std::numeric_limits<int64_t>::max() ? -1 : v;
  }

 private:
  std::atomic<int64_t> first_{std::numeric_limits<int64_t>::max()};
};

// Raises unless bad_image < 0: "<op>: expected finite pixel values, got NaN/Inf in image 2".
inline void check_finite_pixels(int64_t bad_image, const char* op) {
  TORCH_CHECK_VALUE(bad_image < 0, op, ": expected finite pixel values, got NaN/Inf in image ",
                    bad_image);
}

// A float argument that must be finite and above (or at least) a bound:
// "<op>: expected beta to be finite, got inf", "<op>: expected beta > 0, got -1".
inline void check_finite_scalar(double v, const char* op, const char* name, double bound,
                                bool allow_equal) {
  TORCH_CHECK_VALUE(std::isfinite(v), op, ": expected ", name, " to be finite, got ", v);
  TORCH_CHECK_VALUE(allow_equal ? v >= bound : v > bound, op, ": expected ", name,
                    allow_equal ? " >= " : " > ", bound, ", got ", v);
}

}  // namespace pyinvert

namespace pyinvert {

// Arguments of image_prior (also checked, with the same words, by the Python wrapper). The
// weights' values are checked too (finite and >= 0): on CUDA that copies the 2 B weights to the
// host (one synchronization per call).
inline void check_prior_arguments(const at::Tensor& x, const at::Tensor& tv_weight,
                                  const at::Tensor& norm_weight, double beta, double alpha,
                                  double eps) {
  const int64_t B = x.size(0);
  for (const auto& [w, name] : {std::pair<const at::Tensor&, const char*>{tv_weight, "tv_weight"},
                                {norm_weight, "norm_weight"}}) {
    TORCH_CHECK(w.dim() == 1 && w.size(0) == B, "image_prior: expected ", name, " of shape (", B,
                ",), got ", w.sizes());
    check_same_device_dtype(w, x, "image_prior", name);
  }
  check_finite_scalar(beta, "image_prior", "beta", 0, false);
  check_finite_scalar(alpha, "image_prior", "alpha", 0, false);
  check_finite_scalar(eps, "image_prior", "eps", 0, true);
  if (B == 0) return;
  const at::Tensor both = at::cat({tv_weight, norm_weight}).to(at::kCPU, at::kDouble).contiguous();
  const double* w = both.data_ptr<double>();
  for (int64_t i = 0; i < 2 * B; ++i) {
    const char* name = i < B ? "tv_weight" : "norm_weight";
    TORCH_CHECK_VALUE(std::isfinite(w[i]), "image_prior: expected ", name, " to be finite, got ",
                      w[i], " for image ", i % B);
    TORCH_CHECK_VALUE(w[i] >= 0, "image_prior: expected ", name, " >= 0, got ", w[i], " for image ",
                      i % B);
  }
}

}  // namespace pyinvert
