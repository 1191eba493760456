// kdn_save: tensors encoded into a `.kv` that opens and loads back bit-exact (raw, lossless) or as
// the format library decodes it (quant), written atomically.
#include <dirent.h>
#include <sys/stat.h>

#include <random>
#include <string>
#include <vector>

#include "libkdn_test_util.h"
#include "store/format/element_math.h"

namespace kdn::test {
namespace {

std::vector<std::string> ListDir(const std::string& dir) {
  std::vector<std::string> names;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return names;
  while (dirent* e = ::readdir(d)) {
    const std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(n);
  }
  ::closedir(d);
  return names;
}

struct Tensors {
  std::vector<std::vector<std::byte>> k;
  std::vector<std::vector<std::byte>> v;
};

// Realistic-looking tensors: the synthetic generator's, so that quantization has the usual spread.
Tensors MakeTensors(const ModelIdentity& m, uint32_t n, uint64_t seed) {
  Tensors t;
  const size_t bytes = size_t{n} * m.channels() * DTypeSize(m.dtype);
  for (uint32_t l = 0; l < m.n_layers; ++l) {
    t.k.emplace_back(bytes);
    t.v.emplace_back(bytes);
    EXPECT_TRUE(SynthesizeLayerKv(m, n, l, seed, t.k.back(), t.v.back()).ok());
  }
  return t;
}

class SaveRoundTrip : public ::testing::TestWithParam<const char*> {};

TEST_P(SaveRoundTrip, OpenAndLoadGiveTheTensorsBack) {
  const std::string codec = GetParam();
  TempDir dir("kdn-save");
  CtxPtr ctx = MakeCtx();
  for (DType dtype : {DType::kF16, DType::kBF16, DType::kF32}) {
    SCOPED_TRACE(std::string(DTypeName(dtype)));
    const ModelIdentity m = TestModel(dtype, RopeStyle::kGptj, 3, 2, 16);
    const kdn_model_desc desc = ToDesc(m);
    const uint32_t n = 90;
    Tensors src = MakeTensors(m, n, 42);
    std::vector<void*> kb;
    std::vector<void*> vb;
    for (uint32_t l = 0; l < 3; ++l) {
      kb.push_back(src.k[l].data());
      vb.push_back(src.v[l].data());
    }
    kdn_dest s;
    ASSERT_EQ(
        kdn_dest_contiguous(&s, static_cast<kdn_dtype>(dtype), 3, kb.data(), vb.data(), 2, 16, n),
        KDN_OK);
    std::vector<uint32_t> tokens(n);
    for (uint32_t i = 0; i < n; ++i) tokens[i] = 1000 + i * 7;
    kdn_save_opts opts{codec.c_str(), 32, 1};
    const std::string path = dir / "saved.kv";
    ASSERT_EQ(kdn_save(ctx.get(), &desc, tokens.data(), n, 55, &s, &opts, path.c_str()), KDN_OK)
        << kdn_last_error();
    EXPECT_EQ(ListDir(dir.str()), std::vector<std::string>{"saved.kv"})
        << "temporary files left behind";

    CachePtr c = OpenCache(ctx.get(), path);
    ASSERT_TRUE(c);
    EXPECT_EQ(kdn_expect_model(c.get(), &desc), KDN_OK) << kdn_last_error();
    kdn_cache_info info;
    ASSERT_EQ(kdn_info(c.get(), &info), KDN_OK);
    EXPECT_EQ(info.position_offset, 55u);
    EXPECT_EQ(std::vector<uint32_t>(info.tokens, info.tokens + n), tokens);
    const KvHeader h = HeaderOf(path);
    EXPECT_EQ(h.chunk_tokens, 32u);
    Tensors back;
    back.k.assign(3, Guarded(src.k[0].size()));
    back.v.assign(3, Guarded(src.v[0].size()));
    std::vector<void*> bkb = {back.k[0].data(), back.k[1].data(), back.k[2].data()};
    std::vector<void*> bvb = {back.v[0].data(), back.v[1].data(), back.v[2].data()};
    kdn_dest d;
    ASSERT_EQ(
        kdn_dest_contiguous(&d, static_cast<kdn_dtype>(dtype), 3, bkb.data(), bvb.data(), 2, 16, n),
        KDN_OK);
    ASSERT_EQ(kdn_load(c.get(), 0, 3, &d, 0, nullptr), KDN_OK) << kdn_last_error();
    ASSERT_EQ(kdn_sync(c.get()), KDN_OK) << kdn_last_error();
    const bool exact = codec == "raw" || codec == "lossless";
    for (uint32_t l = 0; l < 3; ++l) {
      if (exact) {
        EXPECT_TRUE(back.k[l] == src.k[l]) << l;
        EXPECT_TRUE(back.v[l] == src.v[l]) << l;
      } else {
        EXPECT_TRUE(back.k[l] == Reference(path, l, KvKind::kKey, dtype)) << l;
        EXPECT_TRUE(back.v[l] == Reference(path, l, KvKind::kValue, dtype)) << l;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Codecs, SaveRoundTrip,
                         ::testing::Values("raw", "lossless", "q8", "q4+zstd"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& ch : n) {
                             if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           }
                           return n;
                         });

// A paged source, saved and loaded back contiguous.
TEST(Save, FromPagedSource) {
  TempDir dir("kdn-save");
  CtxPtr ctx = MakeCtx();
  const ModelIdentity m = TestModel(DType::kF16, RopeStyle::kNeox, 2, 2, 8);
  const kdn_model_desc desc = ToDesc(m);
  const uint32_t n = 40;
  const uint32_t bs = 16;
  const uint32_t ch = m.channels();
  std::vector<int32_t> table = {3, 0, 2};
  std::vector<uint16_t> pages[2][2];
  std::vector<uint16_t> truth[2][2];
  std::mt19937_64 rng(1);
  for (int l = 0; l < 2; ++l) {
    for (int kv = 0; kv < 2; ++kv) {
      pages[l][kv].assign(size_t{4} * bs * ch, 0);
      truth[l][kv].resize(size_t{n} * ch);
      for (uint32_t t = 0; t < n; ++t) {
        for (uint32_t c = 0; c < ch; ++c) {
          const uint16_t x = elem::FloatToHalf(static_cast<float>(rng() % 2000) / 100.0f - 10.0f);
          truth[l][kv][t * ch + c] = x;
          pages[l][kv][(size_t{static_cast<uint32_t>(table[t / bs])} * bs + t % bs) * ch + c] = x;
        }
      }
    }
  }
  void* kb[2] = {pages[0][0].data(), pages[1][0].data()};
  void* vb[2] = {pages[0][1].data(), pages[1][1].data()};
  kdn_dest s;
  ASSERT_EQ(kdn_dest_paged(&s, KDN_F16, 2, kb, vb, 2, 8, bs, 0, table.data(), 3), KDN_OK);
  std::vector<uint32_t> tokens(n, 5);
  const std::string path = dir / "paged.kv";
  ASSERT_EQ(kdn_save(ctx.get(), &desc, tokens.data(), n, 0, &s, nullptr, path.c_str()), KDN_OK)
      << kdn_last_error();
  for (int l = 0; l < 2; ++l) {
    for (int kv = 0; kv < 2; ++kv) {
      const std::vector<std::byte> got = Reference(path, l, static_cast<KvKind>(kv), DType::kF16);
      ASSERT_EQ(got.size(), truth[l][kv].size() * 2);
      EXPECT_EQ(std::memcmp(got.data(), truth[l][kv].data(), got.size()), 0) << l << " " << kv;
    }
  }
}

TEST(Save, Errors) {
  TempDir dir("kdn-save");
  CtxPtr ctx = MakeCtx();
  const ModelIdentity m = TestModel(DType::kF16, RopeStyle::kNeox, 2, 2, 8);
  const kdn_model_desc desc = ToDesc(m);
  const uint32_t n = 10;
  std::vector<uint16_t> buf(size_t{4} * n * m.channels(), 0);
  void* kb[2] = {buf.data(), buf.data() + n * m.channels()};
  void* vb[2] = {buf.data() + 2 * n * m.channels(), buf.data() + 3 * n * m.channels()};
  kdn_dest s;
  ASSERT_EQ(kdn_dest_contiguous(&s, KDN_F16, 2, kb, vb, 2, 8, n), KDN_OK);
  std::vector<uint32_t> tokens(n, 3);
  const std::string path = dir / "x.kv";
  kdn_dest wrong = s;
  wrong.dtype = KDN_F32;
  EXPECT_EQ(kdn_save(ctx.get(), &desc, tokens.data(), n, 0, &wrong, nullptr, path.c_str()),
            KDN_E_INVALID_ARG);
  void* missing[2] = {buf.data(), nullptr};
  wrong = s;
  wrong.k_base = missing;
  EXPECT_EQ(kdn_save(ctx.get(), &desc, tokens.data(), n, 0, &wrong, nullptr, path.c_str()),
            KDN_E_INVALID_ARG);
  kdn_save_opts bad_codec{"q5", 0, 0};
  EXPECT_EQ(kdn_save(ctx.get(), &desc, tokens.data(), n, 0, &s, &bad_codec, path.c_str()),
            KDN_E_INVALID_ARG);
  EXPECT_EQ(kdn_save(ctx.get(), &desc, tokens.data(), 0, 0, &s, nullptr, path.c_str()),
            KDN_E_INVALID_ARG);
  EXPECT_EQ(kdn_save(ctx.get(), &desc, tokens.data(), n + 1, 0, &s, nullptr, path.c_str()),
            KDN_E_INVALID_ARG);
  EXPECT_EQ(kdn_save(ctx.get(), &desc, nullptr, n, 0, &s, nullptr, path.c_str()),
            KDN_E_INVALID_ARG);
  EXPECT_EQ(kdn_save(ctx.get(), &desc, tokens.data(), n, 0, &s, nullptr,
                     (dir / "no/such/dir.kv").c_str()),
            KDN_E_NOT_FOUND);
  EXPECT_TRUE(ListDir(dir.str()).empty());
  // Replacing an existing file is atomic: the new content, no leftovers.
  ASSERT_EQ(kdn_save(ctx.get(), &desc, tokens.data(), n, 0, &s, nullptr, path.c_str()), KDN_OK)
      << kdn_last_error();
  tokens[0] = 77;
  ASSERT_EQ(kdn_save(ctx.get(), &desc, tokens.data(), n, 0, &s, nullptr, path.c_str()), KDN_OK)
      << kdn_last_error();
  EXPECT_EQ(HeaderOf(path).tokens[0], 77u);
  EXPECT_EQ(ListDir(dir.str()), std::vector<std::string>{"x.kv"});
}

}  // namespace
}  // namespace kdn::test
