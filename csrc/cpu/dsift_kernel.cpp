// Dense SIFT on the CPU: VLFeat 0.9.21's vl_dsift_process (see common/dsift_math.h) and its
// gradient, for a batch of grayscale images. Images are processed in groups of about one per
// thread; within a group each stage is an at::parallel_for over (image, row) work items, so a
// single large image uses every core and a large batch stays cache-resident. No atomics: every
// output element is written by exactly one work item, in a fixed order (deterministic).
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

#include <algorithm>
#include <vector>

#include "common/checks.h"
#include "common/dsift_math.h"

namespace pyinvert {
namespace {

using dsift::Geometry;
using dsift::kDescriptorSize;
using dsift::kNumBinT;
using dsift::kNumBinXY;

Geometry dsift_geometry(const at::Tensor& x, int64_t step, int64_t bin_size, bool flat_window,
                        const char* op) {
  check_image_batch(x, op);
  TORCH_CHECK(x.size(1) == 1, op, ": expected x of shape (B, 1, H, W) (grayscale), got ",
              x.sizes(), "; convert RGB with x.mean(1, keepdim=True) or a luminance weighting");
  TORCH_CHECK(step >= 1, op, ": expected step >= 1, got ", step);
  TORCH_CHECK(bin_size >= 1, op, ": expected bin_size >= 1, got ", bin_size);
  TORCH_CHECK(x.size(2) <= (1 << 24) && x.size(3) <= (1 << 24) && step <= (1 << 24) &&
                  bin_size <= (1 << 20),
              op, ": sizes too large, got x ", x.sizes(), ", step ", step, ", bin_size ", bin_size);
  Geometry g;
  g.height = static_cast<int>(x.size(2));
  g.width = static_cast<int>(x.size(3));
  g.step = static_cast<int>(step);
  g.bin_size = static_cast<int>(bin_size);
  g.flat_window = flat_window;
  g.frames_y = dsift::frames_along(g.height, g.step, g.bin_size);
  g.frames_x = dsift::frames_along(g.width, g.step, g.bin_size);
  const int64_t frame = (kNumBinXY - 1) * bin_size + 1;
  TORCH_CHECK(g.frames_x > 0 && g.frames_y > 0, op, ": expected x of at least ", frame, "x",
              frame, " pixels (3 * bin_size + 1) for one descriptor, got ", g.height, "x", g.width);
  return g;
}

// Per-call constant tables in the input's precision.
template <typename T>
struct Tables {
  std::vector<T> kernels;       // [4][taps] forward Gaussian-window kernels
  std::vector<T> flat_weights;  // [4] flat-window bin weights
  dsift::TransposedPooling<T> rows_t, cols_t;  // backward only
};

template <typename T>
Tables<T> make_tables(const Geometry& g, bool backward) {
  Tables<T> tab;
  const std::vector<float> k = dsift::gaussian_bin_kernels(g.bin_size);
  tab.kernels.assign(k.begin(), k.end());
  const std::vector<float> w = dsift::flat_window_weights(g.bin_size);
  tab.flat_weights.assign(w.begin(), w.end());
  if (backward) {
    const std::vector<T> pk = dsift::pooling_kernels<T>(g.bin_size, g.flat_window);
    tab.rows_t = dsift::transpose_pooling<T>(g, g.height, g.num_rows(), pk);
    tab.cols_t = dsift::transpose_pooling<T>(g, g.width, g.num_cols(), pk);
  }
  return tab;
}

// Scratch buffers for one group of images.
template <typename T>
struct Workspace {
  std::vector<T> channels;  // [group][8][H][W]: orientation channels (backward: their gradient)
  std::vector<T> rows;      // [group][8][rows][W]: pooled along y (backward: its gradient)
  Workspace(const Geometry& g, int64_t group)
      : channels(group * kNumBinT * g.height * g.width),
        rows(group * kNumBinT * g.num_rows() * g.width) {}
};

// Pooled histograms h (before normalization) of images [0, n) of the group starting at `x`,
// written to `h` ([n][N][128]).
template <typename T>
void dsift_histograms(const T* x, int64_t n, const Geometry& g, const Tables<T>& tab,
                      Workspace<T>& ws, T* h) {
  const int H = g.height, W = g.width, R = g.num_rows(), C = g.num_cols();
  const int64_t plane = static_cast<int64_t>(H) * W;
  const int taps = g.taps();
  T* channels = ws.channels.data();
  T* rows = ws.rows.data();

  // 1. Orientation channels.
  at::parallel_for(0, n * H, 4, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / H;
      const int y = static_cast<int>(item % H);
      const T* im = x + b * plane;
      T* out = channels + b * kNumBinT * plane + static_cast<int64_t>(y) * W;
      for (int t = 0; t < kNumBinT; ++t) std::fill(out + t * plane, out + t * plane + W, T(0));
      for (int xx = 0; xx < W; ++xx) {
        const auto p = dsift::pixel_orientation(im, H, W, xx, y);
        out[p.lower * plane + xx] = dsift::lower_weight(p);
        out[p.upper * plane + xx] = dsift::upper_weight(p);
      }
    }
  });

