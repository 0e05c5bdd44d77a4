// The row loops of the CPU image prior (cpu/image_prior_kernel.cpp), included twice: for the
// x86-64 baseline and with AVX2+FMA (PYI_PRIOR_TARGET), the one picked at run time from the
// CPU's features (cpu/simd.h: cpu_has_avx2_fma). No include guard: each inclusion is inside its
// own namespace.

// slope*dx and slope*dy of one row of the TV term; returns the row's sum of TV values.
// `below` is the next row, or nullptr for the last row (dy = 0 there).
template <int TWO_E, typename T>
PYI_PRIOR_TARGET T tv_row(const T* row, const T* below, int64_t W, T eps, T beta, T exponent,
                          T* sdx, T* sdy) {
  T sum = 0;
  if (W == 0) return sum;
  // Column W-1 has dx = 0; `below` == nullptr (last row) has dy = 0.
#define PYI_TV_PIXEL(J, DX, DY)                                \
  {                                                            \
    const T dx = (DX), dy = (DY), s = dx * dx + dy * dy + eps; \
    const T p = power_factor<TWO_E>(s, exponent);              \
    sum += p * s;                                              \
    sdx[J] = beta * p * dx;                                    \
    sdy[J] = beta * p * dy;                                    \
  }
  if (below != nullptr) {
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < W - 1; ++j) PYI_TV_PIXEL(j, row[j + 1] - row[j], below[j] - row[j])
    PYI_TV_PIXEL(W - 1, T(0), below[W - 1] - row[W - 1])
  } else {
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < W - 1; ++j) PYI_TV_PIXEL(j, row[j + 1] - row[j], T(0))
    PYI_TV_PIXEL(W - 1, T(0), T(0))
  }
#undef PYI_TV_PIXEL
  return sum;
}

// Gradient of TV at one row: each pixel gathers what it sends (-slope*(dx+dy)) and what its
// left neighbour (slope*dx) and upper neighbour (slope*dy, previous row) send to it.
template <typename T>
PYI_PRIOR_TARGET void tv_grad_row(const T* sdx, const T* sdy, const T* sdy_above, int64_t W,
                                  T weight, T* g) {
  if (W == 0) return;
  g[0] = weight * (sdy_above[0] - sdx[0] - sdy[0]);
#pragma omp simd
  for (int64_t j = 1; j < W; ++j) {
    g[j] = weight * (sdx[j - 1] + sdy_above[j] - sdx[j] - sdy[j]);
  }
}

// The elementwise alpha-norm on one row: sum of |x|^alpha; adds weight*d/dx to g if g != null.
template <int TWO_E, typename T>
PYI_PRIOR_TARGET T norm_row(const T* x, int64_t W, T alpha, T exponent, T weight, T* g) {
  T sum = 0;
  if (g != nullptr) {
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < W; ++j) {
      const T s = x[j] * x[j], p = power_factor<TWO_E>(s, exponent);
      sum += p * s;
      g[j] += weight * alpha * p * x[j];
    }
  } else {
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < W; ++j) {
      const T s = x[j] * x[j];
      sum += power_factor<TWO_E>(s, exponent) * s;
    }
  }
  return sum;
}

// The isotropic N_alpha on one row of all C channels (pixel offset 0 of channel c at
// x + c * plane): sum over pixels of (sum_c x_c^2)^(alpha/2); adds the gradient if g != null.
template <int TWO_E, typename T>
PYI_PRIOR_TARGET T isotropic_row(const T* x, int64_t C, int64_t plane, int64_t W, T alpha,
                                 T exponent, T weight, T* g, T* scratch) {
  T* s = scratch;
  for (int64_t j = 0; j < W; ++j) s[j] = 0;
  for (int64_t c = 0; c < C; ++c) {
    const T* xc = x + c * plane;
#pragma omp simd
    for (int64_t j = 0; j < W; ++j) s[j] += xc[j] * xc[j];
  }
  T sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < W; ++j) {
    const T p = power_factor<TWO_E>(s[j], exponent);
    sum += p * s[j];
    s[j] = weight * alpha * p;  // reuse: the per-pixel factor of the gradient
  }
  if (g != nullptr) {
    for (int64_t c = 0; c < C; ++c) {
      const T* xc = x + c * plane;
      T* gc = g + c * plane;
#pragma omp simd
      for (int64_t j = 0; j < W; ++j) gc[j] += s[j] * xc[j];
    }
  }
  return sum;
}
