// Per-thread reusable buffers.
#include "store/format/scratch.h"

#include <cstdlib>
#include <memory>
#include <new>
#include <string>

namespace kdn::scratch {

namespace {

struct FreeDeleter {
  void operator()(std::byte* p) const { std::free(p); }
};

struct Buffer {
  std::unique_ptr<std::byte, FreeDeleter> data;
  size_t size = 0;
};

thread_local Buffer tls_buffers[static_cast<int>(Slot::kCount)];

}  // namespace

Result<std::span<std::byte>> Get(Slot slot, size_t n) {
  Buffer& b = tls_buffers[static_cast<int>(slot)];
  if (b.size < n) {
    // Grow geometrically so that a sequence of growing blocks does not reallocate every time.
    size_t want = std::max(n, b.size + b.size / 2);
    want = (want + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, want);
    if (p == nullptr) {
      want = (n + 63) / 64 * 64;
      p = std::aligned_alloc(64, want);
      if (p == nullptr) {
        return Status::NoSpace("cannot allocate " + std::to_string(n) + " bytes of working memory");
      }
    }
    b.data.reset(static_cast<std::byte*>(p));
    b.size = want;
  }
  return std::span<std::byte>(b.data.get(), n);
}

}  // namespace kdn::scratch