  // 2. Pool along y at the sampled rows.
  if (!g.flat_window) {
    at::parallel_for(0, n * kNumBinT * R, 4, [&](int64_t begin, int64_t end) {
      for (int64_t item = begin; item < end; ++item) {
        const int r = static_cast<int>(item % R);
        const int64_t bt = item / R;  // b * 8 + t
        const T* src = channels + bt * plane;
        T* dst = rows + item * W;
        const int position = g.position(r);
        const T* kernel = tab.kernels.data() + (r % kNumBinXY) * taps;
        // dsift::filter_taps for every column at once: the same products and sums, in the
        // same order (ascending source row), vectorized along the row.
        std::fill(dst, dst + W, T(0));
        for (int k = 0; k < taps; ++k) {
          const T* line = src + dsift::clamp_index(position - (taps - 1) / 2 + k, H) *
                                    static_cast<int64_t>(W);
          const T w = kernel[taps - 1 - k];
          for (int xx = 0; xx < W; ++xx) dst[xx] += line[xx] * w;
        }
      }
    });
  } else {
    const int delta = g.bin_size;
    const T scale = dsift::triangle_filter_scale<T>(delta);
    at::parallel_for(0, n * kNumBinT, 1, [&](int64_t begin, int64_t end) {
      std::vector<T> buf(H + delta);
      for (int64_t bt = begin; bt < end; ++bt) {
        const T* src = channels + bt * plane;
        T* dst = rows + bt * R * W;
        for (int xx = 0; xx < W; ++xx) {
          dsift::triangle_filter_integrals(src + xx, W, H, delta, buf.data());
          for (int r = 0; r < R; ++r) {
            dst[static_cast<int64_t>(r) * W + xx] =
                dsift::triangle_filter_value(buf.data(), g.position(r), delta, scale);
          }
        }
      }
    });
  }

  // 3. Pool along x at the sampled columns; scatter into the descriptors.
  const int64_t frames = g.num_frames();
  at::parallel_for(0, n * kNumBinT * R, 4, [&](int64_t begin, int64_t end) {
    std::vector<T> buf(W + g.bin_size);
    const T scale = dsift::triangle_filter_scale<T>(g.bin_size);
    for (int64_t item = begin; item < end; ++item) {
      const int r = static_cast<int>(item % R);
      const int t = static_cast<int>((item / R) % kNumBinT);
      const int64_t b = item / (R * kNumBinT);
      const T* line = rows + item * W;
      T* out = h + b * frames * kDescriptorSize;
      if (!g.flat_window) {
        for (int c = 0; c < C; ++c) {
          out[g.output_index(r, c, t)] = dsift::filter_taps(
              line, 1, W, g.position(c), tab.kernels.data() + (c % kNumBinXY) * taps, taps);
        }
      } else {
        dsift::triangle_filter_integrals(line, 1, W, g.bin_size, buf.data());
        const T wy = tab.flat_weights[r % kNumBinXY];
        for (int c = 0; c < C; ++c) {
          const T w = tab.flat_weights[c % kNumBinXY] * wy;
          out[g.output_index(r, c, t)] =
              w * dsift::triangle_filter_value(buf.data(), g.position(c), g.bin_size, scale);
        }
      }
    }
  });
}

