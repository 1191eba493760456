#include "fs/edge/ns_object.h"

#include <sys/stat.h>
#include <xxhash.h>

#include <charconv>
#include <cinttypes>
#include <cstdio>

namespace kdn::edge {
namespace {

constexpr std::string_view kMagic = "kdn-ns 1";
constexpr char kHex[] = "0123456789abcdef";

std::string Hex(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 15]);
  }
  return out;
}

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

Status Bad(std::string_view why) {
  return Status::Corruption("namespace object: " + std::string(why));
}

std::string Time(int64_t ns) {
  // Seconds and nanoseconds; times before the epoch keep a non-negative nanosecond part.
  int64_t sec = ns / 1000000000;
  int64_t frac = ns % 1000000000;
  if (frac < 0) {
    frac += 1000000000;
    --sec;
  }
  char buf[48];
  std::snprintf(buf, sizeof(buf), "%" PRId64 ".%09" PRId64, sec, frac);
  return buf;
}

bool IsUserXattr(std::string_view name) {
  return name.size() > 5 && name.size() <= 255 && name.starts_with("user.") &&
         name.find_first_of(std::string_view(" \n\0", 3)) == std::string_view::npos;
}

// Reads one line "key rest" of `text` at `pos` (the line must end in '\n').
struct Lines {
  std::string_view text;
  size_t pos = 0;
  bool Next(std::string_view& key, std::string_view& rest) {
    if (pos >= text.size()) return false;
    size_t nl = text.find('\n', pos);
    if (nl == std::string_view::npos) return false;
    std::string_view line = text.substr(pos, nl - pos);
    pos = nl + 1;
    size_t sp = line.find(' ');
    if (sp == std::string_view::npos) return false;
    key = line.substr(0, sp);
    rest = line.substr(sp + 1);
    return true;
  }
};

// One spelling per number, so that an accepted object encodes back to the same bytes: digits of
// the base only (lower-case), no sign, no leading zero.
template <typename T>
bool ParseNumber(std::string_view s, T& out, int base = 10) {
  if (s.empty() || s.size() > 24) return false;
  if (s.size() > 1 && s[0] == '0') return false;
  for (char c : s) {
    const int d = HexDigit(c);
    if (d < 0 || d >= base) return false;
  }
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out, base);
  return ec == std::errc() && end == s.data() + s.size();
}

bool ParseTime(std::string_view s, int64_t& ns) {
  size_t dot = s.find('.');
  if (dot == std::string_view::npos || s.size() - dot - 1 != 9) return false;
  int64_t sec = 0;
  uint32_t frac = 0;
  std::string_view sec_text = s.substr(0, dot);
  if (sec_text.starts_with('-')) {
    if (!ParseNumber(sec_text.substr(1), sec) || sec == 0) return false;  // no "-0"
    sec = -sec;
  } else if (!ParseNumber(sec_text, sec)) {
    return false;
  }
  auto frac_text = s.substr(dot + 1);
  for (char c : frac_text) {
    if (c < '0' || c > '9') return false;
  }
  auto [end, ec] = std::from_chars(frac_text.data(), frac_text.data() + 9, frac);
  if (ec != std::errc() || end != frac_text.data() + 9 || frac > 999999999) return false;
  // Within +-292 years of the epoch, what int64 nanoseconds hold.
  if (sec > 9'000'000'000LL || sec < -9'000'000'000LL) return false;
  ns = sec * 1000000000 + frac;
  return true;
}

}  // namespace

std::string NsKey(std::string_view path) {
  std::string key(kNsPrefix);
  key += path;  // path starts with '/'
  return key;
}

std::string DirMarkerKey(std::string_view dir_path) {
  return NsKey(dir_path) + "/" + std::string(kDirMarkerName);
}

std::optional<NsObject> NsObjectOfRecord(std::string_view record) {
  size_t nul = record.find('\0');
  if (nul == std::string_view::npos) return std::nullopt;
  auto object = DecodeNsObject(record.substr(nul + 1));
  if (!object.ok()) return std::nullopt;
  return std::move(*object);
}

std::string ChunkKey(const ChunkId& id) {
  return "chunks/" + id.ToHex();
}

std::string EncodeNsObject(const NsObject& o) {
  std::string out(kMagic);
  out += '\n';
  out += "chunk " + (o.chunk.IsZero() ? std::string(64, '0') : o.chunk.ToHex()) + '\n';
  out += "size " + std::to_string(o.size) + '\n';
  char mode[16];
  std::snprintf(mode, sizeof(mode), "0%o", o.mode);
  out += "mode " + std::string(mode) + '\n';
  out += "uid " + std::to_string(o.uid) + '\n';
  out += "gid " + std::to_string(o.gid) + '\n';
  out += "mtime " + Time(o.mtime_ns) + '\n';
  out += "ctime " + Time(o.ctime_ns) + '\n';
  size_t n = 0;
  for (const auto& [name, value] : o.xattrs) {
    if (n == kMaxNsXattrs || !IsUserXattr(name) || value.size() > kMaxNsXattrValue) continue;
    out += "xattr " + name + ' ' + Hex(value) + '\n';
    ++n;
  }
  char sum[24];
  std::snprintf(sum, sizeof(sum), "%016" PRIx64,
                static_cast<uint64_t>(XXH3_64bits(out.data(), out.size())));
  out += "sum " + std::string(sum) + '\n';
  return out;
}

