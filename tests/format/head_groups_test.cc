// Head groups in the `.kv` format (docs/kv-format.md, "Head groups"): each layer's K and V stored
// as G blocks of n_kv_heads / G heads, every codec per group, the header field and the block table
// checked by the parser, and grouped blocks named by layer and group when they are corrupt.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "format_test_util.h"

namespace kdn::test {
namespace {

// 3 layers, 8 KV heads of 16 dims: groups of 1, 2, 4 or 8 heads.
ModelIdentity EightHeads() {
  ModelIdentity m = SmallModel(DType::kF16, 3, 8, 16);
  return m;
}

std::vector<std::byte> GroupedFile(const ModelIdentity& m, uint32_t tokens, std::string_view codec,
                                   uint32_t groups, uint64_t seed = 1) {
  auto f = SynthesizeKvFile(m, tokens, Codec(codec), seed, 0, groups);
  EXPECT_TRUE(f.ok()) << f.status().ToString();
  return f.ok() ? std::move(*f) : std::vector<std::byte>{};
}

std::vector<std::byte> DecodeLayer(const std::vector<std::byte>& f, uint32_t layer, KvKind kind) {
  auto r = KvReader::Open(MemorySource(f));
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  if (!r.ok()) return {};
  std::vector<std::byte> out((*r)->header().decoded_block_bytes(DType::kF16));
  const Status s = (*r)->DecodeBlock(layer, kind, DType::kF16, out);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return out;
}

TEST(HeadGroupsTest, OneGroupIsTheLayoutBeforeGroupsByteForByte) {
  // The field is 0 in a file of one group, and the file is what the writer always wrote: the
  // bytes of a default-constructed writer and of one told 1 group agree.
  const ModelIdentity m = EightHeads();
  const std::vector<std::byte> f = MakeFile(m, 40, "q4");
  EXPECT_EQ(Get<uint16_t>(f, layout::kHeadGroups), 0);
  EXPECT_TRUE(f == GroupedFile(m, 40, "q4", 1));
  auto h = Parse(f);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_EQ(h->head_groups, 1u);
  EXPECT_EQ(h->blocks.size(), 2u * m.n_layers);
}

TEST(HeadGroupsTest, EveryCodecRoundTripsPerGroup) {
  const ModelIdentity m = EightHeads();
  for (const char* codec : {"raw", "lossless", "lossless:entropy=rans", "q8", "q4+zstd", "q2:g64",
                            "tc", "tc:q=2:t=id"}) {
    for (uint32_t groups : {2u, 4u, 8u}) {
      SCOPED_TRACE(std::string(codec) + ", " + std::to_string(groups) + " groups");
      const std::vector<std::byte> one = GroupedFile(m, 70, codec, 1);
      const std::vector<std::byte> grouped = GroupedFile(m, 70, codec, groups);
      EXPECT_EQ(Get<uint16_t>(grouped, layout::kHeadGroups), groups);
      auto h = Parse(grouped);
      ASSERT_TRUE(h.ok()) << h.status().ToString();
      EXPECT_EQ(h->head_groups, groups);
      EXPECT_EQ(h->heads_per_group(), 8 / groups);
      ASSERT_EQ(h->blocks.size(), 2u * m.n_layers * groups);
      for (const BlockEntry& b : h->blocks) {
        EXPECT_EQ(b.decoded_bytes, 70u * (8 / groups) * 16 * 2);
        EXPECT_EQ(b.offset % kKvBlockAlign, 0u);
      }
      EXPECT_TRUE(OpenAndVerify(grouped).ok()) << OpenAndVerify(grouped).ToString();
      const bool same_values =
          std::string(codec).rfind("raw", 0) == 0 || std::string(codec).rfind("lossless", 0) == 0;
      for (uint32_t l = 0; l < m.n_layers; ++l) {
        for (KvKind kind : {KvKind::kKey, KvKind::kValue}) {
          const std::vector<std::byte> a = DecodeLayer(one, l, kind);
          const std::vector<std::byte> b = DecodeLayer(grouped, l, kind);
          ASSERT_EQ(a.size(), b.size());
          if (same_values) {
            // raw and lossless keep every bit: the same values either way.
            EXPECT_TRUE(a == b) << layout::BlockName(l, kind);
          } else {
            // Lossy codecs keep statistics per block (tc's step; quant's V groups, which here
            // may cover more channels than a group has): the values differ a little, within
            // what each codec allows of the original.
            double err = 0, ref = 0;
            for (size_t i = 0; i < a.size() / 2; ++i) {
              const float x = LoadAsFloat(a.data(), DType::kF16, i);
              const float y = LoadAsFloat(b.data(), DType::kF16, i);
              err += (x - y) * (x - y);
              ref += x * x;
            }
            EXPECT_LT(err, 0.5 * ref) << layout::BlockName(l, kind);
          }
        }
      }
    }
  }
}

TEST(HeadGroupsTest, ReadBlockReadsOneGroupsBlock) {
  const ModelIdentity m = EightHeads();
  const std::vector<std::byte> f = GroupedFile(m, 33, "raw", 4);
  auto r = KvReader::Open(MemorySource(f));
  ASSERT_TRUE(r.ok());
  const std::vector<std::byte> whole = DecodeLayer(f, 2, KvKind::kValue);
  // Group 3 holds heads 6 and 7: channels [96, 128) of every token.
  std::vector<std::byte> block((*r)->header().block(2, KvKind::kValue, 3).encoded_bytes);
  ASSERT_EQ(block.size(), 33u * 32 * 2);
  ASSERT_TRUE((*r)->ReadBlock(2, KvKind::kValue, block, 3).ok());
  for (uint32_t t = 0; t < 33; ++t) {
    ASSERT_EQ(std::memcmp(block.data() + t * 64, whole.data() + (t * 128 + 96) * 2, 64), 0) << t;
  }
  const Status s = (*r)->ReadBlock(2, KvKind::kValue, block, 4);
  EXPECT_EQ(s.code(), Code::kInvalidArgument) << s.ToString();
}

TEST(HeadGroupsTest, WritersRefuseGroupsThatDoNotSplitTheHeads) {
  const ModelIdentity m = EightHeads();
  for (uint32_t groups : {0u, 3u, 16u}) {
    KvWriter w(m, Codec("raw"), {1, 2, 3}, 0, kDefaultChunkTokens, groups);
    std::vector<std::byte> kv(3 * m.channels() * 2);
    const Status s = w.AddLayer(kv, kv);
    EXPECT_EQ(s.code(), Code::kInvalidArgument) << groups;
    EXPECT_NE(s.message().find("must divide n_kv_heads 8"), std::string::npos) << s.ToString();
  }
  EXPECT_TRUE(CheckHeadGroups(m, 8).ok());
  EXPECT_EQ(DefaultHeadGroups(m), 8u);
  EXPECT_EQ(DefaultHeadGroups(SmallModel()), 1u);  // 2 KV heads
  // An MLA cache is one latent per token: one group only, and a writer says why.
  auto ds = ModelPreset("deepseek-v3");
  ASSERT_TRUE(ds.ok());
  EXPECT_EQ(DefaultHeadGroups(*ds), 1u);
  const Status mla = CheckHeadGroups(*ds, 2);
  EXPECT_EQ(mla.code(), Code::kUnsupported);
  EXPECT_NE(mla.message().find("MLA"), std::string::npos) << mla.ToString();
}

TEST(HeadGroupsTest, ParserChecksTheField) {
  const ModelIdentity m = EightHeads();
  const std::vector<std::byte> good = GroupedFile(m, 20, "raw", 4);
  ASSERT_TRUE(Parse(good).ok());
  struct Case {
    uint16_t value;
    const char* message;
  } cases[] = {{1, "head groups 1 is written as 0"},
               {3, "must divide n_kv_heads 8"},
               {2, "does not match its sections"},  // a valid count, another table size
               {2000, "must divide n_kv_heads 8"}};
  for (const Case& c : cases) {
    std::vector<std::byte> f = good;
    Put<uint16_t>(&f, layout::kHeadGroups, c.value);
    ResealHeader(&f);
    auto h = Parse(f);
    ASSERT_FALSE(h.ok()) << c.value;
    EXPECT_EQ(h.status().code(), Code::kCorruption);
    EXPECT_NE(h.status().message().find(c.message), std::string::npos)
        << c.value << ": " << h.status().ToString();
  }
}

TEST(HeadGroupsTest, CorruptOrTruncatedGroupBlocksAreNamedByLayerAndGroup) {
  const ModelIdentity m = EightHeads();
  for (const char* codec : {"raw", "lossless", "q4+zstd", "tc"}) {
    SCOPED_TRACE(codec);
    const std::vector<std::byte> good = GroupedFile(m, 50, codec, 8);
    auto h = Parse(good);
    ASSERT_TRUE(h.ok());
    // Layer 1, V, group 5.
    const BlockEntry& b = h->block(1, KvKind::kValue, 5);
    std::vector<std::byte> f = good;
    f[b.offset + b.encoded_bytes / 2] ^= std::byte{0x10};
    const Status verify = OpenAndVerify(f);
    EXPECT_EQ(verify.code(), Code::kCorruption);
    EXPECT_NE(
        verify.message().find("layer 1 V block, head group 5 (heads 5..5): checksum mismatch"),
        std::string::npos)
        << verify.ToString();
    auto r = KvReader::Open(MemorySource(f));
    ASSERT_TRUE(r.ok());
    std::vector<std::byte> out(h->decoded_block_bytes(DType::kF16));
    const Status decode = (*r)->DecodeBlock(1, KvKind::kValue, DType::kF16, out);
    EXPECT_NE(decode.message().find("head group 5"), std::string::npos) << decode.ToString();
    // Blocks of other groups still read.
    EXPECT_TRUE((*r)->DecodeBlock(1, KvKind::kKey, DType::kF16, out).ok());

    // Truncated inside the last group's block: the parser names it.
    std::vector<std::byte> cut = good;
    const BlockEntry& last = h->block(m.n_layers - 1, KvKind::kValue, 7);
    cut.resize(last.offset + last.encoded_bytes / 2);
    auto t = Parse(cut);
    ASSERT_FALSE(t.ok());
    EXPECT_NE(t.status().message().find("layer 2 V block, head group 7 (heads 7..7) truncated"),
              std::string::npos)
        << t.status().ToString();
  }
}

TEST(HeadGroupsTest, VerifyKvChecksGroupedFiles) {
  const ModelIdentity m = EightHeads();
  const std::vector<std::byte> f = GroupedFile(m, 300, "q4+zstd", 2);
  auto src = MemorySource(f);
  auto h = VerifyKv(*src);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_EQ(h->head_groups, 2u);
  // A non-zero byte in the padding after a group's block is found.
  const BlockEntry& b = h->block(0, KvKind::kKey, 1);
  std::vector<std::byte> bad = f;
  ASSERT_LT(b.offset + b.encoded_bytes, h->block(0, KvKind::kValue, 0).offset);
  bad[b.offset + b.encoded_bytes] = std::byte{1};
  auto st = VerifyKv(*MemorySource(bad));
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.status().message().find("padding after layer 0 K block, head group 1"),
            std::string::npos)
      << st.status().ToString();
}

}  // namespace
}  // namespace kdn::test
