// CPU driver of HOG (forward and backward); the math is in common/hog_math.h.
//
// Forward: tasks are (image, run of cell rows). A task zeroes its cell rows, visits the pixel
// rows that touch them top to bottom, left to right, and adds each pixel's contribution to the
// cells of its own rows only. So every histogram entry is written by one task and receives its
// terms in raster order, exactly as VLFeat accumulates them (same float rounding), whatever
// the number of threads. Pixel rows shared by two tasks are evaluated twice (one cell row of
// overlap per task). A second pass normalises the cells.
//
// Backward: three passes over cells (norms, the direct terms and the block-sum gradients, the
// norm gradients gathered from the neighbouring blocks), one over pixels (gradient with respect
// to the chosen channel's central differences) and one gathering those into the image. Each
// output is written by exactly one task: deterministic, no atomics.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "common/checks.h"
#include "common/hog_math.h"

namespace pyinvert {

// Argument checks shared with the CUDA driver (declared there).
void check_hog_args(const at::Tensor& x, int64_t cell_size, int64_t num_orientations,
                    int64_t variant) {
  check_image_batch(x, "hog");
  TORCH_CHECK(x.size(1) >= 1, "hog: expected x with at least 1 channel, got C=", x.size(1));
  TORCH_CHECK(cell_size >= 1, "hog: expected cell_size >= 1, got ", cell_size);
  TORCH_CHECK(num_orientations >= 1, "hog: expected num_orientations >= 1, got ",
              num_orientations);
  TORCH_CHECK(variant == hog::kUoctti || variant == hog::kDalalTriggs,
              "hog: expected variant 0 (uoctti) or 1 (dalaltriggs), got ", variant);
  const int64_t H = x.size(2), W = x.size(3);
  TORCH_CHECK(hog::num_cells(H, cell_size) >= 1 && hog::num_cells(W, cell_size) >= 1,
              "hog: expected H and W >= ", cell_size - cell_size / 2,
              " (at least half a cell of cell_size=", cell_size, "), got H=", H, ", W=", W);
}

void check_hog_backward_args(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& hist,
                             int64_t cell_size, int64_t num_orientations, int64_t variant) {
  check_hog_args(x, cell_size, num_orientations, variant);
  check_same_device_dtype(grad, x, "_hog_backward", "grad");
  check_same_device_dtype(hist, x, "_hog_backward", "hist");
  const int64_t B = x.size(0);
  const int64_t Hc = hog::num_cells(x.size(2), cell_size);
  const int64_t Wc = hog::num_cells(x.size(3), cell_size);
  const int64_t D = hog::descriptor_size(num_orientations, int(variant));
  TORCH_CHECK(grad.sizes() == at::IntArrayRef({B, D, Hc, Wc}),
              "_hog_backward: expected grad of shape ", at::IntArrayRef({B, D, Hc, Wc}), ", got ",
              grad.sizes());
  TORCH_CHECK(hist.sizes() == at::IntArrayRef({B, 2 * num_orientations, Hc, Wc}),
              "_hog_backward: expected hist of shape ",
              at::IntArrayRef({B, 2 * num_orientations, Hc, Wc}), ", got ", hist.sizes());
}

namespace {

// Splits [begin, end) of the flattened (image, cell row) index into per-image runs.
template <typename F>
void for_each_row_run(int64_t begin, int64_t end, int64_t rows, const F& f) {
  int64_t t = begin;
  while (t < end) {
    const int64_t b = t / rows, r0 = t % rows;
    const int64_t r1 = std::min(rows, r0 + (end - t));
    f(b, r0, r1);
    t += r1 - r0;
  }
}

// Grain of a parallel loop whose items touch about `work` pixel-channels (or cell-dims) each:
// tasks of at least kTaskWork of them. A parallel region costs a barrier, and on a busy
// machine (2 cores shared with other processes) a worker may not get a core for milliseconds,
// so an image the size of 3x224x224 (150k pixel-channels, ~2 ms) runs on the calling thread
// and batches or large images are split.
constexpr int64_t kTaskWork = int64_t(1) << 18;

int64_t grain_for(int64_t work) {
  return std::max<int64_t>(1, kTaskWork / std::max<int64_t>(1, work));
}

template <typename T>
struct HogGrid {
  int64_t B, C, H, W, cs, no, Hc, Wc, plane, D;
  int variant;
  bool bilinear;
  std::vector<T> ox, oy;
  std::vector<hog::CellSplit<T>> sx, sy;

