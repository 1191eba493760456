// FUSE over io_uring for kdnfs (see fuse_uring.h): queue threads, their entries, and the read and
// writev functions through which libfuse talks to the kernel.
#define FUSE_USE_VERSION 312
#include "base/thread_annotations.h"
#include "fs/kdnfs/fuse_uring.h"

#include <fuse_lowlevel.h>
#include <liburing.h>
#include <linux/fuse.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>

#include "fs/kdnfs/log.h"
#include "iouring/aligned_buffer.h"
#include "store/format/file_io.h"

namespace kdn::fs {
namespace {

// The kernel's FUSE-over-io_uring ABI (include/uapi/linux/fuse.h, protocol 7.42). Debian 12's
// headers predate it, so it is spelled out here.
constexpr uint64_t kInitOverIoUring = uint64_t{1} << 41;  // FUSE_OVER_IO_URING
constexpr uint32_t kInitExt = uint32_t{1} << 30;          // FUSE_INIT_EXT
constexpr uint32_t kCmdRegister = 1;                      // FUSE_IO_URING_CMD_REGISTER
constexpr uint32_t kCmdCommitAndFetch = 2;                // FUSE_IO_URING_CMD_COMMIT_AND_FETCH

struct RingEntInOut {  // struct fuse_uring_ent_in_out
  uint64_t flags;
  uint64_t commit_id;   // the request's unique id, handed back at commit
  uint32_t payload_sz;  // bytes in the payload buffer, both ways
  uint32_t padding;
  uint64_t reserved;
};
struct RingReqHeader {  // struct fuse_uring_req_header
  char in_out[128];     // fuse_in_header, then fuse_out_header
  char op_in[128];      // the op's own struct (fuse_read_in, ...)
  RingEntInOut ent;
};
struct RingCmdReq {  // struct fuse_uring_cmd_req, in the SQE's command area
  uint64_t flags;
  uint64_t commit_id;
  uint16_t qid;
  uint8_t padding[6];
};
static_assert(sizeof(RingCmdReq) <= 80, "fits a 128-byte SQE's command area");

// Entries per queue: requests one CPU's clients may have in flight at once (more wait in the
// kernel). A sequential reader's readahead keeps about 16 READs of 1 MiB in flight.
constexpr unsigned kQueueDepth = 16;
// Room before the payload for the request's header and op struct, so that the request is one
// contiguous buffer as libfuse expects; a page keeps the payload aligned for O_DIRECT.
constexpr size_t kPrefix = io::kDirectAlign;
constexpr size_t kPage = 4096;

// libfuse calls the I/O functions with the filesystem's userdata, not ours.
std::atomic<FuseUring*> g_uring{nullptr};

// CPUs the kernel may run a caller on ("0-3,8"), hence queues it expects: num_possible_cpus().
unsigned PossibleCpus() {
  std::ifstream in("/sys/devices/system/cpu/possible");
  std::string spec;
  unsigned count = 0;
  if (in >> spec) {
    size_t pos = 0;
    while (pos < spec.size()) {
      size_t comma = spec.find(',', pos);
      std::string range =
          spec.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
      size_t dash = range.find('-');
      unsigned lo = static_cast<unsigned>(std::strtoul(range.c_str(), nullptr, 10));
      unsigned hi =
          dash == std::string::npos
              ? lo
              : static_cast<unsigned>(std::strtoul(range.c_str() + dash + 1, nullptr, 10));
      count += hi >= lo ? hi - lo + 1 : 0;
      if (comma == std::string::npos) break;
      pos = comma + 1;
    }
  }
  return count > 0 ? count : static_cast<unsigned>(std::thread::hardware_concurrency());
}

}  // namespace

// One request slot the kernel fills: a header page and a payload buffer, registered once.
struct FuseUring::Entry {
  Queue* queue = nullptr;
  io::AlignedBuffer header_page;  // a RingReqHeader
  io::AlignedBuffer area;         // kPrefix bytes, then the payload
  RingReqHeader* header() const { return reinterpret_cast<RingReqHeader*>(header_page.data()); }
  std::byte* payload = nullptr;
  iovec iov[2] = {};
  uint32_t last_cmd = 0;
  uint64_t commit_id = 0;
  std::atomic<uint64_t> unique{0};  // the request being served, 0 when none
};

struct FuseUring::Queue {
  unsigned qid = 0;
  io_uring ring{};
  bool ring_ready = false;
  UniqueFd wake;  // eventfd: commits are waiting, or the queue must stop
  std::thread thread;
  std::vector<std::unique_ptr<Entry>> entries;
  Mutex mu;
  std::vector<Entry*> commits KDN_GUARDED_BY(mu);  // answered by workers, for the queue thread
  bool stopping KDN_GUARDED_BY(mu) = false;

