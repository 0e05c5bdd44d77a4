// CPU driver of HOG (forward and backward); the math is in common/hog_math.h.
//
// Forward: tasks are (image, run of cell rows). A task zeroes its cell rows, visits the pixel
// rows that touch them top to bottom, left to right, and adds each pixel's contribution to the
// cells of its own rows only. So every histogram entry is written by one task and receives its
// terms in raster order, exactly as VLFeat accumulates them (same float rounding), whatever
// the number of threads. Pixel rows shared by two tasks are evaluated twice (one cell row of
// overlap per task). A second pass normalises the cells.
//
// With save_for_backward (the input requires grad), the forward pass also stores each
// interior pixel's channel, bins and the Jacobian of its bin values, so that the backward pass
// does not redo the orientation binning. Backward: three passes over cells (norms, the direct
// terms and the block-sum gradients, the norm gradients gathered from the neighbouring blocks),
// one over pixels (gradient with respect to the chosen channel's central differences) and one
// gathering those into the image. Each output is written by exactly one task: deterministic,
// no atomics.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "common/checks.h"
#include "common/finite.h"
#include "common/hog_math.h"
#include "cpu/output_cache.h"
#include "cpu/simd.h"

namespace pyinvert {
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

// The call's geometry and its per-call tables: orientation directions and the cell splits of
// every pixel column and row.
template <typename T>
struct HogGrid : hog::Geometry {
  std::vector<T> ox, oy;
  std::vector<hog::CellSplit<T>> sx, sy;

