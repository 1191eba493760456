// Moving a chunk's bytes between callers and chunk files through one I/O engine, at queue depth:
// writes from memory or from a staged file, reads into any buffer with every block verified.
#ifndef KDN_STORE_CHUNK_IO_H_
#define KDN_STORE_CHUNK_IO_H_

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "iouring/io_engine.h"
#include "kdn/status.h"
#include "store/chunk_layout.h"

namespace kdn::store {

// Content to write: in memory, or in a file read with pread in order.
class ChunkSource {
 public:
  virtual ~ChunkSource() = default;
  virtual uint64_t size() const = 0;
  // Bytes at `off` if they are in memory (so an aligned piece can be written without a copy).
  virtual const std::byte* Direct(uint64_t off) const = 0;
  // Copies [off, off + out.size()) into out. Called with increasing offsets.
  virtual Status Copy(uint64_t off, std::span<std::byte> out) = 0;
};

class MemoryChunkSource final : public ChunkSource {
 public:
  explicit MemoryChunkSource(std::span<const std::byte> bytes) : bytes_(bytes) {}
  uint64_t size() const override { return bytes_.size(); }
  const std::byte* Direct(uint64_t off) const override { return bytes_.data() + off; }
  Status Copy(uint64_t off, std::span<std::byte> out) override;

 private:
  std::span<const std::byte> bytes_;
};

// A staged file, read in order with pread. With `remember` (a copy made after the id was computed
// in a first pass), CheckUnchanged then says whether what was read still hashes to that id
// (nobody changed the file between the two); without it (a copy whose writer hashes what it
// writes, so the id is that of the bytes written), nothing is hashed here.
class FileChunkSource final : public ChunkSource {
 public:
  FileChunkSource(int fd, uint64_t size, std::string path, bool remember = true)
      : fd_(fd), size_(size), path_(std::move(path)), remember_(remember) {}
  uint64_t size() const override { return size_; }
  const std::byte* Direct(uint64_t) const override { return nullptr; }
  Status Copy(uint64_t off, std::span<std::byte> out) override;
  Status CheckUnchanged(const ChunkId& id);
  bool read_any() const { return next_ > 0; }

 private:
  int fd_;
  uint64_t size_;
  std::string path_;
  bool remember_;
  uint64_t next_ = 0;
  ChunkHasher hasher_;
};

// I/O shape: how large each request is, at most.
struct IoShape {
  uint32_t queue_depth = 32;
  uint32_t io_bytes = 1u << 20;
  // Request size for a transfer of `total` bytes: large, but small enough that one transfer keeps
  // the whole queue busy.
  uint64_t PieceFor(uint64_t total) const;
};

// Writes the whole source to `fd` (a new file opened with O_DIRECT) at offset N for chunk offset N
// and sets the file's size; not synced (the commit does that). With `sparse`, all-zero 4 KiB blocks
// are left as holes. With `hasher`, every piece is also fed to it, in order, while the pieces
// before it are being written.
Status WriteChunk(io::IoEngine& engine, int fd, const std::string& path, ChunkSource& source,
                  const IoShape& shape, bool sparse, ContentHasher* hasher = nullptr);

// Reads chunk bytes [offset, offset + out.size()) (the caller bounds it to the chunk) from
// layout.fd into `out`, checking every block it touches against its checksum.
Status ReadChunk(io::IoEngine& engine, const ChunkLayout& layout, uint64_t offset,
                 std::span<std::byte> out, const IoShape& shape);

}  // namespace kdn::store

#endif  // KDN_STORE_CHUNK_IO_H_
