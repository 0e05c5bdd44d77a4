#pragma once
// Per-pixel and per-cell math of HOG as VLFeat 0.9.21 computes it (vl_hog_put_image followed by
// vl_hog_extract), shared by the CPU driver (cpu/hog_kernel.cpp) and the CUDA driver
// (cuda/hog_kernel.cu). The drivers only decide which thread visits which pixel or cell.
//
// The computation, for an image with C channels and cells of `cs` pixels, Hc x Wc cells:
//  1. interior pixels (1 <= y <= H-2, 1 <= x <= W-2) take central differences in every channel
//     and keep the channel with the largest squared gradient (first one on ties); border pixels
//     contribute nothing;
//  2. the gradient is scored against `no` orientations k*pi/no; the best absolute score gives
//     the directed bin (k, or k + no when the score is negative). With bilinear orientation
//     assignment the second best bin gets weight acos(best score / |g|) / (pi / no) and the
//     best one the rest;
//  3. the magnitude times the orientation weight is split bilinearly over the 4 nearest cell
//     centres (triangular window of radius cs) into directed histograms H[2*no][Hc][Wc];
//  4. each cell has 4 2x2 blocks around it (indices clamped at the border); with
//     n = sum_k (H[k] + H[k+no])^2 the squared norm of a cell's undirected histogram, block j
//     has factor f_j = 1 / sqrt(sum of the 4 n's + 1e-4);
//  5. UoCTTI: 0.5 * sum_j min(0.2, f_j * h) for the directed histogram (2*no values) and for
//     the undirected one (no values), then 4 texture values (1/sqrt(18)) * sum_k min(0.2, f_j *
//     u_k). DalalTriggs: min(0.2, f_j * u_k) for the 4 blocks (4*no values).
//
// For float32 the arithmetic is VLFeat's, operation by operation: float where VLFeat uses float
// (gradients, scores, magnitudes, histogram accumulation, cell norms), double where it
// promotes (score / max(|g|, 1e-10), pixel-to-cell coordinates, the block normalisation).
// The rn_* helpers keep nvcc from fusing a*b+c into an FMA (and from approximating / and sqrt
// under --use_fast_math), so CPU and CUDA round alike. (On the host, x86-64 without -mfma has
// no FMA to contract into; on other CPUs the compiler's default contraction could differ.)
//
// The backward pass is the exact derivative of this function where it is smooth; the channel
// choice, the hard orientation bins and the 0.2 clamps are treated as locally constant.
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include <torch/types.h>

#include "common/checks.h"
#include "common/macros.h"
#include "common/rounding.h"

