// MLA caches in the `.kv` format (docs/kv-format.md, "MLA caches"): one latent block per layer in
// the K slot, the V slot empty, the identity (attention kind, kv_lora_rank) in the header and the
// fingerprint; raw, lossless and quant apply, tc is refused.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "format_test_util.h"
#include "kdn/synthetic.h"

namespace kdn {
namespace {

using test::Get;
using test::Put;
using test::ResealHeader;

// A small MLA model: latent 32 + rope 8.
ModelIdentity SmallMla(DType dtype = DType::kBF16, uint32_t layers = 3) {
  ModelIdentity m;
  m.name = "mla-test";
  m.n_layers = layers;
  m.n_heads = 8;
  m.n_kv_heads = 1;
  m.head_dim = 40;
  m.dtype = dtype;
  m.rope_style = RopeStyle::kGptj;
  m.rotary_dim = 8;
  m.rope_theta = 10000.0f;
  m.attention = AttentionKind::kMla;
  m.kv_lora_rank = 32;
  return m;
}

class MlaFiles : public ::testing::TestWithParam<const char*> {};

TEST_P(MlaFiles, RoundTripAndVerify) {
  const std::string codec = GetParam();
  const ModelIdentity m = SmallMla();
  constexpr uint32_t kTokens = 70;
  const size_t bytes = size_t{kTokens} * m.channels() * DTypeSize(m.dtype);
  std::vector<std::vector<std::byte>> latents;
  KvWriter writer(m, test::Codec(codec), SynthesizeTokens(kTokens, 5), 9);
  for (uint32_t l = 0; l < m.n_layers; ++l) {
    latents.push_back(std::vector<std::byte>(bytes));
    ASSERT_TRUE(SynthesizeLayerKv(m, kTokens, l, 5, latents[l], {}).ok());
    ASSERT_TRUE(writer.AddLayer(latents[l], {}).ok());
  }
  auto f = writer.FinishToMemory();
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ(Get<uint8_t>(*f, 105), 1u);
  EXPECT_EQ(Get<uint32_t>(*f, 108), 32u);
  auto verified = VerifyKv(*MemorySource(*f));
  ASSERT_TRUE(verified.ok()) << verified.status().ToString();
  const KvHeader& h = *verified;
  EXPECT_TRUE(h.model.mla());
  EXPECT_EQ(h.model.kv_lora_rank, 32u);
  EXPECT_EQ(h.model.Compare(m).ok(), true);
  auto r = KvReader::Open(MemorySource(*f));
  ASSERT_TRUE(r.ok());
  for (uint32_t l = 0; l < m.n_layers; ++l) {
    EXPECT_TRUE(h.has_block(l, KvKind::kKey));
    EXPECT_FALSE(h.has_block(l, KvKind::kValue));
    const BlockEntry& v = h.block(l, KvKind::kValue);
    EXPECT_EQ(v.encoded_bytes, 0u);
    EXPECT_EQ(v.decoded_bytes, 0u);
    EXPECT_EQ(v.checksum, 0u);
    EXPECT_EQ(h.block(l, KvKind::kKey).decoded_bytes, bytes);
    std::vector<std::byte> out(bytes);
    ASSERT_TRUE((*r)->DecodeBlock(l, KvKind::kKey, m.dtype, out).ok());
    if (codec == "raw" || codec == "lossless") {
      EXPECT_EQ(out, latents[l]) << "layer " << l;  // bit for bit
    } else {
      // Quantized per channel over tokens, as a K block: within the codec's error.
      double max_err = 0.0;
      for (size_t i = 0; i < size_t{kTokens} * m.channels(); ++i) {
        max_err = std::max(max_err,
                           double(std::abs(test::LoadAsFloat(out.data(), m.dtype, i) -
                                           test::LoadAsFloat(latents[l].data(), m.dtype, i))));
      }
      EXPECT_LT(max_err, codec == "q8" ? 0.05 : 0.6) << "layer " << l;
    }
    std::vector<std::byte> none(16);
    const Status s = (*r)->ReadBlock(l, KvKind::kValue, none);
    EXPECT_EQ(s.code(), Code::kInvalidArgument) << s.ToString();
    EXPECT_NE(s.message().find("MLA"), std::string::npos) << s.message();
  }
  // A V tensor given to an MLA writer is refused.
  KvWriter wrong(m, test::Codec(codec), SynthesizeTokens(kTokens, 5), 9);
  EXPECT_EQ(wrong.AddLayer(latents[0], latents[0]).code(), Code::kInvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(Codecs, MlaFiles,
                         ::testing::Values("raw", "lossless", "q8", "q4", "q4+zstd", "q8:g16",
                                           "lossless:entropy=rans"));

TEST(MlaFormat, TcIsRefused) {
  KvWriter writer(SmallMla(), test::Codec("tc"), SynthesizeTokens(10, 1));
  const Status s = writer.AddLayer(std::vector<std::byte>(10 * 40 * 2), {});
  EXPECT_EQ(s.code(), Code::kUnsupported) << s.ToString();
  EXPECT_NE(s.message().find("MLA"), std::string::npos) << s.message();
  // A header that claims tc for an MLA cache.
  auto f = test::MakeFile(SmallMla(), 10, "raw");
  Put<uint8_t>(&f, 74, 3);
  Put<uint8_t>(&f, 75, 4);
  ResealHeader(&f);
  auto h = test::Parse(f);
  ASSERT_FALSE(h.ok());
  EXPECT_EQ(h.status().code(), Code::kCorruption);
  EXPECT_NE(h.status().message().find("MLA"), std::string::npos) << h.status().message();
}

TEST(MlaFormat, IdentityIsValidatedAndFingerprinted) {
  const ModelIdentity m = SmallMla();
  EXPECT_TRUE(m.Validate().ok()) << m.Validate().ToString();
  ModelIdentity mha = m;
  mha.attention = AttentionKind::kMha;
  mha.kv_lora_rank = 0;
  ASSERT_TRUE(mha.Validate().ok());
  EXPECT_NE(mha.Fingerprint(), m.Fingerprint());
  EXPECT_FALSE(mha.Compare(m).ok());
  ModelIdentity other = m;
  other.kv_lora_rank = 24;
  other.rotary_dim = 16;
  ASSERT_TRUE(other.Validate().ok());
  EXPECT_NE(other.Fingerprint(), m.Fingerprint());
  auto invalid = [&](auto edit) {
    ModelIdentity x = m;
    edit(x);
    return !x.Validate().ok();
  };
  EXPECT_TRUE(invalid([](ModelIdentity& x) { x.n_kv_heads = 2; }));
  EXPECT_TRUE(invalid([](ModelIdentity& x) { x.kv_lora_rank = 0; }));
  EXPECT_TRUE(invalid([](ModelIdentity& x) { x.kv_lora_rank = 40; }));
  EXPECT_TRUE(invalid([](ModelIdentity& x) { x.rotary_dim = 0; }));   // must be head_dim - rank
  EXPECT_TRUE(invalid([](ModelIdentity& x) { x.rotary_dim = 16; }));
  EXPECT_TRUE(invalid([](ModelIdentity& x) {
    x.attention = AttentionKind::kMha;  // kv_lora_rank only with MLA
  }));
  auto ds = ModelPreset("deepseek-v3");
  ASSERT_TRUE(ds.ok());
  EXPECT_TRUE(ds->mla());
  EXPECT_EQ(ds->n_layers, 61u);
  EXPECT_EQ(ds->kv_lora_rank, 512u);
  EXPECT_EQ(ds->head_dim, 576u);
  EXPECT_EQ(ds->effective_rotary_dim(), 64u);
  EXPECT_TRUE(ds->Validate().ok());
}

TEST(MlaFormat, CorruptFilesAreRejected) {
  const auto good = test::MakeFile(SmallMla(), 40, "q4");
  ASSERT_TRUE(VerifyKv(*MemorySource(good)).ok());
  auto h = test::Parse(good);
  ASSERT_TRUE(h.ok());
  const auto s = layout::ComputeSections(8, 40, kDefaultChunkTokens, 3);
  auto rejected = [&](std::vector<std::byte> f, const char* word) {
    auto r = VerifyKv(*MemorySource(f));
    ASSERT_FALSE(r.ok()) << word;
    EXPECT_EQ(r.status().code(), Code::kCorruption) << r.status().ToString();
    EXPECT_NE(r.status().message().find(word), std::string::npos)
        << "expected '" << word << "' in: " << r.status().message();
  };
  {
    auto f = good;  // a latent byte
    f[h->block(1, KvKind::kKey).offset + 7] ^= std::byte{4};
    rejected(f, "layer 1 K block: checksum mismatch");
  }
  {
    auto f = good;  // the empty V slot claims bytes
    Put<uint64_t>(&f, s.table_offset + 32 * 3 + 8, 8);
    ResealHeader(&f);
    rejected(f, "layer 1 V block");
  }
  {
    auto f = good;  // and a checksum
    Put<uint64_t>(&f, s.table_offset + 32 * 1 + 24, 1);
    ResealHeader(&f);
    rejected(f, "layer 0 V block");
  }
  {
    auto f = good;
    Put<uint8_t>(&f, 105, 2);
    ResealHeader(&f);
    rejected(f, "attention");
  }
  {
    auto f = good;  // no longer MLA: kv_lora_rank must then be 0
    Put<uint8_t>(&f, 105, 0);
    ResealHeader(&f);
    rejected(f, "kv_lora_rank");
  }
  {
    auto f = good;  // another rank: the identity no longer adds up
    Put<uint32_t>(&f, 108, 30);
    ResealHeader(&f);
    rejected(f, "kv_lora_rank");
  }
  for (size_t off : {112, 127}) {
    auto f = good;
    f[off] = std::byte{1};
    ResealHeader(&f);
    rejected(f, "reserved");
  }
  // Head groups (bytes 106..107): an MLA cache has one KV head, so one group.
  {
    auto f = good;
    Put<uint16_t>(&f, layout::kHeadGroups, 2);
    ResealHeader(&f);
    rejected(f, "an MLA cache has one latent per token");
  }
}

}  // namespace
}  // namespace kdn
