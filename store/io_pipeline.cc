#include "store/io_pipeline.h"

namespace kdn::store {

IoPipeline::IoPipeline(io::IoEngine& engine, DescribeFd describe_fd)
    : engine_(engine), describe_fd_(std::move(describe_fd)), slots_(engine.queue_depth()) {
  for (uint32_t i = engine.queue_depth(); i-- > 0;) free_slots_.push_back(i);
  for (uint32_t i = engine.buffer_count(); i-- > 0;) free_buffers_.push_back(i);
}

IoPipeline::~IoPipeline() {
  // Abandoned midway (an early return): what the callbacks refer to may be gone already, but the
  // kernel may still be using the buffers, so collect everything without running them.
  for (Slot& slot : slots_) slot.on_done = nullptr;
  (void)Finish();
}

Result<uint32_t> IoPipeline::AcquireBuffer() {
  while (free_buffers_.empty()) {
    if (engine_.outstanding() == 0)
      return Status::Internal("I/O pipeline: no buffer will be freed");
    KDN_RETURN_IF_ERROR(ReapOne());
    if (!error_.ok()) return error_;
  }
  uint32_t index = free_buffers_.back();
  free_buffers_.pop_back();
  return index;
}

Status IoPipeline::Add(const io::IoOp& op, OnDone on_done, std::optional<uint32_t> expect) {
  if (!error_.ok()) return error_;
  while (free_slots_.empty()) {
    KDN_RETURN_IF_ERROR(ReapOne());
    if (!error_.ok()) return error_;
  }
  uint32_t slot = free_slots_.back();
  free_slots_.pop_back();
  slots_[slot].op = op;
  slots_[slot].op.tag = slot;
  slots_[slot].on_done = std::move(on_done);
  slots_[slot].expect = expect.value_or(op.len);
  Status s = engine_.Submit(&slots_[slot].op);
  if (!s.ok()) {
    free_slots_.push_back(slot);
    Fail(s);
    return s;
  }
  // Start work in small batches: one system call per few operations, yet the disk is never idle
  // while the caller prepares the next buffers.
  if (++unkicked_ >= 4) {
    unkicked_ = 0;
    Status k = engine_.Kick();
    if (!k.ok()) Fail(k);
  }
  return error_;
}

Status IoPipeline::Kick() {
  if (!error_.ok() || unkicked_ == 0) return error_;
  unkicked_ = 0;
  Status k = engine_.Kick();
  if (!k.ok()) Fail(k);
  return error_;
}

Status IoPipeline::ReapOne() {
  KDN_ASSIGN_OR_RETURN(io::IoOp * op, engine_.Reap());
  Slot& slot = slots_[op->tag];
  if (op->result < 0) {
    Fail(Status::FromErrno(describe_fd_(op->fd) + ": " + io::DescribeOp(*op),
                           static_cast<int>(-op->result)));
  } else if (op->result < static_cast<int64_t>(slot.expect)) {
    Fail(Status::IOError(describe_fd_(op->fd) + ": short " + io::DescribeOp(*op) + ": " +
                         std::to_string(op->result) + " bytes moved"));
  } else if (error_.ok() && slot.on_done) {
    Fail(slot.on_done(*op));
  }
  slot.on_done = nullptr;
  free_slots_.push_back(static_cast<uint32_t>(op->tag));
  return Status::OK();
}

Status IoPipeline::Finish() {
  while (engine_.outstanding() > 0) {
    Status s = ReapOne();
    if (!s.ok()) {
      // The engine itself failed: nothing more can be collected.
      Fail(s);
      break;
    }
  }
  unkicked_ = 0;
  return error_;
}

}  // namespace kdn::store
