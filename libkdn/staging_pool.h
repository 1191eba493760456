// Reusable host buffers for encoded bytes on their way from a file to a decoder.
//
// Buffers are 4 KiB-aligned (so O_DIRECT reads land in them) and, for a CUDA context, pinned (so
// host-to-device copies are asynchronous DMA). Allocating pinned memory is slow and touching new
// memory is expensive on this VM, so buffers are kept and handed out again; the pool keeps at most
// `keep_bytes` of idle buffers.
#ifndef KDN_LIBKDN_STAGING_POOL_H_
#define KDN_LIBKDN_STAGING_POOL_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "base/thread_annotations.h"
#include "kdn/status.h"

namespace kdn::libkdn {

// Where staging memory comes from: plain aligned memory, or page-locked memory of a CUDA device.
class HostAllocator {
 public:
  virtual ~HostAllocator() = default;
  // 4 KiB-aligned memory of `bytes` bytes (a multiple of 4 KiB), or a NoMemory status.
  virtual Result<void*> Allocate(size_t bytes) = 0;
  virtual void Free(void* p) = 0;
};
std::unique_ptr<HostAllocator> AlignedHostAllocator();

class StagingPool;

// A staging buffer on loan; returns to its pool when destroyed.
class StagingBuffer {
 public:
  StagingBuffer() = default;
  StagingBuffer(StagingBuffer&& o) noexcept { *this = std::move(o); }
  StagingBuffer& operator=(StagingBuffer&& o) noexcept;
  ~StagingBuffer() { Release(); }
  StagingBuffer(const StagingBuffer&) = delete;
  StagingBuffer& operator=(const StagingBuffer&) = delete;

  std::byte* data() const { return data_; }
  size_t size() const { return size_; }
  std::span<std::byte> span() const { return {data_, size_}; }
  explicit operator bool() const { return data_ != nullptr; }
  void Release();

 private:
  friend class StagingPool;
  std::shared_ptr<StagingPool> pool_;
  std::byte* data_ = nullptr;
  size_t size_ = 0;
};

class StagingPool : public std::enable_shared_from_this<StagingPool> {
 public:
  static std::shared_ptr<StagingPool> Create(std::unique_ptr<HostAllocator> allocator,
                                             size_t keep_bytes);
  ~StagingPool();
  StagingPool(const StagingPool&) = delete;
  StagingPool& operator=(const StagingPool&) = delete;

  // A buffer of at least `bytes` bytes (rounded up to 4 KiB; at least 4 KiB).
  Result<StagingBuffer> Acquire(size_t bytes);

 private:
  friend class StagingBuffer;
  StagingPool(std::unique_ptr<HostAllocator> allocator, size_t keep_bytes)
      : allocator_(std::move(allocator)), keep_bytes_(keep_bytes) {}
  void Return(std::byte* data, size_t size);

  struct Idle {
    std::byte* data;
    size_t size;
  };
  std::unique_ptr<HostAllocator> allocator_;
  const size_t keep_bytes_;
  Mutex mu_;
  std::vector<Idle> idle_ KDN_GUARDED_BY(mu_);  // sorted by size
  size_t idle_bytes_ KDN_GUARDED_BY(mu_) = 0;
};

inline constexpr size_t kStagingAlign = 4096;
inline size_t AlignUp(size_t v, size_t a) {
  return (v + a - 1) / a * a;
}

}  // namespace kdn::libkdn

#endif  // KDN_LIBKDN_STAGING_POOL_H_
