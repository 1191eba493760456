// Readiness for a service manager, by systemd's notification protocol (sd_notify(3)): a datagram
// "READY=1" to the unix socket named in $NOTIFY_SOCKET. The protocol is one sendto(2), so kdnfs
// speaks it itself rather than linking libsystemd: kdnfs@.service is `Type=notify`, and the unit
// counts as started once the filesystem is mounted, not merely once the process runs. Without
// $NOTIFY_SOCKET (not started by systemd) nothing is sent.
#ifndef KDN_FS_KDNFS_SERVICE_NOTIFY_H_
#define KDN_FS_KDNFS_SERVICE_NOTIFY_H_

#include <string_view>

#include "kdn/status.h"

namespace kdn::fs {

// Sends `state` ("READY=1", "STOPPING=1", lines joined by '\n') to $NOTIFY_SOCKET. OK when sent
// or when there is no socket to send to.
Status NotifyServiceManager(std::string_view state);

}  // namespace kdn::fs

#endif  // KDN_FS_KDNFS_SERVICE_NOTIFY_H_
