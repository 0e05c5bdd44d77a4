#include "cpu/output_cache.h"

#include <c10/core/CPUAllocator.h>

#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <string>
#include <unordered_map>

namespace pyinvert {
namespace {

// Below this size malloc serves from its heap without faults; not worth caching.
constexpr size_t kMinRecycledBytes = size_t(1) << 20;
constexpr size_t kAlignment = 64;

struct Block {
  void* data;
  size_t nbytes;
};

// PYINVERT_OUTPUT_CACHE_MB: a whole number of megabytes (surrounding blanks allowed), default
// 1024, 0 disables the cache. Anything else raises (pyinvert/_ext.py checks it at import with the
// same words; this is for a value set later in the process, before the first op call).
size_t capacity_from_environment() {
  constexpr uint64_t kMaxMegabytes = uint64_t(1) << 40;  // 1 EB: far above any real memory
  const char* env = std::getenv("PYINVERT_OUTPUT_CACHE_MB");
  if (env == nullptr) return size_t(1024) << 20;
  const std::string text(env);
  const size_t begin = text.find_first_not_of(" \t\n");
  const size_t end = text.find_last_not_of(" \t\n");
  bool valid = begin != std::string::npos;
  uint64_t megabytes = 0;
  for (size_t i = begin; valid && i <= end; ++i) {
    const char c = text[i];
    valid = c >= '0' && c <= '9' && megabytes <= kMaxMegabytes;
    megabytes = megabytes * 10 + uint64_t(c - '0');
  }
  TORCH_CHECK_VALUE(valid && megabytes <= kMaxMegabytes,
                    "pyinvert: expected PYINVERT_OUTPUT_CACHE_MB to be a whole number of "
                    "megabytes (0 disables the output cache, at most ",
                    kMaxMegabytes, "), got '", text, "'");
  return size_t(megabytes) << 20;
}

class OutputCache {
 public:
  OutputCache() : capacity_(capacity_from_environment()) {}

  Block* acquire(size_t nbytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = idle_.find(nbytes);
      if (it != idle_.end()) {
        Block* block = it->second;
        idle_.erase(it);
        idle_bytes_ -= nbytes;
        return block;
      }
    }
    void* data = nullptr;
    if (posix_memalign(&data, kAlignment, nbytes) != 0) return nullptr;
    return new Block{data, nbytes};
  }

  void release(Block* block) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (idle_bytes_ + block->nbytes <= capacity_) {
        idle_.emplace(block->nbytes, block);
        idle_bytes_ += block->nbytes;
        return;
      }
    }
    std::free(block->data);
    delete block;
  }

  size_t capacity() const { return capacity_; }

 private:
  std::mutex mutex_;
  std::unordered_multimap<size_t, Block*> idle_;
  size_t idle_bytes_ = 0;
  size_t capacity_ = 0;
};

OutputCache& output_cache() {
  // Never destroyed: tensors may be freed during interpreter shutdown, after static destructors.
  static OutputCache* cache = new OutputCache();
  return *cache;
}

void release_block(void* context) { output_cache().release(static_cast<Block*>(context)); }

}  // namespace

at::Tensor empty_recycled(at::IntArrayRef sizes, const at::TensorOptions& options) {
  int64_t numel = 1;
  for (int64_t s : sizes) numel *= s;
  const size_t nbytes =
      size_t(numel) * c10::elementSize(c10::typeMetaToScalarType(options.dtype()));
  OutputCache& cache = output_cache();
  if (nbytes < kMinRecycledBytes || cache.capacity() == 0) return at::empty(sizes, options);
  Block* block = cache.acquire(nbytes);
  TORCH_CHECK(block != nullptr, "pyinvert: out of memory allocating ", nbytes, " bytes");
  c10::DataPtr data(block->data, block, &release_block, c10::Device(c10::kCPU));
  c10::Storage storage(c10::Storage::use_byte_size_t(), nbytes, std::move(data),
                       /*allocator=*/nullptr, /*resizable=*/false);
  return at::empty({0}, options).set_(storage, 0, sizes);
}

}  // namespace pyinvert
