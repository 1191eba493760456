#include "fault/fault_injector.h"

#include <unistd.h>

#include <atomic>
#include <charconv>
#include <csignal>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <deque>
#include <vector>

#include "iouring/aligned_buffer.h"

namespace kdn::io {
namespace {

struct HeldWrite {
  uint64_t offset;
  size_t len;
  AlignedBuffer data;  // aligned so that O_DIRECT descriptors accept it at flush time
};

struct Injector {
  std::atomic<bool> active{false};
  std::mutex mu;  // guards plan changes and held writes
  FaultPlan plan;
  std::atomic<uint64_t> matched{0};  // operations matching plan.fail_op
  std::atomic<uint64_t> reads{0}, writes{0}, syncs{0}, failed{0}, dropped{0}, held{0};
  std::map<int, std::vector<HeldWrite>> held_writes;
};

Injector& Get() {
  static Injector* injector = new Injector();  // never destroyed: engines may outlive statics
  return *injector;
}

bool Matches(FaultOp want, FaultOp op) {
  return want == FaultOp::kAny || want == op;
}

Result<uint64_t> ParseU64(std::string_view v, std::string_view key) {
  uint64_t out = 0;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
  if (ec != std::errc() || p != v.data() + v.size()) {
    return Status::InvalidArgument("KDN_FAULT: " + std::string(key) + " wants a number, got '" +
                                   std::string(v) + "'");
  }
  return out;
}

}  // namespace

void SetFaultPlan(const FaultPlan& plan) {
  Injector& in = Get();
  std::lock_guard lock(in.mu);
  in.plan = plan;
  in.held_writes.clear();
  in.matched = 0;
  in.reads = in.writes = in.syncs = in.failed = in.dropped = in.held = 0;
  in.active.store(true, std::memory_order_release);
}

void ClearFaultPlan() {
  Injector& in = Get();
  std::lock_guard lock(in.mu);
  in.active.store(false, std::memory_order_release);
  in.plan = FaultPlan();
  in.held_writes.clear();
}

Result<FaultPlan> ParseFaultPlan(std::string_view text) {
  FaultPlan plan;
  while (!text.empty()) {
    size_t comma = text.find(',');
    std::string_view item = text.substr(0, comma);
    text = comma == std::string_view::npos ? std::string_view() : text.substr(comma + 1);
    if (item.empty()) continue;
    size_t eq = item.find('=');
    std::string_view key = item.substr(0, eq);
    std::string_view value =
        eq == std::string_view::npos ? std::string_view() : item.substr(eq + 1);
    if (key == "volatile") {
      plan.volatile_writes = true;
    } else if (key == "fail_at") {
      KDN_ASSIGN_OR_RETURN(plan.fail_at, ParseU64(value, key));
    } else if (key == "fail_count") {
      KDN_ASSIGN_OR_RETURN(plan.fail_count, ParseU64(value, key));
    } else if (key == "kill_at_write") {
      KDN_ASSIGN_OR_RETURN(plan.kill_at_write, ParseU64(value, key));
    } else if (key == "drop_writes_after") {
      KDN_ASSIGN_OR_RETURN(plan.drop_writes_after, ParseU64(value, key));
    } else if (key == "fail_op") {
      if (value == "any")
        plan.fail_op = FaultOp::kAny;
      else if (value == "read")
        plan.fail_op = FaultOp::kRead;
      else if (value == "write")
        plan.fail_op = FaultOp::kWrite;
      else if (value == "sync")
        plan.fail_op = FaultOp::kSync;
      else
        return Status::InvalidArgument("KDN_FAULT: fail_op is any, read, write or sync");
    } else if (key == "fail_errno") {
      if (value == "EIO") {
        plan.fail_errno = EIO;
      } else if (value == "ENOSPC") {
        plan.fail_errno = ENOSPC;
      } else {
        KDN_ASSIGN_OR_RETURN(uint64_t e, ParseU64(value, key));
        if (e == 0 || e > 4095)
          return Status::InvalidArgument("KDN_FAULT: fail_errno out of range");
        plan.fail_errno = static_cast<int>(e);
      }
    } else {
      return Status::InvalidArgument("KDN_FAULT: unknown item '" + std::string(item) + "'");
    }
  }
  return plan;
}

FaultCounters GetFaultCounters() {
  Injector& in = Get();
  return FaultCounters{in.reads.load(),  in.writes.load(),  in.syncs.load(),
                       in.failed.load(), in.dropped.load(), in.held.load()};
}

namespace {

// What the decorator does with one operation.
struct FaultDecision {
  enum class Action : uint8_t { kPass, kFail, kDrop, kHold };
  Action action = Action::kPass;
  int err = 0;
};

FaultDecision DecideFault(FaultOp op) {
  Injector& in = Get();
  if (!in.active.load(std::memory_order_acquire)) return {};
  FaultPlan plan;
  {
    std::lock_guard lock(in.mu);
    plan = in.plan;
  }
  uint64_t write_no = 0;
  switch (op) {
    case FaultOp::kRead:
      ++in.reads;
      break;
    case FaultOp::kWrite:
      write_no = ++in.writes;
      break;
    case FaultOp::kSync:
      ++in.syncs;
      break;
    case FaultOp::kAny:
      break;
  }
  if (op == FaultOp::kWrite && plan.kill_at_write != 0 && write_no == plan.kill_at_write) {
    // The power goes out: nothing after this point happens, held writes are lost with us.
    ::kill(::getpid(), SIGKILL);
    ::_exit(137);
  }
  if (plan.fail_at != 0 && Matches(plan.fail_op, op)) {
    uint64_t n = ++in.matched;
    if (n >= plan.fail_at && n - plan.fail_at < plan.fail_count) {
      ++in.failed;
      return {FaultDecision::Action::kFail, plan.fail_errno};
    }
  }
  if (op == FaultOp::kWrite) {
    if (plan.drop_writes_after != kFaultNever && write_no > plan.drop_writes_after) {
      ++in.dropped;
      return {FaultDecision::Action::kDrop, 0};
    }
    if (plan.volatile_writes) {
      ++in.held;
      return {FaultDecision::Action::kHold, 0};
    }
  }
  return {};
}

void HoldWrite(int fd, uint64_t offset, const std::byte* data, size_t len) {
  Injector& in = Get();
  HeldWrite w{offset, len, AlignedBuffer(len)};
  if (len > 0) std::memcpy(w.data.data(), data, len);
  std::lock_guard lock(in.mu);
  in.held_writes[fd].push_back(std::move(w));
}

Status FlushHeldWrites(int fd) {
  Injector& in = Get();
  if (!in.active.load(std::memory_order_acquire)) return Status::OK();
  std::vector<HeldWrite> writes;
  {
    std::lock_guard lock(in.mu);
    auto it = in.held_writes.find(fd);
    if (it == in.held_writes.end()) return Status::OK();
    writes = std::move(it->second);
    in.held_writes.erase(it);
  }
  for (const HeldWrite& w : writes) {
    size_t done = 0;
    while (done < w.len) {
      ssize_t n = ::pwrite(fd, w.data.data() + done, w.len - done, w.offset + done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return Status::FromErrno("flushing a held write", errno);
      if (n == 0) return Status::IOError("flushing a held write: no progress");
      done += static_cast<size_t>(n);
    }
  }
  return Status::OK();
}

// Applies the plan in front of the real engine. Operations it decides itself (failed, dropped,
// held) complete at once and are reaped before the inner engine's.
class FaultyEngine final : public IoEngine {
 public:
  explicit FaultyEngine(std::unique_ptr<IoEngine> inner)
      : IoEngine(inner->queue_depth(), inner->buffer(0), inner->buffer_count(),
                 inner->buffer_bytes()),
        inner_(std::move(inner)) {}

  EngineKind kind() const override { return inner_->kind(); }
  size_t outstanding() const override { return inner_->outstanding() + done_.size(); }

  Status Submit(IoOp* op) override {
    if (outstanding() >= queue_depth()) return Status::Internal("Submit beyond the queue depth");
    const bool write = op->kind == IoOp::Kind::kWrite;
    const FaultDecision fault = DecideFault(write ? FaultOp::kWrite : FaultOp::kRead);
    switch (fault.action) {
      case FaultDecision::Action::kFail:
        op->result = -fault.err;
        break;
      case FaultDecision::Action::kDrop:
        op->result = op->len;
        break;
      case FaultDecision::Action::kHold:
        HoldWrite(op->fd, op->offset, op->buf, op->len);
        op->result = op->len;
        break;
      case FaultDecision::Action::kPass:
        return inner_->Submit(op);
    }
    done_.push_back(op);
    return Status::OK();
  }
  Status Kick() override { return inner_->Kick(); }
  Result<IoOp*> Reap() override {
    if (!done_.empty()) {
      IoOp* op = done_.front();
      done_.pop_front();
      return op;
    }
    return inner_->Reap();
  }
  Status SyncData(int fd) override {
    KDN_RETURN_IF_ERROR(FlushHeldWrites(fd));
    const FaultDecision fault = DecideFault(FaultOp::kSync);
    if (fault.action == FaultDecision::Action::kFail) {
      return Status::FromErrno("fdatasync", fault.err);
    }
    return inner_->SyncData(fd);
  }
  Status RegisterFile(int fd) override { return inner_->RegisterFile(fd); }
  Status UnregisterFile(int fd) override { return inner_->UnregisterFile(fd); }

 private:
  std::unique_ptr<IoEngine> inner_;
  std::deque<IoOp*> done_;
};

class FaultWrapper final : public EngineWrapper {
 public:
  std::unique_ptr<IoEngine> Wrap(std::unique_ptr<IoEngine> engine) override {
    return std::make_unique<FaultyEngine>(std::move(engine));
  }
};

}  // namespace

std::shared_ptr<EngineWrapper> FaultInjection() {
  static const std::shared_ptr<EngineWrapper> wrapper = std::make_shared<FaultWrapper>();
  return wrapper;
}

}  // namespace kdn::io
