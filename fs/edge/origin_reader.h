// The edge's read side (issue 13, docs/origin.md "The edge"): names that exist on the origin
// appear on this node, and their content is fetched on the first read.
//
// A directory's listing on the origin is read again when the last one is older than `ttl`
// (Refresh, called by lookups and readdir). A file known only from the origin becomes a
// *placeholder*: a regular file of the store without content whose `user.kdn.remote` attribute
// (hidden from users, who can neither read nor write it) holds the origin object's ETag and the
// namespace object itself; kdnfs shows the object's size and times for it (RemoteAttr). The first
// read fetches the chunk object into a staging file, checks its SHA-256 against the content id,
// and commits it as any local content is committed (`.kv` content passes VerifyKv first), so a
// corrupt or overwritten object is refused and never cached. Fetched content is evictable cache:
// its bytes are on the origin.
//
// Files that came from the origin follow it: when a later listing shows another object under the
// name (ETag changed) it is read, and the file becomes a placeholder of the new content; when the
// name is gone from the origin, it goes here too. Files written on this node are the origin's
// source, not its copy: a listing never changes them.
//
// Origin down: a listing that fails leaves the local view as it is (logged, counted; tried again
// after the TTL); a fetch fails with EIO within the origin's retry budget, logged and counted.
#ifndef KDN_FS_EDGE_ORIGIN_READER_H_
#define KDN_FS_EDGE_ORIGIN_READER_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "fs/edge/ns_object.h"
#include "kdn/logger.h"
#include "kdn/origin.h"
#include "kdn/status.h"
#include "kdn/store.h"

namespace kdn::edge {

struct ReaderOptions {
  std::chrono::milliseconds ttl{1000};
  std::shared_ptr<Logger> log;
};

struct ReaderCounters {
  std::atomic<uint64_t> listings{0};
  std::atomic<uint64_t> listing_errors{0};
  std::atomic<uint64_t> names_added{0};    // placeholders made
  std::atomic<uint64_t> names_changed{0};  // files that became placeholders of newer content
  std::atomic<uint64_t> names_removed{0};  // files gone from the origin
  std::atomic<uint64_t> fetches{0};        // chunk objects fetched (read misses)
  std::atomic<uint64_t> fetch_bytes{0};
  std::atomic<uint64_t> fetch_errors{0};    // unreachable, or refused (hash, `.kv` checks)
  std::atomic<uint64_t> fetch_ns_total{0};  // for the mean fetch latency
};

class OriginReader {
 public:
  // `forget(parent, name, ino)`: the kernel must forget a name and what it cached of its inode.
  using ForgetFn = std::function<void(Ino parent, const std::string& name, Ino ino)>;
  // `hold(ino)`: called before a name is removed, so that an inode the kernel still holds stays
  // readable (kdnfs keeps it open in the store).
  using HoldFn = std::function<void(Ino ino)>;
  OriginReader(Store& store, std::shared_ptr<origin::Origin> origin, ReaderOptions options,
               ForgetFn forget, HoldFn hold);

  // Brings directory `dir` in line with the origin's listing if the last one is older than the
  // TTL. Errors are logged and counted here; the caller goes on with the local view.
  void Refresh(Ino dir);
  // The object a placeholder stands for (nullopt for any other inode).
  std::optional<NsObject> RemoteOf(const InodeAttr& attr);
  // `attr` with the size and times of the object it stands for, if it is a placeholder.
  void Overlay(InodeAttr& attr);
  // Fetches a placeholder's content and commits it; returns the inode's attributes afterwards
  // (unchanged when it was no placeholder). EIO on any failure, logged and counted.
  Result<InodeAttr> Fetch(Ino ino);
  // The file's content changed locally: it is no copy of an origin object any more.
  void Detach(Ino ino);
  // Names in `dir` went behind the listing's back (evicted): list it again at the next lookup.
  void MarkStale(Ino dir);

  const ReaderCounters& counters() const { return counters_; }

 private:
  struct Remote {
    std::string etag;
    NsObject object;
  };
  Result<std::optional<Remote>> LoadRemote(Ino ino);
  Status ApplyObject(Ino dir, const std::string& name, const origin::ObjectInfo& info,
                     const std::optional<InodeAttr>& local);
  Result<std::string> GetSmall(const std::string& key);
  // Removes directory `name` (inode `ino`) in `dir`, a copy of an origin directory under which
  // the origin has nothing any more, with the copies inside it; names made on this node stay,
  // and so does every directory above them.
  void RemoveGoneDir(Ino dir, const std::string& name, Ino ino, int depth);
  std::shared_ptr<std::mutex> FetchLock(Ino ino);

  Store& store_;
  std::shared_ptr<origin::Origin> origin_;
  const ReaderOptions options_;
  ForgetFn forget_;
  HoldFn hold_;
  ReaderCounters counters_;

  std::mutex mu_;
  std::unordered_map<Ino, std::chrono::steady_clock::time_point> listed_;  // last listing
  std::unordered_map<Ino, std::optional<Remote>> remote_;                  // what LoadRemote found
  std::map<Ino, std::weak_ptr<std::mutex>> fetching_;  // one fetch per inode at a time
  std::mutex refresh_mu_;                              // one listing at a time
};

}  // namespace kdn::edge

#endif  // KDN_FS_EDGE_ORIGIN_READER_H_
