// `.kv` files a hostile user would write: every block checksum and the header checksum valid (so
// that a checker that stops at checksums accepts them), and yet each one is malformed in a way
// that `kdnctl verify` refuses; and sparse files whose valid header claims huge blocks.
//
// Shared by the format tests (VerifyKv), the filesystem tests (commit) and the security mount
// tests (as an unprivileged user).
#ifndef KDN_TESTS_SECURITY_HOSTILE_KV_H_
#define KDN_TESTS_SECURITY_HOSTILE_KV_H_

#include <fcntl.h>
#include <unistd.h>
#include <zstd.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "kdn/format.h"
#include "kdn/synthetic.h"
#include "store/format/kv_layout.h"

namespace kdn::test::hostile {

enum class Kind {
  kBlockPadding,      // a non-zero byte in the padding after the last block
  kQuantPadding,      // a non-zero byte between a quant block's parameters and its codes
  kCorruptZstd,       // the zstd stage's frame magic broken
  kBytesAfterFrame,   // the frame, then three more bytes inside the block
  kTwoFrames,         // the frame, then a second (empty) frame
  kNoContentSize,     // a frame that does not declare its content size
  kWrongContentSize,  // a frame that declares (and holds) one byte less than the layout says
  kBomb,              // a 2 KiB payload's frame that decodes to 16 MiB of zeros
};

inline const std::vector<Kind>& AllKinds() {
  static const std::vector<Kind> kAll = {Kind::kBlockPadding,     Kind::kQuantPadding,
                                         Kind::kCorruptZstd,      Kind::kBytesAfterFrame,
                                         Kind::kTwoFrames,        Kind::kNoContentSize,
                                         Kind::kWrongContentSize, Kind::kBomb};
  return kAll;
}

inline std::string Name(Kind k) {
  switch (k) {
    case Kind::kBlockPadding: return "block-padding";
    case Kind::kQuantPadding: return "quant-padding";
    case Kind::kCorruptZstd: return "corrupt-zstd";
    case Kind::kBytesAfterFrame: return "bytes-after-frame";
    case Kind::kTwoFrames: return "two-frames";
    case Kind::kNoContentSize: return "no-content-size";
    case Kind::kWrongContentSize: return "wrong-content-size";
    case Kind::kBomb: return "bomb";
  }
  return "?";
}

// 2 layers, 2 KV heads of 8 dims (16 channels), fp16.
inline ModelIdentity Model() {
  ModelIdentity m;
  m.name = "hostile-model";
  m.n_layers = 2;
  m.n_heads = 4;
  m.n_kv_heads = 2;
  m.head_dim = 8;
  m.dtype = DType::kF16;
  m.rope_style = RopeStyle::kNeox;
  return m;
}

inline std::vector<std::byte> Synth(uint32_t tokens, const char* codec) {
  auto spec = CodecSpec::Parse(codec);
  if (!spec.ok()) return {};
  auto f = SynthesizeKvFile(Model(), tokens, *spec, 7);
  return f.ok() ? std::move(*f) : std::vector<std::byte>{};
}

// The file with block `i` replaced by `bytes` (any length) and the header (table, file size,
// checksum) made to match. Only the last block may change length: nothing follows it.
inline std::vector<std::byte> WithBlock(std::vector<std::byte> f, size_t i,
                                        const std::vector<std::byte>& bytes) {
  auto parsed = ParseKvHeader(f, f.size());
  if (!parsed.ok()) return {};
  KvHeader h = *parsed;
  BlockEntry& b = h.blocks[i];
  if (i + 1 != h.blocks.size() && bytes.size() != b.encoded_bytes) return {};
  b.encoded_bytes = bytes.size();
  b.checksum = HashBytes64(bytes.data(), bytes.size());
  layout::AssignOffsets(&h);
  if (i + 1 == h.blocks.size()) {  // the last block: the file ends after its padding
    f.resize(h.file_bytes);
    std::memset(f.data() + b.offset, 0, f.size() - b.offset);
  }
  std::memcpy(f.data() + b.offset, bytes.data(), bytes.size());
  const std::vector<std::byte> head = layout::SerializeHeader(h);
  std::memcpy(f.data(), head.data(), head.size());
  return f;
}

inline std::vector<std::byte> Compress(const std::byte* data, size_t n, bool content_size) {
  ZSTD_CCtx* c = ZSTD_createCCtx();
  ZSTD_CCtx_setParameter(c, ZSTD_c_contentSizeFlag, content_size ? 1 : 0);
  ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, 3);
  std::vector<std::byte> out(ZSTD_compressBound(n));
  size_t got;
  if (content_size) {
    got = ZSTD_compress2(c, out.data(), out.size(), data, n);
  } else {
    // Streamed without a pledged size: the frame then cannot declare one.
    ZSTD_inBuffer in{data, n, 0};
    ZSTD_outBuffer o{out.data(), out.size(), 0};
    got = ZSTD_compressStream2(c, &o, &in, ZSTD_e_end);
    if (!ZSTD_isError(got)) got = o.pos;
  }
  ZSTD_freeCCtx(c);
  if (ZSTD_isError(got)) return {};
  out.resize(got);
  return out;
}

// A frame that declares `declared` content bytes and decodes to `zeros` zero bytes.
inline std::vector<std::byte> Bomb(uint64_t declared, size_t zeros) {
  std::vector<std::byte> z(zeros);
  std::vector<std::byte> frame = Compress(z.data(), z.size(), false);
  if (frame.size() < 6) return {};
  // Frame header: magic (4), descriptor (1), window descriptor (1, no single segment), no
  // dictionary id, and without the content size flag no size field. Set the 4-byte size flag
  // and insert the size after the window descriptor.
  std::byte& fhd = frame[4];
  if ((static_cast<uint8_t>(fhd) & 0xe3) != 0) return {};  // unexpected: size, single seg, dict
  fhd = static_cast<std::byte>(static_cast<uint8_t>(fhd) | 0x80);
  std::byte size[4];
  for (int i = 0; i < 4; ++i) size[i] = static_cast<std::byte>((declared >> (8 * i)) & 0xff);
  frame.insert(frame.begin() + 6, size, size + 4);
  return frame;
}

