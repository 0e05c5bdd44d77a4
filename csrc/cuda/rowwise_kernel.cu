// CUDA driver of rowwise_dot, rowwise_two_loop and the fused L-BFGS steps: one block of
// kRowwiseLanes threads per row (a grid-stride loop over rows covers any B), its passes in
// cuda/rowwise_rows.cuh. Thread k is lane k of common/rowwise_math.h: it adds the row's products
// k, k + kRowwiseLanes, ... in order, then the block combines the lanes by the same pairwise tree
// as the CPU driver, in shared memory. A row's bits depend on neither the batch nor the launch;
// they are meant to equal the CPU's (the same order; not yet compared on a GPU).
#include <ATen/Dispatch.h>
#include <torch/library.h>
#include <torch/types.h>

#include <algorithm>
#include <tuple>

#include "common/rowwise_checks.h"
#include "cuda/launch.cuh"
#include "cuda/rowwise_rows.cuh"

namespace pyinvert {
namespace {

template <typename T>
__global__ void rowwise_dot_impl(const T* __restrict__ a, int64_t a_stride, const T* __restrict__ b,
                                 int64_t b_stride, int64_t B, int64_t D, T* __restrict__ out) {
  __shared__ double lane[kRowwiseLanes];
  const int k = threadIdx.x;
  for (int64_t r = blockIdx.x; r < B; r += gridDim.x) {
    const T* ar = a + r * a_stride;
    const T* br = b + r * b_stride;
    double acc = 0.0;
    for (int64_t i = k; i < D; i += kRowwiseLanes) acc = rowwise_term(acc, ar[i], br[i]);
    const double total = block_total(acc, lane);
    if (k == 0) out[r] = static_cast<T>(total);
  }
}

at::Tensor rowwise_dot_kernel(const at::Tensor& a_in, const at::Tensor& b_in) {
  TORCH_CHECK(a_in.dim() == 2, "rowwise_dot: expected a of shape (B, D), got ", a_in.sizes());
  TORCH_CHECK(b_in.sizes() == a_in.sizes(), "rowwise_dot: expected b of shape ", a_in.sizes(),
              " (as a), got ", b_in.sizes());
  TORCH_CHECK(a_in.scalar_type() == at::kFloat || a_in.scalar_type() == at::kDouble,
              "rowwise_dot: expected a of dtype float32 or float64, got ", a_in.scalar_type());
  TORCH_CHECK(b_in.scalar_type() == a_in.scalar_type(), "rowwise_dot: expected b of dtype ",
              a_in.scalar_type(), " (as a), got ", b_in.scalar_type());
  TORCH_CHECK(b_in.device() == a_in.device(), "rowwise_dot: expected b on ", a_in.device(),
              " (as a), got ", b_in.device());
  const cuda::DeviceGuard guard(a_in.device());
  const at::Tensor a = a_in.stride(1) == 1 ? a_in : a_in.contiguous();
  const at::Tensor b = b_in.stride(1) == 1 ? b_in : b_in.contiguous();
  const int64_t B = a.size(0), D = a.size(1);
  at::Tensor out = at::empty({B}, a.options());
  if (B == 0) return out;
  const unsigned int blocks = static_cast<unsigned int>(std::min<int64_t>(B, cuda::kMaxBlocks));
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "rowwise_dot", [&] {
    rowwise_dot_impl<scalar_t><<<blocks, kRowwiseLanes, 0, cuda::current_stream()>>>(
        a.const_data_ptr<scalar_t>(), a.stride(0), b.const_data_ptr<scalar_t>(), b.stride(0), B, D,
        out.mutable_data_ptr<scalar_t>());
    PYI_LAUNCH_CHECK();
  });
  return out;
}

// One block per row (grid-stride over rows). alpha: [B, K] scratch.
template <typename T>
__global__ void two_loop_impl(const T* __restrict__ g, const T* __restrict__ S,
                              const T* __restrict__ Y, const T* __restrict__ rho,
                              const T* __restrict__ h, const int64_t* __restrict__ slots, int64_t B,
                              int64_t D, int64_t K, int64_t m, T* __restrict__ out,
                              T* __restrict__ alpha) {
  __shared__ double lane[kRowwiseLanes];
  for (int64_t b = blockIdx.x; b < B; b += gridDim.x) {
    two_loop_block_row(g + b * D, S, Y, rho, h[b], slots + b * K, b, B, D, K, m, out + b * D,
                       alpha + b * K, lane);
    __syncthreads();  // ab[] and x of this row are done before the block's next row
  }
}

at::Tensor rowwise_two_loop_kernel(const at::Tensor& g, const at::Tensor& S, const at::Tensor& Y,
                                   const at::Tensor& rho, const at::Tensor& h,
                                   const at::Tensor& slots) {
  check_two_loop_arguments(g, S, Y, rho, h, slots);
  const cuda::DeviceGuard guard(g.device());
  const int64_t B = g.size(0), D = g.size(1), K = slots.size(1), m = S.size(0);
  const at::Tensor gc = g.contiguous(), Sc = S.contiguous(), Yc = Y.contiguous();
  const at::Tensor rc = rho.contiguous(), hc = h.contiguous(), sc = slots.contiguous();
  at::Tensor out = at::empty({B, D}, g.options());
  if (B == 0 || D == 0) return out;
  at::Tensor alpha = at::empty({B, std::max<int64_t>(K, 1)}, g.options());
  const unsigned int blocks = static_cast<unsigned int>(std::min<int64_t>(B, cuda::kMaxBlocks));
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "rowwise_two_loop", [&] {
    two_loop_impl<scalar_t><<<blocks, kRowwiseLanes, 0, cuda::current_stream()>>>(
        gc.const_data_ptr<scalar_t>(), Sc.const_data_ptr<scalar_t>(), Yc.const_data_ptr<scalar_t>(),
        rc.const_data_ptr<scalar_t>(), hc.const_data_ptr<scalar_t>(), sc.const_data_ptr<int64_t>(),
        B, D, K, m, out.mutable_data_ptr<scalar_t>(), alpha.mutable_data_ptr<scalar_t>());
    PYI_LAUNCH_CHECK();
  });
  return out;
}

