// kdn_find_prefix on a plain directory (the scan of the set's `.kv` headers). The kdnfs path, with
// two users and a forged prefix index, is in tests/fs/mount_test.cc.
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "libkdn_test_util.h"

namespace kdn::test {
namespace {

std::vector<uint32_t> Prompt(uint32_t n, uint32_t first) {
  std::vector<uint32_t> t(n);
  for (uint32_t i = 0; i < n; ++i) t[i] = (first + i * 13) % 1000;
  return t;
}

// A cache of `m` over `tokens` written to `path`.
void SaveKv(const ModelIdentity& m, const std::vector<uint32_t>& tokens, const std::string& path,
            uint32_t position_offset = 0, uint32_t chunk_tokens = 256) {
  KvWriter w(m, *CodecSpec::Parse("raw"), tokens, position_offset, chunk_tokens);
  const size_t n = tokens.size() * size_t{m.channels()} * DTypeSize(m.dtype);
  std::vector<std::byte> k(n), v(n);
  for (uint32_t l = 0; l < m.n_layers; ++l) {
    ASSERT_TRUE(SynthesizeLayerKv(m, tokens.size(), l, 7, k, v).ok());
    ASSERT_TRUE(w.AddLayer(k, v).ok());
  }
  Status st = w.Finish(path);
  ASSERT_TRUE(st.ok()) << st.ToString();
}

std::vector<uint32_t> Head(const std::vector<uint32_t>& t, size_t n) {
  return {t.begin(), t.begin() + static_cast<std::ptrdiff_t>(n)};
}

class FindPrefixTest : public ::testing::Test {
 protected:
  kdn_status Find(const std::vector<uint32_t>& prompt, std::string* path, uint32_t* n,
                  uint32_t chunk_tokens = 0, const ModelIdentity* model = nullptr) {
    kdn_model_desc d = ToDesc(model ? *model : model_);
    char buf[4096];
    kdn_status s =
        kdn_find_prefix(set_.str().c_str(), &d, prompt.data(), static_cast<uint32_t>(prompt.size()),
                        chunk_tokens, buf, sizeof buf, n);
    *path = buf;
    return s;
  }

