#include "libkdn/save.h"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string_view>
#include <vector>

#include "store/format/file_io.h"

namespace kdn::libkdn {
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

// Finishes `writer` into a temporary file beside `path` and renames it over `path`.
Status WriteAtomically(KvWriter& writer, const std::string& path, bool fsync) {
  const std::string tmp = TempPathFor(path);
  Status s = writer.Finish(tmp, fsync);
  if (s.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) {
    s = Status::FromErrno("rename " + tmp + " to " + path, errno);
  }
  if (!s.ok()) {
    ::unlink(tmp.c_str());
    return s;
  }
  if (fsync) return SyncDirectoryOf(path);
  return Status::OK();
}

// Every layer of `src` ([tokens][channels of `model`]) gathered through the backend into `writer`.
Status AddGatheredLayers(Context& ctx, const DestSpec& src, const ModelIdentity& model, uint32_t n,
                         KvWriter& writer) {
  const size_t block_bytes = size_t{n} * model.channels() * DTypeSize(model.dtype);
  std::vector<std::byte> k(block_bytes);
  std::vector<std::byte> v(block_bytes);
  for (uint32_t l = 0; l < model.n_layers; ++l) {
    KDN_RETURN_IF_ERROR(ctx.backend().GatherRows(src, l, KvKind::kKey, n, k.data()));
    KDN_RETURN_IF_ERROR(ctx.backend().GatherRows(src, l, KvKind::kValue, n, v.data()));
    Status s = writer.AddLayer(k, v);
    if (!s.ok()) return s.WithContext("layer " + std::to_string(l));
  }
  return Status::OK();
}

struct PathParts {
  std::string dir;   // "" or ending in '/'
  std::string base;
};
PathParts SplitPath(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return {"", path};
  return {path.substr(0, slash + 1), path.substr(slash + 1)};
}

std::string PartPrefix(const std::string& base) { return "." + base + ".kdn-heads."; }

// The model restricted to `heads` KV heads: what a part file says it holds.
ModelIdentity PartModel(const ModelIdentity& model, uint32_t heads) {
  ModelIdentity m = model;
  m.n_kv_heads = heads;
  return m;
}

struct Part {
  uint32_t begin = 0;
  uint32_t end = 0;
  std::string path;
  std::unique_ptr<KvReader> reader;
};

// A decimal number without sign, spaces or leading zeros, below 2^32.
bool ParseU32Exact(std::string_view text, uint32_t* out) {
  if (text.empty() || text.size() > 10 || (text.size() > 1 && text[0] == '0')) return false;
  uint64_t v = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  if (v > UINT32_MAX) return false;
  *out = static_cast<uint32_t>(v);
  return true;
}

// "A-B" with A < B <= n_kv_heads, nothing else.
bool ParseHeadRange(std::string_view text, uint32_t n_kv_heads, uint32_t* begin, uint32_t* end) {
  const size_t dash = text.find('-');
  if (dash == std::string_view::npos) return false;
  uint32_t a = 0, b = 0;
  if (!ParseU32Exact(text.substr(0, dash), &a) || !ParseU32Exact(text.substr(dash + 1), &b)) {
    return false;
  }
  if (a >= b || b > n_kv_heads) return false;
  *begin = a;
  *end = b;
  return true;
}

// The parts beside req.path that belong to this save (same model, tokens and position), opened.
// NotFound when a part vanished between the listing and its open (a rank completed the file).
Result<std::vector<Part>> OpenParts(const SaveRequest& req) {
  const PathParts pp = SplitPath(req.path);
  const std::string prefix = PartPrefix(pp.base);
  const std::string dir = pp.dir.empty() ? "." : pp.dir;
  std::unique_ptr<DIR, int (*)(DIR*)> d(::opendir(dir.c_str()), ::closedir);
  if (!d) return Status::FromErrno(dir + ": opendir", errno);
  std::vector<Part> parts;
  while (const dirent* e = ::readdir(d.get())) {
    const std::string name = e->d_name;
    if (name.compare(0, prefix.size(), prefix) != 0) continue;
    Part p;
    if (!ParseHeadRange(name.substr(prefix.size()), req.model.n_kv_heads, &p.begin, &p.end)) {
      continue;  // a temporary file or someone else's name
    }
    p.path = pp.dir + name;
    Result<std::unique_ptr<KvReader>> r = KvReader::Open(p.path);
    if (!r.ok()) {
      if (r.status().code() == Code::kNotFound) return r.status();
      continue;  // unreadable: not a part of this save
    }
    const KvHeader& h = (*r)->header();
    if (!h.model.Compare(PartModel(req.model, p.end - p.begin)).ok() ||
        h.position_offset != req.position_offset || h.tokens.size() != req.tokens.size() ||
        !std::equal(h.tokens.begin(), h.tokens.end(), req.tokens.begin())) {
      continue;  // left by another save to this path
    }
    p.reader = std::move(*r);
    parts.push_back(std::move(p));
  }
  return parts;
}

}  // namespace

