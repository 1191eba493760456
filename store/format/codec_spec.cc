// CodecSpec: the codec's text form ("q4:g64+zstd") and its validation.
#include <charconv>
#include <string>

#include <zstd.h>

#include "kdn/format.h"

namespace kdn {

namespace {

// zstd levels an encoder may ask for: the fast negative levels down to -100 and up to the maximum.
constexpr int kMinZstdLevel = -100;

Result<int> ParseInt(std::string_view text, std::string_view what, std::string_view whole) {
  int v = 0;
  const auto res = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || res.ec != std::errc() || res.ptr != text.data() + text.size()) {
    return Status::InvalidArgument("codec '" + std::string(whole) + "': bad " + std::string(what) +
                                   " '" + std::string(text) + "'");
  }
  return v;
}

}  // namespace

Result<CodecSpec> CodecSpec::Parse(std::string_view text) {
  // base, then options, each introduced by ':' (":g64", ":l9") or '+' ("+zstd"), in any order.
  const size_t base_end = text.find_first_of(":+");
  const std::string_view base = text.substr(0, base_end);
  CodecSpec spec;
  if (base == "raw") {
    spec.id = CodecId::kRaw;
  } else if (base == "lossless") {
    spec.id = CodecId::kLossless;
  } else if (base == "q8" || base == "q4" || base == "q2") {
    spec.id = CodecId::kQuant;
    spec.bits = static_cast<uint8_t>(base[1] - '0');
  } else if (base == "tc") {
    spec.id = CodecId::kTc;
    spec.bits = kTcDefaultQuality;
  } else {
    return Status::InvalidArgument(
        "unknown codec '" + std::string(text) +
        "' (have: raw, lossless, q8, q4, q2, tc; options :gN, :lN, +zstd, lossless's "
        ":entropy=zstd|rans, tc's :q=N, :t=id|had)");
  }
  bool level_given = false;
  size_t pos = base_end;
  while (pos != std::string_view::npos && pos < text.size()) {
    const char sep = text[pos];
    const size_t next = text.find_first_of(":+", pos + 1);
    const std::string_view opt = text.substr(
        pos + 1, next == std::string_view::npos ? std::string_view::npos : next - pos - 1);
    if (sep == '+' && opt == "zstd") {
      if (spec.id != CodecId::kQuant) {
        return Status::InvalidArgument(
            "codec '" + std::string(text) + "': +zstd applies to q8/q4/q2" +
            (spec.id == CodecId::kLossless ? " (lossless always uses zstd)" : ""));
      }
      spec.zstd = true;
    } else if (sep == ':' && !opt.empty() && opt[0] == 'g') {
      if (spec.id != CodecId::kQuant) {
        return Status::InvalidArgument("codec '" + std::string(text) +
                                       "': a group size (:gN) applies to q8/q4/q2 only");
      }
      KDN_ASSIGN_OR_RETURN(const int g, ParseInt(opt.substr(1), "group size", text));
      if (g < 1 || g > 65535) {
        return Status::InvalidArgument("codec '" + std::string(text) + "': group size " +
                                       std::to_string(g) + " out of range 1..65535");
      }
      spec.group_size = static_cast<uint16_t>(g);
    } else if (sep == ':' && spec.id == CodecId::kTc && opt.starts_with("q=")) {
      KDN_ASSIGN_OR_RETURN(const int q, ParseInt(opt.substr(2), "quality", text));
      if (q < kTcMinQuality || q > kTcMaxQuality) {
        return Status::InvalidArgument("codec '" + std::string(text) + "': quality " +
                                       std::to_string(q) + " out of range " +
                                       std::to_string(kTcMinQuality) + ".." +
                                       std::to_string(kTcMaxQuality));
      }
      spec.bits = static_cast<uint8_t>(q);
    } else if (sep == ':' && spec.id == CodecId::kLossless &&
               (opt == "entropy=rans" || opt == "entropy=zstd")) {
      spec.rans = opt == "entropy=rans";
    } else if (sep == ':' && spec.id == CodecId::kTc && (opt == "t=id" || opt == "t=had")) {
      spec.tc_transform = opt == "t=id" ? 0 : 1;
    } else if (sep == ':' && !opt.empty() && opt[0] == 'l' && spec.id != CodecId::kTc) {
      KDN_ASSIGN_OR_RETURN(const int l, ParseInt(opt.substr(1), "zstd level", text));
      if (l < kMinZstdLevel || l > ZSTD_maxCLevel()) {
        return Status::InvalidArgument("codec '" + std::string(text) + "': zstd level " +
                                       std::to_string(l) + " out of range " +
                                       std::to_string(kMinZstdLevel) + ".." +
                                       std::to_string(ZSTD_maxCLevel()));
      }
      spec.zstd_level = static_cast<int8_t>(l);
      level_given = true;
    } else {
      return Status::InvalidArgument("codec '" + std::string(text) + "': unknown option '" +
                                     std::string(1, sep) + std::string(opt) + "'");
    }
    pos = next;
  }
  if (level_given && spec.rans) {
    return Status::InvalidArgument("codec '" + std::string(text) +
                                   "': a zstd level needs the zstd stage (not entropy=rans)");
  }
  if (level_given && spec.id == CodecId::kRaw) {
    return Status::InvalidArgument("codec '" + std::string(text) + "': raw has no zstd level");
  }
  if (level_given && spec.id == CodecId::kQuant && !spec.zstd) {
    return Status::InvalidArgument("codec '" + std::string(text) +
                                   "': a zstd level needs the zstd stage (add +zstd)");
  }
  KDN_RETURN_IF_ERROR(spec.Validate());
  return spec;
}

