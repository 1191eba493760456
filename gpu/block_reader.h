// A cache's bytes: its header, parsed and checked at open, and its encoded blocks, each read on
// demand and checked against its xxh3 checksum before anything decodes it.
//
// Bytes come from the file (pread), or, when the file has a `user.kdn.extents` attribute whose
// extents check out and whose header matches the file's byte for byte, from the store's segment
// files (the fast path). Any failure on the fast path (an unreadable segment, a checksum mismatch)
// turns it off for this cache and the read is repeated through the file: only a block that is bad
// in the file itself is reported as corrupt. The first such fallback is logged (KDN_LOG_DEBUG) to
// the callback of kdn_set_log_callback, if any.
#ifndef KDN_GPU_BLOCK_READER_H_
#define KDN_GPU_BLOCK_READER_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "gpu/extent_source.h"
#include "kdn/format.h"
#include "kdn/status.h"

namespace kdn::gpu {

class BlockReader {
 public:
  // NotFound for a missing file, Corruption for a file that is not a valid `.kv` (bad magic,
  // truncated, checksum), Unsupported for a version this build does not read.
  static Result<std::unique_ptr<BlockReader>> Open(const std::string& path);

  const KvHeader& header() const { return header_; }
  const std::string& path() const { return path_; }
  uint64_t file_bytes() const { return file_->size(); }
  bool fast_path() const { return fast_path_.load(std::memory_order_relaxed); }

  // Bytes ReadBlock reads for this block: its encoded bytes rounded up to 4 KiB (the padding that
  // follows every block), so that aligned reads can bypass the page cache.
  size_t ReadSize(uint32_t layer, KvKind kind) const;
  // Reads the block into `out` (at least ReadSize bytes; 4 KiB-aligned for O_DIRECT) and verifies
  // its checksum; the encoded bytes are the first encoded_bytes of `out`.
  Status ReadBlock(uint32_t layer, KvKind kind, std::span<std::byte> out) const;

  // "layer 3 V block", as error messages name blocks.
  static std::string BlockName(uint32_t layer, KvKind kind);

 private:
  BlockReader() = default;
  void TryFastPath(const std::vector<std::byte>& header_bytes);
  void DisableFastPath(const Status& why) const;

  std::string path_;
  std::unique_ptr<ByteSource> file_;  // the file itself, read with pread
  std::unique_ptr<ExtentSource> extents_;
  mutable std::atomic<bool> fast_path_{false};
  mutable std::atomic<bool> noted_{false};
  KvHeader header_;
};

}  // namespace kdn::gpu

#endif  // KDN_GPU_BLOCK_READER_H_
