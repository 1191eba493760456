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

Status SegmentSet::Open(const std::string& seg_dir) {
  dir_ = seg_dir;
  if (::mkdir(dir_.c_str(), 0755) != 0 && errno != EEXIST) {
    return Status::FromErrno("creating " + dir_, errno);
  }
  dir_fd_ = OpenFd(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (!dir_fd_.valid()) return Status::FromErrno("opening " + dir_, errno);
  DIR* d = ::fdopendir(::dup(dir_fd_.get()));
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
    UniqueFd fd = OpenFd(p.c_str(), O_RDWR | O_DIRECT | O_CLOEXEC);
    if (!fd.valid()) return Status::FromErrno("opening segment " + p, errno);
    struct stat st;
    if (::fstat(fd.get(), &st) != 0) return Status::FromErrno("stat of segment " + p, errno);
    uint64_t bytes = io::AlignDown(static_cast<uint64_t>(st.st_size), io::kDirectAlign);
    next_id_ = std::max(next_id_, id + 1);
    if (bytes == 0) {
      // Its creation was cut short before any space was allocated: nothing can live in it.
      fd.reset();
      ::unlinkat(dir_fd_.get(), SegmentName(id).c_str(), 0);
      continue;
    }
    segments_.push_back(SegmentInfo{id, bytes, fd.get()});
    segment_fds_.push_back(std::move(fd));
  }
  return Status::OK();
}

Result<SegmentInfo> SegmentSet::Create(uint64_t bytes) {
  std::unique_lock lock(mu_);
  uint32_t id = next_id_++;
  std::string p = dir_ + "/" + SegmentName(id);
  UniqueFd fd = OpenFd(p.c_str(), O_RDWR | O_CREAT | O_EXCL | O_DIRECT | O_CLOEXEC, 0644);
  if (!fd.valid()) return Status::FromErrno("creating segment " + p, errno);
  // Allocated now, so that writing a chunk never runs out of disk halfway and its blocks lie
  // together; the file size is the segment size.
  int rc;
  do {
    rc = ::posix_fallocate(fd.get(), 0, static_cast<off_t>(bytes));
  } while (rc == EINTR);
  if (rc == 0 && ::fsync(fd.get()) != 0) rc = errno;
  if (rc == 0 && ::fsync(dir_fd_.get()) != 0) rc = errno;
  if (rc != 0) {
    fd.reset();
    ::unlinkat(dir_fd_.get(), SegmentName(id).c_str(), 0);
    return Status::FromErrno("allocating segment " + p, rc);
  }
  SegmentInfo info{id, bytes, fd.get()};
  segments_.push_back(info);
  segment_fds_.push_back(std::move(fd));
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
