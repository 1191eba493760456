// The `.kv` layout: section positions, block positions and header serialization.
#include "store/format/kv_layout.h"

#include <cstring>

#include "store/format/le.h"

namespace kdn::layout {

Sections ComputeSections(uint32_t name_len, uint32_t n_tokens, uint32_t chunk_tokens,
                         uint32_t n_layers, bool layer_windows, uint32_t head_groups) {
  Sections s;
  s.name_offset = kKvFixedHeaderBytes;
  s.name_bytes = AlignUp(name_len, 8);
  s.tokens_offset = s.name_offset + s.name_bytes;
  s.tokens_bytes = AlignUp(uint64_t{4} * n_tokens, 8);
  s.prefix_offset = s.tokens_offset + s.tokens_bytes;
  s.prefix_bytes = uint64_t{16} * PrefixChunks(n_tokens, chunk_tokens);
  s.table_offset = s.prefix_offset + s.prefix_bytes;
  s.table_bytes = kBlockEntryBytes * 2 * uint64_t{n_layers} * head_groups;
  // After the block table, so that every offset before it is what it was before the section
  // existed.
  s.windows_offset = s.table_offset + s.table_bytes;
  s.windows_bytes = layer_windows ? AlignUp(uint64_t{4} * n_layers, 8) : 0;
  s.end = s.windows_offset + s.windows_bytes;
  return s;
}

std::string BlockName(uint32_t layer, KvKind kind) {
  return "layer " + std::to_string(layer) + (kind == KvKind::kKey ? " K block" : " V block");
}

std::string BlockName(uint32_t layer, KvKind kind, uint32_t group, uint32_t groups,
                      uint32_t heads_per_group) {
  std::string name = BlockName(layer, kind);
  if (groups > 1) {
    const uint32_t first = group * heads_per_group;
    name += ", head group " + std::to_string(group) + " (heads " + std::to_string(first) + ".." +
            std::to_string(first + heads_per_group - 1) + ")";
  }
  return name;
}

std::string BlockName(const KvHeader& h, size_t index) {
  const BlockPlace p = PlaceOf(index, h.head_groups);
  return BlockName(p.layer, p.kind, p.group, h.head_groups, h.heads_per_group());
}

void AssignOffsets(KvHeader* h) {
  const Sections s =
      ComputeSections(static_cast<uint32_t>(h->model.name.size()), h->n_tokens, h->chunk_tokens,
                      h->model.n_layers, !h->model.layer_windows.empty(), h->head_groups);
  h->header_bytes = s.end;
  uint64_t pos = AlignUp(s.end, kKvBlockAlign);
  for (BlockEntry& b : h->blocks) {
    b.offset = pos;
    pos = AlignUp(pos + b.encoded_bytes, kKvBlockAlign);
  }
  h->file_bytes = pos;
}

std::vector<std::byte> SerializeHeader(const KvHeader& h) {
  const uint32_t name_len = static_cast<uint32_t>(h.model.name.size());
  const bool windows = !h.model.layer_windows.empty();
  const Sections s = ComputeSections(name_len, h.n_tokens, h.chunk_tokens, h.model.n_layers,
                                     windows, h.head_groups);
  std::vector<std::byte> out(s.end);  // zero-filled: padding and reserved bytes
  std::byte* p = out.data();
  std::memcpy(p + kMagic, kKvMagic.data(), kKvMagic.size());
  le::Store<uint32_t>(p + kVersion, kKvVersion);
  le::Store<uint32_t>(p + kFixedSize, static_cast<uint32_t>(kKvFixedHeaderBytes));
  le::Store<uint64_t>(p + kHeaderBytes, s.end);
  le::Store<uint64_t>(p + kFileBytes, h.file_bytes);
  le::Store<uint64_t>(p + kFingerprint, h.fingerprint.lo);
  le::Store<uint64_t>(p + kFingerprint + 8, h.fingerprint.hi);
  le::Store<uint32_t>(p + kNLayers, h.model.n_layers);
  le::Store<uint32_t>(p + kNHeads, h.model.n_heads);
  le::Store<uint32_t>(p + kNKvHeads, h.model.n_kv_heads);
  le::Store<uint32_t>(p + kHeadDim, h.model.head_dim);
  le::Store<uint8_t>(p + kDType, static_cast<uint8_t>(h.model.dtype));
  le::Store<uint8_t>(p + kRopeStyle, static_cast<uint8_t>(h.model.rope_style));
  le::Store<uint8_t>(p + kCodec, static_cast<uint8_t>(h.codec.id));
  const bool quant = h.codec.id == CodecId::kQuant;
  const bool has_bits = quant || h.codec.id == CodecId::kTc;  // tc: the quality
  le::Store<uint8_t>(p + kCodecBits, has_bits ? h.codec.bits : 0);
  le::Store<uint32_t>(p + kRotaryDim, h.model.rotary_dim);
  le::Store<float>(p + kRopeTheta, h.model.rope_theta);
  le::Store<float>(p + kRopeScale, h.model.rope_scale);
  le::Store<uint32_t>(p + kNTokens, h.n_tokens);
  le::Store<uint32_t>(p + kPositionOffset, h.position_offset);
  le::Store<uint32_t>(p + kChunkTokens, h.chunk_tokens);
  le::Store<uint16_t>(p + kGroupSize, quant ? h.codec.group_size : 0);
  le::Store<uint8_t>(p + kCodecFlags, quant && h.codec.zstd ? kFlagZstd
                                      : h.codec.id == CodecId::kLossless && h.codec.rans
                                          ? kFlagRans
                                          : 0);
  le::Store<uint8_t>(p + kNameLen, static_cast<uint8_t>(name_len));
  le::Store<uint8_t>(p + kIdentityFlags, windows ? kIdentityLayerWindows : 0);
  le::Store<uint8_t>(p + kAttention, static_cast<uint8_t>(h.model.attention));
  le::Store<uint16_t>(p + kHeadGroups,
                      h.head_groups > 1 ? static_cast<uint16_t>(h.head_groups) : 0);
  le::Store<uint32_t>(p + kKvLoraRank, h.model.kv_lora_rank);
  std::memcpy(p + s.name_offset, h.model.name.data(), name_len);
  std::memcpy(p + s.tokens_offset, h.tokens.data(), h.tokens.size() * sizeof(uint32_t));
  for (size_t i = 0; i < h.prefix_hashes.size(); ++i) {
    le::Store<uint64_t>(p + s.prefix_offset + 16 * i, h.prefix_hashes[i].lo);
    le::Store<uint64_t>(p + s.prefix_offset + 16 * i + 8, h.prefix_hashes[i].hi);
  }
  for (size_t i = 0; i < h.blocks.size(); ++i) {
    std::byte* e = p + s.table_offset + kBlockEntryBytes * i;
    le::Store<uint64_t>(e, h.blocks[i].offset);
    le::Store<uint64_t>(e + 8, h.blocks[i].encoded_bytes);
    le::Store<uint64_t>(e + 16, h.blocks[i].decoded_bytes);
    le::Store<uint64_t>(e + 24, h.blocks[i].checksum);
  }
  for (size_t i = 0; i < h.model.layer_windows.size(); ++i) {
    le::Store<uint32_t>(p + s.windows_offset + 4 * i, h.model.layer_windows[i]);
  }
  // The checksum field is zero while hashing.
  le::Store<uint64_t>(p + kHeaderChecksum, HashBytes64(out.data(), out.size()));
  return out;
}

}  // namespace kdn::layout
