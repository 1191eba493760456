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

bool StagingMemory::Take(uint64_t bytes) {
  uint64_t held = held_.load(std::memory_order_relaxed);
  do {
    if (bytes > most_bytes_ || held > most_bytes_ - bytes) return false;
  } while (!held_.compare_exchange_weak(held, held + bytes, std::memory_order_relaxed));
  return true;
}

Result<std::unique_ptr<FirstContentSlots>> FirstContentSlots::Create(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return Status::FromErrno("create " + path, errno);
  return std::unique_ptr<FirstContentSlots>(new FirstContentSlots(fd));
}

FirstContentSlots::~FirstContentSlots() { ::close(fd_); }

Status FirstContentSlots::WriteSlot(size_t slot, uint64_t ino) {
  unsigned char record[8];
  for (size_t k = 0; k < sizeof record; ++k) record[k] = static_cast<unsigned char>(ino >> (8 * k));
  for (;;) {
    ssize_t n = ::pwrite(fd_, record, sizeof record, static_cast<off_t>(slot * sizeof record));
    if (n == static_cast<ssize_t>(sizeof record)) return Status::OK();
    if (n < 0 && errno == EINTR) continue;
    return Status::FromErrno("write first-content slot", n < 0 ? errno : EIO);
  }
}

Result<size_t> FirstContentSlots::Take(uint64_t ino) {
  size_t slot;
  {
    std::lock_guard lock(mu_);
    if (free_.empty()) {
      slot = next_++;
    } else {
      slot = free_.back();
      free_.pop_back();
    }
  }
  Status written = WriteSlot(slot, ino);
  if (!written.ok()) {
    std::lock_guard lock(mu_);
    free_.push_back(slot);
    return written;
  }
  return slot;
}

void FirstContentSlots::Free(size_t slot) {
  // Not reused when it cannot be zeroed: recovery would then remove the next holder's file once
  // its content is gone (a later truncate to 0).
  if (!WriteSlot(slot, 0).ok()) return;
  std::lock_guard lock(mu_);
  free_.push_back(slot);
}

StagedFile::StagedFile(std::string path) : path_(std::move(path)) {
  Touch();
}

std::unique_ptr<StagedFile> StagedFile::CreateInMemory(std::string spill_path,
                                                       StagingMemory* memory,
                                                       FirstContentSlots* slots) {
  auto file = std::unique_ptr<StagedFile>(new StagedFile(std::move(spill_path)));
  file->memory_ = memory;
  file->slots_ = slots;
  return file;
}

StagedFile::~StagedFile() {
  if (space_owner_ != nullptr) space_owner_->ReleaseSpace(TakeReserved());
  if (memory_held_ != 0) memory_->Give(memory_held_);
  // After the commit (or the removal of a refused new file): the slot has done its work.
  if (slot_) slots_->Free(*slot_);
  if (fd_ >= 0) {
    ::close(fd_);
    // Committed files were moved away by the store; anything still here is dropped content.
    ::unlink(path_.c_str());
  }
}

bool StagedFile::FitInMemory(uint64_t end) {
  if (end > kMostInMemory) return false;
  if (end <= memory_held_) return true;
  // Grown in steps (doubling) so that sequential small writes do not copy the content each time.
  const uint64_t want = std::min(kMostInMemory, std::max({end, memory_held_ * 2, uint64_t{512}}));
  if (!memory_->Take(want - memory_held_)) {
    if (want == end || !memory_->Take(end - memory_held_)) return false;
    memory_bytes_.reserve(end);
    memory_held_ = end;
    return true;
  }
  memory_bytes_.reserve(want);
  memory_held_ = want;
  return true;
}

Status StagedFile::Spill() {
  int fd = ::open(path_.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return Status::FromErrno("create staging file " + path_, errno);
  fd_ = fd;
  size_t done = 0;
  while (done < size_) {
    ssize_t n = ::pwrite(fd_, memory_bytes_.data() + done, size_ - done, static_cast<off_t>(done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno("write staging file " + path_, errno);
    }
    done += static_cast<size_t>(n);
  }
  std::vector<std::byte>().swap(memory_bytes_);
  memory_->Give(memory_held_);
  memory_held_ = 0;
  return Status::OK();
}

void StagedFile::Touch() {
  mtime_ns_ = ctime_ns_ = NowNs();
  last_change_ = Clock::now();
}

Status StagedFile::MarkFirstContent(uint64_t ino, const std::string& first_content_path) {
  if (in_memory()) {
    path_ = first_content_path;  // where it goes should it spill
    first_content_ = true;
    if (slots_ != nullptr) {
      Result<size_t> slot = slots_->Take(ino);
      if (slot.ok()) {
        slot_ = *slot;
        return Status::OK();
      }
    }
    // Nowhere to write it down: a staging file of that name says it instead.
    return Spill();
  }
  if (::rename(path_.c_str(), first_content_path.c_str()) != 0) {
    return Status::FromErrno("rename staging file " + path_, errno);
  }
  path_ = first_content_path;
  first_content_ = true;
  return Status::OK();
}

Status StagedFile::CopyFrom(Store& store, const ChunkId& chunk, uint64_t length) {
  if (length == 0) return Status::OK();
  // 4 KiB-aligned buffer and offsets: the store reads straight into it (O_DIRECT, no copy). No
  // larger than the content needs (small content: no mapping of kCopyBytes made and dropped).
  const size_t buffer_bytes =
      static_cast<size_t>(std::min<uint64_t>(kCopyBytes, (length + 4095) / 4096 * 4096));
  std::unique_ptr<std::byte, FreeDeleter> buffer(
      static_cast<std::byte*>(std::aligned_alloc(4096, buffer_bytes)));
  if (!buffer) return Status::NoMemory("no memory for a staging copy");
  uint64_t offset = 0;
  while (offset < length) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(buffer_bytes, length - offset));
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
  if (in_memory()) {
    const uint64_t end = offset + data.size();
    if (FitInMemory(end)) {
      if (end > memory_bytes_.size()) memory_bytes_.resize(end);
      std::copy(data.begin(), data.end(), memory_bytes_.begin() + static_cast<ptrdiff_t>(offset));
      size_ = std::max<uint64_t>(size_, end);
      Touch();
      return Status::OK();
    }
    KDN_RETURN_IF_ERROR(Spill());
  }
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
  if (in_memory()) {
    std::copy_n(memory_bytes_.begin() + static_cast<ptrdiff_t>(offset), want, out.begin());
    return want;
  }
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
  if (in_memory()) {
    if (FitInMemory(size)) {
      // Bytes past a shrunk end read as zeros should the content grow again.
      memory_bytes_.resize(size);
      size_ = size;
      Touch();
      return Status::OK();
    }
    KDN_RETURN_IF_ERROR(Spill());
  }
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
