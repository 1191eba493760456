// The fast path: bytes read from the store's segment files as `user.kdn.extents` lists them, and
// the fallback to the file whenever the attribute cannot be trusted. kdnfs is not needed: the
// attribute is set by hand on a file in a temporary directory, pointing into "segment" files.
#include <sys/xattr.h>

#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "engine_test_util.h"

namespace kdn::test {
namespace {

constexpr size_t kPage = 4096;

class Extents : public ::testing::Test {
 protected:
  void SetUp() override {
    m_ = TestModel(DType::kF16, RopeStyle::kNeox, 3, 4, 32);
    path_ = WriteSynthetic(dir_, "a.kv", m_, 200, "q8", 17);
    bytes_ = ReadBytes(path_);
    ASSERT_EQ(bytes_.size() % kPage, 0u);
    ASSERT_GE(bytes_.size(), 3 * kPage);
    ctx_ = MakeCtx();
    const char probe[] = "probe";
    const bool xattrs = ::setxattr(path_.c_str(), "user.kdn.probe", probe, sizeof probe, 0) == 0;
    KDN_REQUIRE_OR_SKIP(
        xattrs, "the filesystem of " + dir_.str() + " has no user xattrs: " + strerror(errno));
    ::removexattr(path_.c_str(), "user.kdn.probe");
  }

  // Writes the file's bytes into two segment files, between unrelated bytes, and returns the
  // attribute text that lists them.
  std::string MakeSegments(const std::vector<std::byte>& content) {
    const size_t split = (content.size() / kPage / 2) * kPage;
    std::vector<std::byte> seg_a(3 * kPage, std::byte{0x11});
    seg_a.insert(seg_a.end(), content.begin(), content.begin() + static_cast<long>(split));
    seg_a.resize(seg_a.size() + kPage, std::byte{0x22});
    std::vector<std::byte> seg_b(kPage, std::byte{0x33});
    seg_b.insert(seg_b.end(), content.begin() + static_cast<long>(split), content.end());
    WriteBytes(dir_ / "000001.seg", seg_a.data(), seg_a.size());
    WriteBytes(dir_ / "000002.seg", seg_b.data(), seg_b.size());
    return "kdn-extents 1 " + std::to_string(content.size()) +
           " 0123456789abcdef0123456789abcdef\n" + (dir_ / "000001.seg") + " " +
           std::to_string(3 * kPage) + " " + std::to_string(split) + "\n" + (dir_ / "000002.seg") +
           " " + std::to_string(kPage) + " " + std::to_string(content.size() - split) + "\n";
  }

  void SetAttr(const std::string& text) {
    ASSERT_EQ(::setxattr(path_.c_str(), "user.kdn.extents", text.data(), text.size(), 0), 0)
        << strerror(errno);
  }

  // Loads every layer; checks the result against a reference decoded from `reference_path`.
  void LoadAndCheck(kdn_cache* c, const std::string& reference_path) {
    const size_t block = size_t{200} * m_.channels() * 2;
    std::vector<std::vector<std::byte>> k(3, std::vector<std::byte>(block));
    std::vector<std::vector<std::byte>> v(3, std::vector<std::byte>(block));
    std::vector<void*> kb = {k[0].data(), k[1].data(), k[2].data()};
    std::vector<void*> vb = {v[0].data(), v[1].data(), v[2].data()};
    kdn_dest d;
    ASSERT_EQ(
        kdn_dest_contiguous(&d, KDN_F16, 3, kb.data(), vb.data(), m_.n_kv_heads, m_.head_dim, 200),
        KDN_OK);
    ASSERT_EQ(kdn_load(c, 0, 3, &d, 0, nullptr), KDN_OK) << kdn_last_error();
    ASSERT_EQ(kdn_sync(c), KDN_OK) << kdn_last_error();
    for (uint32_t l = 0; l < 3; ++l) {
      EXPECT_TRUE(k[l] == Reference(reference_path, l, KvKind::kKey, DType::kF16)) << l;
      EXPECT_TRUE(v[l] == Reference(reference_path, l, KvKind::kValue, DType::kF16)) << l;
    }
  }

  int FastPath(kdn_cache* c) {
    kdn_cache_info info;
    EXPECT_EQ(kdn_info(c, &info), KDN_OK);
    return info.fast_path;
  }

