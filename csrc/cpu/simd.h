#pragma once
// The one target_clones policy of the CPU kernels.
//
// The library is built for the x86-64 baseline (SSE2; no -march=native, so the wheel runs on
// any x86-64 CPU). Row loops that gain from wider vectors are compiled twice more by GCC's
// target_clones, and the loader picks, once per process, the clone the CPU supports. Two
// policies, by what the results must equal:
//
//   PYI_CLONES_EXACT  "avx2", "default": AVX2 *without* FMA. Every a * b + c still rounds the
//                     product and the sum separately, so each clone gives the baseline's bits.
//                     For the kernels compared bit for bit with VLFeat (HOG; DSIFT uses 16-byte
//                     GNU vectors, which are baseline SSE2, and needs no clone). Enabling FMA
//                     here would let GCC contract a * b + c (its default -ffp-contract=fast)
//                     and break the equality with VLFeat's float results.
//   PYI_CLONES_FAST   "arch=haswell", "default": AVX2 *with* FMA (and BMI, F16C...). For kernels
//                     with no bit-for-bit reference (image_prior, compared with the reference
//                     to a tolerance): GCC may fuse a * b + c in the haswell clone, so a CPU
//                     with AVX2+FMA and one without give results that differ in the last bits.
//                     A seeded run is reproducible on one machine (tests/test_golden.py
//                     compares inversions bit for bit on the machine that made them).
//
// Neither is ever built with -ffast-math. Other compilers and architectures get no clones (the
// baseline code only). Clang has target_clones too, but "arch=haswell" needs a recent one;
// PYI_CLONES_FAST is GCC-only, as it was when these kernels were measured.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(__INTEL_COMPILER)
#define PYI_CLONES_EXACT __attribute__((target_clones("avx2", "default")))
#else
#define PYI_CLONES_EXACT
#endif

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__INTEL_COMPILER)
#define PYI_CLONES_FAST __attribute__((target_clones("arch=haswell", "default")))
#else
#define PYI_CLONES_FAST
#endif