  explicit HogGrid(const hog::Geometry& geometry) : hog::Geometry(geometry) {
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
  explicit RowScratch(int64_t W) : gx(W), gy(W), mag(W), w0(W), w1(W), channel(W), b0(W), b1(W) {}
};

// In-place square roots of a row (correctly rounded, as sqrtf). std::sqrt does not vectorize
// (it may set errno); SSE2's sqrtps/sqrtpd round the same way.
inline void sqrt_row(float* v, int64_t n) {
  int64_t i = 0;
#if defined(__SSE2__)
  for (; i + 4 <= n; i += 4) _mm_storeu_ps(v + i, _mm_sqrt_ps(_mm_loadu_ps(v + i)));
#endif
  for (; i < n; ++i) v[i] = std::sqrt(v[i]);
}

inline void sqrt_row(double* v, int64_t n) {
  int64_t i = 0;
#if defined(__SSE2__)
  for (; i + 2 <= n; i += 2) _mm_storeu_pd(v + i, _mm_sqrt_pd(_mm_loadu_pd(v + i)));
#endif
  for (; i < n; ++i) v[i] = std::sqrt(v[i]);
}

// Gradients (channel of largest gradient) and orientation votes of the interior pixels of row
// y (1 <= y <= H-2): entry i is pixel x = i + 1. Each step runs over the whole row so that the
// compiler vectorizes it; the per-pixel operations are those of hog_math.h, in the same order.
template <typename T>
PYI_CLONES_EXACT void row_orientations(const HogGrid<T>& g, const T* xb, int64_t y,
                                       RowScratch<T>& r) {
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
  sqrt_row(best, n);  // best -> |g|
  T* mag = best;
  T* w0 = r.w0.data();
  T* w1 = r.w1.data();
  int32_t* b0 = r.b0.data();
  int32_t* b1 = r.b1.data();
  for (int64_t i = 0; i < n; ++i) hog::orientation_init(w0[i], b0[i], w1[i], b1[i]);
  const int32_t no = int32_t(g.no);
  for (int32_t k = 0; k < no; ++k) {
    const T ox = g.ox[k], oy = g.oy[k];
    if (g.bilinear) {
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
    } else {  // hard assignment: only the best bin is used
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) {
        T w0i = w0[i];
        int32_t b0i = b0[i];
        hog::orientation_vote_best(gx[i], gy[i], ox, oy, k, no, w0i, b0i);
        w0[i] = w0i;
        b0[i] = b0i;
      }
    }
  }
}

// What the backward pass needs of each interior pixel (entry (y-1, x-1) of (H-2) x (W-2)
// planes), saved by the forward pass when a gradient will be asked for: the chosen channel and
// the two bins (int32, -1 if none), and the Jacobian of the bins' values (hog::pixel_jacobian).
template <typename T>
struct PixelSave {
  int32_t* info;  // [3][H-2][W-2]: channel, bin 0, bin 1; nullptr: do not save
  T* jac;         // [4][H-2][W-2]
  int64_t plane;  // (H-2) * (W-2)
};

// Adds the interior pixels of one pixel row (orientations in `s`) to the histograms: to cell
// row `top_row` with weight sy.w1 and `bottom_row` with sy.w2 (nullptr: not this task's row),
// each pixel's value |g| w_o split over its 2 cell columns, as VLFeat does (((|g| w) wx) wy,
// in raster order; with hard assignment w = 1 and |g| * 1 is |g|). Saves the pixels' data if
// `save.info` (channel -1: no gradient).
template <bool BILINEAR, typename T>
void accumulate_row(const HogGrid<T>& g, const RowScratch<T>& s, const hog::CellSplit<T>& sy,
                    T* top_row, T* bottom_row, const PixelSave<T>& save) {
  const int64_t n = g.W - 2, last = g.Wc - 1;
  for (int64_t i = 0; i < n; ++i) {
    // A zero gradient (channel -1) is not skipped: like VLFeat it adds +-0 to bin 0, which
    // leaves the sums unchanged, and its Jacobian is 0 (no branch on the data here).
    const T mag = s.mag[i];
    const hog::Orientation<T> r =
        hog::orientation_finish(s.w0[i], s.b0[i], s.w1[i], s.b1[i], mag, g.no, BILINEAR);
    if (save.info) {
      T J[4];
      hog::pixel_jacobian(r, s.gx[i], s.gy[i], mag, g.ox.data(), g.oy.data(), BILINEAR, g.no, J);
      // A gradient without a bin (its scores overflowed to NaN) is saved as no gradient.
      save.info[i] = r.bin[0] >= 0 ? s.channel[i] : -1;
      save.info[save.plane + i] = r.bin[0];
      save.info[2 * save.plane + i] = r.bin[1];
      for (int j = 0; j < 4; ++j) save.jac[j * save.plane + i] = J[j];
    }
    const hog::CellSplit<T>& sx = g.sx[i + 1];
    const bool left = sx.bin >= 0, right = sx.bin < last;
    for (int j = 0; j < (BILINEAR ? 2 : 1); ++j) {
      if (r.bin[j] < 0) continue;
      const T v = BILINEAR ? rn_mul(mag, r.weight[j]) : mag;
      const int64_t offset = r.bin[j] * g.plane + sx.bin;
      if (top_row) {
        T* c = top_row + offset;
        if (left) c[0] += rn_mul(rn_mul(v, sx.w1), sy.w1);
        if (right) c[1] += rn_mul(rn_mul(v, sx.w2), sy.w1);
      }
      if (bottom_row) {
        T* c = bottom_row + offset;
        if (left) c[0] += rn_mul(rn_mul(v, sx.w1), sy.w2);
        if (right) c[1] += rn_mul(rn_mul(v, sx.w2), sy.w2);
      }
    }
  }
}

// Directed histograms of cell rows [r0, r1) of image `xb` into `hb` (2 no x Hc x Wc), and the
// saved pixel data of the pixel rows this task owns (each row is owned by exactly one task: the
// one of cell row max(sy.bin, 0), which the row always feeds).
template <typename T>
void histogram_rows(const HogGrid<T>& g, const T* xb, int64_t r0, int64_t r1, T* hb,
                    RowScratch<T>& scratch, const PixelSave<T>& save) {
  for (int64_t o = 0; o < 2 * g.no; ++o) {
    std::fill(hb + o * g.plane + r0 * g.Wc, hb + o * g.plane + r1 * g.Wc, T(0));
  }
  const int64_t n = g.W - 2;
  for (int64_t y = 1; y < g.H - 1; ++y) {
    const hog::CellSplit<T>& sy = g.sy[y];
    // Cell rows this pixel row feeds: sy.bin (weight w1) and sy.bin + 1 (weight w2).
    const bool top = sy.bin >= 0 && sy.bin >= r0 && sy.bin < r1;
    const bool bottom = sy.bin < g.Hc - 1 && sy.bin + 1 >= r0 && sy.bin + 1 < r1;
    if (!top && !bottom) continue;
    const int64_t owner = std::max<int64_t>(sy.bin, 0);
    const bool saving = save.info != nullptr && owner >= r0 && owner < r1;
    row_orientations(g, xb, y, scratch);
    T* top_row = top ? hb + sy.bin * g.Wc : nullptr;
    T* bottom_row = bottom ? hb + (sy.bin + 1) * g.Wc : nullptr;
    PixelSave<T> row_save{nullptr, nullptr, save.plane};
    if (saving) row_save = {save.info + (y - 1) * n, save.jac + (y - 1) * n, save.plane};
    if (g.bilinear) {
      accumulate_row<true>(g, scratch, sy, top_row, bottom_row, row_save);
    } else {
      accumulate_row<false>(g, scratch, sy, top_row, bottom_row, row_save);
    }
  }
}

// Whether the pixels of cell rows [r0, r1) of image `xb` are finite: pixel rows [r0 cs, r1 cs),
// the last cell row's run extended to H, so that the tasks cover every pixel once, while their
// rows are in cache (histogram_rows reads them next). The AVX2 clone halves its cost (about 5%
// of a 3 x 224 x 224 forward with SSE2 alone).
template <typename T>
PYI_CLONES_EXACT bool rows_finite(const HogGrid<T>& g, const T* xb, int64_t r0, int64_t r1) {
  const int64_t y0 = r0 * g.cs, y1 = r1 == g.Hc ? g.H : std::min(g.H, r1 * g.cs);
  bool finite = true;
  for (int64_t c = 0; c < g.C; ++c) {
    finite &= all_finite(xb + (c * g.H + y0) * g.W, (y1 - y0) * g.W);
  }
  return finite;
}

template <typename T>
void cell_norm_rows(const HogGrid<T>& g, const T* hb, int64_t r0, int64_t r1, T* nb) {
  for (int64_t i = r0 * g.Wc; i < r1 * g.Wc; ++i) nb[i] = hog::cell_norm(hb + i, g.plane, g.no);
}

// `info` / `jac`: where to save the per-pixel data for the backward pass ([B][3 or 4][H-2][W-2]),
// or nullptr. Returns the first image with a non-finite pixel (its output is not computed), or
// -1.
template <typename T>
int64_t hog_forward_impl(const HogGrid<T>& g, const T* x, T* hist, T* out, int32_t* info, T* jac) {
  FirstBadImage bad;
  std::vector<T> norms(g.B * g.plane);
  const int64_t image = g.C * g.H * g.W;
  const int64_t interior = std::max<int64_t>(g.H - 2, 0) * std::max<int64_t>(g.W - 2, 0);
  at::parallel_for(0, g.B * g.Hc, grain_for(g.cs * g.W * g.C), [&](int64_t begin, int64_t end) {
    RowScratch<T> scratch(g.W);
    for_each_row_run(begin, end, g.Hc, [&](int64_t b, int64_t r0, int64_t r1) {
      T* hb = hist + b * 2 * g.no * g.plane;
      if (!rows_finite(g, x + b * image, r0, r1)) {
        bad.report(b);
        return;
      }
      const PixelSave<T> save{info ? info + b * 3 * interior : nullptr,
                              jac ? jac + b * 4 * interior : nullptr, interior};
      histogram_rows(g, x + b * image, r0, r1, hb, scratch, save);
      cell_norm_rows(g, hb, r0, r1, norms.data() + b * g.plane);
    });
  });
  if (bad.get() >= 0) return bad.get();
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
  return -1;
}

// Three consecutive pixel rows of the backward pass (y-1, y, y+1) for one image: per pixel the
// gradient with respect to the chosen channel's central differences and that channel (-1 on
// the border, outside the image and where the gradient is zero).
template <typename T>
struct BackwardRows {
  const HogGrid<T>& g;
  int64_t interior;
  std::vector<T> gx, gy, interp;  // gx, gy: 3 rows of W; interp: 2 no rows of Wc + 2
  std::vector<int32_t> ch;        // 3 rows of W
  const T* dh = nullptr;
  const int32_t* info = nullptr;
  const T* jac = nullptr;
  int64_t next = 0;  // next pixel row to compute

