// Plain POSIX file I/O done once, for every layer: an owned descriptor and whole-buffer reads and
// writes that retry EINTR and short transfers.
//
// Every layer opens files (segments, staged files, `.kv` files, the store's LOCK); UniqueFd is the
// one RAII type they share, so no error path leaks a descriptor. Close() exists because close(2)
// can report a delayed write error, which a writer must not drop.
#ifndef KDN_STORE_FORMAT_FILE_IO_H_
#define KDN_STORE_FORMAT_FILE_IO_H_

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "kdn/status.h"

namespace kdn {

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() { reset(); }
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) reset(other.release());
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  // Gives up ownership without closing.
  int release() { return std::exchange(fd_, -1); }
  // Closes the current descriptor (errors ignored: nothing was written through it, or the caller
  // chose not to care) and owns `fd` instead.
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }
  // Closes now and reports a failure of close(2) as "close <what>: <strerror>".
  Status Close(std::string_view what) {
    if (fd_ < 0) return Status::OK();
    const int rc = ::close(release());
    return rc == 0 ? Status::OK() : Status::FromErrno("close " + std::string(what), errno);
  }

 private:
  int fd_ = -1;
};

// open(2) retried on EINTR.
inline UniqueFd OpenFd(const char* path, int flags, mode_t mode = 0) {
  int fd;
  do {
    fd = ::open(path, flags, mode);
  } while (fd < 0 && errno == EINTR);
  return UniqueFd(fd);
}

// Reads exactly out.size() bytes at `offset`. End of file before that is Corruption ("<what>: ends
// at byte N, M bytes short"): the caller asked for bytes its metadata says exist.
Status PreadFull(int fd, uint64_t offset, std::span<std::byte> out, std::string_view what);

// Writes all of `data` at the file position (WriteFull) or at `offset` (PwriteFull).
Status WriteFull(int fd, std::span<const std::byte> data, std::string_view what);
Status PwriteFull(int fd, uint64_t offset, std::span<const std::byte> data, std::string_view what);

}  // namespace kdn

#endif  // KDN_STORE_FORMAT_FILE_IO_H_
