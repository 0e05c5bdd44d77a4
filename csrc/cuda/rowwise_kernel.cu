// CUDA driver of rowwise_dot: one block of kRowwiseLanes threads per row (a grid-stride loop
// over rows covers any B). Thread k is lane k of common/rowwise_math.h: it adds the row's
// products k, k + kRowwiseLanes, ... in order, then the block combines the lanes by the same
// pairwise tree as the CPU driver, in shared memory. A row's bits depend on neither the batch
// nor the launch; they are meant to equal the CPU's (the same order; not yet compared on a GPU).
#include <ATen/Dispatch.h>
#include <torch/library.h>
#include <torch/types.h>

#include <algorithm>

#include "common/rowwise_checks.h"
#include "common/rowwise_math.h"
#include "cuda/launch.cuh"

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
    lane[k] = acc;
    __syncthreads();
    for (int h = kRowwiseLanes / 2; h > 0; h /= 2) {
      if (k < h) lane[k] = rowwise_combine(lane[k], lane[k + h]);
      __syncthreads();
    }
    if (k == 0) out[r] = static_cast<T>(lane[0]);
    __syncthreads();  // lane[] is reused by the block's next row
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
  lane[k] = acc;
  __syncthreads();
  for (int h = kRowwiseLanes / 2; h > 0; h /= 2) {
    if (k < h) lane[k] = rowwise_combine(lane[k], lane[k + h]);
    __syncthreads();
  }
  const double dot = lane[0];
  __syncthreads();  // lane[] is reused by the next pass
  return dot;
}

// One block per row (grid-stride over rows), the passes of the CPU's two_loop_row in order.
// alpha: [B, K] scratch. A slot outside [0, m) ends the row's history.
template <typename T>
__global__ void two_loop_impl(const T* __restrict__ g, const T* __restrict__ S,
                              const T* __restrict__ Y, const T* __restrict__ rho,
                              const T* __restrict__ h, const int64_t* __restrict__ slots, int64_t B,
                              int64_t D, int64_t K, int64_t m, T* __restrict__ out,
                              T* __restrict__ alpha) {
  __shared__ double lane[kRowwiseLanes];
  using U = TwoLoopUpdate;
  for (int64_t b = blockIdx.x; b < B; b += gridDim.x) {
    const int64_t* sl = slots + b * K;
    int64_t n = 0;
    while (n < K && sl[n] >= 0 && sl[n] < m) ++n;
    const auto pair = [&](const T* base, int64_t j) { return base + (sl[j] * B + b) * D; };
    const auto rho_of = [&](int64_t j) { return rho[sl[j] * B + b]; };
    const T* gb = g + b * D;
    T* x = out + b * D;
    T* ab = alpha + b * K;
    if (n == 0) {
      two_loop_pass<U::kNegate>(x, gb, T(0), static_cast<const T*>(nullptr), D, lane);
      two_loop_pass<U::kScale>(x, gb, h[b], static_cast<const T*>(nullptr), D, lane);
      continue;
    }
    double dot = two_loop_pass<U::kNegate>(x, gb, T(0), pair(S, 0), D, lane);
    for (int64_t j = 0; j < n; ++j) {
      const T a = rn_mul(static_cast<T>(dot), rho_of(j));
      if (threadIdx.x == 0) ab[j] = a;
      dot = two_loop_pass<U::kAxpy>(x, pair(Y, j), T(-a), j + 1 < n ? pair(S, j + 1) : nullptr, D,
                                    lane);
    }
    dot = two_loop_pass<U::kScale>(x, gb, h[b], pair(Y, n - 1), D, lane);
    for (int64_t j = n - 1; j >= 0; --j) {
      const T beta = rn_mul(static_cast<T>(dot), rho_of(j));
      const T c = rn_sub(ab[j], beta);
      dot = two_loop_pass<U::kAxpy>(x, pair(S, j), c, j > 0 ? pair(Y, j - 1) : nullptr, D, lane);
    }
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

}  // namespace

TORCH_LIBRARY_IMPL(pyinvert, CUDA, m) {
  m.impl("rowwise_dot", &rowwise_dot_kernel);
  m.impl("rowwise_two_loop", &rowwise_two_loop_kernel);
}

}  // namespace pyinvert