  HogGrid(int64_t B_, int64_t C_, int64_t H_, int64_t W_, int64_t cs_, int64_t no_, int variant_,
          bool bilinear_)
      : B(B_), C(C_), H(H_), W(W_), cs(cs_), no(no_), variant(variant_), bilinear(bilinear_) {
    Hc = hog::num_cells(H, cs);
    Wc = hog::num_cells(W, cs);
    plane = Hc * Wc;
    D = hog::descriptor_size(no, variant);
    ox.resize(no);
    oy.resize(no);
    for (int64_t k = 0; k < no; ++k) hog::orientation_vector(k, no, &ox[k], &oy[k]);
    for (int64_t x = 0; x < W; ++x) sx.push_back(hog::cell_split<T>(x, cs));
    for (int64_t y = 0; y < H; ++y) sy.push_back(hog::cell_split<T>(y, cs));
  }
};

// Per-row scratch: gradient and best two orientation votes of each interior pixel.
template <typename T>
struct RowScratch {
  std::vector<T> gx, gy, mag, w0, w1;
  std::vector<int32_t> channel, b0, b1;
  explicit RowScratch(int64_t W)
      : gx(W), gy(W), mag(W), w0(W), w1(W), channel(W), b0(W), b1(W) {}
};

// Gradients (channel of largest gradient) and orientation votes of the interior pixels of row
// y (1 <= y <= H-2): entry i is pixel x = i + 1. Each step runs over the whole row so that the
// compiler vectorizes it; the per-pixel operations are those of hog_math.h, in the same order.
template <typename T>
void row_orientations(const HogGrid<T>& g, const T* xb, int64_t y, RowScratch<T>& r) {
  const int64_t n = g.W - 2;
  T* gx = r.gx.data();
  T* gy = r.gy.data();
  T* best = r.mag.data();
  int32_t* ch = r.channel.data();
  for (int64_t i = 0; i < n; ++i) {
    gx[i] = gy[i] = best[i] = T(0);
    ch[i] = -1;
  }
  for (int64_t c = 0; c < g.C; ++c) {
    const T* row = xb + c * g.H * g.W + y * g.W;
    const T* up = row - g.W + 1;
    const T* down = row + g.W + 1;
    const int32_t c32 = int32_t(c);
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      // (locals, not references into the arrays: GCC only if-converts the selects then)
      T gxi = gx[i], gyi = gy[i], besti = best[i];
      int32_t chi = ch[i];
      hog::gradient_candidate(row[i], row[i + 2], up[i], down[i], c32, gxi, gyi, besti, chi);
      gx[i] = gxi;
      gy[i] = gyi;
      best[i] = besti;
      ch[i] = chi;
    }
  }
  T* mag = best;
  for (int64_t i = 0; i < n; ++i) mag[i] = hog::rn_sqrt(best[i]);
  T* w0 = r.w0.data();
  T* w1 = r.w1.data();
  int32_t* b0 = r.b0.data();
  int32_t* b1 = r.b1.data();
  for (int64_t i = 0; i < n; ++i) hog::orientation_init(w0[i], b0[i], w1[i], b1[i]);
  const int32_t no = int32_t(g.no);
  for (int32_t k = 0; k < no; ++k) {
    const T ox = g.ox[k], oy = g.oy[k];
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      T w0i = w0[i], w1i = w1[i];
      int32_t b0i = b0[i], b1i = b1[i];
      hog::orientation_vote(gx[i], gy[i], ox, oy, k, no, w0i, b0i, w1i, b1i);
      w0[i] = w0i;
      w1[i] = w1i;
      b0[i] = b0i;
      b1[i] = b1i;
    }
  }
}

