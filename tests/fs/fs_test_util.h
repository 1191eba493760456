// Helpers for kdnfs's tests: `.kv` content, damaged copies of it, and files on disk.
#ifndef KDN_TESTS_FS_FS_TEST_UTIL_H_
#define KDN_TESTS_FS_FS_TEST_UTIL_H_

#include <fcntl.h>
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
