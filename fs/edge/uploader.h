// The edge's write side (issue 13, docs/origin.md): every local change that the origin must learn
// is an outbox note in the store (Store::ReadOutbox), written in the transaction of the change
// itself, so that a crash never loses one. The Uploader follows the outbox: for each note, in
// order, it puts the chunk object (unless a HEAD says the origin has it; one older than
// kChunkRefreshAge is then refreshed, Origin::Touch, so that the collector of unnamed chunks
// does not delete it while it gets its name: fs/edge/origin_gc.h), then writes or deletes
// namespace objects, and removes the note. A failed note stays and is retried, with exponential
// backoff and jitter, until it succeeds; the notes behind it wait (the origin must see changes in
// the order they were made: a name never before its chunk, a rename never before the file).
// Chunks of the next notes are uploaded `threads` at a time ahead of their turn.
//
// A note names the chunk it needs, so the store never evicts it before it is on the origin; once
// a file's content is uploaded, the file becomes evictable (Store::SetEvictable): cache.
#ifndef KDN_FS_EDGE_UPLOADER_H_
#define KDN_FS_EDGE_UPLOADER_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include "kdn/logger.h"
#include "kdn/origin.h"
#include "kdn/status.h"
#include "kdn/store.h"

namespace kdn::edge {

struct UploaderOptions {
  unsigned threads = 4;                         // chunk uploads at once
  std::chrono::milliseconds backoff_base{200};  // after a failed note; doubles, full jitter
  std::chrono::milliseconds backoff_max{5000};
  std::chrono::milliseconds sync_timeout{30000};  // WaitUploaded's limit
  std::shared_ptr<Logger> log;
};

struct UploaderCounters {
  std::atomic<uint64_t> chunk_uploads{0};  // chunk objects put
  std::atomic<uint64_t> chunk_present{0};  // chunk objects the origin had already (HEAD)
  std::atomic<uint64_t> chunk_refreshes{0};  // of those, old ones refreshed (Origin::Touch)
  std::atomic<uint64_t> upload_bytes{0};   // bytes of chunk and namespace objects put
  std::atomic<uint64_t> ns_puts{0};        // namespace objects written
  std::atomic<uint64_t> ns_deletes{0};     // namespace objects deleted
  std::atomic<uint64_t> notes_done{0};
  std::atomic<uint64_t> errors{0};  // failed tries (each one logged)
};

// The note kinds, as written into the outbox by the filesystem.
std::string PutNote(Ino ino, std::string_view path);  // content of `ino` committed at path
std::string DeleteNote(std::string_view path);        // a name removed
std::string RenameNote(std::string_view from, std::string_view to);  // a name moved
std::string ExchangeNote(std::string_view a, std::string_view b);    // two names swapped
std::string MetadataNote(Ino ino, std::string_view path);  // mode, owner, mtime, xattrs, a link
std::string MakeDirNote(std::string_view path);            // a directory made (its marker)
std::string RemoveDirNote(std::string_view path);          // a directory removed
// Whether a path is published at all: no component the origin reserves (`.kdn-tmp*`, the
// directory marker's name).
bool Publishable(std::string_view path);

class Uploader {
 public:
  Uploader(Store& store, std::shared_ptr<origin::Origin> origin, UploaderOptions options);
  ~Uploader();  // stops; notes not handled stay in the outbox for the next start
  Uploader(const Uploader&) = delete;
  Uploader& operator=(const Uploader&) = delete;

  // A note was written: look at the outbox now rather than at the next poll.
  void Kick();
  // Returns once every note written before the call is handled; IOError (with the origin's last
  // error and how many notes wait) when that takes longer than sync_timeout.
  Status WaitUploaded();
  // "pending" when a note still needs the file's chunk uploaded, else "uploaded" (after an
  // origin's fetch or an upload), "local" for an empty file.
  Result<std::string> UploadState(const InodeAttr& attr);

  const UploaderCounters& counters() const { return counters_; }
  std::string last_error() const;
  const origin::Origin& origin() const { return *origin_; }

 private:
  void Loop();
  // Handles a batch of notes from the oldest; returns the first failure (the rest wait).
  Status RunBatch();
  // Whether the origin has the chunk, younger than kChunkRefreshAge (refreshing it if it is
  // older); false: it must be put (absent, or too large to refresh in place).
  Result<bool> FreshOnOrigin(const ChunkId& id);
  Status EnsureChunk(const ChunkId& id);
  Status Handle(const OutboxNote& note);
  Status Publish(std::string_view path, const InodeAttr& attr);
  // Publishes the file under every name it has now (a file with hard links has several).
  Status PublishAllNames(const InodeAttr& attr);
  // Directory `attr`'s marker at `path`, with its mode and owner.
  Status PutDirMarker(std::string_view path, const InodeAttr& attr);
  // The markers of directory `dir` (at `path`) and of every directory under it.
  Status PutDirMarkers(std::string_view path, Ino dir, int depth);
  Status MoveTree(std::string_view from, std::string_view to);
  Result<InodeAttr> Resolve(std::string_view path);
  void NoteError(const Status& s);
  bool KnownUploaded(const ChunkId& id);
  // The origin has the chunk, written or refreshed `age` ago (by the origin's clock).
  void MarkUploaded(const ChunkId& id, std::chrono::seconds age = std::chrono::seconds(0));

  Store& store_;
  std::shared_ptr<origin::Origin> origin_;
  const UploaderOptions options_;
  UploaderCounters counters_;

  mutable std::mutex mu_;
  std::condition_variable cv_;       // the loop's sleep: kicks and stop
  std::condition_variable done_cv_;  // WaitUploaded: a note was handled or failed
  bool stop_ = false;
  bool kicked_ = true;   // notes left by an earlier run are handled at once
  bool urgent_ = false;  // a sync waits: cut a backoff short
  std::string last_error_;
  // Chunks the origin has, each until it may be older than kChunkRefreshAge: after that it is
  // HEADed (and refreshed) again before a name for it is written. Bounded.
  std::map<ChunkId, std::chrono::steady_clock::time_point> uploaded_;
  std::thread thread_;
};

}  // namespace kdn::edge

#endif  // KDN_FS_EDGE_UPLOADER_H_