// Directed histograms of cell rows [r0, r1) of image `xb` into `hb` (2 no x Hc x Wc).
template <typename T>
void histogram_rows(const HogGrid<T>& g, const T* xb, int64_t r0, int64_t r1, T* hb,
                    RowScratch<T>& scratch) {
  for (int64_t o = 0; o < 2 * g.no; ++o) {
    std::fill(hb + o * g.plane + r0 * g.Wc, hb + o * g.plane + r1 * g.Wc, T(0));
  }
  for (int64_t y = 1; y < g.H - 1; ++y) {
    const hog::CellSplit<T>& sy = g.sy[y];
    // Cell rows this pixel row feeds: sy.bin (weight w1) and sy.bin + 1 (weight w2).
    const bool top = sy.bin >= 0 && sy.bin >= r0 && sy.bin < r1;
    const bool bottom = sy.bin < g.Hc - 1 && sy.bin + 1 >= r0 && sy.bin + 1 < r1;
    if (!top && !bottom) continue;
    row_orientations(g, xb, y, scratch);
    for (int64_t x = 1; x < g.W - 1; ++x) {
      const int64_t i = x - 1;
      const T mag = scratch.mag[i];
      if (scratch.channel[i] < 0) continue;  // zero gradient: adds zero
      const hog::Orientation<T> r =
          hog::orientation_finish(scratch.w0[i], scratch.b0[i], scratch.w1[i], scratch.b1[i],
                                  mag, g.no, g.bilinear);
      const hog::CellSplit<T>& sx = g.sx[x];
      const bool left = sx.bin >= 0, right = sx.bin < g.Wc - 1;
      for (int j = 0; j < 2; ++j) {
        if (r.bin[j] < 0) continue;
        T* h = hb + r.bin[j] * g.plane;
        if (top) {
          T* c = h + sy.bin * g.Wc + sx.bin;
          if (left) c[0] += hog::pixel_contribution(mag, r.weight[j], sx.w1, sy.w1);
          if (right) c[1] += hog::pixel_contribution(mag, r.weight[j], sx.w2, sy.w1);
        }
        if (bottom) {
          T* c = h + (sy.bin + 1) * g.Wc + sx.bin;
          if (left) c[0] += hog::pixel_contribution(mag, r.weight[j], sx.w1, sy.w2);
          if (right) c[1] += hog::pixel_contribution(mag, r.weight[j], sx.w2, sy.w2);
        }
      }
    }
  }
}

template <typename T>
void cell_norm_rows(const HogGrid<T>& g, const T* hb, int64_t r0, int64_t r1, T* nb) {
  for (int64_t i = r0 * g.Wc; i < r1 * g.Wc; ++i) nb[i] = hog::cell_norm(hb + i, g.plane, g.no);
}

template <typename T>
void hog_forward_impl(const HogGrid<T>& g, const T* x, T* hist, T* out) {
  std::vector<T> norms(g.B * g.plane);
  const int64_t image = g.C * g.H * g.W;
  at::parallel_for(0, g.B * g.Hc, grain_for(g.cs * g.W * g.C), [&](int64_t begin, int64_t end) {
    RowScratch<T> scratch(g.W);
    for_each_row_run(begin, end, g.Hc, [&](int64_t b, int64_t r0, int64_t r1) {
      T* hb = hist + b * 2 * g.no * g.plane;
      histogram_rows(g, x + b * image, r0, r1, hb, scratch);
      cell_norm_rows(g, hb, r0, r1, norms.data() + b * g.plane);
    });
  });
  at::parallel_for(0, g.B * g.Hc, grain_for(g.Wc * g.D), [&](int64_t begin, int64_t end) {
    for_each_row_run(begin, end, g.Hc, [&](int64_t b, int64_t r0, int64_t r1) {
      const T* hb = hist + b * 2 * g.no * g.plane;
      const T* nb = norms.data() + b * g.plane;
      T* ob = out + b * g.D * g.plane;
      for (int64_t cy = r0; cy < r1; ++cy) {
        for (int64_t cx = 0; cx < g.Wc; ++cx) {
          double f[4];
          hog::block_factors(nb, cx, cy, g.Wc, g.Hc, f);
          const int64_t i = cy * g.Wc + cx;
          hog::cell_descriptor(hb + i, f, g.plane, g.no, g.variant, ob + i);
        }
      }
    });
  });
}

