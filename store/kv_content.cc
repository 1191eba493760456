// InspectKvContent with the format library: the complete verification (VerifyKv) before a `.kv`
// file is published, and what kdnfs shows of it (user.kdn.*, prefix lookups).
#include <string>

#include "store/kv_content.h"

namespace kdn::store {
namespace {

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

  // The same complete check as `kdnctl verify`, in bounded memory: a file that verify refuses is
  // never published, and a forged block size cannot make the daemon allocate it.
  Result<KvHeader> verified = VerifyKv(content);
  if (!verified.ok()) return Invalid(verified.status());
  const KvHeader& h = *verified;
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
