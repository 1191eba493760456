#include "store/format/set_prefix.h"

#include <algorithm>
#include <charconv>

namespace kdn {
namespace {

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\n'))
    s.remove_suffix(1);
  return s;
}

}  // namespace

Result<std::vector<uint32_t>> ParseTrustList(std::string_view text) {
  if (text.size() > kMaxTrustBytes) {
    return Status::InvalidArgument("trust list longer than " + std::to_string(kMaxTrustBytes) +
                                   " bytes");
  }
  std::vector<uint32_t> out;
  if (Trim(text).empty()) return out;
  while (true) {
    size_t comma = text.find(',');
    std::string_view item = Trim(text.substr(0, comma));
    uint32_t uid = 0;
    auto [end, ec] = std::from_chars(item.data(), item.data() + item.size(), uid);
    // uid -1 is "no uid" to chown(2): it names nobody.
    if (item.empty() || ec != std::errc() || end != item.data() + item.size() ||
        uid == UINT32_MAX) {
      return Status::InvalidArgument("trust list: '" + std::string(item) +
                                     "' is not a uid (a list is \"uid,uid,...\")");
    }
    out.push_back(uid);
    if (out.size() > kMaxTrustedUids) {
      return Status::InvalidArgument("trust list: more than " + std::to_string(kMaxTrustedUids) +
                                     " uids");
    }
    if (comma == std::string_view::npos) break;
    text.remove_prefix(comma + 1);
  }
  return out;
}

std::string FormatTrustList(std::span<const uint32_t> uids) {
  std::vector<uint32_t> sorted(uids.begin(), uids.end());
  std::sort(sorted.begin(), sorted.end());
  sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
  std::string out;
  for (uint32_t uid : sorted) {
    if (!out.empty()) out += ',';
    out += std::to_string(uid);
  }
  return out;
}

std::vector<uint32_t> TrustedOwners(uint32_t set_owner, std::span<const uint32_t> listed) {
  std::vector<uint32_t> out{set_owner};
  for (uint32_t uid : listed) {
    if (std::find(out.begin(), out.end(), uid) == out.end()) out.push_back(uid);
  }
  return out;
}

Result<uint32_t> PrefixTokensOf(const KvHeader& header, const Hash128& hash) {
  // The fingerprint of the identity the file records, not the stored fingerprint field: the two
  // are equal in a file that parsed, and this does not depend on that check.
  const std::vector<Hash128> chain =
      PrefixHashes(header.model.Fingerprint(), header.tokens, header.chunk_tokens);
  for (size_t i = 0; i < chain.size(); ++i) {
    if (chain[i] == hash) {
      return static_cast<uint32_t>(
          std::min<uint64_t>(uint64_t{i + 1} * header.chunk_tokens, header.tokens.size()));
    }
  }
  return Status::NotFound("the file's own tokens do not chain to prefix hash " + hash.ToHex());
}

}  // namespace kdn
