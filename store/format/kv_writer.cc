// KvWriter: encodes layers as they are added, then writes the file sequentially, header first.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "kdn/codec.h"
#include "kdn/format.h"
#include "store/format/file_io.h"
#include "store/format/guard_alloc.h"
#include "store/format/kv_layout.h"
#include "store/format/limits.h"

namespace kdn {

struct KvWriter::Impl {
  KvHeader header;
  Status init_error;
  std::vector<std::vector<std::byte>> blocks;  // encoded, in file order

  Status Ready() const {
    if (!init_error.ok()) return init_error;
    const uint32_t n_layers = header.model.n_layers;
    const size_t per_layer = 2 * size_t{header.head_groups};
    if (blocks.size() != per_layer * n_layers) {
      return Status::InvalidArgument("KvWriter: " + std::to_string(blocks.size() / per_layer) +
                                     " of " + std::to_string(n_layers) + " layers added");
    }
    return Status::OK();
  }

  // Lays the file out and hands its bytes, in order, to `emit(data, n)`.
  template <typename Sink>
  Status Emit(Sink&& emit) {
    KDN_RETURN_IF_ERROR(Ready());
    const BlockShape shape{header.n_tokens, header.group_channels(), header.model.dtype};
    for (size_t i = 0; i < blocks.size(); ++i) {
      BlockEntry& e = header.blocks[i];
      e = BlockEntry{};
      const layout::BlockPlace place = layout::PlaceOf(i, header.head_groups);
      if (!header.has_block(place.layer, place.kind)) continue;
      e.encoded_bytes = blocks[i].size();
      e.decoded_bytes = shape.bytes();
      e.checksum = HashBytes64(blocks[i].data(), blocks[i].size());
    }
    layout::AssignOffsets(&header);
    const std::vector<std::byte> head = layout::SerializeHeader(header);
    static const std::byte kZeros[kKvBlockAlign] = {};
    uint64_t pos = 0;
    auto pad_to = [&](uint64_t target) -> Status {
      while (pos < target) {
        const uint64_t n = std::min<uint64_t>(sizeof kZeros, target - pos);
        KDN_RETURN_IF_ERROR(emit(kZeros, n));
        pos += n;
      }
      return Status::OK();
    };
    KDN_RETURN_IF_ERROR(emit(head.data(), head.size()));
    pos = head.size();
    for (size_t i = 0; i < blocks.size(); ++i) {
      KDN_RETURN_IF_ERROR(pad_to(header.blocks[i].offset));
      KDN_RETURN_IF_ERROR(emit(blocks[i].data(), blocks[i].size()));
      pos += blocks[i].size();
    }
    return pad_to(header.file_bytes);
  }
};

KvWriter::KvWriter(ModelIdentity model, CodecSpec codec, std::vector<uint32_t> tokens,
                   uint32_t position_offset, uint32_t chunk_tokens, uint32_t head_groups)
    : impl_(std::make_unique<Impl>()) {
  // A constructor cannot return a Status: the first error is kept and every later call returns it.
  Status st = model.Validate();
  if (st.ok()) st = codec.Validate();
  if (st.ok()) st = CheckHeadGroups(model, head_groups);
  if (st.ok() && model.mla() && codec.id == CodecId::kTc) {
    st = Status::Unsupported("codec tc does not apply to MLA caches (it un-rotates each head's "
                             "leading dims and models K/V blocks); use raw, lossless or q8/q4/q2");
  }
  if (st.ok() && (tokens.empty() || tokens.size() > limits::kMaxTokens)) {
    st = Status::InvalidArgument("token count " + std::to_string(tokens.size()) +
                                 " out of range 1.." + std::to_string(limits::kMaxTokens));
  }
  if (st.ok() && (chunk_tokens < 1 || chunk_tokens > limits::kMaxChunkTokens)) {
    st = Status::InvalidArgument("chunk_tokens " + std::to_string(chunk_tokens) +
                                 " out of range 1.." + std::to_string(limits::kMaxChunkTokens));
  }
  if (!st.ok()) {
    impl_->init_error = st.WithContext("KvWriter");
    return;
  }
  impl_->init_error = GuardAlloc("KvWriter", [&]() -> Status {
    KvHeader& h = impl_->header;
    h.model = std::move(model);
    h.fingerprint = h.model.Fingerprint();
    h.n_tokens = static_cast<uint32_t>(tokens.size());
    h.position_offset = position_offset;
    h.chunk_tokens = chunk_tokens;
    h.codec = codec;
    h.prefix_hashes = PrefixHashes(h.fingerprint, tokens, chunk_tokens);
    h.tokens = std::move(tokens);
    h.head_groups = head_groups;
    h.blocks.resize(2 * size_t{h.model.n_layers} * head_groups);
    impl_->blocks.reserve(h.blocks.size());
    return Status::OK();
  });
}

KvWriter::~KvWriter() = default;

Status KvWriter::AddLayer(std::span<const std::byte> k, std::span<const std::byte> v) {
  return GuardAlloc("KvWriter", [&]() -> Status {
    Impl& s = *impl_;
    if (!s.init_error.ok()) return s.init_error;
    const KvHeader& h = s.header;
    const uint32_t groups = h.head_groups;
    const uint32_t layer = static_cast<uint32_t>(s.blocks.size() / (2 * size_t{groups}));
    if (layer >= h.model.n_layers) {
      return Status::InvalidArgument("KvWriter: all " + std::to_string(h.model.n_layers) +
                                     " layers were already added");
    }
    const BlockContext ctx = BlockContext::For(h.model, h.position_offset, layer);
    if (h.model.mla()) {
      // The latent is the K slot's block; the V slot stays empty.
      if (!v.empty()) {
        return Status::InvalidArgument("KvWriter: " + layout::BlockName(layer, KvKind::kValue) +
                                       ": an MLA cache has no V tensor (pass an empty one)");
      }
      const BlockShape shape{h.n_tokens, h.model.channels(), h.model.dtype};
      std::vector<std::byte> ek;
      KDN_RETURN_IF_ERROR(EncodeBlock(h.codec, KvKind::kKey, shape, k, &ek, ctx)
                              .WithContext(layout::BlockName(layer, KvKind::kKey)));
      s.blocks.push_back(std::move(ek));
      s.blocks.emplace_back();
      return Status::OK();
    }
    const BlockShape full{h.n_tokens, h.model.channels(), h.model.dtype};
    for (const auto& [kind, src] : {std::pair{KvKind::kKey, k}, std::pair{KvKind::kValue, v}}) {
      // (One group: the encoder's own check names the mismatch.)
      if (groups > 1 && src.size() != full.bytes()) {
        return Status::InvalidArgument(layout::BlockName(layer, kind) + ": " +
                                       std::to_string(src.size()) + " bytes given, the shape has " +
                                       std::to_string(full.bytes()));
      }
    }
    // One block per (K/V, head group): group g's rows are its heads' channels of every token.
    const BlockShape shape{h.n_tokens, h.group_channels(), h.model.dtype};
    const size_t esize = DTypeSize(h.model.dtype);
    const size_t group_row = size_t{shape.channels} * esize;
    const size_t row = size_t{full.channels} * esize;
    std::vector<std::byte> gathered;
    std::vector<std::vector<std::byte>> encoded(2 * size_t{groups});
    for (uint32_t kv = 0; kv < 2; ++kv) {
      const KvKind kind = static_cast<KvKind>(kv);
      const std::span<const std::byte> src = kind == KvKind::kKey ? k : v;
      for (uint32_t g = 0; g < groups; ++g) {
        std::span<const std::byte> group_src = src;
        if (groups > 1) {
          gathered.resize(shape.bytes());
          for (uint32_t t = 0; t < h.n_tokens; ++t) {
            std::memcpy(gathered.data() + t * group_row, src.data() + t * row + g * group_row,
                        group_row);
          }
          group_src = gathered;
        }
        KDN_RETURN_IF_ERROR(
            EncodeBlock(h.codec, kind, shape, group_src, &encoded[kv * groups + g], ctx)
                .WithContext(layout::BlockName(layer, kind, g, groups, h.heads_per_group())));
      }
    }
    for (auto& e : encoded) s.blocks.push_back(std::move(e));
    return Status::OK();
  });
}

Status KvWriter::Finish(const std::string& path, bool sync) {
  return GuardAlloc("KvWriter", [&]() -> Status {
    KDN_RETURN_IF_ERROR(impl_->Ready());  // before touching the file
    UniqueFd fd = OpenFd(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (!fd.valid()) return Status::FromErrno("create " + path, errno);
    Status st = impl_->Emit([&](const void* p, size_t n) {
      return WriteFull(fd.get(), {static_cast<const std::byte*>(p), n}, path);
    });
    if (st.ok() && sync && ::fsync(fd.get()) != 0) st = Status::FromErrno("fsync " + path, errno);
    Status closed = fd.Close(path);
    if (st.ok()) st = closed;
    if (!st.ok()) ::unlink(path.c_str());  // never leave a partial file that looks like a cache
    return st;
  });
}

Result<std::vector<std::byte>> KvWriter::FinishToMemory() {
  return GuardAlloc("KvWriter", [&]() -> Result<std::vector<std::byte>> {
    std::vector<std::byte> out;
    KDN_RETURN_IF_ERROR(impl_->Emit([&](const void* p, size_t n) {
      const auto* b = static_cast<const std::byte*>(p);
      out.insert(out.end(), b, b + n);
      return Status::OK();
    }));
    return out;
  });
}

}  // namespace kdn
