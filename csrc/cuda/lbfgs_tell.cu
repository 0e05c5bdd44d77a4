// CUDA driver of lbfgs_tell (common/lbfgs_tell_math.h): one block of kRowwiseLanes threads per
// row (a grid-stride loop over rows covers any B), one launch per tell instead of the tensor
// path's some 300 small kernels. Every thread of the block runs the row's scalar logic on its own
// copy of the row's state (the same values, so the control flow is uniform and the block passes
// of cuda/rowwise_rows.cuh may synchronize); thread 0 writes what is shared (the ring, rho, the
// state at the end). Meant to give the CUDA tensor path's bits (the same operations, each
// rounded once; the correctly rounded square root); not yet run on a GPU.
#include <ATen/Dispatch.h>
#include <torch/library.h>
#include <torch/types.h>

#include <algorithm>

#include "common/lbfgs_tell_checks.h"
#include "common/lbfgs_tell_math.h"
#include "cuda/launch.cuh"
#include "cuda/rowwise_rows.cuh"

namespace pyinvert {
namespace {

// The vector passes of one row by its block (the Passes of common/lbfgs_tell_math.h).
template <typename T>
struct BlockPasses : TellRow<T> {
  using Row = TellRow<T>;  // (its members, named in this dependent base)
  using Row::b, Row::B, Row::D, Row::P, Row::grad, Row::grad_scale, Row::x, Row::d, Row::trial,
      Row::z, Row::z_scale, Row::S, Row::Y, Row::rho, Row::ring, Row::m, Row::pair;
  T* alpha;      // the row's m scratch values
  double* lane;  // the block's shared lanes

  __device__ BlockPasses(const TellBuffers<T>& a, int64_t row, T* alpha_, double* lane_)
      : Row(a, row), alpha(alpha_ + row * a.m), lane(lane_) {}
  // (the ring and spare slots are the op's own, written in range: no device-side check)
  __device__ int64_t checked_slot(int64_t slot) const { return slot; }
  __device__ T observe(T* g_new, T* gmax) const {
    return observe_block_row(grad, grad_scale, d, g_new, D, gmax, lane);
  }
  __device__ T accept(const T* g_new, const T* g_old, T t, int64_t slot, T* yy) const {
    return accept_block_row(g_new, g_old, d, t, x, pair(S, slot), pair(Y, slot), D, yy, lane);
  }
  __device__ int64_t keep_pair(int64_t slot, T inv_ys) const {
    const int64_t oldest = ring[m - 1];
    __syncthreads();  // every thread has read the ring
    if (threadIdx.x == 0) {
      rho[slot * B + b] = inv_ys;
      for (int64_t k = m - 1; k > 0; --k) ring[k] = ring[k - 1];
      ring[0] = slot;
    }
    __syncthreads();
    return oldest;
  }
  __device__ void two_loop(const T* g, int64_t K, T h) const {
    two_loop_block_row(g, S, Y, rho, h, ring, b, B, D, K, P, d, alpha, lane);
  }
  __device__ T direction_trial(const T* g, T t, T* dmax) const {
    return direction_trial_block_row(g, d, x, t, z_scale, trial, z, D, dmax, lane);
  }
  __device__ void trial_point(T t, bool stay) const {
    trial_block_row(d, x, t, stay, z_scale, trial, z, D);
  }
  __device__ void copy(T* dst, const T* src) const {
    for (int64_t i = threadIdx.x; i < D; i += kRowwiseLanes) dst[i] = src[i];
  }
  __device__ T abs_sum(const T* g) const {
    double acc = 0.0;
    for (int64_t i = threadIdx.x; i < D; i += kRowwiseLanes) {
      acc = rowwise_term(acc, g[i] < T(0) ? -g[i] : g[i], T(1));
    }
    return static_cast<T>(block_total(acc, lane));
  }
  __device__ T sqrt(T v) const { return rn_sqrt(v); }
};

template <typename T>
__global__ void tell_impl(TellSettings<T> run, TellBuffers<T> buffers, T* __restrict__ alpha) {
  __shared__ double lane[kRowwiseLanes];
  for (int64_t b = blockIdx.x; b < buffers.B; b += gridDim.x) {
    const BlockPasses<T> passes(buffers, b, alpha, lane);
    TellState<T> st;
    load_state(buffers, b, st);
    tell_row(run, st, passes, buffers.f[b]);
    __syncthreads();  // every thread is done with the row before its state is written
    if (threadIdx.x == 0) store_state(buffers, b, st);
  }
}

void lbfgs_tell_kernel(const at::Tensor& grad_in, const at::Tensor& grad_scale_in,
                       const at::Tensor& f_in, const at::Tensor& ask_scale_in, at::Tensor& real,
                       at::Tensor& ints, at::Tensor& ring, at::Tensor& x, at::Tensor& G,
                       at::Tensor& d, at::Tensor& lo_g, at::Tensor& g_prev, at::Tensor& trial,
                       at::Tensor& z, at::Tensor& S, at::Tensor& Y, at::Tensor& rho, double c1,
                       double c2, double lr, double tolerance_grad, double tolerance_change,
                       int64_t max_ls, int64_t max_iter, int64_t max_eval, bool line_search,
                       bool started) {
  check_tell_arguments(grad_in, grad_scale_in, f_in, ask_scale_in, real, ints, ring, x, G, d, lo_g,
                       g_prev, trial, z, S, Y, rho);
  const cuda::DeviceGuard guard(x.device());
  const at::Tensor grad = grad_in.contiguous(), grad_scale = grad_scale_in.contiguous();
  const at::Tensor f = f_in.contiguous(), ask_scale = ask_scale_in.contiguous();
  const int64_t B = x.size(0), m = ring.size(1);
  if (B == 0) return;
  at::Tensor alpha = at::empty({B, m}, x.options());
  const unsigned int blocks = static_cast<unsigned int>(std::min<int64_t>(B, cuda::kMaxBlocks));
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lbfgs_tell", [&] {
    using T = scalar_t;
    const auto run = tell_settings<T>(c1, c2, lr, tolerance_grad, tolerance_change, max_ls,
                                      max_iter, max_eval, m, line_search, started);
    const auto buffers = tell_buffers<T>(grad, grad_scale, f, ask_scale, real, ints, ring, x, G, d,
                                         lo_g, g_prev, trial, z, S, Y, rho);
    tell_impl<T><<<blocks, kRowwiseLanes, 0, cuda::current_stream()>>>(run, buffers,
                                                                       alpha.mutable_data_ptr<T>());
    PYI_LAUNCH_CHECK();
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(pyinvert, CUDA, m) { m.impl("lbfgs_tell", &lbfgs_tell_kernel); }

}  // namespace pyinvert
