// The chunk files: one regular file per chunk, chunks/<first two hex digits>/<hex id>, holding
// exactly the chunk's bytes (offset N of the chunk at offset N of the file; all-zero 4 KiB blocks of
// plain content left as holes). A chunk file is written in staging/ under a temporary name, made
// durable, renamed into place and its directory synced, all before the transaction that publishes
// it; it is unlinked after the transaction that drops it. So every committed row has its file, and
// a file no committed row names (a crash between the two steps) is a stray that Open removes.
// Unlinking leaves open descriptors readable: a read in progress never sees a chunk vanish.
#ifndef KDN_STORE_CHUNK_FILES_H_
#define KDN_STORE_CHUNK_FILES_H_

#include <functional>
#include <string>
#include <vector>

#include "kdn/status.h"
#include "kdn/store.h"
#include "store/format/file_io.h"

namespace kdn::store {

// Mode of every file and directory the store creates: only its owner may read it.
inline constexpr mode_t kFileMode = 0600;
inline constexpr mode_t kDirMode = 0700;

class ChunkFiles {
 public:
  // `dir` is the store's directory; chunks/ is created when missing.
  Status Open(const std::string& dir, bool sync_full);

  std::string PathOf(const ChunkId& id) const;
  // A new temporary file in staging/ (O_RDWR|O_DIRECT, mode 0600) and its path.
  Result<UniqueFd> CreateTemp(std::string* path);
  // Renames a written, synced temporary file to the chunk's name (replacing a file of the same
  // content, if any) and collects the directory to sync in `dirs_to_sync`.
  Status Install(const std::string& temp_path, const ChunkId& id,
                 std::vector<std::string>* dirs_to_sync);
  // fsync of each directory (once each). Skipped without syncs.
  Status SyncDirs(const std::vector<std::string>& dirs);
  // Unlinks a chunk's file (missing is fine).
  void Remove(const ChunkId& id);
  // Read-only descriptor of a chunk file: O_DIRECT for the store's reads, or plain for others.
  Result<UniqueFd> OpenRead(const ChunkId& id, bool direct) const;
  // Every chunk file (and anything else found under chunks/): `visit` gets the id when the name is
  // a well-formed id in its right directory, else nullopt, and the path.
  Status List(const std::function<Status(const std::optional<ChunkId>&, const std::string&)>&
                  visit) const;

 private:
  std::string dir_;
  std::string chunks_;
  bool sync_full_ = true;
};

}  // namespace kdn::store

#endif  // KDN_STORE_CHUNK_FILES_H_
