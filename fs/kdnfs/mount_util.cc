#include "fs/kdnfs/mount_util.h"

#include <limits.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

extern char** environ;

namespace kdn::fs {
namespace {

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string Unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      int v = 0;
      bool octal = true;
      for (size_t k = 1; k <= 3; ++k) {
        if (s[i + k] < '0' || s[i + k] > '7') {
          octal = false;
          break;
        }
        v = v * 8 + (s[i + k] - '0');
      }
      if (octal) {
        out += static_cast<char>(v);
        i += 3;
        continue;
      }
    }
    out += s[i];
  }
  return out;
}

}  // namespace

std::vector<MountEntry> ReadMountTable(const std::string& path) {
  std::vector<MountEntry> table;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    MountEntry e;
    std::string parent, devno, root, point, word;
    if (!(fields >> e.mount_id >> parent >> devno >> root >> point)) continue;
    if (sscanf(devno.c_str(), "%u:%u", &e.major, &e.minor) != 2) continue;
    e.mount_point = Unescape(point);
    while (fields >> word && word != "-") {
    }
    fields >> e.fs_type >> e.source;
    e.source = Unescape(e.source);
    table.push_back(std::move(e));
  }
  return table;
}

Result<std::string> AbsoluteMountPoint(const std::string& path) {
  std::string p = path;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  size_t slash = p.rfind('/');
  std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : p.substr(0, slash));
  std::string base = slash == std::string::npos ? p : p.substr(slash + 1);
  char resolved[PATH_MAX];
  if (::realpath(dir.c_str(), resolved) == nullptr) {
    return Status::FromErrno("resolve " + dir, errno);
  }
  std::string out = resolved;
  if (base.empty() || base == ".") return out;
  if (base == "..") {
    if (::realpath(p.c_str(), resolved) == nullptr) return Status::FromErrno("resolve " + p, errno);
    return std::string(resolved);
  }
  if (out != "/") out += "/";
  return out + base;
}

std::optional<MountEntry> FindMount(const std::string& mount_point) {
  std::optional<MountEntry> found;
  for (auto& e : ReadMountTable()) {
    if (e.mount_point == mount_point) found = std::move(e);
  }
  return found;
}

Result<bool> ClearStaleMount(const std::string& mount_point) {
  // statfs always reaches the daemon (stat may be answered from attributes the kernel cached).
  // A dead daemon's connection answers ENOTCONN, or ECONNABORTED while the kernel is still
  // tearing down its io_uring queues (a request that reached a queue is aborted).
  // Any other error (EINTR, EIO while the dead daemon's io_uring queues are still being torn
  // down) says nothing yet: asked again for up to a second.
  struct statfs sf;
  for (int attempt = 0;; ++attempt) {
    if (::statfs(mount_point.c_str(), &sf) == 0) return false;  // a live daemon answers
    if (errno == ENOTCONN || errno == ECONNABORTED) break;
    if (attempt == 20) return false;
    ::usleep(50 * 1000);
  }
  if (::geteuid() == 0) {
    if (::umount2(mount_point.c_str(), MNT_DETACH) != 0) {
      return Status::FromErrno("detach stale mount " + mount_point, errno);
    }
    return true;
  }
  // Unprivileged: the setuid helper that mounted it may unmount it.
  const char* argv[] = {"fusermount3", "-u", "-z", "--", mount_point.c_str(), nullptr};
  pid_t pid;
  int err = posix_spawnp(&pid, "fusermount3", nullptr, nullptr, const_cast<char**>(argv), environ);
  if (err != 0) return Status::FromErrno("run fusermount3", err);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return Status::IOError("fusermount3 -u -z " + mount_point + " failed");
  }
  return true;
}

Status SetReadahead(unsigned major, unsigned minor, uint64_t bytes) {
  std::string path =
      "/sys/class/bdi/" + std::to_string(major) + ":" + std::to_string(minor) + "/read_ahead_kb";
  FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) return Status::FromErrno("open " + path, errno);
  int written = std::fprintf(f, "%llu\n", static_cast<unsigned long long>(bytes / 1024));
  int closed = std::fclose(f);
  if (written < 0 || closed != 0) return Status::FromErrno("write " + path, errno);
  return Status::OK();
}

Result<uint64_t> ParseSize(std::string_view text) {
  std::string s(text);
  if (s.empty()) return Status::InvalidArgument("empty size");
  char* end = nullptr;
  errno = 0;
  double value = std::strtod(s.c_str(), &end);
  if (end == s.c_str() || errno != 0 || !(value >= 0)) {
    return Status::InvalidArgument("bad size '" + s + "'");
  }
  std::string unit(end);
  if (unit.ends_with("iB"))
    unit.resize(unit.size() - 2);
  else if (unit.ends_with("B") && unit.size() > 1)
    unit.resize(unit.size() - 1);
  double scale = 1;
  if (unit.empty() || unit == "B")
    scale = 1;
  else if (unit == "K" || unit == "k")
    scale = 1024.0;
  else if (unit == "M" || unit == "m")
    scale = 1024.0 * 1024;
  else if (unit == "G" || unit == "g")
    scale = 1024.0 * 1024 * 1024;
  else if (unit == "T" || unit == "t")
    scale = 1024.0 * 1024 * 1024 * 1024;
  else
    return Status::InvalidArgument("bad size unit in '" + s + "' (use K, M, G or T)");
  double bytes = std::floor(value * scale);
  if (bytes > 1.8e19) return Status::InvalidArgument("size too large: '" + s + "'");
  return static_cast<uint64_t>(bytes);
}

}  // namespace kdn::fs
