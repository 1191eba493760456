// Decoding through the C API equals the format library's own decode (KvReader::DecodeBlock), for
// every codec, every model dtype and every output dtype, into a contiguous destination.
#include <cstdlib>
#include <string>
#include <tuple>
#include <vector>

#include "libkdn_test_util.h"

namespace kdn::test {
namespace {

const char* const kCodecs[] = {"raw", "lossless", "q8",          "q4",
                               "q2",  "q8+zstd",  "q4:g64+zstd", "q2:g128"};
const DType kDTypes[] = {DType::kF16, DType::kBF16, DType::kF32};

std::string Name(DType t) {
  return std::string(DTypeName(t));
}

// Loads layers [lb, le) of `path` into contiguous per-layer buffers of `out` and compares each
// block with the reference decode; layers outside the range stay untouched.
void CheckContiguous(kdn_ctx* ctx, const std::string& path, const ModelIdentity& m,
                     uint32_t n_tokens, DType out, uint32_t lb, uint32_t le) {
  CachePtr c = OpenCache(ctx, path);
  ASSERT_TRUE(c);
  const size_t block = size_t{n_tokens} * m.channels() * DTypeSize(out);
  std::vector<std::vector<std::byte>> k(m.n_layers, Guarded(block));
  std::vector<std::vector<std::byte>> v(m.n_layers, Guarded(block));
  std::vector<void*> kb(m.n_layers);
  std::vector<void*> vb(m.n_layers);
  for (uint32_t l = 0; l < m.n_layers; ++l) {
    kb[l] = k[l].data();
    vb[l] = v[l].data();
  }
  kdn_dest d;
  ASSERT_EQ(kdn_dest_contiguous(&d, static_cast<kdn_dtype>(out), m.n_layers, kb.data(), vb.data(),
                                m.n_kv_heads, m.head_dim, n_tokens),
            KDN_OK);
  ASSERT_EQ(kdn_load(c.get(), lb, le, &d, 0, nullptr), KDN_OK) << kdn_last_error();
  for (uint32_t l = lb; l < le; ++l)
    ASSERT_EQ(kdn_layer_wait(c.get(), l), KDN_OK) << kdn_last_error();
  ASSERT_EQ(kdn_sync(c.get()), KDN_OK) << kdn_last_error();
  for (uint32_t l = 0; l < m.n_layers; ++l) {
    for (KvKind kind : {KvKind::kKey, KvKind::kValue}) {
      const std::vector<std::byte>& got = kind == KvKind::kKey ? k[l] : v[l];
      if (l < lb || l >= le) {
        EXPECT_EQ(got, Guarded(block)) << "layer " << l << " outside the range was written";
        continue;
      }
      const std::vector<std::byte> ref = Reference(path, l, kind, out);
      ASSERT_EQ(got.size(), ref.size());
      EXPECT_TRUE(got == ref) << path << " layer " << l << (kind == KvKind::kKey ? " K" : " V")
                              << " as " << Name(out);
    }
  }
}

class DecodeEveryCodec : public ::testing::TestWithParam<std::tuple<const char*, DType>> {};

TEST_P(DecodeEveryCodec, EqualsFormatLibraryForEveryOutputDType) {
  const auto [codec, model_dtype] = GetParam();
  TempDir dir("kdn-engine");
  CtxPtr ctx = MakeCtx();
  const ModelIdentity m = TestModel(model_dtype, RopeStyle::kNeox, 3, 2, 16);
  const uint32_t n_tokens = 83;  // not a multiple of any group size
  const std::string path = WriteSynthetic(dir, "a.kv", m, n_tokens, codec, 11);
  for (DType out : kDTypes) {
    SCOPED_TRACE(std::string(codec) + " " + Name(model_dtype) + " -> " + Name(out));
    CheckContiguous(ctx.get(), path, m, n_tokens, out, 0, m.n_layers);
  }
}

INSTANTIATE_TEST_SUITE_P(All, DecodeEveryCodec,
                         ::testing::Combine(::testing::ValuesIn(kCodecs),
                                            ::testing::ValuesIn(kDTypes)),
                         [](const auto& info) {
                           std::string n = std::string(std::get<0>(info.param)) + "_" +
                                           Name(std::get<1>(info.param));
                           for (char& ch : n) {
                             if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           }
                           return n;
                         });

// Rows of 2 KiB: several token tiles per block, decoded by several workers.
TEST(Decode, ManyTilesAndALayerSubrange) {
  TempDir dir("kdn-engine");
  CtxPtr ctx = MakeCtx();
  const ModelIdentity m = TestModel(DType::kF16, RopeStyle::kNeox, 4, 8, 64);
  const uint32_t n_tokens = 700;
  for (const char* codec : {"raw", "q4", "lossless"}) {
    SCOPED_TRACE(codec);
    const std::string path =
        WriteSynthetic(dir, std::string(codec) + ".kv", m, n_tokens, codec, 21);
    CheckContiguous(ctx.get(), path, m, n_tokens, DType::kF16, 1, 3);
    CheckContiguous(ctx.get(), path, m, n_tokens, DType::kF32, 0, 4);
  }
}

TEST(Decode, OneWorkerThread) {
  ::setenv("KDN_CPU_THREADS", "1", 1);
  CtxPtr ctx = MakeCtx();
  ::unsetenv("KDN_CPU_THREADS");
  TempDir dir("kdn-engine");
  const ModelIdentity m = TestModel(DType::kBF16, RopeStyle::kGptj, 3, 4, 64);
  const std::string path = WriteSynthetic(dir, "a.kv", m, 300, "q8", 4);
  CheckContiguous(ctx.get(), path, m, 300, DType::kBF16, 0, 3);
}

// The model `tiny` (stories260K's shape: head_dim 8, fp32, gptj).
TEST(Decode, TinyPreset) {
  Result<ModelIdentity> m = ModelPreset("tiny");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  TempDir dir("kdn-engine");
  CtxPtr ctx = MakeCtx();
  for (const char* codec : {"raw", "lossless", "q4"}) {
    const std::string path = WriteSynthetic(dir, std::string(codec) + ".kv", *m, 64, codec, 8);
    CheckContiguous(ctx.get(), path, *m, 64, DType::kF16, 0, m->n_layers);
  }
}

// Only the K or only the V tensors: NULL bases are skipped, the other kind untouched.
TEST(Decode, NullBasesAreSkipped) {
  TempDir dir("kdn-engine");
  CtxPtr ctx = MakeCtx();
  const ModelIdentity m = TestModel(DType::kF16);
  const std::string path = WriteSynthetic(dir, "a.kv", m, 50, "q4", 9);
  CachePtr c = OpenCache(ctx.get(), path);
  const size_t block = size_t{50} * m.channels() * 2;
  std::vector<std::byte> v1 = Guarded(block);
  void* kb[3] = {nullptr, nullptr, nullptr};
  void* vb[3] = {nullptr, v1.data(), nullptr};
  kdn_dest d;
  ASSERT_EQ(kdn_dest_contiguous(&d, KDN_F16, 3, nullptr, vb, m.n_kv_heads, m.head_dim, 50), KDN_OK);
  ASSERT_EQ(kdn_load(c.get(), 0, 3, &d, 0, nullptr), KDN_OK) << kdn_last_error();
  ASSERT_EQ(kdn_sync(c.get()), KDN_OK) << kdn_last_error();
  EXPECT_TRUE(v1 == Reference(path, 1, KvKind::kValue, DType::kF16));
  d.k_base = kb;  // all NULL: nothing to do, still completes
  ASSERT_EQ(kdn_load(c.get(), 0, 3, &d, 0, nullptr), KDN_OK) << kdn_last_error();
  EXPECT_EQ(kdn_layer_wait(c.get(), 0), KDN_OK);
  EXPECT_EQ(kdn_sync(c.get()), KDN_OK);
}

// Closing a cache with loads still running waits for them (three loads, three destinations: the
// same destination twice would be a data race of the caller's making).
TEST(Decode, CloseWithPendingLoads) {
  TempDir dir("kdn-engine");
  CtxPtr ctx = MakeCtx();
  const ModelIdentity m = TestModel(DType::kF16, RopeStyle::kNeox, 4, 8, 64);
  const std::string path = WriteSynthetic(dir, "a.kv", m, 500, "lossless", 12);
  const size_t block = size_t{500} * m.channels() * 2;
  std::vector<std::vector<std::byte>> k(12, std::vector<std::byte>(block));
  std::vector<void*> kb;
  for (auto& b : k) kb.push_back(b.data());
  kdn_dest d[3];
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(kdn_dest_contiguous(&d[i], KDN_F16, 4, kb.data() + 4 * i, nullptr, 8, 64, 500),
              KDN_OK);
  }
  {
    CachePtr c = OpenCache(ctx.get(), path);
    for (int i = 0; i < 3; ++i) ASSERT_EQ(kdn_load(c.get(), 0, 4, &d[i], 0, nullptr), KDN_OK);
  }  // kdn_close
  for (uint32_t i = 0; i < 12; ++i)
    EXPECT_TRUE(k[i] == Reference(path, i % 4, KvKind::kKey, DType::kF16)) << i;
}

}  // namespace
}  // namespace kdn::test
