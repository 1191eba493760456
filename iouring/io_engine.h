// The I/O engine: batched reads and writes at queue depth, for O_DIRECT files.
//
// One engine is used by one thread at a time (it owns one io_uring). A caller queues operations
// with Submit (at most queue_depth() outstanding), starts them with Kick or Reap, and collects each
// completion with Reap; Run does all of that for a batch. Every operation's result is reported as
// it came back: bytes moved, or -errno; a short transfer is never hidden or silently retried.
//
// Two implementations behind the same interface: io_uring (registered buffers and files, one
// submission for a whole batch) and pread/pwrite, used when the kernel refuses io_uring
// (io_uring_disabled, seccomp) or when forced (IoEngineKind::kPsync, KDN_IO_ENGINE=psync).
// The product has no fault injection: tests wrap engines in a decorator of their own
// (tests/fault/) through EngineOptions::wrapper.
#ifndef KDN_IOURING_IO_ENGINE_H_
#define KDN_IOURING_IO_ENGINE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "kdn/logger.h"
#include "kdn/status.h"

namespace kdn::io {

enum class EngineKind : uint8_t {
  kAuto = 0,     // KDN_IO_ENGINE (psync | io_uring) if set, else io_uring when it works, else psync
  kIoUring = 1,  // io_uring or an error
  kPsync = 2,    // pread/pwrite
};
std::string_view EngineKindName(EngineKind kind);  // "auto", "io_uring", "psync"

struct IoOp {
  enum class Kind : uint8_t { kRead, kWrite };
  Kind kind = Kind::kRead;
  int fd = -1;
  uint64_t offset = 0;
  std::byte* buf = nullptr;
  uint32_t len = 0;
  // Index of the engine buffer that holds `buf` (buffer(i)), or -1 for caller memory. Lets the
  // io_uring engine use its registered buffers (no per-I/O page pinning).
  int32_t buf_index = -1;
  uint64_t tag = 0;    // caller's own data, untouched
  int64_t result = 0;  // set at completion: bytes moved (== len unless short) or -errno

  bool complete() const { return result == static_cast<int64_t>(len); }
};

class EngineWrapper;

struct EngineOptions {
  EngineKind kind = EngineKind::kAuto;
  uint32_t queue_depth = 32;
  // Engine-owned, 4 KiB-aligned buffers (registered with io_uring when the kernel allows).
  uint32_t buffer_count = 0;
  uint32_t buffer_bytes = 0;
  // Size of the table of registered files (RegisterFile).
  uint32_t max_files = 1024;
  // Where the engine says what it could not do as asked (a fallback to pread/pwrite). Null
  // discards.
  std::shared_ptr<Logger> logger;
  // Tests only: every engine made is handed to wrapper->Wrap (fault injection). Null: none.
  std::shared_ptr<EngineWrapper> wrapper;
};

class IoEngine {
 public:
  virtual ~IoEngine() = default;
  IoEngine(const IoEngine&) = delete;
  IoEngine& operator=(const IoEngine&) = delete;

  virtual EngineKind kind() const = 0;
  uint32_t queue_depth() const { return queue_depth_; }

  // Queues `op` (which must stay valid until Reap returns it). Fails when queue_depth() operations
  // are already outstanding.
  virtual Status Submit(IoOp* op) = 0;
  // Starts the queued operations without waiting.
  virtual Status Kick() = 0;
  // Waits for one outstanding operation and returns it with its result set.
  virtual Result<IoOp*> Reap() = 0;
  virtual size_t outstanding() const = 0;

  // Runs every op (queue_depth() at a time) and waits for all. OK when each moved exactly its
  // length; otherwise the first failure (by index) says which op, what and how many failed. ENOSPC
  // is kNoSpace. Every op's result is set either way.
  Status Run(std::span<IoOp> ops);

  // fdatasync(fd).
  virtual Status SyncData(int fd) = 0;

  // Registers `fd` so that its operations skip the per-I/O file lookup. The descriptor must stay
  // open until UnregisterFile or the engine's destruction. Harmless no-op for psync.
  virtual Status RegisterFile(int fd) = 0;
  virtual Status UnregisterFile(int fd) = 0;

  // Engine-owned buffers (EngineOptions::buffer_count of buffer_bytes each).
  uint32_t buffer_count() const { return buffer_count_; }
  uint32_t buffer_bytes() const { return buffer_bytes_; }
  std::byte* buffer(uint32_t i) const { return buffers_ + size_t{i} * buffer_bytes_; }

 protected:
  IoEngine(uint32_t queue_depth, std::byte* buffers, uint32_t buffer_count, uint32_t buffer_bytes)
      : queue_depth_(queue_depth),
        buffers_(buffers),
        buffer_count_(buffer_count),
        buffer_bytes_(buffer_bytes) {}

 private:
  uint32_t queue_depth_;
  std::byte* buffers_;
  uint32_t buffer_count_;
  uint32_t buffer_bytes_;
};

// Decorates engines (CreateIoEngine hands it each one it makes): how tests inject faults.
class EngineWrapper {
 public:
  virtual ~EngineWrapper() = default;
  virtual std::unique_ptr<IoEngine> Wrap(std::unique_ptr<IoEngine> engine) = 0;
};

// Which engine kAuto gives in this process (io_uring is probed once; a fallback is logged to
// `logger`, once per process). Explicit kinds are returned as they are.
EngineKind ResolveEngineKind(EngineKind requested, Logger* logger = nullptr);

// Creates an engine. kAuto falls back to psync when io_uring is refused; kIoUring fails instead.
Result<std::unique_ptr<IoEngine>> CreateIoEngine(const EngineOptions& options);

// "read fd 7 offset 4096 length 8192" for messages.
std::string DescribeOp(const IoOp& op);

}  // namespace kdn::io

#endif  // KDN_IOURING_IO_ENGINE_H_
