// InspectKvContent with the format library: the header parsed and every block's checksum verified
// before a `.kv` file is published, and what kdnfs shows of it (user.kdn.*, prefix lookups).
#include <algorithm>
#include <string>

#include "store/kv_content.h"

namespace kdn::store {
namespace {

// The caller's source, lent to a KvReader (which wants to own one) for the duration of the check.
class BorrowedSource final : public ByteSource {
 public:
  explicit BorrowedSource(const ByteSource& source) : source_(source) {}
  uint64_t size() const override { return source_.size(); }
  Status ReadAt(uint64_t offset, std::span<std::byte> out) const override {
    return source_.ReadAt(offset, out);
  }

 private:
  const ByteSource& source_;
};

Status Invalid(const Status& why) {
  switch (why.code()) {
    case Code::kCorruption:
    case Code::kInvalidArgument:
    case Code::kUnsupported:
    case Code::kModelMismatch:
      return Status::InvalidArgument("invalid .kv content: " + why.message());
    default:
      return why;  // not the file's fault (I/O, memory, space)
  }
}

}  // namespace

Result<std::optional<KvIndex>> InspectKvContent(const ByteSource& content) {
  std::byte head[8] = {};
  if (content.size() < sizeof(head)) return std::optional<KvIndex>();
  KDN_RETURN_IF_ERROR(content.ReadAt(0, head));
  if (!StartsWithKvMagic(head)) return std::optional<KvIndex>();

  Result<std::unique_ptr<KvReader>> reader =
      KvReader::Open(std::make_unique<BorrowedSource>(content));
  if (!reader.ok()) return Invalid(reader.status());
  const KvHeader& h = (*reader)->header();
  if (h.file_bytes != content.size()) {
    return Status::InvalidArgument("invalid .kv content: header says " +
                                   std::to_string(h.file_bytes) + " bytes, the file has " +
                                   std::to_string(content.size()));
  }
  uint64_t largest = 0;
  for (const BlockEntry& b : h.blocks) largest = std::max(largest, b.encoded_bytes);
  std::vector<std::byte> block(largest);
  for (uint32_t layer = 0; layer < h.model.n_layers; ++layer) {
    for (KvKind kind : {KvKind::kKey, KvKind::kValue}) {
      const BlockEntry& b = h.block(layer, kind);
      Status s = (*reader)->ReadBlock(layer, kind, std::span(block).first(b.encoded_bytes));
      if (!s.ok()) {
        return Invalid(s.WithContext("layer " + std::to_string(layer) +
                                     (kind == KvKind::kKey ? " K" : " V") + " block"));
      }
    }
  }
  KvIndex index;
  index.summary.model = h.model.name;
  index.summary.fingerprint = h.fingerprint;
  index.summary.n_layers = h.model.n_layers;
  index.summary.n_tokens = h.n_tokens;
  index.summary.position_offset = h.position_offset;
  index.summary.chunk_tokens = h.chunk_tokens;
  index.summary.codec = h.codec.Name();
  index.summary.raw_bytes = h.decoded_bytes();
  index.summary.file_bytes = h.file_bytes;
  index.summary.n_prefix_hashes = static_cast<uint32_t>(h.prefix_hashes.size());
  index.prefix_hashes = h.prefix_hashes;
  return std::optional<KvIndex>(std::move(index));
}

}  // namespace kdn::store