template <typename T>
void hog_backward_impl(const HogGrid<T>& g, const T* grad, const T* x, const T* hist, T* dx) {
  const int64_t hist_size = 2 * g.no * g.plane;
  const int64_t pixels = g.H * g.W, image = g.C * pixels;
  std::vector<T> norms(g.B * g.plane);
  std::vector<T> dhist(g.B * hist_size);
  std::vector<double> dblock(g.B * g.plane * 4);
  // Per pixel: gradient of the chosen channel's central differences, and that channel (-1:
  // none). Every entry is written by the pixel pass.
  std::unique_ptr<T[]> dgx(new T[g.B * pixels]), dgy(new T[g.B * pixels]);
  std::unique_ptr<int32_t[]> channel(new int32_t[g.B * pixels]);

  // Cells: norms, then direct terms and block-sum gradients, then norm gradients.
  at::parallel_for(0, g.B * g.Hc, grain_for(g.Wc * g.no), [&](int64_t begin, int64_t end) {
    for_each_row_run(begin, end, g.Hc, [&](int64_t b, int64_t r0, int64_t r1) {
      cell_norm_rows(g, hist + b * hist_size, r0, r1, norms.data() + b * g.plane);
    });
  });
  at::parallel_for(0, g.B * g.Hc, grain_for(g.Wc * g.D), [&](int64_t begin, int64_t end) {
    for_each_row_run(begin, end, g.Hc, [&](int64_t b, int64_t r0, int64_t r1) {
      for (int64_t cy = r0; cy < r1; ++cy) {
        for (int64_t cx = 0; cx < g.Wc; ++cx) {
          const int64_t i = cy * g.Wc + cx;
          double f[4];
          hog::block_factors(norms.data() + b * g.plane, cx, cy, g.Wc, g.Hc, f);
          hog::cell_descriptor_backward(hist + b * hist_size + i, f, grad + b * g.D * g.plane + i,
                                        g.plane, g.no, g.variant,
                                        dhist.data() + b * hist_size + i,
                                        dblock.data() + (b * g.plane + i) * 4);
        }
      }
    });
  });
  at::parallel_for(0, g.B * g.Hc, grain_for(g.Wc * (9 + g.no)), [&](int64_t begin, int64_t end) {
    for_each_row_run(begin, end, g.Hc, [&](int64_t b, int64_t r0, int64_t r1) {
      for (int64_t cy = r0; cy < r1; ++cy) {
        for (int64_t cx = 0; cx < g.Wc; ++cx) {
          const int64_t i = cy * g.Wc + cx;
          hog::cell_norm_backward(hist + b * hist_size + i, dblock.data() + b * g.plane * 4, cx,
                                  cy, g.Wc, g.Hc, g.plane, g.no, dhist.data() + b * hist_size + i);
        }
      }
    });
  });

  // Pixels: gradient with respect to (gx, gy) of the chosen channel.
  at::parallel_for(0, g.B * g.H, grain_for(g.W * g.C), [&](int64_t begin, int64_t end) {
    RowScratch<T> scratch(g.W);
    for_each_row_run(begin, end, g.H, [&](int64_t b, int64_t y0, int64_t y1) {
      const T* xb = x + b * image;
      const T* dh = dhist.data() + b * hist_size;
      for (int64_t y = y0; y < y1; ++y) {
        const int64_t row = b * pixels + y * g.W;
        T* gx_row = dgx.get() + row;
        T* gy_row = dgy.get() + row;
        int32_t* ch_row = channel.get() + row;
        std::fill(gx_row, gx_row + g.W, T(0));
        std::fill(gy_row, gy_row + g.W, T(0));
        std::fill(ch_row, ch_row + g.W, -1);
        if (y < 1 || y > g.H - 2) continue;
        row_orientations(g, xb, y, scratch);
        const hog::CellSplit<T>& sy = g.sy[y];
        for (int64_t x_ = 1; x_ < g.W - 1; ++x_) {
          const int64_t i = x_ - 1;
          if (scratch.channel[i] < 0) continue;
          const hog::Orientation<T> r =
              hog::orientation_finish(scratch.w0[i], scratch.b0[i], scratch.w1[i],
                                      scratch.b1[i], scratch.mag[i], g.no, g.bilinear);
          const hog::CellSplit<T>& sx = g.sx[x_];
          const T d0 = hog::bin_gradient(dh, r.bin[0], sx, sy, g.Wc, g.Hc, g.plane);
          const T d1 = r.bin[1] >= 0
                           ? hog::bin_gradient(dh, r.bin[1], sx, sy, g.Wc, g.Hc, g.plane)
                           : T(0);
          hog::pixel_backward(r, scratch.gx[i], scratch.gy[i], scratch.mag[i], g.ox.data(),
                              g.oy.data(), d0, d1, g.bilinear, g.no, &gx_row[x_], &gy_row[x_]);
          ch_row[x_] = scratch.channel[i];
        }
      }
    });
  });

  // Image: each pixel gathers from its 4 neighbours' central differences. Rows y-1 and y+1
  // outside the image are replaced by a row of "no channel".
  at::parallel_for(0, g.B * g.C * g.H, grain_for(g.W), [&](int64_t begin, int64_t end) {
    std::vector<T> zeros(g.W, T(0));
    std::vector<int32_t> none(g.W, -1);
    for (int64_t t = begin; t < end; ++t) {
      const int64_t y = t % g.H, c = (t / g.H) % g.C, b = t / (g.H * g.C);
      const int64_t o = b * pixels + y * g.W;
      const T* gx = dgx.get() + o;
      const int32_t* ch = channel.get() + o;
      const T* gy_up = y >= 1 ? dgy.get() + o - g.W : zeros.data();
      const int32_t* ch_up = y >= 1 ? ch - g.W : none.data();
      const T* gy_down = y + 1 < g.H ? dgy.get() + o + g.W : zeros.data();
      const int32_t* ch_down = y + 1 < g.H ? ch + g.W : none.data();
      T* out = dx + b * image + c * pixels + y * g.W;
      const int32_t c32 = int32_t(c);
      if (g.W == 1) {
        out[0] = hog::image_gradient(T(0), -1, T(0), -1, gy_up[0], ch_up[0], gy_down[0],
                                     ch_down[0], c32);
        continue;
      }
      out[0] = hog::image_gradient(T(0), -1, gx[1], ch[1], gy_up[0], ch_up[0], gy_down[0],
                                   ch_down[0], c32);
#pragma omp simd
      for (int64_t x_ = 1; x_ < g.W - 1; ++x_) {
        out[x_] = hog::image_gradient(gx[x_ - 1], ch[x_ - 1], gx[x_ + 1], ch[x_ + 1], gy_up[x_],
                                      ch_up[x_], gy_down[x_], ch_down[x_], c32);
      }
      const int64_t e = g.W - 1;
      out[e] = hog::image_gradient(gx[e - 1], ch[e - 1], T(0), -1, gy_up[e], ch_up[e],
                                   gy_down[e], ch_down[e], c32);
    }
  });
}

