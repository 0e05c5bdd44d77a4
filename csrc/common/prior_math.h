#pragma once
// Per-pixel math of the image priors, shared by the CPU and CUDA drivers.
//
// Every term of both priors has the form  |v|^gamma = s^(gamma/2)  with s = |v|^2 (+ eps):
//   TV_beta:          s = dx^2 + dy^2 + eps,   gamma = beta
//   alpha-norm:       s = x^2,                 gamma = alpha
//   isotropic N_alpha: s = sum_c x_c^2,        gamma = alpha
// and its gradient is  d/dv s^(gamma/2) = gamma * s^(gamma/2 - 1) * v  =: slope * v.
// So one routine evaluates p = s^(gamma/2 - 1) and returns value = p * s and slope = gamma * p.
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

// value = s^(gamma/2), *slope = gamma * s^(gamma/2 - 1); both 0 where s == 0. NaN propagates.
template <int TWO_E, typename T>
PYI_HOST_DEVICE T power_term(T s, T gamma, T exponent, T* slope) {
  const T p = half_integer_power<TWO_E>(s, exponent);
  const bool zero = (s == T(0));
  *slope = zero ? T(0) : gamma * p;
  return zero ? T(0) : p * s;
}

// The same with the exponent kind chosen at run time (uniform across a CUDA launch, so the
// switch does not diverge).
template <typename T>
PYI_HOST_DEVICE T power_term_dynamic(int two_e, T s, T gamma, T exponent, T* slope) {
  switch (two_e) {
    case -1: return power_term<-1>(s, gamma, exponent, slope);
    case 0: return power_term<0>(s, gamma, exponent, slope);
    case 1: return power_term<1>(s, gamma, exponent, slope);
    case 2: return power_term<2>(s, gamma, exponent, slope);
    case 3: return power_term<3>(s, gamma, exponent, slope);
    case 4: return power_term<4>(s, gamma, exponent, slope);
    case 5: return power_term<5>(s, gamma, exponent, slope);
    case 6: return power_term<6>(s, gamma, exponent, slope);
    case 7: return power_term<7>(s, gamma, exponent, slope);
    case 8: return power_term<8>(s, gamma, exponent, slope);
    default: return power_term<kGeneralTwoE>(s, gamma, exponent, slope);
  }
}

// Forward differences at (i, j) of one H x W plane, replicated boundary (0 in the last
// column / row), as in the authors' TV code.
template <typename T>
PYI_HOST_DEVICE void forward_differences(const T* plane, int64_t i, int64_t j, int64_t H,
                                         int64_t W, T* dx, T* dy) {
  const T center = plane[i * W + j];
  *dx = (j + 1 < W) ? plane[i * W + j + 1] - center : T(0);
  *dy = (i + 1 < H) ? plane[(i + 1) * W + j] - center : T(0);
}

// The TV term at one pixel: returns (dx^2 + dy^2 + eps)^(beta/2) and the pixel's outgoing
// gradient weights slope*dx (to (i, j+1), minus to (i, j)) and slope*dy (to (i+1, j)).
template <int TWO_E, typename T>
PYI_HOST_DEVICE T tv_term(T dx, T dy, T eps, T beta, T exponent, T* slope_dx, T* slope_dy) {
  T slope;
  const T value = power_term<TWO_E>(dx * dx + dy * dy + eps, beta, exponent, &slope);
  *slope_dx = slope * dx;
  *slope_dy = slope * dy;
  return value;
}

}  // namespace pyinvert