std::string CodecSpec::Name() const {
  std::string s;
  switch (id) {
    case CodecId::kRaw:
      return "raw";
    case CodecId::kLossless:
      if (rans) return "lossless:entropy=rans";
      s = "lossless";
      break;
    case CodecId::kQuant:
      s = "q" + std::to_string(bits);
      if (group_size != 32) s += ":g" + std::to_string(group_size);
      break;
    case CodecId::kTc:
      s = "tc:q=" + std::to_string(bits);
      if (tc_transform == 0) s += ":t=id";
      return s;
  }
  const bool has_zstd = id == CodecId::kLossless || zstd;
  if (has_zstd && zstd_level != 3) s += ":l" + std::to_string(zstd_level);
  if (id == CodecId::kQuant && zstd) s += "+zstd";
  return s;
}

Status CodecSpec::Validate() const {
  switch (id) {
    case CodecId::kRaw:
    case CodecId::kLossless:
      if (bits != 0) return Status::InvalidArgument("codec " + Name() + ": bits must be 0");
      if (zstd)
        return Status::InvalidArgument("codec " + Name() + ": the zstd flag is for quant only");
      if (rans && id != CodecId::kLossless)
        return Status::InvalidArgument("codec " + Name() + ": the rANS stage is for lossless only");
      break;
    case CodecId::kQuant:
      if (bits != 8 && bits != 4 && bits != 2) {
        return Status::InvalidArgument("codec quant: bits " + std::to_string(bits) +
                                       " (have: 8, 4, 2)");
      }
      if (group_size == 0) return Status::InvalidArgument("codec " + Name() + ": group size 0");
      if (rans) return Status::InvalidArgument("codec " + Name() + ": the rANS stage is for lossless only");
      break;
    case CodecId::kTc:
      if (bits < kTcMinQuality || bits > kTcMaxQuality) {
        return Status::InvalidArgument("codec tc: quality " + std::to_string(bits) + " (have: " +
                                       std::to_string(kTcMinQuality) + ".." +
                                       std::to_string(kTcMaxQuality) + ")");
      }
      if (zstd || rans) return Status::InvalidArgument("codec " + Name() + ": tc has its own entropy stage");
      if (tc_transform > 1) return Status::InvalidArgument("codec tc: transform unknown");
      break;
    default:
      return Status::InvalidArgument("codec id " + std::to_string(static_cast<int>(id)) +
                                     " unknown");
  }
  if (zstd_level < kMinZstdLevel || zstd_level > ZSTD_maxCLevel()) {
    return Status::InvalidArgument("codec: zstd level " + std::to_string(zstd_level) +
                                   " out of range");
  }
  return Status::OK();
}

}  // namespace kdn
