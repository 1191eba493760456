// The zstd stage of the lossless and quant codecs: one frame per block, content size declared,
// nothing after it. Contexts are per thread and reused.
#ifndef KDN_STORE_FORMAT_ZSTD_UTIL_H_
#define KDN_STORE_FORMAT_ZSTD_UTIL_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "kdn/status.h"

namespace kdn::zstd {

// Appends one frame holding `src` (content size declared) to `out`.
Status CompressAppend(std::span<const std::byte> src, int level, std::vector<std::byte>* out);

// `frame` must be exactly one zstd frame that declares out.size() content bytes; decompresses it
// into `out`.
Status DecompressExact(std::span<const std::byte> frame, std::span<std::byte> out);

// Checks a frame fed in pieces with bounded memory (verification of blocks of any size): the
// declared content size must be `expected`, the frame must decode, and nothing may follow it.
// Decoded bytes are handed to `sink` with their position in the content.
class StreamChecker {
 public:
  using Sink = std::function<Status(uint64_t pos, std::span<const std::byte> bytes)>;
  StreamChecker(uint64_t expected, Sink sink);
  ~StreamChecker();
  StreamChecker(const StreamChecker&) = delete;
  StreamChecker& operator=(const StreamChecker&) = delete;
  // Feed the next piece of the frame; the first failure sticks.
  Status Feed(std::span<const std::byte> in);
  // After the last piece.
  Status Finish();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kdn::zstd

#endif  // KDN_STORE_FORMAT_ZSTD_UTIL_H_
