#include "iouring/io_engine.h"

#include <liburing.h>

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

#include "iouring/engines.h"

namespace kdn::io {

std::string_view EngineKindName(EngineKind kind) {
  switch (kind) {
    case EngineKind::kAuto:
      return "auto";
    case EngineKind::kIoUring:
      return "io_uring";
    case EngineKind::kPsync:
      return "psync";
  }
  return "unknown";
}

std::string DescribeOp(const IoOp& op) {
  return std::string(op.kind == IoOp::Kind::kRead ? "read" : "write") + " fd " +
         std::to_string(op.fd) + " offset " + std::to_string(op.offset) + " length " +
         std::to_string(op.len);
}

Status IoEngine::Run(std::span<IoOp> ops) {
  size_t next = 0;
  size_t done = 0;
  while (done < ops.size()) {
    while (next < ops.size() && outstanding() < queue_depth()) {
      KDN_RETURN_IF_ERROR(Submit(&ops[next]));
      ++next;
    }
    KDN_ASSIGN_OR_RETURN(IoOp * op, Reap());
    (void)op;
    ++done;
  }
  // Report the first failure by position, so that the message is stable whatever the
  // completion order was.
  size_t failures = 0;
  const IoOp* first = nullptr;
  for (const IoOp& op : ops) {
    if (op.complete()) continue;
    ++failures;
    if (first == nullptr) first = &op;
  }
  if (first == nullptr) return Status::OK();
  std::string more = failures > 1 ? " (and " + std::to_string(failures - 1) + " more failed)" : "";
  if (first->result < 0) {
    return Status::FromErrno(DescribeOp(*first) + more, static_cast<int>(-first->result));
  }
  return Status::IOError("short " + DescribeOp(*first) + ": " + std::to_string(first->result) +
                         " bytes moved" + more);
}

namespace {

// Whether io_uring works here, probed once per process.
bool ProbeIoUring(int* err) {
  static std::once_flag once;
  static int probe_err = 0;
  std::call_once(once, [] {
    io_uring ring;
    int rc = io_uring_queue_init(4, &ring, 0);
    if (rc < 0) {
      probe_err = -rc;
      return;
    }
    io_uring_queue_exit(&ring);
  });
  *err = probe_err;
  return probe_err == 0;
}

void LogFallbackOnce(Logger* logger, const std::string& why) {
  static std::once_flag once;
  std::call_once(once, [&] {
    Log(logger, LogLevel::kWarning, "I/O engine: " + why + "; using pread/pwrite");
  });
}

}  // namespace

EngineKind ResolveEngineKind(EngineKind requested, Logger* logger) {
  if (requested != EngineKind::kAuto) return requested;
  if (const char* env = std::getenv("KDN_IO_ENGINE"); env != nullptr && *env != '\0') {
    std::string_view v(env);
    if (v == "psync") return EngineKind::kPsync;
    if (v == "io_uring" || v == "iouring") return EngineKind::kIoUring;
    // Said for every engine made (engines are pooled: a few per store), to whoever asked.
    Log(logger, LogLevel::kWarning,
        "ignoring KDN_IO_ENGINE=" + std::string(v) + " (want psync or io_uring)");
  }
  int err = 0;
  if (ProbeIoUring(&err)) return EngineKind::kIoUring;
  std::string why = std::string("io_uring refused by the kernel (") + std::strerror(err) + ")";
  LogFallbackOnce(logger, why);
  return EngineKind::kPsync;
}

namespace {

Result<std::unique_ptr<IoEngine>> CreateEngine(const EngineOptions& options) {
  if (options.queue_depth == 0 || options.queue_depth > 4096) {
    return Status::InvalidArgument("I/O engine: queue depth must be 1..4096");
  }
  if (options.buffer_count > 0 && options.buffer_bytes % 4096 != 0) {
    return Status::InvalidArgument("I/O engine: buffer size must be a multiple of 4096");
  }
  EngineOptions resolved = options;
  resolved.kind = ResolveEngineKind(options.kind, options.logger.get());
  if (resolved.kind == EngineKind::kPsync) return internal::CreatePsyncEngine(resolved);
  Result<std::unique_ptr<IoEngine>> engine = internal::CreateUringEngine(resolved);
  if (engine.ok() || options.kind == EngineKind::kIoUring) return engine;
  // Probing worked but this ring did not (e.g. a memory limit): still serve, with pread/pwrite.
  LogFallbackOnce(options.logger.get(), engine.status().ToString());
  return internal::CreatePsyncEngine(resolved);
}

}  // namespace

Result<std::unique_ptr<IoEngine>> CreateIoEngine(const EngineOptions& options) {
  KDN_ASSIGN_OR_RETURN(std::unique_ptr<IoEngine> engine, CreateEngine(options));
  if (options.wrapper) return options.wrapper->Wrap(std::move(engine));
  return engine;
}

}  // namespace kdn::io
