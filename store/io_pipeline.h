// Keeps an engine's queue full during one chunk operation: operations are added in order, each
// with what to do when it completes (verify, copy out, give a buffer back), and completions are
// collected whenever the queue or the engine's buffers run out. The first failure is kept and
// returned by Add and Finish; everything in flight is always collected before the pipeline goes
// away, since the kernel may still be writing into the buffers.
#ifndef KDN_STORE_IO_PIPELINE_H_
#define KDN_STORE_IO_PIPELINE_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "iouring/io_engine.h"
#include "kdn/status.h"

namespace kdn::store {

class IoPipeline {
 public:
  using OnDone = std::function<Status(const io::IoOp&)>;
  using DescribeFd = std::function<std::string(int fd)>;

  IoPipeline(io::IoEngine& engine, DescribeFd describe_fd);
  ~IoPipeline();
  IoPipeline(const IoPipeline&) = delete;
  IoPipeline& operator=(const IoPipeline&) = delete;

  // A free engine buffer, collecting completions until one is.
  Result<uint32_t> AcquireBuffer();
  void ReleaseBuffer(uint32_t index) { free_buffers_.push_back(index); }

  // Queues `op`. `on_done` runs when it has moved all its bytes (or at least `expect` of them,
  // when given: a read that runs into the end of a file); a failed or short operation becomes the
  // pipeline's error instead.
  Status Add(const io::IoOp& op, OnDone on_done, std::optional<uint32_t> expect = std::nullopt);
  // Starts the operations queued so far now (Add starts them in small batches).
  Status Kick();
  // Collects every outstanding operation; the first error seen, if any.
  Status Finish();

 private:
  struct Slot {
    io::IoOp op;
    OnDone on_done;
    uint32_t expect = 0;
  };
  Status ReapOne();
  void Fail(Status s) {
    if (error_.ok()) error_ = std::move(s);
  }

  io::IoEngine& engine_;
  DescribeFd describe_fd_;
  std::vector<Slot> slots_;
  std::vector<uint32_t> free_slots_;
  std::vector<uint32_t> free_buffers_;
  uint32_t unkicked_ = 0;
  Status error_;
};

}  // namespace kdn::store

#endif  // KDN_STORE_IO_PIPELINE_H_
