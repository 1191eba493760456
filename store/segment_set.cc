#include "store/segment_set.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "iouring/aligned_buffer.h"

namespace kdn::store {
namespace {

std::string SegmentName(uint32_t id) {
  char name[32];
  std::snprintf(name, sizeof(name), "%06u.seg", id);
  return name;
}

// "000042.seg" -> 42; 0 for anything else.
uint32_t ParseSegmentName(const char* name) {
  size_t n = std::strlen(name);
  if (n < 10 || std::strcmp(name + n - 4, ".seg") != 0) return 0;
  uint64_t id = 0;
  for (size_t i = 0; i + 4 < n; ++i) {
    if (name[i] < '0' || name[i] > '9') return 0;
    id = id * 10 + static_cast<uint64_t>(name[i] - '0');
    if (id > 0xffffffffu) return 0;
  }
  return static_cast<uint32_t>(id);
}

}  // namespace

SegmentSet::~SegmentSet() {
  for (const SegmentInfo& s : segments_) ::close(s.fd);
  if (dir_fd_ >= 0) ::close(dir_fd_);
}

Status SegmentSet::Open(const std::string& seg_dir) {
  dir_ = seg_dir;
  if (::mkdir(dir_.c_str(), 0755) != 0 && errno != EEXIST) {
    return Status::FromErrno("creating " + dir_, errno);
  }
  dir_fd_ = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd_ < 0) return Status::FromErrno("opening " + dir_, errno);
  DIR* d = ::fdopendir(::dup(dir_fd_));
  if (d == nullptr) return Status::FromErrno("listing " + dir_, errno);
  std::vector<uint32_t> ids;
  while (dirent* e = ::readdir(d)) {
    if (uint32_t id = ParseSegmentName(e->d_name); id != 0) ids.push_back(id);
  }
  ::closedir(d);
  std::sort(ids.begin(), ids.end());
  std::unique_lock lock(mu_);
  for (uint32_t id : ids) {
    std::string p = path(id);
    int fd = ::open(p.c_str(), O_RDWR | O_DIRECT | O_CLOEXEC);
    if (fd < 0) return Status::FromErrno("opening segment " + p, errno);
    struct stat st;
    if (::fstat(fd, &st) != 0) {
      int err = errno;
      ::close(fd);
      return Status::FromErrno("stat of segment " + p, err);
    }
    uint64_t bytes = io::AlignDown(static_cast<uint64_t>(st.st_size), io::kDirectAlign);
    next_id_ = std::max(next_id_, id + 1);
    if (bytes == 0) {
      // Its creation was cut short before any space was allocated: nothing can live in it.
      ::close(fd);
      ::unlinkat(dir_fd_, SegmentName(id).c_str(), 0);
      continue;
    }
    segments_.push_back(SegmentInfo{id, bytes, fd});
  }
  return Status::OK();
}

Result<SegmentInfo> SegmentSet::Create(uint64_t bytes) {
  std::unique_lock lock(mu_);
  uint32_t id = next_id_++;
  std::string p = dir_ + "/" + SegmentName(id);
  int fd = ::open(p.c_str(), O_RDWR | O_CREAT | O_EXCL | O_DIRECT | O_CLOEXEC, 0644);
  if (fd < 0) return Status::FromErrno("creating segment " + p, errno);
  // Allocated now, so that writing a chunk never runs out of disk halfway and its blocks lie
  // together; the file size is the segment size.
  int rc;
  do {
    rc = ::posix_fallocate(fd, 0, static_cast<off_t>(bytes));
  } while (rc == EINTR);
  if (rc == 0 && ::fsync(fd) != 0) rc = errno;
  if (rc == 0 && ::fsync(dir_fd_) != 0) rc = errno;
  if (rc != 0) {
    ::close(fd);
    ::unlinkat(dir_fd_, SegmentName(id).c_str(), 0);
    return Status::FromErrno("allocating segment " + p, rc);
  }
  SegmentInfo info{id, bytes, fd};
  segments_.push_back(info);
  return info;
}

std::vector<SegmentInfo> SegmentSet::List() const {
  std::shared_lock lock(mu_);
  return segments_;
}

size_t SegmentSet::count() const {
  std::shared_lock lock(mu_);
  return segments_.size();
}

const SegmentInfo* SegmentSet::Find(uint32_t id) const {
  auto it = std::lower_bound(segments_.begin(), segments_.end(), id,
                             [](const SegmentInfo& s, uint32_t v) { return s.id < v; });
  return it != segments_.end() && it->id == id ? &*it : nullptr;
}

int SegmentSet::fd(uint32_t id) const {
  std::shared_lock lock(mu_);
  const SegmentInfo* s = Find(id);
  return s ? s->fd : -1;
}

uint64_t SegmentSet::bytes(uint32_t id) const {
  std::shared_lock lock(mu_);
  const SegmentInfo* s = Find(id);
  return s ? s->bytes : 0;
}

std::string SegmentSet::path(uint32_t id) const {
  return dir_ + "/" + SegmentName(id);
}

uint64_t SegmentSet::total_bytes() const {
  std::shared_lock lock(mu_);
  uint64_t total = 0;
  for (const SegmentInfo& s : segments_) total += s.bytes;
  return total;
}

}  // namespace kdn::store
