#include "store/private_modes.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <cstdio>
#include <filesystem>

#include "store/chunk_files.h"

namespace kdn::store {
namespace {

std::string Octal(mode_t mode) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "%04o", static_cast<unsigned>(mode & 07777));
  return buf;
}

// Restricts one entry (no symlink followed). True when it was wider than allowed.
Result<bool> Restrict(const std::string& path, std::vector<std::string>* warnings, bool report) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return false;
    return Status::FromErrno("stat of " + path, errno);
  }
  if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode)) return false;  // not the store's
  const mode_t want = S_ISDIR(st.st_mode) ? kDirMode : kFileMode;
  if ((st.st_mode & 07777 & ~want) == 0) return false;
  if (::chmod(path.c_str(), st.st_mode & want) != 0) {
    return Status::FromErrno("restricting the mode of " + path, errno);
  }
  if (report) {
    warnings->push_back(path + " was mode " + Octal(st.st_mode) + ", now " +
                        Octal(st.st_mode & want) + ": only the store's owner may read it");
  }
  return true;
}

}  // namespace

Status RestrictModes(const std::string& dir, std::vector<std::string>* warnings) {
  KDN_RETURN_IF_ERROR(Restrict(dir, warnings, true).status());
  for (const char* name : {"meta.db", "meta.db-wal", "meta.db-shm", "meta.db-journal", "LOCK"}) {
    KDN_RETURN_IF_ERROR(Restrict(dir + "/" + name, warnings, true).status());
  }
  for (const char* name : {"staging", "chunks"}) {
    const std::string sub = dir + "/" + name;
    KDN_ASSIGN_OR_RETURN(bool wide, Restrict(sub, warnings, true));
    std::error_code ec;
    std::filesystem::recursive_directory_iterator it(sub, ec), end;
    if (ec) continue;  // missing: created later with the right mode
    uint64_t fixed = 0;
    for (; it != end; it.increment(ec)) {
      if (ec) break;
      // Only the subdirectories of chunks/ are checked when the directory itself was sound:
      // their files are created 0600 and only a chmod could widen them.
      const bool is_dir = it->is_directory(ec) && !it->is_symlink(ec);
      if (!wide && !is_dir) continue;
      KDN_ASSIGN_OR_RETURN(bool w, Restrict(it->path().string(), warnings, false));
      if (w) {
        ++fixed;
        if (is_dir) wide = true;
      }
    }
    if (fixed > 0) {
      warnings->push_back(std::to_string(fixed) + " entries under " + sub +
                          " were readable by others: now only by the store's owner");
    }
  }
  return Status::OK();
}

}  // namespace kdn::store
