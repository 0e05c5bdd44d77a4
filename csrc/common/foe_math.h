#pragma once
// Per-position math of the Fields-of-Experts energy, shared by the CPU and CUDA drivers.
//
// For one filter response s = <filter_i, patch> the experts are
//   student_t:  rho(s) = log(1 + s^2/2)   rho'(s) = 2s/(2+s^2)   rho''(s) = (4-2s^2)/(2+s^2)^2
//               (Roth & Black 2005), computed from u = s^2/2 and inv = 1/(1+u):
//               rho = log1p(u), rho' = s*inv, rho'' = (1-u)*inv^2 = (2*inv - 1)*inv
//               (the last form is finite even where u overflows to inf);
//   logcosh:    rho(s) = log cosh(s)  rho' = tanh(s)  rho'' = 1 - tanh(s)^2   (Hyvarinen), from
//               e = exp(-2|s|) in (0, 1] and inv = 1/(1+e):
//               rho = |s| + log1p(e) - log 2, rho' = sign(s) (1-e)*inv, rho'' = 4 e inv^2
//               (no overflow for any s, no cancellation in rho'' for large |s|).
// Each expert is a struct of static functions of (s, aux, inv): `aux` and `inv` are computed
// once and shared by rho, rho' and rho''. Plain scalars in and out, branch-free, no library call
// on the CPU float path: a CPU `omp simd` loop over positions that calls them vectorizes.
//
// On the host, float log1p and exp are the polynomials below (this file's own least-squares
// fits; relative error < 1.2e-7 on their domains), because glibc's are library calls that stop
// vectorization; double uses std::log1p / std::exp (the double path is scalar and exact to
// libm's accuracy). On the device, CUDA's log1p / exp.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

// Always inlined on the host too: the CPU drivers call these from `omp simd` loops inside
// target_clones functions, where GCC's size heuristics would otherwise leave a call (and a
// scalar loop).
#ifdef __CUDACC__
#define PYI_FOE_INLINE __host__ __device__ __forceinline__
#else
#define PYI_FOE_INLINE inline __attribute__((always_inline))
#endif

