// CPU driver of the fused image prior: value and gradient in one streaming pass over x.
//
// Work is split into tasks of (image, block of kRowsPerTask rows); within a task rows are
// visited top to bottom and every channel's TV row is evaluated once, keeping the previous
// row's slope*dy in a small buffer, so each output pixel is written exactly once (no races,
// no atomics) and x is read once (plus one row of overlap per task). The split depends only
// on the shape, and per-task partial sums are added in task order: results do not depend on
// the number of threads.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "common/checks.h"
#include "common/prior_math.h"
#include "cpu/output_cache.h"
#include "cpu/simd.h"

namespace pyinvert {
namespace {

constexpr int64_t kRowsPerTask = 16;

// The row loops (cpu/image_prior_rows.h), compiled for the baseline and with AVX2+FMA, picked
// at run time (there is no bit-for-bit reference: the FMA build rounds a * b + c once).
namespace base {
#define PYI_PRIOR_TARGET
#include "cpu/image_prior_rows.h"
#undef PYI_PRIOR_TARGET
}  // namespace base
#if PYI_HAS_AVX2_FMA_TARGET
namespace avx2 {
#define PYI_PRIOR_TARGET __attribute__((target("avx2,fma")))
#include "cpu/image_prior_rows.h"
#undef PYI_PRIOR_TARGET
}  // namespace avx2
#else
namespace avx2 = base;
#endif

template <typename T>
using TvRowFn = T (*)(const T*, const T*, int64_t, T, T, T, T*, T*);
template <typename T>
using NormRowFn = T (*)(const T*, int64_t, T, T, T, T*);
template <typename T>
using IsotropicRowFn = T (*)(const T*, int64_t, int64_t, int64_t, T, T, T, T*, T*);

// Maps a run-time exponent kind to the matching template instance.
template <typename T, template <int> class Pick>
auto pick_by_exponent(int two_e) {
  switch (two_e) {
    case -1:
      return Pick<-1>::template get<T>();
    case 0:
      return Pick<0>::template get<T>();
    case 1:
      return Pick<1>::template get<T>();
    case 2:
      return Pick<2>::template get<T>();
    case 3:
      return Pick<3>::template get<T>();
    case 4:
      return Pick<4>::template get<T>();
    case 5:
      return Pick<5>::template get<T>();
    case 6:
      return Pick<6>::template get<T>();
    case 7:
      return Pick<7>::template get<T>();
    case 8:
      return Pick<8>::template get<T>();
    default:
      return Pick<kGeneralTwoE>::template get<T>();
  }
}
template <int E>
struct PickTv {
  template <typename T>
  static TvRowFn<T> get() {
    return cpu_has_avx2_fma() ? &avx2::tv_row<E, T> : &base::tv_row<E, T>;
  }
};
template <int E>
struct PickNorm {
  template <typename T>
  static NormRowFn<T> get() {
    return cpu_has_avx2_fma() ? &avx2::norm_row<E, T> : &base::norm_row<E, T>;
  }
};
template <int E>
struct PickIsotropic {
  template <typename T>
  static IsotropicRowFn<T> get() {
    return cpu_has_avx2_fma() ? &avx2::isotropic_row<E, T> : &base::isotropic_row<E, T>;
  }
};

template <typename T>
void image_prior_forward_impl(const T* x, const T* tv_weight, const T* norm_weight, int64_t B,
                              int64_t C, int64_t H, int64_t W, double beta, double alpha,
                              bool isotropic, double eps, T* value, T* grad) {
  const TvRowFn<T> tv_fn = pick_by_exponent<T, PickTv>(classify_exponent(beta));
  const NormRowFn<T> norm_fn = pick_by_exponent<T, PickNorm>(classify_exponent(alpha));
  const IsotropicRowFn<T> iso_fn = pick_by_exponent<T, PickIsotropic>(classify_exponent(alpha));
  const auto grad_fn = cpu_has_avx2_fma() ? &avx2::tv_grad_row<T> : &base::tv_grad_row<T>;
  const T beta_t = T(beta), beta_exp = T(beta / 2 - 1), eps_t = T(eps);
  const T alpha_t = T(alpha), alpha_exp = T(alpha / 2 - 1);
  const int64_t plane = H * W, image = C * plane;
  const int64_t blocks = (H + kRowsPerTask - 1) / kRowsPerTask;
  std::vector<double> partial(B * blocks, 0.0);

  at::parallel_for(0, B * blocks, 1, [&](int64_t begin, int64_t end) {
    // Per channel: slope*dx of this row, slope*dy of this row and of the row above.
    std::vector<T> buffers((3 * C + 2) * W);
    T* sdx = buffers.data();
    T* scratch = sdx + W;
    std::vector<T*> sdy(C), sdy_above(C);
    for (int64_t c = 0; c < C; ++c) {
      sdy[c] = scratch + (1 + c) * W;
      sdy_above[c] = scratch + (1 + C + c) * W;
    }
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / blocks;
      const int64_t row0 = (task % blocks) * kRowsPerTask;
      const int64_t row1 = std::min(row0 + kRowsPerTask, H);
      const T tw = tv_weight[b], nw = norm_weight[b];
      const T* xb = x + b * image;
      T* gb = grad ? grad + b * image : nullptr;
      double tv_sum = 0, norm_sum = 0;
      if (tw != T(0)) {
        // The row above the block, for its slope*dy only.
        for (int64_t c = 0; c < C; ++c) {
          T* above = sdy_above[c];
          if (row0 == 0) {
            std::fill(above, above + W, T(0));
          } else {
            const T* r = xb + c * plane + (row0 - 1) * W;
            tv_fn(r, r + W, W, eps_t, beta_t, beta_exp, sdx, above);
          }
        }
      }
      for (int64_t i = row0; i < row1; ++i) {
        for (int64_t c = 0; c < C; ++c) {
          const int64_t offset = c * plane + i * W;
          if (tw != T(0)) {
            const T* r = xb + offset;
            tv_sum +=
                tv_fn(r, i + 1 < H ? r + W : nullptr, W, eps_t, beta_t, beta_exp, sdx, sdy[c]);
            if (gb) grad_fn(sdx, sdy[c], sdy_above[c], W, tw, gb + offset);
            std::swap(sdy[c], sdy_above[c]);
          } else if (gb) {
            std::fill(gb + offset, gb + offset + W, T(0));
          }
          if (nw != T(0) && !isotropic) {
            norm_sum += norm_fn(xb + offset, W, alpha_t, alpha_exp, nw, gb ? gb + offset : nullptr);
          }
        }
        if (nw != T(0) && isotropic) {
          norm_sum += iso_fn(xb + i * W, C, plane, W, alpha_t, alpha_exp, nw,
                             gb ? gb + i * W : nullptr, scratch);
        }
      }
      partial[task] = double(tw) * tv_sum + double(nw) * norm_sum;
    }
  });
  for (int64_t b = 0; b < B; ++b) {
    double sum = 0;
    for (int64_t k = 0; k < blocks; ++k) sum += partial[b * blocks + k];
    value[b] = T(sum);
  }
}

std::tuple<at::Tensor, at::Tensor> image_prior_forward_kernel(
    const at::Tensor& x_in, const at::Tensor& tv_weight_in, const at::Tensor& norm_weight_in,
    double beta, double alpha, bool isotropic, double eps, bool compute_grad) {
  check_image_batch(x_in, "image_prior");
  check_prior_arguments(x_in, tv_weight_in, norm_weight_in, beta, alpha, eps);
  const at::Tensor x = x_in.contiguous();
  const at::Tensor tv_weight = tv_weight_in.contiguous();
  const at::Tensor norm_weight = norm_weight_in.contiguous();
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  at::Tensor value = at::zeros({B}, x.options());
  at::Tensor grad =
      compute_grad ? empty_recycled(x.sizes(), x.options()) : at::empty({0}, x.options());
  if (x.numel() == 0) {
    if (compute_grad) grad.zero_();
    return {value, grad};
  }
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "image_prior", [&] {
    image_prior_forward_impl<scalar_t>(x.data_ptr<scalar_t>(), tv_weight.data_ptr<scalar_t>(),
                                       norm_weight.data_ptr<scalar_t>(), B, C, H, W, beta, alpha,
                                       isotropic, eps, value.data_ptr<scalar_t>(),
                                       compute_grad ? grad.data_ptr<scalar_t>() : nullptr);
  });
  return {value, grad};
}

}  // namespace

TORCH_LIBRARY_IMPL(pyinvert, CPU, m) { m.impl("image_prior", &image_prior_forward_kernel); }

}  // namespace pyinvert
