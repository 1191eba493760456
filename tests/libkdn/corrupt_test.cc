// Bad bytes are errors naming the layer and block, never crashes, and never land in the
// destination.
#include <unistd.h>

#include <string>
#include <vector>

#include "libkdn_test_util.h"

namespace kdn::test {
namespace {

struct Loaded {
  std::vector<std::vector<std::byte>> k;
  std::vector<std::vector<std::byte>> v;
  kdn_dest dest;
  std::vector<void*> kb;
  std::vector<void*> vb;
};

void MakeDest(const ModelIdentity& m, uint32_t n_tokens, Loaded* out) {
  const size_t block = size_t{n_tokens} * m.channels() * DTypeSize(m.dtype);
  out->k.assign(m.n_layers, Guarded(block));
  out->v.assign(m.n_layers, Guarded(block));
  for (uint32_t l = 0; l < m.n_layers; ++l) {
    out->kb.push_back(out->k[l].data());
    out->vb.push_back(out->v[l].data());
  }
  ASSERT_EQ(kdn_dest_contiguous(&out->dest, static_cast<kdn_dtype>(m.dtype), m.n_layers,
                                out->kb.data(), out->vb.data(), m.n_kv_heads, m.head_dim, n_tokens),
            KDN_OK);
}

class CorruptBlock : public ::testing::TestWithParam<const char*> {};

TEST_P(CorruptBlock, LayerWaitNamesLayerAndBlock) {
  TempDir dir("kdn-engine");
  CtxPtr ctx = MakeCtx();
  const ModelIdentity m = TestModel(DType::kF16, RopeStyle::kNeox, 3, 2, 16);
  const uint32_t n = 60;
  const std::string good = WriteSynthetic(dir, "good.kv", m, n, GetParam(), 3);
  std::vector<std::byte> bytes = ReadBytes(good);
  const KvHeader h = HeaderOf(good);
  const BlockEntry& victim = h.block(1, KvKind::kValue);
  bytes[victim.offset + victim.encoded_bytes / 2] ^= std::byte{0x10};
  const std::string bad = dir / "bad.kv";
  WriteBytes(bad, bytes.data(), bytes.size());

  CachePtr c = OpenCache(ctx.get(), bad);  // the header is intact: opening succeeds
  ASSERT_TRUE(c);
  Loaded dst;
  MakeDest(m, n, &dst);
  ASSERT_EQ(kdn_load(c.get(), 0, 3, &dst.dest, 0, nullptr), KDN_OK) << kdn_last_error();
  EXPECT_EQ(kdn_layer_wait(c.get(), 0), KDN_OK) << kdn_last_error();
  EXPECT_EQ(kdn_layer_wait(c.get(), 1), KDN_E_CORRUPT);
  const std::string msg = kdn_last_error();
  EXPECT_NE(msg.find("layer 1 V block"), std::string::npos) << msg;
  EXPECT_EQ(kdn_layer_wait(c.get(), 2), KDN_OK) << kdn_last_error();
  EXPECT_EQ(kdn_sync(c.get()), KDN_E_CORRUPT);
  // The bad block wrote nothing; every other block is right.
  EXPECT_TRUE(dst.v[1] == Guarded(dst.v[1].size()));
  EXPECT_TRUE(dst.k[1] == Reference(good, 1, KvKind::kKey, m.dtype));
  EXPECT_TRUE(dst.v[2] == Reference(good, 2, KvKind::kValue, m.dtype));
  // The error stays with the layer until it is loaded again.
  EXPECT_EQ(kdn_layer_wait(c.get(), 1), KDN_E_CORRUPT);
}

INSTANTIATE_TEST_SUITE_P(Codecs, CorruptBlock,
                         ::testing::Values("raw", "lossless", "q4", "q8+zstd"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& ch : n) {
                             if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           }
                           return n;
                         });

// A file cut short after it was opened: the load fails cleanly.
TEST(Corrupt, TruncatedAfterOpen) {
  TempDir dir("kdn-engine");
  CtxPtr ctx = MakeCtx();
  const ModelIdentity m = TestModel(DType::kF16, RopeStyle::kNeox, 3, 2, 16);
  const std::string path = WriteSynthetic(dir, "a.kv", m, 60, "raw", 4);
  CachePtr c = OpenCache(ctx.get(), path);
  ASSERT_TRUE(c);
  const KvHeader h = HeaderOf(path);
  ASSERT_EQ(::truncate(path.c_str(), static_cast<off_t>(h.block(1, KvKind::kKey).offset + 10)), 0);
  Loaded dst;
  MakeDest(m, 60, &dst);
  ASSERT_EQ(kdn_load(c.get(), 0, 3, &dst.dest, 0, nullptr), KDN_OK) << kdn_last_error();
  EXPECT_EQ(kdn_layer_wait(c.get(), 0), KDN_OK) << kdn_last_error();
  const kdn_status s1 = kdn_layer_wait(c.get(), 1);
  EXPECT_TRUE(s1 == KDN_E_CORRUPT || s1 == KDN_E_IO) << kdn_status_name(s1);
  EXPECT_NE(kdn_sync(c.get()), KDN_OK);
}

}  // namespace
}  // namespace kdn::test
