// Where things are in a `.kv` file: the fixed header's field offsets, the sections after it and the
// block positions (docs/kv-format.md, "File"). Shared by the header parser, the writer, the reader
// and the tests, so that the layout is computed in one place.
#ifndef KDN_STORE_FORMAT_KV_LAYOUT_H_
#define KDN_STORE_FORMAT_KV_LAYOUT_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "kdn/format.h"

namespace kdn::layout {

// Fixed header field offsets (128 bytes in all).
inline constexpr size_t kMagic = 0;
inline constexpr size_t kVersion = 8;
inline constexpr size_t kFixedSize = 12;
inline constexpr size_t kHeaderBytes = 16;
inline constexpr size_t kFileBytes = 24;
inline constexpr size_t kHeaderChecksum = 32;
inline constexpr size_t kFingerprint = 40;
inline constexpr size_t kNLayers = 56;
inline constexpr size_t kNHeads = 60;
inline constexpr size_t kNKvHeads = 64;
inline constexpr size_t kHeadDim = 68;
inline constexpr size_t kDType = 72;
inline constexpr size_t kRopeStyle = 73;
inline constexpr size_t kCodec = 74;
inline constexpr size_t kCodecBits = 75;
inline constexpr size_t kRotaryDim = 76;
inline constexpr size_t kRopeTheta = 80;
inline constexpr size_t kRopeScale = 84;
inline constexpr size_t kNTokens = 88;
inline constexpr size_t kPositionOffset = 92;
inline constexpr size_t kChunkTokens = 96;
inline constexpr size_t kGroupSize = 100;
inline constexpr size_t kCodecFlags = 102;
inline constexpr size_t kNameLen = 103;
inline constexpr size_t kIdentityFlags = 104;
inline constexpr size_t kAttention = 105;
// u16: the head groups G when at least 2; 0 for one group (so that an ungrouped file is byte for
// byte what it was before the field existed).
inline constexpr size_t kHeadGroups = 106;
inline constexpr size_t kKvLoraRank = 108;
inline constexpr size_t kReserved2 = 112;  // to the end of the fixed header
inline constexpr size_t kReserved2Bytes = 16;
static_assert(kReserved2 + kReserved2Bytes == kKvFixedHeaderBytes);

inline constexpr uint8_t kFlagZstd = 1;  // quant: a zstd stage
inline constexpr uint8_t kFlagRans = 2;  // lossless: the rANS stage instead of zstd
// Identity flags: bit 0 = the layer windows section is present.
inline constexpr uint8_t kIdentityLayerWindows = 1;
inline constexpr size_t kBlockEntryBytes = 32;

constexpr uint64_t AlignUp(uint64_t v, uint64_t a) {
  return (v + a - 1) / a * a;
}

// The sections after the fixed header, for given counts. Each *_bytes includes its padding.
struct Sections {
  uint64_t name_offset = 0, name_bytes = 0;
  uint64_t tokens_offset = 0, tokens_bytes = 0;
  uint64_t prefix_offset = 0, prefix_bytes = 0;
  uint64_t table_offset = 0, table_bytes = 0;
  uint64_t windows_offset = 0, windows_bytes = 0;  // 0 bytes without the layer windows section
  uint64_t end = 0;  // header_bytes
};
// Counts must be within limits.h bounds (no overflow then).
Sections ComputeSections(uint32_t name_len, uint32_t n_tokens, uint32_t chunk_tokens,
                         uint32_t n_layers, bool layer_windows = false, uint32_t head_groups = 1);

inline uint32_t PrefixChunks(uint32_t n_tokens, uint32_t chunk_tokens) {
  return static_cast<uint32_t>((uint64_t{n_tokens} + chunk_tokens - 1) / chunk_tokens);
}

// "layer 3 V block"; in a file of several head groups "layer 3 V block, head group 2 (heads 4..5)".
std::string BlockName(uint32_t layer, KvKind kind);
std::string BlockName(uint32_t layer, KvKind kind, uint32_t group, uint32_t groups,
                      uint32_t heads_per_group);
// The block at table index `index` of a file of one head group.
inline std::string BlockName(size_t index) {
  return BlockName(static_cast<uint32_t>(index / 2), static_cast<KvKind>(index % 2));
}
// The block at table index `index` of `h`.
std::string BlockName(const KvHeader& h, size_t index);
// (layer, kind, group) of table index `index` for `groups` head groups.
struct BlockPlace {
  uint32_t layer;
  KvKind kind;
  uint32_t group;
};
inline BlockPlace PlaceOf(size_t index, uint32_t groups) {
  return {static_cast<uint32_t>(index / groups / 2), static_cast<KvKind>(index / groups % 2),
          static_cast<uint32_t>(index % groups)};
}

// The header's bytes (header_bytes of them, checksum filled in) for a complete KvHeader whose
// blocks, header_bytes and file_bytes are already set.
std::vector<std::byte> SerializeHeader(const KvHeader& h);

// Fills blocks[i].offset, header_bytes and file_bytes from the sections and the blocks' encoded
// sizes, as the layout prescribes (first block at align_up(header_bytes), each next one at
// align_up(end of previous)).
void AssignOffsets(KvHeader* h);

}  // namespace kdn::layout

#endif  // KDN_STORE_FORMAT_KV_LAYOUT_H_
