// Types shared by the filesystem logic and its FUSE adapter.
#ifndef KDN_FS_KDNFS_FS_TYPES_H_
#define KDN_FS_KDNFS_FS_TYPES_H_

#include <cstdint>
#include <functional>

#include "kdn/store.h"

namespace kdn::fs {

// Who asks: the calling thread of a FUSE request (or of a unit test).
struct Caller {
  uint32_t uid = 0;
  uint32_t gid = 0;
  int32_t pid =
      0;  // thread id as the kernel sends it; 0 when the caller is in another pid namespace
  // Supplementary groups are only needed for one rule (a setgid bit asked for in a setgid
  // directory), so the adapter looks them up lazily. Unset: the primary group only.
  std::function<bool(uint32_t gid)> in_group;

  bool InGroup(uint32_t g) const { return g == gid || (in_group && in_group(g)); }
};

// The answer to a lookup or a creation: the inode and how long the kernel may cache the name and
// the attributes. attr.ino == 0 is a negative entry (the name does not exist) that the kernel may
// cache for entry_timeout.
struct Entry {
  InodeAttr attr;
  double entry_timeout = 0;
  double attr_timeout = 0;
};

// Attributes with how long the kernel may cache them.
struct Attr {
  InodeAttr attr;
  double timeout = 0;
};

// The committed content of a regular file, which a read-only open may pass through to.
struct CommittedContent {
  ChunkId chunk;
  uint64_t size = 0;
};

}  // namespace kdn::fs

#endif  // KDN_FS_KDNFS_FS_TYPES_H_
