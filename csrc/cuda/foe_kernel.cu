// CUDA driver of the Fields-of-Experts ops (the math is csrc/common/foe_math.h's).
//
// foe_energy_grad: one block per (image, 16 x 16 tile of output pixels). For a group of G
// experts at a time, the block's threads compute psi_i = alpha_i rho'(r_i) for every position
// the tile's gather needs (the tile plus its k-1 halo above and to the left: (16+k-1)^2
// positions) into shared memory, adding alpha_i rho(r_i) and alpha_i ||f_i||^2 rho''(r_i) of
// the positions the tile owns to per-thread sums; then each thread gathers its pixel's
// grad_x = sum_i sum_{dy,dx} f_i(dy, dx) psi_i(y - dy, x - dx) from shared memory. So no
// response map is written to global memory, each pixel of grad_x is written by one thread (no
// atomics), and the halo's responses are recomputed by the neighbouring tile (~(k-1)/16 extra
// per side). G is as large as fits in 40 KB of shared memory (at most 8). Per-block energy and
// Laplacian sums are reduced in a fixed order and the partials summed on the device: results
// are deterministic for a given launch.
//
// foe_param_grad: one block per (image, 256 positions). For each expert, the threads put
// rho'(r_i) of their position in shared memory and reduce rho(r_i); then thread t sums, over the
// block's positions, rho' times the pixel under tap t (threads stride over the C*k*k taps).
// Per-block partials in double, summed with the grad_energy weights afterwards.
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <string>

#include "common/foe_checks.h"
#include "common/foe_math.h"
#include "cuda/launch.cuh"

namespace pyinvert {
namespace {

using cuda::kThreads;

constexpr int kTile = 16;  // kTile * kTile == kThreads
static_assert(kTile * kTile == kThreads, "one thread per output pixel of a tile");
constexpr int kMaxGroup = 8;
constexpr int64_t kSharedBudget = 40 * 1024;

// Fixed-order tree reduction of one double per thread; thread 0 gets the block's sum.
__device__ __forceinline__ double block_sum(double v, double* shared) {
  shared[threadIdx.x] = v;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) shared[threadIdx.x] += shared[threadIdx.x + stride];
    __syncthreads();
  }
  const double total = shared[0];
  __syncthreads();
  return total;
}

template <typename E, typename T>
__global__ void foe_energy_grad_impl(const T* __restrict__ x, const T* __restrict__ filters,
                                     const T* __restrict__ alphas, const T* __restrict__ lap_weight,
                                     int64_t C, int64_t H, int64_t W, int64_t n, int64_t k,
                                     int group, T* __restrict__ grad,
                                     double* __restrict__ partial) {
  extern __shared__ __align__(16) unsigned char shared_bytes[];
  T* psi = reinterpret_cast<T*>(shared_bytes);
  __shared__ double reduce[kThreads];
  const int64_t b = blockIdx.z;
  const int64_t Hp = H - k + 1, Wp = W - k + 1;
  const int64_t ty0 = int64_t(blockIdx.y) * kTile, tx0 = int64_t(blockIdx.x) * kTile;
  const int64_t P = kTile + k - 1;  // positions per side: rows ty0-k+1 .. ty0+kTile-1
  const int64_t plane = H * W;
  const T* xb = x + b * C * plane;
  const int ly = threadIdx.x / kTile, lx = threadIdx.x % kTile;
  const int64_t y = ty0 + ly, xx = tx0 + lx;
  double energy = 0, laplacian = 0;
  for (int64_t g0 = 0; g0 < n; g0 += group) {
    const int64_t gn = n - g0 < group ? n - g0 : int64_t(group);
    for (int64_t q = threadIdx.x; q < P * P; q += kThreads) {
      const int64_t py = ty0 - (k - 1) + q / P, px = tx0 - (k - 1) + q % P;
      const bool valid = py >= 0 && py < Hp && px >= 0 && px < Wp;
      const bool owned = valid && py >= ty0 && px >= tx0;  // the tile's own positions
      for (int64_t e = 0; e < gn; ++e) {
        const int64_t i = g0 + e;
        T value = 0;
        if (valid) {
          const T s =
              foe::patch_response(filters + i * C * k * k, xb + py * W + px, C, k, W, plane);
          const T aux = E::aux(s), inv = E::inv(s, aux);
          value = alphas[i] * E::d1(s, aux, inv);
          if (owned) {
            energy += double(alphas[i]) * double(E::rho(s, aux, inv));
            laplacian += double(lap_weight[i]) * double(E::d2(s, aux, inv));
          }
        }
        psi[e * P * P + q] = value;
      }
    }
    __syncthreads();
    if (y < H && xx < W) {
      for (int64_t c = 0; c < C; ++c) {
        T acc = 0;
        for (int64_t e = 0; e < gn; ++e) {
          const T* f = filters + ((g0 + e) * C + c) * k * k;
          const T* ps = psi + e * P * P;
          for (int64_t dy = 0; dy < k; ++dy) {
            // psi of position (y - dy, x - dx) sits at local (ly - dy + k - 1, lx - dx + k - 1).
            const T* row = ps + (ly - dy + k - 1) * P + lx + k - 1;
            for (int64_t dx = 0; dx < k; ++dx) acc += f[dy * k + dx] * row[-dx];
          }
        }
        T* out = grad + (b * C + c) * plane + y * W + xx;
        *out = g0 == 0 ? acc : *out + acc;
      }
    }
    __syncthreads();
  }
  const double e_sum = block_sum(energy, reduce);
  const double l_sum = block_sum(laplacian, reduce);
  if (threadIdx.x == 0) {
    const int64_t blocks = int64_t(gridDim.x) * gridDim.y;
    const int64_t index = b * blocks + int64_t(blockIdx.y) * gridDim.x + blockIdx.x;
    partial[2 * index] = e_sum;
    partial[2 * index + 1] = l_sum;
  }
}