// A file of the given kind: checksums valid, content malformed.
inline std::vector<std::byte> Make(Kind kind) {
  if (kind == Kind::kBlockPadding) {
    auto f = Synth(20, "raw");
    if (!f.empty()) f.back() = std::byte{1};
    return f;
  }
  if (kind == Kind::kQuantPadding) {
    // q8:g7 over 16 channels, 3 tokens: the V block's parameters take 36 bytes, padded to 48.
    auto f = Synth(3, "q8:g7");
    auto h = ParseKvHeader(f, f.size());
    if (!h.ok()) return {};
    const BlockEntry& v = h->blocks[1];
    std::vector<std::byte> bytes(f.begin() + static_cast<ptrdiff_t>(v.offset),
                                 f.begin() + static_cast<ptrdiff_t>(v.offset + v.encoded_bytes));
    bytes[40] = std::byte{1};
    return WithBlock(std::move(f), 1, bytes);
  }
  // The rest edit the last block's zstd stage of a lossless file (64 tokens: a 2 KiB payload).
  auto f = Synth(64, "lossless");
  auto h = ParseKvHeader(f, f.size());
  if (!h.ok()) return {};
  const size_t last = h->blocks.size() - 1;
  const BlockEntry& b = h->blocks[last];
  std::vector<std::byte> frame(f.begin() + static_cast<ptrdiff_t>(b.offset),
                               f.begin() + static_cast<ptrdiff_t>(b.offset + b.encoded_bytes));
  const unsigned long long payload_size = ZSTD_getFrameContentSize(frame.data(), frame.size());
  std::vector<std::byte> payload(payload_size);
  if (ZSTD_decompress(payload.data(), payload.size(), frame.data(), frame.size()) !=
      payload.size()) {
    return {};
  }
  std::vector<std::byte> bytes;
  switch (kind) {
    case Kind::kCorruptZstd:
      bytes = frame;
      bytes[1] ^= std::byte{0xff};
      break;
    case Kind::kBytesAfterFrame:
      bytes = frame;
      for (int i = 1; i <= 3; ++i) bytes.push_back(static_cast<std::byte>(i));
      break;
    case Kind::kTwoFrames: {
      // A second, empty frame: it fits in the block's size bound.
      bytes = frame;
      const std::vector<std::byte> empty = Compress(payload.data(), 0, true);
      bytes.insert(bytes.end(), empty.begin(), empty.end());
      break;
    }
    case Kind::kNoContentSize:
      bytes = Compress(payload.data(), payload.size(), false);
      break;
    case Kind::kWrongContentSize:
      bytes = Compress(payload.data(), payload.size() - 1, true);
      break;
    case Kind::kBomb:
      bytes = Bomb(payload.size(), size_t{16} << 20);
      break;
    default:
      return {};
  }
  if (bytes.empty()) return {};
  return WithBlock(std::move(f), last, bytes);
}

// The header of a raw-codec `.kv` file of one layer whose K and V blocks are `block_bytes` each
// (a multiple of 4 MiB: 1024 KV heads of 1024 fp32 dims per token), every field valid. The block
// checksums are zero: only reading a whole block can tell. Returns the header's bytes;
// *file_bytes is the size the file must have.
inline std::vector<std::byte> HugeBlockHeader(uint64_t block_bytes, uint64_t* file_bytes) {
  KvHeader h;
  h.model.name = "huge";
  h.model.n_layers = 1;
  h.model.n_heads = 1024;
  h.model.n_kv_heads = 1024;
  h.model.head_dim = 1024;
  h.model.dtype = DType::kF32;
  h.model.rope_style = RopeStyle::kNone;
  h.fingerprint = h.model.Fingerprint();
  const uint64_t per_token = uint64_t{h.model.channels()} * 4;
  h.n_tokens = static_cast<uint32_t>(block_bytes / per_token);
  h.chunk_tokens = kDefaultChunkTokens;
  h.codec = CodecSpec{};
  h.tokens.resize(h.n_tokens);
  for (uint32_t i = 0; i < h.n_tokens; ++i) h.tokens[i] = i;
  h.prefix_hashes = PrefixHashes(h.fingerprint, h.tokens, h.chunk_tokens);
  h.blocks.resize(2);
  for (BlockEntry& b : h.blocks) {
    b.encoded_bytes = b.decoded_bytes = uint64_t{h.n_tokens} * per_token;
    b.checksum = 0;
  }
  layout::AssignOffsets(&h);
  *file_bytes = h.file_bytes;
  return layout::SerializeHeader(h);
}

// Writes HugeBlockHeader's file at `path`, sparse (no disk used beyond the header).
inline bool WriteSparseHugeKv(const std::string& path, uint64_t block_bytes) {
  uint64_t size = 0;
  const std::vector<std::byte> head = HugeBlockHeader(block_bytes, &size);
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return false;
  bool ok = ::pwrite(fd, head.data(), head.size(), 0) == static_cast<ssize_t>(head.size()) &&
            ::ftruncate(fd, static_cast<off_t>(size)) == 0;
  return (::close(fd) == 0) && ok;
}

}  // namespace kdn::test::hostile

#endif  // KDN_TESTS_SECURITY_HOSTILE_KV_H_
