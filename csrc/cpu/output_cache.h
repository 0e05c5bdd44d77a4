#pragma once
// Output buffers for the CPU ops that are recycled instead of returned to the system.
//
// An inversion calls the same op on the same shapes thousands of times. Large buffers from
// malloc are fresh mmaps, and glibc unmaps them on free, so each call would page-fault its whole
// output back in (measured: 2x the kernel's own time for a 19 MB gradient) unless the user tunes
// the allocator. Instead, the memory of a tensor made here goes back to a small cache when the
// tensor dies, and the next request of the same size reuses it. The cache holds at most
// PYINVERT_OUTPUT_CACHE_MB megabytes of idle buffers (default 1024; 0 disables it).
#include <torch/types.h>

namespace pyinvert {

// An uninitialized contiguous CPU tensor; large ones come from the recycled-buffer cache.
at::Tensor empty_recycled(at::IntArrayRef sizes, const at::TensorOptions& options);

}  // namespace pyinvert
