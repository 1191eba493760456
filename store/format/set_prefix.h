// The rules of a set-scoped prefix lookup, shared by kdnfs (which answers
// `<set>/.kdn-prefix/<hash>`) and libkdn (kdn_find_prefix, which checks again what it is handed,
// or scans a plain directory).
//
// A knowledge set is a directory. A prefix lookup in a set may only hand out a `.kv` file that is
//   - named directly in the set directory (not in a subdirectory: whoever reached the set can
//     reach the file, so the answer is the same for every caller),
//   - owned by a uid the set trusts: the set directory's owner, and the uids listed in the set's
//     `user.kdn.trust` attribute ("1000,1001"; on kdnfs only the set's owner or root may set it),
//   - and whose own token ids and model fingerprint chain to the hash asked for (the index that
//     found it is a hint, never the proof).
// The prefix hash is xxh3-128 and can be collided on purpose: an engine that uses the file still
// compares the file's token ids with its prompt's (kdn_find_prefix does).
#ifndef KDN_STORE_FORMAT_SET_PREFIX_H_
#define KDN_STORE_FORMAT_SET_PREFIX_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kdn/format.h"
#include "kdn/status.h"

namespace kdn {

inline constexpr std::string_view kTrustXattr = "user.kdn.trust";
// The name of the virtual directory of prefix lookups inside every directory of a kdnfs mount.
inline constexpr std::string_view kSetPrefixDirName = ".kdn-prefix";
// Bounds of the trust list: it is user input, parsed at every lookup.
inline constexpr size_t kMaxTrustedUids = 64;
inline constexpr size_t kMaxTrustBytes = 1024;
// Headers larger than this are not considered by a prefix lookup (a header of 32 MiB holds about
// eight million token ids), so that a lookup's memory stays bounded.
inline constexpr uint64_t kMaxPrefixHeaderBytes = uint64_t{32} << 20;

// "uid,uid,...": decimal uids (0 .. 4294967294), separated by commas, spaces allowed around them;
// an empty text is an empty list. InvalidArgument for anything else, or more than kMaxTrustedUids.
Result<std::vector<uint32_t>> ParseTrustList(std::string_view text);
// The canonical text ("1000,1001"), sorted, without duplicates.
std::string FormatTrustList(std::span<const uint32_t> uids);
// The set's owner, then the listed uids, without duplicates.
std::vector<uint32_t> TrustedOwners(uint32_t set_owner, std::span<const uint32_t> listed);

// The number of leading tokens of `header`'s file whose chained prefix hash, recomputed from the
// file's own token ids and its model's fingerprint, equals `hash`: (i + 1) * chunk_tokens for a
// full chunk i, or n_tokens for the last, partial one. NotFound when no link of the chain does.
Result<uint32_t> PrefixTokensOf(const KvHeader& header, const Hash128& hash);

}  // namespace kdn

#endif  // KDN_STORE_FORMAT_SET_PREFIX_H_
