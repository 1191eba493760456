// The origin's collector of unnamed chunks (docs/origin.md, "Garbage"). Chunk objects are
// immutable and shared by every name that has their content, so a delete or an overwrite on an
// edge only removes a namespace object; the chunk it named stays until no namespace object names
// it and it is older than a grace period. The grace protects uploads in flight: an edge puts the
// chunk first and its name only afterwards, so a young unnamed chunk is usually about to be named.
//
// An edge that names a chunk it finds on the origin (it does not upload it again) first refreshes
// the chunk's write time (Origin::Touch) when that is older than kChunkRefreshAge, so a chunk is
// never named while older than that. The collector lists the chunks, then the names, then, for
// each unnamed chunk old enough, HEADs it again and deletes it only if it is still older than the
// grace: a chunk an edge refreshed after the listing (to name it) stays. With a safe grace (at
// least kMinSafeGcGrace) it stops deleting once the grace less the refresh age and a minute has
// passed since it listed the names: a chunk refreshed for a name written after that listing could
// be old enough again by then (the next run collects the rest). What is left open is the time
// between one HEAD and its DELETE (milliseconds): docs/origin.md, "Garbage".
//
// Any namespace object that cannot be read or decoded stops the collection before anything is
// deleted: a chunk must never go because its name could not be read.
#ifndef KDN_FS_EDGE_ORIGIN_GC_H_
#define KDN_FS_EDGE_ORIGIN_GC_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

#include "kdn/origin.h"
#include "kdn/status.h"

namespace kdn::edge {

// An edge names an existing chunk object without refreshing it only while it is younger than this
// (by the origin's clock against the edge's: clocks must agree to well within it).
inline constexpr std::chrono::seconds kChunkRefreshAge{600};
// The smallest grace that protects a chunk being named: at least twice the refresh age, so that
// the collector has a while (grace - refresh age - kNamePutSlack) to delete in after it listed
// the names. Smaller ones give no such guarantee and are for tests (kdnctl --force).
inline constexpr std::chrono::seconds kMinSafeGcGrace = 2 * kChunkRefreshAge;
// How long an edge may take, after it checked its chunk's age, to write the name (an S3 put
// retries for up to 20 s by default).
inline constexpr std::chrono::seconds kNamePutSlack{60};

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
  uint64_t refreshed = 0;      // of the old ones, refreshed by an edge since the listing (kept)
  uint64_t deferred = 0;       // old ones left for the next run: the time to delete in was over
  uint64_t deleted = 0;        // deleted (dry run: would be)
  uint64_t deleted_bytes = 0;  // their sizes
};

// One collection over the whole origin. Errors: the origin's (listing, reading a name, deleting),
// or Corruption naming a namespace object that does not decode (nothing is deleted then).
Result<GcReport> CollectUnnamedChunks(origin::Origin& origin, const GcOptions& options);

}  // namespace kdn::edge

#endif  // KDN_FS_EDGE_ORIGIN_GC_H_
