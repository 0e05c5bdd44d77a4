// Dense SIFT on the CPU: VLFeat 0.9.21's vl_dsift_process (see common/dsift_math.h) and its
// gradient, for a batch of grayscale images. A batch is parallel over images (at::parallel_for,
// each image's stages run back to back in one thread, in cache); a batch smaller than the thread
// pool runs each stage in parallel over rows instead, so one large image uses every core. No
// atomics: every output element is written by one work item in a fixed order (deterministic).
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

#include <algorithm>
#include <cstring>
#include <tuple>
#include <vector>

#include "common/checks.h"
#include "common/dsift_math.h"
#include "common/finite.h"
#include "cpu/output_cache.h"

namespace pyinvert {
namespace {

using dsift::Geometry;
using dsift::kDescriptorSize;
using dsift::kNumBinT;
using dsift::kNumBinXY;

// acc[0..8) += w * src[0..8): 8 orientations at once, in 16-byte GNU vectors (GCC 12 does not
// vectorize the plain loop over 8 lanes well).
template <typename T>
struct Lanes8 {
  typedef T Vector __attribute__((vector_size(16)));
  static constexpr int kPerVector = 16 / sizeof(T), kVectors = kNumBinT / kPerVector;
  Vector v[kVectors] = {};
  static Lanes8 load(const T* src) {
    Lanes8 l;
    std::memcpy(l.v, src, sizeof(l.v));
    return l;
  }
  void add(T w, const T* src) {
    for (int i = 0; i < kVectors; ++i) {
      Vector s;
      std::memcpy(&s, src + i * kPerVector, sizeof(Vector));
      v[i] += s * w;
    }
  }
  void store(T* dst) const { std::memcpy(dst, v, sizeof(v)); }
};

// Per-call constant tables in the input's precision.
template <typename T>
struct Tables {
  std::vector<T> kernels;              // [4][taps] forward Gaussian-window kernels
  std::vector<T> flat_weights;         // [4] flat-window bin weights
  std::vector<T> backward_kernels;     // [4][taps] the pooling kernels the backward transposes
  dsift::TransposedPooling<T> rows_t;  // backward only
};

template <typename T>
Tables<T> make_tables(const Geometry& g, bool backward) {
  Tables<T> tab;
  const std::vector<float> k = dsift::gaussian_bin_kernels(g.bin_size);
  tab.kernels.assign(k.begin(), k.end());
  const std::vector<float> w = dsift::flat_window_weights(g.bin_size);
  tab.flat_weights.assign(w.begin(), w.end());
  if (backward) {
    tab.backward_kernels = dsift::pooling_kernels<T>(g.bin_size, g.flat_window);
    tab.rows_t = dsift::transpose_pooling<T>(g, g.height, g.num_rows(), tab.backward_kernels);
  }
  return tab;
}

constexpr int kLaneChunk = 256;  // lanes per flat-window column integral (fits in L1/L2)

// The stages for a group of n images. Buffers keep the orientation t fastest (8 contiguous
// values per pixel), matching the descriptor layout, so every inner loop is contiguous:
//   channels [n][H][W][8]  orientation channels (backward: their gradient)
//   rows     [n][R][W][8]  channels pooled along y at the R sampled rows (backward: gradient)
//   h        [n][N][128]   pooled histograms / descriptors (backward: their gradient)
// Each stage processes work items [begin, end); items never write to the same element.
template <typename T>
struct Stages {
  const Geometry& g;
  const Tables<T>& tab;
  int64_t n;
  int H, W, R, C, taps;
  int64_t plane8, row8, frames;  // H * W * 8, W * 8, N
  int64_t first;                 // batch index of the group's image 0
  FirstBadImage* bad;            // where the orientation stages report a non-finite pixel

  Stages(const Geometry& geometry, const Tables<T>& tables, int64_t images, int64_t first_image,
         FirstBadImage* bad_image)
      : g(geometry), tab(tables), n(images), H(g.height), W(g.width), R(g.num_rows()),
        C(g.num_cols()), taps(g.taps()), plane8(static_cast<int64_t>(H) * W * kNumBinT),
        row8(static_cast<int64_t>(W) * kNumBinT), frames(g.num_frames()), first(first_image),
        bad(bad_image) {}

