// kdn_find_prefix: the longest cached prefix of a prompt among a knowledge set's `.kv` files.
//
// On a kdnfs mount the set's `.kdn-prefix/<hash>` names answer (one open per prefix length tried,
// longest first); on any other directory the set's `.kv` headers are read (one open per file).
// Either way every candidate is opened, and only answered when, read from that open file:
//   - it is a regular file owned by a uid the set trusts (store/format/set_prefix.h): the set's
//     owner, plus on kdnfs the uids of the set's `user.kdn.trust` (elsewhere that attribute is
//     ignored: anyone who may write a directory may set user.* attributes on it);
//   - it was computed by the same model, at position 0, with the same chunk_tokens;
//   - its first N token ids are the prompt's first N, N a prefix-hash boundary of the file.
// The hash is only how candidates are found: a colliding hash selects nothing.
#ifndef KDN_LIBKDN_FIND_PREFIX_H_
#define KDN_LIBKDN_FIND_PREFIX_H_

#include <cstdint>
#include <span>
#include <string>

#include "kdn/format.h"
#include "kdn/status.h"

namespace kdn::libkdn {

struct PrefixFound {
  std::string path;       // set_dir + "/" + the file's name in the set
  uint32_t n_tokens = 0;  // prompt tokens the file holds
};

// NotFound when no file of the set holds a prefix of `tokens`.
Result<PrefixFound> FindPrefix(const std::string& set_dir, const ModelIdentity& model,
                               std::span<const uint32_t> tokens, uint32_t chunk_tokens);

}  // namespace kdn::libkdn

#endif  // KDN_LIBKDN_FIND_PREFIX_H_
