// ByteSource (format.h) over what the store has at hand: memory, a file descriptor.
#ifndef KDN_STORE_BYTE_SOURCES_H_
#define KDN_STORE_BYTE_SOURCES_H_

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <span>
#include <string>

#include "kdn/format.h"

namespace kdn::store {

class SpanByteSource final : public ByteSource {
 public:
  explicit SpanByteSource(std::span<const std::byte> bytes) : bytes_(bytes) {}
  uint64_t size() const override { return bytes_.size(); }
  Status ReadAt(uint64_t offset, std::span<std::byte> out) const override {
    if (offset > bytes_.size() || out.size() > bytes_.size() - offset) {
      return Status::Corruption("read of " + std::to_string(out.size()) + " bytes at " +
                                std::to_string(offset) + " beyond the end (" +
                                std::to_string(bytes_.size()) + " bytes)");
    }
    std::memcpy(out.data(), bytes_.data() + offset, out.size());
    return Status::OK();
  }

 private:
  std::span<const std::byte> bytes_;
};

// Reads with pread from a descriptor the caller keeps open; `size` is fixed at construction.
class FdByteSource final : public ByteSource {
 public:
  FdByteSource(int fd, uint64_t size, std::string name)
      : fd_(fd), size_(size), name_(std::move(name)) {}
  uint64_t size() const override { return size_; }
  Status ReadAt(uint64_t offset, std::span<std::byte> out) const override {
    if (offset > size_ || out.size() > size_ - offset) {
      return Status::Corruption(name_ + ": read beyond the end");
    }
    size_t done = 0;
    while (done < out.size()) {
      ssize_t n =
          ::pread(fd_, out.data() + done, out.size() - done, static_cast<off_t>(offset + done));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return Status::FromErrno("reading " + name_, errno);
      if (n == 0) return Status::Corruption(name_ + ": shorter than expected");
      done += static_cast<size_t>(n);
    }
    return Status::OK();
  }

 private:
  int fd_;
  uint64_t size_;
  std::string name_;
};

}  // namespace kdn::store

#endif  // KDN_STORE_BYTE_SOURCES_H_