  int64_t chunks() const { return (row8 + kLaneChunk - 1) / kLaneChunk; }

  // 0. Reports the images of rows (image, row y) in [begin, end) that hold a non-finite pixel
  // (the stages compute on regardless). Run on the orientation stages' items just before them,
  // so the rows are then in cache; a loop of its own keeps theirs as they were (measured: the
  // check inside them slowed the backward by 18%).
  void check_finite(const T* x, int64_t begin, int64_t end) const {
    for (int64_t item = begin; item < end; ++item) {
      if (!all_finite(x + item * W, W)) bad->report(first + item / H);
    }
  }

  // 1. Orientation channels; items (image, row y).
  int64_t orientation_items() const { return n * H; }
  void orientation(const T* x, T* channels, int64_t begin, int64_t end) const {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / H;
      const int y = static_cast<int>(item % H);
      const T* im = x + b * H * static_cast<int64_t>(W);
      T* out = channels + b * plane8 + y * row8;
      std::fill(out, out + row8, T(0));
      for (int xx = 0; xx < W; ++xx) {
        const auto p = dsift::pixel_orientation(im, H, W, xx, y);
        out[xx * kNumBinT + p.lower] = dsift::lower_weight(p);
        out[xx * kNumBinT + p.upper] = dsift::upper_weight(p);
      }
    }
  }

  // 2. Pooling along y at the sampled rows; items (image, row sample r), or for the flat window
  // (image, chunk of lanes) since its running sums need every row.
  int64_t pool_rows_items() const { return g.flat_window ? n * chunks() : n * R; }
  void pool_rows(const T* channels, T* rows, int64_t begin, int64_t end) const {
    if (!g.flat_window) {
      for (int64_t item = begin; item < end; ++item) {
        const int64_t b = item / R;
        const int r = static_cast<int>(item % R);
        T* dst = rows + item * row8;
        std::fill(dst, dst + row8, T(0));
        dsift::filter_taps(channels + b * plane8, row8, H, g.position(r),
                           tab.kernels.data() + (r % kNumBinXY) * taps, taps,
                           static_cast<int>(row8), dst);
      }
      return;
    }
    const int delta = g.bin_size;
    const T scale = dsift::triangle_filter_scale<T>(delta);
    std::vector<T> buf(static_cast<int64_t>(H + delta) * kLaneChunk);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / chunks();
      const int64_t l0 = (item % chunks()) * kLaneChunk;
      const int lanes = static_cast<int>(std::min<int64_t>(kLaneChunk, row8 - l0));
      dsift::triangle_filter_integrals(channels + b * plane8 + l0, row8, H, delta, lanes,
                                       buf.data(), lanes);
      for (int r = 0; r < R; ++r) {
        T* dst = rows + (b * R + r) * row8 + l0;
        for (int l = 0; l < lanes; ++l) {
          dst[l] = dsift::triangle_filter_value(buf.data(), g.position(r), delta, lanes, l, scale);
        }
      }
    }
  }