int64_t group_size(int64_t batch) {
  return std::max<int64_t>(1, std::min<int64_t>(batch, at::get_num_threads()));
}

template <typename T>
void dsift_forward_impl(const T* x, T* out, int64_t batch, const Geometry& g) {
  const Tables<T> tab = make_tables<T>(g, false);
  const int64_t group = group_size(batch);
  Workspace<T> ws(g, group);
  const int64_t plane = static_cast<int64_t>(g.height) * g.width;
  const int64_t frames = g.num_frames();
  for (int64_t b0 = 0; b0 < batch; b0 += group) {
    const int64_t n = std::min(group, batch - b0);
    T* h = out + b0 * frames * kDescriptorSize;
    dsift_histograms(x + b0 * plane, n, g, tab, ws, h);
    at::parallel_for(0, n * frames, 16, [&](int64_t begin, int64_t end) {
      for (int64_t f = begin; f < end; ++f) dsift::normalize_descriptor(h + f * kDescriptorSize);
    });
  }
}

template <typename T>
void dsift_backward_impl(const T* grad, const T* x, T* grad_x, int64_t batch, const Geometry& g) {
  const Tables<T> tab = make_tables<T>(g, true);
  const int64_t group = group_size(batch);
  Workspace<T> ws(g, group);
  const int H = g.height, W = g.width, R = g.num_rows();
  const int64_t plane = static_cast<int64_t>(H) * W;
  const int64_t frames = g.num_frames();
  std::vector<T> h(group * frames * kDescriptorSize);
  std::vector<T> d_gradient(group * 2 * plane);  // dL/dgx, dL/dgy per image

  for (int64_t b0 = 0; b0 < batch; b0 += group) {
    const int64_t n = std::min(group, batch - b0);
    const T* xg = x + b0 * plane;
    dsift_histograms(xg, n, g, tab, ws, h.data());

    // dL/dh, in place.
    const T* grad_g = grad + b0 * frames * kDescriptorSize;
    at::parallel_for(0, n * frames, 16, [&](int64_t begin, int64_t end) {
      for (int64_t f = begin; f < end; ++f) {
        T* hf = h.data() + f * kDescriptorSize;
        dsift::normalize_descriptor_backward(hf, grad_g + f * kDescriptorSize, hf);
      }
    });

    // dL/d(rows): transpose of the pooling along x.
    T* d_rows = ws.rows.data();
    at::parallel_for(0, n * kNumBinT * R, 4, [&](int64_t begin, int64_t end) {
      for (int64_t item = begin; item < end; ++item) {
        const int r = static_cast<int>(item % R);
        const int t = static_cast<int>((item / R) % kNumBinT);
        const int64_t b = item / (R * kNumBinT);
        const T* dh = h.data() + b * frames * kDescriptorSize;
        T* dst = d_rows + item * W;
        for (int xx = 0; xx < W; ++xx) {
          T acc = T(0);
          for (int e = tab.cols_t.offsets[xx]; e < tab.cols_t.offsets[xx + 1]; ++e) {
            acc += tab.cols_t.weights[e] * dh[g.output_index(r, tab.cols_t.samples[e], t)];
          }
          dst[xx] = acc;
        }
      }
    });

    // dL/d(channels): transpose of the pooling along y.
    T* d_channels = ws.channels.data();
    at::parallel_for(0, n * kNumBinT * H, 4, [&](int64_t begin, int64_t end) {
      for (int64_t item = begin; item < end; ++item) {
        const int p = static_cast<int>(item % H);
        const int64_t bt = item / H;
        T* dst = d_channels + item * W;
        std::fill(dst, dst + W, T(0));
        for (int e = tab.rows_t.offsets[p]; e < tab.rows_t.offsets[p + 1]; ++e) {
          const T* src = d_rows + (bt * R + tab.rows_t.samples[e]) * W;
          const T w = tab.rows_t.weights[e];
          for (int xx = 0; xx < W; ++xx) dst[xx] += w * src[xx];
        }
      }
    });

    // dL/dgx, dL/dgy per pixel, then dL/dx.
    at::parallel_for(0, n * H, 4, [&](int64_t begin, int64_t end) {
      for (int64_t item = begin; item < end; ++item) {
        const int64_t b = item / H;
        const int y = static_cast<int>(item % H);
        const T* im = xg + b * plane;
        const T* dc = d_channels + b * kNumBinT * plane + static_cast<int64_t>(y) * W;
        T* dgx = d_gradient.data() + b * 2 * plane + static_cast<int64_t>(y) * W;
        T* dgy = dgx + plane;
        for (int xx = 0; xx < W; ++xx) {
          const auto px = dsift::pixel_orientation(im, H, W, xx, y);
          dsift::pixel_orientation_backward(px, dc[px.lower * plane + xx],
                                            dc[px.upper * plane + xx], dgx[xx], dgy[xx]);
        }
      }
    });
    at::parallel_for(0, n * H, 4, [&](int64_t begin, int64_t end) {
      for (int64_t item = begin; item < end; ++item) {
        const int64_t b = item / H;
        const int y = static_cast<int>(item % H);
        const T* dgx = d_gradient.data() + b * 2 * plane;
        T* dst = grad_x + (b0 + b) * plane + static_cast<int64_t>(y) * W;
        for (int xx = 0; xx < W; ++xx) {
          dst[xx] = dsift::image_gradient_backward(dgx, dgx + plane, H, W, xx, y);
        }
      }
    });
  }
}

