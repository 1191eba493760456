// Parsing and validation of a `.kv` header: every length, count and offset is checked before it is
// used, and every failure names the field or section and where it is.
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "kdn/format.h"
#include "store/format/codec_internal.h"
#include "store/format/guard_alloc.h"
#include "store/format/kv_layout.h"
#include "store/format/le.h"
#include "store/format/limits.h"
#include "store/format/text.h"

namespace kdn {

namespace {

using layout::AlignUp;

std::string Num(uint64_t v) {
  return std::to_string(v);
}

Status Truncated(std::string_view what, uint64_t need, uint64_t offset, uint64_t file_size) {
  return Status::Corruption(std::string(what) + " truncated: need " + Num(need) +
                            " bytes at offset " + Num(offset) + ", file has " + Num(file_size));
}

Status OutOfRange(std::string_view field, uint64_t v, uint64_t lo, uint64_t hi) {
  return Status::Corruption(std::string(field) + " " + Num(v) + " out of range " + Num(lo) + ".." +
                            Num(hi));
}

// The counts that size the sections, when they are within bounds (else the caller cannot name a
// section and reports the header as a whole).
bool SectionsFromFixed(const std::byte* f, layout::Sections* s) {
  const uint32_t name_len = le::LoadU8(f + layout::kNameLen);
  const uint32_t n_tokens = le::LoadU32(f + layout::kNTokens);
  const uint32_t chunk = le::LoadU32(f + layout::kChunkTokens);
  const uint32_t n_layers = le::LoadU32(f + layout::kNLayers);
  if (name_len < 1 || n_tokens < 1 || n_tokens > limits::kMaxTokens || chunk < 1 ||
      chunk > limits::kMaxChunkTokens || n_layers < 1 || n_layers > limits::kMaxLayers) {
    return false;
  }
  const bool windows = (le::LoadU8(f + layout::kIdentityFlags) & layout::kIdentityLayerWindows) != 0;
  const uint32_t groups = le::LoadU16(f + layout::kHeadGroups);
  if (groups > limits::kMaxKvHeads) return false;
  *s = layout::ComputeSections(name_len, n_tokens, chunk, n_layers, windows,
                               std::max<uint32_t>(groups, 1));
  return true;
}

// Names the first section that does not fit in `available` bytes.
Status SectionTruncated(const std::byte* fixed, uint64_t header_bytes, uint64_t available,
                        uint64_t file_size) {
  layout::Sections s;
  if (SectionsFromFixed(fixed, &s)) {
    const struct {
      const char* name;
      uint64_t offset, bytes;
    } parts[] = {{"model name section", s.name_offset, s.name_bytes},
                 {"token ids section", s.tokens_offset, s.tokens_bytes},
                 {"prefix hashes section", s.prefix_offset, s.prefix_bytes},
                 {"block table section", s.table_offset, s.table_bytes},
                 {"layer windows section", s.windows_offset, s.windows_bytes}};
    for (const auto& part : parts) {
      if (part.offset + part.bytes > available) {
        return Truncated(part.name, part.bytes, part.offset, file_size);
      }
    }
  }
  return Truncated("header", header_bytes, 0, file_size);
}

uint64_t HeaderChecksum(const std::byte* h, uint64_t header_bytes) {
  XXH3_state_t state;
  XXH3_INITSTATE(&state);
  XXH3_64bits_reset(&state);
  static constexpr unsigned char kZero[8] = {};
  XXH3_64bits_update(&state, h, layout::kHeaderChecksum);
  XXH3_64bits_update(&state, kZero, sizeof kZero);
  XXH3_64bits_update(&state, h + layout::kHeaderChecksum + 8,
                     header_bytes - layout::kHeaderChecksum - 8);
  return XXH3_64bits_digest(&state);
}

bool AllZero(const std::byte* p, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    if (p[i] != std::byte{0}) return false;
  }
  return true;
}

Status ParseCodec(const std::byte* f, CodecSpec* codec) {
  const uint8_t id = le::LoadU8(f + layout::kCodec);
  const uint8_t bits = le::LoadU8(f + layout::kCodecBits);
  const uint16_t group = le::LoadU16(f + layout::kGroupSize);
  const uint8_t flags = le::LoadU8(f + layout::kCodecFlags);
  if (id > static_cast<uint8_t>(CodecId::kTc)) {
    return Status::Corruption("codec " + Num(id) +
                              " unknown (have: 0 raw, 1 lossless, 2 quant, 3 tc)");
  }
  codec->id = static_cast<CodecId>(id);
  if (codec->id == CodecId::kTc) {
    if (bits < kTcMinQuality || bits > kTcMaxQuality) {
      return Status::Corruption("codec bits " + Num(bits) + " invalid for tc (have: " +
                                Num(kTcMinQuality) + ".." + Num(kTcMaxQuality) + ")");
    }
    if (group != 0 || flags != 0) {
      return Status::Corruption("codec group_size/flags (" + Num(group) + "/" + Num(flags) +
                                ") must be 0 for tc");
    }
    codec->bits = bits;
    codec->group_size = 0;
  } else if (codec->id == CodecId::kQuant) {
    if (bits != 8 && bits != 4 && bits != 2) {
      return Status::Corruption("codec bits " + Num(bits) + " invalid for quant (have: 8, 4, 2)");
    }
    if (group == 0) return Status::Corruption("codec group_size 0 invalid for quant");
    if ((flags & ~layout::kFlagZstd) != 0) {
      return Status::Corruption("codec flags " + text::Hex64(flags) + " has unknown bits");
    }
    codec->bits = bits;
    codec->group_size = group;
    codec->zstd = (flags & layout::kFlagZstd) != 0;
  } else if (codec->id == CodecId::kLossless && bits == 0 && group == 0 &&
             (flags & ~layout::kFlagRans) == 0) {
    codec->rans = (flags & layout::kFlagRans) != 0;
  } else if (bits != 0 || group != 0 || flags != 0) {
    return Status::Corruption("codec bits/group_size/flags (" + Num(bits) + "/" + Num(group) + "/" +
                              Num(flags) + ") must be 0 for " + codec->Name());
  }
  return Status::OK();
}

}  // namespace

