// ByteSource implementations: a file read with pread, and a caller's memory buffer.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "kdn/format.h"
#include "store/format/file_io.h"

namespace kdn {

namespace {

class FileSource final : public ByteSource {
 public:
  FileSource(UniqueFd fd, uint64_t size, std::string path)
      : fd_(std::move(fd)), size_(size), path_(std::move(path)) {}

  uint64_t size() const override { return size_; }

  Status ReadAt(uint64_t offset, std::span<std::byte> out) const override {
    if (offset > size_ || out.size() > size_ - offset) {
      return Status::Corruption(path_ + ": read of " + std::to_string(out.size()) +
                                " bytes at offset " + std::to_string(offset) +
                                " is beyond the end (" + std::to_string(size_) + " bytes)");
    }
    return PreadFull(fd_.get(), offset, out, path_);
  }

 private:
  UniqueFd fd_;
  uint64_t size_;
  std::string path_;
};

class MemoryByteSource final : public ByteSource {
 public:
  explicit MemoryByteSource(std::span<const std::byte> bytes) : bytes_(bytes) {}
  uint64_t size() const override { return bytes_.size(); }
  Status ReadAt(uint64_t offset, std::span<std::byte> out) const override {
    if (offset > bytes_.size() || out.size() > bytes_.size() - offset) {
      return Status::Corruption("read of " + std::to_string(out.size()) + " bytes at offset " +
                                std::to_string(offset) + " is beyond the end (" +
                                std::to_string(bytes_.size()) + " bytes)");
    }
    if (!out.empty()) std::memcpy(out.data(), bytes_.data() + offset, out.size());
    return Status::OK();
  }

 private:
  std::span<const std::byte> bytes_;
};

}  // namespace

Result<std::unique_ptr<ByteSource>> OpenFileSource(const std::string& path) {
  UniqueFd fd = OpenFd(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (!fd.valid()) return Status::FromErrno("open " + path, errno);
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return Status::FromErrno("stat " + path, errno);
  if (!S_ISREG(st.st_mode)) return Status::InvalidArgument(path + ": not a regular file");
  return std::unique_ptr<ByteSource>(
      std::make_unique<FileSource>(std::move(fd), static_cast<uint64_t>(st.st_size), path));
}

std::unique_ptr<ByteSource> MemorySource(std::span<const std::byte> bytes) {
  return std::make_unique<MemoryByteSource>(bytes);
}

}  // namespace kdn
