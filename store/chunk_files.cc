#include "store/chunk_files.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <random>
#include <set>

namespace kdn::store {
namespace {

Status MakeDir(const std::string& path) {
  if (::mkdir(path.c_str(), kDirMode) != 0 && errno != EEXIST) {
    return Status::FromErrno("creating " + path, errno);
  }
  return Status::OK();
}

Status SyncDir(const std::string& path) {
  UniqueFd fd = OpenFd(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (!fd.valid()) return Status::FromErrno("opening " + path, errno);
  if (::fsync(fd.get()) != 0) return Status::FromErrno("syncing " + path, errno);
  return Status::OK();
}

}  // namespace

Status ChunkFiles::Open(const std::string& dir, bool sync_full) {
  dir_ = dir;
  chunks_ = dir + "/chunks";
  sync_full_ = sync_full;
  struct stat st;
  if (::stat(chunks_.c_str(), &st) == 0) return Status::OK();
  KDN_RETURN_IF_ERROR(MakeDir(chunks_));
  return sync_full_ ? SyncDir(dir_) : Status::OK();
}

std::string ChunkFiles::PathOf(const ChunkId& id) const {
  const std::string hex = id.ToHex();
  return chunks_ + "/" + hex.substr(0, 2) + "/" + hex;
}

Result<UniqueFd> ChunkFiles::CreateTemp(std::string* path) {
  static thread_local std::mt19937_64 rng(std::random_device{}());
  char name[48];
  std::snprintf(name, sizeof(name), "/staging/chunk-%016llx.tmp",
                static_cast<unsigned long long>(rng()));
  *path = dir_ + name;
  UniqueFd fd =
      OpenFd(path->c_str(), O_RDWR | O_CREAT | O_EXCL | O_DIRECT | O_CLOEXEC | O_NOFOLLOW,
             kFileMode);
  if (!fd.valid()) return Status::FromErrno("creating " + *path, errno);
  return fd;
}

Status ChunkFiles::Install(const std::string& temp_path, const ChunkId& id,
                           std::vector<std::string>* dirs_to_sync) {
  const std::string hex = id.ToHex();
  const std::string sub = chunks_ + "/" + hex.substr(0, 2);
  const std::string target = sub + "/" + hex;
  if (::rename(temp_path.c_str(), target.c_str()) != 0) {
    if (errno != ENOENT) return Status::FromErrno("renaming " + temp_path + " to " + target, errno);
    // The first chunk of its directory: the new directory's own entry must be durable too.
    KDN_RETURN_IF_ERROR(MakeDir(sub));
    dirs_to_sync->push_back(chunks_);
    if (::rename(temp_path.c_str(), target.c_str()) != 0) {
      return Status::FromErrno("renaming " + temp_path + " to " + target, errno);
    }
  }
  dirs_to_sync->push_back(sub);
  return Status::OK();
}

Status ChunkFiles::SyncDirs(const std::vector<std::string>& dirs) {
  if (!sync_full_) return Status::OK();
  std::set<std::string> unique(dirs.begin(), dirs.end());
  // Subdirectories first is not needed: each fsync makes that directory's entries durable.
  for (const std::string& d : unique) KDN_RETURN_IF_ERROR(SyncDir(d));
  return Status::OK();
}

void ChunkFiles::Remove(const ChunkId& id) {
  (void)::unlink(PathOf(id).c_str());
}

Result<UniqueFd> ChunkFiles::OpenRead(const ChunkId& id, bool direct) const {
  const std::string path = PathOf(id);
  UniqueFd fd = OpenFd(path.c_str(),
                       O_RDONLY | O_CLOEXEC | O_NOFOLLOW | (direct ? O_DIRECT : 0));
  if (!fd.valid()) return Status::FromErrno("opening chunk file " + path, errno);
  return fd;
}

Status ChunkFiles::List(
    const std::function<Status(const std::optional<ChunkId>&, const std::string&)>& visit) const {
  DIR* top = ::opendir(chunks_.c_str());
  if (top == nullptr) return Status::FromErrno("listing " + chunks_, errno);
  std::vector<std::string> subs;
  while (dirent* e = ::readdir(top)) {
    std::string name = e->d_name;
    if (name != "." && name != "..") subs.push_back(name);
  }
  ::closedir(top);
  for (const std::string& sub : subs) {
    const std::string sub_path = chunks_ + "/" + sub;
    DIR* d = ::opendir(sub_path.c_str());
    if (d == nullptr) {
      // Not a directory: something that does not belong here.
      KDN_RETURN_IF_ERROR(visit(std::nullopt, sub_path));
      continue;
    }
    std::vector<std::string> names;
    while (dirent* e = ::readdir(d)) {
      std::string name = e->d_name;
      if (name != "." && name != "..") names.push_back(name);
    }
    ::closedir(d);
    for (const std::string& name : names) {
      std::optional<ChunkId> id;
      Result<ChunkId> parsed = ChunkId::FromHex(name);
      if (parsed.ok() && parsed->ToHex() == name && name.substr(0, 2) == sub) id = *parsed;
      KDN_RETURN_IF_ERROR(visit(id, sub_path + "/" + name));
    }
  }
  return Status::OK();
}

}  // namespace kdn::store
