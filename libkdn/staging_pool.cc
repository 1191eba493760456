#include "libkdn/staging_pool.h"

#include <algorithm>
#include <cstdlib>
#include <string>

#include "libkdn/api_status.h"

namespace kdn::libkdn {
namespace {

class AlignedAllocator final : public HostAllocator {
 public:
  Result<void*> Allocate(size_t bytes) override {
    void* p = std::aligned_alloc(kStagingAlign, bytes);
    if (p == nullptr) return NoMemory("staging buffer of " + std::to_string(bytes) + " bytes");
    return p;
  }
  void Free(void* p) override { std::free(p); }
};

}  // namespace

std::unique_ptr<HostAllocator> AlignedHostAllocator() {
  return std::make_unique<AlignedAllocator>();
}

StagingBuffer& StagingBuffer::operator=(StagingBuffer&& o) noexcept {
  if (this != &o) {
    Release();
    pool_ = std::move(o.pool_);
    data_ = o.data_;
    size_ = o.size_;
    o.data_ = nullptr;
    o.size_ = 0;
  }
  return *this;
}

void StagingBuffer::Release() {
  if (data_ != nullptr && pool_) pool_->Return(data_, size_);
  data_ = nullptr;
  size_ = 0;
  pool_.reset();
}

std::shared_ptr<StagingPool> StagingPool::Create(std::unique_ptr<HostAllocator> allocator,
                                                 size_t keep_bytes) {
  return std::shared_ptr<StagingPool>(new StagingPool(std::move(allocator), keep_bytes));
}

StagingPool::~StagingPool() {
  for (const Idle& b : idle_) allocator_->Free(b.data);
}

Result<StagingBuffer> StagingPool::Acquire(size_t bytes) {
  const size_t want = AlignUp(std::max<size_t>(bytes, 1), kStagingAlign);
  StagingBuffer buf;
  {
    MutexLock lock(mu_);
    // Smallest idle buffer that fits, unless it is far larger than needed (then it stays for a
    // request its size).
    auto it = std::lower_bound(idle_.begin(), idle_.end(), want,
                               [](const Idle& b, size_t w) { return b.size < w; });
    if (it != idle_.end() && it->size <= 4 * want + (1u << 20)) {
      buf.data_ = it->data;
      buf.size_ = it->size;
      idle_bytes_ -= it->size;
      idle_.erase(it);
    }
  }
  if (buf.data_ == nullptr) {
    // Round large requests up a little so that the next, slightly larger layer reuses it.
    const size_t alloc = want >= (8u << 20) ? AlignUp(want + want / 8, kStagingAlign) : want;
    KDN_ASSIGN_OR_RETURN(void* p, allocator_->Allocate(alloc));
    buf.data_ = static_cast<std::byte*>(p);
    buf.size_ = alloc;
  }
  buf.pool_ = shared_from_this();
  return buf;
}

void StagingPool::Return(std::byte* data, size_t size) {
  MutexLock lock(mu_);
  auto it = std::lower_bound(idle_.begin(), idle_.end(), size,
                             [](const Idle& b, size_t w) { return b.size < w; });
  idle_.insert(it, Idle{data, size});
  idle_bytes_ += size;
  // Over the limit: free the smallest buffers first (large ones are the expensive ones).
  while (idle_bytes_ > keep_bytes_ && idle_.size() > 1) {
    allocator_->Free(idle_.front().data);
    idle_bytes_ -= idle_.front().size;
    idle_.erase(idle_.begin());
  }
}

}  // namespace kdn::libkdn
