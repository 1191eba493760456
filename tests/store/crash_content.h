// Content of the crash test's chunks and files: a function of (seed, size), so that the test can
// check what survived without keeping copies. Shared by the test and its child process.
#ifndef KDN_TESTS_STORE_CRASH_CONTENT_H_
#define KDN_TESTS_STORE_CRASH_CONTENT_H_

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

namespace kdn::test {

inline std::vector<std::byte> CrashContent(uint64_t seed, size_t size) {
  std::vector<std::byte> out(size);
  uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
  for (size_t i = 0; i < size; i += 8) {
    // splitmix64
    uint64_t z = (x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    std::memcpy(out.data() + i, &z, size - i < 8 ? size - i : 8);
  }
  return out;
}

// Sizes that cover small, unaligned, block-crossing and multi-extent chunks.
inline size_t CrashSize(uint64_t seed) {
  switch (seed % 5) {
    case 0:
      return 4096 * (1 + seed % 64);
    case 1:
      return 1 + seed % 5000;
    default:
      return 1 + (seed * 2654435761u) % (600 * 1024);
  }
}

}  // namespace kdn::test

#endif  // KDN_TESTS_STORE_CRASH_CONTENT_H_
