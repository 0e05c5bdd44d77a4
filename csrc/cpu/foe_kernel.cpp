// CPU driver of the Fields-of-Experts ops: energy, grad_x (and the score-matching Laplacian) in
// one pass over the image, and the gradients with respect to the filters and alphas.
//
// foe_energy_grad works in tasks of (image, strip of kRowsPerTask image rows), visiting the
// strip's rows top to bottom. For image row y it
//   1. computes the n responses of position row p = y (if it is a valid position row) into an
//      n x W' row buffer (L1-sized: 24 experts x 220 positions x 4 bytes = 21 KB),
//   2. turns them into psi_i = alpha_i rho'(r_i) (and adds alpha_i rho(r_i) to the energy and
//      alpha_i ||f_i||^2 rho''(r_i) to the Laplacian) in a ring of the last k psi rows,
//   3. gathers grad_x(y) = sum_i sum_{dy,dx} f_i(dy, dx) psi_i(y - dy, x - dx) from the ring.
// So responses never leave a row buffer, each output pixel is written exactly once by one task
// (gather: no atomics, no races), and x is read once plus the strip's halo. The gather needs the
// psi rows of the k-1 position rows above the strip: each task recomputes them first (k-1 of
// ~32+k-1 rows, ~12% extra response work for k = 5), which is what keeps the tasks independent.
// Energy and Laplacian sums are kept per task in double and added in task order: the results do
// not depend on the number of threads.
//
// Every inner loop is a contiguous row loop (omp simd) with the k taps of one filter row
// unrolled (k a template constant for 3, 5, 7; a run-time loop otherwise): one load and store of
// the accumulator row per k FMAs. The nonlinearities (csrc/common/foe_math.h) are branch-free
// and vectorize too, float's log1p and exp being polynomials (double calls libm).
//
// foe_param_grad uses the same tasks over position rows and, per position row, the responses
// and rho' of step 1-2 (without alpha), then accumulates dot products of psi rows with the
// patches' pixel rows into per-task partial sums (double), added in task order.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <string>
#include <tuple>
#include <vector>

// The expert's functions (float log1p / exp polynomials with selects and a float-to-int
// conversion) are only if-converted, hence vectorized, by GCC 12 when it may assume that
// floating-point operations do not trap; this changes no value (only FP exception flags, which
// nothing here reads). Without it the nonlinearity loop stays scalar (measured: 3x slower).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif

#include "common/foe_checks.h"
#include "common/foe_math.h"
#include "cpu/output_cache.h"
#include "cpu/simd.h"