  ~Queue() {
    if (ring_ready) io_uring_queue_exit(&ring);
  }
};

thread_local FuseUring::Queue* FuseUring::t_queue_ = nullptr;

FuseUring::FuseUring(fuse_session* session, int fd, Hooks hooks)
    : session_(session), fd_(fd), hooks_(std::move(hooks)) {}

Result<std::unique_ptr<FuseUring>> FuseUring::Install(fuse_session* session, Hooks hooks) {
  int fd = fuse_session_fd(session);
  std::unique_ptr<FuseUring> uring(new FuseUring(session, fd, std::move(hooks)));
  FuseUring* expected = nullptr;
  if (!g_uring.compare_exchange_strong(expected, uring.get())) {
    return Status::InvalidArgument("one FUSE session per process");
  }
  fuse_custom_io io;
  std::memset(&io, 0, sizeof(io));
  io.read = &FuseUring::ReadHook;
  io.writev = &FuseUring::WritevHook;
  if (int rc = fuse_session_custom_io(session, &io, fd); rc != 0) {
    g_uring.store(nullptr);
    return Status::FromErrno("libfuse refused kdnfs's I/O functions", -rc);
  }
  return uring;
}

FuseUring::~FuseUring() {
  // The workers and the receiver are gone by now; the queue threads may still be answering.
  Stop();
  // The session may still send notifications (unique 0), which never touch this object; with no
  // FuseUring they are plain writes.
  g_uring.store(nullptr);
}

ssize_t FuseUring::ReadHook(int fd, void* buf, size_t len, void*) {
  ssize_t n = ::read(fd, buf, len);
  FuseUring* self = g_uring.load();
  if (self != nullptr && n >= static_cast<ssize_t>(sizeof(fuse_in_header) + sizeof(fuse_init_in)) &&
      static_cast<const fuse_in_header*>(buf)->opcode == FUSE_INIT) {
    const auto* h = static_cast<const fuse_in_header*>(buf);
    fuse_init_in in;
    std::memcpy(&in, static_cast<const char*>(buf) + sizeof(*h), sizeof(in));
    uint64_t offered = in.flags;
    if (in.flags & kInitExt) offered |= uint64_t{in.flags2} << 32;
    self->init_offered_ = offered;  // read by the writev of INIT's reply, on the same thread
    self->init_unique_.store(h->unique);
  }
  return n;
}

ssize_t FuseUring::WritevHook(int fd, struct iovec* iov, int count, void*) {
  FuseUring* self = g_uring.load();
  if (self != nullptr && count >= 1 && iov[0].iov_len >= sizeof(fuse_out_header)) {
    const auto* out = static_cast<const fuse_out_header*>(iov[0].iov_base);
    if (out->unique != 0) {
      if (self->active_.load()) {
        if (Entry* entry = self->FindInFlight(out->unique)) return self->Reply(entry, iov, count);
      } else if (out->unique == self->init_unique_.load()) {
        return self->WriteInitReply(fd, iov, count);
      }
    }
  }
  return ::writev(fd, iov, count);
}

ssize_t FuseUring::WriteInitReply(int fd, const struct iovec* iov, int count) {
  init_unique_.store(0);
  const auto* out = static_cast<const fuse_out_header*>(iov[0].iov_base);
  if (count != 2 || out->error != 0 || iov[1].iov_len < offsetof(fuse_init_out, flags2) + 4 ||
      iov[1].iov_len > sizeof(fuse_init_out)) {
    return ::writev(fd, iov, count);
  }
  fuse_init_out init;
  std::memset(&init, 0, sizeof(init));
  std::memcpy(&init, iov[1].iov_base, iov[1].iov_len);
  if (hooks_.patch_init) hooks_.patch_init(init_offered_, init);
  iovec patched[2] = {iov[0], {&init, iov[1].iov_len}};
  if (!hooks_.io_uring || (init_offered_ & kInitOverIoUring) == 0) {
    return ::writev(fd, patched, 2);
  }
  // The kernel's largest request or reply payload (fuse_uring_create).
  size_t payload =
      std::max<size_t>({FUSE_MIN_READ_BUFFER, init.max_write, size_t{init.max_pages} * kPage});
  if (Status s = CreateQueues(payload); !s.ok()) {
    KDN_LOG_INFO("FUSE over io_uring not used: %s", s.ToString().c_str());
    queues_.clear();
    return ::writev(fd, patched, 2);
  }
  init.flags |= kInitExt;
  init.flags2 |= static_cast<uint32_t>(kInitOverIoUring >> 32);
  ssize_t n = ::writev(fd, patched, 2);
  if (n < 0) return n;
  // The kernel now holds requests until every queue has registered; the threads do that first.
  active_.store(true);
  for (auto& q : queues_) {
    Queue* queue = q.get();
    queue->thread = std::thread([this, queue] { QueueThread(queue); });
  }
  KDN_LOG_INFO("FUSE over io_uring: %zu queues of %u requests", queues_.size(), kQueueDepth);
  return n;
}

Status FuseUring::CreateQueues(size_t payload_bytes) {
  payload_bytes_ = payload_bytes;
  unsigned cpus = PossibleCpus();
  for (unsigned qid = 0; qid < cpus; ++qid) {
    auto queue = std::make_unique<Queue>();
    queue->qid = qid;
    queue->wake = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (queue->wake.get() < 0) return Status::FromErrno("eventfd", errno);
    io_uring_params params;
    std::memset(&params, 0, sizeof(params));
    params.flags = IORING_SETUP_SQE128 | IORING_SETUP_CQSIZE | IORING_SETUP_SINGLE_ISSUER |
                   IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_R_DISABLED;
    params.cq_entries = 4 * kQueueDepth;
    if (int rc = io_uring_queue_init_params(2 * kQueueDepth, &queue->ring, &params); rc < 0) {
      return Status::FromErrno("io_uring_queue_init", -rc);
    }
    queue->ring_ready = true;
    for (unsigned i = 0; i < kQueueDepth; ++i) {
      auto entry = std::make_unique<Entry>();
      entry->queue = queue.get();
      entry->header_page = io::AlignedBuffer(sizeof(RingReqHeader));  // zeroed
      entry->area = io::AlignedBuffer(kPrefix + payload_bytes);
      if (entry->header_page.empty() || entry->area.empty()) {
        return Status::NoMemory("FUSE io_uring queue buffers");
      }
      entry->payload = entry->area.data() + kPrefix;
      entry->iov[0] = {entry->header(), sizeof(RingReqHeader)};
      entry->iov[1] = {entry->payload, payload_bytes};
      queue->entries.push_back(std::move(entry));
    }
    queues_.push_back(std::move(queue));
  }
  return Status::OK();
}

namespace {

void PrepCommand(io_uring_sqe* sqe, int fd, uint32_t cmd, void* data, unsigned qid,
                 uint64_t commit_id) {
  std::memset(sqe, 0, 128);  // a 128-byte SQE: the command area is its second half
  sqe->opcode = IORING_OP_URING_CMD;
  sqe->fd = fd;
  sqe->cmd_op = cmd;
  io_uring_sqe_set_data(sqe, data);
  RingCmdReq req;
  std::memset(&req, 0, sizeof(req));
  req.qid = static_cast<uint16_t>(qid);
  req.commit_id = commit_id;
  std::memcpy(sqe->cmd, &req, sizeof(req));
}

// An SQE of the queue's ring, submitting what is pending when the ring is full.
io_uring_sqe* NextSqe(io_uring* ring) {
  io_uring_sqe* sqe = io_uring_get_sqe(ring);
  while (sqe == nullptr) {
    io_uring_submit(ring);
    sqe = io_uring_get_sqe(ring);
  }
  return sqe;
}

}  // namespace

void FuseUring::Submit(Queue* queue, Entry* entry, uint32_t cmd) {
  io_uring_sqe* sqe = NextSqe(&queue->ring);
  entry->last_cmd = cmd;
  PrepCommand(sqe, fd_, cmd, entry, queue->qid, cmd == kCmdRegister ? 0 : entry->commit_id);
  if (cmd == kCmdRegister) {  // the buffers: the kernel keeps them for every later request
    sqe->addr = reinterpret_cast<uint64_t>(entry->iov);
    sqe->len = 2;
  }
}

void FuseUring::QueueThread(Queue* queue) {
  t_queue_ = queue;
  pthread_setname_np(pthread_self(), ("kdnfs-ring" + std::to_string(queue->qid)).c_str());
  // The kernel picks a request's queue by its caller's CPU; serving it on that CPU is the point.
  cpu_set_t cpus;
  CPU_ZERO(&cpus);
  CPU_SET(queue->qid, &cpus);
  (void)::sched_setaffinity(0, sizeof(cpus), &cpus);  // a cpuset may forbid it: still correct
  if (hooks_.thread_start != nullptr) hooks_.thread_start();

  io_uring* ring = &queue->ring;
  // Created disabled (single issuer): enabling it here makes this thread its one submitter.
  // (liburing 2.3 declares io_uring_enable_rings but does not export it.)
  if (::syscall(__NR_io_uring_register, ring->ring_fd, IORING_REGISTER_ENABLE_RINGS, nullptr, 0) !=
      0) {
    KDN_LOG_ERROR("FUSE io_uring queue %u: enabling its ring: %s", queue->qid,
                  std::strerror(errno));
  }
  for (auto& e : queue->entries) Submit(queue, e.get(), kCmdRegister);
  auto arm_wake = [&] {
    io_uring_sqe* sqe = NextSqe(ring);
    io_uring_prep_poll_add(sqe, queue->wake.get(), POLLIN);
    io_uring_sqe_set_data(sqe, queue);
  };
  arm_wake();
  size_t live = queue->entries.size();  // entries the kernel holds
  bool stopping = false;
  while (!stopping && live > 0) {
    int rc = io_uring_submit_and_wait(ring, 1);
    // A failed submission may have left the kernel waiting for this queue's registration, and it
    // holds every request until then: the session cannot go on.
    if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
      KDN_LOG_ERROR("FUSE io_uring queue %u: %s", queue->qid, std::strerror(-rc));
      if (hooks_.fail) hooks_.fail(-rc);
      break;
    }
    io_uring_cqe* cqe;
    unsigned head;
    unsigned seen = 0;
    io_uring_for_each_cqe(ring, head, cqe) {
      ++seen;
      void* data = io_uring_cqe_get_data(cqe);
      if (data == queue) {  // woken: commits from workers, or stop
        uint64_t v;
        (void)!::read(queue->wake.get(), &v, sizeof(v));
        std::vector<Entry*> commits;
        {
          MutexLock lock(queue->mu);
          commits.swap(queue->commits);
          stopping = queue->stopping;
        }
        for (Entry* e : commits) Submit(queue, e, kCmdCommitAndFetch);
        if (!stopping) arm_wake();
        continue;
      }
      auto* entry = static_cast<Entry*>(data);
      if (cqe->res == 0) {
        Serve(queue, entry);
      } else if (cqe->res == -EAGAIN || cqe->res == -EINTR) {
        Submit(queue, entry, entry->last_cmd);
      } else {
        // ENOTCONN: the connection ended (unmount). A refused registration turns io_uring off
        // for the connection, and the kernel goes back to /dev/fuse by itself.
        --live;
        if (cqe->res != -ENOTCONN && cqe->res != -ECANCELED) {
          KDN_LOG_ERROR(
              "FUSE io_uring queue %u: the kernel refused %s: %s", queue->qid,
              entry->last_cmd == kCmdRegister ? "a registration (serving /dev/fuse)" : "a reply",
              std::strerror(-cqe->res));
        }
      }
    }
    io_uring_cq_advance(ring, seen);
  }
  t_queue_ = nullptr;
}

