// CUDA driver of HOG (forward and backward); the math is in common/hog_math.h, the argument
// checks and the geometry too (shared with cpu/hog_kernel.cpp), the launch conventions in
// cuda/launch.cuh.
//
// Forward: a first kernel reports the images with a non-finite pixel. One thread per cell
// gathers the contributions of the pixels around it (the pixels whose bilinear window reaches
// the cell) in raster order, which is the order in which VLFeat adds them, so the histograms are
// deterministic and round like VLFeat's. A pixel is evaluated by each of the (up to 4) cells it
// feeds. A second kernel normalises the cells. With save_for_backward, a pixel kernel stores
// each pixel's channel, bins and Jacobian.
// Backward: cell kernels (norms; direct terms and block-sum gradients; norm gradients gathered
// from neighbouring blocks), a pixel kernel (gradient of the chosen channel's central
// differences, from the saved Jacobians; it refuses out-of-range saved entries) and an image
// kernel gathering those. Every output element is written by one thread: deterministic, and the
// only atomic is the report of a refused input. Kernels run on the current stream of x's
// device; each op reads back its 4-byte error flag after its launches (one synchronization) and
// raises if an input was refused.
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <vector>

#include "common/checks.h"
#include "common/hog_math.h"
#include "cuda/launch.cuh"

