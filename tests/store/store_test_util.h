// Helpers for the store's tests: random content, a store in a temporary directory.
#ifndef KDN_TESTS_STORE_STORE_TEST_UTIL_H_
#define KDN_TESTS_STORE_STORE_TEST_UTIL_H_

#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "kdn/store.h"
#include "test_util.h"

namespace kdn::test {

inline std::vector<std::byte> RandomBytes(size_t n, uint64_t seed) {
  std::vector<std::byte> v(n);
  auto rng = Rng(seed);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t x = rng();
    std::memcpy(v.data() + i, &x, 8);
  }
  for (; i < n; ++i) v[i] = static_cast<std::byte>(rng());
  return v;
}

inline StoreOptions SmallStoreOptions() {
  StoreOptions o;
  return o;
}

inline std::unique_ptr<Store> OpenStore(const std::string& dir, const StoreOptions& o) {
  auto s = Store::Open(dir, o);
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return s.ok() ? std::move(*s) : nullptr;
}

inline std::vector<std::byte> ReadWhole(Store& store, const ChunkId& id, uint64_t size) {
  std::vector<std::byte> out(size);
  auto n = store.Get(id, 0, out);
  EXPECT_TRUE(n.ok()) << n.status().ToString();
  if (!n.ok()) return {};
  EXPECT_EQ(*n, size);
  out.resize(*n);
  return out;
}

inline void WriteFile(const std::string& path, std::span<const std::byte> bytes) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0) << path;
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    ASSERT_GT(n, 0);
    done += static_cast<size_t>(n);
  }
  ::close(fd);
}

inline void ExpectClean(Store& store, bool verify_data = true) {
  FsckOptions o;
  o.verify_data = verify_data;
  auto r = store.Fsck(o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  std::string all;
  for (const auto& p : r->problems) all += p + "\n";
  EXPECT_TRUE(r->clean()) << all;
}

}  // namespace kdn::test

#endif  // KDN_TESTS_STORE_STORE_TEST_UTIL_H_
