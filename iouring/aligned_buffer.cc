#include "iouring/aligned_buffer.h"

#include <sys/mman.h>

#include <utility>

namespace kdn::io {

AlignedBuffer::AlignedBuffer(size_t size) {
  if (size == 0) return;
  size_t mapped = AlignUp(size, kDirectAlign);
  void* p = ::mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return;
  data_ = static_cast<std::byte*>(p);
  size_ = mapped;
}

AlignedBuffer::~AlignedBuffer() {
  Reset();
}

AlignedBuffer::AlignedBuffer(AlignedBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

AlignedBuffer& AlignedBuffer::operator=(AlignedBuffer&& other) noexcept {
  if (this != &other) {
    Reset();
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

void AlignedBuffer::Reset() {
  if (data_ != nullptr) ::munmap(data_, size_);
  data_ = nullptr;
  size_ = 0;
}

}  // namespace kdn::io
