#pragma once
// Dense SIFT as VLFeat 0.9.21 computes it (vl/dsift.c: vl_dsift_process with the geometry of
// vl_dsift_new_basic), and its exact gradient: the math shared by csrc/cpu/dsift_kernel.cpp and
// csrc/cuda/dsift_kernel.cu.
//
// Pipeline for one image I [H, W] (row-major), all in the input's precision:
//  1. gradient (gx, gy): central differences, one-sided at the borders;
//  2. modulus m = vl_fast_sqrt_f(gx^2 + gy^2) (0 below 1e-8), angle = vl_fast_atan2_f(gy, gx);
//     bin coordinate nt = mod_2pi(angle) * 8 / (2 pi); the modulus is split between orientation
//     channels floor(nt) and floor(nt) + 1 (mod 8) with weights 1 - frac(nt) and frac(nt);
//  3. spatial pooling: each channel G_t is filtered along y then along x by the 1-D kernel of
//     spatial bin j (rows) / i (columns), the image padded by replication, and sampled at the bin
//     centres (frame origin + bin * bin_size):
//       Gaussian window: k_i(d) = (1 - |d| / bs) * exp(-((d - delta_i) / (2 bs))^2 / 2),
//                        delta_i = bs * (i - 1.5), |d| < bs (taps summed in VLFeat's order);
//       flat window:     the triangular filter (bs - |d|) / bs^2 computed by integral signals in
//                        VLFeat's order of operations, times (bs * mean_i k) (bs * mean_j k);
//  4. per descriptor: l2-normalize (norm = vl_fast_sqrt_f(sum h^2) + VL_EPSILON_F), clamp at 0.2,
//     l2-normalize again.
// Descriptor layout (C API, no transposition): index (bin_y * 4 + bin_x) * 8 + t, keypoints with
// x fastest. float32 follows VLFeat's float operations one by one (the fast inverse square root,
// the float constants, the summation orders), so that results are bit-identical in practice: this
// matters where a descriptor's energy is below 1e-8 (VLFeat then divides by its epsilon) and for
// the integral signals of the flat window, whose running sums cancel. float64 evaluates the same
// formulas in double (with the exact square root), which makes it smooth enough for gradcheck.
// On CUDA (built with --use_fast_math) the forward's products that feed sums and its divisions go
// through rn_mul / rn_div (__fmul_rn, __fdiv_rn: IEEE, never fused), so it rounds as the CPU does;
// the backward may fuse and round differently in the last bits.
//
// Backward: the exact gradient of the above with the fast square root replaced by the exact one
// (they differ by < 5e-6 relatively); clamped entries (> 0.2) and moduli below the 1e-8 threshold
// are locally constant, and floor(nt) is piecewise constant.
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <utility>
#include <vector>

#include <torch/types.h>

#include "common/checks.h"
#include "common/macros.h"
#include "common/rounding.h"

