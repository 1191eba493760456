#include "fs/kdnfs/service_notify.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

namespace kdn::fs {

Status NotifyServiceManager(std::string_view state) {
  const char* path = std::getenv("NOTIFY_SOCKET");
  if (path == nullptr || path[0] == '\0') return Status::OK();
  const size_t len = std::strlen(path);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  // An abstract socket is named with a leading '@', sent as a leading NUL.
  if ((path[0] != '/' && path[0] != '@') || len >= sizeof(addr.sun_path)) {
    return Status::InvalidArgument("NOTIFY_SOCKET is not a unix socket path: " +
                                   std::string(path));
  }
  std::memcpy(addr.sun_path, path, len);
  if (path[0] == '@') addr.sun_path[0] = '\0';
  const socklen_t addr_len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + len);
  int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::FromErrno("socket for NOTIFY_SOCKET", errno);
  ssize_t sent = ::sendto(fd, state.data(), state.size(), MSG_NOSIGNAL,
                          reinterpret_cast<const sockaddr*>(&addr), addr_len);
  int err = errno;
  ::close(fd);
  if (sent != static_cast<ssize_t>(state.size())) {
    return Status::FromErrno("send to NOTIFY_SOCKET " + std::string(path), sent < 0 ? err : EIO);
  }
  return Status::OK();
}

}  // namespace kdn::fs