  explicit BackwardRows(const HogGrid<T>& grid)
      : g(grid), interior(std::max<int64_t>(grid.H - 2, 0) * std::max<int64_t>(grid.W - 2, 0)),
        gx(3 * grid.W), gy(3 * grid.W), interp(2 * grid.no * (grid.Wc + 2)), ch(3 * grid.W) {}

  int64_t slot(int64_t y) const { return ((y % 3) + 3) % 3 * g.W; }

  void start(const T* dh_, const int32_t* info_, const T* jac_, int64_t y0) {
    dh = dh_;
    info = info_;
    jac = jac_;
    next = y0 - 1;
  }

  void advance(int64_t y) {
    while (next <= y + 1) compute(next++);
  }

  void compute(int64_t y) {
    T* rx = gx.data() + slot(y);
    T* ry = gy.data() + slot(y);
    int32_t* rc = ch.data() + slot(y);
    std::fill(rx, rx + g.W, T(0));
    std::fill(ry, ry + g.W, T(0));
    std::fill(rc, rc + g.W, -1);
    if (y < 1 || y > g.H - 2) return;
    const int64_t n = g.W - 2, stride = g.Wc + 2;
    for (int64_t o = 0; o < 2 * g.no; ++o) {
      hog::bin_gradient_row(dh + o * g.plane, g.sy[y], g.Wc, g.Hc, interp.data() + o * stride);
    }
    const int32_t* in = info + (y - 1) * n;
    const T* J = jac + (y - 1) * n;
    for (int64_t i = 0; i < n; ++i) {
      if (in[i] < 0) continue;
      const hog::CellSplit<T>& sx = g.sx[i + 1];
      const T* d0r = interp.data() + in[interior + i] * stride + (sx.bin + 1);
      const T d0 = sx.w1 * d0r[0] + sx.w2 * d0r[1];
      T d1 = T(0);
      if (in[2 * interior + i] >= 0) {
        const T* d1r = interp.data() + in[2 * interior + i] * stride + (sx.bin + 1);
        d1 = sx.w1 * d1r[0] + sx.w2 * d1r[1];
      }
      rx[i + 1] = J[i] * d0 + J[interior + i] * d1;
      ry[i + 1] = J[2 * interior + i] * d0 + J[3 * interior + i] * d1;
      rc[i + 1] = in[i];
    }
  }
};

// Row y of the image gradient, every channel (`out` points at channel 0 of the row): each pixel
// gathers from its 4 neighbours' central differences (rows y-1, y, y+1 of `rows`).
template <typename T>
PYI_CLONES_EXACT void image_gradient_row(const HogGrid<T>& g, const BackwardRows<T>& rows, T* out,
                                         int64_t y) {
  const T* gx = rows.gx.data() + rows.slot(y);
  const int32_t* ch = rows.ch.data() + rows.slot(y);
  const T* gy_up = rows.gy.data() + rows.slot(y - 1);
  const int32_t* ch_up = rows.ch.data() + rows.slot(y - 1);
  const T* gy_down = rows.gy.data() + rows.slot(y + 1);
  const int32_t* ch_down = rows.ch.data() + rows.slot(y + 1);
  const int64_t e = g.W - 1;
  for (int64_t c = 0; c < g.C; ++c) {
    T* o = out + c * g.H * g.W;
    const int32_t c32 = int32_t(c);
    if (g.W == 1) {
      o[0] =
          hog::image_gradient(T(0), -1, T(0), -1, gy_up[0], ch_up[0], gy_down[0], ch_down[0], c32);
      continue;
    }
    o[0] = hog::image_gradient(T(0), -1, gx[1], ch[1], gy_up[0], ch_up[0], gy_down[0], ch_down[0],
                               c32);
#pragma omp simd
    for (int64_t x_ = 1; x_ < e; ++x_) {
      o[x_] = hog::image_gradient(gx[x_ - 1], ch[x_ - 1], gx[x_ + 1], ch[x_ + 1], gy_up[x_],
                                  ch_up[x_], gy_down[x_], ch_down[x_], c32);
    }
    o[e] = hog::image_gradient(gx[e - 1], ch[e - 1], T(0), -1, gy_up[e], ch_up[e], gy_down[e],
                               ch_down[e], c32);
  }
}

// Whether the saved entries of interior rows [r0, r1) of one image (`info` at the image, planes
// `interior` apart) pass hog::valid_pixel_entry: one vectorized pass, before the rows are used.
inline bool pixel_entries_valid(const int32_t* info, int64_t interior, int64_t n, int64_t r0,
                                int64_t r1, int64_t C, int64_t no) {
  int bad = 0;
  const int32_t* ch = info + r0 * n;
  const int32_t* b0 = ch + interior;
  const int32_t* b1 = b0 + interior;
  const int64_t count = (r1 - r0) * n;
#pragma omp simd reduction(| : bad)
  for (int64_t i = 0; i < count; ++i) {
    bad |= !hog::valid_pixel_entry(ch[i], b0[i], b1[i], C, no);
  }
  return bad == 0;
}

// Returns the first image whose saved pixel entries are out of range (hog::valid_pixel_entry),
// or -1; the rows of a task that holds one are not computed.
template <typename T>
int64_t hog_backward_impl(const HogGrid<T>& g, const T* grad, const T* hist, const int32_t* info,
                          const T* jac, T* dx) {
  const int64_t hist_size = 2 * g.no * g.plane;
  const int64_t image = g.C * g.H * g.W;
  std::vector<T> norms(g.B * g.plane);
  std::vector<T> dhist(g.B * hist_size);
  std::vector<double> dblock(g.B * g.plane * 4);

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
                                        g.plane, g.no, g.variant, dhist.data() + b * hist_size + i,
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
          hog::cell_norm_backward(hist + b * hist_size + i, dblock.data() + b * g.plane * 4, cx, cy,
                                  g.Wc, g.Hc, g.plane, g.no, dhist.data() + b * hist_size + i);
        }
      }
    });
  });

  // Pixels and image, fused per task of (image, run of rows): a pixel row's gradients with
  // respect to the chosen channel's central differences (dgx = J0 d0 + J1 d1, dgy = J2 d0 +
  // J3 d1 from the saved Jacobians, d_o interpolated from the cells) are kept for 3 rows, and
  // each image row gathers from the rows above and below it.
  FirstBadImage bad;
  at::parallel_for(0, g.B * g.H, grain_for(g.W * g.C), [&](int64_t begin, int64_t end) {
    BackwardRows<T> rows(g);
    for_each_row_run(begin, end, g.H, [&](int64_t b, int64_t y0, int64_t y1) {
      // The task computes pixel rows y0-1 .. y1 (interior rows y0-2 .. y1-1 of `info`).
      const int32_t* image_info = info + b * 3 * rows.interior;
      const int64_t r0 = std::max<int64_t>(y0 - 2, 0);
      const int64_t r1 = std::max<int64_t>(std::min<int64_t>(y1, g.H - 2), r0);
      if (!pixel_entries_valid(image_info, rows.interior, std::max<int64_t>(g.W - 2, 0), r0, r1,
                               g.C, g.no)) {
        bad.report(b);
        return;
      }
      rows.start(dhist.data() + b * hist_size, image_info, jac + b * 4 * rows.interior, y0);
      for (int64_t y = y0; y < y1; ++y) {
        rows.advance(y);  // rows y-1, y, y+1 are ready
        image_gradient_row(g, rows, dx + b * image + y * g.W, y);
      }
    });
  });
  return bad.get();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> hog_forward_kernel(
    const at::Tensor& x, int64_t cell_size, int64_t num_orientations, int64_t variant,
    bool bilinear_orientations, bool save_for_backward) {
  const hog::Geometry g =
      hog::checked_geometry(x, cell_size, num_orientations, variant, bilinear_orientations);
  const at::Tensor xc = x.contiguous();
  at::Tensor out = empty_recycled({g.B, g.D, g.Hc, g.Wc}, x.options());
  at::Tensor hist = empty_recycled({g.B, 2 * g.no, g.Hc, g.Wc}, x.options());
  at::Tensor info =
      empty_recycled(hog::pixel_shape(g, 3, save_for_backward), x.options().dtype(at::kInt));
  at::Tensor jac = empty_recycled(hog::pixel_shape(g, 4, save_for_backward), x.options());
  if (g.B == 0) return {out, hist, info, jac};
  int64_t bad_image = -1;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "hog", [&] {
    const HogGrid<scalar_t> grid(g);
    bad_image = hog_forward_impl<scalar_t>(grid, xc.data_ptr<scalar_t>(), hist.data_ptr<scalar_t>(),
                                           out.data_ptr<scalar_t>(),
                                           save_for_backward ? info.data_ptr<int32_t>() : nullptr,
                                           save_for_backward ? jac.data_ptr<scalar_t>() : nullptr);
  });
  check_finite_pixels(bad_image, "hog");
  return {out, hist, info, jac};
}

