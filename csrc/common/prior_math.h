#pragma once
// Per-pixel math of the image priors, shared by the CPU and CUDA drivers.
//
// Every term of both priors has the form  |v|^gamma = s^(gamma/2)  with s = |v|^2 (+ eps):
//   TV_beta:          s = dx^2 + dy^2 + eps,   gamma = beta
//   alpha-norm:       s = x^2,                 gamma = alpha
//   isotropic N_alpha: s = sum_c x_c^2,        gamma = alpha
// and its gradient is  d/dv s^(gamma/2) = gamma * s^(gamma/2 - 1) * v  =: slope * v.
// So one routine evaluates p = s^(gamma/2 - 1), giving value = p * s and slope = gamma * p.
// Where s == 0 the value is 0 and, following the rule for undefined derivatives, the
// slope is 0 too (for gamma > 2 it is 0 anyway; for gamma <= 2 the true slope is +inf or 2).
#include <cmath>

#include "common/macros.h"

namespace pyinvert {

// Exponents 2*(gamma/2 - 1) = gamma - 2 that are small integers get multiplications and at most
// one sqrt, which is ~10x cheaper than std::pow and vectorizes; others use std::pow.
constexpr int kMinTwoE = -1;
constexpr int kMaxTwoE = 8;
constexpr int kGeneralTwoE = 1000;

// gamma - 2 as a small integer in [kMinTwoE, kMaxTwoE], or kGeneralTwoE.
inline int classify_exponent(double gamma) {
  const double two_e = gamma - 2.0;
  const double rounded = std::round(two_e);
  if (rounded == two_e && rounded >= kMinTwoE && rounded <= kMaxTwoE) {
    return static_cast<int>(rounded);
  }
  return kGeneralTwoE;
}

// s^(TWO_E / 2) for s > 0; `exponent` (= TWO_E / 2) is used only by the general kind.
template <int TWO_E, typename T>
PYI_HOST_DEVICE T half_integer_power(T s, T exponent) {
  if constexpr (TWO_E == kGeneralTwoE) {
    return std::pow(s, exponent);
  } else {
    constexpr int whole = (TWO_E >= 0) ? TWO_E / 2 : -((1 - TWO_E) / 2);  // floor(TWO_E / 2)
    constexpr int count = whole >= 0 ? whole : -whole;
    T r = T(1);
    for (int k = 0; k < count; ++k) r *= s;
    if constexpr (whole < 0) r = T(1) / r;
    if constexpr (TWO_E - 2 * whole == 1) r *= std::sqrt(s);
    return r;
  }
}

// p = s^(gamma/2 - 1), or 0 where s == 0 (NaN propagates). Callers form the term's value p*s
// and its slope gamma*p (so d/dv s^(gamma/2) = gamma*p*v). Plain scalars in and out: a struct
// or address-taken local in a CPU `omp simd` loop stops GCC from vectorizing it.
template <int TWO_E, typename T>
PYI_HOST_DEVICE T power_factor(T s, T exponent) {
  if constexpr (TWO_E >= 0 && TWO_E != kGeneralTwoE) {
    // gamma >= 2: p is finite at s == 0, where the value p*s is 0 and the gradient slope*v is 0
    // because v = 0 there. No test needed, which keeps the CPU loops branch-free (vectorized).
    return half_integer_power<TWO_E>(s, exponent);
  } else {
    return s == T(0) ? T(0) : half_integer_power<TWO_E>(s, exponent);
  }
}
// The same with the exponent kind chosen at run time (uniform across a CUDA launch, so the
// switch does not diverge).
template <typename T>
PYI_HOST_DEVICE T power_factor_dynamic(int two_e, T s, T exponent) {
  switch (two_e) {
    case -1:
      return power_factor<-1>(s, exponent);
    case 0:
      return power_factor<0>(s, exponent);
    case 1:
      return power_factor<1>(s, exponent);
    case 2:
      return power_factor<2>(s, exponent);
    case 3:
      return power_factor<3>(s, exponent);
    case 4:
      return power_factor<4>(s, exponent);
    case 5:
      return power_factor<5>(s, exponent);
    case 6:
      return power_factor<6>(s, exponent);
    case 7:
      return power_factor<7>(s, exponent);
    case 8:
      return power_factor<8>(s, exponent);
    default:
      return power_factor<kGeneralTwoE>(s, exponent);
  }
}

// Forward differences at (i, j) of one H x W plane, replicated boundary (0 in the last
// column / row), as in the authors' TV code.
template <typename T>
PYI_HOST_DEVICE void forward_differences(const T* plane, int64_t i, int64_t j, int64_t H, int64_t W,
                                         T* dx, T* dy) {
  const T center = plane[i * W + j];
  *dx = (j + 1 < W) ? plane[i * W + j + 1] - center : T(0);
  *dy = (i + 1 < H) ? plane[(i + 1) * W + j] - center : T(0);
}

}  // namespace pyinvert
