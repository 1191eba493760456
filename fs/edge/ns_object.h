// The namespace object: what the origin knows of one file (docs/origin.md, "The namespace
// object"). A small text object, `key value` lines in a fixed order, ending with an xxh3-64
// checksum of everything before it, so that a torn or tampered object is refused, not half
// believed. Decode enforces every bound the document lists before it believes anything.
#ifndef KDN_FS_EDGE_NS_OBJECT_H_
#define KDN_FS_EDGE_NS_OBJECT_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "kdn/status.h"
#include "kdn/store.h"

namespace kdn::edge {

inline constexpr size_t kMaxNsObjectBytes = 64 * 1024;
inline constexpr size_t kMaxNsXattrs = 64;
inline constexpr size_t kMaxNsXattrValue = 4096;

struct NsObject {
  ChunkId chunk;  // zero: an empty file (always, in a directory's marker)
  uint64_t size = 0;
  uint32_t mode = 0;  // full st_mode: a regular file's, or a directory's in its marker
  uint32_t uid = 0;
  uint32_t gid = 0;
  int64_t mtime_ns = 0;
  int64_t ctime_ns = 0;
  std::vector<std::pair<std::string, std::string>> xattrs;  // user.* only, in name order
  friend bool operator==(const NsObject&, const NsObject&) = default;
};

// The object's bytes. Xattrs that do not fit the bounds (more than 64, values over 4 KiB, names
// not user.*) are left out: the content and attributes matter more than a note.
std::string EncodeNsObject(const NsObject& object);
// kCorruption for anything that is not exactly what EncodeNsObject writes (bounds, order,
// checksum); kUnsupported for a version this build does not know.
Result<NsObject> DecodeNsObject(std::string_view bytes);

// The origin keys of a file at `path` (absolute under the mount, "/set/a.kv") and of a chunk.
std::string NsKey(std::string_view path);
std::string ChunkKey(const ChunkId& id);
inline constexpr std::string_view kNsPrefix = "ns";
inline constexpr std::string_view kChunksPrefix = "chunks/";

// A directory's marker (docs/origin.md): the object `ns/<dir>/.kdn-dir`, so that a directory
// with nothing in it exists on the origin too (a directory is a prefix, and a prefix exists while
// something lies under it), and so that its mode and owner reach every node (a set made private
// on one node must not be open to everyone on the next). The name is reserved: a file or
// directory so named is not published.
inline constexpr std::string_view kDirMarkerName = ".kdn-dir";
std::string DirMarkerKey(std::string_view dir_path);
// A marker's bytes: the namespace object's encoding with a directory's mode, no chunk, no size,
// no xattrs.
std::string EncodeDirMarker(uint32_t mode, uint32_t uid, uint32_t gid, int64_t mtime_ns,
                            int64_t ctime_ns);
// kCorruption for anything but what EncodeDirMarker writes. An empty marker (written by earlier
// versions) says nothing of the directory: kNotFound.
Result<NsObject> DecodeDirMarker(std::string_view bytes);

// The store attribute that makes a file a copy of an origin object (edge/origin_reader.h): the
// object's ETag, NUL, the namespace object's bytes. kdnfs hides it from users. On a directory
// that a listing made, it is kRemoteDirRecord: such a directory goes when the origin has nothing
// under it any more (one made on this node is the origin's source and stays).
// Such a directory's record may go on with NUL and the ETag of the marker last applied to it.
inline constexpr std::string_view kRemoteDirRecord = "dir";
inline constexpr std::string_view kRemoteXattr = "user.kdn.remote";
bool IsRemoteDirRecord(std::string_view record);
// The marker ETag in a directory's record ("" when none was applied).
std::string_view MarkerEtagOfRecord(std::string_view record);
// The namespace object in such a record (nullopt when `record` is none or damaged).
std::optional<NsObject> NsObjectOfRecord(std::string_view record);

}  // namespace kdn::edge

#endif  // KDN_FS_EDGE_NS_OBJECT_H_