template <typename E, typename T>
__global__ void foe_param_grad_impl(const T* __restrict__ x, const T* __restrict__ filters,
                                    const T* __restrict__ alphas, int64_t C, int64_t H, int64_t W,
                                    int64_t n, int64_t k, double* __restrict__ partial) {
  __shared__ T psi[kThreads];
  __shared__ double reduce[kThreads];
  const int64_t b = blockIdx.y;
  const int64_t Hp = H - k + 1, Wp = W - k + 1;
  const int64_t plane = H * W, taps = C * k * k;
  const int64_t first = int64_t(blockIdx.x) * kThreads;
  const int64_t pos = first + threadIdx.x;
  const bool valid = pos < Hp * Wp;
  const int64_t py = valid ? pos / Wp : 0, px = valid ? pos % Wp : 0;
  const T* xb = x + b * C * plane;
  const int64_t count = Hp * Wp - first < kThreads ? Hp * Wp - first : int64_t(kThreads);
  double* out = partial + (b * gridDim.x + blockIdx.x) * (n * taps + n);
  for (int64_t i = 0; i < n; ++i) {
    double rho_sum = 0;
    T d1 = 0;
    if (valid) {
      const T s = foe::patch_response(filters + i * taps, xb + py * W + px, C, k, W, plane);
      const T aux = E::aux(s), inv = E::inv(s, aux);
      rho_sum = double(E::rho(s, aux, inv));
      d1 = E::d1(s, aux, inv);
    }
    psi[threadIdx.x] = d1;
    const double total = block_sum(rho_sum, reduce);  // also makes psi visible
    for (int64_t t = threadIdx.x; t < taps; t += kThreads) {
      const int64_t c = t / (k * k), dy = (t / k) % k, dx = t % k;
      const T* base = xb + c * plane + dy * W + dx;
      double acc = 0;
      for (int64_t j = 0; j < count; ++j) {
        const int64_t p = first + j;
        acc += double(psi[j]) * double(base[(p / Wp) * W + p % Wp]);
      }
      out[i * taps + t] = double(alphas[i]) * acc;
    }
    if (threadIdx.x == 0) out[n * taps + i] = total;
    __syncthreads();  // psi is rewritten for the next expert
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> foe_energy_grad_kernel(const at::Tensor& x_in,
                                                                      const at::Tensor& filters_in,
                                                                      const at::Tensor& alphas_in,
                                                                      c10::string_view expert,
                                                                      bool with_laplacian) {
  const char* op = "foe_energy_grad";
  const FoeShape s = check_foe_arguments(x_in, filters_in, alphas_in, std::string(expert), op);
  const cuda::DeviceGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous();
  const at::Tensor filters = filters_in.contiguous();
  const at::Tensor alphas = alphas_in.contiguous();
  at::Tensor grad = at::empty_like(x, at::MemoryFormat::Contiguous);
  at::Tensor laplacian = with_laplacian ? at::zeros({s.B}, x.options()) : x.new_empty({0});
  if (x.numel() == 0 || s.Hp() == 0 || s.Wp() == 0 || s.n == 0) {
    grad.zero_();
    return {at::zeros({s.B}, x.options()), grad, laplacian};
  }
  TORCH_CHECK(s.B <= 65535, op, ": expected at most 65535 images per call on CUDA, got ", s.B);
  const int64_t P = kTile + s.k - 1;
  const int64_t per_expert = P * P * x.element_size();
  TORCH_CHECK(per_expert <= kSharedBudget, op, ": expected filters of size k <= ",
              int64_t(std::sqrt(double(kSharedBudget / x.element_size()))) - kTile + 1,
              " on CUDA, got k = ", s.k);
  const int group = int(std::min<int64_t>(kMaxGroup, std::min(s.n, kSharedBudget / per_expert)));
  const at::Tensor lap_weight = alphas * filters.flatten(1).square().sum(1);
  const dim3 grid(unsigned((s.W + kTile - 1) / kTile), unsigned((s.H + kTile - 1) / kTile),
                  unsigned(s.B));
  at::Tensor partial =
      at::empty({s.B, int64_t(grid.x) * grid.y, 2}, x.options().dtype(at::kDouble));
  const auto stream = cuda::current_stream();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "foe_energy_grad", [&] {
    const size_t shared = size_t(group) * P * P * sizeof(scalar_t);
    auto launch = [&](auto kernel) {
      kernel<<<grid, kThreads, shared, stream>>>(
          x.data_ptr<scalar_t>(), filters.data_ptr<scalar_t>(), alphas.data_ptr<scalar_t>(),
          lap_weight.data_ptr<scalar_t>(), s.C, s.H, s.W, s.n, s.k, group,
          grad.data_ptr<scalar_t>(), partial.data_ptr<double>());
      PYI_LAUNCH_CHECK();
    };
    if (s.expert == foe::kStudentT) {
      launch(foe_energy_grad_impl<foe::StudentT, scalar_t>);
    } else {
      launch(foe_energy_grad_impl<foe::LogCosh, scalar_t>);
    }
  });
  const at::Tensor sums = partial.sum(1).to(x.scalar_type());
  if (with_laplacian) laplacian = sums.select(1, 1).contiguous();
  return {sums.select(1, 0).contiguous(), grad, laplacian};
}

std::tuple<at::Tensor, at::Tensor> foe_param_grad_kernel(const at::Tensor& x_in,
                                                         const at::Tensor& filters_in,
                                                         const at::Tensor& alphas_in,
                                                         c10::string_view expert,
                                                         const at::Tensor& grad_energy) {
  const char* op = "foe_param_grad";
  const FoeShape s = check_foe_arguments(x_in, filters_in, alphas_in, std::string(expert), op);
  TORCH_CHECK(grad_energy.dim() == 1 && grad_energy.size(0) == s.B, op,
              ": expected grad_energy of shape (", s.B, ",), got ", grad_energy.sizes());
  check_same_device_dtype(grad_energy, x_in, op, "grad_energy");
  const cuda::DeviceGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous();
  const at::Tensor filters = filters_in.contiguous();
  const at::Tensor alphas = alphas_in.contiguous();
  if (x.numel() == 0 || s.Hp() == 0 || s.Wp() == 0 || s.n == 0) {
    return {at::zeros(filters.sizes(), filters.options()),
            at::zeros(alphas.sizes(), alphas.options())};
  }
  TORCH_CHECK(s.B <= 65535, op, ": expected at most 65535 images per call on CUDA, got ", s.B);
  const int64_t taps = s.C * s.k * s.k;
  const int64_t blocks = (s.Hp() * s.Wp() + kThreads - 1) / kThreads;
  at::Tensor partial = at::empty({s.B, blocks, s.n * taps + s.n}, x.options().dtype(at::kDouble));
  const dim3 grid(unsigned(blocks), unsigned(s.B));
  const auto stream = cuda::current_stream();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "foe_param_grad", [&] {
    auto launch = [&](auto kernel) {
      kernel<<<grid, kThreads, 0, stream>>>(x.data_ptr<scalar_t>(), filters.data_ptr<scalar_t>(),
                                            alphas.data_ptr<scalar_t>(), s.C, s.H, s.W, s.n, s.k,
                                            partial.data_ptr<double>());
      PYI_LAUNCH_CHECK();
    };
    if (s.expert == foe::kStudentT) {
      launch(foe_param_grad_impl<foe::StudentT, scalar_t>);
    } else {
      launch(foe_param_grad_impl<foe::LogCosh, scalar_t>);
    }
  });
  // sum_b grad_energy[b] * (per-image sums over blocks), in double.
  const at::Tensor weighted =
      at::matmul(grad_energy.to(at::kDouble).view({1, s.B}), partial.sum(1)).view({-1});
  const at::Tensor grad_filters =
      weighted.narrow(0, 0, s.n * taps).view(filters.sizes()).to(x.scalar_type()).contiguous();
  const at::Tensor grad_alphas =
      weighted.narrow(0, s.n * taps, s.n).to(x.scalar_type()).contiguous();
  return {grad_filters, grad_alphas};
}

}  // namespace

TORCH_LIBRARY_IMPL(pyinvert, CUDA, m) {
  m.impl("foe_energy_grad", &foe_energy_grad_kernel);
  m.impl("foe_param_grad", &foe_param_grad_kernel);
}

}  // namespace pyinvert
