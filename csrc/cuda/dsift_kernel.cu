// Dense SIFT on CUDA: VLFeat 0.9.21's vl_dsift_process (see common/dsift_math.h) and its gradient.
// One thread per output element and stage, every stage a gather (deterministic: the only
// atomic reports a refused input); the
// per-pixel math, the filters and the normalization are the header's, shared with the CPU.
// Buffers keep the orientation t fastest, as the CPU driver does:
//   channels [B][H][W][8], rows [B][R][W][8] (pooled along y at the R sampled rows),
//   descriptors [B][N][128].
// The flat window's running sums are sequential per line (one thread per line), as VLFeat's.
// The orientation stages (every pixel a centre once) report the images with a non-finite pixel;
// each op reads that flag back after its launches (one synchronization) and raises.
// Launch conventions: cuda/launch.cuh.
#include <ATen/Dispatch.h>
#include <torch/library.h>
#include <torch/types.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "common/checks.h"
#include "common/dsift_math.h"
#include "common/finite.h"
#include "cuda/launch.cuh"

namespace pyinvert {
namespace {

using dsift::Geometry;
using dsift::kDescriptorSize;
using dsift::kNumBinT;
using dsift::kNumBinXY;

using cuda::blocks_for;
using cuda::kThreads;

// --- forward stages ----------------------------------------------------------------------------

template <typename T>
__global__ void orientation_kernel(const T* __restrict__ x, T* __restrict__ channels, int64_t n,
                                   int H, int W, int* __restrict__ nonfinite) {
  const int64_t pixels = n * H * static_cast<int64_t>(W);
  PYI_GRID_STRIDE(i, pixels) {
    const int xx = static_cast<int>(i % W);
    const int y = static_cast<int>((i / W) % H);
    const int64_t b = i / (static_cast<int64_t>(W) * H);
    if (!is_finite(x[i])) atomicMin(nonfinite, cuda::flag_index(b));
    const auto p = dsift::pixel_orientation(x + b * H * static_cast<int64_t>(W), H, W, xx, y);
    T* out = channels + i * kNumBinT;
    for (int t = 0; t < kNumBinT; ++t) out[t] = T(0);
    out[p.lower] = dsift::lower_weight(p);
    out[p.upper] = dsift::upper_weight(p);
  }
}

// Gaussian window, along y: rows[b][r][lane] for every lane (x, t) of the row.
template <typename T>
__global__ void pool_rows_kernel(const T* __restrict__ channels, T* __restrict__ rows,
                                 const T* __restrict__ kernels, Geometry g, int64_t n) {
  const int64_t row8 = static_cast<int64_t>(g.width) * kNumBinT;
  const int R = g.num_rows(), taps = g.taps();
  PYI_GRID_STRIDE(i, n * R * row8) {
    const int64_t lane = i % row8;
    const int r = static_cast<int>((i / row8) % R);
    const int64_t b = i / (row8 * R);
    T acc = T(0);
    dsift::filter_taps(channels + b * g.height * row8 + lane, row8, g.height, g.position(r),
                       kernels + (r % kNumBinXY) * taps, taps, 1, &acc);
    rows[i] = acc;
  }
}

// Flat window, along y: one thread per lane (x, t) of an image runs VLFeat's running sums down
// the whole column (buffers interleaved across threads: scratch[b][y + delta][lane]).
template <typename T>
__global__ void pool_rows_flat_kernel(const T* __restrict__ channels, T* __restrict__ rows,
                                      T* __restrict__ scratch, Geometry g, int64_t n) {
  const int64_t row8 = static_cast<int64_t>(g.width) * kNumBinT;
  const int R = g.num_rows(), delta = g.bin_size;
  const T scale = dsift::triangle_filter_scale<T>(delta);
  PYI_GRID_STRIDE(i, n * row8) {
    const int64_t lane = i % row8;
    const int64_t b = i / row8;
    T* buf = scratch + b * (g.height + delta) * row8 + lane;
    dsift::triangle_filter_integrals(channels + b * g.height * row8 + lane, row8, g.height, delta,
                                     1, buf, row8);
    for (int r = 0; r < R; ++r) {
      rows[(b * R + r) * row8 + lane] =
          dsift::triangle_filter_value(buf, g.position(r), delta, row8, 0, scale);
    }
  }
}

// Gaussian window, along x: one histogram entry (b, r, c, t) per thread.
template <typename T>
__global__ void pool_cols_kernel(const T* __restrict__ rows, T* __restrict__ h,
                                 const T* __restrict__ kernels, Geometry g, int64_t n) {
  const int R = g.num_rows(), C = g.num_cols(), taps = g.taps();
  const int64_t row8 = static_cast<int64_t>(g.width) * kNumBinT;
  const int64_t descriptors = g.num_frames() * kDescriptorSize;
  PYI_GRID_STRIDE(i, n * R * C * kNumBinT) {
    const int t = static_cast<int>(i % kNumBinT);
    const int c = static_cast<int>((i / kNumBinT) % C);
    const int r = static_cast<int>((i / (kNumBinT * C)) % R);
    const int64_t b = i / (static_cast<int64_t>(kNumBinT) * C * R);
    T acc = T(0);
    dsift::filter_taps(rows + (b * R + r) * row8 + t, kNumBinT, g.width, g.position(c),
                       kernels + (c % kNumBinXY) * taps, taps, 1, &acc);
    h[b * descriptors + g.output_index(r, c, t)] = acc;
  }
}

// Flat window, along x: one thread per (b, r, t) runs the running sums along the row (buffers
// interleaved: scratch[x + delta][line]), then writes every sampled column.
template <typename T>
__global__ void pool_cols_flat_kernel(const T* __restrict__ rows, T* __restrict__ h,
                                      T* __restrict__ scratch, const T* __restrict__ weights,
                                      Geometry g, int64_t n) {
  const int R = g.num_rows(), C = g.num_cols(), delta = g.bin_size;
  const int64_t lines = n * R * kNumBinT;
  const int64_t descriptors = g.num_frames() * kDescriptorSize;
  const T scale = dsift::triangle_filter_scale<T>(delta);
  PYI_GRID_STRIDE(i, lines) {
    const int t = static_cast<int>(i % kNumBinT);
    const int64_t br = i / kNumBinT;  // b * R + r
    const int r = static_cast<int>(br % R);
    const int64_t b = br / R;
    T* buf = scratch + i;
    dsift::triangle_filter_integrals(rows + br * g.width * kNumBinT + t, kNumBinT, g.width, delta,
                                     1, buf, lines);
    const T wy = weights[r % kNumBinXY];
    for (int c = 0; c < C; ++c) {
      const T w = weights[c % kNumBinXY] * wy;  // VLFeat: w = wx * wy
      h[b * descriptors + g.output_index(r, c, t)] =
          w * dsift::triangle_filter_value(buf, g.position(c), delta, lines, 0, scale);
    }
  }
}

template <typename T>
__global__ void normalize_kernel(T* __restrict__ h, int64_t count) {
  PYI_GRID_STRIDE(i, count) { dsift::normalize_descriptor(h + i * kDescriptorSize); }
}

// --- backward stages ---------------------------------------------------------------------------

template <typename T>
__global__ void normalize_backward_kernel(const T* __restrict__ grad, const T* __restrict__ h,
                                          T* __restrict__ d_h, int64_t count) {
  PYI_GRID_STRIDE(i, count) {
    dsift::normalize_descriptor_backward(h + i * kDescriptorSize, grad + i * kDescriptorSize,
                                         d_h + i * kDescriptorSize);
  }
}

// dL/d(rows)[b][r][x][t]: transpose of the pooling along x (CSR over x).
template <typename T>
__global__ void pool_cols_backward_kernel(const T* __restrict__ dh, T* __restrict__ d_rows,
                                          const int* __restrict__ offsets,
                                          const int* __restrict__ samples,
                                          const T* __restrict__ weights, Geometry g, int64_t n) {
  const int R = g.num_rows(), W = g.width;
  const int64_t descriptors = g.num_frames() * kDescriptorSize;
  PYI_GRID_STRIDE(i, n * R * W * kNumBinT) {
    const int t = static_cast<int>(i % kNumBinT);
    const int xx = static_cast<int>((i / kNumBinT) % W);
    const int r = static_cast<int>((i / (kNumBinT * W)) % R);
    const int64_t b = i / (static_cast<int64_t>(kNumBinT) * W * R);
    const T* dhb = dh + b * descriptors;
    T acc = T(0);
    for (int e = offsets[xx]; e < offsets[xx + 1]; ++e) {
      acc += weights[e] * dhb[g.output_index(r, samples[e], t)];
    }
    d_rows[i] = acc;
  }
}

// dL/d(channels)[b][p][lane]: transpose of the pooling along y (CSR over p).
template <typename T>
__global__ void pool_rows_backward_kernel(const T* __restrict__ d_rows, T* __restrict__ d_channels,
                                          const int* __restrict__ offsets,
                                          const int* __restrict__ samples,
                                          const T* __restrict__ weights, Geometry g, int64_t n) {
  const int R = g.num_rows(), H = g.height;
  const int64_t row8 = static_cast<int64_t>(g.width) * kNumBinT;
  PYI_GRID_STRIDE(i, n * H * row8) {
    const int64_t lane = i % row8;
    const int p = static_cast<int>((i / row8) % H);
    const int64_t b = i / (row8 * H);
    T acc = T(0);
    for (int e = offsets[p]; e < offsets[p + 1]; ++e) {
      acc += weights[e] * d_rows[(b * R + samples[e]) * row8 + lane];
    }
    d_channels[i] = acc;
  }
}

// dL/dgx, dL/dgy per pixel: d_gradient [B][2][H][W].
template <typename T>
__global__ void orientation_backward_kernel(const T* __restrict__ x,
                                            const T* __restrict__ d_channels,
                                            T* __restrict__ d_gradient, int64_t n, int H, int W,
                                            int* __restrict__ nonfinite) {
  const int64_t plane = static_cast<int64_t>(H) * W;
  PYI_GRID_STRIDE(i, n * plane) {
    const int xx = static_cast<int>(i % W);
    const int y = static_cast<int>((i / W) % H);
    const int64_t b = i / plane;
    if (!is_finite(x[i])) atomicMin(nonfinite, cuda::flag_index(b));
    const auto p = dsift::pixel_orientation(x + b * plane, H, W, xx, y);
    const T* dc = d_channels + i * kNumBinT;
    T* dg = d_gradient + b * 2 * plane + (i - b * plane);
    dsift::pixel_orientation_backward(p, dc[p.lower], dc[p.upper], dg[0], dg[plane]);
  }
}

template <typename T>
__global__ void gradient_backward_kernel(const T* __restrict__ d_gradient, T* __restrict__ grad_x,
                                         int64_t n, int H, int W) {
  const int64_t plane = static_cast<int64_t>(H) * W;
  PYI_GRID_STRIDE(i, n * plane) {
    const int xx = static_cast<int>(i % W);
    const int y = static_cast<int>((i / W) % H);
    const int64_t b = i / plane;
    const T* dgx = d_gradient + b * 2 * plane;
    grad_x[i] = dsift::image_gradient_backward(dgx, dgx + plane, H, W, xx, y);
  }
}

// --- host drivers ------------------------------------------------------------------------------

template <typename T>
at::Tensor to_device(const std::vector<T>& values, const at::Tensor& like, at::ScalarType type) {
  return cuda::upload(values, like.device(), type);
}

// Forward into out ([B][N][128]); the histograms before normalization are copied to
// `histograms` when it is defined.
template <typename T>
void dsift_forward_cuda(const at::Tensor& x, at::Tensor& out, at::Tensor& histograms,
                        const Geometry& g, int* nonfinite) {
  const int64_t n = x.size(0);
  const int64_t row8 = static_cast<int64_t>(g.width) * kNumBinT;
  const auto options = x.options();
  const auto stream = cuda::current_stream();
  at::Tensor channels = at::empty({n, g.height, g.width, kNumBinT}, options);
  at::Tensor rows = at::empty({n, g.num_rows(), g.width, kNumBinT}, options);
  const T* xp = x.data_ptr<T>();
  T* hp = out.data_ptr<T>();

  orientation_kernel<T><<<blocks_for(n * g.height * g.width), kThreads, 0, stream>>>(
      xp, channels.data_ptr<T>(), n, g.height, g.width, nonfinite);
  PYI_LAUNCH_CHECK();
  if (!g.flat_window) {
    const std::vector<float> k = dsift::gaussian_bin_kernels(g.bin_size);
    at::Tensor kernels = to_device(std::vector<T>(k.begin(), k.end()), x, x.scalar_type());
    pool_rows_kernel<T><<<blocks_for(n * g.num_rows() * row8), kThreads, 0, stream>>>(
        channels.data_ptr<T>(), rows.data_ptr<T>(), kernels.data_ptr<T>(), g, n);
    PYI_LAUNCH_CHECK();
    pool_cols_kernel<T>
        <<<blocks_for(n * g.num_rows() * g.num_cols() * kNumBinT), kThreads, 0, stream>>>(
            rows.data_ptr<T>(), hp, kernels.data_ptr<T>(), g, n);
    PYI_LAUNCH_CHECK();
  } else {
    const std::vector<float> w = dsift::flat_window_weights(g.bin_size);
    at::Tensor weights = to_device(std::vector<T>(w.begin(), w.end()), x, x.scalar_type());
    at::Tensor scratch = at::empty({n, g.height + g.bin_size, row8}, options);
    pool_rows_flat_kernel<T><<<blocks_for(n * row8), kThreads, 0, stream>>>(
        channels.data_ptr<T>(), rows.data_ptr<T>(), scratch.data_ptr<T>(), g, n);
    PYI_LAUNCH_CHECK();
    const int64_t lines = n * g.num_rows() * kNumBinT;
    at::Tensor scratch_x = at::empty({g.width + g.bin_size, lines}, options);
    pool_cols_flat_kernel<T><<<blocks_for(lines), kThreads, 0, stream>>>(
        rows.data_ptr<T>(), hp, scratch_x.data_ptr<T>(), weights.data_ptr<T>(), g, n);
    PYI_LAUNCH_CHECK();
  }
  if (histograms.defined()) histograms.copy_(out);
  normalize_kernel<T>
      <<<blocks_for(n * g.num_frames()), kThreads, 0, stream>>>(hp, n * g.num_frames());
  PYI_LAUNCH_CHECK();
}

template <typename T>
void dsift_backward_cuda(const at::Tensor& grad, const at::Tensor& histograms, const at::Tensor& x,
                         at::Tensor& grad_x, const Geometry& g, int* nonfinite) {
  const int64_t n = x.size(0);
  const int64_t row8 = static_cast<int64_t>(g.width) * kNumBinT;
  const auto options = x.options();
  const auto stream = cuda::current_stream();
  at::Tensor h = at::empty({n, g.num_frames(), kDescriptorSize}, options);  // dL/dh
  normalize_backward_kernel<T><<<blocks_for(n * g.num_frames()), kThreads, 0, stream>>>(
      grad.data_ptr<T>(), histograms.data_ptr<T>(), h.data_ptr<T>(), n * g.num_frames());
  PYI_LAUNCH_CHECK();

  const std::vector<T> kernels = dsift::pooling_kernels<T>(g.bin_size, g.flat_window);
  const auto cols_t = dsift::transpose_pooling<T>(g, g.width, g.num_cols(), kernels);
  const auto rows_t = dsift::transpose_pooling<T>(g, g.height, g.num_rows(), kernels);
  at::Tensor c_off = to_device(cols_t.offsets, x, at::kInt);
  at::Tensor c_smp = to_device(cols_t.samples, x, at::kInt);
  at::Tensor c_w = to_device(cols_t.weights, x, x.scalar_type());
  at::Tensor r_off = to_device(rows_t.offsets, x, at::kInt);
  at::Tensor r_smp = to_device(rows_t.samples, x, at::kInt);
  at::Tensor r_w = to_device(rows_t.weights, x, x.scalar_type());

  at::Tensor d_rows = at::empty({n, g.num_rows(), g.width, kNumBinT}, options);
  pool_cols_backward_kernel<T><<<blocks_for(n * g.num_rows() * row8), kThreads, 0, stream>>>(
      h.data_ptr<T>(), d_rows.data_ptr<T>(), c_off.data_ptr<int>(), c_smp.data_ptr<int>(),
      c_w.data_ptr<T>(), g, n);
  PYI_LAUNCH_CHECK();
  at::Tensor d_channels = at::empty({n, g.height, g.width, kNumBinT}, options);
  pool_rows_backward_kernel<T><<<blocks_for(n * g.height * row8), kThreads, 0, stream>>>(
      d_rows.data_ptr<T>(), d_channels.data_ptr<T>(), r_off.data_ptr<int>(), r_smp.data_ptr<int>(),
      r_w.data_ptr<T>(), g, n);
  PYI_LAUNCH_CHECK();
  at::Tensor d_gradient = at::empty({n, 2, g.height, g.width}, options);
  orientation_backward_kernel<T><<<blocks_for(n * g.height * g.width), kThreads, 0, stream>>>(
      x.data_ptr<T>(), d_channels.data_ptr<T>(), d_gradient.data_ptr<T>(), n, g.height, g.width,
      nonfinite);
  PYI_LAUNCH_CHECK();
  gradient_backward_kernel<T><<<blocks_for(n * g.height * g.width), kThreads, 0, stream>>>(
      d_gradient.data_ptr<T>(), grad_x.data_ptr<T>(), n, g.height, g.width);
  PYI_LAUNCH_CHECK();
}

std::tuple<at::Tensor, at::Tensor> dsift_forward_kernel(const at::Tensor& x, int64_t step,
                                                        int64_t bin_size, bool flat_window,
                                                        bool return_histograms) {
  const Geometry g = dsift::checked_geometry(x, step, bin_size, flat_window, "dsift");
  const cuda::DeviceGuard guard(x.device());
  const int64_t batch = x.size(0);
  at::Tensor out = at::empty({batch, g.num_frames(), kDescriptorSize}, x.options());
  at::Tensor histograms = return_histograms ? at::empty_like(out) : at::empty({0}, x.options());
  if (batch == 0) return {out, histograms};
  const at::Tensor xc = x.contiguous();
  at::Tensor copy_to = return_histograms ? histograms : at::Tensor();
  cuda::ErrorFlag nonfinite(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "dsift_forward_cuda", [&] {
    dsift_forward_cuda<scalar_t>(xc, out, copy_to, g, nonfinite.data());
  });
  check_finite_pixels(nonfinite.read(), "dsift");
  return {out, histograms};
}

at::Tensor dsift_backward_kernel(const at::Tensor& grad, const at::Tensor& x,
                                 const at::Tensor& histograms, int64_t step, int64_t bin_size,
                                 bool flat_window) {
  const Geometry g = dsift::checked_geometry(x, step, bin_size, flat_window, "_dsift_backward");
  dsift::check_backward_inputs(grad, histograms, x, g);
  const cuda::DeviceGuard guard(x.device());
  const int64_t batch = x.size(0);
  at::Tensor grad_x = at::empty({batch, 1, g.height, g.width}, x.options());
  if (batch == 0) return grad_x;
  const at::Tensor xc = x.contiguous();
  const at::Tensor gc = grad.contiguous();
  const at::Tensor hc = histograms.contiguous();
  cuda::ErrorFlag nonfinite(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "dsift_backward_cuda", [&] {
    dsift_backward_cuda<scalar_t>(gc, hc, xc, grad_x, g, nonfinite.data());
  });
  check_finite_pixels(nonfinite.read(), "_dsift_backward");
  return grad_x;
}

}  // namespace

TORCH_LIBRARY_IMPL(pyinvert, CUDA, m) {
  m.impl("dsift", &dsift_forward_kernel);
  m.impl("_dsift_backward", &dsift_backward_kernel);
}

}  // namespace pyinvert
