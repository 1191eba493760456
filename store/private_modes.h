// A store only its owner can read: the directory and every directory in it 0700, every file 0600.
// New stores are created that way (store/chunk_files.h: kDirMode, kFileMode); a store found with
// wider modes (made by an older version, or chmod'ed) is fixed at open, and each fix is reported
// so that the caller can say so (Store::OpenWarnings).
#ifndef KDN_STORE_PRIVATE_MODES_H_
#define KDN_STORE_PRIVATE_MODES_H_

#include <string>
#include <vector>

#include "kdn/status.h"

namespace kdn::store {

// Restricts `dir` and the store's own entries in it (meta.db and its -wal/-shm/-journal, LOCK,
// staging/ and chunks/ with everything under them) to their owner. Symbolic links are never
// followed. The files under chunks/ and staging/ are only walked when one of those directories
// was found wider (the store never makes them wider itself), so a sound store costs a few stats.
Status RestrictModes(const std::string& dir, std::vector<std::string>* warnings);

}  // namespace kdn::store

#endif  // KDN_STORE_PRIVATE_MODES_H_
