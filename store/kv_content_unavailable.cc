// InspectKvContent for builds without the format library: content with the `.kv` magic is refused
// (it cannot be validated), everything else is plain content.
#include <string>

#include "store/kv_content.h"

namespace kdn::store {

Result<std::optional<KvIndex>> InspectKvContent(const ByteSource& content) {
  std::byte head[8] = {};
  if (content.size() < sizeof(head)) return std::optional<KvIndex>();
  KDN_RETURN_IF_ERROR(content.ReadAt(0, head));
  if (!StartsWithKvMagic(head)) return std::optional<KvIndex>();
  return Status::Unsupported(".kv content cannot be validated: this build lacks libkdn_format");
}

}  // namespace kdn::store