namespace pyinvert {
namespace {

constexpr int64_t kRowsPerTask = 32;

// The row loops, compiled twice (cpu/foe_rows.h): for the x86-64 baseline and with AVX2+FMA,
// picked at run time from the CPU's features (cpu/simd.h: cpu_has_avx2_fma; measured here: the
// baseline is 3x slower for this op).
namespace base {
#define PYI_FOE_TARGET
#include "cpu/foe_rows.h"
#undef PYI_FOE_TARGET
}  // namespace base
#if PYI_HAS_AVX2_FMA_TARGET
namespace avx2 {
#define PYI_FOE_TARGET __attribute__((target("avx2,fma")))
#include "cpu/foe_rows.h"
#undef PYI_FOE_TARGET
}  // namespace avx2
#else
namespace avx2 = base;
#endif

struct Geometry {
  int64_t B, C, H, W, n, k, Hp, Wp, plane, image, taps;
};

Geometry geometry(const FoeShape& s) {
  return Geometry{
      s.B, s.C, s.H, s.W, s.n, s.k, s.Hp(), s.Wp(), s.H * s.W, s.C * s.H * s.W, s.C * s.k * s.k};
}

// Responses of all n experts at position row p of image xb into rows[i * Wp + j].
template <typename R, int K, typename T>
void response_rows(const T* xb, const T* filters, const Geometry& g, int64_t p, T* rows) {
  for (int64_t i = 0; i < g.n; ++i) {
    T* r = rows + i * g.Wp;
    for (int64_t c = 0; c < g.C; ++c) {
      for (int64_t dy = 0; dy < g.k; ++dy) {
        const T* f = filters + ((i * g.C + c) * g.k + dy) * g.k;
        R::template taps_row<K>(r, xb + c * g.plane + (p + dy) * g.W, f, g.Wp, g.k,
                                c == 0 && dy == 0);
      }
    }
  }
}

template <typename R, typename E, int K, typename T>
void energy_grad_impl(const T* x, const T* filters, const T* alphas, const Geometry& g, T* energy,
                      T* grad, T* laplacian) {
  const int64_t blocks = (g.H + kRowsPerTask - 1) / kRowsPerTask;
  // Filters flipped in both directions (for the gather) and alpha_i ||f_i||^2.
  std::vector<T> flipped(g.n * g.taps), lap_weight(g.n);
  for (int64_t i = 0; i < g.n; ++i) {
    double norm = 0;
    for (int64_t t = 0; t < g.taps; ++t) {
      const T v = filters[i * g.taps + t];
      norm += double(v) * double(v);
      const int64_t c = t / (g.k * g.k), dy = (t / g.k) % g.k, dx = t % g.k;
      flipped[i * g.taps + (c * g.k + dy) * g.k + (g.k - 1 - dx)] = v;
    }
    lap_weight[i] = T(double(alphas[i]) * norm);
  }
  // psi rows padded with k-1 zeros on both sides: the gather reads psi(x - dx) for x < W.
  const int64_t padded = g.W + g.k - 1;
  std::vector<double> partial_energy(g.B * blocks, 0.0), partial_lap(g.B * blocks, 0.0);

  at::parallel_for(0, g.B * blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> rows(g.n * g.Wp), scratch(g.Wp);
    std::vector<T> ring(g.k * g.n * padded, T(0));
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / blocks;
      const int64_t y0 = (task % blocks) * kRowsPerTask;
      const int64_t y1 = std::min(y0 + kRowsPerTask, g.H);
      const T* xb = x + b * g.image;
      T* gb = grad + b * g.image;
      double es = 0, ls = 0, halo_e = 0, halo_l = 0;
      // Position row p -> ring slot p % k, its psi rows at offset k - 1 of each padded row.
      auto psi_row = [&](int64_t p, double* e_sum, double* l_sum) {
        response_rows<R, K>(xb, filters, g, p, rows.data());
        T* slot = ring.data() + (p % g.k) * g.n * padded;
        for (int64_t i = 0; i < g.n; ++i) {
          R::template expert_row<E>(rows.data() + i * g.Wp, g.Wp, alphas[i], lap_weight[i],
                                    slot + i * padded + g.k - 1, scratch.data(), e_sum, l_sum);
        }
      };
      for (int64_t p = std::max<int64_t>(0, y0 - g.k + 1); p < std::min(y0, g.Hp); ++p) {
        psi_row(p, &halo_e, &halo_l);  // the halo: needed for the gather only
      }
      for (int64_t y = y0; y < y1; ++y) {
        if (y < g.Hp) psi_row(y, &es, &ls);
        for (int64_t c = 0; c < g.C; ++c) {
          T* out = gb + c * g.plane + y * g.W;
          bool first = true;
          for (int64_t dy = 0; dy < g.k; ++dy) {
            const int64_t p = y - dy;
            if (p < 0 || p >= g.Hp) continue;
            const T* slot = ring.data() + (p % g.k) * g.n * padded;
            for (int64_t i = 0; i < g.n; ++i) {
              const T* f = flipped.data() + ((i * g.C + c) * g.k + dy) * g.k;
              R::template taps_row<K>(out, slot + i * padded, f, g.W, g.k, first);
              first = false;
            }
          }
          if (first) std::fill(out, out + g.W, T(0));  // no position covers this row
        }
      }
      partial_energy[task] = es;
      partial_lap[task] = ls;
    }
  });
  for (int64_t b = 0; b < g.B; ++b) {
    double e = 0, l = 0;
    for (int64_t t = 0; t < blocks; ++t) {
      e += partial_energy[b * blocks + t];
      l += partial_lap[b * blocks + t];
    }
    energy[b] = T(e);
    if (laplacian) laplacian[b] = T(l);
  }
}