void FuseUring::Serve(Queue* queue, Entry* entry) {
  RingReqHeader* h = entry->header();
  fuse_in_header in;
  std::memcpy(&in, h->in_out, sizeof(in));
  uint32_t payload = h->ent.payload_sz;
  entry->commit_id = h->ent.commit_id;
  requests_.fetch_add(1, std::memory_order_relaxed);
  // The kernel sets len as for /dev/fuse: header, op struct, payload.
  size_t op_size = in.len >= sizeof(in) + payload ? in.len - sizeof(in) - payload : SIZE_MAX;
  if (op_size > sizeof(h->op_in) || payload > payload_bytes_) {
    KDN_LOG_ERROR("FUSE io_uring: malformed request (opcode %u, len %u, payload %u)", in.opcode,
                  in.len, payload);
    fuse_out_header out = {sizeof(fuse_out_header), -EIO, in.unique};
    std::memcpy(h->in_out, &out, sizeof(out));
    h->ent.payload_sz = 0;
    Submit(queue, entry, kCmdCommitAndFetch);
    return;
  }
  std::byte* mem = entry->payload - op_size - sizeof(in);
  std::memcpy(mem, &in, sizeof(in));
  std::memcpy(mem + sizeof(in), h->op_in, op_size);
  entry->unique.store(in.unique);
  if (hooks_.answers_inline && hooks_.answers_inline(in, mem + sizeof(in))) {
    fuse_buf buf;
    std::memset(&buf, 0, sizeof(buf));
    buf.mem = mem;
    buf.size = in.len;
    fuse_session_process_buf(session_, &buf);
  } else {
    hooks_.enqueue(mem, in.len);
  }
}

