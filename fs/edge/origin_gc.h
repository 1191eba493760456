// The origin's collector of unnamed chunks (docs/origin.md, "Garbage"). Chunk objects are
// immutable and shared by every name that has their content, so a delete or an overwrite on an
// edge only removes a namespace object; the chunk it named stays until no namespace object names
// it and it is older than a grace period. The grace protects uploads in flight: an edge puts the
// chunk first and its name only afterwards, so a young unnamed chunk is usually about to be named.
//
// The chunks are listed before the names, so a name written while the collector runs is seen
// whenever its chunk was listed. Any namespace object that cannot be read or decoded stops the
// collection before anything is deleted: a chunk must never go because its name could not be read.
#ifndef KDN_FS_EDGE_ORIGIN_GC_H_
#define KDN_FS_EDGE_ORIGIN_GC_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

#include "kdn/origin.h"
#include "kdn/status.h"

namespace kdn::edge {

struct GcOptions {
  // Unnamed chunks written less than this long ago stay. With a grace of 0 every unnamed chunk
  // goes, also one whose age the origin does not tell (otherwise such a chunk stays).
  std::chrono::seconds grace{3600};
  bool dry_run = false;  // find and report, delete nothing
  // Called for each chunk deleted (in a dry run: that would be), with its size and age.
  std::function<void(const origin::ObjectInfo& chunk, int64_t age_s)> on_unnamed;
};

struct GcReport {
  uint64_t names = 0;          // namespace objects read
  uint64_t chunks = 0;         // chunk objects listed
  uint64_t unnamed = 0;        // of those, named by no namespace object
  uint64_t young = 0;          // unnamed, but within the grace (kept)
  uint64_t deleted = 0;        // deleted (dry run: would be)
  uint64_t deleted_bytes = 0;  // their sizes
};

// One collection over the whole origin. Errors: the origin's (listing, reading a name, deleting),
// or Corruption naming a namespace object that does not decode (nothing is deleted then).
Result<GcReport> CollectUnnamedChunks(origin::Origin& origin, const GcOptions& options);

}  // namespace kdn::edge

#endif  // KDN_FS_EDGE_ORIGIN_GC_H_