template <typename R, typename E, int K, typename T>
void param_grad_impl(const T* x, const T* filters, const T* alphas, const T* grad_energy,
                     const Geometry& g, T* grad_filters, T* grad_alphas) {
  const int64_t blocks = (g.Hp + kRowsPerTask - 1) / kRowsPerTask;
  const int64_t per_task = g.n * g.taps + g.n;
  std::vector<double> partial(g.B * blocks * per_task, 0.0);

  at::parallel_for(0, g.B * blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> rows(g.n * g.Wp), psi(g.n * g.Wp), scratch(g.Wp);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / blocks;
      if (grad_energy[b] == T(0)) continue;
      const int64_t p0 = (task % blocks) * kRowsPerTask;
      const int64_t p1 = std::min(p0 + kRowsPerTask, g.Hp);
      const T* xb = x + b * g.image;
      double* gf = partial.data() + task * per_task;
      double* ga = gf + g.n * g.taps;
      for (int64_t p = p0; p < p1; ++p) {
        response_rows<R, K>(xb, filters, g, p, rows.data());
        for (int64_t i = 0; i < g.n; ++i) {
          double unused = 0;
          // alpha = 1: psi = rho'(r), ga += sum rho(r).
          R::template expert_row<E>(rows.data() + i * g.Wp, g.Wp, T(1), T(0), psi.data() + i * g.Wp,
                                    scratch.data(), ga + i, &unused);
        }
        for (int64_t i = 0; i < g.n; ++i) {
          for (int64_t c = 0; c < g.C; ++c) {
            for (int64_t dy = 0; dy < g.k; ++dy) {
              R::template dot_taps<K>(psi.data() + i * g.Wp, xb + c * g.plane + (p + dy) * g.W,
                                      g.Wp, g.k, gf + ((i * g.C + c) * g.k + dy) * g.k);
            }
          }
        }
      }
    }
  });
  std::vector<double> gf(g.n * g.taps, 0.0), ga(g.n, 0.0);
  for (int64_t b = 0; b < g.B; ++b) {
    const double scale = double(grad_energy[b]);
    if (scale == 0) continue;
    for (int64_t t = 0; t < blocks; ++t) {
      const double* part = partial.data() + (b * blocks + t) * per_task;
      for (int64_t q = 0; q < g.n * g.taps; ++q) gf[q] += scale * part[q];
      for (int64_t i = 0; i < g.n; ++i) ga[i] += scale * part[g.n * g.taps + i];
    }
  }
  for (int64_t i = 0; i < g.n; ++i) {
    grad_alphas[i] = T(ga[i]);
    for (int64_t t = 0; t < g.taps; ++t) {
      grad_filters[i * g.taps + t] = T(double(alphas[i]) * gf[i * g.taps + t]);
    }
  }
}

// The instance of IMPL for the CPU's row loops, the run-time expert and the filter size (k a
// constant for 3, 5, 7).
#define PYI_FOE_DISPATCH(expert, k, IMPL, ...)                      \
  [&] {                                                             \
    if (cpu_has_avx2_fma()) {                                       \
      PYI_FOE_DISPATCH_E(avx2::Rows, expert, k, IMPL, __VA_ARGS__); \
    } else {                                                        \
      PYI_FOE_DISPATCH_E(base::Rows, expert, k, IMPL, __VA_ARGS__); \
    }                                                               \
  }()
#define PYI_FOE_DISPATCH_E(R, expert, k, IMPL, ...)             \
  if ((expert) == foe::kStudentT) {                             \
    PYI_FOE_DISPATCH_K(R, foe::StudentT, k, IMPL, __VA_ARGS__); \
  } else {                                                      \
    PYI_FOE_DISPATCH_K(R, foe::LogCosh, k, IMPL, __VA_ARGS__);  \
  }
