// Mount table helpers for kdnfs: finding a mount, clearing a stale one, tuning its readahead, and
// the sizes its options take.
#ifndef KDN_FS_KDNFS_MOUNT_UTIL_H_
#define KDN_FS_KDNFS_MOUNT_UTIL_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "kdn/status.h"

namespace kdn::fs {

// One line of /proc/self/mountinfo.
struct MountEntry {
  int mount_id = 0;
  unsigned major = 0;
  unsigned minor = 0;
  std::string mount_point;  // unescaped
  std::string fs_type;      // "fuse.kdnfs"
  std::string source;
};

std::vector<MountEntry> ReadMountTable(const std::string& path = "/proc/self/mountinfo");

// The absolute, symlink-free form of `path`, resolving all but the last component (so that it
// works on a mountpoint whose daemon is gone, where stat fails).
Result<std::string> AbsoluteMountPoint(const std::string& path);

// The last mount on `mount_point` (absolute), if any.
std::optional<MountEntry> FindMount(const std::string& mount_point);

// When `mount_point` is a FUSE mount whose daemon died ("Transport endpoint is not connected"
// from statfs, which the kernel never answers from its caches),
// detaches it lazily (umount2 MNT_DETACH as root, `fusermount3 -u -z` otherwise) and returns
// true. False when there was nothing stale.
Result<bool> ClearStaleMount(const std::string& mount_point);

// Sets the readahead of the mount's backing device info (/sys/class/bdi/MAJOR:MINOR).
Status SetReadahead(unsigned major, unsigned minor, uint64_t bytes);

// "4096", "64K", "1.5G", "2T" (powers of 1024; an optional trailing "B" or "iB").
Result<uint64_t> ParseSize(std::string_view text);

}  // namespace kdn::fs

#endif  // KDN_FS_KDNFS_MOUNT_UTIL_H_
