// What the store knows about `.kv` content, behind one small interface: validation at commit,
// the header fields and prefix hashes it indexes, and the check fsck runs.
#ifndef KDN_STORE_KV_CONTENT_H_
#define KDN_STORE_KV_CONTENT_H_

#include <optional>
#include <span>
#include <vector>

#include "kdn/format.h"
#include "kdn/status.h"
#include "kdn/store.h"

namespace kdn::store {

struct KvIndex {
  KvSummary summary;
  std::vector<Hash128> prefix_hashes;
};

// True when `head` (the first bytes of some content) starts with the `.kv` magic.
bool StartsWithKvMagic(std::span<const std::byte> head);

// Content that starts with the `.kv` magic must be a complete, valid `.kv` file: it passes
// VerifyKv (kdn/format.h), the same check as `kdnctl verify`, run in bounded memory. Returns its
// index; std::nullopt for content without the magic. Invalid content is kInvalidArgument saying
// what is wrong (layer, block); I/O errors and allocation failures (kNoSpace) pass unchanged.
Result<std::optional<KvIndex>> InspectKvContent(const ByteSource& content);

}  // namespace kdn::store

#endif  // KDN_STORE_KV_CONTENT_H_
