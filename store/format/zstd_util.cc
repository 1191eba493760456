// zstd stage: compression, exact one-frame decompression and streaming verification.
#include "store/format/zstd_util.h"

#include <zstd.h>

#include <cstring>
#include <string>

#include "store/format/scratch.h"

namespace kdn::zstd {

namespace {

struct CCtxDeleter {
  void operator()(ZSTD_CCtx* c) const { ZSTD_freeCCtx(c); }
};
struct DCtxDeleter {
  void operator()(ZSTD_DCtx* d) const { ZSTD_freeDCtx(d); }
};

ZSTD_CCtx* ThreadCCtx() {
  thread_local std::unique_ptr<ZSTD_CCtx, CCtxDeleter> cctx(ZSTD_createCCtx());
  return cctx.get();
}

ZSTD_DCtx* ThreadDCtx() {
  thread_local std::unique_ptr<ZSTD_DCtx, DCtxDeleter> dctx(ZSTD_createDCtx());
  return dctx.get();
}

std::string Num(uint64_t v) {
  return std::to_string(v);
}

Status CheckDeclaredSize(std::span<const std::byte> frame, uint64_t expected) {
  const unsigned long long cs = ZSTD_getFrameContentSize(frame.data(), frame.size());
  if (cs == ZSTD_CONTENTSIZE_ERROR) {
    return Status::Corruption("zstd stage: not a zstd frame (bad or truncated frame header)");
  }
  if (cs == ZSTD_CONTENTSIZE_UNKNOWN) {
    return Status::Corruption("zstd stage: frame does not declare its content size");
  }
  if (cs != expected) {
    return Status::Corruption("zstd stage: frame declares " + Num(cs) +
                              " content bytes, expected " + Num(expected));
  }
  return Status::OK();
}

}  // namespace

Status CompressAppend(std::span<const std::byte> src, int level, std::vector<std::byte>* out) {
  ZSTD_CCtx* cctx = ThreadCCtx();
  if (cctx == nullptr) return Status::NoSpace("zstd: cannot create a compression context");
  ZSTD_CCtx_reset(cctx, ZSTD_reset_session_and_parameters);
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level);
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 1);
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 0);  // the block's xxh3 covers it
  const size_t bound = ZSTD_compressBound(src.size());
  KDN_ASSIGN_OR_RETURN(std::span<std::byte> dst, scratch::Get(scratch::Slot::kStream, bound));
  const size_t n = ZSTD_compress2(cctx, dst.data(), dst.size(), src.data(), src.size());
  if (ZSTD_isError(n))
    return Status::Internal(std::string("zstd compress: ") + ZSTD_getErrorName(n));
  out->insert(out->end(), dst.begin(), dst.begin() + static_cast<std::ptrdiff_t>(n));
  return Status::OK();
}

Status DecompressExact(std::span<const std::byte> frame, std::span<std::byte> out) {
  KDN_RETURN_IF_ERROR(CheckDeclaredSize(frame, out.size()));
  const size_t frame_size = ZSTD_findFrameCompressedSize(frame.data(), frame.size());
  if (ZSTD_isError(frame_size)) {
    return Status::Corruption(std::string("zstd stage: ") + ZSTD_getErrorName(frame_size));
  }
  if (frame_size != frame.size()) {
    return Status::Corruption("zstd stage: " + Num(frame.size() - frame_size) +
                              " bytes follow the frame");
  }
  ZSTD_DCtx* dctx = ThreadDCtx();
  if (dctx == nullptr) return Status::NoSpace("zstd: cannot create a decompression context");
  const size_t n = ZSTD_decompressDCtx(dctx, out.data(), out.size(), frame.data(), frame.size());
  if (ZSTD_isError(n))
    return Status::Corruption(std::string("zstd stage: ") + ZSTD_getErrorName(n));
  if (n != out.size()) {
    return Status::Corruption("zstd stage: frame decodes to " + Num(n) + " bytes, expected " +
                              Num(out.size()));
  }
  return Status::OK();
}

struct StreamChecker::Impl {
  uint64_t expected = 0;
  Sink sink;
  std::unique_ptr<ZSTD_DCtx, DCtxDeleter> dctx;
  Status error;
  bool started = false;
  bool done = false;
  uint64_t produced = 0;
};

StreamChecker::StreamChecker(uint64_t expected, Sink sink) : impl_(std::make_unique<Impl>()) {
  impl_->expected = expected;
  impl_->sink = std::move(sink);
  impl_->dctx.reset(ZSTD_createDCtx());
  if (!impl_->dctx) impl_->error = Status::NoSpace("zstd: cannot create a decompression context");
}

StreamChecker::~StreamChecker() = default;

Status StreamChecker::Feed(std::span<const std::byte> in_bytes) {
  Impl& s = *impl_;
  if (!s.error.ok() || in_bytes.empty()) return s.error;
  if (!s.started) {
    s.started = true;
    if (Status st = CheckDeclaredSize(in_bytes, s.expected); !st.ok()) return s.error = st;
  }
  constexpr size_t kWindow = size_t{1} << 20;
  auto window = scratch::Get(scratch::Slot::kStream, kWindow);
  if (!window.ok()) return s.error = window.status();
  ZSTD_inBuffer in{in_bytes.data(), in_bytes.size(), 0};
  while (true) {
    if (s.done) {
      if (in.pos < in.size) {
        return s.error = Status::Corruption("zstd stage: bytes follow the frame");
      }
      return Status::OK();
    }
    ZSTD_outBuffer out{window->data(), window->size(), 0};
    const size_t ret = ZSTD_decompressStream(s.dctx.get(), &out, &in);
    if (ZSTD_isError(ret)) {
      return s.error = Status::Corruption(std::string("zstd stage: ") + ZSTD_getErrorName(ret));
    }
    if (out.pos > 0) {
      if (out.pos > s.expected - s.produced) {
        return s.error = Status::Corruption("zstd stage: frame decodes to more than the declared " +
                                            Num(s.expected) + " bytes");
      }
      if (Status st = s.sink(s.produced, std::span<const std::byte>(window->data(), out.pos));
          !st.ok()) {
        return s.error = st;
      }
      s.produced += out.pos;
    }
    if (ret == 0) {
      s.done = true;
      continue;
    }
    if (in.pos == in.size && out.pos < out.size) return Status::OK();  // needs more input
  }
}

Status StreamChecker::Finish() {
  Impl& s = *impl_;
  if (!s.error.ok()) return s.error;
  if (!s.done) return Status::Corruption("zstd stage: frame is truncated");
  if (s.produced != s.expected) {
    return Status::Corruption("zstd stage: frame decodes to " + Num(s.produced) +
                              " bytes, expected " + Num(s.expected));
  }
  return Status::OK();
}

}  // namespace kdn::zstd
