#include "store/chunk_id.h"

#include <openssl/evp.h>
#include <xxhash.h>

#include <algorithm>
#include <string>
#include <cstdlib>
#ifdef KDN_XXH_X86_DISPATCH
// libxxhash's own runtime dispatch (scalar, SSE2, AVX2 or AVX-512 by cpuid, chosen at the first
// call): the same hashes, 2-3x faster than the SSE2 baseline the library is built for. Hashing is
// a put's only CPU pass over the bytes and every read's verification.
#define XXH_DISPATCH_DISABLE_REPLACE
#include <xxh_x86dispatch.h>
#define KDN_XXH3_64 XXH3_64bits_dispatch
#define KDN_XXH3_64_UPDATE XXH3_64bits_update_dispatch
#else
#define KDN_XXH3_64 XXH3_64bits
#define KDN_XXH3_64_UPDATE XXH3_64bits_update
#endif

namespace kdn::store {

ChunkId HashChunk(std::span<const std::byte> bytes) {
  ChunkHasher hasher;
  hasher.Update(bytes);
  return hasher.Finish();
}

// Failures of EVP_DigestInit/Update/Final with SHA-256 mean an unusable libcrypto (out of memory
// at the first call): nothing sensible can continue, and a wrong id would be silent corruption.
ChunkHasher::ChunkHasher() : state_(EVP_MD_CTX_new()) {
  if (state_ == nullptr ||
      EVP_DigestInit_ex(static_cast<EVP_MD_CTX*>(state_), EVP_sha256(), nullptr) != 1) {
    std::abort();
  }
}

ChunkHasher::~ChunkHasher() {
  EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(state_));
}

void ChunkHasher::Update(std::span<const std::byte> bytes) {
  if (EVP_DigestUpdate(static_cast<EVP_MD_CTX*>(state_), bytes.data(), bytes.size()) != 1) {
    std::abort();
  }
}

ChunkId ChunkHasher::Finish() {
  ChunkId id;
  unsigned int n = 0;
  auto* ctx = static_cast<EVP_MD_CTX*>(state_);
  if (EVP_DigestFinal_ex(ctx, id.bytes.data(), &n) != 1 || n != ChunkId::kBytes ||
      EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr) != 1) {
    std::abort();
  }
  return id;
}

uint64_t BlockSum(std::span<const std::byte> bytes) {
  return KDN_XXH3_64(bytes.data(), bytes.size());
}

ContentHasher::ContentHasher(uint64_t block_bytes)
    : block_bytes_(block_bytes), block_state_(XXH3_createState()) {
  XXH3_64bits_reset(static_cast<XXH3_state_t*>(block_state_));
}

ContentHasher::~ContentHasher() {
  XXH3_freeState(static_cast<XXH3_state_t*>(block_state_));
}

void ContentHasher::Update(std::span<const std::byte> bytes) {
  auto* state = static_cast<XXH3_state_t*>(block_state_);
  // Block by block, so that the block's second pass reads it from cache.
  while (!bytes.empty()) {
    const uint64_t n = std::min<uint64_t>(bytes.size(), block_bytes_ - in_block_);
    auto part = bytes.first(n);
    whole_.Update(part);
    if (in_block_ == 0 && n == block_bytes_) {
      sums_.push_back(BlockSum(part));
    } else {
      KDN_XXH3_64_UPDATE(state, part.data(), part.size());
      in_block_ += n;
      if (in_block_ == block_bytes_) {
        sums_.push_back(XXH3_64bits_digest(state));
        XXH3_64bits_reset(state);
        in_block_ = 0;
      }
    }
    bytes = bytes.subspan(n);
  }
}

ChunkId ContentHasher::Finish(std::vector<uint64_t>* sums) {
  if (in_block_ > 0) {
    sums_.push_back(XXH3_64bits_digest(static_cast<XXH3_state_t*>(block_state_)));
    in_block_ = 0;
  }
  *sums = std::move(sums_);
  sums_.clear();
  return whole_.Finish();
}

IdKey ToKey(const Hash128& id) {
  IdKey key;
  for (int i = 0; i < 8; ++i) {
    key[i] = static_cast<std::byte>(id.hi >> (56 - 8 * i));
    key[8 + i] = static_cast<std::byte>(id.lo >> (56 - 8 * i));
  }
  return key;
}

bool FromKey(std::span<const std::byte> key, Hash128* id) {
  if (key.size() != 16) return false;
  uint64_t hi = 0, lo = 0;
  for (int i = 0; i < 8; ++i) {
    hi = (hi << 8) | static_cast<uint8_t>(key[i]);
    lo = (lo << 8) | static_cast<uint8_t>(key[8 + i]);
  }
  *id = Hash128{lo, hi};
  return true;
}

bool FromKey(std::span<const std::byte> key, ChunkId* id) {
  if (key.size() != ChunkId::kBytes) return false;
  std::memcpy(id->bytes.data(), key.data(), ChunkId::kBytes);
  return true;
}

}  // namespace kdn::store

namespace kdn {

std::string ChunkId::ToHex() const {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(2 * kBytes, '0');
  for (size_t i = 0; i < kBytes; ++i) {
    out[2 * i] = kDigits[bytes[i] >> 4];
    out[2 * i + 1] = kDigits[bytes[i] & 15];
  }
  return out;
}

Result<ChunkId> ChunkId::FromHex(std::string_view hex) {
  if (hex.size() != 2 * kBytes) {
    return Status::InvalidArgument("a chunk id is 64 hex digits, not " +
                                   std::to_string(hex.size()) + " characters");
  }
  auto digit = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  ChunkId id;
  for (size_t i = 0; i < kBytes; ++i) {
    const int hi = digit(hex[2 * i]), lo = digit(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return Status::InvalidArgument("a chunk id is hex digits only");
    id.bytes[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return id;
}

bool ChunkId::IsZero() const {
  for (uint8_t b : bytes) {
    if (b != 0) return false;
  }
  return true;
}

}  // namespace kdn