std::tuple<at::Tensor, at::Tensor> hog_forward_kernel(const at::Tensor& x, int64_t cell_size,
                                                      int64_t num_orientations, int64_t variant,
                                                      bool bilinear_orientations) {
  check_hog_args(x, cell_size, num_orientations, variant);
  const at::Tensor xc = x.contiguous();
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t Hc = hog::num_cells(H, cell_size), Wc = hog::num_cells(W, cell_size);
  const int64_t D = hog::descriptor_size(num_orientations, int(variant));
  at::Tensor out = at::empty({B, D, Hc, Wc}, x.options());
  at::Tensor hist = at::empty({B, 2 * num_orientations, Hc, Wc}, x.options());
  if (B == 0) return {out, hist};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "hog", [&] {
    const HogGrid<scalar_t> grid(B, C, H, W, cell_size, num_orientations, int(variant),
                                 bilinear_orientations);
    hog_forward_impl<scalar_t>(grid, xc.data_ptr<scalar_t>(), hist.data_ptr<scalar_t>(),
                               out.data_ptr<scalar_t>());
  });
  return {out, hist};
}

at::Tensor hog_backward_kernel(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& hist,
                               int64_t cell_size, int64_t num_orientations, int64_t variant,
                               bool bilinear_orientations) {
  check_hog_backward_args(grad, x, hist, cell_size, num_orientations, variant);
  const at::Tensor xc = x.contiguous(), gc = grad.contiguous(), hc = hist.contiguous();
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  at::Tensor dx = at::empty({B, C, H, W}, x.options());
  if (B == 0) return dx;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "_hog_backward", [&] {
    const HogGrid<scalar_t> grid(B, C, H, W, cell_size, num_orientations, int(variant),
                                 bilinear_orientations);
    hog_backward_impl<scalar_t>(grid, gc.data_ptr<scalar_t>(), xc.data_ptr<scalar_t>(),
                                hc.data_ptr<scalar_t>(), dx.data_ptr<scalar_t>());
  });
  return dx;
}

}  // namespace

TORCH_LIBRARY_IMPL(pyinvert, CPU, m) {
  m.impl("hog", &hog_forward_kernel);
  m.impl("_hog_backward", &hog_backward_kernel);
}

}  // namespace pyinvert
