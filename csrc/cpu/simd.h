#pragma once
// The vector-width policies of the CPU kernels.
//
// The library is built for the x86-64 baseline (SSE2; no -march=native, so the wheel runs on
// any x86-64 CPU). Row loops that gain from wider vectors get a second build, picked once per
// process by what the CPU supports. Two policies, by what the results must equal:
//
//   PYI_CLONES_EXACT  "avx2", "default": AVX2 *without* FMA. Every a * b + c still rounds the
//                     product and the sum separately, so each clone gives the baseline's bits.
//                     For the kernels compared bit for bit with VLFeat (HOG; DSIFT uses 16-byte
//                     GNU vectors, which are baseline SSE2, and needs no clone). Enabling FMA
//                     here would let GCC contract a * b + c (its default -ffp-contract=fast)
//                     and break the equality with VLFeat's float results.
//
// Kernels with no bit-for-bit reference that gain from FMA (image_prior, the FoE op) are
// instead compiled twice by hand, for the baseline and with __attribute__((target("avx2,fma"))),
// and pick one at run time with cpu_has_avx2_fma(). Not target_clones("arch=haswell"): GCC's
// resolver for an "arch=" clone tests __builtin_cpu_is("haswell"), an Intel Haswell exactly, so
// every other AVX2 CPU (later Intel cores, AMD EPYC) would run the baseline. Their results
// differ in the last bits between CPUs with and without AVX2+FMA; a seeded run is reproducible
// on one machine (tests/test_golden.py compares inversions bit for bit on the machine that
// made them).
//
// Neither is ever built with -ffast-math. Other compilers and architectures get the baseline
// code only.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(__INTEL_COMPILER)
#define PYI_CLONES_EXACT __attribute__((target_clones("avx2", "default")))
#else
#define PYI_CLONES_EXACT
#endif

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(__INTEL_COMPILER)
#define PYI_HAS_AVX2_FMA_TARGET 1
namespace pyinvert {
// Whether this CPU runs the kernels' AVX2+FMA builds (checked once per process).
inline bool cpu_has_avx2_fma() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
}
}  // namespace pyinvert
#else
#define PYI_HAS_AVX2_FMA_TARGET 0
namespace pyinvert {
inline bool cpu_has_avx2_fma() { return false; }
}  // namespace pyinvert
#endif
