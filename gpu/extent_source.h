// The fast path: a `.kv` file's bytes read straight from the chunk store's segment files, as its
// `user.kdn.extents` attribute lists them (docs/xattrs.md), instead of through the FUSE mount.
//
// The attribute is a hint: every check that can be made up front is made here (format, alignment,
// sizes, each extent inside its segment file), and the caller still verifies every checksum of
// what it reads and falls back to the file on any failure. Reads whose offset, length and buffer
// are 4 KiB-aligned use O_DIRECT (no page-cache copy, the store's own I/O path); others are
// buffered.
#ifndef KDN_GPU_EXTENT_SOURCE_H_
#define KDN_GPU_EXTENT_SOURCE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kdn/format.h"
#include "kdn/status.h"
#include "store/format/file_io.h"

namespace kdn::gpu {

inline constexpr const char* kExtentsAttr = "user.kdn.extents";

// The attribute's text; nullopt when the file has none (or the filesystem has no xattrs).
Result<std::optional<std::string>> ReadExtentsAttr(const std::string& path);

struct Extent {
  uint32_t segment = 0;     // index into the segment list
  uint64_t seg_offset = 0;  // in the segment file
  uint64_t length = 0;
  uint64_t file_offset = 0;  // in the `.kv` file: sum of the lengths before this one
};

struct ExtentList {
  uint64_t file_bytes = 0;
  std::string chunk_id;               // 32 hex digits
  std::vector<std::string> segments;  // distinct segment paths, in order of first use
  std::vector<Extent> extents;
};

// Parses and checks the text against docs/xattrs.md: version 1, absolute paths, 4 KiB-aligned
// offsets, non-empty extents whose lengths sum to file_bytes.
Result<ExtentList> ParseExtents(std::string_view text);

class ExtentSource final : public ByteSource {
 public:
  // Opens every segment file and checks that each extent lies inside it.
  static Result<std::unique_ptr<ExtentSource>> Open(ExtentList list);

  uint64_t size() const override { return list_.file_bytes; }
  Status ReadAt(uint64_t offset, std::span<std::byte> out) const override;

 private:
  struct Segment {
    UniqueFd fd;         // buffered
    UniqueFd direct_fd;  // O_DIRECT; invalid when the filesystem refuses it
  };
  explicit ExtentSource(ExtentList list) : list_(std::move(list)) {}
  Status ReadPiece(const Extent& e, uint64_t in_extent, std::span<std::byte> out) const;

  ExtentList list_;
  std::vector<Segment> fds_;
};

}  // namespace kdn::gpu

#endif  // KDN_GPU_EXTENT_SOURCE_H_
