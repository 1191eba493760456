// KvReader: the header at open, then any block on demand, its checksum verified every time.
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "kdn/codec.h"
#include "kdn/format.h"
#include "store/format/codec_internal.h"
#include "store/format/guard_alloc.h"
#include "store/format/kv_layout.h"
#include "store/format/limits.h"
#include "store/format/scratch.h"
#include "store/format/text.h"
#include "store/format/zstd_util.h"

namespace kdn {

namespace {

Status CheckBlockIndex(const KvHeader& h, uint32_t layer, KvKind kind, uint32_t group = 0) {
  if (layer >= h.model.n_layers) {
    return Status::InvalidArgument("layer " + std::to_string(layer) +
                                   " out of range (the cache has " +
                                   std::to_string(h.model.n_layers) + " layers)");
  }
  if (kind != KvKind::kKey && kind != KvKind::kValue) {
    return Status::InvalidArgument("block kind unknown");
  }
  if (group >= h.head_groups) {
    return Status::InvalidArgument("head group " + std::to_string(group) +
                                   " out of range (the cache has " + std::to_string(h.head_groups) +
                                   ")");
  }
  if (!h.has_block(layer, kind)) {
    return Status::InvalidArgument(layout::BlockName(layer, kind) +
                                   ": an MLA cache has no V blocks (each layer's latent is its K "
                                   "block)");
  }
  return Status::OK();
}

Status ChecksumMismatch(const std::string& name, uint64_t stored, uint64_t computed) {
  return Status::Corruption(name + ": checksum mismatch (stored " + text::Hex64(stored) +
                            ", computed " + text::Hex64(computed) + ")");
}

// Bytes [begin, end) of the source must be zero (padding between header and blocks).
Status CheckZero(const ByteSource& src, uint64_t begin, uint64_t end, const std::string& what) {
  if (begin >= end) return Status::OK();
  std::byte buf[kKvBlockAlign];
  for (uint64_t pos = begin; pos < end;) {
    const uint64_t n = std::min<uint64_t>(sizeof buf, end - pos);
    KDN_RETURN_IF_ERROR(src.ReadAt(pos, std::span<std::byte>(buf, n)).WithContext(what));
    for (uint64_t i = 0; i < n; ++i) {
      if (buf[i] != std::byte{0}) {
        return Status::Corruption(what + " is not zero (byte at offset " + std::to_string(pos + i) +
                                  ")");
      }
    }
    pos += n;
  }
  return Status::OK();
}

}  // namespace

Result<std::unique_ptr<KvReader>> KvReader::Open(const std::string& path) {
  KDN_ASSIGN_OR_RETURN(std::unique_ptr<ByteSource> src, OpenFileSource(path));
  return Open(std::move(src));
}

Result<std::unique_ptr<KvReader>> KvReader::Open(std::unique_ptr<ByteSource> source) {
  return GuardAlloc("open", [&]() -> Result<std::unique_ptr<KvReader>> {
    if (!source) return Status::InvalidArgument("KvReader: no source");
    const uint64_t size = source->size();
    std::vector<std::byte> fixed(std::min<uint64_t>(size, kKvFixedHeaderBytes));
    KDN_RETURN_IF_ERROR(source->ReadAt(0, fixed));
    KDN_ASSIGN_OR_RETURN(const uint64_t header_bytes, KvHeaderBytes(fixed, size));
    std::vector<std::byte> bytes(header_bytes);  // <= min(file size, 256 MiB): checked above
    KDN_RETURN_IF_ERROR(source->ReadAt(0, bytes));
    KDN_ASSIGN_OR_RETURN(KvHeader header, ParseKvHeader(bytes, size));
    return std::unique_ptr<KvReader>(new KvReader(std::move(source), std::move(header)));
  });
}

Status KvReader::ReadBlock(uint32_t layer, KvKind kind, std::span<std::byte> out,
                           uint32_t group) const {
  KDN_RETURN_IF_ERROR(CheckBlockIndex(header_, layer, kind, group));
  const BlockEntry& b = header_.block(layer, kind, group);
  // Block names are built on error paths only: this runs once per block on every load.
  const auto name = [&] {
    return layout::BlockName(layer, kind, group, header_.head_groups, header_.heads_per_group());
  };
  if (out.size() < b.encoded_bytes) {
    return Status::InvalidArgument(name() + ": buffer of " + std::to_string(out.size()) +
                                   " bytes, the block has " + std::to_string(b.encoded_bytes));
  }
  const std::span<std::byte> dst = out.first(b.encoded_bytes);
  if (Status st = source_->ReadAt(b.offset, dst); !st.ok()) return st.WithContext(name());
  const uint64_t sum = HashBytes64(dst.data(), dst.size());
  if (sum != b.checksum) return ChecksumMismatch(name(), b.checksum, sum);
  return Status::OK();
}

Status KvReader::DecodeBlock(uint32_t layer, KvKind kind, DType dtype,
                             std::span<std::byte> out) const {
  // The group-shaped scratch of a grouped file may fail to allocate: a status, not an exception.
  return GuardAlloc("decode", [&]() -> Status {
    KDN_RETURN_IF_ERROR(CheckBlockIndex(header_, layer, kind));
    const KvHeader& h = header_;
    if (out.size() < h.decoded_block_bytes(dtype)) {
      return Status::InvalidArgument(layout::BlockName(layer, kind) + ": output of " +
                                     std::to_string(out.size()) + " bytes, the layer has " +
                                     std::to_string(h.decoded_block_bytes(dtype)));
    }
    const BlockShape shape{h.n_tokens, h.group_channels(), h.model.dtype};
    // A grouped file's blocks decode into a group-shaped scratch, then go to their heads' channels.
    std::vector<std::byte> group_out;
    if (h.head_groups > 1)
      group_out.resize(uint64_t{h.n_tokens} * shape.channels * DTypeSize(dtype));
    for (uint32_t g = 0; g < h.head_groups; ++g) {
      const BlockEntry& b = h.block(layer, kind, g);
      KDN_ASSIGN_OR_RETURN(std::span<std::byte> enc,
                           scratch::Get(scratch::Slot::kEncoded, b.encoded_bytes));
      KDN_RETURN_IF_ERROR(ReadBlock(layer, kind, enc, g));
      const std::span<std::byte> dst = h.head_groups > 1 ? std::span<std::byte>(group_out) : out;
      if (Status st = kdn::DecodeBlock(h.codec, kind, shape, enc, dtype, dst); !st.ok()) {
        return st.WithContext(
            layout::BlockName(layer, kind, g, h.head_groups, h.heads_per_group()));
      }
      if (h.head_groups > 1) {
        const size_t group_row = size_t{shape.channels} * DTypeSize(dtype);
        const size_t row = size_t{h.model.channels()} * DTypeSize(dtype);
        for (uint32_t t = 0; t < h.n_tokens; ++t) {
          std::memcpy(out.data() + t * row + g * group_row, group_out.data() + t * group_row,
                      group_row);
        }
      }
    }
    return Status::OK();
  });
}

Status KvReader::VerifyAll() const {
  return GuardAlloc("verify", [&]() -> Status {
    const KvHeader& h = header_;
    const BlockShape shape{h.n_tokens, h.group_channels(), h.model.dtype};
    constexpr uint64_t kChunk = uint64_t{4} << 20;
    uint64_t prev_end = h.header_bytes;
    std::string prev_name = "the header";
    for (size_t i = 0; i < h.blocks.size(); ++i) {
      const BlockEntry& b = h.blocks[i];
      const layout::BlockPlace place = layout::PlaceOf(i, h.head_groups);
      const KvKind kind = place.kind;
      if (!h.has_block(place.layer, kind)) continue;  // MLA V slot: no bytes
      const std::string name = layout::BlockName(h, i);
      KDN_RETURN_IF_ERROR(CheckZero(*source_, prev_end, b.offset, "padding after " + prev_name));

      // One pass over the bytes: the checksum, and the zstd stage decoded in a bounded window.
      XXH3_state_t state;
      XXH3_INITSTATE(&state);
      XXH3_64bits_reset(&state);
      const codec_internal::QuantLayout q =
          h.codec.id == CodecId::kQuant
              ? codec_internal::ComputeQuantLayout(kind, shape, h.codec.bits, h.codec.group_size)
              : codec_internal::QuantLayout{};
      // Quant padding lies in [params_bytes, codes_offset) of the payload.
      auto check_pad = [&q](uint64_t pos, std::span<const std::byte> bytes) -> Status {
        const uint64_t lo = std::max(pos, q.params_bytes);
        const uint64_t hi = std::min(pos + bytes.size(), q.codes_offset);
        for (uint64_t p = lo; p < hi; ++p) {
          if (bytes[p - pos] != std::byte{0}) {
            return Status::Corruption("quant padding at byte " + std::to_string(p) +
                                      " is not zero");
          }
        }
        return Status::OK();
      };
      const bool zstd_stage = codec_internal::HasZstdStage(h.codec);
      std::unique_ptr<zstd::StreamChecker> checker;
      if (zstd_stage) {
        checker = std::make_unique<zstd::StreamChecker>(
            codec_internal::PayloadBytes(h.codec, kind, shape),
            [&](uint64_t pos, std::span<const std::byte> bytes) {
              return h.codec.id == CodecId::kQuant ? check_pad(pos, bytes) : Status::OK();
            });
      }
      Status content;  // first content error; the checksum verdict comes first
      for (uint64_t pos = 0; pos < b.encoded_bytes; pos += kChunk) {
        const uint64_t n = std::min(kChunk, b.encoded_bytes - pos);
        KDN_ASSIGN_OR_RETURN(std::span<std::byte> buf, scratch::Get(scratch::Slot::kEncoded, n));
        KDN_RETURN_IF_ERROR(source_->ReadAt(b.offset + pos, buf).WithContext(name));
        XXH3_64bits_update(&state, buf.data(), buf.size());
        if (!content.ok()) continue;
        if (checker) {
          content = checker->Feed(buf);
        } else if (h.codec.id == CodecId::kQuant) {
          content = check_pad(pos, buf);
        }
      }
      const uint64_t sum = XXH3_64bits_digest(&state);
      if (sum != b.checksum) return ChecksumMismatch(name, b.checksum, sum);
      if (content.ok() && checker) content = checker->Finish();
      if (content.ok() && codec_internal::NeedsWholeBlockCheck(h.codec) &&
          b.encoded_bytes > limits::kMaxWholeCheckBlockBytes) {
        content = Status::Corruption("a block of " + std::to_string(b.encoded_bytes) +
                                     " encoded bytes is larger than the " +
                                     std::to_string(limits::kMaxWholeCheckBlockBytes) +
                                     " a reader checks whole");
      }
      if (content.ok() && codec_internal::NeedsWholeBlockCheck(h.codec)) {
        // tc: tables and every rANS segment, which need the block whole (at most its size).
        KDN_ASSIGN_OR_RETURN(std::span<std::byte> whole,
                             scratch::Get(scratch::Slot::kEncoded, b.encoded_bytes));
        KDN_RETURN_IF_ERROR(source_->ReadAt(b.offset, whole).WithContext(name));
        content = codec_internal::CheckWholeBlock(h.codec, kind, shape, whole);
      }
      if (!content.ok()) return Status::Corruption(name + ": " + content.message());
      prev_end = b.offset + b.encoded_bytes;
      prev_name = name;
    }
    return CheckZero(*source_, prev_end, h.file_bytes, "padding after " + prev_name);
  });
}

}  // namespace kdn