  // 3. Pooling along x at the sampled columns, into the histograms; items (image, row r).
  int64_t pool_cols_items() const { return n * R; }
  void pool_cols(const T* rows, T* h, int64_t begin, int64_t end) const {
    const int delta = g.bin_size;
    const T scale = dsift::triangle_filter_scale<T>(delta);
    std::vector<T> buf(g.flat_window ? static_cast<int64_t>(W + delta) * kNumBinT : 0);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / R;
      const int r = static_cast<int>(item % R);
      const T* line = rows + item * row8;
      T* hb = h + b * frames * kDescriptorSize;
      if (!g.flat_window) {
        for (int c = 0; c < C; ++c) {
          dsift::filter_taps_lanes<kNumBinT>(line, kNumBinT, W, g.position(c),
                                             tab.kernels.data() + (c % kNumBinXY) * taps, taps,
                                             hb + g.output_index(r, c, 0));
        }
      } else {
        dsift::triangle_filter_integrals_lanes<kNumBinT>(line, kNumBinT, W, delta, buf.data());
        const T wy = tab.flat_weights[r % kNumBinXY];
        for (int c = 0; c < C; ++c) {
          T* out = hb + g.output_index(r, c, 0);
          const T w = tab.flat_weights[c % kNumBinXY] * wy;  // VLFeat: w = wx * wy
          for (int t = 0; t < kNumBinT; ++t) {
            out[t] = w * dsift::triangle_filter_value(buf.data(), g.position(c), delta, kNumBinT, t,
                                                      scale);
          }
        }
      }
    }
  }

  // 4. Normalization; items: descriptors.
  int64_t descriptor_items() const { return n * frames; }
  void normalize(T* h, int64_t begin, int64_t end) const {
    constexpr int kInterleave = 4;  // independent sequential sums in flight
    int64_t f = begin;
    for (; f + kInterleave <= end; f += kInterleave) {
      T* group[kInterleave];
      for (int j = 0; j < kInterleave; ++j) group[j] = h + (f + j) * kDescriptorSize;
      dsift::normalize_descriptors<kInterleave>(group);
    }
    for (; f < end; ++f) dsift::normalize_descriptor(h + f * kDescriptorSize);
  }

  // Backward 4: dL/dh from dL/d(descriptor) and the histograms h saved by the forward.
  void normalize_backward(const T* grad, const T* h, T* d_h, int64_t begin, int64_t end) const {
    for (int64_t f = begin; f < end; ++f) {
      dsift::normalize_descriptor_backward(h + f * kDescriptorSize, grad + f * kDescriptorSize,
                                           d_h + f * kDescriptorSize);
    }
  }

  // Backward 3: dL/d(rows) = transpose of the pooling along x, scattered sample by sample and
  // tap by tap within the row (the order of the CSR gather the CUDA kernel does); items
  // (image, row r).
  void pool_cols_backward(const T* dh, T* d_rows, int64_t begin, int64_t end) const {
    const std::vector<T>& kernels = tab.backward_kernels;
    const int radius = g.bin_size - 1;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / R;
      const int r = static_cast<int>(item % R);
      const T* dhr = dh + b * frames * kDescriptorSize + g.output_index(r, 0, 0);
      T* dst = d_rows + item * row8;
      std::fill(dst, dst + row8, T(0));
      for (int c = 0; c < C; ++c) {
        const T* src = dhr + (c / kNumBinXY) * kDescriptorSize + (c % kNumBinXY) * kNumBinT;
        const T* kernel = kernels.data() + (c % kNumBinXY) * taps;
        const int position = g.position(c);
        for (int k = 0; k < taps; ++k) {
          T* out = dst + dsift::clamp_index(position - radius + k, W) * kNumBinT;
          Lanes8<T> acc = Lanes8<T>::load(out);
          acc.add(kernel[taps - 1 - k], src);
          acc.store(out);
        }
      }
    }
  }

  // Backward 2: dL/d(channels) = transpose of the pooling along y; items (image, pixel row p).
  void pool_rows_backward(const T* d_rows, T* d_channels, int64_t begin, int64_t end) const {
    const auto& rt = tab.rows_t;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / H;
      const int p = static_cast<int>(item % H);
      T* dst = d_channels + b * plane8 + p * row8;
      std::fill(dst, dst + row8, T(0));
      for (int e = rt.offsets[p]; e < rt.offsets[p + 1]; ++e) {
        const T* src = d_rows + (b * R + rt.samples[e]) * row8;
        const T w = rt.weights[e];
        for (int64_t l = 0; l < row8; ++l) dst[l] += w * src[l];
      }
    }
  }

  // Backward 1: dL/dgx, dL/dgy per pixel ([n][2][H][W]); items (image, row y).
  void orientation_backward(const T* x, const T* d_channels, T* d_gradient, int64_t begin,
                            int64_t end) const {
    const int64_t plane = static_cast<int64_t>(H) * W;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / H;
      const int y = static_cast<int>(item % H);
      const T* im = x + b * plane;
      const T* dc = d_channels + b * plane8 + y * row8;
      T* dgx = d_gradient + b * 2 * plane + static_cast<int64_t>(y) * W;
      T* dgy = dgx + plane;
      for (int xx = 0; xx < W; ++xx) {
        const auto px = dsift::pixel_orientation(im, H, W, xx, y);
        dsift::pixel_orientation_backward(px, dc[xx * kNumBinT + px.lower],
                                          dc[xx * kNumBinT + px.upper], dgx[xx], dgy[xx]);
      }
    }
  }

  // Backward 0: dL/dx from dL/dgx, dL/dgy; items (image, row y).
  void gradient_backward(const T* d_gradient, T* grad_x, int64_t begin, int64_t end) const {
    const int64_t plane = static_cast<int64_t>(H) * W;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / H;
      const int y = static_cast<int>(item % H);
      const T* dgx = d_gradient + b * 2 * plane;
      T* dst = grad_x + b * plane + static_cast<int64_t>(y) * W;
      for (int xx = 0; xx < W; ++xx) {
        dst[xx] = dsift::image_gradient_backward(dgx, dgx + plane, H, W, xx, y);
      }
    }
  }
};