#define PYI_FOE_DISPATCH_K(R, E, k, IMPL, ...) \
  switch (k) {                                 \
    case 3:                                    \
      IMPL<R, E, 3, scalar_t>(__VA_ARGS__);    \
      break;                                   \
    case 5:                                    \
      IMPL<R, E, 5, scalar_t>(__VA_ARGS__);    \
      break;                                   \
    case 7:                                    \
      IMPL<R, E, 7, scalar_t>(__VA_ARGS__);    \
      break;                                   \
    default:                                   \
      IMPL<R, E, 0, scalar_t>(__VA_ARGS__);    \
  }

std::tuple<at::Tensor, at::Tensor, at::Tensor> foe_energy_grad_kernel(const at::Tensor& x_in,
                                                                      const at::Tensor& filters_in,
                                                                      const at::Tensor& alphas_in,
                                                                      c10::string_view expert,
                                                                      bool with_laplacian) {
  const char* op = "foe_energy_grad";
  const FoeShape shape = check_foe_arguments(x_in, filters_in, alphas_in, std::string(expert), op);
  const at::Tensor x = x_in.contiguous();
  const at::Tensor filters = filters_in.contiguous();
  const at::Tensor alphas = alphas_in.contiguous();
  const Geometry g = geometry(shape);
  at::Tensor energy = at::zeros({g.B}, x.options());
  at::Tensor laplacian = with_laplacian ? at::zeros({g.B}, x.options()) : x.new_empty({0});
  at::Tensor grad = empty_recycled(x.sizes(), x.options());
  if (x.numel() == 0 || g.Hp == 0 || g.Wp == 0 || g.n == 0) {
    grad.zero_();
    return {energy, grad, laplacian};
  }
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "foe", [&] {
    PYI_FOE_DISPATCH(shape.expert, g.k, energy_grad_impl, x.data_ptr<scalar_t>(),
                     filters.data_ptr<scalar_t>(), alphas.data_ptr<scalar_t>(), g,
                     energy.data_ptr<scalar_t>(), grad.data_ptr<scalar_t>(),
                     with_laplacian ? laplacian.data_ptr<scalar_t>() : nullptr);
  });
  return {energy, grad, laplacian};
}

std::tuple<at::Tensor, at::Tensor> foe_param_grad_kernel(const at::Tensor& x_in,
                                                         const at::Tensor& filters_in,
                                                         const at::Tensor& alphas_in,
                                                         c10::string_view expert,
                                                         const at::Tensor& grad_energy_in) {
  const char* op = "foe_param_grad";
  const FoeShape shape = check_foe_arguments(x_in, filters_in, alphas_in, std::string(expert), op);
  TORCH_CHECK(grad_energy_in.dim() == 1 && grad_energy_in.size(0) == shape.B, op,
              ": expected grad_energy of shape (", shape.B, ",), got ", grad_energy_in.sizes());
  check_same_device_dtype(grad_energy_in, x_in, op, "grad_energy");
  const at::Tensor x = x_in.contiguous();
  const at::Tensor filters = filters_in.contiguous();
  const at::Tensor alphas = alphas_in.contiguous();
  const at::Tensor grad_energy = grad_energy_in.contiguous();
  const Geometry g = geometry(shape);
  at::Tensor grad_filters = at::zeros(filters.sizes(), filters.options());
  at::Tensor grad_alphas = at::zeros(alphas.sizes(), alphas.options());
  if (x.numel() == 0 || g.Hp == 0 || g.Wp == 0 || g.n == 0) return {grad_filters, grad_alphas};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "foe", [&] {
    PYI_FOE_DISPATCH(shape.expert, g.k, param_grad_impl, x.data_ptr<scalar_t>(),
                     filters.data_ptr<scalar_t>(), alphas.data_ptr<scalar_t>(),
                     grad_energy.data_ptr<scalar_t>(), g, grad_filters.data_ptr<scalar_t>(),
                     grad_alphas.data_ptr<scalar_t>());
  });
  return {grad_filters, grad_alphas};
}

}  // namespace

TORCH_LIBRARY_IMPL(pyinvert, CPU, m) {
  m.impl("foe_energy_grad", &foe_energy_grad_kernel);
  m.impl("foe_param_grad", &foe_param_grad_kernel);
}

}  // namespace pyinvert
