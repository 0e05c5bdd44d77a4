#pragma once
// Finiteness test of one value, shared by the CPU and CUDA drivers' input checks (a NaN or
// infinite pixel is refused with "<op>: expected finite pixel values, ..."; see checks.h).
#include <cmath>
#include <cstdint>
#include <limits>

#include "common/macros.h"

namespace pyinvert {

// False for NaN and +-Inf. On the host, |v| <= max is one comparison that GCC vectorizes
// (std::isfinite is a library call in some configurations); nvcc's isfinite is exact even
// under --use_fast_math, which does not assume finite values.
PYI_HOST_DEVICE bool is_finite(float v) {
#ifdef __CUDA_ARCH__
  return isfinite(v);
#else
  return std::fabs(v) <= std::numeric_limits<float>::max();
#endif
}
PYI_HOST_DEVICE bool is_finite(double v) {
#ifdef __CUDA_ARCH__
  return isfinite(v);
#else
  return std::fabs(v) <= std::numeric_limits<double>::max();
#endif
}

#ifndef __CUDACC__
// Whether all of p[0..n) are finite (host): a branch-free reduction the compiler vectorizes.
template <typename T>
inline bool all_finite(const T* p, int64_t n) {
  int bad = 0;
#pragma omp simd reduction(| : bad)
  for (int64_t i = 0; i < n; ++i) bad |= !is_finite(p[i]);
  return bad == 0;
}
#endif

}  // namespace pyinvert
