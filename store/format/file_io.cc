#include "store/format/file_io.h"

#include <string>

namespace kdn {

Status PreadFull(int fd, uint64_t offset, std::span<std::byte> out, std::string_view what) {
  size_t done = 0;
  while (done < out.size()) {
    const ssize_t n =
        ::pread(fd, out.data() + done, out.size() - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(std::string(what) + ": read of " + std::to_string(out.size()) +
                                   " bytes at offset " + std::to_string(offset),
                               errno);
    }
    if (n == 0) {
      return Status::Corruption(std::string(what) + ": ends at byte " +
                                std::to_string(offset + done) + ", " +
                                std::to_string(out.size() - done) + " bytes short (truncated?)");
    }
    done += static_cast<size_t>(n);
  }
  return Status::OK();
}

Status WriteFull(int fd, std::span<const std::byte> data, std::string_view what) {
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno("write " + std::string(what), errno);
    }
    done += static_cast<size_t>(n);
  }
  return Status::OK();
}

Status PwriteFull(int fd, uint64_t offset, std::span<const std::byte> data, std::string_view what) {
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n =
        ::pwrite(fd, data.data() + done, data.size() - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(
          "write " + std::string(what) + " at offset " + std::to_string(offset + done), errno);
    }
    done += static_cast<size_t>(n);
  }
  return Status::OK();
}

}  // namespace kdn