  TempDir dir_{"kdn-extents"};
  ModelIdentity m_;
  std::string path_;
  std::vector<std::byte> bytes_;
  CtxPtr ctx_;
};

TEST_F(Extents, ReadsFromTheSegments) {
  SetAttr(MakeSegments(bytes_));
  // Spoil a block of the file itself: a load that succeeds read the segments.
  const std::string good = dir_ / "good.kv";
  WriteBytes(good, bytes_.data(), bytes_.size());
  const KvHeader h = HeaderOf(good);
  std::vector<std::byte> spoiled = bytes_;
  spoiled[h.block(2, KvKind::kValue).offset + 5] ^= std::byte{1};
  WriteBytes(path_, spoiled.data(), spoiled.size());  // keeps the attribute (same inode)
  CachePtr c = OpenCache(ctx_.get(), path_);
  ASSERT_TRUE(c);
  EXPECT_EQ(FastPath(c.get()), 1);
  LoadAndCheck(c.get(), good);
  EXPECT_EQ(FastPath(c.get()), 1);
}

TEST_F(Extents, BadSegmentBlockFallsBackToTheFile) {
  const std::string good = dir_ / "good.kv";
  WriteBytes(good, bytes_.data(), bytes_.size());
  const KvHeader h = HeaderOf(good);
  std::vector<std::byte> spoiled = bytes_;
  spoiled[h.block(1, KvKind::kKey).offset + 100] ^= std::byte{4};
  SetAttr(MakeSegments(spoiled));  // the header matches, one block does not
  CachePtr c = OpenCache(ctx_.get(), path_);
  ASSERT_TRUE(c);
  EXPECT_EQ(FastPath(c.get()), 1);
  LoadAndCheck(c.get(), good);
  EXPECT_EQ(FastPath(c.get()), 0);  // turned off at the first bad block
}

TEST_F(Extents, ForgedAttributesFallBackToTheFile) {
  const std::string real = MakeSegments(bytes_);
  const std::string header_line = real.substr(0, real.find('\n') + 1);
  // Another valid cache of the same model: its header differs from this file's.
  const std::string other = WriteSynthetic(dir_, "other.kv", m_, 200, "q8", 18);
  const std::vector<std::byte> other_bytes = ReadBytes(other);
  std::vector<std::string> forged = {
      "garbage",
      "kdn-extents 2 " + real.substr(14),  // version
      header_line,                         // no extents
      "kdn-extents 1 " + std::to_string(bytes_.size()) + " 0123456789abcdef0123456789abcdef\n" +
          dir_.str() + "/000001.seg 4096 " + std::to_string(bytes_.size()) + "\n",  // wrong offset
      "kdn-extents 1 " + std::to_string(bytes_.size()) + " 0123456789abcdef0123456789abcdef\n" +
          dir_.str() + "/000001.seg 12289 " + std::to_string(bytes_.size()) + "\n",  // unaligned
      "kdn-extents 1 " + std::to_string(bytes_.size()) + " 0123456789abcdef0123456789abcdef\n" +
          dir_.str() + "/missing.seg 0 " + std::to_string(bytes_.size()) + "\n",  // no such segment
      "kdn-extents 1 " + std::to_string(bytes_.size()) + " 0123456789abcdef0123456789abcdef\n" +
          dir_.str() + "/000002.seg 0 " + std::to_string(bytes_.size() * 4) +
          "\n",                                                        // sizes disagree
      "kdn-extents 1 " + std::to_string(bytes_.size()) + " nothex\n",  // chunk id
      real.substr(0, real.size() - 1),                                 // no final newline
  };
  WriteBytes(dir_ / "other.seg", other_bytes.data(), other_bytes.size());
  forged.push_back("kdn-extents 1 " + std::to_string(other_bytes.size()) +
                   " 0123456789abcdef0123456789abcdef\n" + (dir_ / "other.seg") + " 0 " +
                   std::to_string(other_bytes.size()) + "\n");  // a valid cache, but not this one
  for (const std::string& text : forged) {
    SCOPED_TRACE(text);
    SetAttr(text);
    CachePtr c = OpenCache(ctx_.get(), path_);
    ASSERT_TRUE(c);
    EXPECT_EQ(FastPath(c.get()), 0);
    LoadAndCheck(c.get(), path_);
  }
}

// The fallback is said once, at debug level, to the installed callback, and never on stderr.
TEST_F(Extents, FallbackIsLoggedOnceToTheCallbackNotToStderr) {
  SetAttr("garbage");
  struct Seen {
    std::vector<std::pair<kdn_log_level, std::string>> lines;
  } seen;
  kdn_set_log_callback(
      [](void* user, kdn_log_level level, const char* message) {
        static_cast<Seen*>(user)->lines.emplace_back(level, message);
      },
      &seen);
  testing::internal::CaptureStderr();
  { CachePtr c = OpenCache(ctx_.get(), path_); }
  kdn_set_log_callback(nullptr, nullptr);
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "");
  ASSERT_EQ(seen.lines.size(), 1u);
  EXPECT_EQ(seen.lines[0].first, KDN_LOG_DEBUG);
  EXPECT_NE(seen.lines[0].second.find("fast path off"), std::string::npos) << seen.lines[0].second;
  // Removed: nothing more reaches it.
  { CachePtr c = OpenCache(ctx_.get(), path_); }
  EXPECT_EQ(seen.lines.size(), 1u);
}

}  // namespace
}  // namespace kdn::test
