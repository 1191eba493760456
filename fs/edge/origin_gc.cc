#include "fs/edge/origin_gc.h"

#include <ctime>
#include <set>
#include <span>
#include <string_view>

#include "fs/edge/ns_object.h"

namespace kdn::edge {

Result<GcReport> CollectUnnamedChunks(origin::Origin& origin, const GcOptions& options) {
  GcReport report;
  const int64_t now_s = static_cast<int64_t>(std::time(nullptr));
  // Chunks first (see origin_gc.h): a name written after this listing is in the next one.
  KDN_ASSIGN_OR_RETURN(origin::ListPage chunks, origin.ListAll(kChunksPrefix, ""));
  KDN_ASSIGN_OR_RETURN(origin::ListPage names, origin.ListAll(std::string(kNsPrefix) + "/", ""));
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
    const int64_t age_s = obj.mtime_s > 0 ? now_s - obj.mtime_s : -1;
    const bool old_enough =
        options.grace.count() == 0 || (age_s >= 0 && age_s >= options.grace.count());
    if (!old_enough) {
      ++report.young;
      continue;
    }
    if (!options.dry_run) KDN_RETURN_IF_ERROR(origin.Delete(obj.key));
    ++report.deleted;
    report.deleted_bytes += obj.size;
    if (options.on_unnamed) options.on_unnamed(obj, age_s);
  }
  return report;
}

}  // namespace kdn::edge
