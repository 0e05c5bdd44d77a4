// CUDA driver of rowwise_dot: one block of kRowwiseLanes threads per row (a grid-stride loop
// over rows covers any B). Thread k is lane k of common/rowwise_math.h: it adds the row's
// products k, k + kRowwiseLanes, ... in order, then the block combines the lanes by the same
// pairwise tree as the CPU driver, in shared memory. A row's bits depend on neither the batch
// nor the launch; they are meant to equal the CPU's (the same order; not yet compared on a GPU).
#include <ATen/Dispatch.h>
#include <torch/library.h>
#include <torch/types.h>

#include <algorithm>
#include <tuple>

#include "common/rowwise_checks.h"
#include "common/rowwise_math.h"
#include "cuda/launch.cuh"

namespace pyinvert {
namespace {

// The block's fixed-order total of its lanes (every thread gets it).
__device__ double block_total(double acc, double* lane) {
  const int k = threadIdx.x;
  lane[k] = acc;
  __syncthreads();
  for (int h = kRowwiseLanes / 2; h > 0; h /= 2) {
    if (k < h) lane[k] = rowwise_combine(lane[k], lane[k + h]);
    __syncthreads();
  }
  const double total = lane[0];
  __syncthreads();
  return total;
}

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

// The block's pass over its row: x = update(x, v, c) and (w != nullptr) the fixed-order dot of w
// with the new x, returned to every thread of the block.
template <TwoLoopUpdate kUpdate, typename T>
__device__ double two_loop_pass(T* x, const T* v, T c, const T* w, int64_t D, double* lane) {
  const int k = threadIdx.x;
  double acc = 0.0;
  for (int64_t i = k; i < D; i += kRowwiseLanes) {
    const T xi = two_loop_update<kUpdate>(x[i], v[i], c);
    x[i] = xi;
    if (w != nullptr) acc = rowwise_term(acc, w[i], xi);
  }
  if (w == nullptr) return 0.0;  // (uniform over the block: no thread waits below)
  return block_total(acc, lane);
}

// -H g of row b into x by the block, the passes of the CPU's two_loop_row in order. alpha: the
// row's K scratch values. A slot outside [0, m) ends the row's history.
template <typename T>
__device__ void two_loop_block_row(const T* __restrict__ gb, const T* __restrict__ S,
                                   const T* __restrict__ Y, const T* __restrict__ rho, T hb,
                                   const int64_t* __restrict__ sl, int64_t b, int64_t B, int64_t D,
                                   int64_t K, int64_t m, T* __restrict__ x, T* __restrict__ ab,
                                   double* lane) {
  using U = TwoLoopUpdate;
  int64_t n = 0;
  while (n < K && sl[n] >= 0 && sl[n] < m) ++n;
  const auto pair = [&](const T* base, int64_t j) { return base + (sl[j] * B + b) * D; };
  const auto rho_of = [&](int64_t j) { return rho[sl[j] * B + b]; };
  if (n == 0) {
    two_loop_pass<U::kNegate>(x, gb, T(0), static_cast<const T*>(nullptr), D, lane);
    two_loop_pass<U::kScale>(x, gb, hb, static_cast<const T*>(nullptr), D, lane);
    return;
  }
  double dot = two_loop_pass<U::kNegate>(x, gb, T(0), pair(S, 0), D, lane);
  for (int64_t j = 0; j < n; ++j) {
    const T a = rn_mul(static_cast<T>(dot), rho_of(j));
    if (threadIdx.x == 0) ab[j] = a;
    dot = two_loop_pass<U::kAxpy>(x, pair(Y, j), T(-a), j + 1 < n ? pair(S, j + 1) : nullptr, D,
                                  lane);
  }
  dot = two_loop_pass<U::kScale>(x, gb, hb, pair(Y, n - 1), D, lane);
  for (int64_t j = n - 1; j >= 0; --j) {
    const T beta = rn_mul(static_cast<T>(dot), rho_of(j));
    const T c = rn_sub(ab[j], beta);
    dot = two_loop_pass<U::kAxpy>(x, pair(S, j), c, j > 0 ? pair(Y, j - 1) : nullptr, D, lane);
  }
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

// The block's max |v| of the threads' absmax_step maxima (NaN propagates; exact in any order).
template <typename T>
__device__ T block_absmax(T m, double* lane) {
  const int k = threadIdx.x;
  lane[k] = static_cast<double>(m);
  __syncthreads();
  for (int h = kRowwiseLanes / 2; h > 0; h /= 2) {
    if (k < h) lane[k] = absmax_combine(lane[k], lane[k + h]);
    __syncthreads();
  }
  const T total = static_cast<T>(lane[0]);
  __syncthreads();
  return total;
}

template <typename T>
__global__ void observe_impl(const T* __restrict__ grad, const T* __restrict__ scale,
                             const T* __restrict__ d, T* __restrict__ g, int64_t B, int64_t D,
                             T* __restrict__ gmax, T* __restrict__ gtd) {
  __shared__ double lane[kRowwiseLanes];
  for (int64_t b = blockIdx.x; b < B; b += gridDim.x) {
    const int64_t o = b * D;
    double acc = 0.0;
    T m = T(0);
    for (int64_t i = threadIdx.x; i < D; i += kRowwiseLanes) {
      const T v = rn_mul(grad[o + i], scale[b]);
      g[o + i] = v;
      m = absmax_step(m, v);
      acc = rowwise_term(acc, v, d[o + i]);
    }
    const double dot = block_total(acc, lane);
    const T mx = block_absmax(m, lane);
    if (threadIdx.x == 0) {
      gtd[b] = static_cast<T>(dot);
      gmax[b] = mx;
    }
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
    double a1 = 0.0, a2 = 0.0;
    for (int64_t i = threadIdx.x; i < D; i += kRowwiseLanes) {
      const T s = rn_mul(t[b], d[o + i]);
      x[o + i] = rn_add(x[o + i], s);
      S[slot + i] = s;
      const T y = rn_sub(g[o + i], g_old[o + i]);
      Y[slot + i] = y;
      a1 = rowwise_term(a1, y, s);
      a2 = rowwise_term(a2, y, y);
    }
    const double t1 = block_total(a1, lane);
    const double t2 = block_total(a2, lane);
    if (threadIdx.x == 0) {
      ys[b] = static_cast<T>(t1);
      yy[b] = static_cast<T>(t2);
    }
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
    const bool direction = md == AdvanceMode::kDirection, stay = md == AdvanceMode::kStay;
    if (direction) {
      two_loop_block_row(g + o, S, Y, rho, h[b], slots + b * K, b, B, D, K, P, d + o, alpha + b * K,
                         lane);
      __syncthreads();  // d is complete before any thread reads another thread's elements
    }
    double acc = 0.0;
    T m = T(0);
    for (int64_t i = threadIdx.x; i < D; i += kRowwiseLanes) {
      const T v = stay ? x[o + i] : rn_add(x[o + i], rn_mul(t[b], d[o + i]));
      trial[o + i] = v;
      if (z != nullptr) z[o + i] = rn_mul(v, scale[b]);
      if (direction) {
        m = absmax_step(m, d[o + i]);
        acc = rowwise_term(acc, g[o + i], d[o + i]);
      }
    }
    if (direction) {
      const double dot = block_total(acc, lane);
      const T mx = block_absmax(m, lane);
      if (threadIdx.x == 0) {
        gtd[b] = static_cast<T>(dot);
        dmax[b] = mx;
      }
    }
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