// ---- the fused steps of the per-row L-BFGS (common/rowwise_math.h; the CPU driver's order) ----

template <typename T>
__global__ void observe_impl(const T* __restrict__ grad, const T* __restrict__ scale,
                             const T* __restrict__ d, T* __restrict__ g, int64_t B, int64_t D,
                             T* __restrict__ gmax, T* __restrict__ gtd) {
  __shared__ double lane[kRowwiseLanes];
  for (int64_t b = blockIdx.x; b < B; b += gridDim.x) {
    const int64_t o = b * D;
    T mx;
    const T dot = observe_block_row(grad + o, scale[b], d + o, g + o, D, &mx, lane);
    if (threadIdx.x == 0) gtd[b] = dot, gmax[b] = mx;
  }
}

template <typename T>
__global__ void accept_impl(const T* __restrict__ g, const T* __restrict__ g_old,
                            const T* __restrict__ d, const T* __restrict__ t,
                            const bool* __restrict__ rows, const int64_t* __restrict__ spare,
                            T* __restrict__ x, T* __restrict__ S, T* __restrict__ Y, int64_t B,
                            int64_t D, T* __restrict__ ys, T* __restrict__ yy) {
  __shared__ double lane[kRowwiseLanes];
  for (int64_t b = blockIdx.x; b < B; b += gridDim.x) {
    if (!rows[b]) continue;  // (uniform over the block)
    const int64_t o = b * D, slot = (spare[b] * B + b) * D;
    T y2;
    const T ys_b =
        accept_block_row(g + o, g_old + o, d + o, t[b], x + o, S + slot, Y + slot, D, &y2, lane);
    if (threadIdx.x == 0) ys[b] = ys_b, yy[b] = y2;
  }
}

template <typename T>
__global__ void advance_impl(const T* __restrict__ g, const T* __restrict__ S,
                             const T* __restrict__ Y, const T* __restrict__ rho,
                             const T* __restrict__ h, const int64_t* __restrict__ slots,
                             const int64_t* __restrict__ mode, const T* __restrict__ t,
                             const T* __restrict__ x, const T* __restrict__ scale, int64_t B,
                             int64_t D, int64_t K, int64_t P, T* __restrict__ d,
                             T* __restrict__ trial, T* __restrict__ z, T* __restrict__ alpha,
                             T* __restrict__ gtd, T* __restrict__ dmax) {
  __shared__ double lane[kRowwiseLanes];
  for (int64_t b = blockIdx.x; b < B; b += gridDim.x) {
    const auto md = static_cast<AdvanceMode>(mode[b]);
    if (md == AdvanceMode::kSkip) continue;  // (uniform over the block)
    const int64_t o = b * D;
    T* zb = z != nullptr ? z + o : nullptr;
    const T c = z != nullptr ? scale[b] : T(1);
    if (md != AdvanceMode::kDirection) {
      trial_block_row(d + o, x + o, t[b], md == AdvanceMode::kStay, c, trial + o, zb, D);
      continue;
    }
    two_loop_block_row(g + o, S, Y, rho, h[b], slots + b * K, b, B, D, K, P, d + o, alpha + b * K,
                       lane);
    T mx;
    const T dot =
        direction_trial_block_row(g + o, d + o, x + o, t[b], c, trial + o, zb, D, &mx, lane);
    if (threadIdx.x == 0) gtd[b] = dot, dmax[b] = mx;
  }
}

unsigned int row_blocks(int64_t B) {
  return static_cast<unsigned int>(std::min<int64_t>(std::max<int64_t>(B, 1), cuda::kMaxBlocks));
}