Status SaveKv(Context& ctx, const SaveRequest& req) {
  const uint32_t n = static_cast<uint32_t>(req.tokens.size());
  KvWriter writer(req.model, req.codec, std::vector<uint32_t>(req.tokens.begin(), req.tokens.end()),
                  req.position_offset, req.chunk_tokens, req.head_groups);
  KDN_RETURN_IF_ERROR(AddGatheredLayers(ctx, *req.src, req.model, n, writer));
  return WriteAtomically(writer, req.path, req.fsync);
}

Status SaveKvHeads(Context& ctx, const SaveRequest& req, uint32_t head_begin, uint32_t head_end,
                   bool* wrote_file) {
  *wrote_file = false;
  const uint32_t n = static_cast<uint32_t>(req.tokens.size());
  const std::vector<uint32_t> tokens(req.tokens.begin(), req.tokens.end());
  {
    // The share, raw: the part is read back once, by whichever rank completes the file.
    const ModelIdentity part_model = PartModel(req.model, head_end - head_begin);
    KvWriter part(part_model, CodecSpec{}, tokens, req.position_offset, req.chunk_tokens);
    KDN_RETURN_IF_ERROR(AddGatheredLayers(ctx, *req.src, part_model, n, part));
    const PathParts pp = SplitPath(req.path);
    KDN_RETURN_IF_ERROR(WriteAtomically(part,
                                        pp.dir + PartPrefix(pp.base) + std::to_string(head_begin) +
                                            "-" + std::to_string(head_end),
                                        req.fsync));
  }
  Result<std::vector<Part>> parts = OpenParts(req);
  if (!parts.ok()) {
    return parts.status().code() == Code::kNotFound ? Status::OK() : parts.status();
  }
  // For every head, the first part that holds it.
  const uint32_t heads = req.model.n_kv_heads;
  std::vector<int> holder(heads, -1);
  for (size_t i = 0; i < parts->size(); ++i) {
    for (uint32_t h = (*parts)[i].begin; h < (*parts)[i].end; ++h) {
      if (holder[h] < 0) holder[h] = static_cast<int>(i);
    }
  }
  for (int i : holder) {
    if (i < 0) return Status::OK();  // other ranks still to come
  }
  const size_t esize = DTypeSize(req.model.dtype);
  const size_t head_bytes = size_t{req.model.head_dim} * esize;
  const size_t block_bytes = size_t{n} * req.model.channels() * esize;
  KvWriter writer(req.model, req.codec, tokens, req.position_offset, req.chunk_tokens,
                  req.head_groups);
  std::vector<std::byte> kv[2] = {std::vector<std::byte>(block_bytes),
                                  std::vector<std::byte>(block_bytes)};
  std::vector<std::byte> part_block;
  for (uint32_t l = 0; l < req.model.n_layers; ++l) {
    for (int kind = 0; kind < 2; ++kind) {
      for (const Part& p : *parts) {
        const uint32_t width = p.end - p.begin;
        part_block.resize(size_t{n} * width * head_bytes);
        KDN_RETURN_IF_ERROR(p.reader->DecodeBlock(l, static_cast<KvKind>(kind), req.model.dtype,
                                                  part_block));
        for (uint32_t h = p.begin; h < p.end; ++h) {
          if (&(*parts)[static_cast<size_t>(holder[h])] != &p) continue;
          for (uint32_t t = 0; t < n; ++t) {
            std::memcpy(kv[kind].data() + (size_t{t} * heads + h) * head_bytes,
                        part_block.data() + (size_t{t} * width + (h - p.begin)) * head_bytes,
                        head_bytes);
          }
        }
      }
    }
    Status s = writer.AddLayer(kv[0], kv[1]);
    if (!s.ok()) return s.WithContext("layer " + std::to_string(l));
  }
  KDN_RETURN_IF_ERROR(WriteAtomically(writer, req.path, req.fsync));
  *wrote_file = true;
  for (const Part& p : *parts) ::unlink(p.path.c_str());  // another completing rank may race us
  return Status::OK();
}

}  // namespace kdn::libkdn
