// One inode's content while it is being written.
//
// Committed content is immutable, so a write (or a truncate) of a regular file goes to a private
// file in the store's staging directory: a copy of the committed bytes the write needs, then the
// writes themselves. At close (FLUSH from a process that wrote), fsync, or when nobody can write
// any more, the staged file is handed to Store::CommitFileContent, which validates it (`.kv`
// content must pass VerifyKv, the check `kdnctl verify` runs), stores it and publishes it in one
// transaction.
// Until then reads of the inode are served from the staged file.
//
// Writers are remembered by thread id and thread group id: FUSE sends FLUSH on every close(), and
// without OPEN requests (no-open mode) kdnfs cannot tell a reader's close from a writer's but by
// who is closing. Only a process that wrote commits; a reader's close never commits (or fails on)
// somebody else's half-written file.
#ifndef KDN_FS_KDNFS_STAGED_FILE_H_
#define KDN_FS_KDNFS_STAGED_FILE_H_

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <shared_mutex>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "kdn/status.h"
#include "kdn/store.h"

namespace kdn::fs {

class StagedFile {
 public:
  using Clock = std::chrono::steady_clock;

  // Creates an empty staging file at `path` (O_EXCL, mode 0600).
  static Result<std::unique_ptr<StagedFile>> Create(const std::string& path);
  ~StagedFile();
  StagedFile(const StagedFile&) = delete;
  StagedFile& operator=(const StagedFile&) = delete;

  // Copies the first `length` bytes of `chunk` from the store (verified reads), so that writes
  // land on top of the committed content.
  Status CopyFrom(Store& store, const ChunkId& chunk, uint64_t length);

  Status Write(uint64_t offset, std::span<const std::byte> data);
  Result<size_t> Read(uint64_t offset, std::span<std::byte> out) const;
  Status Truncate(uint64_t size);

  // A thread of process `tgid` changed the content; it may commit it at its close.
  void AddWriter(int32_t tid, int32_t tgid);
  bool HasWriterThread(int32_t tid) const;
  bool HasWriterProcess(int32_t tgid) const;
  const std::vector<std::pair<int32_t, int32_t>>& writers() const { return writers_; }

  const std::string& path() const { return path_; }
  uint64_t size() const { return size_; }
  int64_t mtime_ns() const { return mtime_ns_; }
  int64_t ctime_ns() const { return ctime_ns_; }
  // An explicit mtime (utimensat while the file is being written) wins over the time of the last
  // write, until the next write.
  void set_mtime_ns(int64_t ns) { mtime_ns_ = ns; }
  Clock::time_point last_change() const { return last_change_; }

  // The file being staged had no content: this is its first. The staging file moves to
  // `first_content_path` (Store::NewStagingPath(Ino)), so that recovery after a crash removes the
  // file if that content never commits; a refused first content removes it at once.
  Status MarkFirstContent(const std::string& first_content_path);
  bool first_content() const { return first_content_; }

  // Set once the content was committed or dropped: the object is no longer the inode's content and
  // a caller that still holds it must look the inode up again.
  bool retired() const { return retired_; }
  void Retire() { retired_ = true; }

  // Readers share it, writers and the commit hold it exclusively.
  std::shared_mutex& mutex() { return mutex_; }

  // Space. The staged bytes hold capacity in the store (Store::ReserveSpace) from the write that
  // needs it until the commit takes it over (TakeReserved) or the file is dropped (the destructor
  // gives back what is left). `reserved` only grows while the file is staged: it is the most the
  // content needed, 4 KiB-rounded, plus whatever was reserved ahead of it.
  // Changed under the exclusive lock; read by quota checks of other files without it.
  uint64_t reserved() const { return reserved_.load(std::memory_order_relaxed); }
  void AddReserved(Store& store, uint64_t bytes);
  uint64_t TakeReserved() { return reserved_.exchange(0, std::memory_order_relaxed); }
  // What quotas count of the file when it was staged: its owner, its committed content's 4 KiB
  // rounded size (which its staged content replaces), and the directories naming it that have a
  // set quota (user.kdn.quota).
  struct QuotaBasis {
    uint32_t owner = 0;
    uint64_t committed_bytes = 0;
    std::vector<uint64_t> quota_dirs;
  };
  // Null until set (once, by the thread that staged the file).
  const QuotaBasis* quota_basis() const {
    return quota_basis_ready_.load(std::memory_order_acquire) ? &quota_basis_ : nullptr;
  }
  void set_quota_basis(QuotaBasis basis) {
    quota_basis_ = std::move(basis);
    quota_basis_ready_.store(true, std::memory_order_release);
  }

 private:
  StagedFile(std::string path, int fd);
  void Touch();

  std::shared_mutex mutex_;
  std::string path_;
  int fd_ = -1;
  uint64_t size_ = 0;
  int64_t mtime_ns_ = 0;
  int64_t ctime_ns_ = 0;
  Clock::time_point last_change_;
  std::vector<std::pair<int32_t, int32_t>> writers_;  // (thread id, thread group id)
  bool retired_ = false;
  bool first_content_ = false;
  Store* space_owner_ = nullptr;  // where reserved_ is held
  std::atomic<uint64_t> reserved_{0};
  QuotaBasis quota_basis_;
  std::atomic<bool> quota_basis_ready_{false};
};

// Nanoseconds since the epoch (CLOCK_REALTIME), the unit of every time in the store.
int64_t NowNs();

}  // namespace kdn::fs

#endif  // KDN_FS_KDNFS_STAGED_FILE_H_
