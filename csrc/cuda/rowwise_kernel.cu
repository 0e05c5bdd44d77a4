// CUDA driver of rowwise_dot: one block of kRowwiseLanes threads per row (a grid-stride loop
// over rows covers any B). Thread k is lane k of common/rowwise_math.h: it adds the row's
// products k, k + kRowwiseLanes, ... in order, then the block combines the lanes by the same
// pairwise tree as the CPU driver, in shared memory. A row's bits depend on neither the batch
// nor the launch, and equal the CPU's.
#include <ATen/Dispatch.h>
#include <torch/library.h>
#include <torch/types.h>

#include "common/rowwise_math.h"
#include "cuda/launch.cuh"

namespace pyinvert {
namespace {

template <typename T>
__global__ void rowwise_dot_impl(const T* __restrict__ a, int64_t a_stride,
                                 const T* __restrict__ b, int64_t b_stride, int64_t B, int64_t D,
                                 T* __restrict__ out) {
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
        a.const_data_ptr<scalar_t>(), a.stride(0), b.const_data_ptr<scalar_t>(), b.stride(0), B,
        D, out.mutable_data_ptr<scalar_t>());
    PYI_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(pyinvert, CUDA, m) { m.impl("rowwise_dot", &rowwise_dot_kernel); }

}  // namespace pyinvert
