// One inode's content while it is being written.
//
// Committed content is immutable, so a write (or a truncate) of a regular file goes to staged
// content: a copy of the committed bytes the write needs, then the writes themselves. Small
// content (up to kMostInMemory bytes, while the Filesystem's StagingMemory has room) is held in
// memory; larger content goes to a private file in the store's staging directory, the memory
// spilled into it when the content outgrows it. A staging file per small file cost more than the
// rest of its create (creating, renaming and removing a file in one directory of the local
// filesystem, whose inode allocator then searches past the recently deleted ones). At close
// (FLUSH from a process that wrote), fsync, or when nobody can write any more, the content is
// handed to Store::CommitFileContent, which validates it (`.kv` content must pass VerifyKv, the
// check `kdnctl verify` runs), stores it and publishes it in one transaction.
// Until then reads of the inode are served from the staged content.
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
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "kdn/status.h"
#include "kdn/store.h"

namespace kdn::fs {

// The memory that staged content may hold, over all staged files together: beyond it, new
// content goes to staging files.
class StagingMemory {
 public:
  explicit StagingMemory(uint64_t most_bytes) : most_bytes_(most_bytes) {}
  // False (and nothing taken) when `bytes` more would pass the limit.
  bool Take(uint64_t bytes);
  void Give(uint64_t bytes) { held_.fetch_sub(bytes, std::memory_order_relaxed); }
  uint64_t held() const { return held_.load(std::memory_order_relaxed); }

 private:
  const uint64_t most_bytes_;
  std::atomic<uint64_t> held_{0};
};

// Where the inodes whose first content is staged in memory are written down
// (Store::FirstContentSlotsPath): one 8-byte slot each while that content is staged, so that the
// next start after a crash (kill -9 included: the slot is in the OS's page cache once pwrite
// returns) removes the files whose first content never committed, as it does for the staging
// files named by Store::NewStagingPath(Ino).
class FirstContentSlots {
 public:
  // Creates (or empties) the file; the store read what it held when it opened.
  static Result<std::unique_ptr<FirstContentSlots>> Create(const std::string& path);
  ~FirstContentSlots();
  FirstContentSlots(const FirstContentSlots&) = delete;
  FirstContentSlots& operator=(const FirstContentSlots&) = delete;

  // Writes `ino` into a free slot; returns the slot.
  Result<size_t> Take(uint64_t ino);
  // Zeroes the slot and makes it free again.
  void Free(size_t slot);

 private:
  explicit FirstContentSlots(int fd) : fd_(fd) {}
  Status WriteSlot(size_t slot, uint64_t ino);

  const int fd_;
  std::mutex mu_;
  std::vector<size_t> free_;  // under mu_
  size_t next_ = 0;           // under mu_: slots [0, next_) were handed out once
};

class StagedFile {
 public:
  using Clock = std::chrono::steady_clock;
  // Staged content up to this size stays in memory (while `StagingMemory` allows).
  static constexpr uint64_t kMostInMemory = uint64_t{64} << 10;

  // Empty content held in memory, taken from `memory`; when it outgrows kMostInMemory or the
  // memory at hand, a staging file is created at `spill_path` (O_EXCL, mode 0600) and the content
  // moves there for good.
  // `slots` (may be null: then first content always goes to a staging file) records first content
  // held in memory.
  static std::unique_ptr<StagedFile> CreateInMemory(std::string spill_path, StagingMemory* memory,
                                                    FirstContentSlots* slots);
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

  // The staging file; while the content is in memory, where it would go.
  const std::string& path() const { return path_; }
  // Whether the content is held in memory (content() then has it all) or in the file at path().
  bool in_memory() const { return fd_ < 0; }
  std::span<const std::byte> content() const { return {memory_bytes_.data(), size_}; }
  uint64_t size() const { return size_; }
  int64_t mtime_ns() const { return mtime_ns_; }
  int64_t ctime_ns() const { return ctime_ns_; }
  // An explicit mtime (utimensat while the file is being written) wins over the time of the last
  // write, until the next write.
  void set_mtime_ns(int64_t ns) { mtime_ns_ = ns; }
  Clock::time_point last_change() const { return last_change_; }

  // The file being staged had no content: this is its first. The staging file moves to
  // `first_content_path` (Store::NewStagingPath(Ino)), or content in memory takes a slot for `ino`
  // in the FirstContentSlots (spilled, it goes to that path), so that recovery after a crash
  // removes the file if that content never commits; a refused first content removes it at once.
  Status MarkFirstContent(uint64_t ino, const std::string& first_content_path);
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
  explicit StagedFile(std::string path);
  void Touch();
  // Room in memory for content of `end` bytes: false when it must go to a file instead.
  bool FitInMemory(uint64_t end);
  // Moves content held in memory to a new staging file at path().
  Status Spill();

  std::shared_mutex mutex_;
  std::string path_;
  int fd_ = -1;  // -1: the content is in memory_bytes_
  StagingMemory* memory_ = nullptr;
  FirstContentSlots* slots_ = nullptr;
  std::vector<std::byte> memory_bytes_;  // [0, size_) is the content; zeros beyond
  uint64_t memory_held_ = 0;             // taken from memory_ for memory_bytes_
  std::optional<size_t> slot_;           // in slots_
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