namespace pyinvert {
namespace foe {

enum Expert : int { kStudentT = 0, kLogCosh = 1 };

#ifndef __CUDA_ARCH__
// Bit casts that GCC vectorizes in `omp simd` loops (std::memcpy into a local does not).
PYI_FOE_INLINE int32_t float_bits(float v) { return __builtin_bit_cast(int32_t, v); }
PYI_FOE_INLINE float bits_float(int32_t i) { return __builtin_bit_cast(float, i); }

// log1p(u) for u >= 0 (or +inf / NaN), given inv = 1 / (1 + u). y = 1 + u is split into
// 2^e * m with m in [sqrt(1/2), sqrt(2)); log(m) = f - f^2/2 + f^3 P(f), f = m - 1 (exact);
// the rounding of 1 + u is corrected by (u - (y - 1)) / y.
PYI_FOE_INLINE float host_log1p(float u, float inv) {
  const float y = 1.0f + u;
  const int32_t bits = float_bits(y);
  int32_t e = ((bits >> 23) & 0xff) - 127;
  float m = bits_float((bits & 0x007fffff) | 0x3f800000);  // [1, 2)
  const bool high = m > 1.41421356f;
  m = high ? 0.5f * m : m;
  e = high ? e + 1 : e;
  const float f = m - 1.0f, z = f * f;
  float p = -0.07362981140613556f;
  p = p * f + 0.12620490789413452f;
  p = p * f - 0.13202142715454102f;
  p = p * f + 0.14227096736431122f;
  p = p * f - 0.16621364653110504f;
  p = p * f + 0.19999827444553375f;
  p = p * f - 0.2500085234642029f;
  p = p * f + 0.3333335518836975f;
  const float ef = static_cast<float>(e);
  const float correction = (u - (y - 1.0f)) * inv;
  // ln 2 = 0.693359375 - 2.12194440e-4 (the first part has few bits: e * it is exact).
  const float r =
      (f + (-0.5f * z + z * f * p + (ef * -2.12194440e-4f + correction))) + ef * 0.693359375f;
  return y <= std::numeric_limits<float>::max() ? r : y;  // +inf and NaN pass through
}
PYI_FOE_INLINE double host_log1p(double u, double /*inv*/) { return std::log1p(u); }

// exp(a) for a <= 0 (or NaN): 2^n * exp(r), n = nearest integer to a / ln 2, |r| <= ln2 / 2;
// exp(r) = 1 + r + r^2 Q(r). Below -87 (where exp underflows to subnormals) a is clamped: the
// result is ~1e-38 instead of smaller, which changes none of the experts' values.
PYI_FOE_INLINE float host_exp_nonpositive(float a) {
  const float c = a < -87.0f ? -87.0f : a;  // NaN stays NaN (the comparison is false)
  const float t = c * 1.44269504f - 0.5f;
  const int32_t n = static_cast<int32_t>(t);  // truncation = ceil for t <= 0: n in (t, t + 1]
  const float nf = static_cast<float>(n);
  const float r = (c - nf * 0.693359375f) - nf * -2.12194440e-4f;
  float q = 0.0013748822966590524f;
  q = q * r + 0.008369631133973598f;
  q = q * r + 0.04166964814066887f;
  q = q * r + 0.16666512191295624f;
  q = q * r + 0.49999988079071045f;
  const float er = 1.0f + (r + r * r * q);
  const float scale = bits_float((n + 127) << 23);
  return er * scale;  // NaN in, NaN out (through r)
}
PYI_FOE_INLINE double host_exp_nonpositive(double a) { return std::exp(a); }
#endif

template <typename T>
PYI_FOE_INLINE T log1p_nonnegative(T u, T inv) {
#ifdef __CUDA_ARCH__
  (void)inv;
  return log1p(u);
#else
  return host_log1p(u, inv);
#endif
}

template <typename T>
PYI_FOE_INLINE T exp_nonpositive(T a) {
#ifdef __CUDA_ARCH__
  return exp(a);
#else
  return host_exp_nonpositive(a);
#endif
}

// Student-t expert (Roth & Black 2005): aux = s^2 / 2.
struct StudentT {
  template <typename T>
  PYI_FOE_INLINE static T aux(T s) {
    return T(0.5) * s * s;
  }
  template <typename T>
  PYI_FOE_INLINE static T inv(T /*s*/, T u) {
    return T(1) / (T(1) + u);
  }
  template <typename T>
  PYI_FOE_INLINE static T rho(T /*s*/, T u, T inv) {
    return log1p_nonnegative(u, inv);
  }
  template <typename T>
  PYI_FOE_INLINE static T d1(T s, T /*u*/, T inv) {
    return s * inv;
  }
  template <typename T>
  PYI_FOE_INLINE static T d2(T /*s*/, T /*u*/, T inv) {
    return (T(2) * inv - T(1)) * inv;
  }
};

// log cosh expert (ICA, Hyvarinen): aux = exp(-2|s|).
struct LogCosh {
  template <typename T>
  PYI_FOE_INLINE static T aux(T s) {
    return exp_nonpositive(T(-2) * (s < T(0) ? -s : s));
  }
  template <typename T>
  PYI_FOE_INLINE static T inv(T /*s*/, T e) {
    return T(1) / (T(1) + e);
  }
  template <typename T>
  PYI_FOE_INLINE static T rho(T s, T e, T inv) {
    return ((s < T(0) ? -s : s) - T(0.69314718055994530942)) + log1p_nonnegative(e, inv);
  }
  template <typename T>
  PYI_FOE_INLINE static T d1(T s, T e, T inv) {
    const T t = (T(1) - e) * inv;  // NaN in, NaN out (through e)
    return s < T(0) ? -t : t;
  }
  template <typename T>
  PYI_FOE_INLINE static T d2(T /*s*/, T e, T inv) {
    return T(4) * e * inv * inv;
  }
};

// The response <filter, patch> of one position: `patch` points at the patch's top-left pixel
// of channel 0 in an image of row stride `row` and channel stride `plane`; `filter` is one
// expert's C x k x k taps, contiguous.
template <typename T>
PYI_FOE_INLINE T patch_response(const T* filter, const T* patch, int64_t C, int64_t k, int64_t row,
                                int64_t plane) {
  T r = 0;
  for (int64_t c = 0; c < C; ++c) {
    for (int64_t dy = 0; dy < k; ++dy) {
      const T* f = filter + (c * k + dy) * k;
      const T* p = patch + c * plane + dy * row;
      for (int64_t dx = 0; dx < k; ++dx) r += f[dx] * p[dx];
    }
  }
  return r;
}

// Expert names as the op's `expert` argument spells them; -1 for an unknown one.
inline int parse_expert(const char* name) {
  if (std::strcmp(name, "student_t") == 0) return kStudentT;
  if (std::strcmp(name, "logcosh") == 0) return kLogCosh;
  return -1;
}

}  // namespace foe
}  // namespace pyinvert
