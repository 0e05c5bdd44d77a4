#pragma once
// How pyinvert's CUDA drivers launch kernels; one convention for every .cu file:
//  - a host function takes `const DeviceGuard guard(x);` (the CUDA device of its input) and
//    launches on `current_stream()`, the current stream of that device, so the op orders with
//    the caller's other work on that stream;
//  - 1-D launches use kThreads threads per block and blocks_for(n) blocks (capped at
//    kMaxBlocks); kernels visit their n items with PYI_GRID_STRIDE, so any n is covered;
//  - every launch is followed by PYI_LAUNCH_CHECK() (C10_CUDA_KERNEL_LAUNCH_CHECK: a launch
//    error raises with the kernel's site);
//  - small host tables go to the device with upload() (pinned, asynchronous).
//
// PYI_CUDA_ON_HOST (defined by the tests that compile a .cu file as host C++, every kernel then
// running its grid-stride loop in one thread) replaces the CUDA runtime with host stand-ins.
#include <torch/types.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <vector>

#include "common/finite.h"

#ifndef PYI_CUDA_ON_HOST
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>  // (not ATen/cuda/CUDAContext.h: that one needs cuSPARSE headers)
#endif

namespace pyinvert {
namespace cuda {

constexpr int kThreads = 256;            // threads per block
constexpr int64_t kMaxBlocks = 1 << 20;  // grid size cap (the grid-stride loops cover more)

// Blocks for n items, one thread each, at most kMaxBlocks (and at least 1: n may be 0).
inline unsigned int blocks_for(int64_t n) {
  return static_cast<unsigned int>(
      std::max<int64_t>(1, std::min<int64_t>((n + kThreads - 1) / kThreads, kMaxBlocks)));
}

#ifndef PYI_CUDA_ON_HOST
using DeviceGuard = c10::cuda::CUDAGuard;
inline cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream(); }
#define PYI_LAUNCH_CHECK() C10_CUDA_KERNEL_LAUNCH_CHECK()
#endif

}  // namespace cuda
}  // namespace pyinvert

#ifdef PYI_CUDA_ON_HOST
// Host stand-ins: one block of one thread, launches are plain calls (the test strips <<<...>>>).
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
#define PYI_LAUNCH_CHECK()
struct PyiHostIndex {
  unsigned x, y;
};
static const PyiHostIndex blockIdx{0, 0}, threadIdx{0, 0}, blockDim{1, 1}, gridDim{1, 1};
inline int atomicMin(int* address, int value) {
  const int old = *address;
  if (value < old) *address = value;
  return old;
}
inline void __syncthreads() {}
namespace pyinvert {
namespace cuda {
using cudaStream_t = void*;
struct DeviceGuard {
  explicit DeviceGuard(c10::Device) {}
};
inline cudaStream_t current_stream() { return nullptr; }
}  // namespace cuda
}  // namespace pyinvert
#endif

// for (int64_t i = first item of this thread; i < n; i += threads in the grid)
#define PYI_GRID_STRIDE(i, n)                                                            \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(blockDim.x) * gridDim.x)

namespace pyinvert {
namespace cuda {

// A host table as a tensor of dtype `type` on `device` (through pinned memory, asynchronous on
// the current stream).
template <typename T>
at::Tensor upload(const std::vector<T>& values, c10::Device device, at::ScalarType type) {
  at::TensorOptions options = at::TensorOptions().dtype(type);
#ifndef PYI_CUDA_ON_HOST
  options = options.pinned_memory(true);
#endif
  at::Tensor host = at::empty({static_cast<int64_t>(values.size())}, options);
  std::copy(values.begin(), values.end(), host.data_ptr<T>());
  return host.to(device, /*non_blocking=*/true);
}

// The lowest image index kernels report (atomicMin) for an input they refuse, e.g. a non-finite
// pixel: INT_MAX on the device until a report. read() copies it to the host: one
// synchronization of the stream, once per op call, after its launches.
class ErrorFlag {
 public:
  explicit ErrorFlag(const at::Tensor& like)
      : flag_(at::full({1}, INT_MAX, like.options().dtype(at::kInt))) {}
  int* data() { return flag_.data_ptr<int>(); }
  // The reported image, or -1.
  int64_t read() const {
    const int v = flag_.item<int>();
    return v == INT_MAX ? -1 : v;
  }

 private:
  at::Tensor flag_;
};

// Image index for ErrorFlag (int; a batch beyond INT_MAX - 1 images reports INT_MAX - 1).
__device__ __forceinline__ int flag_index(int64_t b) {
  return b < INT_MAX - 1 ? static_cast<int>(b) : INT_MAX - 1;
}

// Reports to `flag` the images (numel_per_image values each) holding a NaN or Inf among x[0, n).
template <typename T>
__global__ void report_nonfinite_kernel(const T* __restrict__ x, int64_t n, int64_t numel_per_image,
                                        int* __restrict__ flag) {
  PYI_GRID_STRIDE(i, n) {
    if (!is_finite(x[i])) atomicMin(flag, flag_index(i / numel_per_image));
  }
}

}  // namespace cuda
}  // namespace pyinvert
