#include "fs/kdnfs/kdn_xattrs.h"

#include <sys/stat.h>

#include <cerrno>

namespace kdn::fs {
namespace {

constexpr std::string_view kId = "user.kdn.id";
constexpr std::string_view kModel = "user.kdn.model";
constexpr std::string_view kFingerprint = "user.kdn.fingerprint";
constexpr std::string_view kTokens = "user.kdn.tokens";
constexpr std::string_view kLayers = "user.kdn.layers";
constexpr std::string_view kPositionOffset = "user.kdn.position_offset";
constexpr std::string_view kChunkTokens = "user.kdn.chunk_tokens";
constexpr std::string_view kCodec = "user.kdn.codec";
constexpr std::string_view kRawBytes = "user.kdn.raw_bytes";
constexpr std::string_view kEvictable = "user.kdn.evictable";
constexpr std::string_view kPin = "user.kdn.pin";

constexpr std::string_view kKvNames[] = {kModel,          kFingerprint, kTokens, kLayers,
                                         kPositionOffset, kChunkTokens, kCodec,  kRawBytes};

bool IsRegular(const InodeAttr& a) {
  return S_ISREG(a.mode);
}
bool IsDir(const InodeAttr& a) {
  return S_ISDIR(a.mode);
}

Status NoData(std::string_view name) {
  return Status::NotFound("no attribute " + std::string(name));
}

Status ReadOnly(std::string_view name) {
  return Status::FromErrno(std::string(name) + " is computed by kdnfs and read-only", EPERM);
}

// "1"/"0", "true"/"false", with an optional trailing newline (as `echo` writes it).
Result<bool> ParseFlag(std::string_view value) {
  if (!value.empty() && value.back() == '\n') value.remove_suffix(1);
  if (value == "1" || value == "true") return true;
  if (value == "0" || value == "false") return false;
  return Status::InvalidArgument("expected 1 or 0, got '" + std::string(value) + "'");
}

}  // namespace

Result<std::string> GetKdnXattr(Store& store, const InodeAttr& attr, std::string_view name) {
  if (name == kEvictable) {
    if (!IsRegular(attr) && !IsDir(attr)) return NoData(name);
    return std::string(attr.evictable ? "1" : "0");
  }
  if (!IsRegular(attr)) return NoData(name);
  if (name == kPin) return std::string(attr.pinned ? "1" : "0");
  if (attr.chunk.IsZero()) return NoData(name);
  if (name == kId) return attr.chunk.ToHex();
  bool kv_name = false;
  for (auto n : kKvNames) kv_name |= (n == name);
  if (!kv_name) return NoData(name);
  KDN_ASSIGN_OR_RETURN(ChunkInfo info, store.StatChunk(attr.chunk));
  if (!info.kv) return NoData(name);
  const KvSummary& kv = *info.kv;
  if (name == kModel) return kv.model;
  if (name == kFingerprint) return kv.fingerprint.ToHex();
  if (name == kTokens) return std::to_string(kv.n_tokens);
  if (name == kLayers) return std::to_string(kv.n_layers);
  if (name == kPositionOffset) return std::to_string(kv.position_offset);
  if (name == kChunkTokens) return std::to_string(kv.chunk_tokens);
  if (name == kCodec) return kv.codec;
  return std::to_string(kv.raw_bytes);  // kRawBytes, the last of kKvNames
}

Result<std::vector<std::string>> ListKdnXattrs(Store& store, const InodeAttr& attr) {
  std::vector<std::string> names;
  if (IsDir(attr)) {
    names.emplace_back(kEvictable);
    return names;
  }
  if (!IsRegular(attr)) return names;
  if (!attr.chunk.IsZero()) names.emplace_back(kId);
  names.emplace_back(kEvictable);
  names.emplace_back(kPin);
  if (attr.chunk.IsZero()) return names;
  KDN_ASSIGN_OR_RETURN(ChunkInfo info, store.StatChunk(attr.chunk));
  if (info.kv) {
    for (auto n : kKvNames) names.emplace_back(n);
  }
  return names;
}

Status SetKdnXattr(Store& store, const InodeAttr& attr, std::string_view name,
                   std::string_view value) {
  if (name == kEvictable) {
    if (!IsRegular(attr) && !IsDir(attr)) {
      return Status::FromErrno("user.kdn.evictable applies to directories and files", EPERM);
    }
    KDN_ASSIGN_OR_RETURN(bool on, ParseFlag(value));
    return store.SetEvictable(attr.ino, on);
  }
  if (name == kPin) {
    if (!IsRegular(attr)) return Status::FromErrno("user.kdn.pin applies to files", EPERM);
    KDN_ASSIGN_OR_RETURN(bool on, ParseFlag(value));
    return store.SetPinned(attr.ino, on);
  }
  return ReadOnly(name);
}

}  // namespace kdn::fs