namespace pyinvert {
namespace {

using cuda::blocks_for;
using cuda::kThreads;
using hog::Geometry;

// The orientation directions, rounded to T as on the CPU, on x's device: [2, no].
at::Tensor orientation_table(const at::Tensor& x, int64_t no) {
  at::Tensor table = at::empty({2, no}, x.options().device(at::kCPU));
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "hog_orientations", [&] {
    scalar_t* t = table.data_ptr<scalar_t>();
    for (int64_t k = 0; k < no; ++k) hog::orientation_vector(k, no, &t[k], &t[no + k]);
  });
  return table.to(x.device());
}

// ---- forward ------------------------------------------------------------------------------

template <typename T>
__global__ void hog_histogram_kernel(const T* __restrict__ x, const T* __restrict__ ox,
                                     const T* __restrict__ oy, Geometry g, T* __restrict__ hist,
                                     T* __restrict__ norms) {
  const int64_t n = g.B * g.plane;
  PYI_GRID_STRIDE(t, n) {
    const int64_t b = t / g.plane, cell = t % g.plane;
    const int64_t cy = cell / g.Wc, cx = cell % g.Wc;
    T* h = hist + b * 2 * g.no * g.plane + cell;
    for (int64_t o = 0; o < 2 * g.no; ++o) h[o * g.plane] = T(0);
    const T* xb = x + b * g.C * g.H * g.W;
    // Pixels whose cell split is (cy - 1, cy) or (cy, cy + 1): within one cell of the centre.
    const int64_t y0 = cy > 1 ? (cy - 1) * g.cs : 1;
    const int64_t y1 = (cy + 2) * g.cs < g.H - 2 ? (cy + 2) * g.cs : g.H - 2;
    const int64_t x0 = cx > 1 ? (cx - 1) * g.cs : 1;
    const int64_t x1 = (cx + 2) * g.cs < g.W - 2 ? (cx + 2) * g.cs : g.W - 2;
    for (int64_t y = y0; y <= y1; ++y) {
      const hog::CellSplit<T> sy = hog::cell_split<T>(y, g.cs);
      T wy;
      if (sy.bin == cy) {
        wy = sy.w1;
      } else if (sy.bin + 1 == cy) {
        wy = sy.w2;
      } else {
        continue;
      }
      for (int64_t xx = x0; xx <= x1; ++xx) {
        const hog::CellSplit<T> sx = hog::cell_split<T>(xx, g.cs);
        T wx;
        if (sx.bin == cx) {
          wx = sx.w1;
        } else if (sx.bin + 1 == cx) {
          wx = sx.w2;
        } else {
          continue;
        }
        const hog::PixelGradient<T> pg =
            hog::pixel_gradient(xb + y * g.W + xx, g.C, g.H * g.W, g.W);
        if (pg.channel < 0) continue;  // zero gradient: adds zero
        const hog::Orientation<T> r =
            hog::orientation_bins(pg.gx, pg.gy, pg.mag, ox, oy, g.no, g.bilinear);
        for (int i = 0; i < 2; ++i) {
          if (r.bin[i] < 0) continue;
          T* hc = h + r.bin[i] * g.plane;
          *hc = rn_add(*hc, hog::pixel_contribution(pg.mag, r.weight[i], wx, wy));
        }
      }
    }
    norms[t] = hog::cell_norm(h, g.plane, g.no);
  }
}

template <typename T>
__global__ void hog_normalize_kernel(const T* __restrict__ hist, const T* __restrict__ norms,
                                     Geometry g, T* __restrict__ out) {
  const int64_t n = g.B * g.plane;
  PYI_GRID_STRIDE(t, n) {
    const int64_t b = t / g.plane, cell = t % g.plane;
    double f[4];
    hog::block_factors(norms + b * g.plane, cell % g.Wc, cell / g.Wc, g.Wc, g.Hc, f);
    hog::cell_descriptor(hist + b * 2 * g.no * g.plane + cell, f, g.plane, g.no, g.variant,
                         out + b * g.D * g.plane + cell);
  }
}

// ---- backward -----------------------------------------------------------------------------

template <typename T>
__global__ void hog_norms_kernel(const T* __restrict__ hist, Geometry g, T* __restrict__ norms) {
  const int64_t n = g.B * g.plane;
  PYI_GRID_STRIDE(t, n) {
    const int64_t b = t / g.plane, cell = t % g.plane;
    norms[t] = hog::cell_norm(hist + b * 2 * g.no * g.plane + cell, g.plane, g.no);
  }
}

template <typename T>
__global__ void hog_cell_backward_kernel(const T* __restrict__ grad, const T* __restrict__ hist,
                                         const T* __restrict__ norms, Geometry g,
                                         T* __restrict__ dhist, double* __restrict__ dblock) {
  const int64_t n = g.B * g.plane;
  PYI_GRID_STRIDE(t, n) {
    const int64_t b = t / g.plane, cell = t % g.plane;
    double f[4];
    hog::block_factors(norms + b * g.plane, cell % g.Wc, cell / g.Wc, g.Wc, g.Hc, f);
    hog::cell_descriptor_backward(hist + b * 2 * g.no * g.plane + cell, f,
                                  grad + b * g.D * g.plane + cell, g.plane, g.no, g.variant,
                                  dhist + b * 2 * g.no * g.plane + cell, dblock + t * 4);
  }
}

template <typename T>
__global__ void hog_norm_backward_kernel(const T* __restrict__ hist,
                                         const double* __restrict__ dblock, Geometry g,
                                         T* __restrict__ dhist) {
  const int64_t n = g.B * g.plane;
  PYI_GRID_STRIDE(t, n) {
    const int64_t b = t / g.plane, cell = t % g.plane;
    hog::cell_norm_backward(hist + b * 2 * g.no * g.plane + cell, dblock + b * g.plane * 4,
                            cell % g.Wc, cell / g.Wc, g.Wc, g.Hc, g.plane, g.no,
                            dhist + b * 2 * g.no * g.plane + cell);
  }
}

// Per interior pixel (entry (y-1, x-1) of the (H-2) x (W-2) planes): the chosen channel and
// bins (-1 if none) and the Jacobian of the bin values, for the backward pass.
template <typename T>
__global__ void hog_pixel_save_kernel(const T* __restrict__ x, const T* __restrict__ ox,
                                      const T* __restrict__ oy, Geometry g,
                                      int32_t* __restrict__ info, T* __restrict__ jac) {
  const int64_t Hi = g.H - 2, Wi = g.W - 2, interior = Hi * Wi;
  const int64_t n = g.B * interior;
  PYI_GRID_STRIDE(t, n) {
    const int64_t b = t / interior, i = t % interior;
    const int64_t y = i / Wi + 1, xx = i % Wi + 1;
    int32_t* in = info + b * 3 * interior + i;
    T* J = jac + b * 4 * interior + i;
    const hog::PixelGradient<T> pg =
        hog::pixel_gradient(x + b * g.C * g.H * g.W + y * g.W + xx, g.C, g.H * g.W, g.W);
    if (pg.channel < 0) {
      in[0] = in[interior] = in[2 * interior] = -1;
      for (int j = 0; j < 4; ++j) J[j * interior] = T(0);
      continue;
    }
    const hog::Orientation<T> r =
        hog::orientation_bins(pg.gx, pg.gy, pg.mag, ox, oy, g.no, g.bilinear);
    T jv[4];
    hog::pixel_jacobian(r, pg.gx, pg.gy, pg.mag, ox, oy, g.bilinear, g.no, jv);
    // A gradient without a bin (its scores overflowed to NaN) is saved as no gradient, as on
    // the CPU.
    in[0] = r.bin[0] >= 0 ? pg.channel : -1;
    in[interior] = r.bin[0];
    in[2 * interior] = r.bin[1];
    for (int j = 0; j < 4; ++j) J[j * interior] = jv[j];
  }
}

// An entry of `info` that hog::valid_pixel_entry refuses is skipped and its image reported to
// `invalid` (the op then raises).
template <typename T>
__global__ void hog_pixel_backward_kernel(const int32_t* __restrict__ info,
                                          const T* __restrict__ jac, const T* __restrict__ dhist,
                                          Geometry g, T* __restrict__ dgx, T* __restrict__ dgy,
                                          int32_t* __restrict__ channel,
                                          int* __restrict__ invalid) {
  const int64_t pixels = g.H * g.W, interior = (g.H - 2) * (g.W - 2);
  const int64_t n = g.B * pixels;
  PYI_GRID_STRIDE(t, n) {
    const int64_t b = t / pixels, p = t % pixels;
    const int64_t y = p / g.W, xx = p % g.W;
    dgx[t] = T(0);
    dgy[t] = T(0);
    channel[t] = -1;
    if (y < 1 || y > g.H - 2 || xx < 1 || xx > g.W - 2) continue;
    const int64_t i = (y - 1) * (g.W - 2) + (xx - 1);
    const int32_t* in = info + b * 3 * interior + i;
    if (!hog::valid_pixel_entry(in[0], in[interior], in[2 * interior], g.C, g.no)) {
      atomicMin(invalid, cuda::flag_index(b));
      continue;
    }
    if (in[0] < 0) continue;
    const T* J = jac + b * 4 * interior + i;
    const hog::CellSplit<T> sx = hog::cell_split<T>(xx, g.cs);
    const hog::CellSplit<T> sy = hog::cell_split<T>(y, g.cs);
    const T* dh = dhist + b * 2 * g.no * g.plane;
    const T d0 = hog::bin_gradient(dh, in[interior], sx, sy, g.Wc, g.Hc, g.plane);
    const T d1 = in[2 * interior] >= 0
                     ? hog::bin_gradient(dh, in[2 * interior], sx, sy, g.Wc, g.Hc, g.plane)
                     : T(0);
    dgx[t] = J[0] * d0 + J[interior] * d1;
    dgy[t] = J[2 * interior] * d0 + J[3 * interior] * d1;
    channel[t] = in[0];
  }
}

template <typename T>
__global__ void hog_image_backward_kernel(const T* __restrict__ dgx, const T* __restrict__ dgy,
                                          const int32_t* __restrict__ channel, Geometry g,
                                          T* __restrict__ dx) {
  const int64_t pixels = g.H * g.W;
  const int64_t n = g.B * g.C * pixels;
  PYI_GRID_STRIDE(t, n) {
    const int64_t b = t / (g.C * pixels), c = (t / pixels) % g.C, p = t % pixels;
    const int64_t o = b * pixels;
    dx[t] = hog::image_gradient_at(dgx + o, dgy + o, channel + o, int32_t(c), p % g.W, p / g.W, g.W,
                                   g.H);
  }
}

// ---- host -----------------------------------------------------------------------------------

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> hog_forward_kernel(
    const at::Tensor& x, int64_t cell_size, int64_t num_orientations, int64_t variant,
    bool bilinear_orientations, bool save_for_backward) {
  const Geometry g =
      hog::checked_geometry(x, cell_size, num_orientations, variant, bilinear_orientations);
  const cuda::DeviceGuard guard(x.device());
  const at::Tensor xc = x.contiguous();
  at::Tensor out = at::empty({g.B, g.D, g.Hc, g.Wc}, x.options());
  at::Tensor hist = at::empty({g.B, 2 * g.no, g.Hc, g.Wc}, x.options());
  at::Tensor info =
      at::empty(hog::pixel_shape(g, 3, save_for_backward), x.options().dtype(at::kInt));
  at::Tensor jac = at::empty(hog::pixel_shape(g, 4, save_for_backward), x.options());
  if (g.B == 0) return {out, hist, info, jac};
  at::Tensor norms = at::empty({g.B, g.Hc, g.Wc}, x.options());
  const at::Tensor table = orientation_table(x, g.no);
  const auto stream = cuda::current_stream();
  const int64_t cells = g.B * g.plane;
  const int64_t interior = g.B * (g.H > 2 ? g.H - 2 : 0) * (g.W > 2 ? g.W - 2 : 0);
  cuda::ErrorFlag nonfinite(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "hog", [&] {
    // HOG reads neither the corners nor, below 3 x 3, any pixel: every pixel is checked here.
    cuda::report_nonfinite_kernel<scalar_t><<<blocks_for(xc.numel()), kThreads, 0, stream>>>(
        xc.data_ptr<scalar_t>(), xc.numel(), g.C * g.H * g.W, nonfinite.data());
    PYI_LAUNCH_CHECK();
    const scalar_t* o = table.data_ptr<scalar_t>();
    hog_histogram_kernel<scalar_t><<<blocks_for(cells), kThreads, 0, stream>>>(
        xc.data_ptr<scalar_t>(), o, o + g.no, g, hist.data_ptr<scalar_t>(),
        norms.data_ptr<scalar_t>());
    PYI_LAUNCH_CHECK();
    hog_normalize_kernel<scalar_t><<<blocks_for(cells), kThreads, 0, stream>>>(
        hist.data_ptr<scalar_t>(), norms.data_ptr<scalar_t>(), g, out.data_ptr<scalar_t>());
    PYI_LAUNCH_CHECK();
    if (save_for_backward && interior > 0) {
      hog_pixel_save_kernel<scalar_t><<<blocks_for(interior), kThreads, 0, stream>>>(
          xc.data_ptr<scalar_t>(), o, o + g.no, g, info.data_ptr<int32_t>(),
          jac.data_ptr<scalar_t>());
      PYI_LAUNCH_CHECK();
    }
  });
  check_finite_pixels(nonfinite.read(), "hog");
  return {out, hist, info, jac};
}

at::Tensor hog_backward_kernel(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& hist,
                               const at::Tensor& info, const at::Tensor& jac, int64_t cell_size,
                               int64_t num_orientations, int64_t variant,
                               bool bilinear_orientations) {
  // x only gives the shape here (the forward saved what the backward needs of its values).
  const Geometry g = hog::checked_geometry(x, cell_size, num_orientations, variant,
                                           bilinear_orientations, "_hog_backward");
  hog::check_backward_inputs(grad, hist, info, jac, x, g);
  const cuda::DeviceGuard guard(x.device());
  const at::Tensor gc = grad.contiguous(), hc = hist.contiguous();
  const at::Tensor ic = info.contiguous(), jc = jac.contiguous();
  at::Tensor dx = at::empty({g.B, g.C, g.H, g.W}, x.options());
  if (g.B == 0) return dx;
  at::Tensor norms = at::empty({g.B, g.Hc, g.Wc}, x.options());
  at::Tensor dhist = at::empty({g.B, 2 * g.no, g.Hc, g.Wc}, x.options());
  at::Tensor dblock = at::empty({g.B, g.Hc, g.Wc, 4}, x.options().dtype(at::kDouble));
  at::Tensor dgx = at::empty({g.B, g.H, g.W}, x.options());
  at::Tensor dgy = at::empty({g.B, g.H, g.W}, x.options());
  at::Tensor channel = at::empty({g.B, g.H, g.W}, x.options().dtype(at::kInt));
  const auto stream = cuda::current_stream();
  const int64_t cells = g.B * g.plane, pixels = g.B * g.H * g.W;
  cuda::ErrorFlag invalid(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "_hog_backward", [&] {
    hog_norms_kernel<scalar_t><<<blocks_for(cells), kThreads, 0, stream>>>(
        hc.data_ptr<scalar_t>(), g, norms.data_ptr<scalar_t>());
    PYI_LAUNCH_CHECK();
    hog_cell_backward_kernel<scalar_t><<<blocks_for(cells), kThreads, 0, stream>>>(
        gc.data_ptr<scalar_t>(), hc.data_ptr<scalar_t>(), norms.data_ptr<scalar_t>(), g,
        dhist.data_ptr<scalar_t>(), dblock.data_ptr<double>());
    PYI_LAUNCH_CHECK();
    hog_norm_backward_kernel<scalar_t><<<blocks_for(cells), kThreads, 0, stream>>>(
        hc.data_ptr<scalar_t>(), dblock.data_ptr<double>(), g, dhist.data_ptr<scalar_t>());
    PYI_LAUNCH_CHECK();
    hog_pixel_backward_kernel<scalar_t><<<blocks_for(pixels), kThreads, 0, stream>>>(
        ic.data_ptr<int32_t>(), jc.data_ptr<scalar_t>(), dhist.data_ptr<scalar_t>(), g,
        dgx.data_ptr<scalar_t>(), dgy.data_ptr<scalar_t>(), channel.data_ptr<int32_t>(),
        invalid.data());
    PYI_LAUNCH_CHECK();
    hog_image_backward_kernel<scalar_t><<<blocks_for(pixels * g.C), kThreads, 0, stream>>>(
        dgx.data_ptr<scalar_t>(), dgy.data_ptr<scalar_t>(), channel.data_ptr<int32_t>(), g,
        dx.data_ptr<scalar_t>());
    PYI_LAUNCH_CHECK();
  });
  hog::check_pixel_entries(invalid.read(), g);
  return dx;
}

}  // namespace

TORCH_LIBRARY_IMPL(pyinvert, CUDA, m) {
  m.impl("hog", &hog_forward_kernel);
  m.impl("_hog_backward", &hog_backward_kernel);
}

}  // namespace pyinvert
