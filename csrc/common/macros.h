#pragma once
// Qualifiers for per-pixel math shared by the CPU (.cpp) and CUDA (.cu) drivers.
#ifdef __CUDACC__
#define PYI_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define PYI_HOST_DEVICE inline
#endif
