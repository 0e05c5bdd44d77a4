// Correctly rounded arithmetic shared by the HOG and DSIFT math: on the device these are the
// _rn intrinsics, so nvcc can neither contract a*b + c into one FMA rounding nor use fast-math
// approximations; VLFeat's float results (our reference) round every operation. On the host the
// plain operators round each operation too: the HOG and DSIFT kernels are built for baseline
// x86-64 (no FMA instructions to contract into), their AVX2 clones without FMA
// (cpu/simd.h: PYI_CLONES_EXACT), and never with -ffast-math.
#pragma once

#include <cmath>

#include "common/macros.h"

namespace pyinvert {

PYI_HOST_DEVICE float rn_add(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
PYI_HOST_DEVICE double rn_add(double a, double b) {
#ifdef __CUDA_ARCH__
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}
PYI_HOST_DEVICE float rn_sub(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
PYI_HOST_DEVICE double rn_sub(double a, double b) {
#ifdef __CUDA_ARCH__
  return __dsub_rn(a, b);
#else
  return a - b;
#endif
}
PYI_HOST_DEVICE float rn_mul(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
PYI_HOST_DEVICE double rn_mul(double a, double b) {
#ifdef __CUDA_ARCH__
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}
PYI_HOST_DEVICE float rn_div(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}
PYI_HOST_DEVICE double rn_div(double a, double b) {
#ifdef __CUDA_ARCH__
  return __ddiv_rn(a, b);
#else
  return a / b;
#endif
}
PYI_HOST_DEVICE float rn_sqrt(float a) {
#ifdef __CUDA_ARCH__
  return __fsqrt_rn(a);
#else
  return std::sqrt(a);
#endif
}
PYI_HOST_DEVICE double rn_sqrt(double a) {
#ifdef __CUDA_ARCH__
  return __dsqrt_rn(a);
#else
  return std::sqrt(a);
#endif
}

}  // namespace pyinvert
