// FUSE passthrough for kdnfs (see passthrough.h): the INIT decision, and per inode the modes of
// its open files and the backing id its passthrough files share.
#include "fs/kdnfs/passthrough.h"

#include <fcntl.h>
#include <linux/capability.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "fs/kdnfs/log.h"
#include "store/format/file_io.h"

namespace kdn::fs {
namespace {

constexpr unsigned kDevIocMagic = 229;  // FUSE_DEV_IOC_MAGIC
constexpr unsigned long kIocBackingOpen = _IOW(kDevIocMagic, 1, fuse_abi::BackingMap);
constexpr unsigned long kIocBackingClose = _IOW(kDevIocMagic, 2, uint32_t);

// FUSE_DEV_IOC_BACKING_OPEN checks CAP_SYS_ADMIN (the backing file is opened with the daemon's
// credentials on every user's behalf). Asked of the kernel, not guessed from the uid.
bool HasCapSysAdmin() {
  __user_cap_header_struct header;
  __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];
  std::memset(&header, 0, sizeof(header));
  std::memset(data, 0, sizeof(data));
  header.version = _LINUX_CAPABILITY_VERSION_3;
  header.pid = 0;
  if (::syscall(SYS_capget, &header, data) != 0) return false;
  return (data[CAP_TO_INDEX(CAP_SYS_ADMIN)].effective & CAP_TO_MASK(CAP_SYS_ADMIN)) != 0;
}

}  // namespace

bool Passthrough::Negotiate(uint64_t offered, int dev_fd) {
  const char* why = nullptr;
  if (!wanted_) {
    why = "turned off (-o passthrough=off)";
  } else if ((offered & fuse_abi::kInitPassthrough) == 0) {
    why = "the kernel does not offer it (Linux 6.9+ built with CONFIG_FUSE_PASSTHROUGH)";
  } else if (!HasCapSysAdmin()) {
    why = "kdnfs lacks CAP_SYS_ADMIN, which registering a backing file needs";
  }
  if (why != nullptr) {
    KDN_LOG_INFO("FUSE passthrough not used: %s; kdnfs serves every read", why);
    return false;
  }
  dev_fd_ = dev_fd;
  active_.store(true, std::memory_order_release);
  counters_->passthrough.store(true);
  KDN_LOG_INFO("FUSE passthrough: committed files opened for reading are read from their chunk "
               "files by the kernel");
  return true;
}

void Passthrough::LogFallbackOnce(const std::string& why) {
  if (!fallback_logged_.exchange(true)) {
    KDN_LOG_WARNING("FUSE passthrough: kdnfs serves an open itself: %s (logged once)",
                    why.c_str());
  }
}

Passthrough::Decision Passthrough::ServedLocked(InodeModes& m) {
  ++m.served;
  counters_->served_opens.fetch_add(1, std::memory_order_relaxed);
  return Decision{OpenMode::kCached, -1, 0};
}

Passthrough::Decision Passthrough::OpenServed(Ino ino) {
  MutexLock lock(mu_);
  InodeModes& m = inodes_[ino];
  ++m.writers;
  pages_hold_.erase(ino);  // the writer's bytes go to the inode's pages
  return ServedLocked(m);
}

bool Passthrough::WriterOpen(Ino ino) {
  MutexLock lock(mu_);
  auto it = inodes_.find(ino);
  return it != inodes_.end() && it->second.writers > 0;
}

bool Passthrough::WaitUnpinnedLocked(UniqueLock& lock, Ino ino, bool cached_readers_too,
                                     std::chrono::steady_clock::time_point deadline) {
  for (;;) {
    if (UnpinnedLocked(ino, cached_readers_too)) return true;
    if (released_.wait_until(lock, deadline) == std::cv_status::timeout) {
      return UnpinnedLocked(ino, cached_readers_too);
    }
  }
}

bool Passthrough::UnpinnedLocked(Ino ino, bool cached_readers_too) {
  auto it = inodes_.find(ino);
  return it == inodes_.end() ||
         (it->second.passthrough == 0 && (!cached_readers_too || it->second.cached_readers == 0));
}

bool Passthrough::KeepPagesLocked(Ino ino, const ChunkId& content) {
  if (pages_hold_.size() >= kMaxRememberedPages) pages_hold_.clear();
  auto [it, added] = pages_hold_.try_emplace(ino, content);
  if (added) return false;  // unknown pages (a writer's, another content's): dropped
  const bool same = it->second == content;
  it->second = content;
  return same;
}

