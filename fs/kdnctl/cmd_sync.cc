// kdnctl sync MNT: waits until everything written to a mounted kdnfs is durable and, on an edge
// node, uploaded to the origin. It is an fsync of the mountpoint: kdnfs answers that once its
// outbox holds nothing older than the call (fs/edge/uploader.h), or fails it with EIO after
// -o origin_sync_timeout; the reason is the origin_last_error line of MNT/.kdn/stats.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <string_view>

#include "fs/kdnctl/commands.h"

namespace kdnctl {
namespace {

constexpr char kSyncUsageText[] =
    "Usage: kdnctl sync MOUNTPOINT\n"
    "Waits until every change made on a mounted kdnfs before the call is durable and, when kdnfs\n"
    "is an edge of an origin (-o origin=URL), uploaded to it. Exits 0 when done, 1 when kdnfs\n"
    "reports a failure (the origin unreachable past -o origin_sync_timeout: the reason is\n"
    "printed), 2 on bad arguments.\n";

// The origin's last error as kdnfs reports it in /.kdn/stats ("" when none or no origin).
std::string LastOriginError(const std::string& mountpoint) {
  std::ifstream stats(mountpoint + "/.kdn/stats");
  std::string line;
  constexpr std::string_view kKey = "origin_last_error ";
  while (std::getline(stats, line)) {
    if (line.starts_with(kKey)) {
      std::string value = line.substr(kKey.size());
      return value == "none" ? std::string() : value;
    }
  }
  return {};
}

}  // namespace

int RunSync(int argc, char** argv) {
  std::string mountpoint;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(kSyncUsageText, stdout);
      return kExitOk;
    }
    if ((!arg.empty() && arg[0] == '-') || !mountpoint.empty()) {
      std::fprintf(stderr, "kdnctl sync: expected one MOUNTPOINT (see kdnctl sync --help)\n");
      return kExitUsage;
    }
    mountpoint = arg;
  }
  if (mountpoint.empty()) {
    std::fprintf(stderr, "kdnctl sync: expected one MOUNTPOINT (see kdnctl sync --help)\n");
    return kExitUsage;
  }
  int fd = ::open(mountpoint.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    std::fprintf(stderr, "kdnctl sync: %s: %s\n", mountpoint.c_str(), std::strerror(errno));
    return kExitBadInput;
  }
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) {
    std::string why = LastOriginError(mountpoint);
    std::fprintf(
        stderr, "kdnctl sync: %s: %s%s%s\n", mountpoint.c_str(), std::strerror(err),
        why.empty() ? "" : ": uploads to the origin are not done; last error: ", why.c_str());
    return kExitBadInput;
  }
  return kExitOk;
}

}  // namespace kdnctl