// Runs f(begin, end) over [0, items): in parallel, or inline when the caller already is a
// parallel region over images.
template <typename F>
void run(bool parallel, int64_t items, const F& f) {
  if (parallel) {
    at::parallel_for(0, items, 1, f);
  } else {
    f(0, items);
  }
}

template <typename T>
struct Buffers {
  std::vector<T> channels, rows, h, d_gradient;
  Buffers(const Geometry& g, int64_t n, bool backward)
      : channels(n * g.height * static_cast<int64_t>(g.width) * kNumBinT),
        rows(n * g.num_rows() * static_cast<int64_t>(g.width) * kNumBinT),
        h(backward ? n * g.num_frames() * kDescriptorSize : 0),
        d_gradient(backward ? n * 2 * g.height * static_cast<int64_t>(g.width) : 0) {}
};

// Forward of n images x -> descriptors out ([n][N][128]) and, when `histograms` is not null,
// the histograms before normalization (what the backward needs).
template <typename T>
void forward_images(const Stages<T>& s, Buffers<T>& buf, const T* x, T* out, T* histograms,
                    bool parallel) {
  run(parallel, s.orientation_items(), [&](int64_t b, int64_t e) {
    s.check_finite(x, b, e);
    s.orientation(x, buf.channels.data(), b, e);
  });
  run(parallel, s.pool_rows_items(),
      [&](int64_t b, int64_t e) { s.pool_rows(buf.channels.data(), buf.rows.data(), b, e); });
  run(parallel, s.pool_cols_items(),
      [&](int64_t b, int64_t e) { s.pool_cols(buf.rows.data(), out, b, e); });
  run(parallel, s.descriptor_items(), [&](int64_t b, int64_t e) {
    if (histograms != nullptr) {
      std::copy(out + b * kDescriptorSize, out + e * kDescriptorSize,
                histograms + b * kDescriptorSize);
    }
    s.normalize(out, b, e);
  });
}

// Backward of n images: grad and histograms ([n][N][128]) -> grad_x ([n][H][W]).
template <typename T>
void backward_images(const Stages<T>& s, Buffers<T>& buf, const T* grad, const T* histograms,
                     const T* x, T* grad_x, bool parallel) {
  T* d_h = buf.h.data();
  run(parallel, s.descriptor_items(),
      [&](int64_t b, int64_t e) { s.normalize_backward(grad, histograms, d_h, b, e); });
  run(parallel, s.pool_cols_items(),
      [&](int64_t b, int64_t e) { s.pool_cols_backward(d_h, buf.rows.data(), b, e); });
  run(parallel, s.orientation_items(), [&](int64_t b, int64_t e) {
    s.pool_rows_backward(buf.rows.data(), buf.channels.data(), b, e);
  });
  run(parallel, s.orientation_items(), [&](int64_t b, int64_t e) {
    s.check_finite(x, b, e);
    s.orientation_backward(x, buf.channels.data(), buf.d_gradient.data(), b, e);
  });
  run(parallel, s.orientation_items(),
      [&](int64_t b, int64_t e) { s.gradient_backward(buf.d_gradient.data(), grad_x, b, e); });
}

// A batch at least as large as the thread pool is split over images (each image sequential,
// no synchronization between stages); a smaller one runs each stage in parallel over rows.
template <typename T, typename F>
void for_each_image_group(int64_t batch, const Geometry& g, bool backward, const F& f) {
  if (batch >= at::get_num_threads()) {
    at::parallel_for(0, batch, 1, [&](int64_t begin, int64_t end) {
      Buffers<T> buf(g, 1, backward);
      for (int64_t b = begin; b < end; ++b) f(buf, b, int64_t{1}, false);
    });
  } else {
    Buffers<T> buf(g, batch, backward);
    f(buf, int64_t{0}, batch, true);
  }
}