  ModelIdentity model_ = TestModel(DType::kF16);
  TempDir set_{"kdn-find-prefix"};
  std::vector<uint32_t> prompt_ = Prompt(700, 5);
};

TEST_F(FindPrefixTest, TheLongestPrefixAtAHashBoundaryIsFound) {
  std::string path;
  uint32_t n = 99;
  EXPECT_EQ(Find(prompt_, &path, &n), KDN_E_NOT_FOUND) << kdn_last_error();
  EXPECT_EQ(path, "");
  EXPECT_EQ(n, 0u);

  SaveKv(model_, Head(prompt_, 256), set_ / "one-chunk.kv");
  ASSERT_EQ(Find(prompt_, &path, &n), KDN_OK) << kdn_last_error();
  EXPECT_EQ(path, set_ / "one-chunk.kv");
  EXPECT_EQ(n, 256u);

  // Longer: 600 tokens of the prompt (links at 256, 512 and 600): 512 are usable by a 700-token
  // prompt, 600 only by a prompt of exactly 600.
  SaveKv(model_, Head(prompt_, 600), set_ / "long.kv");
  ASSERT_EQ(Find(prompt_, &path, &n), KDN_OK) << kdn_last_error();
  EXPECT_EQ(path, set_ / "long.kv");
  EXPECT_EQ(n, 512u);
  ASSERT_EQ(Find(Head(prompt_, 600), &path, &n), KDN_OK);
  EXPECT_EQ(n, 600u);
  // A file longer than the prompt holds all of it.
  ASSERT_EQ(Find(Head(prompt_, 300), &path, &n), KDN_OK);
  EXPECT_EQ(path, set_ / "long.kv");
  EXPECT_EQ(n, 256u);  // 300 is not a link of long.kv's chain (256, 512, 600)
  ASSERT_EQ(Find(Head(prompt_, 512), &path, &n), KDN_OK);
  EXPECT_EQ(n, 512u);
  // Another chunk size matches other boundaries (only files saved with that size count).
  EXPECT_EQ(Find(prompt_, &path, &n, 128), KDN_E_NOT_FOUND);
}

TEST_F(FindPrefixTest, FilesThatDoNotHoldThePromptAreNeverAnswered) {
  std::string path;
  uint32_t n = 0;
  // Other tokens with the same length, another model, another position, a symlink out of the
  // set, a file in a subdirectory, a name without .kv, a damaged header.
  std::vector<uint32_t> other = Head(prompt_, 512);
  other[300] ^= 1;  // differs in the second chunk only
  SaveKv(model_, other, set_ / "other.kv");
  ModelIdentity m2 = model_;
  m2.n_kv_heads = 1;
  SaveKv(m2, Head(prompt_, 700), set_ / "other-model.kv");
  SaveKv(model_, Head(prompt_, 700), set_ / "shifted.kv", 10);
  TempDir outside{"kdn-find-outside"};
  SaveKv(model_, Head(prompt_, 700), outside / "real.kv");
  ASSERT_EQ(::symlink((outside / "real.kv").c_str(), (set_ / "link.kv").c_str()), 0);
  ASSERT_EQ(::mkdir((set_ / "sub").c_str(), 0755), 0);
  SaveKv(model_, Head(prompt_, 700), set_ / "sub/deep.kv");
  SaveKv(model_, Head(prompt_, 700), set_ / "no-suffix");
  WriteBytes(set_ / "garbage.kv", "not a kv file", 13);
  ASSERT_EQ(::mkfifo((set_ / "fifo.kv").c_str(), 0644), 0);

  ASSERT_EQ(Find(prompt_, &path, &n), KDN_OK) << kdn_last_error();
  EXPECT_EQ(path, set_ / "other.kv");
  EXPECT_EQ(n, 256u) << "only the first chunk of other.kv is the prompt's";
  EXPECT_EQ(Find(prompt_, &path, &n, 0, &m2), KDN_OK);
  EXPECT_EQ(path, set_ / "other-model.kv");
  EXPECT_EQ(n, 700u);
}

TEST_F(FindPrefixTest, OnlyFilesOfTheSetsOwnerAreAnswered) {
  KDN_REQUIRE_OR_SKIP(::geteuid() == 0, "needs root to give a file to another user");
  std::string path;
  uint32_t n = 0;
  SaveKv(model_, Head(prompt_, 256), set_ / "mine.kv");
  SaveKv(model_, Head(prompt_, 700), set_ / "theirs.kv");
  ASSERT_EQ(::chown((set_ / "theirs.kv").c_str(), 2000, 2000), 0);
  // A trust attribute on a plain directory is not honoured: anyone who may write it may set it.
  (void)::setxattr(set_.str().c_str(), "user.kdn.trust", "2000", 4, 0);
  ASSERT_EQ(Find(prompt_, &path, &n), KDN_OK) << kdn_last_error();
  EXPECT_EQ(path, set_ / "mine.kv");
  EXPECT_EQ(n, 256u);
  // The set's owner decides: once it is 2000's set, 2000's file is answered.
  ASSERT_EQ(::chown(set_.str().c_str(), 2000, 2000), 0);
  ASSERT_EQ(Find(prompt_, &path, &n), KDN_OK);
  EXPECT_EQ(path, set_ / "theirs.kv");
  EXPECT_EQ(n, 700u);
}

TEST_F(FindPrefixTest, ArgumentsAreChecked) {
  SaveKv(model_, Head(prompt_, 256), set_ / "a.kv");
  kdn_model_desc d = ToDesc(model_);
  char small[8];
  uint32_t n = 0;
  EXPECT_EQ(
      kdn_find_prefix(set_.str().c_str(), &d, prompt_.data(), 700, 0, small, sizeof small, &n),
      KDN_E_INVALID_ARG);
  char buf[4096];
  EXPECT_EQ(kdn_find_prefix(nullptr, &d, prompt_.data(), 700, 0, buf, sizeof buf, &n),
            KDN_E_INVALID_ARG);
  EXPECT_EQ(
      kdn_find_prefix(set_.str().c_str(), nullptr, prompt_.data(), 700, 0, buf, sizeof buf, &n),
      KDN_E_INVALID_ARG);
  EXPECT_EQ(kdn_find_prefix(set_.str().c_str(), &d, nullptr, 700, 0, buf, sizeof buf, &n),
            KDN_E_INVALID_ARG);
  EXPECT_EQ(kdn_find_prefix(set_.str().c_str(), &d, prompt_.data(), 0, 0, buf, sizeof buf, &n),
            KDN_E_NOT_FOUND);
  EXPECT_EQ(
      kdn_find_prefix((set_ / "a.kv").c_str(), &d, prompt_.data(), 700, 0, buf, sizeof buf, &n),
      KDN_E_INVALID_ARG);
  EXPECT_EQ(
      kdn_find_prefix((set_ / "missing").c_str(), &d, prompt_.data(), 700, 0, buf, sizeof buf, &n),
      KDN_E_NOT_FOUND);
  // A trailing slash names the same set.
  std::string slash = set_.str() + "/";
  ASSERT_EQ(kdn_find_prefix(slash.c_str(), &d, prompt_.data(), 700, 0, buf, sizeof buf, &n),
            KDN_OK);
  EXPECT_EQ(std::string(buf), set_ / "a.kv");
}

}  // namespace
}  // namespace kdn::test