at::Tensor dsift_forward_kernel(const at::Tensor& x, int64_t step, int64_t bin_size,
                                bool flat_window) {
  const Geometry g = dsift_geometry(x, step, bin_size, flat_window, "dsift");
  const int64_t batch = x.size(0);
  at::Tensor out = at::empty({batch, g.num_frames(), kDescriptorSize}, x.options());
  if (batch == 0) return out;
  const at::Tensor xc = x.contiguous();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "dsift_forward", [&] {
    dsift_forward_impl<scalar_t>(xc.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), batch, g);
  });
  return out;
}

at::Tensor dsift_backward_kernel(const at::Tensor& grad, const at::Tensor& x, int64_t step,
                                 int64_t bin_size, bool flat_window) {
  const Geometry g = dsift_geometry(x, step, bin_size, flat_window, "_dsift_backward");
  check_same_device_dtype(grad, x, "_dsift_backward", "grad");
  const int64_t batch = x.size(0);
  TORCH_CHECK(grad.dim() == 3 && grad.size(0) == batch && grad.size(1) == g.num_frames() &&
                  grad.size(2) == kDescriptorSize,
              "_dsift_backward: expected grad of shape (", batch, ", ", g.num_frames(), ", ",
              kDescriptorSize, "), got ", grad.sizes());
  at::Tensor grad_x = at::empty({batch, 1, g.height, g.width}, x.options());
  if (batch == 0) return grad_x;
  const at::Tensor xc = x.contiguous();
  const at::Tensor gc = grad.contiguous();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "dsift_backward", [&] {
    dsift_backward_impl<scalar_t>(gc.data_ptr<scalar_t>(), xc.data_ptr<scalar_t>(),
                                  grad_x.data_ptr<scalar_t>(), batch, g);
  });
  return grad_x;
}

}  // namespace

TORCH_LIBRARY_IMPL(pyinvert, CPU, m) {
  m.impl("dsift", &dsift_forward_kernel);
  m.impl("_dsift_backward", &dsift_backward_kernel);
}

}  // namespace pyinvert
