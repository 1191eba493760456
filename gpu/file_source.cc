#include "gpu/file_source.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

namespace kdn::gpu {

Status PreadFull(int fd, uint64_t offset, std::span<std::byte> out, const std::string& what) {
  size_t done = 0;
  while (done < out.size()) {
    const ssize_t n =
        ::pread(fd, out.data() + done, out.size() - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(
          what + ": read of " + std::to_string(out.size()) + " bytes at " + std::to_string(offset),
          errno);
    }
    if (n == 0) {
      return Status::Corruption(what + ": file ends at " + std::to_string(offset + done) +
                                ", expected " + std::to_string(offset + out.size()) +
                                " bytes (truncated?)");
    }
    done += static_cast<size_t>(n);
  }
  return Status::OK();
}

Result<std::unique_ptr<FileSource>> FileSource::Open(const std::string& path) {
  int fd;
  do {
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return Status::FromErrno(path, errno);
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return Status::FromErrno(path + ": fstat", err);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return Status::InvalidArgument(path + ": not a regular file");
  }
  return std::unique_ptr<FileSource>(new FileSource(fd, static_cast<uint64_t>(st.st_size), path));
}

FileSource::~FileSource() {
  ::close(fd_);
}

Status FileSource::ReadAt(uint64_t offset, std::span<std::byte> out) const {
  if (offset > size_ || out.size() > size_ - offset) {
    return Status::Corruption(path_ + ": read of " + std::to_string(out.size()) + " bytes at " +
                              std::to_string(offset) + " is past the end of the file (" +
                              std::to_string(size_) + " bytes)");
  }
  return PreadFull(fd_, offset, out, path_);
}

}  // namespace kdn::gpu
