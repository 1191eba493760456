// The io_uring engine: one ring, operations prepared into the submission queue and submitted in
// one system call per batch; registered buffers and files where the kernel allows them.
#include <liburing.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <deque>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "iouring/aligned_buffer.h"
#include "iouring/engines.h"

namespace kdn::io::internal {
namespace {

class UringEngine final : public IoEngine {
 public:
  UringEngine(const EngineOptions& options, AlignedBuffer buffers)
      : IoEngine(options.queue_depth, buffers.data(), options.buffer_count, options.buffer_bytes),
        buffers_(std::move(buffers)),
        max_files_(options.max_files),
        logger_(options.logger) {}

  ~UringEngine() override {
    if (ring_ready_) io_uring_queue_exit(&ring_);
  }

  Status Init() {
    io_uring_params params{};
    params.flags = IORING_SETUP_CQSIZE;
    params.cq_entries = 2 * queue_depth();
    int rc = io_uring_queue_init_params(queue_depth(), &ring_, &params);
    if (rc < 0) return Status::FromErrno("io_uring_queue_init", -rc);
    ring_ready_ = true;
    if (buffer_count() > 0) {
      std::vector<iovec> iov(buffer_count());
      for (uint32_t i = 0; i < buffer_count(); ++i) iov[i] = {buffer(i), buffer_bytes()};
      rc = io_uring_register_buffers(&ring_, iov.data(), static_cast<unsigned>(iov.size()));
      if (rc == 0) {
        fixed_buffers_ = true;
      } else {
        // Over RLIMIT_MEMLOCK, typically: plain reads and writes into the same memory still work.
        static std::once_flag once;
        std::call_once(once, [&] {
          Log(logger_, LogLevel::kWarning,
              std::string("io_uring: buffers not registered (") + std::strerror(-rc) +
                  "); using plain I/O");
        });
      }
    }
    if (max_files_ > 0 && io_uring_register_files_sparse(&ring_, max_files_) == 0) {
      file_slots_.assign(max_files_, -1);
    }
    return Status::OK();
  }

  EngineKind kind() const override { return EngineKind::kIoUring; }
  size_t outstanding() const override { return in_kernel_ + done_.size(); }

  Status Submit(IoOp* op) override {
    if (outstanding() >= queue_depth()) {
      return Status::Internal("io_uring: Submit beyond the queue depth");
    }
    const bool write = op->kind == IoOp::Kind::kWrite;
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (sqe == nullptr) {
      // The queue holds queue_depth entries and we never have more outstanding: submit what is
      // prepared and try once more.
      KDN_RETURN_IF_ERROR(Kick());
      sqe = io_uring_get_sqe(&ring_);
      if (sqe == nullptr) return Status::Internal("io_uring: submission queue full");
    }
    int fd = op->fd;
    bool fixed_file = false;
    if (!file_slots_.empty()) {
      auto it = slot_of_.find(fd);
      if (it != slot_of_.end()) {
        fd = it->second;
        fixed_file = true;
      }
    }
    const bool fixed_buf = fixed_buffers_ && op->buf_index >= 0 &&
                           static_cast<uint32_t>(op->buf_index) < buffer_count();
    if (write) {
      if (fixed_buf) {
        io_uring_prep_write_fixed(sqe, fd, op->buf, op->len, op->offset, op->buf_index);
      } else {
        io_uring_prep_write(sqe, fd, op->buf, op->len, op->offset);
      }
    } else {
      if (fixed_buf) {
        io_uring_prep_read_fixed(sqe, fd, op->buf, op->len, op->offset, op->buf_index);
      } else {
        io_uring_prep_read(sqe, fd, op->buf, op->len, op->offset);
      }
    }
    if (fixed_file) sqe->flags |= IOSQE_FIXED_FILE;
    io_uring_sqe_set_data(sqe, op);
    ++prepared_;
    ++in_kernel_;
    return Status::OK();
  }

  Status Kick() override {
    while (prepared_ > 0) {
      int rc = io_uring_submit(&ring_);
      if (rc == -EINTR || rc == -EAGAIN || rc == -EBUSY) {
        if (rc != -EINTR) KDN_RETURN_IF_ERROR(Drain(1));
        continue;
      }
      if (rc < 0) return Status::FromErrno("io_uring_submit", -rc);
      prepared_ -= std::min<uint32_t>(prepared_, static_cast<uint32_t>(rc));
    }
    return Status::OK();
  }