namespace pyinvert {
namespace hog {

constexpr int kUoctti = 0;  // must match pyinvert/features/hog.py
constexpr int kDalalTriggs = 1;
constexpr double kPi = 3.141592653589793;
constexpr double kClamp = 0.2;
constexpr double kNormEps = 1e-4;
constexpr int64_t kMaxOrientations = int64_t(1) << 24;  // directed bins are int32

PYI_HOST_DEVICE float acos_t(float a) {
#ifdef __CUDA_ARCH__
  return acosf(a);
#else
  return std::acos(a);  // glibc acosf, as VLFeat calls it
#endif
}
PYI_HOST_DEVICE double acos_t(double a) {
#ifdef __CUDA_ARCH__
  return ::acos(a);
#else
  return std::acos(a);
#endif
}

// v where m holds, else +0. On the host this masks the bits (no branch, no floating-point
// operation), which lets GCC vectorize the loops using it even under -ftrapping-math.
PYI_HOST_DEVICE float pick(bool m, float v) {
#ifdef __CUDA_ARCH__
  return m ? v : 0.0f;
#else
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  bits &= uint32_t(0) - uint32_t(m);
  std::memcpy(&v, &bits, sizeof bits);
  return v;
#endif
}
PYI_HOST_DEVICE double pick(bool m, double v) {
#ifdef __CUDA_ARCH__
  return m ? v : 0.0;
#else
  uint64_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  bits &= uint64_t(0) - uint64_t(m);
  std::memcpy(&v, &bits, sizeof bits);
  return v;
#endif
}

// ---- geometry ------------------------------------------------------------------------------

// Number of cells along a side of `size` pixels: the last cell is at least half inside.
PYI_HOST_DEVICE int64_t num_cells(int64_t size, int64_t cell_size) {
  return (size + cell_size / 2) / cell_size;
}

// Dimension of a cell's descriptor.
PYI_HOST_DEVICE int64_t descriptor_size(int64_t num_orientations, int variant) {
  return variant == kUoctti ? 3 * num_orientations + 4 : 4 * num_orientations;
}

// The sizes of one call: B images of C x H x W pixels, cells of cs pixels (Hc x Wc of them,
// plane = Hc * Wc), no orientations, D = descriptor_size(no, variant). Passed by value to the
// CUDA kernels.
struct Geometry {
  int64_t B, C, H, W, cs, no, Hc, Wc, plane, D;
  int variant;
  bool bilinear;
};

// Where pixel coordinate `p` falls between cell centres: cell `bin` (may be -1) gets weight
// w1, cell bin + 1 gets w2 = 1 - w1. VLFeat: h = (p + 0.5) / cs - 0.5 in double, stored as
// float; bin = floor(h).
template <typename T>
struct CellSplit {
  int64_t bin;
  T w1, w2;
};

template <typename T>
PYI_HOST_DEVICE CellSplit<T> cell_split(int64_t p, int64_t cell_size) {
  const T h = T((double(p) + 0.5) / double(cell_size) - 0.5);
  const int64_t bin = int64_t(floor(double(h)));
  CellSplit<T> s;
  s.bin = bin;
  s.w2 = rn_sub(h, T(bin));
  s.w1 = rn_sub(T(1), s.w2);
  return s;
}

// The directed bin directions: (cos, sin)(k pi / no), rounded to T (VLFeat stores floats).
template <typename T>
PYI_HOST_DEVICE void orientation_vector(int64_t k, int64_t no, T* ox, T* oy) {
  const double angle = double(k) * kPi / double(no);
  *ox = T(cos(angle));
  *oy = T(sin(angle));
}

// ---- per pixel ------------------------------------------------------------------------------
// The steps are split into small select-only functions so that the CPU driver can run each over
// a whole row (the compiler vectorizes them) while the CUDA driver calls them per pixel.

// One channel's candidate gradient at a pixel, from its 4 neighbours: kept if its squared norm
// beats the best so far (strictly: the first channel wins ties; none if all are zero).
template <typename T>
PYI_HOST_DEVICE void gradient_candidate(T left, T right, T up, T down, int32_t c, T& gx, T& gy,
                                        T& best, int32_t& channel) {
  const T cx = rn_sub(right, left);
  const T cy = rn_sub(down, up);
  const T g2 = rn_add(rn_mul(cx, cx), rn_mul(cy, cy));
  const bool better = g2 > best;
  gx = better ? cx : gx;
  gy = better ? cy : gy;
  best = better ? g2 : best;
  channel = better ? c : channel;
}

// Gradient of an interior pixel (all channels). `p` points at channel 0 of the pixel;
// channels are `channel_stride` apart, rows `W` apart.
template <typename T>
struct PixelGradient {
  T gx, gy;         // central differences of the chosen channel (0 if every channel is flat)
  T mag;            // sqrt(gx^2 + gy^2)
  int32_t channel;  // chosen channel, -1 if none has a nonzero squared gradient
};

template <typename T>
PYI_HOST_DEVICE PixelGradient<T> pixel_gradient(const T* p, int64_t C, int64_t channel_stride,
                                                int64_t W) {
  PixelGradient<T> g;
  g.gx = g.gy = T(0);
  g.channel = -1;
  T best = T(0);
  for (int64_t c = 0; c < C; ++c) {
    const T* q = p + c * channel_stride;
    gradient_candidate(q[-1], q[1], q[-W], q[W], int32_t(c), g.gx, g.gy, best, g.channel);
  }
  g.mag = rn_sqrt(best);
  return g;
}

// Orientation scoring, VLFeat 0.9.21: s_k = gx ox_k + gy oy_k with the unnormalised gradient;
// |s_k| votes for directed bin k (k + no if s_k < 0). The best two are kept by a running update
// that starts at weight -1, so bin 0 is always set (a zero gradient then adds zero) and bin 1
// whenever no >= 2. Ties go to the lower k.
template <typename T>
PYI_HOST_DEVICE void orientation_init(T& w0, int32_t& b0, T& w1, int32_t& b1) {
  w0 = w1 = T(-1);
  b0 = b1 = -1;
}

template <typename T>
PYI_HOST_DEVICE void orientation_vote(T gx, T gy, T ox_k, T oy_k, int32_t k, int32_t no, T& w0,
                                      int32_t& b0, T& w1, int32_t& b1) {
  const T s = rn_add(rn_mul(gx, ox_k), rn_mul(gy, oy_k));
  const bool negative = s < T(0);
  const T a = negative ? -s : s;
  const int32_t bin = negative ? k + no : k;
  const bool first = a > w0;
  const bool second = a > w1;  // only used when !first
  w1 = first ? w0 : (second ? a : w1);
  b1 = first ? b0 : (second ? bin : b1);
  w0 = first ? a : w0;
  b0 = first ? bin : b0;
}

// The same update restricted to the best bin (enough for hard assignment): bin 0 evolves
// exactly as in orientation_vote, which only uses w0 and b0 to update them.
template <typename T>
PYI_HOST_DEVICE void orientation_vote_best(T gx, T gy, T ox_k, T oy_k, int32_t k, int32_t no, T& w0,
                                           int32_t& b0) {
  const T s = rn_add(rn_mul(gx, ox_k), rn_mul(gy, oy_k));
  const bool negative = s < T(0);
  const T a = negative ? -s : s;
  const bool first = a > w0;
  w0 = first ? a : w0;
  b0 = first ? (negative ? k + no : k) : b0;
}

// Orientation assignment of one gradient: up to two directed bins with their weights.
template <typename T>
struct Orientation {
  int32_t bin[2];  // directed bins in [0, 2 no), -1 when unused
  T weight[2];
};

// From the best two scores: hard assignment (bin 0, weight 1) or bilinear (HOGb): bin 1 gets
// phi / (pi / no) with phi = acos(s_0 / |g|) the angle to bin 0, and bin 0 the rest.
template <typename T>
PYI_HOST_DEVICE Orientation<T> orientation_finish(T w0, int32_t b0, T w1, int32_t b1, T mag,
                                                  int64_t no, bool bilinear) {
  Orientation<T> r;
  r.bin[0] = b0;
  if (bilinear) {
    // VLFeat: acosf(VL_MIN(w0 / VL_MAX(|g|, 1e-10), 1.0)), the division and the min in double;
    // then angle / (pi / no) in double, rounded to T.
    const double m = double(mag) > 1e-10 ? double(mag) : 1e-10;
    double q = rn_div(double(w0), m);
    if (!(q < 1.0)) q = 1.0;
    const T angle = acos_t(T(q));
    r.bin[1] = b1;
    r.weight[1] = T(rn_div(double(angle), kPi / double(no)));
    r.weight[0] = rn_sub(T(1), r.weight[1]);
  } else {
    r.bin[1] = -1;
    r.weight[0] = T(1);
    r.weight[1] = T(0);
  }
  return r;
}

// All of the orientation assignment of one pixel.
template <typename T>
PYI_HOST_DEVICE Orientation<T> orientation_bins(T gx, T gy, T mag, const T* ox, const T* oy,
                                                int64_t no, bool bilinear) {
  T w0, w1;
  int32_t b0, b1;
  orientation_init(w0, b0, w1, b1);
  for (int32_t k = 0; k < int32_t(no); ++k) {
    if (bilinear) {
      orientation_vote(gx, gy, ox[k], oy[k], k, int32_t(no), w0, b0, w1, b1);
    } else {
      orientation_vote_best(gx, gy, ox[k], oy[k], k, int32_t(no), w0, b0);
    }
  }
  return orientation_finish(w0, b0, w1, b1, mag, no, bilinear);
}

// What one pixel adds to bin `o` of a cell: ((|g| * w_o) * wx) * wy, in VLFeat's order.
template <typename T>
PYI_HOST_DEVICE T pixel_contribution(T mag, T w, T wx, T wy) {
  return rn_mul(rn_mul(rn_mul(mag, w), wx), wy);
}

// Derivatives of one pixel's (up to) two bin values with respect to the chosen channel's
// (gx, gy): jac = {d v0/dgx, d v1/dgx, d v0/dgy, d v1/dgy}, so that the backward pass is
// dgx = jac[0] d0 + jac[1] d1, dgy = jac[2] d0 + jac[3] d1 with d_o = d(loss)/d(value of bin o).
// The value of bin o is |g| w_o: w_0 = 1 (hard), or (bilinear) w_1 = phi / (pi/no),
// w_0 = 1 - w_1 with phi the angle between g and bin 0's direction (ox_k, oy_k), negated if
// bin 0 >= no. With u = g / |g|: d|g|/dg = u and dphi/dg = sigma (-uy, ux) / |g|, sigma the
// sign of the cross product of bin 0's direction and u (0 on the bin centre, where phi =
// |angle difference| has its kink). All zero where g = 0 (VLFeat adds 0 there).
template <typename T>
PYI_HOST_DEVICE void pixel_jacobian(const Orientation<T>& r, T gx, T gy, T mag, const T* ox,
                                    const T* oy, bool bilinear, int64_t no, T* jac) {
  jac[0] = jac[1] = jac[2] = jac[3] = T(0);
  if (r.bin[0] < 0 || !(mag > T(0))) return;
  const T ux = gx / mag, uy = gy / mag;
  if (!bilinear) {
    jac[0] = ux;
    jac[2] = uy;
    return;
  }
  const int64_t k0 = r.bin[0] % no;
  const T sign = r.bin[0] >= no ? T(-1) : T(1);
  const T cross = sign * (ox[k0] * uy - oy[k0] * ux);
  const T sigma = cross > T(0) ? T(1) : (cross < T(0) ? T(-1) : T(0));
  const T t = sigma * T(double(no) / kPi);  // d w_1 / d(angle of g)
  jac[0] = r.weight[0] * ux + t * uy;
  jac[2] = r.weight[0] * uy - t * ux;
  if (r.bin[1] >= 0) {
    jac[1] = r.weight[1] * ux - t * uy;
    jac[3] = r.weight[1] * uy + t * ux;
  }
}

// ---- per cell -------------------------------------------------------------------------------

// Squared norm of a cell's undirected histogram (folded directed one), summed in T in k order.
// `h` points at the cell in bin 0; bins are `plane` apart.
template <typename T>
PYI_HOST_DEVICE T cell_norm(const T* h, int64_t plane, int64_t no) {
  T n = T(0);
  for (int64_t k = 0; k < no; ++k) {
    const T u = rn_add(h[k * plane], h[(k + no) * plane]);
    n = rn_add(n, rn_mul(u, u));
  }
  return n;
}

// Block j of cell (cx, cy), j = 0..3 (upper-left, upper-right, lower-left, lower-right):
// the x and y index pairs of its 2x2 cells, clamped to the grid as VLFeat does.
PYI_HOST_DEVICE void block_cells(int j, int64_t cx, int64_t cy, int64_t Wc, int64_t Hc, int64_t* xs,
                                 int64_t* ys) {
  if (j % 2 == 0) {
    xs[0] = cx > 0 ? cx - 1 : 0;
    xs[1] = cx;
  } else {
    xs[0] = cx;
    xs[1] = cx + 1 < Wc ? cx + 1 : Wc - 1;
  }
  if (j / 2 == 0) {
    ys[0] = cy > 0 ? cy - 1 : 0;
    ys[1] = cy;
  } else {
    ys[0] = cy;
    ys[1] = cy + 1 < Hc ? cy + 1 : Hc - 1;
  }
}

// The 4 normalisation factors of cell (cx, cy), from the cell norms `n` (Hc x Wc, row-major).
// VLFeat sums the 4 norms in double in the order (upper-left, upper-right, lower-left,
// lower-right) of the block.
template <typename T>
PYI_HOST_DEVICE void block_factors(const T* n, int64_t cx, int64_t cy, int64_t Wc, int64_t Hc,
                                   double* f) {
  for (int j = 0; j < 4; ++j) {
    int64_t xs[2], ys[2];
    block_cells(j, cx, cy, Wc, Hc, xs, ys);
    double s = double(n[ys[0] * Wc + xs[0]]);
    s = rn_add(s, double(n[ys[0] * Wc + xs[1]]));
    s = rn_add(s, double(n[ys[1] * Wc + xs[0]]));
    s = rn_add(s, double(n[ys[1] * Wc + xs[1]]));
    f[j] = rn_div(1.0, rn_sqrt(rn_add(s, kNormEps)));
  }
}

// The texture scale 1/sqrt(18): VLFeat computes it in float (1.0f / sqrtf(18.0f)).
template <typename T>
PYI_HOST_DEVICE double texture_scale() {
  return double(rn_div(T(1), rn_sqrt(T(18))));
}

PYI_HOST_DEVICE double clamp02(double v) { return v < kClamp ? v : kClamp; }

// The descriptor of one cell. `h` points at the cell in directed bin 0 and `out` at the cell
// in output dimension 0; both have planes `plane` apart.
template <typename T>
PYI_HOST_DEVICE void cell_descriptor(const T* h, const double* f, int64_t plane, int64_t no,
                                     int variant, T* out) {
  double t[4] = {0, 0, 0, 0};
  for (int64_t k = 0; k < no; ++k) {
    const double ha = double(h[k * plane]);
    const double hb = double(h[(k + no) * plane]);
    double sa = 0, sb = 0, sc = 0;
    for (int j = 0; j < 4; ++j) {
      const double a = rn_mul(f[j], ha);
      const double b = rn_mul(f[j], hb);
      const double c = clamp02(rn_add(a, b));
      t[j] = rn_add(t[j], c);
      if (variant == kUoctti) {
        sa = rn_add(sa, clamp02(a));
        sb = rn_add(sb, clamp02(b));
        sc = rn_add(sc, c);
      } else {
        out[(k + j * no) * plane] = T(c);
      }
    }
    if (variant == kUoctti) {
      out[k * plane] = T(rn_mul(0.5, sa));
      out[(k + no) * plane] = T(rn_mul(0.5, sb));
      out[(k + 2 * no) * plane] = T(rn_mul(0.5, sc));
    }
  }
  if (variant == kUoctti) {
    const double s = texture_scale<T>();
    for (int j = 0; j < 4; ++j) out[(3 * no + j) * plane] = T(rn_mul(s, t[j]));
  }
}

// Backward of one cell's descriptor, first part. From the output gradient `g` of the cell,
// adds to `dh` (directed-histogram gradient of this cell, planes `plane` apart) the terms
// where the histogram enters directly (f_j * h), and returns in db[j] the gradient with
// respect to the block sum S_j (f_j = S_j^-1/2, so dS_j = -f_j^3 / 2 * df_j). Overwrites dh.
template <typename T>
PYI_HOST_DEVICE void cell_descriptor_backward(const T* h, const double* f, const T* g,
                                              int64_t plane, int64_t no, int variant, T* dh,
                                              double* db) {
  double df[4] = {0, 0, 0, 0};
  double gt[4] = {0, 0, 0, 0};
  if (variant == kUoctti) {
    const double s = texture_scale<T>();
    for (int j = 0; j < 4; ++j) gt[j] = s * double(g[(3 * no + j) * plane]);
  }
  for (int64_t k = 0; k < no; ++k) {
    const double ha = double(h[k * plane]);
    const double hb = double(h[(k + no) * plane]);
    double dha = 0, dhb = 0;
    for (int j = 0; j < 4; ++j) {
      const double a = f[j] * ha, b = f[j] * hb;
      double ga, gb, gc;
      if (variant == kUoctti) {
        ga = 0.5 * double(g[k * plane]);
        gb = 0.5 * double(g[(k + no) * plane]);
        gc = 0.5 * double(g[(k + 2 * no) * plane]) + gt[j];
      } else {
        ga = gb = 0;
        gc = double(g[(k + j * no) * plane]);
      }
      // min(0.2, v) passes the gradient where v <= 0.2 (as torch.clamp does).
      if (a > kClamp) ga = 0;
      if (b > kClamp) gb = 0;
      if (a + b > kClamp) gc = 0;
      dha += f[j] * (ga + gc);
      dhb += f[j] * (gb + gc);
      df[j] += ha * (ga + gc) + hb * (gb + gc);
    }
    dh[k * plane] = T(dha);
    dh[(k + no) * plane] = T(dhb);
  }
  for (int j = 0; j < 4; ++j) db[j] = -0.5 * f[j] * f[j] * f[j] * df[j];
}

// How many times cell c appears in block j (x part: jx = j % 2, y part: jy = j / 2) of cell
// c + d, d in {-1, 0, 1}, along one axis of n cells (see block_cells: the pair is (c-1, c) for
// jx = 0 and (c, c+1) for jx = 1, clamped, so at the border a cell can count twice).
PYI_HOST_DEVICE int block_count(int d, int jx, int64_t c, int64_t n) {
  if (d == 0) return 1 + (jx == 0 ? c == 0 : c == n - 1);
  return (d < 0) == (jx == 1) ? 1 : 0;  // block (c-1, c) of c+1, or (c, c+1) of c-1
}

// Backward of one cell, second part: the gradient of its norm n is the sum, over the blocks
// of its (up to 3x3) neighbours that include it (with multiplicity, for clamped blocks), of the
// block-sum gradients `db` (4 per cell, cell-major). Adds 2 u_k dn to both directed bins.
template <typename T>
PYI_HOST_DEVICE void cell_norm_backward(const T* h, const double* db, int64_t cx, int64_t cy,
                                        int64_t Wc, int64_t Hc, int64_t plane, int64_t no, T* dh) {
  double dn = 0;
  for (int dy = -1; dy <= 1; ++dy) {
    const int64_t qy = cy + dy;
    if (qy < 0 || qy >= Hc) continue;
    for (int dx = -1; dx <= 1; ++dx) {
      const int64_t qx = cx + dx;
      if (qx < 0 || qx >= Wc) continue;
      const double* q = db + (qy * Wc + qx) * 4;
      for (int j = 0; j < 4; ++j) {
        const int count = block_count(dx, j % 2, cx, Wc) * block_count(dy, j / 2, cy, Hc);
        dn += count * q[j];
      }
    }
  }
  for (int64_t k = 0; k < no; ++k) {
    const double u2 = 2.0 * (double(h[k * plane]) + double(h[(k + no) * plane])) * dn;
    dh[k * plane] = T(double(dh[k * plane]) + u2);
    dh[(k + no) * plane] = T(double(dh[(k + no) * plane]) + u2);
  }
}

// Gradient that a pixel receives for directed bin `o` from the histogram gradient `dh`
// (one image; planes `plane` apart): the sum over its up to 4 cells of weight * dh.
template <typename T>
PYI_HOST_DEVICE T bin_gradient(const T* dh, int64_t o, const CellSplit<T>& sx,
                               const CellSplit<T>& sy, int64_t Wc, int64_t Hc, int64_t plane) {
  const T* d = dh + o * plane;
  T acc = T(0);
  const bool left = sx.bin >= 0, right = sx.bin < Wc - 1;
  const bool top = sy.bin >= 0, bottom = sy.bin < Hc - 1;
  if (top) {
    if (left) acc += sx.w1 * sy.w1 * d[sy.bin * Wc + sx.bin];
    if (right) acc += sx.w2 * sy.w1 * d[sy.bin * Wc + sx.bin + 1];
  }
  if (bottom) {
    if (left) acc += sx.w1 * sy.w2 * d[(sy.bin + 1) * Wc + sx.bin];
    if (right) acc += sx.w2 * sy.w2 * d[(sy.bin + 1) * Wc + sx.bin + 1];
  }
  return acc;
}

// The histogram gradient of one directed bin interpolated to a pixel row: out[c + 1] =
// sum over the row's (up to 2) cell rows of wy * dh[cell row][c], for c = 0..Wc-1, and
// out[0] = out[Wc + 1] = 0, so that a pixel of the row gets bin_gradient() as
// sx.w1 * out[sx.bin + 1] + sx.w2 * out[sx.bin + 2] without bound checks.
template <typename T>
PYI_HOST_DEVICE void bin_gradient_row(const T* dh_o, const CellSplit<T>& sy, int64_t Wc, int64_t Hc,
                                      T* out) {
  const bool top = sy.bin >= 0, bottom = sy.bin < Hc - 1;
  const T* r1 = dh_o + (top ? sy.bin : 0) * Wc;
  const T* r2 = dh_o + (bottom ? sy.bin + 1 : 0) * Wc;
  const T w1 = top ? sy.w1 : T(0), w2 = bottom ? sy.w2 : T(0);
  out[0] = out[Wc + 1] = T(0);
  for (int64_t c = 0; c < Wc; ++c) out[c + 1] = w1 * r1[c] + w2 * r2[c];
}

// Gradient of the image at channel c of a pixel, from the gradients (dgx, dgy) of the central
// differences of its 4 neighbours and the channels they chose (ch): gx(x) = I(x+1) - I(x-1),
// gy(y) = I(y+1) - I(y-1), so I(x) gets dgx(x-1) - dgx(x+1) + dgy(y-1) - dgy(y+1), each only
// where that neighbour chose channel c. Branch-free (the CPU driver vectorizes it over rows).
template <typename T>
PYI_HOST_DEVICE T image_gradient(T dgx_left, int32_t ch_left, T dgx_right, int32_t ch_right,
                                 T dgy_up, int32_t ch_up, T dgy_down, int32_t ch_down, int32_t c) {
  return (pick(ch_left == c, dgx_left) - pick(ch_right == c, dgx_right)) +
         (pick(ch_up == c, dgy_up) - pick(ch_down == c, dgy_down));
}

// The same at pixel (x, y) of one image's H x W buffers (border pixels have ch = -1).
template <typename T>
PYI_HOST_DEVICE T image_gradient_at(const T* dgx, const T* dgy, const int32_t* ch, int32_t c,
                                    int64_t x, int64_t y, int64_t W, int64_t H) {
  const int64_t i = y * W + x;
  const bool l = x >= 1, r = x + 1 < W, u = y >= 1, d = y + 1 < H;
  return image_gradient(l ? dgx[i - 1] : T(0), l ? ch[i - 1] : -1, r ? dgx[i + 1] : T(0),
                        r ? ch[i + 1] : -1, u ? dgy[i - W] : T(0), u ? ch[i - W] : -1,
                        d ? dgy[i + W] : T(0), d ? ch[i + W] : -1, c);
}

// Whether a saved pixel entry (channel, bin 0, bin 1) can be used by the backward pass: channel
// -1 (no gradient; the bins are then not read) or in [0, C) with bin 0 in [0, 2 no) and bin 1 in
// [-1, 2 no). The forward only saves such entries; the check guards the private op against
// tensors it did not make.
// Branch-free, so that the CPU driver's pass over the entries vectorizes.
PYI_HOST_DEVICE bool valid_pixel_entry(int32_t channel, int32_t bin0, int32_t bin1, int64_t C,
                                       int64_t no) {
  const int32_t channels = C < INT32_MAX ? int32_t(C) : INT32_MAX;
  const int32_t bins = int32_t(2 * no);  // no <= kMaxOrientations = 2^24
  const bool none = channel == -1;
  const bool some = (channel >= 0) & (channel < channels) & (bin0 >= 0) & (bin0 < bins) &
                    (bin1 >= -1) & (bin1 < bins);
  return none | some;
}

// ---- host: the input checks of the ops -------------------------------------------------------
// (shared by cpu/hog_kernel.cpp and cuda/hog_kernel.cu; messages start with the op name and give
// expected vs actual, as pyinvert/features/hog.py's own checks do)

// The checked arguments of hog (and of _hog_backward, op = "_hog_backward") as a Geometry.
inline Geometry checked_geometry(const at::Tensor& x, int64_t cell_size, int64_t num_orientations,
                                 int64_t variant, bool bilinear, const char* op = "hog") {
  check_image_batch(x, op);
  TORCH_CHECK(x.size(1) >= 1, op, ": expected x with at least 1 channel, got C=", x.size(1));
  TORCH_CHECK(cell_size >= 1, op, ": expected cell_size >= 1, got ", cell_size);
  TORCH_CHECK(num_orientations >= 1 && num_orientations <= kMaxOrientations, op,
              ": expected 1 <= num_orientations <= ", kMaxOrientations, ", got ", num_orientations);
  TORCH_CHECK(variant == kUoctti || variant == kDalalTriggs, op,
              ": expected variant 0 (uoctti) or 1 (dalaltriggs), got ", variant);
  Geometry g;
  g.B = x.size(0);
  g.C = x.size(1);
  g.H = x.size(2);
  g.W = x.size(3);
  g.cs = cell_size;
  g.no = num_orientations;
  g.Hc = num_cells(g.H, cell_size);
  g.Wc = num_cells(g.W, cell_size);
  TORCH_CHECK(g.Hc >= 1 && g.Wc >= 1, op, ": expected H and W >= ", cell_size - cell_size / 2,
              " (at least half a cell of cell_size=", cell_size, "), got H=", g.H, ", W=", g.W);
  g.plane = g.Hc * g.Wc;
  g.variant = int(variant);
  g.D = descriptor_size(num_orientations, g.variant);
  g.bilinear = bilinear;
  return g;
}

// Shape of the per-pixel data the forward saves for the backward: [B, rows, H-2, W-2] (rows = 3
// for the int32 channel and bins, 4 for the Jacobian), or [0] when nothing is saved.
inline std::vector<int64_t> pixel_shape(const Geometry& g, int64_t rows, bool saved) {
  if (!saved) return {0};
  return {g.B, rows, g.H > 2 ? g.H - 2 : 0, g.W > 2 ? g.W - 2 : 0};
}

// The backward op's tensors: shapes, devices and dtypes. The index values in `pixels` are
// checked by the drivers where they read them (valid_pixel_entry; an entry out of range makes
// the op raise check_pixel_entries' error, never read out of bounds).
inline void check_backward_inputs(const at::Tensor& grad, const at::Tensor& hist,
                                  const at::Tensor& pixels, const at::Tensor& jac,
                                  const at::Tensor& x, const Geometry& g) {
  const char* op = "_hog_backward";
  check_same_device_dtype(grad, x, op, "grad");
  check_same_device_dtype(hist, x, op, "hist");
  check_same_device_dtype(jac, x, op, "jacobian");
  TORCH_CHECK(pixels.device() == x.device() && pixels.scalar_type() == at::kInt, op,
              ": expected pixels of dtype Int on ", x.device(), ", got ", pixels.scalar_type(),
              " on ", pixels.device());
  const std::vector<int64_t> grad_shape{g.B, g.D, g.Hc, g.Wc};
  const std::vector<int64_t> hist_shape{g.B, 2 * g.no, g.Hc, g.Wc};
  TORCH_CHECK(grad.sizes() == at::IntArrayRef(grad_shape), op, ": expected grad of shape ",
              at::IntArrayRef(grad_shape), ", got ", grad.sizes());
  TORCH_CHECK(hist.sizes() == at::IntArrayRef(hist_shape), op, ": expected hist of shape ",
              at::IntArrayRef(hist_shape), ", got ", hist.sizes());
  const std::vector<int64_t> info_shape = pixel_shape(g, 3, true);
  const std::vector<int64_t> jac_shape = pixel_shape(g, 4, true);
  TORCH_CHECK(pixels.sizes() == at::IntArrayRef(info_shape), op, ": expected pixels of shape ",
              at::IntArrayRef(info_shape), ", got ", pixels.sizes(),
              " (was the forward called with save_for_backward=True?)");
  TORCH_CHECK(jac.sizes() == at::IntArrayRef(jac_shape), op, ": expected jacobian of shape ",
              at::IntArrayRef(jac_shape), ", got ", jac.sizes());
}

// The error for an entry of `pixels` that valid_pixel_entry() refuses, found in image b.
inline void check_pixel_entries(int64_t bad_image, const Geometry& g) {
  TORCH_CHECK_VALUE(bad_image < 0,
                    "_hog_backward: expected pixels as hog saves them "
                    "(channel -1 or in [0, ",
                    g.C, ") with bins in [0, ", 2 * g.no, ") and [-1, ", 2 * g.no,
                    ")), got an out-of-range entry in image ", bad_image);
}

}  // namespace hog
}  // namespace pyinvert