FuseUring::Entry* FuseUring::FindInFlight(uint64_t unique) {
  for (auto& q : queues_) {
    for (auto& e : q->entries)
      if (e->unique.load(std::memory_order_acquire) == unique) return e.get();
  }
  return nullptr;
}

ssize_t FuseUring::Reply(Entry* entry, const struct iovec* iov, int count) {
  RingReqHeader* h = entry->header();
  ssize_t total = 0;
  size_t payload = 0;
  for (int i = 0; i < count; ++i) total += static_cast<ssize_t>(iov[i].iov_len);
  fuse_out_header out;
  std::memcpy(&out, iov[0].iov_base, sizeof(out));
  // Whatever follows the header in iov[0], then the other pieces, make the payload. memmove:
  // a piece may already lie in the payload buffer (the request's own bytes).
  auto append = [&](const void* p, size_t n) {
    if (payload + n > payload_bytes_) return false;
    if (p != entry->payload + payload) std::memmove(entry->payload + payload, p, n);
    payload += n;
    return true;
  };
  bool fits =
      append(static_cast<const char*>(iov[0].iov_base) + sizeof(out), iov[0].iov_len - sizeof(out));
  for (int i = 1; i < count && fits; ++i) fits = append(iov[i].iov_base, iov[i].iov_len);
  if (!fits) {
    KDN_LOG_ERROR("FUSE io_uring: a reply of %zd bytes exceeds the buffer", total);
    out.error = -EIO;
    payload = 0;
  }
  out.len = static_cast<uint32_t>(sizeof(out) + payload);
  std::memcpy(h->in_out, &out, sizeof(out));
  h->ent.payload_sz = static_cast<uint32_t>(payload);
  entry->unique.store(0);
  Queue* queue = entry->queue;
  if (t_queue_ == queue) {
    Submit(queue, entry, kCmdCommitAndFetch);
  } else {
    {
      MutexLock lock(queue->mu);
      queue->commits.push_back(entry);
    }
    uint64_t one = 1;
    (void)!::write(queue->wake.get(), &one, sizeof(one));
  }
  return total;
}

void FuseUring::Stop() {
  for (auto& q : queues_) {
    {
      MutexLock lock(q->mu);
      q->stopping = true;
    }
    uint64_t one = 1;
    (void)!::write(q->wake.get(), &one, sizeof(one));
  }
  for (auto& q : queues_) {
    if (q->thread.joinable()) q->thread.join();
  }
  // Closing a ring cancels the commands the kernel still holds.
  for (auto& q : queues_) {
    if (q->ring_ready) io_uring_queue_exit(&q->ring);
    q->ring_ready = false;
  }
}

}  // namespace kdn::fs
