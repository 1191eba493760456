// The pread/pwrite engine: for kernels that refuse io_uring. Each operation runs when it is
// submitted (queue depth 1 in effect); results are reported exactly as the io_uring engine does.
#include <unistd.h>

#include <cerrno>
#include <deque>

#include "iouring/aligned_buffer.h"
#include "iouring/engines.h"

namespace kdn::io::internal {
namespace {

class PsyncEngine final : public IoEngine {
 public:
  PsyncEngine(const EngineOptions& options, AlignedBuffer buffers)
      : IoEngine(options.queue_depth, buffers.data(), options.buffer_count, options.buffer_bytes),
        buffers_(std::move(buffers)) {}

  EngineKind kind() const override { return EngineKind::kPsync; }
  size_t outstanding() const override { return done_.size(); }

  Status Submit(IoOp* op) override {
    if (outstanding() >= queue_depth())
      return Status::Internal("psync: Submit beyond the queue depth");
    const bool write = op->kind == IoOp::Kind::kWrite;
    ssize_t n;
    do {
      n = write ? ::pwrite(op->fd, op->buf, op->len, static_cast<off_t>(op->offset))
                : ::pread(op->fd, op->buf, op->len, static_cast<off_t>(op->offset));
    } while (n < 0 && errno == EINTR);
    op->result = n < 0 ? -errno : n;
    done_.push_back(op);
    return Status::OK();
  }

  Status Kick() override { return Status::OK(); }

  Result<IoOp*> Reap() override {
    if (done_.empty()) return Status::Internal("psync: Reap with nothing outstanding");
    IoOp* op = done_.front();
    done_.pop_front();
    return op;
  }

  Status SyncData(int fd) override {
    if (::fdatasync(fd) != 0) return Status::FromErrno("fdatasync", errno);
    return Status::OK();
  }

  Status RegisterFile(int) override { return Status::OK(); }
  Status UnregisterFile(int) override { return Status::OK(); }

 private:
  AlignedBuffer buffers_;
  std::deque<IoOp*> done_;
};

}  // namespace

Result<std::unique_ptr<IoEngine>> CreatePsyncEngine(const EngineOptions& options) {
  AlignedBuffer buffers;
  if (options.buffer_count > 0) {
    buffers = AlignedBuffer(size_t{options.buffer_count} * options.buffer_bytes);
    if (buffers.empty()) return Status::NoSpace("I/O engine: cannot allocate its buffers");
  }
  return std::unique_ptr<IoEngine>(std::make_unique<PsyncEngine>(options, std::move(buffers)));
}

}  // namespace kdn::io::internal