// Returns the first image with a non-finite pixel, or -1 (as dsift_backward_impl).
template <typename T>
int64_t dsift_forward_impl(const T* x, T* out, T* histograms, int64_t batch, const Geometry& g) {
  const Tables<T> tab = make_tables<T>(g, false);
  FirstBadImage bad;
  const int64_t plane = static_cast<int64_t>(g.height) * g.width;
  const int64_t descriptors = g.num_frames() * static_cast<int64_t>(kDescriptorSize);
  for_each_image_group<T>(
      batch, g, false, [&](Buffers<T>& buf, int64_t b0, int64_t n, bool parallel) {
        const Stages<T> s(g, tab, n, b0, &bad);
        forward_images(s, buf, x + b0 * plane, out + b0 * descriptors,
                       histograms ? histograms + b0 * descriptors : nullptr, parallel);
      });
  return bad.get();
}

template <typename T>
int64_t dsift_backward_impl(const T* grad, const T* histograms, const T* x, T* grad_x,
                            int64_t batch, const Geometry& g) {
  const Tables<T> tab = make_tables<T>(g, true);
  FirstBadImage bad;
  const int64_t plane = static_cast<int64_t>(g.height) * g.width;
  const int64_t descriptors = g.num_frames() * static_cast<int64_t>(kDescriptorSize);
  for_each_image_group<T>(
      batch, g, true, [&](Buffers<T>& buf, int64_t b0, int64_t n, bool parallel) {
        const Stages<T> s(g, tab, n, b0, &bad);
        backward_images(s, buf, grad + b0 * descriptors, histograms + b0 * descriptors,
                        x + b0 * plane, grad_x + b0 * plane, parallel);
      });
  return bad.get();
}

std::tuple<at::Tensor, at::Tensor> dsift_forward_kernel(const at::Tensor& x, int64_t step,
                                                        int64_t bin_size, bool flat_window,
                                                        bool return_histograms) {
  const Geometry g = dsift::checked_geometry(x, step, bin_size, flat_window, "dsift");
  const int64_t batch = x.size(0);
  at::Tensor out = empty_recycled({batch, g.num_frames(), kDescriptorSize}, x.options());
  at::Tensor histograms =
      return_histograms ? empty_recycled(out.sizes(), x.options()) : at::empty({0}, x.options());
  if (batch == 0) return {out, histograms};
  const at::Tensor xc = x.contiguous();
  int64_t bad_image = -1;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "dsift_forward", [&] {
    bad_image = dsift_forward_impl<scalar_t>(
        xc.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(),
        return_histograms ? histograms.data_ptr<scalar_t>() : nullptr, batch, g);
  });
  check_finite_pixels(bad_image, "dsift");
  return {out, histograms};
}

at::Tensor dsift_backward_kernel(const at::Tensor& grad, const at::Tensor& x,
                                 const at::Tensor& histograms, int64_t step, int64_t bin_size,
                                 bool flat_window) {
  const Geometry g = dsift::checked_geometry(x, step, bin_size, flat_window, "_dsift_backward");
  dsift::check_backward_inputs(grad, histograms, x, g);
  const int64_t batch = x.size(0);
  at::Tensor grad_x = empty_recycled({batch, 1, g.height, g.width}, x.options());
  if (batch == 0) return grad_x;
  const at::Tensor xc = x.contiguous();
  const at::Tensor gc = grad.contiguous();
  const at::Tensor hc = histograms.contiguous();
  int64_t bad_image = -1;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "dsift_backward", [&] {
    bad_image = dsift_backward_impl<scalar_t>(gc.data_ptr<scalar_t>(), hc.data_ptr<scalar_t>(),
                                              xc.data_ptr<scalar_t>(), grad_x.data_ptr<scalar_t>(),
                                              batch, g);
  });
  check_finite_pixels(bad_image, "_dsift_backward");
  return grad_x;
}

}  // namespace

TORCH_LIBRARY_IMPL(pyinvert, CPU, m) {
  m.impl("dsift", &dsift_forward_kernel);
  m.impl("_dsift_backward", &dsift_backward_kernel);
}

}  // namespace pyinvert