bool Passthrough::OpensAtOnce(Ino ino) {
  MutexLock lock(mu_);
  auto it = inodes_.find(ino);
  return it == inodes_.end() || it->second.served == 0 || it->second.passthrough == 0;
}

Status Passthrough::CheckChangeable(Ino ino) {
  if (!active()) return Status::OK();
  UniqueLock lock(mu_);
  if (WaitUnpinnedLocked(lock, ino, /*cached_readers_too=*/true,
                         std::chrono::steady_clock::now() + kBusyWait)) {
    return Status::OK();
  }
  return Status::FromErrno("the file is open for reading", ETXTBSY);
}

Passthrough::Decision Passthrough::Open(Ino ino, int flags,
                                        const std::optional<CommittedContent>& content) {
  if (!active()) return OpenServed(ino);
  // Writers (O_TRUNC truncates, too) and content not committed are served by kdnfs; readers
  // of it in direct mode.
  const bool read_only = (flags & O_ACCMODE) == O_RDONLY && (flags & O_TRUNC) == 0;
  const bool reader = read_only && content;
  const bool small = reader && content->size <= cached_read_max_;
  const auto deadline = std::chrono::steady_clock::now() + kBusyWait;
  bool tried_backing = false;
  UniqueLock lock(mu_);
  for (;;) {
    InodeModes* m = &inodes_[ino];
    // Small content with no writer at work and no passthrough file of the inode (whose mode
    // every open of it must then share): read from the kernel's page cache.
    if (small && m->passthrough == 0 && m->writers == 0) {
      ++m->cached_readers;
      counters_->served_opens.fetch_add(1, std::memory_order_relaxed);
      return Decision{OpenMode::kCachedReader, -1, 0, KeepPagesLocked(ino, content->chunk)};
    }
    // (A cached file of the inode rules passthrough out: the kernel refuses the mix.)
    if (reader && m->served == 0 && m->cached_readers == 0) {
      if (m->passthrough > 0 && m->chunk == content->chunk) {  // the backing in use
        ++m->passthrough;
        counters_->passthrough_opens.fetch_add(1, std::memory_order_relaxed);
        return Decision{OpenMode::kPassthrough, m->backing_id, 0};
      }
      if (m->passthrough == 0) {
        // The inode's first passthrough file: the chunk's backing id when one is registered
        // (another file with this content is open, or was lately).
        int32_t id = AcquireBackingLocked(content->chunk);
        if (id < 0 && !tried_backing) {
          tried_backing = true;
          // None: the chunk file is opened without the lock (the disk), then the state is
          // looked at again.
          lock.unlock();
          UniqueFd fd(OpenChunkFile(*content));
          lock.lock();
          m = &inodes_[ino];
          if (!fd.valid() || m->served != 0 || m->passthrough != 0) continue;  // decided again
          id = AcquireBackingLocked(content->chunk);  // registered meanwhile by another open
          if (id < 0) {
            id = RegisterBackingLocked(fd.get());
            if (id >= 0) {
              Backing& b = backings_by_chunk_[content->chunk];
              b.id = id;
              b.users = 1;
              backings_in_use_.fetch_add(1, std::memory_order_relaxed);
            }
          }
        }
        if (id >= 0) {
          m->passthrough = 1;
          m->chunk = content->chunk;
          m->backing_id = id;
          counters_->passthrough_opens.fetch_add(1, std::memory_order_relaxed);
          return Decision{OpenMode::kPassthrough, id, 0};
        }
      }
    }
    // A writer waits for the cached readers too: they must not see its bytes before they
    // commit.
    if (m->passthrough == 0 && (read_only || m->cached_readers == 0)) {
      Decision d = ServedLocked(*m);
      if (read_only) {
        d.mode = OpenMode::kDirect;
      } else {
        ++m->writers;
        pages_hold_.erase(ino);  // the writer's bytes go to the inode's pages
      }
      return d;
    }
    // Files of the inode are open in passthrough mode: this open could only pass through to
    // their backing, which a writer must not and a reader of other content cannot. Or this is a
    // writer, and cached readers are open. RELEASEs may still be on their way (the counts lag
    // the kernel's).
    if (blocking_hook_ != nullptr) blocking_hook_();
    if (!WaitUnpinnedLocked(lock, ino, /*cached_readers_too=*/!read_only, deadline)) {
      return Decision{OpenMode::kUntracked, -1, ETXTBSY};
    }
  }
}