namespace pyinvert {
namespace dsift {

constexpr int kNumBinT = 8;   // orientations
constexpr int kNumBinXY = 4;  // spatial bins per side
constexpr int kDescriptorSize = kNumBinT * kNumBinXY * kNumBinXY;
constexpr double kPi = 3.141592653589793;  // VL_PI
constexpr double kEpsF = 1.19209290e-07;   // VL_EPSILON_F (used in both precisions)
constexpr double kWindowSize = 2.0;        // VLFeat's default Gaussian window (units of bin_size)

// ---------------------------------------------------------------------------------------------
// VLFeat's fast math (vl/mathop.h).

// vl_fast_sqrt_f: 0 below 1e-8, else x * (inverse square root by the bit trick and two Newton
// steps). Relative error < 5e-6.
PYI_HOST_DEVICE float fast_sqrt(float x) {
  if (static_cast<double>(x) < 1e-8) return 0.0F;
  int32_t i;
#ifdef __CUDA_ARCH__
  i = __float_as_int(x);
#else
  std::memcpy(&i, &x, sizeof(i));
#endif
  i = 0x5f3759df - (i >> 1);
  float y;
#ifdef __CUDA_ARCH__
  y = __int_as_float(i);
#else
  std::memcpy(&y, &i, sizeof(y));
#endif
  const float half = 0.5F * x;
  y = y * (1.5F - rn_mul(rn_mul(half, y), y));
  y = y * (1.5F - rn_mul(rn_mul(half, y), y));
  return rn_mul(x, y);
}
// float64: the same threshold, the exact square root.
PYI_HOST_DEVICE double fast_sqrt(double x) { return x < 1e-8 ? 0.0 : ::sqrt(x); }

// vl_fast_atan2_f: angle = pi/4 (or 3 pi/4) + (c3 r^2 - c1) r, r = (x -+ a) / (x +- a),
// a = |y| + eps; negated for y < 0. Max error 0.0061 rad; smooth except on y = 0.
template <typename T>
PYI_HOST_DEVICE T fast_atan2(T y, T x) {
  const T c3 = T(0.1821), c1 = T(0.9675);
  const T abs_y = (y < T(0) ? -y : y) + T(kEpsF);
  T r, angle;
  if (x >= T(0)) {
    r = rn_div(x - abs_y, x + abs_y);
    angle = T(kPi / 4);
  } else {
    r = rn_div(x + abs_y, abs_y - x);
    angle = T(3 * kPi / 4);
  }
  angle += rn_mul(rn_mul(rn_mul(c3, r), r) - c1, r);
  return y < T(0) ? -angle : angle;
}

// d angle / d y and d angle / d x of fast_atan2 (the derivative of |y| taken as +1 at y = 0,
// where the approximation is odd and smooth).
template <typename T>
PYI_HOST_DEVICE void fast_atan2_backward(T y, T x, T& d_y, T& d_x) {
  const T c3 = T(0.1821), c1 = T(0.9675);
  const T abs_y = (y < T(0) ? -y : y) + T(kEpsF);
  const T den = x >= T(0) ? x + abs_y : abs_y - x;
  const T r = x >= T(0) ? (x - abs_y) / den : (x + abs_y) / den;
  const T dp = T(3) * c3 * r * r - c1;  // d angle / d r before the sign flip
  const T inv = T(1) / (den * den);
  const T dr_dx = T(2) * abs_y * inv;
  const T dr_da = T(-2) * x * inv;
  const T sign = y < T(0) ? T(-1) : T(1);
  d_x = sign * dp * dr_dx;
  d_y = dp * dr_da;  // sign * dp * dr_da * d|y|/dy, with d|y|/dy = sign
}

// ---------------------------------------------------------------------------------------------
// Per pixel: gradient, modulus and orientation bins.

template <typename T>
struct PixelOrientation {
  T gx, gy;   // image gradient
  T modulus;  // fast_sqrt(gx^2 + gy^2)
  T frac;     // weight of bin `upper`; bin `lower` gets 1 - frac
  int lower, upper;
};

// Central differences, one-sided at the borders (needs H, W >= 2).
template <typename T>
PYI_HOST_DEVICE void image_gradient(const T* im, int height, int width, int x, int y, T& gx,
                                    T& gy) {
  const T* p = im + static_cast<int64_t>(y) * width + x;
  if (y == 0) {
    gy = p[width] - p[0];
  } else if (y == height - 1) {
    gy = p[0] - p[-width];
  } else {
    gy = T(0.5) * (p[width] - p[-width]);
  }
  if (x == 0) {
    gx = p[1] - p[0];
  } else if (x == width - 1) {
    gx = p[0] - p[-1];
  } else {
    gx = T(0.5) * (p[1] - p[-1]);
  }
}

// The orientation bin coordinate nt in [0, 8] of an angle: vl_mod_2pi_f, then the product by the
// double 8 / (2 pi), rounded to T.
template <typename T>
PYI_HOST_DEVICE T angle_to_bin(T angle) {
  const T two_pi = T(2 * kPi);
  // vl_mod_2pi_f loops; fast_atan2 is within (-pi - 2e-6, pi + 2e-6), so one step is enough.
  if (angle > two_pi) angle -= two_pi;
  if (angle < T(0)) angle += two_pi;
  return static_cast<T>(static_cast<double>(angle) * (kNumBinT / (2 * kPi)));
}

template <typename T>
PYI_HOST_DEVICE PixelOrientation<T> pixel_orientation(const T* im, int height, int width, int x,
                                                      int y) {
  PixelOrientation<T> p;
  image_gradient(im, height, width, x, y, p.gx, p.gy);
  p.modulus = fast_sqrt(rn_mul(p.gx, p.gx) + rn_mul(p.gy, p.gy));
  const T nt = angle_to_bin(fast_atan2(p.gy, p.gx));
  const int lower = nt >= T(0) ? static_cast<int>(nt) : 0;  // vl_floor_f (NaN -> 0, frac NaN)
  p.frac = nt - static_cast<T>(lower);
  p.lower = lower % kNumBinT;
  p.upper = (lower + 1) % kNumBinT;
  return p;
}

// Orientation channel values of the pixel: G[lower] = (1 - frac) m, G[upper] = frac m.
template <typename T>
PYI_HOST_DEVICE T lower_weight(const PixelOrientation<T>& p) {
  return (T(1) - p.frac) * p.modulus;
}
template <typename T>
PYI_HOST_DEVICE T upper_weight(const PixelOrientation<T>& p) {
  return p.frac * p.modulus;
}

// Backward of the pixel's two channel values to its gradient (gx, gy).
template <typename T>
PYI_HOST_DEVICE void pixel_orientation_backward(const PixelOrientation<T>& p, T d_lower, T d_upper,
                                                T& d_gx, T& d_gy) {
  if (!(p.modulus > T(0))) {  // below the 1e-8 threshold: the channels are 0 nearby
    d_gx = T(0);
    d_gy = T(0);
    return;
  }
  const T d_modulus = (T(1) - p.frac) * d_lower + p.frac * d_upper;
  const T d_angle = p.modulus * (d_upper - d_lower) * T(kNumBinT / (2 * kPi));
  T da_dy, da_dx;
  fast_atan2_backward(p.gy, p.gx, da_dy, da_dx);
  d_gx = d_modulus * p.gx / p.modulus + d_angle * da_dx;
  d_gy = d_modulus * p.gy / p.modulus + d_angle * da_dy;
}

// Backward of image_gradient: dL/dI at (x, y) given dL/dgx, dL/dgy planes [H, W].
template <typename T>
PYI_HOST_DEVICE T image_gradient_backward(const T* d_gx, const T* d_gy, int height, int width,
                                          int x, int y) {
  const int64_t i = static_cast<int64_t>(y) * width + x;
  T acc = T(0);
  // gx(x') = I(x'+1) - I(x') at x' = 0, I(x') - I(x'-1) at x' = W-1, else (I(x'+1) - I(x'-1)) / 2.
  if (x == 0) acc -= d_gx[i];
  if (x == width - 1) acc += d_gx[i];
  if (x >= 1) acc += (x - 1 == 0 ? T(1) : T(0.5)) * d_gx[i - 1];
  if (x + 1 <= width - 1) acc -= (x + 1 == width - 1 ? T(1) : T(0.5)) * d_gx[i + 1];
  if (y == 0) acc -= d_gy[i];
  if (y == height - 1) acc += d_gy[i];
  if (y >= 1) acc += (y - 1 == 0 ? T(1) : T(0.5)) * d_gy[i - width];
  if (y + 1 <= height - 1) acc -= (y + 1 == height - 1 ? T(1) : T(0.5)) * d_gy[i + width];
  return acc;
}

// ---------------------------------------------------------------------------------------------
// Spatial pooling.

// Frame (keypoint) grid: frame (fy, fx) has its top-left bin centre at (fy * step, fx * step).
// Sampled rows are r = fy * 4 + bin_y at y = fy * step + bin_y * bin_size; columns likewise.
struct Geometry {
  int height, width, step, bin_size, frames_y, frames_x;
  bool flat_window;
  PYI_HOST_DEVICE int64_t num_frames() const { return static_cast<int64_t>(frames_y) * frames_x; }
  PYI_HOST_DEVICE int num_rows() const { return frames_y * kNumBinXY; }
  PYI_HOST_DEVICE int num_cols() const { return frames_x * kNumBinXY; }
  PYI_HOST_DEVICE int taps() const { return 2 * bin_size - 1; }
  PYI_HOST_DEVICE int position(int sample) const {  // row or column sample -> pixel
    return (sample / kNumBinXY) * step + (sample % kNumBinXY) * bin_size;
  }
  // Index in the [N, 128] output of (row sample r, column sample c, orientation t).
  PYI_HOST_DEVICE int64_t output_index(int r, int c, int t) const {
    const int64_t frame = static_cast<int64_t>(r / kNumBinXY) * frames_x + c / kNumBinXY;
    return frame * kDescriptorSize + ((r % kNumBinXY) * kNumBinXY + c % kNumBinXY) * kNumBinT + t;
  }
};

// Frames along one side: as _vl_dsift_update_buffers (0 when the image is too small).
inline int frames_along(int size, int step, int bin_size) {
  const int range = size - 1 - (kNumBinXY - 1) * bin_size;
  return range >= 0 ? range / step + 1 : 0;
}

PYI_HOST_DEVICE int clamp_index(int i, int n) { return i < 0 ? 0 : (i >= n ? n - 1 : i); }

// One Gaussian-window filter output at `position` along a line of n samples (sample p of lane l
// at line[p * stride + l]), with replicate padding, for `lanes` independent lanes: out[l] +=
// sum_k line[clamp(position - R + k)] * kernel[2R - k] (out starts at 0). Taps in VLFeat's order
// (vl_imconvcol_vf: ascending source index, each product rounded before the sum).
template <typename T>
PYI_HOST_DEVICE void filter_taps(const T* line, int64_t stride, int n, int position,
                                 const T* kernel, int taps, int lanes, T* out) {
  const int radius = (taps - 1) / 2;
  for (int k = 0; k < taps; ++k) {
    const T* src = line + clamp_index(position - radius + k, n) * stride;
    const T w = kernel[taps - 1 - k];
    for (int l = 0; l < lanes; ++l) out[l] += rn_mul(src[l], w);
  }
}

// filter_taps for a compile-time number of lanes, accumulated in registers; overwrites out.
template <int kLanes, typename T>
PYI_HOST_DEVICE void filter_taps_lanes(const T* line, int64_t stride, int n, int position,
                                       const T* kernel, int taps, T* out) {
#if !defined(__CUDACC__) && defined(__GNUC__)
  // Host: the same products and sums, lane by lane, in 16-byte GNU vectors (GCC 12 turns the
  // generic loop below into scalar loads).
  typedef T Vector __attribute__((vector_size(16)));
  constexpr int kPerVector = 16 / sizeof(T);
  if constexpr (kLanes % kPerVector == 0) {
    constexpr int kVectors = kLanes / kPerVector;
    const int radius = (taps - 1) / 2;
    Vector acc[kVectors] = {};
    for (int k = 0; k < taps; ++k) {
      const T* src = line + clamp_index(position - radius + k, n) * stride;
      const T w = kernel[taps - 1 - k];
      for (int v = 0; v < kVectors; ++v) {
        Vector s;
        std::memcpy(&s, src + v * kPerVector, sizeof(Vector));
        acc[v] += s * w;
      }
    }
    std::memcpy(out, acc, sizeof(acc));
    return;
  }
#endif
  T acc[kLanes];
  for (int l = 0; l < kLanes; ++l) acc[l] = T(0);
  filter_taps(line, stride, n, position, kernel, taps, kLanes, acc);
  for (int l = 0; l < kLanes; ++l) out[l] = acc[l];
}

// VLFeat's vl_imconvcoltri_f along a line of n samples, for `lanes` independent lanes (sample p
// of lane l at line[p * stride + l]): fills the running sums from which triangle_filter_value()
// reads the filter (delta - |d|) / delta^2 with replicate padding, with exactly VLFeat's float
// operations. VLFeat's buffer[y], y in [-delta, n), of lane l is buf[(y + delta) * buf_stride + l]
// (buf_stride >= lanes; a CUDA thread per lane interleaves its buffer with its neighbours').
template <typename T>
PYI_HOST_DEVICE void triangle_filter_integrals(const T* line, int64_t stride, int n, int delta,
                                               int lanes, T* buf, int64_t buf_stride) {
  const int64_t L = buf_stride;
  T* b = buf + delta * L;  // b[y * L + l], y in [-delta, n)
  const T* last = line + static_cast<int64_t>(n - 1) * stride;
  for (int l = 0; l < lanes; ++l) b[(n - 1) * L + l] = last[l];
  int y = n - 2;
  for (; y >= 0; --y) {  // integrate backward
    const T* src = line + static_cast<int64_t>(y) * stride;
    for (int l = 0; l < lanes; ++l) b[y * L + l] = b[(y + 1) * L + l] + src[l];
  }
  for (; y >= -delta; --y) {  // replicate line[0]
    for (int l = 0; l < lanes; ++l) b[y * L + l] = b[(y + 1) * L + l] + line[l];
  }
  for (y = -delta; y < n - delta; ++y) {  // box filter forward
    for (int l = 0; l < lanes; ++l) b[y * L + l] = b[y * L + l] - b[(y + delta) * L + l];
  }
  for (y = n - delta; y < n; ++y) {  // replicate line[n - 1]
    const T count = static_cast<T>(n - delta - y);
    for (int l = 0; l < lanes; ++l) {
      b[y * L + l] = b[y * L + l] - rn_mul(b[(n - 1) * L + l], count);
    }
  }
  for (y = -delta + 1; y < n; ++y) {  // integrate forward
    for (int l = 0; l < lanes; ++l) b[y * L + l] += b[(y - 1) * L + l];
  }
}

// triangle_filter_integrals for a compile-time number of lanes, buffer rows of kLanes values.
template <int kLanes, typename T>
PYI_HOST_DEVICE void triangle_filter_integrals_lanes(const T* line, int64_t stride, int n,
                                                     int delta, T* buf) {
#if !defined(__CUDACC__) && defined(__GNUC__)
  // Host: the same operations, lane by lane, in 16-byte GNU vectors.
  typedef T Vector __attribute__((vector_size(16)));
  constexpr int kPerVector = 16 / sizeof(T);
  if constexpr (kLanes % kPerVector == 0) {
    constexpr int kVectors = kLanes / kPerVector;
    struct Row {  // kLanes values
      Vector v[kVectors];
      static Row load(const T* p) {
        Row r;
        std::memcpy(r.v, p, sizeof(r.v));
        return r;
      }
      void store(T* p) const { std::memcpy(p, v, sizeof(v)); }
    };
    T* b = buf + static_cast<int64_t>(delta) * kLanes;  // row y at b + y * kLanes
    auto row = [&](int y) { return b + static_cast<int64_t>(y) * kLanes; };
    Row acc = Row::load(line + static_cast<int64_t>(n - 1) * stride);
    acc.store(row(n - 1));
    int y = n - 2;
    for (; y >= 0; --y) {  // integrate backward
      const Row src = Row::load(line + static_cast<int64_t>(y) * stride);
      for (int v = 0; v < kVectors; ++v) acc.v[v] = acc.v[v] + src.v[v];
      acc.store(row(y));
    }
    const Row first = Row::load(line);
    for (; y >= -delta; --y) {  // replicate line[0]
      for (int v = 0; v < kVectors; ++v) acc.v[v] = acc.v[v] + first.v[v];
      acc.store(row(y));
    }
    for (y = -delta; y < n - delta; ++y) {  // box filter forward
      Row r = Row::load(row(y));
      const Row ahead = Row::load(row(y + delta));
      for (int v = 0; v < kVectors; ++v) r.v[v] = r.v[v] - ahead.v[v];
      r.store(row(y));
    }
    const Row end = Row::load(row(n - 1));
    for (y = n - delta; y < n; ++y) {  // replicate line[n - 1]
      const T count = static_cast<T>(n - delta - y);
      Row r = Row::load(row(y));
      for (int v = 0; v < kVectors; ++v) r.v[v] = r.v[v] - end.v[v] * count;
      r.store(row(y));
    }
    acc = Row::load(row(-delta));
    for (y = -delta + 1; y < n; ++y) {  // integrate forward
      Row r = Row::load(row(y));
      for (int v = 0; v < kVectors; ++v) acc.v[v] = r.v[v] + acc.v[v];
      acc.store(row(y));
    }
    return;
  }
#endif
  triangle_filter_integrals(line, stride, n, delta, kLanes, buf, kLanes);
}

template <typename T>
PYI_HOST_DEVICE T triangle_filter_scale(int delta) {
  return static_cast<T>(1.0 / (static_cast<double>(delta) * static_cast<double>(delta)));
}

// The filtered value of lane l at y (VLFeat: scale * (buffer[y] - buffer[y - delta])).
template <typename T>
PYI_HOST_DEVICE T triangle_filter_value(const T* buf, int y, int delta, int64_t buf_stride, int l,
                                        T scale) {
  return scale * (buf[(y + delta) * buf_stride + l] - buf[y * buf_stride + l]);
}

// ---------------------------------------------------------------------------------------------
// Host-side tables (built once per call, uploaded by the CUDA driver).

// VLFeat's Gaussian-window bin kernels (_vl_dsift_new_kernel, float): [4][2 bs - 1], kernel of
// bin i at offsets d = -bs+1 .. bs-1.
inline std::vector<float> gaussian_bin_kernels(int bin_size) {
  const int taps = 2 * bin_size - 1;
  std::vector<float> kernels(kNumBinXY * taps);
  for (int i = 0; i < kNumBinXY; ++i) {
    const float delta = bin_size * (i - 0.5F * (kNumBinXY - 1));
    const float sigma = static_cast<float>(bin_size) * static_cast<float>(kWindowSize);
    for (int x = -bin_size + 1; x <= bin_size - 1; ++x) {
      const float z = (x - delta) / sigma;
      kernels[i * taps + x + bin_size - 1] =
          (1.0F - std::fabs(static_cast<float>(x)) / bin_size) * std::exp(-0.5F * z * z);
    }
  }
  return kernels;
}

// The flat window's per-bin weights: bin_size * the mean of the Gaussian window over bin i
// (_vl_dsift_get_bin_window_mean times binSize, float): [4].
inline std::vector<float> flat_window_weights(int bin_size) {
  std::vector<float> weights(kNumBinXY);
  for (int i = 0; i < kNumBinXY; ++i) {
    const float delta = bin_size * (i - 0.5F * (kNumBinXY - 1));
    const float sigma = static_cast<float>(bin_size) * static_cast<float>(kWindowSize);
    float acc = 0.0F;
    for (int x = -bin_size + 1; x <= bin_size - 1; ++x) {
      const float z = (x - delta) / sigma;
      acc += std::exp(-0.5F * z * z);
    }
    acc /= (2 * bin_size - 1);
    weights[i] = acc * bin_size;
  }
  return weights;
}

// The per-axis kernels whose product is the pooling of the chosen window, [4][2 bs - 1]: the
// Gaussian-window kernels, or for the flat window weight_i * (bs - |d|) / bs^2 (the integral
// filter's kernel): what the backward pass transposes.
template <typename T>
std::vector<T> pooling_kernels(int bin_size, bool flat_window) {
  const int taps = 2 * bin_size - 1;
  std::vector<T> kernels(kNumBinXY * taps);
  if (!flat_window) {
    const std::vector<float> k = gaussian_bin_kernels(bin_size);
    for (size_t n = 0; n < k.size(); ++n) kernels[n] = static_cast<T>(k[n]);
    return kernels;
  }
  const std::vector<float> w = flat_window_weights(bin_size);
  const double scale = 1.0 / (static_cast<double>(bin_size) * bin_size);
  for (int i = 0; i < kNumBinXY; ++i) {
    for (int d = -bin_size + 1; d <= bin_size - 1; ++d) {
      kernels[i * taps + d + bin_size - 1] =
          static_cast<T>(static_cast<double>(w[i]) * (bin_size - std::abs(d)) * scale);
    }
  }
  return kernels;
}

// The transpose of the pooling along one axis, as CSR: for pixel p in [0, size), entries
// [offsets[p], offsets[p+1]) give the samples s (rows r or columns c) whose filter reads p and the
// tap's weight, ordered by sample then tap (a replicated border pixel gets one entry per tap that
// falls outside). Summing them in this order equals scattering sample by sample, tap by tap.
template <typename T>
struct TransposedPooling {
  std::vector<int> offsets, samples;
  std::vector<T> weights;
};

template <typename T>
TransposedPooling<T> transpose_pooling(const Geometry& g, int size, int num_samples,
                                       const std::vector<T>& kernels) {
  const int taps = g.taps(), radius = g.bin_size - 1;
  std::vector<std::vector<std::pair<int, T>>> lists(size);
  for (int s = 0; s < num_samples; ++s) {
    const int position = g.position(s);
    const T* kernel = kernels.data() + (s % kNumBinXY) * taps;
    for (int k = 0; k < taps; ++k) {
      lists[clamp_index(position - radius + k, size)].emplace_back(s, kernel[taps - 1 - k]);
    }
  }
  TransposedPooling<T> t;
  t.offsets.assign(1, 0);
  for (const auto& list : lists) {
    for (const auto& e : list) {
      t.samples.push_back(e.first);
      t.weights.push_back(e.second);
    }
    t.offsets.push_back(static_cast<int>(t.samples.size()));
  }
  return t;
}

// ---------------------------------------------------------------------------------------------
// Per descriptor normalization (VLFeat's _vl_dsift_normalize_histogram, clamp, again).

template <typename T>
PYI_HOST_DEVICE T descriptor_root(const T* h) {  // fast_sqrt(sum h^2), sequential sum
  T acc = T(0);
  for (int k = 0; k < kDescriptorSize; ++k) acc += rn_mul(h[k], h[k]);
  return fast_sqrt(acc);
}

// descriptor_root of kCount descriptors at once (interleaved: independent sums, same order each).
template <int kCount, typename T>
PYI_HOST_DEVICE void descriptor_roots(T* const* h, T* roots) {
  T acc[kCount];
  for (int j = 0; j < kCount; ++j) acc[j] = T(0);
  for (int k = 0; k < kDescriptorSize; ++k) {
    for (int j = 0; j < kCount; ++j) acc[j] += rn_mul(h[j][k], h[j][k]);
  }
  for (int j = 0; j < kCount; ++j) roots[j] = fast_sqrt(acc[j]);
}

template <typename T>
PYI_HOST_DEVICE T clamp_value(T u) {
  return u > T(0.2) ? T(0.2) : u;
}

// In place: kCount pooled histograms h[j] -> descriptors (kCount = 1 on the device; the CPU
// interleaves a few to overlap the sequential sums).
template <int kCount, typename T>
PYI_HOST_DEVICE void normalize_descriptors(T* const* h) {
  T norm[kCount];
  descriptor_roots<kCount>(h, norm);
  for (int j = 0; j < kCount; ++j) {
    const T n1 = norm[j] + T(kEpsF);
    for (int k = 0; k < kDescriptorSize; ++k) h[j][k] = clamp_value(rn_div(h[j][k], n1));
  }
  descriptor_roots<kCount>(h, norm);
  for (int j = 0; j < kCount; ++j) {
    const T n2 = norm[j] + T(kEpsF);
    for (int k = 0; k < kDescriptorSize; ++k) h[j][k] = rn_div(h[j][k], n2);
  }
}

template <typename T>
PYI_HOST_DEVICE void normalize_descriptor(T* h) {
  normalize_descriptors<1>(&h);
}

// dL/dh from dL/d(descriptor) `grad` and the pooled histogram h; `d_h` may alias `h`.
// d = v / (|v| + eps), v = min(u, 0.2), u = h / (|h| + eps); |.| is 0 below the 1e-8 threshold
// (then the norm is the constant eps).
template <typename T>
PYI_HOST_DEVICE void normalize_descriptor_backward(const T* h, const T* grad, T* d_h) {
  T u[kDescriptorSize];
  const T s1 = descriptor_root(h);  // exactly the forward's (it decides which u are clamped)
  const T n1 = s1 + T(kEpsF);
  for (int k = 0; k < kDescriptorSize; ++k) u[k] = rn_div(h[k], n1);
  // The sums below only scale the gradient: 8 partial sums in any order (vectorizable).
  constexpr int kPartial = 8;
  T partial[kPartial];
  for (int l = 0; l < kPartial; ++l) partial[l] = T(0);
  for (int k = 0; k < kDescriptorSize; k += kPartial) {  // |v|^2
    for (int l = 0; l < kPartial; ++l) {
      const T v = clamp_value(u[k + l]);
      partial[l] += v * v;
    }
  }
  T acc_v = T(0);
  for (int l = 0; l < kPartial; ++l) acc_v += partial[l];
  const T s2 = fast_sqrt(acc_v);
  const T n2 = s2 + T(kEpsF);
  for (int l = 0; l < kPartial; ++l) partial[l] = T(0);
  for (int k = 0; k < kDescriptorSize; k += kPartial) {  // grad . v
    for (int l = 0; l < kPartial; ++l) partial[l] += grad[k + l] * clamp_value(u[k + l]);
  }
  T dot2 = T(0);
  for (int l = 0; l < kPartial; ++l) dot2 += partial[l];
  const T inv_n2 = T(1) / n2;
  const T c2 = s2 > T(0) ? dot2 * inv_n2 * inv_n2 / s2 : T(0);
  // d_u = [u <= 0.2] (grad / n2 - c2 v) (stored over u); d_h = d_u / n1 - c1 h with
  // c1 = (d_u . h) / (n1^2 s1).
  for (int l = 0; l < kPartial; ++l) partial[l] = T(0);
  for (int k = 0; k < kDescriptorSize; k += kPartial) {
    for (int l = 0; l < kPartial; ++l) {
      const T d_u = u[k + l] > T(0.2) ? T(0) : grad[k + l] * inv_n2 - c2 * u[k + l];
      u[k + l] = d_u;
      partial[l] += d_u * h[k + l];
    }
  }
  T dot1 = T(0);
  for (int l = 0; l < kPartial; ++l) dot1 += partial[l];
  const T inv_n1 = T(1) / n1;
  const T c1 = s1 > T(0) ? dot1 * inv_n1 * inv_n1 / s1 : T(0);
  for (int k = 0; k < kDescriptorSize; ++k) d_h[k] = u[k] * inv_n1 - c1 * h[k];
}

// ---------------------------------------------------------------------------------------------
// Host: the input checks of the ops (messages start with the op name, give expected vs actual).

inline Geometry checked_geometry(const at::Tensor& x, int64_t step, int64_t bin_size,
                                 bool flat_window, const char* op) {
  check_image_batch(x, op);
  TORCH_CHECK(x.size(1) == 1, op, ": expected x of shape (B, 1, H, W) (grayscale), got ", x.sizes(),
              "; convert RGB with x.mean(1, keepdim=True) or a luminance weighting");
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
  g.frames_y = frames_along(g.height, g.step, g.bin_size);
  g.frames_x = frames_along(g.width, g.step, g.bin_size);
  const int64_t frame = (kNumBinXY - 1) * bin_size + 1;
  TORCH_CHECK(g.frames_x > 0 && g.frames_y > 0, op, ": expected x of at least ", frame, "x", frame,
              " pixels (3 * bin_size + 1) for one descriptor, got ", g.height, "x", g.width);
  return g;
}

// The backward op's grad and saved histograms: both [B, N, 128] on x's device, with x's dtype.
inline void check_backward_inputs(const at::Tensor& grad, const at::Tensor& histograms,
                                  const at::Tensor& x, const Geometry& g) {
  const char* op = "_dsift_backward";
  check_same_device_dtype(grad, x, op, "grad");
  check_same_device_dtype(histograms, x, op, "histograms");
  const int64_t batch = x.size(0);
  TORCH_CHECK(grad.dim() == 3 && grad.size(0) == batch && grad.size(1) == g.num_frames() &&
                  grad.size(2) == kDescriptorSize,
              op, ": expected grad of shape (", batch, ", ", g.num_frames(), ", ", kDescriptorSize,
              "), got ", grad.sizes());
  TORCH_CHECK(histograms.sizes() == grad.sizes(), op, ": expected histograms of shape ",
              grad.sizes(), " (the forward's, with return_histograms=True), got ",
              histograms.sizes());
}

}  // namespace dsift
}  // namespace pyinvert