namespace {

// The body of DecodeNsObject and DecodeDirMarker: `type` is the file type the object must have.
Result<NsObject> DecodeObject(std::string_view bytes, uint32_t type) {
  if (bytes.size() > kMaxNsObjectBytes) return Bad("larger than 64 KiB");
  if (!bytes.starts_with("kdn-ns ")) return Bad("no kdn-ns magic");
  size_t first_nl = bytes.find('\n');
  if (first_nl == std::string_view::npos) return Bad("truncated");
  if (bytes.substr(0, first_nl) != kMagic) {
    return Status::Unsupported("namespace object version " +
                               std::string(bytes.substr(7, std::min<size_t>(first_nl - 7, 16))));
  }
  // The checksum line is the last one: everything before it is what it covers.
  if (!bytes.ends_with('\n')) return Bad("truncated");
  size_t sum_at = bytes.rfind("\nsum ", bytes.size() - 1);
  if (sum_at == std::string_view::npos) return Bad("no sum line");
  std::string_view covered = bytes.substr(0, sum_at + 1);
  std::string_view sum_text = bytes.substr(sum_at + 5, bytes.size() - sum_at - 6);
  uint64_t sum = 0;
  // Sixteen lower-case hex digits, zero-padded (so not ParseNumber's no-leading-zero form).
  bool sum_ok = sum_text.size() == 16;
  for (char c : sum_text) sum_ok = sum_ok && HexDigit(c) >= 0;
  if (sum_ok) {
    auto [end, ec] = std::from_chars(sum_text.data(), sum_text.data() + 16, sum, 16);
    sum_ok = ec == std::errc() && end == sum_text.data() + 16;
  }
  if (!sum_ok) return Bad("malformed sum");
  if (sum != XXH3_64bits(covered.data(), covered.size())) return Bad("checksum mismatch");

  NsObject o;
  Lines lines{covered, first_nl + 1};
  std::string_view key, rest;
  auto expect = [&](std::string_view want) { return lines.Next(key, rest) && key == want; };
  if (!expect("chunk") || rest.size() != 64) return Bad("chunk line");
  for (char c : rest) {
    if (HexDigit(c) < 0) return Bad("chunk line");  // lower-case hex only
  }
  if (rest != std::string(64, '0')) {
    KDN_ASSIGN_OR_RETURN(o.chunk, ChunkId::FromHex(rest));
  }
  if (!expect("size") || !ParseNumber(rest, o.size)) return Bad("size line");
  if (!expect("mode") || rest.size() < 2 || rest[0] != '0' ||
      !ParseNumber(rest.substr(1), o.mode, 8) || (o.mode & S_IFMT) != type ||
      (o.mode & ~(S_IFMT | 07777))) {
    return Bad(type == S_IFDIR ? "mode line (directories only)" : "mode line (regular files only)");
  }
  if (o.chunk.IsZero() != (o.size == 0)) return Bad("size and chunk disagree");
  if (!expect("uid") || !ParseNumber(rest, o.uid)) return Bad("uid line");
  if (!expect("gid") || !ParseNumber(rest, o.gid)) return Bad("gid line");
  if (!expect("mtime") || !ParseTime(rest, o.mtime_ns)) return Bad("mtime line");
  if (!expect("ctime") || !ParseTime(rest, o.ctime_ns)) return Bad("ctime line");
  while (lines.Next(key, rest)) {
    if (key != "xattr") return Bad("unexpected line " + std::string(key.substr(0, 16)));
    if (o.xattrs.size() == kMaxNsXattrs) return Bad("more than 64 xattrs");
    size_t sp = rest.find(' ');
    if (sp == std::string_view::npos) return Bad("xattr line");
    std::string_view name = rest.substr(0, sp), hex = rest.substr(sp + 1);
    if (!IsUserXattr(name)) return Bad("xattr name");
    if (hex.size() % 2 != 0 || hex.size() / 2 > kMaxNsXattrValue) return Bad("xattr value");
    std::string value;
    for (size_t i = 0; i < hex.size(); i += 2) {
      int hi = HexDigit(hex[i]), lo = HexDigit(hex[i + 1]);
      if (hi < 0 || lo < 0) return Bad("xattr value");
      value.push_back(static_cast<char>(hi << 4 | lo));
    }
    o.xattrs.emplace_back(std::string(name), std::move(value));
  }
  if (lines.pos != covered.size()) return Bad("malformed line");
  if (type == S_IFDIR && (!o.chunk.IsZero() || !o.xattrs.empty())) {
    return Bad("a directory's marker with content or xattrs");
  }
  return o;
}

}  // namespace

Result<NsObject> DecodeNsObject(std::string_view bytes) { return DecodeObject(bytes, S_IFREG); }

std::string EncodeDirMarker(uint32_t mode, uint32_t uid, uint32_t gid, int64_t mtime_ns,
                            int64_t ctime_ns) {
  NsObject o;
  o.mode = S_IFDIR | (mode & 07777);
  o.uid = uid;
  o.gid = gid;
  o.mtime_ns = mtime_ns;
  o.ctime_ns = ctime_ns;
  return EncodeNsObject(o);
}

Result<NsObject> DecodeDirMarker(std::string_view bytes) {
  if (bytes.empty()) return Status::NotFound("an empty directory marker (no attributes)");
  return DecodeObject(bytes, S_IFDIR);
}

bool IsRemoteDirRecord(std::string_view record) {
  return record.substr(0, record.find('\0')) == kRemoteDirRecord;
}

std::string_view MarkerEtagOfRecord(std::string_view record) {
  const size_t nul = record.find('\0');
  return nul == std::string_view::npos ? std::string_view() : record.substr(nul + 1);
}

}  // namespace kdn::edge