  Result<IoOp*> Reap() override {
    if (done_.empty()) {
      if (in_kernel_ == 0) return Status::Internal("io_uring: Reap with nothing outstanding");
      KDN_RETURN_IF_ERROR(Kick());
      KDN_RETURN_IF_ERROR(Drain(1));
    }
    IoOp* op = done_.front();
    done_.pop_front();
    return op;
  }

  Status SyncData(int fd) override {
    // Through the ring, like the writes it orders; with nothing else outstanding, so that a
    // completion cannot be confused with another operation's.
    if (outstanding() != 0) return Status::Internal("io_uring: SyncData with I/O outstanding");
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (sqe == nullptr) return Status::Internal("io_uring: submission queue full");
    auto it = slot_of_.find(fd);
    if (it != slot_of_.end()) {
      io_uring_prep_fsync(sqe, it->second, IORING_FSYNC_DATASYNC);
      sqe->flags |= IOSQE_FIXED_FILE;
    } else {
      io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
    }
    IoOp sync_op;
    io_uring_sqe_set_data(sqe, &sync_op);
    ++prepared_;
    ++in_kernel_;
    KDN_RETURN_IF_ERROR(Kick());
    KDN_RETURN_IF_ERROR(Drain(1));
    done_.clear();
    if (sync_op.result < 0) {
      return Status::FromErrno("fdatasync", static_cast<int>(-sync_op.result));
    }
    return Status::OK();
  }

  Status RegisterFile(int fd) override {
    if (file_slots_.empty() || slot_of_.count(fd) != 0) return Status::OK();
    for (uint32_t slot = 0; slot < file_slots_.size(); ++slot) {
      if (file_slots_[slot] != -1) continue;
      int rc = io_uring_register_files_update(&ring_, slot, &fd, 1);
      if (rc < 0) return Status::FromErrno("io_uring_register_files_update", -rc);
      file_slots_[slot] = fd;
      slot_of_[fd] = static_cast<int>(slot);
      return Status::OK();
    }
    return Status::OK();  // table full: the descriptor is used unregistered
  }

  Status UnregisterFile(int fd) override {
    auto it = slot_of_.find(fd);
    if (it == slot_of_.end()) return Status::OK();
    int none = -1;
    int rc = io_uring_register_files_update(&ring_, static_cast<unsigned>(it->second), &none, 1);
    if (rc < 0) return Status::FromErrno("io_uring_register_files_update", -rc);
    file_slots_[it->second] = -1;
    slot_of_.erase(it);
    return Status::OK();
  }

 private:
  // Moves at least `min` completions from the kernel to done_ (waiting for them), then whatever
  // else has already completed.
  Status Drain(unsigned min) {
    unsigned got = 0;
    while (got < min || io_uring_cq_ready(&ring_) > 0) {
      io_uring_cqe* cqe = nullptr;
      int rc = got < min ? io_uring_wait_cqe(&ring_, &cqe) : io_uring_peek_cqe(&ring_, &cqe);
      if (rc == -EINTR) continue;
      if (rc == -EAGAIN) break;
      if (rc < 0) return Status::FromErrno("io_uring_wait_cqe", -rc);
      auto* op = static_cast<IoOp*>(io_uring_cqe_get_data(cqe));
      op->result = cqe->res;
      io_uring_cqe_seen(&ring_, cqe);
      --in_kernel_;
      done_.push_back(op);
      ++got;
    }
    return Status::OK();
  }

  AlignedBuffer buffers_;
  uint32_t max_files_;
  std::shared_ptr<Logger> logger_;
  io_uring ring_{};
  bool ring_ready_ = false;
  bool fixed_buffers_ = false;
  std::vector<int> file_slots_;           // slot -> fd (-1 free); empty: no registered files
  std::unordered_map<int, int> slot_of_;  // fd -> slot
  uint32_t prepared_ = 0;                 // prepared, not yet submitted
  uint32_t in_kernel_ = 0;                // prepared or submitted, not yet completed
  std::deque<IoOp*> done_;                // completed, not yet reaped
};

}  // namespace

Result<std::unique_ptr<IoEngine>> CreateUringEngine(const EngineOptions& options) {
  AlignedBuffer buffers;
  if (options.buffer_count > 0) {
    buffers = AlignedBuffer(size_t{options.buffer_count} * options.buffer_bytes);
    if (buffers.empty()) return Status::NoSpace("I/O engine: cannot allocate its buffers");
  }
  auto engine = std::make_unique<UringEngine>(options, std::move(buffers));
  KDN_RETURN_IF_ERROR(engine->Init());
  return std::unique_ptr<IoEngine>(std::move(engine));
}

}  // namespace kdn::io::internal