bool HasKvMagic(std::span<const std::byte> prefix) {
  return prefix.size() >= kKvMagic.size() &&
         std::memcmp(prefix.data(), kKvMagic.data(), kKvMagic.size()) == 0;
}

Result<uint64_t> KvHeaderBytes(std::span<const std::byte> fixed, uint64_t file_size) {
  if (fixed.size() < kKvFixedHeaderBytes) {
    if (file_size < kKvFixedHeaderBytes) {
      if (file_size >= kKvMagic.size() && !HasKvMagic(fixed)) {
        return Status::Corruption("not a .kv file (bad magic)");
      }
      return Truncated("fixed header", kKvFixedHeaderBytes, 0, file_size);
    }
    return Status::InvalidArgument("fixed header: need " + Num(kKvFixedHeaderBytes) +
                                   " bytes, given " + Num(fixed.size()));
  }
  const std::byte* f = fixed.data();
  if (!HasKvMagic(fixed)) return Status::Corruption("not a .kv file (bad magic)");
  const uint32_t version = le::LoadU32(f + layout::kVersion);
  if (version != kKvVersion) {
    return Status::Unsupported(".kv version " + Num(version) + " unsupported (this build reads " +
                               Num(kKvVersion) + ")");
  }
  const uint32_t fixed_size = le::LoadU32(f + layout::kFixedSize);
  if (fixed_size != kKvFixedHeaderBytes) {
    return Status::Corruption("fixed header size " + Num(fixed_size) + ", expected " +
                              Num(kKvFixedHeaderBytes));
  }
  if (file_size < kKvFixedHeaderBytes) {
    return Truncated("fixed header", kKvFixedHeaderBytes, 0, file_size);
  }
  const uint64_t header_bytes = le::LoadU64(f + layout::kHeaderBytes);
  if (header_bytes < kKvFixedHeaderBytes || header_bytes > limits::kMaxHeaderBytes) {
    return OutOfRange("header_bytes", header_bytes, kKvFixedHeaderBytes, limits::kMaxHeaderBytes);
  }
  if (header_bytes > file_size) return SectionTruncated(f, header_bytes, file_size, file_size);
  return header_bytes;
}

