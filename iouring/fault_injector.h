// Fault injection for tests: process-wide, applied by every engine to every operation.
//
// Disk failures: the Nth matching operation (and the next count-1) fails with a chosen errno.
// Power cuts: with volatile_writes, writes stay in memory until SyncData of their file, as in a
// drive's volatile cache, so a process killed before the sync loses exactly its unsynced writes;
// kill_at_write SIGKILLs the process just before a given write; drop_writes_after makes writes
// vanish while reporting success (a lying disk: what the store must detect, not survive).
//
// SQLite's own I/O is not intercepted (it is built to survive power cuts by itself).
// Set from code (SetFaultPlan) or from the environment: KDN_FAULT is read when the first engine
// is created, e.g. KDN_FAULT="volatile,kill_at_write=40" or
// "fail_at=3,fail_op=write,fail_errno=ENOSPC".
#ifndef KDN_IOURING_FAULT_INJECTOR_H_
#define KDN_IOURING_FAULT_INJECTOR_H_

#include <cstddef>
#include <cstdint>
#include <limits>
#include <string_view>

#include "kdn/logger.h"
#include "kdn/status.h"

namespace kdn::io {

enum class FaultOp : uint8_t { kAny = 0, kRead = 1, kWrite = 2, kSync = 3 };

inline constexpr uint64_t kFaultNever = std::numeric_limits<uint64_t>::max();

struct FaultPlan {
  // Operations matching fail_op are numbered from 1 (since the plan was set); numbers
  // fail_at .. fail_at + fail_count - 1 fail with fail_errno. 0 disables.
  uint64_t fail_at = 0;
  uint64_t fail_count = 1;
  FaultOp fail_op = FaultOp::kAny;
  int fail_errno = 5;  // EIO
  bool volatile_writes = false;
  uint64_t kill_at_write = 0;                // 1-based write number; 0 disables
  uint64_t drop_writes_after = kFaultNever;  // writes numbered above it are dropped
};

// Replaces the plan and restarts the numbering. ClearFaultPlan drops held writes.
void SetFaultPlan(const FaultPlan& plan);
void ClearFaultPlan();
// Parses KDN_FAULT's syntax: comma-separated `volatile`, `fail_at=N`, `fail_count=N`,
// `fail_op=any|read|write|sync`, `fail_errno=EIO|ENOSPC|N`, `kill_at_write=N`,
// `drop_writes_after=N`.
Result<FaultPlan> ParseFaultPlan(std::string_view text);
// Applies KDN_FAULT once per process (called by CreateIoEngine).
void ApplyFaultPlanFromEnvironment(Logger* logger);

// Counters since the plan was set (for tests).
struct FaultCounters {
  uint64_t reads = 0, writes = 0, syncs = 0, failed = 0, dropped = 0, held = 0;
};
FaultCounters GetFaultCounters();

namespace internal {
// What an engine does with one operation.
struct FaultDecision {
  enum class Action : uint8_t { kPass, kFail, kDrop, kHold };
  Action action = Action::kPass;
  int err = 0;
};
FaultDecision DecideFault(FaultOp op);
// Keeps a copy of a write until FlushHeldWrites(fd).
void HoldWrite(int fd, uint64_t offset, const std::byte* data, size_t len);
// Writes the held writes of `fd` to it, in order (before a sync).
Status FlushHeldWrites(int fd);
}  // namespace internal

}  // namespace kdn::io

#endif  // KDN_IOURING_FAULT_INJECTOR_H_
