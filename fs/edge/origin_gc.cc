#include "fs/edge/origin_gc.h"

#include <chrono>
#include <ctime>
#include <set>
#include <span>
#include <string_view>

#include "fs/edge/ns_object.h"

namespace kdn::edge {

Result<GcReport> CollectUnnamedChunks(origin::Origin& origin, const GcOptions& options) {
  GcReport report;
  const auto now_s = [] { return static_cast<int64_t>(std::time(nullptr)); };
  const int64_t grace_s = options.grace.count();
  auto is_old = [&](const origin::ObjectInfo& obj) {
    // An age the origin does not tell is never taken for an old one (except with a grace of 0).
    return grace_s == 0 || (obj.mtime_s > 0 && now_s() - obj.mtime_s >= grace_s);
  };
  // Chunks first (see origin_gc.h): a name written after this listing is in the next one.
  KDN_ASSIGN_OR_RETURN(origin::ListPage chunks, origin.ListAll(kChunksPrefix, ""));
  KDN_ASSIGN_OR_RETURN(origin::ListPage names, origin.ListAll(std::string(kNsPrefix) + "/", ""));
  // Names written from now on are not in `names`; their chunks are protected by the refresh (see
  // origin_gc.h) only until this deadline.
  const auto names_listed = std::chrono::steady_clock::now();
  const bool bounded = options.grace >= kMinSafeGcGrace;
  const auto delete_until = names_listed + options.grace - kChunkRefreshAge - kNamePutSlack;
  std::set<ChunkId> named;
  std::string bytes;
  for (const origin::ObjectInfo& obj : names.objects) {
    std::string_view key = obj.key;
    if (key.substr(key.rfind('/') + 1) == kDirMarkerName) continue;
    if (obj.size > kMaxNsObjectBytes) {
      return Status::Corruption("namespace object " + obj.key +
                                " is larger than 64 KiB: nothing collected");
    }
    bytes.assign(obj.size, '\0');
    KDN_ASSIGN_OR_RETURN(
        uint64_t got,
        origin.Get(obj.key, 0, std::span(reinterpret_cast<uint8_t*>(bytes.data()), bytes.size())));
    bytes.resize(got);
    Result<NsObject> decoded = DecodeNsObject(bytes);
    if (!decoded.ok()) {
      return Status::Corruption("namespace object " + obj.key + ": " + decoded.status().ToString() +
                                ": nothing collected");
    }
    ++report.names;
    if (!decoded->chunk.IsZero()) named.insert(decoded->chunk);
  }
  for (const origin::ObjectInfo& obj : chunks.objects) {
    // Only keys this layout writes: anything else under chunks/ is not the collector's to judge.
    Result<ChunkId> id = ChunkId::FromHex(std::string_view(obj.key).substr(kChunksPrefix.size()));
    if (!id.ok() || ChunkKey(*id) != obj.key) continue;
    ++report.chunks;
    if (named.count(*id)) continue;
    ++report.unnamed;
    if (!is_old(obj)) {
      ++report.young;
      continue;
    }
    if (bounded && std::chrono::steady_clock::now() >= delete_until) {
      ++report.deferred;
      continue;
    }
    // Again, just before the delete: an edge that names this chunk now refreshed it first.
    Result<origin::ObjectInfo> again = origin.Head(obj.key);
    if (!again.ok() && again.status().IsNotFound()) continue;  // someone else deleted it
    KDN_RETURN_IF_ERROR(again.status());
    if (!is_old(*again)) {
      ++report.refreshed;
      continue;
    }
    if (!options.dry_run) KDN_RETURN_IF_ERROR(origin.Delete(obj.key));
    ++report.deleted;
    report.deleted_bytes += again->size;
    if (options.on_unnamed) {
      options.on_unnamed(*again, again->mtime_s > 0 ? now_s() - again->mtime_s : -1);
    }
  }
  return report;
}

}  // namespace kdn::edge
