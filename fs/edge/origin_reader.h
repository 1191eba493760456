// The edge's read side (issue 13, docs/origin.md "The edge"): names that exist on the origin
// appear on this node, and their content is fetched on the first read.
//
// A directory's listing on the origin is read again when the last one is older than `ttl`
// (Refresh, called by lookups and readdir). A file known only from the origin becomes a
// *placeholder*: a regular file of the store without content whose `user.kdn.remote` attribute
// (hidden from users, who can neither read nor write it) holds the origin object's ETag and the
// namespace object itself; kdnfs shows the object's size and times for it (RemoteAttr).
//
// A read miss streams (docs/origin.md, "The edge", "Reading"): the first read (or open) of a
// placeholder starts one fetch of the chunk object into a staging file, in pieces of `piece_bytes`,
// by a pool of `fetch_threads` threads, in order; a reader whose range has not landed GETs the
// first missing piece of it itself and puts the rest of it first in the pool's queue, and then
// waits for the bytes (failing with EIO when no piece of the fetch has landed for `read_timeout`).
// A `.kv` object's header is fetched first and parsed (ParseKvHeader: every bound and its
// checksum); no byte of a block is served before that whole block has landed and matched its
// checksum, and padding is served only when it is zero. Any other content is served only once the
// whole object hashes to its id. SHA-256 is computed as the pieces land, in order (once every piece
// is there, reads wait for it, so that a small object is never served unchecked), and the same
// pass sums each `.kv` block it goes through from the bytes it has just hashed (a reader of a block
// the pass can reach waits for it rather than read the block again); when the hash matches,
// the staging file is committed as any local content is (`.kv` content passes VerifyKv first), in
// the background: later reads and opens use the store's chunk (and passthrough). A mismatch, a
// refused block or header, or an unreachable origin fails the fetch: every reader gets EIO, a log
// line names the object, the staging file is removed, nothing is cached, and the next read starts a
// new fetch. Fetched content is evictable cache: its bytes are on the origin.
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
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
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
  // A reader waiting for bytes of a fetch gives up (EIO) when no piece of it has landed for this
  // long (kdnfs: -o origin_read_timeout).
  std::chrono::milliseconds read_timeout{5000};
  unsigned fetch_threads = 4;        // the pool that fetches pieces in order, for every fetch
  uint64_t piece_bytes = 8ull << 20;  // one ranged GET, streamed into the staging file
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
  std::atomic<uint64_t> fetches_running{0};     // fetches started and not yet committed or failed
  std::atomic<uint64_t> reads_before_commit{0};  // reads answered from a fetch still in progress
};

// What a read of a placeholder got: bytes served from a fetch in progress, or the committed
// content to read from the store instead (the fetch is done, or it was no placeholder).
struct MissRead {
  std::optional<InodeAttr> committed;
  size_t bytes = 0;
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
  // Stops the pool; fetches in progress are dropped with their staging files.
  ~OriginReader();

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
  // Reads [offset, offset + out.size()) of a placeholder: from its fetch (started here if none
  // is running) once those bytes have landed and are verified, or `committed` when the content
  // is in the store. EIO when the fetch fails or makes no progress for read_timeout.
  Result<MissRead> Read(Ino ino, uint64_t offset, std::span<std::byte> out);
  // Starts the fetch of a placeholder (an open: its reads are likely to follow); no wait.
  void Prefetch(Ino ino);
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
  // A directory's marker at `key`, decoded; nullopt when it is missing, empty or damaged (logged).
  std::optional<NsObject> ReadDirMarker(const std::string& key);
  // A marker object found in the listing of `dir` itself: a copy of the origin's directory takes
  // its mode and owner (chmod or chown on another node) when its ETag is new.
  void ApplyDirMarker(Ino dir, const origin::ObjectInfo& info);
  // Removes directory `name` (inode `ino`) in `dir`, a copy of an origin directory under which
  // the origin has nothing any more, with the copies inside it; names made on this node stay,
  // and so does every directory above them.
  void RemoveGoneDir(Ino dir, const std::string& name, Ino ino, int depth);

  // One fetch in progress (origin_reader.cc).
  struct InFlight;
  // The fetch of `ino`, started if needed; null with `*committed` set when it has content (or
  // is no placeholder).
  Result<std::shared_ptr<InFlight>> Join(Ino ino, InodeAttr* committed);
  void PoolThread();
  bool TakeWork(std::shared_ptr<InFlight>* fetch, size_t* piece, bool* commit);
  void WakePool();
  // GETs one piece into the staging file as it arrives, and moves the hash along.
  void LandPiece(const std::shared_ptr<InFlight>& f, size_t piece);
  void ParseHeaderIfReady(InFlight& f);  // with f.mu held
  // Feeds [at, at + bytes.size()) of the object to its SHA-256 and, with `sum_blocks`, to the
  // xxh3 of the `.kv` blocks it holds (marking those that match; `refused` says which did not).
  // False when the hash could not be computed.
  static bool HashSpan(InFlight& f, uint64_t at, std::span<const uint8_t> bytes, bool sum_blocks,
                       std::string* refused);
  // Hashes (and sums) the pieces that have landed in order, from the staging file.
  void AdvanceHash(const std::shared_ptr<InFlight>& f);
  void CommitFetched(const std::shared_ptr<InFlight>& f);
  void Fail(const std::shared_ptr<InFlight>& f, const std::string& why);
  void Forget(const std::shared_ptr<InFlight>& f);
  // Waits (f->mu held through `lock`) until `ready`, the fetch is committed, or it fails (EIO);
  // fetches the first missing piece of [from, to) itself and queues the rest first. EIO when no
  // piece has landed for read_timeout while bytes are missing.
  Status Await(std::unique_lock<std::mutex>& lock, const std::shared_ptr<InFlight>& f,
               uint64_t from, uint64_t to, const std::function<bool()>& ready);
  Result<MissRead> Serve(const std::shared_ptr<InFlight>& f, uint64_t offset,
                         std::span<std::byte> out);
  // Bytes of a served range that lie in no block and not in the header must be zero.
  static bool PaddingIsZero(const InFlight& f, uint64_t offset, std::span<const std::byte> bytes);

  Store& store_;
  std::shared_ptr<origin::Origin> origin_;
  const ReaderOptions options_;
  ForgetFn forget_;
  HoldFn hold_;
  ReaderCounters counters_;

  std::mutex mu_;
  std::unordered_map<Ino, std::chrono::steady_clock::time_point> listed_;  // last listing
  std::unordered_map<Ino, std::optional<Remote>> remote_;                  // what LoadRemote found
  std::mutex refresh_mu_;  // one listing at a time

  // Fetches by inode: one per inode at a time. start_mu_ orders a fetch's start (checking that
  // the inode is still a placeholder) against the end of the previous one.
  std::mutex start_mu_;
  std::unordered_map<Ino, std::shared_ptr<InFlight>> fetches_;  // under mu_

  std::mutex pool_mu_;  // before any InFlight::mu
  std::condition_variable pool_cv_;
  std::vector<std::shared_ptr<InFlight>> active_;  // with pieces nobody has taken yet
  std::vector<std::shared_ptr<InFlight>> to_commit_;
  size_t next_active_ = 0;  // round robin over active_
  bool stop_ = false;
  std::vector<std::thread> pool_;
};

}  // namespace kdn::edge

#endif  // KDN_FS_EDGE_ORIGIN_READER_H_