at::Tensor hog_backward_kernel(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& hist,
                               const at::Tensor& info, const at::Tensor& jac, int64_t cell_size,
                               int64_t num_orientations, int64_t variant,
                               bool bilinear_orientations) {
  // x only gives the shape here (the forward saved what the backward needs of its values).
  const hog::Geometry g = hog::checked_geometry(x, cell_size, num_orientations, variant,
                                                bilinear_orientations, "_hog_backward");
  hog::check_backward_inputs(grad, hist, info, jac, x, g);
  const at::Tensor gc = grad.contiguous(), hc = hist.contiguous();
  const at::Tensor ic = info.contiguous(), jc = jac.contiguous();
  at::Tensor dx = empty_recycled({g.B, g.C, g.H, g.W}, x.options());
  if (g.B == 0) return dx;
  int64_t bad_image = -1;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "_hog_backward", [&] {
    const HogGrid<scalar_t> grid(g);
    bad_image = hog_backward_impl<scalar_t>(grid, gc.data_ptr<scalar_t>(), hc.data_ptr<scalar_t>(),
                                            ic.data_ptr<int32_t>(), jc.data_ptr<scalar_t>(),
                                            dx.data_ptr<scalar_t>());
  });
  hog::check_pixel_entries(bad_image, g);
  return dx;
}

}  // namespace

TORCH_LIBRARY_IMPL(pyinvert, CPU, m) {
  m.impl("hog", &hog_forward_kernel);
  m.impl("_hog_backward", &hog_backward_kernel);
}

}  // namespace pyinvert