void Passthrough::Release(Ino ino, OpenMode mode) {
  if (mode == OpenMode::kUntracked) return;
  MutexLock lock(mu_);
  auto it = inodes_.find(ino);
  if (it == inodes_.end()) return;
  InodeModes& m = it->second;
  if (mode == OpenMode::kPassthrough) {
    if (m.passthrough > 0 && --m.passthrough == 0) {
      ReleaseBackingLocked(m.chunk);
      m.backing_id = -1;
      released_.notify_all();
    }
  } else if (mode == OpenMode::kCachedReader) {
    if (m.cached_readers > 0 && --m.cached_readers == 0) released_.notify_all();
  } else if (m.served > 0) {
    --m.served;
    if (mode == OpenMode::kCached && m.writers > 0) --m.writers;
  }
  if (m.passthrough == 0 && m.served == 0 && m.cached_readers == 0) inodes_.erase(it);
}

int32_t Passthrough::AcquireBackingLocked(const ChunkId& chunk) {
  auto it = backings_by_chunk_.find(chunk);
  if (it == backings_by_chunk_.end()) return -1;
  Backing& b = it->second;
  if (b.users++ == 0) {
    idle_.erase(b.idle_pos);
    backings_in_use_.fetch_add(1, std::memory_order_relaxed);
  }
  return b.id;
}

void Passthrough::ReleaseBackingLocked(const ChunkId& chunk) {
  auto it = backings_by_chunk_.find(chunk);
  if (it == backings_by_chunk_.end() || it->second.users == 0) return;
  Backing& b = it->second;
  if (--b.users > 0) return;
  backings_in_use_.fetch_sub(1, std::memory_order_relaxed);
  b.idle_since = std::chrono::steady_clock::now();
  b.idle_pos = idle_.insert(idle_.end(), chunk);
  while (idle_.size() > kMaxIdleBackings) CloseIdleLocked(idle_.begin());
}

void Passthrough::CloseIdleLocked(std::list<ChunkId>::iterator pos) {
  auto it = backings_by_chunk_.find(*pos);
  idle_.erase(pos);
  if (it == backings_by_chunk_.end()) return;
  CloseBackingLocked(it->second.id);
  backings_by_chunk_.erase(it);
}

void Passthrough::ExpireIdleBackings(std::chrono::steady_clock::time_point now) {
  MutexLock lock(mu_);
  while (!idle_.empty()) {
    auto it = backings_by_chunk_.find(idle_.front());
    if (it != backings_by_chunk_.end() && now - it->second.idle_since < kIdleBacking) break;
    CloseIdleLocked(idle_.begin());
  }
}

int Passthrough::OpenChunkFile(const CommittedContent& content) {
  Result<int> opened = store_->OpenChunkForRead(content.chunk);
  if (!opened.ok()) {
    LogFallbackOnce("the store gives no chunk file: " + opened.status().ToString());
    return -1;
  }
  UniqueFd fd(*opened);
  // The kernel reads the backing file as it is: it must be the file's exact bytes.
  struct stat st;
  if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode) ||
      static_cast<uint64_t>(st.st_size) != content.size) {
    LogFallbackOnce("chunk " + content.chunk.ToHex() + " is not a regular file of " +
                    std::to_string(content.size) + " bytes");
    return -1;
  }
  return fd.release();
}

int32_t Passthrough::RegisterBackingLocked(int fd) {
  fuse_abi::BackingMap map;
  std::memset(&map, 0, sizeof(map));
  map.fd = fd;
  int id = ::ioctl(dev_fd_, kIocBackingOpen, &map);
  if (id < 0) {
    LogFallbackOnce(std::string("FUSE_DEV_IOC_BACKING_OPEN: ") + std::strerror(errno));
    return -1;
  }
  counters_->backing_files.fetch_add(1, std::memory_order_relaxed);
  return id;
}

void Passthrough::CloseBackingLocked(int32_t id) {
  if (id < 0) return;
  uint32_t arg = static_cast<uint32_t>(id);
  // Fails only once the connection is gone, and the ids with it.
  if (::ioctl(dev_fd_, kIocBackingClose, &arg) != 0 && errno != ENOTCONN) {
    KDN_LOG_DEBUG("FUSE_DEV_IOC_BACKING_CLOSE %d: %s", id, std::strerror(errno));
  }
  counters_->backing_files.fetch_sub(1, std::memory_order_relaxed);
}

}  // namespace kdn::fs
