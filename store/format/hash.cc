// xxh3 hashes: Hash128 text form, one-shot hashes and the chained prefix hashes.
#define XXH_STATIC_LINKING_ONLY  // XXH3_state_t on the stack: no allocation, no failure path
#include <xxhash.h>

#include <algorithm>
#include <cstring>

#include "kdn/format.h"

namespace kdn {

namespace {

int HexValue(char ch) {
  if (ch >= '0' && ch <= '9') return ch - '0';
  if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
  return -1;
}

// (lo, hi) as two little-endian u64: the serialized form everywhere in the format.
void SerializeHash(const Hash128& h, unsigned char out[16]) {
  std::memcpy(out, &h.lo, 8);
  std::memcpy(out + 8, &h.hi, 8);
}

}  // namespace

std::string Hash128::ToHex() const {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string s(32, '0');
  for (int i = 0; i < 16; ++i) {
    s[15 - i] = kDigits[(hi >> (4 * i)) & 0xf];
    s[31 - i] = kDigits[(lo >> (4 * i)) & 0xf];
  }
  return s;
}

Result<Hash128> Hash128::FromHex(std::string_view hex) {
  if (hex.size() != 32) {
    return Status::InvalidArgument("hash '" + std::string(hex) + "': need 32 hex digits, got " +
                                   std::to_string(hex.size()));
  }
  Hash128 h;
  for (size_t i = 0; i < 32; ++i) {
    const int v = HexValue(hex[i]);
    if (v < 0)
      return Status::InvalidArgument("hash '" + std::string(hex) + "': not a hex digit at " +
                                     std::to_string(i));
    uint64_t& word = i < 16 ? h.hi : h.lo;
    word = (word << 4) | static_cast<uint64_t>(v);
  }
  return h;
}

Hash128 HashBytes128(const void* data, size_t size) {
  const XXH128_hash_t h = XXH3_128bits(data, size);
  return Hash128{h.low64, h.high64};
}

uint64_t HashBytes64(const void* data, size_t size) {
  return XXH3_64bits(data, size);
}

std::vector<Hash128> PrefixHashes(const Hash128& fingerprint, std::span<const uint32_t> tokens,
                                  uint32_t chunk_tokens) {
  std::vector<Hash128> out;
  if (chunk_tokens == 0) return out;
  XXH3_state_t state_storage;
  XXH3_state_t* state = &state_storage;
  XXH3_INITSTATE(state);
  unsigned char fp[16];
  SerializeHash(fingerprint, fp);
  Hash128 prev;  // h_{-1} = 0
  out.reserve((tokens.size() + chunk_tokens - 1) / chunk_tokens);
  for (size_t begin = 0; begin < tokens.size(); begin += chunk_tokens) {
    const size_t n = std::min<size_t>(chunk_tokens, tokens.size() - begin);
    unsigned char prev_bytes[16];
    SerializeHash(prev, prev_bytes);
    XXH3_128bits_reset(state);
    XXH3_128bits_update(state, prev_bytes, sizeof prev_bytes);
    XXH3_128bits_update(state, fp, sizeof fp);
    // Tokens are u32 little-endian on disk and in the hash; the host is little-endian (le.h).
    XXH3_128bits_update(state, tokens.data() + begin, n * sizeof(uint32_t));
    const XXH128_hash_t h = XXH3_128bits_digest(state);
    prev = Hash128{h.low64, h.high64};
    out.push_back(prev);
  }
  return out;
}

}  // namespace kdn
