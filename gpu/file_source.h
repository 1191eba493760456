// A `.kv` file read with pread(2): the path every cache can fall back to.
//
// Reads through the page cache (a file on kdnfs is served by the daemon; repeated loads of a hot
// file come from memory). mmap is avoided on purpose: a file truncated under a mapping turns a
// read into SIGBUS, and a bad file must be an error, never a crash.
#ifndef KDN_GPU_FILE_SOURCE_H_
#define KDN_GPU_FILE_SOURCE_H_

#include <memory>
#include <span>
#include <string>

#include "kdn/format.h"
#include "kdn/status.h"

namespace kdn::gpu {

// Reads exactly out.size() bytes at `offset` of `fd`, retrying on EINTR and short reads; a read
// past the end of the file is an error naming `what`.
Status PreadFull(int fd, uint64_t offset, std::span<std::byte> out, const std::string& what);

class FileSource final : public ByteSource {
 public:
  // NotFound for a missing path; InvalidArgument for something that is not a regular file.
  static Result<std::unique_ptr<FileSource>> Open(const std::string& path);
  ~FileSource() override;
  FileSource(const FileSource&) = delete;
  FileSource& operator=(const FileSource&) = delete;

  uint64_t size() const override { return size_; }
  Status ReadAt(uint64_t offset, std::span<std::byte> out) const override;
  int fd() const { return fd_; }
  const std::string& path() const { return path_; }

 private:
  FileSource(int fd, uint64_t size, std::string path)
      : fd_(fd), size_(size), path_(std::move(path)) {}
  int fd_;
  uint64_t size_;
  std::string path_;
};

}  // namespace kdn::gpu

#endif  // KDN_GPU_FILE_SOURCE_H_
