// The user.kdn.* extended attributes: metadata computed from the store, shown by `getfattr -d`.
//
//   user.kdn.id              chunk id of the content (32 hex digits); files with content
//   user.kdn.model           `.kv` files: model name
//   user.kdn.fingerprint     `.kv` files: model fingerprint (32 hex digits)
//   user.kdn.tokens          `.kv` files: token count
//   user.kdn.layers          `.kv` files: layer count
//   user.kdn.position_offset `.kv` files: position of the first token
//   user.kdn.chunk_tokens    `.kv` files: tokens per prefix hash
//   user.kdn.codec           `.kv` files: codec name (CodecSpec::Name)
//   user.kdn.raw_bytes       `.kv` files: decoded size of every block in the model dtype
//   user.kdn.evictable       "1"/"0": writable on directories (inherited by new entries) and files
//   user.kdn.pin             "1"/"0": writable on files (pinned content is never evicted)
//   user.kdn.trust           directories (knowledge sets): "uid,uid" whose `.kv` files the set's
//                            prefix lookups trust besides its owner's; only the owner or root may
//                            set it (stored as given once validated: filesystem.cc, set_prefix.h)
//   user.kdn.quota           directories (knowledge sets): the most bytes the regular files named
//                            directly in it may hold (sizes rounded up to 4 KiB, each name
//                            counted), e.g. "100M"; stored in bytes. Only the owner or root may set
//                            it; writes, truncations, links and renames that would pass it fail
//                            with EDQUOT (filesystem.cc)
//
// Every other name under user.kdn. is reserved: reading it gives ENODATA, writing it EPERM.
// (user.kdn.extents, which told engines where a file's bytes lay in the store so that they could
// read them there, is gone: it trusted whatever a user wrote, and with FUSE passthrough the
// mounted file reads as fast as the store's own.)
#ifndef KDN_FS_KDNFS_KDN_XATTRS_H_
#define KDN_FS_KDNFS_KDN_XATTRS_H_

#include <string>
#include <string_view>
#include <vector>

#include "kdn/status.h"
#include "kdn/store.h"

namespace kdn::fs {

inline constexpr std::string_view kKdnXattrPrefix = "user.kdn.";
inline constexpr std::string_view kQuotaXattr = "user.kdn.quota";

inline bool IsKdnXattr(std::string_view name) {
  return name.starts_with(kKdnXattrPrefix);
}

// The value of a user.kdn.* attribute of `attr`'s inode; kNotFound (ENODATA) when it does not
// apply to this inode.
Result<std::string> GetKdnXattr(Store& store, const InodeAttr& attr, std::string_view name);

// The user.kdn.* names that apply to `attr`'s inode.
Result<std::vector<std::string>> ListKdnXattrs(Store& store, const InodeAttr& attr);

// Sets a writable user.kdn.* attribute (removing one sets it to "0"). Read-only and unknown names
// are refused with EPERM; a value other than "0"/"1" with EINVAL.
Status SetKdnXattr(Store& store, const InodeAttr& attr, std::string_view name,
                   std::string_view value);

}  // namespace kdn::fs

#endif  // KDN_FS_KDNFS_KDN_XATTRS_H_
