// CUDA driver of the fused image prior. One thread per (image, pixel), looping over channels;
// each thread gathers the TV slopes its neighbours send it (recomputing them: two extra power
// terms per pixel are cheaper on a GPU than a second pass), writes its gradient once, and
// adds its value into a per-block partial sum in double. Partials are reduced in a fixed order,
// so results are deterministic for a given launch. The grid is 2-D (pixel blocks x images; at
// most 65535 images per call); the other conventions are cuda/launch.cuh's.
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include "common/checks.h"
#include "common/prior_math.h"
#include "cuda/launch.cuh"

namespace pyinvert {
namespace {

using cuda::kThreads;

struct PriorConfig {
  int tv_two_e, norm_two_e;
  double beta, alpha, eps;
  bool isotropic, compute_grad;
};

template <typename T>
__device__ __forceinline__ T tv_at(const T* plane, int64_t i, int64_t j, int64_t H, int64_t W,
                                   const PriorConfig& cfg, T* sdx, T* sdy) {
  T dx, dy;
  forward_differences(plane, i, j, H, W, &dx, &dy);
  const T s = dx * dx + dy * dy + T(cfg.eps);
  const T p = power_factor_dynamic(cfg.tv_two_e, s, T(cfg.beta / 2 - 1));
  *sdx = T(cfg.beta) * p * dx;
  *sdy = T(cfg.beta) * p * dy;
  return p * s;
}

template <typename T>
__global__ void image_prior_forward_impl(const T* __restrict__ x, const T* __restrict__ tv_weight,
                                         const T* __restrict__ norm_weight, int64_t C, int64_t H,
                                         int64_t W, PriorConfig cfg, T* __restrict__ grad,
                                         double* __restrict__ partial) {
  const int64_t b = blockIdx.y;
  const int64_t plane = H * W;
  const int64_t pixel = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const T tw = tv_weight[b], nw = norm_weight[b];
  double sum = 0;
  if (pixel < plane) {
    const int64_t i = pixel / W, j = pixel % W;
    const T* xb = x + b * C * plane;
    T* gb = grad ? grad + b * C * plane : nullptr;
    T norm_s = 0;  // sum_c x^2, for the isotropic norm
    for (int64_t c = 0; c < C; ++c) {
      const T* xc = xb + c * plane;
      T g = 0;
      if (tw != T(0)) {
        T sdx, sdy, left_sdx, left_sdy, up_sdx, up_sdy;
        sum += double(tw) * double(tv_at(xc, i, j, H, W, cfg, &sdx, &sdy));
        g = -(sdx + sdy);
        if (j > 0) {
          tv_at(xc, i, j - 1, H, W, cfg, &left_sdx, &left_sdy);
          g += left_sdx;
        }
        if (i > 0) {
          tv_at(xc, i - 1, j, H, W, cfg, &up_sdx, &up_sdy);
          g += up_sdy;
        }
        g *= tw;
      }
      const T v = xc[pixel];
      if (nw != T(0)) {
        if (cfg.isotropic) {
          norm_s += v * v;
        } else {
          const T p = power_factor_dynamic(cfg.norm_two_e, v * v, T(cfg.alpha / 2 - 1));
          sum += double(nw) * double(p * v * v);
          g += nw * T(cfg.alpha) * p * v;
        }
      }
      if (gb) gb[c * plane + pixel] = g;
    }
    if (nw != T(0) && cfg.isotropic) {
      const T p = power_factor_dynamic(cfg.norm_two_e, norm_s, T(cfg.alpha / 2 - 1));
      sum += double(nw) * double(p * norm_s);
      if (gb) {
        const T factor = nw * T(cfg.alpha) * p;
        for (int64_t c = 0; c < C; ++c) gb[c * plane + pixel] += factor * xb[c * plane + pixel];
      }
    }
  }
  // Fixed-order tree reduction of the block's values.
  __shared__ double shared[kThreads];
  shared[threadIdx.x] = sum;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) shared[threadIdx.x] += shared[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) partial[b * gridDim.x + blockIdx.x] = shared[0];
}

std::tuple<at::Tensor, at::Tensor> image_prior_forward_kernel(
    const at::Tensor& x_in, const at::Tensor& tv_weight_in, const at::Tensor& norm_weight_in,
    double beta, double alpha, bool isotropic, double eps, bool compute_grad) {
  check_image_batch(x_in, "image_prior");
  check_prior_arguments(x_in, tv_weight_in, norm_weight_in, beta, alpha, eps);
  const cuda::DeviceGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous();
  const at::Tensor tv_weight = tv_weight_in.contiguous();
  const at::Tensor norm_weight = norm_weight_in.contiguous();
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  at::Tensor grad = compute_grad ? at::empty_like(x) : at::empty({0}, x.options());
  if (x.numel() == 0) {
    if (compute_grad) grad.zero_();
    return {at::zeros({B}, x.options()), grad};
  }
  TORCH_CHECK(B <= 65535, "image_prior: expected at most 65535 images per call on CUDA, got ", B);
  const int64_t blocks = (H * W + kThreads - 1) / kThreads;
  at::Tensor partial = at::empty({B, blocks}, x.options().dtype(at::kDouble));
  const PriorConfig cfg{
      classify_exponent(beta), classify_exponent(alpha), beta, alpha, eps, isotropic, compute_grad};
  const dim3 grid(static_cast<unsigned>(blocks), static_cast<unsigned>(B));
  const auto stream = cuda::current_stream();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "image_prior", [&] {
    image_prior_forward_impl<scalar_t><<<grid, kThreads, 0, stream>>>(
        x.data_ptr<scalar_t>(), tv_weight.data_ptr<scalar_t>(), norm_weight.data_ptr<scalar_t>(), C,
        H, W, cfg, compute_grad ? grad.data_ptr<scalar_t>() : nullptr, partial.data_ptr<double>());
    PYI_LAUNCH_CHECK();
  });
  return {partial.sum(1).to(x.scalar_type()), grad};
}

}  // namespace

TORCH_LIBRARY_IMPL(pyinvert, CUDA, m) { m.impl("image_prior", &image_prior_forward_kernel); }

}  // namespace pyinvert