Result<KvHeader> ParseKvHeader(std::span<const std::byte> bytes, uint64_t file_size) {
  return GuardAlloc("header", [&]() -> Result<KvHeader> {
    KDN_ASSIGN_OR_RETURN(const uint64_t header_bytes, KvHeaderBytes(bytes, file_size));
    if (bytes.size() < header_bytes) {
      return SectionTruncated(bytes.data(), header_bytes, bytes.size(), file_size)
          .WithContext("given " + Num(bytes.size()) + " header bytes");
    }
    const std::byte* f = bytes.data();

    // The checksum first: a flipped byte anywhere in the header is reported as what it is.
    const uint64_t stored_sum = le::LoadU64(f + layout::kHeaderChecksum);
    const uint64_t computed_sum = HeaderChecksum(f, header_bytes);
    if (stored_sum != computed_sum) {
      return Status::Corruption("header checksum mismatch (stored " + text::Hex64(stored_sum) +
                                ", computed " + text::Hex64(computed_sum) + ")");
    }

    KvHeader h;
    h.version = kKvVersion;
    h.header_bytes = header_bytes;
    h.file_bytes = le::LoadU64(f + layout::kFileBytes);
    h.fingerprint =
        Hash128{le::LoadU64(f + layout::kFingerprint), le::LoadU64(f + layout::kFingerprint + 8)};
    ModelIdentity& m = h.model;
    m.n_layers = le::LoadU32(f + layout::kNLayers);
    m.n_heads = le::LoadU32(f + layout::kNHeads);
    m.n_kv_heads = le::LoadU32(f + layout::kNKvHeads);
    m.head_dim = le::LoadU32(f + layout::kHeadDim);
    m.rotary_dim = le::LoadU32(f + layout::kRotaryDim);
    m.rope_theta = le::LoadF32(f + layout::kRopeTheta);
    m.rope_scale = le::LoadF32(f + layout::kRopeScale);
    h.n_tokens = le::LoadU32(f + layout::kNTokens);
    h.position_offset = le::LoadU32(f + layout::kPositionOffset);
    h.chunk_tokens = le::LoadU32(f + layout::kChunkTokens);
    const uint32_t name_len = le::LoadU8(f + layout::kNameLen);

    if (m.n_layers < 1 || m.n_layers > limits::kMaxLayers) {
      return OutOfRange("n_layers", m.n_layers, 1, limits::kMaxLayers);
    }
    if (m.n_heads < 1 || m.n_heads > limits::kMaxHeads) {
      return OutOfRange("n_heads", m.n_heads, 1, limits::kMaxHeads);
    }
    if (m.n_kv_heads < 1 || m.n_kv_heads > limits::kMaxKvHeads) {
      return OutOfRange("n_kv_heads", m.n_kv_heads, 1, limits::kMaxKvHeads);
    }
    if (m.head_dim < limits::kMinHeadDim || m.head_dim > limits::kMaxHeadDim || m.head_dim % 2) {
      return Status::Corruption("head_dim " + Num(m.head_dim) + " invalid (even, " +
                                Num(limits::kMinHeadDim) + ".." + Num(limits::kMaxHeadDim) + ")");
    }
    if (m.rotary_dim > m.head_dim || m.rotary_dim % 2) {
      return Status::Corruption("rotary_dim " + Num(m.rotary_dim) + " invalid (even, <= head_dim " +
                                Num(m.head_dim) + ")");
    }
    const uint8_t dtype = le::LoadU8(f + layout::kDType);
    if (dtype < 1 || dtype > 3) return Status::Corruption("dtype " + Num(dtype) + " unknown");
    m.dtype = static_cast<DType>(dtype);
    const uint8_t rope = le::LoadU8(f + layout::kRopeStyle);
    if (rope > 2) return Status::Corruption("rope style " + Num(rope) + " unknown");
    m.rope_style = static_cast<RopeStyle>(rope);
    if (!std::isfinite(m.rope_theta) || !(m.rope_theta > 0.0f)) {
      return Status::Corruption("rope_theta " + text::FormatFloat(m.rope_theta) +
                                " must be finite and > 0");
    }
    if (!std::isfinite(m.rope_scale) || !(m.rope_scale > 0.0f)) {
      return Status::Corruption("rope_scale " + text::FormatFloat(m.rope_scale) +
                                " must be finite and > 0");
    }
    if (h.n_tokens < 1 || h.n_tokens > limits::kMaxTokens) {
      return OutOfRange("n_tokens", h.n_tokens, 1, limits::kMaxTokens);
    }
    if (h.chunk_tokens < 1 || h.chunk_tokens > limits::kMaxChunkTokens) {
      return OutOfRange("chunk_tokens", h.chunk_tokens, 1, limits::kMaxChunkTokens);
    }
    if (name_len < 1) return OutOfRange("name_len", name_len, 1, limits::kMaxNameBytes);
    KDN_RETURN_IF_ERROR(ParseCodec(f, &h.codec));
    const uint8_t identity_flags = le::LoadU8(f + layout::kIdentityFlags);
    if ((identity_flags & ~layout::kIdentityLayerWindows) != 0) {
      return Status::Corruption("identity flags " + text::Hex64(identity_flags) +
                                " has unknown bits");
    }
    const bool has_windows = (identity_flags & layout::kIdentityLayerWindows) != 0;
    const uint8_t attention = le::LoadU8(f + layout::kAttention);
    if (attention > static_cast<uint8_t>(AttentionKind::kMla)) {
      return Status::Corruption("attention " + Num(attention) + " unknown (have: 0 K/V, 1 MLA)");
    }
    m.attention = static_cast<AttentionKind>(attention);
    m.kv_lora_rank = le::LoadU32(f + layout::kKvLoraRank);
    if (m.mla() && h.codec.id == CodecId::kTc) {
      return Status::Corruption("codec tc does not apply to MLA caches");
    }
    if (!AllZero(f + layout::kReserved2, layout::kReserved2Bytes)) {
      return Status::Corruption("reserved header bytes 112..127 are not zero");
    }
    // 0 stands for one group; 1 is never written (one layout, one encoding).
    const uint32_t stored_groups = le::LoadU16(f + layout::kHeadGroups);
    if (stored_groups == 1) {
      return Status::Corruption("head groups 1 is written as 0 (a file of one head group)");
    }
    h.head_groups = std::max<uint32_t>(stored_groups, 1);
    if (h.head_groups > 1) {
      // n_kv_heads is within bounds here; MLA is checked again by Validate below.
      if (Status st = CheckHeadGroups(m, h.head_groups); !st.ok()) {
        return Status::Corruption(st.message());
      }
    }

    const layout::Sections s = layout::ComputeSections(name_len, h.n_tokens, h.chunk_tokens,
                                                       m.n_layers, has_windows, h.head_groups);
    if (s.end != header_bytes) {
      return Status::Corruption("header_bytes " + Num(header_bytes) +
                                " does not match its sections (" + Num(s.end) + ")");
    }

    // Model name.
    m.name.assign(reinterpret_cast<const char*>(f + s.name_offset), name_len);
    if (!AllZero(f + s.name_offset + name_len, s.name_bytes - name_len)) {
      return Status::Corruption("model name section: padding is not zero");
    }
    // Layer windows (read before the identity is validated and fingerprinted: both cover them).
    if (has_windows) {
      m.layer_windows.resize(m.n_layers);
      for (uint32_t l = 0; l < m.n_layers; ++l) {
        m.layer_windows[l] = le::LoadU32(f + s.windows_offset + 4 * uint64_t{l});
      }
      if (!AllZero(f + s.windows_offset + 4 * uint64_t{m.n_layers},
                   s.windows_bytes - 4 * uint64_t{m.n_layers})) {
        return Status::Corruption("layer windows section: padding is not zero");
      }
    }
    if (Status st = m.Validate(); !st.ok()) return Status::Corruption(st.message());
    if (const Hash128 fp = m.Fingerprint(); fp != h.fingerprint) {
      return Status::Corruption("model fingerprint mismatch (stored " + h.fingerprint.ToHex() +
                                ", computed " + fp.ToHex() + " from the identity fields)");
    }

    // Token ids.
    h.tokens.resize(h.n_tokens);
    std::memcpy(h.tokens.data(), f + s.tokens_offset, uint64_t{4} * h.n_tokens);
    if (!AllZero(f + s.tokens_offset + uint64_t{4} * h.n_tokens,
                 s.tokens_bytes - 4 * uint64_t{h.n_tokens})) {
      return Status::Corruption("token ids section: padding is not zero");
    }

    // Prefix hashes, recomputed from the token ids.
    const uint32_t chunks = layout::PrefixChunks(h.n_tokens, h.chunk_tokens);
    h.prefix_hashes.resize(chunks);
    for (uint32_t i = 0; i < chunks; ++i) {
      h.prefix_hashes[i] = Hash128{le::LoadU64(f + s.prefix_offset + 16 * uint64_t{i}),
                                   le::LoadU64(f + s.prefix_offset + 16 * uint64_t{i} + 8)};
    }
    const std::vector<Hash128> expected = PrefixHashes(h.fingerprint, h.tokens, h.chunk_tokens);
    for (uint32_t i = 0; i < chunks; ++i) {
      if (expected[i] != h.prefix_hashes[i]) {
        return Status::Corruption(
            "prefix hash " + Num(i) + " does not match the token ids (stored " +
            h.prefix_hashes[i].ToHex() + ", computed " + expected[i].ToHex() + ")");
      }
    }

    // Block table: sizes consistent with the shape and codec, offsets exactly where the layout puts
    // them (so blocks are aligned, in order, apart, and inside the file).
    const BlockShape shape{h.n_tokens, h.group_channels(), m.dtype};
    const uint64_t decoded = shape.bytes();
    h.blocks.resize(2 * uint64_t{m.n_layers} * h.head_groups);
    uint64_t pos = AlignUp(header_bytes, kKvBlockAlign);
    for (size_t i = 0; i < h.blocks.size(); ++i) {
      const std::byte* e = f + s.table_offset + layout::kBlockEntryBytes * i;
      BlockEntry& b = h.blocks[i];
      b.offset = le::LoadU64(e);
      b.encoded_bytes = le::LoadU64(e + 8);
      b.decoded_bytes = le::LoadU64(e + 16);
      b.checksum = le::LoadU64(e + 24);
      const layout::BlockPlace place = layout::PlaceOf(i, h.head_groups);
      const std::string name = layout::BlockName(h, i);
      if (!h.has_block(place.layer, place.kind)) {
        // An MLA V slot: an empty entry where the layout puts the next block.
        if (b.encoded_bytes != 0 || b.decoded_bytes != 0 || b.checksum != 0) {
          return Status::Corruption(name + ": an MLA cache's V slot must be empty (sizes and "
                                    "checksum 0)");
        }
        if (b.offset != pos) {
          return Status::Corruption(name + ": offset " + Num(b.offset) +
                                    " is not where the layout puts it (" + Num(pos) + ")");
        }
        continue;
      }
      if (b.decoded_bytes != decoded) {
        return Status::Corruption(name + ": decoded_bytes " + Num(b.decoded_bytes) +
                                  " does not match the shape (" + Num(decoded) + ")");
      }
      if (Status st = codec_internal::CheckEncodedSize(h.codec, place.kind, shape, b.encoded_bytes);
          !st.ok()) {
        return Status::Corruption(name + ": " + st.message());
      }
      if (b.offset != pos) {
        return Status::Corruption(name + ": offset " + Num(b.offset) +
                                  " is not where the layout puts it (" + Num(pos) + ")");
      }
      if (b.offset + b.encoded_bytes > file_size) {
        return Truncated(name, b.encoded_bytes, b.offset, file_size);
      }
      pos = AlignUp(b.offset + b.encoded_bytes, kKvBlockAlign);
    }
    if (h.file_bytes != pos) {
      return Status::Corruption("file_bytes " + Num(h.file_bytes) +
                                " does not match the block layout (" + Num(pos) + ")");
    }
    if (file_size < h.file_bytes) {
      return Status::Corruption("file truncated: header says " + Num(h.file_bytes) +
                                " bytes, file has " + Num(file_size));
    }
    if (file_size > h.file_bytes) {
      return Status::Corruption("file has " + Num(file_size) + " bytes, header says " +
                                Num(h.file_bytes) + " (trailing bytes)");
    }
    return h;
  });
}

Status CheckHeadGroups(const ModelIdentity& model, uint32_t head_groups) {
  if (head_groups == 1) return Status::OK();
  if (model.mla()) {
    return Status::Unsupported(
        "an MLA cache has one latent per token (one KV head), so one head "
        "group, not " +
        Num(head_groups));
  }
  if (head_groups == 0 || model.n_kv_heads == 0 || model.n_kv_heads % head_groups != 0) {
    return Status::InvalidArgument("head groups " + Num(head_groups) + " must divide n_kv_heads " +
                                   Num(model.n_kv_heads) +
                                   " (each group holds the same number of whole heads)");
  }
  return Status::OK();
}

uint32_t DefaultHeadGroups(const ModelIdentity& model) {
  return !model.mla() && model.n_kv_heads >= 8 && model.n_kv_heads % 8 == 0 ? 8 : 1;
}

uint64_t KvHeader::decoded_bytes() const {
  uint64_t n = 0;
  for (const BlockEntry& b : blocks) n += b.decoded_bytes;
  return n;
}

uint64_t KvHeader::encoded_bytes() const {
  uint64_t n = 0;
  for (const BlockEntry& b : blocks) n += b.encoded_bytes;
  return n;
}

}  // namespace kdn
