#include "gpu/extent_source.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <map>

namespace kdn::gpu {
namespace {

constexpr uint64_t kAlign = 4096;
constexpr size_t kMaxAttrBytes = 16u << 20;
constexpr size_t kMaxExtents = 1u << 20;

bool ParseU64(std::string_view s, uint64_t* out) {
  if (s.empty()) return false;
  const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && p == s.data() + s.size();
}

bool IsHex32(std::string_view s) {
  return s.size() == 32 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
         });
}

Status Bad(const std::string& why) {
  return Status::Corruption(std::string(kExtentsAttr) + ": " + why);
}

}  // namespace

Result<std::optional<std::string>> ReadExtentsAttr(const std::string& path) {
  std::string buf;
  for (int attempt = 0; attempt < 4; ++attempt) {
    const ssize_t need = ::getxattr(path.c_str(), kExtentsAttr, nullptr, 0);
    if (need < 0) {
      if (errno == ENODATA || errno == ENOTSUP) return std::optional<std::string>();
      return Status::FromErrno(path + ": getxattr " + kExtentsAttr, errno);
    }
    if (static_cast<size_t>(need) > kMaxAttrBytes) return Bad("attribute larger than 16 MiB");
    buf.resize(static_cast<size_t>(need));
    const ssize_t got = ::getxattr(path.c_str(), kExtentsAttr, buf.data(), buf.size());
    if (got >= 0) {
      buf.resize(static_cast<size_t>(got));
      return std::optional<std::string>(std::move(buf));
    }
    if (errno != ERANGE) return Status::FromErrno(path + ": getxattr " + kExtentsAttr, errno);
    // The attribute grew between the two calls: ask again.
  }
  return Bad("attribute keeps changing size");
}

Result<ExtentList> ParseExtents(std::string_view text) {
  ExtentList list;
  std::map<std::string, uint32_t, std::less<>> segment_index;
  size_t line_no = 0;
  uint64_t sum = 0;
  while (!text.empty()) {
    const size_t nl = text.find('\n');
    if (nl == std::string_view::npos) return Bad("last line does not end with a newline");
    const std::string_view line = text.substr(0, nl);
    text.remove_prefix(nl + 1);
    ++line_no;
    if (line_no == 1) {
      // kdn-extents 1 <file_bytes> <chunk id>
      std::vector<std::string_view> f;
      size_t pos = 0;
      while (pos <= line.size()) {
        const size_t sp = std::min(line.find(' ', pos), line.size());
        f.push_back(line.substr(pos, sp - pos));
        pos = sp + 1;
      }
      if (f.size() != 4 || f[0] != "kdn-extents") return Bad("first line is not 'kdn-extents ...'");
      if (f[1] != "1") return Bad("unsupported version '" + std::string(f[1]) + "'");
      if (!ParseU64(f[2], &list.file_bytes) || list.file_bytes == 0) return Bad("bad file size");
      if (!IsHex32(f[3])) return Bad("bad chunk id");
      list.chunk_id = std::string(f[3]);
      continue;
    }
    // <absolute path> <offset> <length>; the path may hold spaces, the numbers cannot.
    const size_t sp2 = line.rfind(' ');
    const size_t sp1 = sp2 == std::string_view::npos || sp2 == 0 ? std::string_view::npos
                                                                 : line.rfind(' ', sp2 - 1);
    if (sp1 == std::string_view::npos) {
      return Bad("line " + std::to_string(line_no) + " is not '<path> <offset> <length>'");
    }
    const std::string_view path = line.substr(0, sp1);
    Extent e;
    if (path.empty() || path[0] != '/')
      return Bad("line " + std::to_string(line_no) + ": path is not absolute");
    if (!ParseU64(line.substr(sp1 + 1, sp2 - sp1 - 1), &e.seg_offset) ||
        !ParseU64(line.substr(sp2 + 1), &e.length) || e.length == 0) {
      return Bad("line " + std::to_string(line_no) + ": bad offset or length");
    }
    if (e.seg_offset % kAlign != 0)
      return Bad("line " + std::to_string(line_no) + ": offset not 4 KiB-aligned");
    if (sum >= list.file_bytes || e.length > list.file_bytes - sum) {
      return Bad("extent lengths exceed the file size");
    }
    if (list.extents.size() >= kMaxExtents) return Bad("too many extents");
    auto [it, inserted] =
        segment_index.try_emplace(std::string(path), static_cast<uint32_t>(list.segments.size()));
    if (inserted) list.segments.emplace_back(path);
    e.segment = it->second;
    e.file_offset = sum;
    sum += e.length;
    list.extents.push_back(e);
  }
  if (line_no == 0) return Bad("empty");
  if (list.extents.empty()) return Bad("no extents");
  if (sum != list.file_bytes) {
    return Bad("extent lengths sum to " + std::to_string(sum) + ", file has " +
               std::to_string(list.file_bytes) + " bytes");
  }
  return list;
}

