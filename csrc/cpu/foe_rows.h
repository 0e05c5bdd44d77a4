// The row loops of csrc/cpu/foe_kernel.cpp, included there twice inside a namespace (base,
// avx2) with PYI_FOE_TARGET set to nothing or to target("avx2,fma"). No include guard, on
// purpose; no includes (foe_kernel.cpp includes what these need first).
// NOLINTBEGIN

struct Rows {
  // out[j] (+)= sum_{d < k} f[d] * in[j + d] for j < n. K: k as a constant (0: run time).
  template <int K, typename T>
  PYI_FOE_TARGET static void taps_row(T* __restrict__ out, const T* __restrict__ in,
                                      const T* __restrict__ f, int64_t n, int64_t k, bool assign) {
    if constexpr (K > 0) {
      T w[K];
      for (int d = 0; d < K; ++d) w[d] = f[d];
      if (assign) {
#pragma omp simd
        for (int64_t j = 0; j < n; ++j) {
          T acc = 0;
#pragma GCC unroll 8
          for (int d = 0; d < K; ++d) acc += w[d] * in[j + d];
          out[j] = acc;
        }
      } else {
#pragma omp simd
        for (int64_t j = 0; j < n; ++j) {
          T acc = out[j];
#pragma GCC unroll 8
          for (int d = 0; d < K; ++d) acc += w[d] * in[j + d];
          out[j] = acc;
        }
      }
    } else {
      if (assign) std::fill(out, out + n, T(0));
      for (int64_t d = 0; d < k; ++d) {
        const T w = f[d];
        const T* src = in + d;
#pragma omp simd
        for (int64_t j = 0; j < n; ++j) out[j] += w * src[j];
      }
    }
  }

  // From a row of responses r[0, n): psi[j] = alpha * rho'(r[j]); adds to *energy and
  // *laplacian the row's sums of alpha * rho(r) and lap_weight * rho''(r). r is overwritten
  // (with rho(r)) and scratch[0, n) too: summing in separate loops, not in an omp simd
  // reduction, is what GCC 12 vectorizes here (the reduction version stays scalar in this file).
  template <typename E, typename T>
  PYI_FOE_TARGET static void expert_row(T* __restrict__ r, int64_t n, T alpha, T lap_weight,
                                        T* __restrict__ psi, T* __restrict__ scratch,
                                        double* energy, double* laplacian) {
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) {
      const T s = r[j];
      const T aux = E::aux(s);
      const T inv = E::inv(s, aux);
      psi[j] = alpha * E::d1(s, aux, inv);
      scratch[j] = E::d2(s, aux, inv);
      r[j] = E::rho(s, aux, inv);
    }
    T es = 0, ls = 0;
#pragma omp simd reduction(+ : es, ls)
    for (int64_t j = 0; j < n; ++j) {
      es += r[j];
      ls += scratch[j];
    }
    *energy += double(alpha) * double(es);
    *laplacian += double(lap_weight) * double(ls);
  }

  // sums[d] += sum_j a[j] * b[j + d] for d < k.
  template <int K, typename T>
  PYI_FOE_TARGET static void dot_taps(const T* __restrict__ a, const T* __restrict__ b, int64_t n,
                                      int64_t k, double* sums) {
    if constexpr (K > 0) {
      T s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0;
      static_assert(K <= 7, "dot_taps: K <= 7");
#pragma omp simd reduction(+ : s0, s1, s2, s3, s4, s5, s6)
      for (int64_t j = 0; j < n; ++j) {
        const T v = a[j];
        s0 += v * b[j];
        if constexpr (K > 1) s1 += v * b[j + 1];
        if constexpr (K > 2) s2 += v * b[j + 2];
        if constexpr (K > 3) s3 += v * b[j + 3];
        if constexpr (K > 4) s4 += v * b[j + 4];
        if constexpr (K > 5) s5 += v * b[j + 5];
        if constexpr (K > 6) s6 += v * b[j + 6];
      }
      const T s[7] = {s0, s1, s2, s3, s4, s5, s6};
      for (int d = 0; d < K; ++d) sums[d] += double(s[d]);
    } else {
      for (int64_t d = 0; d < k; ++d) {
        T s = 0;
        const T* src = b + d;
#pragma omp simd reduction(+ : s)
        for (int64_t j = 0; j < n; ++j) s += a[j] * src[j];
        sums[d] += double(s);
      }
    }
  }
};

// NOLINTEND
