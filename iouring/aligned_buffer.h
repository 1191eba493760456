// Page-aligned memory for O_DIRECT transfers, released on destruction.
#ifndef KDN_IOURING_ALIGNED_BUFFER_H_
#define KDN_IOURING_ALIGNED_BUFFER_H_

#include <cstddef>
#include <cstdint>
#include <span>

namespace kdn::io {

// O_DIRECT needs buffers, offsets and lengths aligned to the logical block size; 4 KiB covers
// every device we target.
inline constexpr size_t kDirectAlign = 4096;

inline constexpr uint64_t AlignUp(uint64_t v, uint64_t a) {
  return (v + a - 1) / a * a;
}
inline constexpr uint64_t AlignDown(uint64_t v, uint64_t a) {
  return v / a * a;
}
inline bool IsAligned(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % kDirectAlign == 0;
}

// Anonymous mmap: page aligned and zeroed. Empty (size 0) when allocation fails.
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(size_t size);
  ~AlignedBuffer();
  AlignedBuffer(AlignedBuffer&& other) noexcept;
  AlignedBuffer& operator=(AlignedBuffer&& other) noexcept;
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;

  std::byte* data() const { return data_; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  std::span<std::byte> span() const { return {data_, size_}; }

 private:
  void Reset();
  std::byte* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace kdn::io

#endif  // KDN_IOURING_ALIGNED_BUFFER_H_