Result<std::unique_ptr<ExtentSource>> ExtentSource::Open(ExtentList list) {
  std::unique_ptr<ExtentSource> src(new ExtentSource(std::move(list)));
  std::vector<uint64_t> seg_size;
  for (const std::string& path : src->list_.segments) {
    Segment seg;
    seg.fd = OpenFd(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (!seg.fd.valid()) return Status::FromErrno("segment " + path, errno);
    struct stat st;
    if (::fstat(seg.fd.get(), &st) != 0) {
      return Status::FromErrno("segment " + path + ": fstat", errno);
    }
    if (!S_ISREG(st.st_mode)) return Bad("segment " + path + " is not a regular file");
    seg_size.push_back(static_cast<uint64_t>(st.st_size));
    seg.direct_fd = OpenFd(path.c_str(), O_RDONLY | O_CLOEXEC | O_DIRECT);
    src->fds_.push_back(std::move(seg));
  }
  for (const Extent& e : src->list_.extents) {
    const uint64_t size = seg_size[e.segment];
    if (e.seg_offset > size || e.length > size - e.seg_offset) {
      return Bad("extent at " + std::to_string(e.seg_offset) + " (" + std::to_string(e.length) +
                 " bytes) lies past the end of " + src->list_.segments[e.segment]);
    }
  }
  return src;
}

Status ExtentSource::ReadPiece(const Extent& e, uint64_t in_extent,
                               std::span<std::byte> out) const {
  const Segment& seg = fds_[e.segment];
  const uint64_t at = e.seg_offset + in_extent;
  const std::string& name = list_.segments[e.segment];
  const bool aligned = at % kAlign == 0 && out.size() % kAlign == 0 &&
                       reinterpret_cast<uintptr_t>(out.data()) % kAlign == 0;
  if (aligned && seg.direct_fd.valid()) {
    Status s = PreadFull(seg.direct_fd.get(), at, out, "segment " + name);
    // Some filesystems accept O_DIRECT at open and refuse the read: the buffered path is correct.
    if (s.ok() || s.sys_errno() != EINVAL) return s;
  }
  return PreadFull(seg.fd.get(), at, out, "segment " + name);
}

Status ExtentSource::ReadAt(uint64_t offset, std::span<std::byte> out) const {
  if (offset > list_.file_bytes || out.size() > list_.file_bytes - offset) {
    return Status::Corruption("read past the end of the extent list");
  }
  // First extent that ends after `offset`.
  auto it = std::upper_bound(
      list_.extents.begin(), list_.extents.end(), offset,
      [](uint64_t off, const Extent& e) { return off < e.file_offset + e.length; });
  size_t done = 0;
  while (done < out.size()) {
    if (it == list_.extents.end()) return Status::Internal("extent list ends early");
    const uint64_t pos = offset + done;
    const uint64_t in_extent = pos - it->file_offset;
    const size_t n =
        static_cast<size_t>(std::min<uint64_t>(out.size() - done, it->length - in_extent));
    KDN_RETURN_IF_ERROR(ReadPiece(*it, in_extent, out.subspan(done, n)));
    done += n;
    ++it;
  }
  return Status::OK();
}

}  // namespace kdn::gpu
