// Fault injection for tests: an I/O engine decorator that only test builds link.
//
// The product's I/O engine has no fault code: a store under test gets this decorator through
// StoreOptions::io_wrapper (an engine under test through io::EngineOptions::wrapper), and it then
// applies the process-wide FaultPlan to every operation of every engine it wraps.
//
// Disk failures: the Nth matching operation (and the next count-1) fails with a chosen errno.
// Power cuts: with volatile_writes, writes stay in memory until SyncData of their file, as in a
// drive's volatile cache, so a process killed before the sync loses exactly its unsynced writes;
// kill_at_write SIGKILLs the process just before a given write; drop_writes_after makes writes
// vanish while reporting success (a lying disk: what the store must detect, not survive).
//
// SQLite's own I/O is not intercepted (it is built to survive power cuts by itself).
// Plans are set from code (SetFaultPlan) or parsed from text (ParseFaultPlan; the crash test's
// child reads it from its KDN_FAULT variable), e.g. "volatile,kill_at_write=40" or
// "fail_at=3,fail_op=write,fail_errno=ENOSPC".
#ifndef KDN_TESTS_FAULT_FAULT_INJECTOR_H_
#define KDN_TESTS_FAULT_FAULT_INJECTOR_H_

#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <string_view>

#include "iouring/io_engine.h"
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
// Parses the text form: comma-separated `volatile`, `fail_at=N`, `fail_count=N`,
// `fail_op=any|read|write|sync`, `fail_errno=EIO|ENOSPC|N`, `kill_at_write=N`,
// `drop_writes_after=N`.
Result<FaultPlan> ParseFaultPlan(std::string_view text);

// Counters since the plan was set.
struct FaultCounters {
  uint64_t reads = 0, writes = 0, syncs = 0, failed = 0, dropped = 0, held = 0;
};
FaultCounters GetFaultCounters();

// The decorator: wraps every engine made with it in one that applies the current plan (and does
// nothing while no plan is set).
std::shared_ptr<EngineWrapper> FaultInjection();

}  // namespace kdn::io

#endif  // KDN_TESTS_FAULT_FAULT_INJECTOR_H_