std::tuple<at::Tensor, at::Tensor> lbfgs_observe_kernel(const at::Tensor& grad,
                                                        const at::Tensor& scale,
                                                        const at::Tensor& d, at::Tensor& g) {
  check_observe_arguments(grad, scale, d, g);
  const cuda::DeviceGuard guard(g.device());
  const int64_t B = g.size(0), D = g.size(1);
  const at::Tensor gc = grad.contiguous(), sc = scale.contiguous();
  at::Tensor gmax = at::zeros({B}, g.options()), gtd = at::zeros({B}, g.options());
  if (B == 0) return {gmax, gtd};
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "lbfgs_observe", [&] {
    observe_impl<scalar_t><<<row_blocks(B), kRowwiseLanes, 0, cuda::current_stream()>>>(
        gc.const_data_ptr<scalar_t>(), sc.const_data_ptr<scalar_t>(), d.const_data_ptr<scalar_t>(),
        g.mutable_data_ptr<scalar_t>(), B, D, gmax.mutable_data_ptr<scalar_t>(),
        gtd.mutable_data_ptr<scalar_t>());
    PYI_LAUNCH_CHECK();
  });
  return {gmax, gtd};
}

std::tuple<at::Tensor, at::Tensor> lbfgs_accept_kernel(const at::Tensor& g, const at::Tensor& g_old,
                                                       const at::Tensor& d, const at::Tensor& t,
                                                       const at::Tensor& rows,
                                                       const at::Tensor& spare, at::Tensor& x,
                                                       at::Tensor& S, at::Tensor& Y) {
  check_accept_arguments(g, g_old, d, t, rows, spare, x, S, Y);
  const cuda::DeviceGuard guard(g.device());
  const int64_t B = g.size(0), D = g.size(1);
  const at::Tensor rc = rows.contiguous(), pc = spare.contiguous(), tc = t.contiguous();
  at::Tensor ys = at::zeros({B}, g.options()), yy = at::zeros({B}, g.options());
  if (B == 0) return {ys, yy};
  // (the spare slots are built by the Python caller, in range: no device-side check)
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "lbfgs_accept", [&] {
    accept_impl<scalar_t><<<row_blocks(B), kRowwiseLanes, 0, cuda::current_stream()>>>(
        g.const_data_ptr<scalar_t>(), g_old.const_data_ptr<scalar_t>(),
        d.const_data_ptr<scalar_t>(), tc.const_data_ptr<scalar_t>(), rc.const_data_ptr<bool>(),
        pc.const_data_ptr<int64_t>(), x.mutable_data_ptr<scalar_t>(),
        S.mutable_data_ptr<scalar_t>(), Y.mutable_data_ptr<scalar_t>(), B, D,
        ys.mutable_data_ptr<scalar_t>(), yy.mutable_data_ptr<scalar_t>());
    PYI_LAUNCH_CHECK();
  });
  return {ys, yy};
}

std::tuple<at::Tensor, at::Tensor> lbfgs_advance_kernel(
    const at::Tensor& g, const at::Tensor& S, const at::Tensor& Y, const at::Tensor& rho,
    const at::Tensor& h, const at::Tensor& slots, const at::Tensor& mode, const at::Tensor& t,
    const at::Tensor& x, const at::Tensor& scale, at::Tensor& d, at::Tensor& trial, at::Tensor& z) {
  check_advance_arguments(g, S, Y, rho, h, slots, mode, t, x, scale, d, trial, z);
  const cuda::DeviceGuard guard(g.device());
  const int64_t B = g.size(0), D = g.size(1), K = slots.size(1), P = S.size(0);
  const at::Tensor mc = mode.contiguous(), tc = t.contiguous(), cc = scale.contiguous();
  at::Tensor gtd = at::zeros({B}, g.options()), dmax = at::zeros({B}, g.options());
  if (B == 0) return {gtd, dmax};
  at::Tensor alpha = at::empty({B, std::max<int64_t>(K, 1)}, g.options());
  const bool scaled = z.numel() > 0;
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "lbfgs_advance", [&] {
    advance_impl<scalar_t><<<row_blocks(B), kRowwiseLanes, 0, cuda::current_stream()>>>(
        g.const_data_ptr<scalar_t>(), S.const_data_ptr<scalar_t>(), Y.const_data_ptr<scalar_t>(),
        rho.const_data_ptr<scalar_t>(), h.const_data_ptr<scalar_t>(),
        slots.const_data_ptr<int64_t>(), mc.const_data_ptr<int64_t>(),
        tc.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
        scaled ? cc.const_data_ptr<scalar_t>() : nullptr, B, D, K, P,
        d.mutable_data_ptr<scalar_t>(), trial.mutable_data_ptr<scalar_t>(),
        scaled ? z.mutable_data_ptr<scalar_t>() : nullptr, alpha.mutable_data_ptr<scalar_t>(),
        gtd.mutable_data_ptr<scalar_t>(), dmax.mutable_data_ptr<scalar_t>());
    PYI_LAUNCH_CHECK();
  });
  return {gtd, dmax};
}

}  // namespace

TORCH_LIBRARY_IMPL(pyinvert, CUDA, m) {
  m.impl("rowwise_dot", &rowwise_dot_kernel);
  m.impl("rowwise_two_loop", &rowwise_two_loop_kernel);
  m.impl("lbfgs_observe", &lbfgs_observe_kernel);
  m.impl("lbfgs_accept", &lbfgs_accept_kernel);
  m.impl("lbfgs_advance", &lbfgs_advance_kernel);
}

}  // namespace pyinvert
