// A cache's bytes: its header, parsed and checked at open, and its encoded blocks, each read on
// demand and checked against its xxh3 checksum before anything decodes it.
//
// Bytes come from the file itself (pread), and from nothing a file's attributes point at: on kdnfs
// the kernel reads a committed file straight from its chunk file (FUSE passthrough), as fast as
// the store's disk, so there is no reason left to read the store behind the mount's back. (An
// earlier fast path read the segment files that a `user.kdn.extents` attribute named; any user
// could write that attribute, and it made an engine read what the engine could, not the user.)
#ifndef KDN_LIBKDN_BLOCK_READER_H_
#define KDN_LIBKDN_BLOCK_READER_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "kdn/format.h"
#include "kdn/status.h"

namespace kdn::libkdn {

class BlockReader {
 public:
  // NotFound for a missing file, Corruption for a file that is not a valid `.kv` (bad magic,
  // truncated, checksum), Unsupported for a version this build does not read.
  static Result<std::unique_ptr<BlockReader>> Open(const std::string& path);

  const KvHeader& header() const { return header_; }
  const std::string& path() const { return path_; }
  uint64_t file_bytes() const { return file_->size(); }

  // Bytes ReadBlock reads for this block: its encoded bytes rounded up to 4 KiB (the padding that
  // follows every block), so that aligned reads can bypass the page cache.
  // (`group`: the head group's block of a grouped file; 0 otherwise.)
  size_t ReadSize(uint32_t layer, KvKind kind, uint32_t group = 0) const;
  // Reads the block into `out` (at least ReadSize bytes; 4 KiB-aligned for O_DIRECT) and verifies
  // its checksum; the encoded bytes are the first encoded_bytes of `out`.
  Status ReadBlock(uint32_t layer, KvKind kind, std::span<std::byte> out, uint32_t group = 0) const;

  // "layer 3 V block", as error messages name blocks.
  static std::string BlockName(uint32_t layer, KvKind kind);
  // "layer 3 V block, head group 2 (heads 4..5)" in a grouped file, BlockName(layer, kind) else.
  std::string BlockName(uint32_t layer, KvKind kind, uint32_t group) const;

 private:
  BlockReader() = default;

  std::string path_;
  std::unique_ptr<ByteSource> file_;  // the file itself, read with pread
  KvHeader header_;
};

}  // namespace kdn::libkdn

#endif  // KDN_LIBKDN_BLOCK_READER_H_
