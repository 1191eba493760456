// Helpers for kdnfs's tests: `.kv` content, damaged copies of it, and files on disk.
#ifndef KDN_TESTS_FS_FS_TEST_UTIL_H_
#define KDN_TESTS_FS_FS_TEST_UTIL_H_

#include <fcntl.h>
#include <sqlite3.h>
#include <unistd.h>

#include <cstddef>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "kdn/format.h"
#include "kdn/synthetic.h"
#include "test_util.h"

namespace kdn::test {

// A valid `.kv` file of the test model's shape ("tiny": 5 layers, fp32).
inline std::vector<std::byte> MakeKv(uint32_t tokens, uint64_t seed,
                                     std::string_view codec = "raw") {
  auto model = ModelPreset("tiny");
  auto spec = CodecSpec::Parse(codec);
  EXPECT_TRUE(model.ok() && spec.ok());
  if (!model.ok() || !spec.ok()) return {};
  auto file = SynthesizeKvFile(*model, tokens, *spec, seed);
  EXPECT_TRUE(file.ok()) << file.status().ToString();
  return file.ok() ? std::move(*file) : std::vector<std::byte>{};
}

// A `.kv` file of the test model over `tokens`, with KV values from `seed`: two seeds give two
// caches of the same prefix with different contents (what a tenant forging a cache writes).
inline std::vector<std::byte> MakeKvOver(const std::vector<uint32_t>& tokens, uint64_t seed) {
  auto model = ModelPreset("tiny");
  EXPECT_TRUE(model.ok());
  if (!model.ok()) return {};
  KvWriter w(*model, *CodecSpec::Parse("raw"), tokens);
  const size_t n = size_t{tokens.size()} * model->channels() * DTypeSize(model->dtype);
  std::vector<std::byte> k(n), v(n);
  for (uint32_t l = 0; l < model->n_layers; ++l) {
    EXPECT_TRUE(SynthesizeLayerKv(*model, tokens.size(), l, seed, k, v).ok());
    EXPECT_TRUE(w.AddLayer(k, v).ok());
  }
  auto bytes = w.FinishToMemory();
  EXPECT_TRUE(bytes.ok()) << bytes.status().ToString();
  return bytes.ok() ? std::move(*bytes) : std::vector<std::byte>{};
}

// `n` token ids of a prompt; `first` picks which.
inline std::vector<uint32_t> PromptTokens(uint32_t n, uint32_t first) {
  std::vector<uint32_t> t(n);
  for (uint32_t i = 0; i < n; ++i) t[i] = (first + i * 7) % 512;
  return t;
}

// The test seam for a forged prefix index: in the database of a store that is not open, claims
// that the `.kv` chunk indexed under `holder` holds the prefix `hash` (the way a bug or a damaged
// database could). Returns "" or what failed.
inline std::string ForgePrefixIndexRow(const std::string& meta_db, const Hash128& hash,
                                       const Hash128& holder) {
  sqlite3* db = nullptr;
  std::string err;
  sqlite3_stmt* st = nullptr;
  if (sqlite3_open(meta_db.c_str(), &db) != SQLITE_OK ||
      sqlite3_prepare_v2(db,
                         "INSERT INTO prefixes(hash, chunk, idx) "
                         "SELECT ?, chunk, 0 FROM prefixes WHERE hash = ? LIMIT 1",
                         -1, &st, nullptr) != SQLITE_OK) {
    err = sqlite3_errmsg(db);
  } else {
    // The store keys a hash as 16 bytes: hi then lo, big-endian (store/chunk_id.h).
    auto bind = [st](int col, const Hash128& h) {
      unsigned char key[16];
      for (int i = 0; i < 8; ++i) {
        key[i] = static_cast<unsigned char>(h.hi >> (56 - 8 * i));
        key[8 + i] = static_cast<unsigned char>(h.lo >> (56 - 8 * i));
      }
      sqlite3_bind_blob(st, col, key, sizeof key, SQLITE_TRANSIENT);
    };
    bind(1, hash);
    bind(2, holder);
    if (sqlite3_step(st) != SQLITE_DONE || sqlite3_changes(db) != 1) {
      err = std::string("insert: ") + sqlite3_errmsg(db);
    }
  }
  sqlite3_finalize(st);
  sqlite3_close(db);
  return err;
}

// The same file with one byte flipped inside the last block (header intact, a block checksum
// fails).
inline std::vector<std::byte> CorruptKv(std::vector<std::byte> kv) {
  auto header = ParseKvHeader(kv, kv.size());
  EXPECT_TRUE(header.ok()) << header.status().ToString();
  if (!header.ok()) return kv;
  const BlockEntry& last = header->blocks.back();
  kv[last.offset + last.encoded_bytes / 2] ^= std::byte{0x5a};
  return kv;
}

// The first `keep` bytes only.
inline std::vector<std::byte> TruncateKv(std::vector<std::byte> kv, size_t keep) {
  kv.resize(std::min(keep, kv.size()));
  return kv;
}

inline std::vector<std::byte> PlainBytes(size_t n, uint64_t seed) {
  std::vector<std::byte> v(n);
  auto rng = Rng(seed);
  for (auto& b : v) b = static_cast<std::byte>(rng() % 251);
  return v;
}

inline std::span<const std::byte> AsBytes(std::string_view s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

inline bool WriteWholeFile(const std::string& path, std::span<const std::byte> bytes) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return false;
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
  bool ok = done == bytes.size();
  return (::close(fd) == 0) && ok;
}

inline std::vector<std::byte> ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> chars((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::byte> out(chars.size());
  if (!chars.empty()) std::memcpy(out.data(), chars.data(), chars.size());
  return out;
}

}  // namespace kdn::test

#endif  // KDN_TESTS_FS_FS_TEST_UTIL_H_
