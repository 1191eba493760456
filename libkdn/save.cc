#include "libkdn/save.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <vector>

#include "store/format/file_io.h"

namespace kdn::gpu {
namespace {

std::string TempPathFor(const std::string& path) {
  static std::atomic<uint64_t> counter{0};
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "" : path.substr(0, slash + 1);
  const std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  return dir + "." + base + ".kdn-tmp." + std::to_string(::getpid()) + "." +
         std::to_string(counter.fetch_add(1));
}

Status SyncDirectoryOf(const std::string& path) {
  const size_t slash = path.rfind('/');
  const std::string dir =
      slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  UniqueFd fd = OpenFd(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (!fd.valid()) return Status::FromErrno(dir + ": open", errno);
  if (::fsync(fd.get()) != 0) return Status::FromErrno(dir + ": fsync", errno);
  return Status::OK();
}

}  // namespace

Status SaveKv(Context& ctx, const SaveRequest& req) {
  const DestSpec& src = *req.src;
  const uint32_t n = static_cast<uint32_t>(req.tokens.size());
  const size_t block_bytes = size_t{n} * req.model.channels() * DTypeSize(req.model.dtype);
  KvWriter writer(req.model, req.codec, std::vector<uint32_t>(req.tokens.begin(), req.tokens.end()),
                  req.position_offset, req.chunk_tokens);
  std::vector<std::byte> k(block_bytes);
  std::vector<std::byte> v(block_bytes);
  for (uint32_t l = 0; l < req.model.n_layers; ++l) {
    KDN_RETURN_IF_ERROR(ctx.backend().GatherRows(src, l, KvKind::kKey, n, k.data()));
    KDN_RETURN_IF_ERROR(ctx.backend().GatherRows(src, l, KvKind::kValue, n, v.data()));
    Status s = writer.AddLayer(k, v);
    if (!s.ok()) return s.WithContext("layer " + std::to_string(l));
  }
  const std::string tmp = TempPathFor(req.path);
  Status s = writer.Finish(tmp, req.fsync);
  if (s.ok() && ::rename(tmp.c_str(), req.path.c_str()) != 0) {
    s = Status::FromErrno("rename " + tmp + " to " + req.path, errno);
  }
  if (!s.ok()) {
    ::unlink(tmp.c_str());
    return s;
  }
  if (req.fsync) return SyncDirectoryOf(req.path);
  return Status::OK();
}

}  // namespace kdn::gpu
