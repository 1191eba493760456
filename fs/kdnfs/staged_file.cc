#include "fs/kdnfs/staged_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <ctime>
#include <memory>

namespace kdn::fs {
namespace {

// Bytes moved per store read when copying committed content into a staging file.
constexpr size_t kCopyBytes = size_t{4} << 20;

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};

}  // namespace

int64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

Result<std::unique_ptr<StagedFile>> StagedFile::Create(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return Status::FromErrno("create staging file " + path, errno);
  return std::unique_ptr<StagedFile>(new StagedFile(path, fd));
}

StagedFile::StagedFile(std::string path, int fd) : path_(std::move(path)), fd_(fd) {
  Touch();
}

StagedFile::~StagedFile() {
  if (space_owner_ != nullptr) space_owner_->ReleaseSpace(TakeReserved());
  if (fd_ >= 0) ::close(fd_);
  // Committed files were moved away by the store; anything still here is dropped content.
  ::unlink(path_.c_str());
}

void StagedFile::Touch() {
  mtime_ns_ = ctime_ns_ = NowNs();
  last_change_ = Clock::now();
}

Status StagedFile::MarkFirstContent(const std::string& first_content_path) {
  if (::rename(path_.c_str(), first_content_path.c_str()) != 0) {
    return Status::FromErrno("rename staging file " + path_, errno);
  }
  path_ = first_content_path;
  first_content_ = true;
  return Status::OK();
}

Status StagedFile::CopyFrom(Store& store, const ChunkId& chunk, uint64_t length) {
  if (length == 0) return Status::OK();
  // 4 KiB-aligned buffer and offsets: the store reads straight into it (O_DIRECT, no copy).
  std::unique_ptr<std::byte, FreeDeleter> buffer(
      static_cast<std::byte*>(std::aligned_alloc(4096, kCopyBytes)));
  if (!buffer) return Status::NoMemory("no memory for a staging copy");
  uint64_t offset = 0;
  while (offset < length) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(kCopyBytes, length - offset));
    KDN_ASSIGN_OR_RETURN(size_t got, store.Get(chunk, offset, {buffer.get(), want}));
    if (got != want) {
      return Status::Corruption("committed content is shorter than its inode says (" +
                                std::to_string(offset + got) + " < " + std::to_string(length) +
                                " bytes)");
    }
    KDN_RETURN_IF_ERROR(Write(offset, {buffer.get(), got}));
    offset += got;
  }
  return Status::OK();
}

Status StagedFile::Write(uint64_t offset, std::span<const std::byte> data) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n =
        ::pwrite(fd_, data.data() + done, data.size() - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno("write staging file " + path_, errno);
    }
    done += static_cast<size_t>(n);
  }
  size_ = std::max<uint64_t>(size_, offset + data.size());
  Touch();
  return Status::OK();
}

Result<size_t> StagedFile::Read(uint64_t offset, std::span<std::byte> out) const {
  if (offset >= size_) return size_t{0};
  size_t want = static_cast<size_t>(std::min<uint64_t>(out.size(), size_ - offset));
  size_t done = 0;
  while (done < want) {
    ssize_t n = ::pread(fd_, out.data() + done, want - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno("read staging file " + path_, errno);
    }
    if (n == 0) break;  // a hole past the written end reads as zeros below
    done += static_cast<size_t>(n);
  }
  std::fill(out.begin() + static_cast<ptrdiff_t>(done), out.begin() + static_cast<ptrdiff_t>(want),
            std::byte{0});
  return want;
}

Status StagedFile::Truncate(uint64_t size) {
  if (::ftruncate(fd_, static_cast<off_t>(size)) != 0) {
    return Status::FromErrno("truncate staging file " + path_, errno);
  }
  size_ = size;
  Touch();
  return Status::OK();
}

void StagedFile::AddReserved(Store& store, uint64_t bytes) {
  space_owner_ = &store;
  reserved_.fetch_add(bytes, std::memory_order_relaxed);
}

void StagedFile::AddWriter(int32_t tid, int32_t tgid) {
  for (const auto& w : writers_) {
    if (w.first == tid) return;
  }
  writers_.emplace_back(tid, tgid);
}

bool StagedFile::HasWriterThread(int32_t tid) const {
  return std::any_of(writers_.begin(), writers_.end(),
                     [tid](const auto& w) { return w.first == tid; });
}

bool StagedFile::HasWriterProcess(int32_t tgid) const {
  return std::any_of(writers_.begin(), writers_.end(),
                     [tgid](const auto& w) { return w.second == tgid; });
}

}  // namespace kdn::fs
