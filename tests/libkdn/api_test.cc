// The C API's contract apart from decoding: versions, status names, contexts, opening files,
// cache info, model checks, and argument validation.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <string>
#include <thread>
#include <vector>

#include "c_abi_calls.h"
#include "libkdn_test_util.h"

namespace kdn::test {
namespace {

TEST(EngineApi, VersionAndStatusNames) {
  EXPECT_EQ(kdn_api_version(), KDN_API_VERSION);
  EXPECT_NE(std::string(kdn_version_string()).find("kdn"), std::string::npos);
  EXPECT_STREQ(kdn_status_name(KDN_OK), "KDN_OK");
  EXPECT_STREQ(kdn_status_name(KDN_E_CORRUPT), "KDN_E_CORRUPT");
  EXPECT_STREQ(kdn_status_name(KDN_E_MODEL_MISMATCH), "KDN_E_MODEL_MISMATCH");
  EXPECT_STREQ(kdn_status_name(KDN_E_INTERNAL), "KDN_E_INTERNAL");
  EXPECT_STREQ(kdn_test_status_name(99), "KDN_E_UNKNOWN");
}

TEST(EngineApi, ContextCreation) {
  kdn_ctx* ctx = nullptr;
  ASSERT_EQ(kdn_ctx_create(-1, &ctx), KDN_OK) << kdn_last_error();
  EXPECT_EQ(kdn_ctx_device(ctx), -1);
  kdn_ctx_destroy(ctx);
  kdn_ctx_destroy(nullptr);  // harmless
  EXPECT_EQ(kdn_ctx_create(-1, nullptr), KDN_E_INVALID_ARG);
  EXPECT_EQ(kdn_ctx_create(-2, &ctx), KDN_E_INVALID_ARG);
  EXPECT_EQ(ctx, nullptr);
  // No such device, whether or not this build has CUDA.
  EXPECT_EQ(kdn_ctx_create(1000, &ctx), KDN_E_NO_DEVICE);
  EXPECT_NE(std::string(kdn_last_error()), "");
  EXPECT_EQ(ctx, nullptr);
}

TEST(EngineApi, LastErrorIsPerThread) {
  EXPECT_EQ(kdn_open(nullptr, "x", nullptr), KDN_E_INVALID_ARG);
  const std::string here = kdn_last_error();
  EXPECT_NE(here, "");
  std::string there = "unset";
  std::thread([&] { there = kdn_last_error(); }).join();
  EXPECT_EQ(there, "");
}

TEST(EngineApi, OpenErrors) {
  TempDir dir("kdn-engine");
  CtxPtr ctx = MakeCtx();
  kdn_cache* c = nullptr;
  EXPECT_EQ(kdn_open(ctx.get(), (dir / "missing.kv").c_str(), &c), KDN_E_NOT_FOUND);
  EXPECT_EQ(c, nullptr);
  EXPECT_NE(std::string(kdn_last_error()).find("missing.kv"), std::string::npos);

  const std::string text =
      "this is not a kv cache, just some text that is long enough to hold a header "
      "of one hundred and twenty-eight bytes, and then a little more";
  WriteBytes(dir / "text.kv", text.data(), text.size());
  EXPECT_EQ(kdn_open(ctx.get(), (dir / "text.kv").c_str(), &c), KDN_E_CORRUPT);
  EXPECT_NE(std::string(kdn_last_error()).find("not a .kv"), std::string::npos) << kdn_last_error();

  WriteBytes(dir / "empty.kv", "", 0);
  EXPECT_EQ(kdn_open(ctx.get(), (dir / "empty.kv").c_str(), &c), KDN_E_CORRUPT);

  EXPECT_EQ(kdn_open(ctx.get(), dir.str().c_str(), &c), KDN_E_INVALID_ARG);  // a directory

  const ModelIdentity m = TestModel(DType::kF16);
  const std::string good = WriteSynthetic(dir, "good.kv", m, 40, "raw", 1);
  const std::vector<std::byte> bytes = ReadBytes(good);
  for (size_t cut : {size_t{8}, size_t{100}, size_t{200}, bytes.size() / 2, bytes.size() - 1}) {
    WriteBytes(dir / "cut.kv", bytes.data(), cut);
    EXPECT_EQ(kdn_open(ctx.get(), (dir / "cut.kv").c_str(), &c), KDN_E_CORRUPT) << "cut at " << cut;
    EXPECT_EQ(c, nullptr);
  }
  EXPECT_EQ(kdn_open(ctx.get(), nullptr, &c), KDN_E_INVALID_ARG);
  EXPECT_EQ(kdn_open(nullptr, good.c_str(), &c), KDN_E_INVALID_ARG);
}

TEST(EngineApi, Info) {
  TempDir dir("kdn-engine");
  CtxPtr ctx = MakeCtx();
  const ModelIdentity m = TestModel(DType::kBF16, RopeStyle::kGptj, 4, 2, 32, 16);
  const std::string path = WriteSynthetic(dir, "a.kv", m, 77, "q4+zstd", 5, 123);
  CachePtr c = OpenCache(ctx.get(), path);
  ASSERT_TRUE(c);
  kdn_cache_info info;
  ASSERT_EQ(kdn_info(c.get(), &info), KDN_OK);
  const KvHeader h = HeaderOf(path);
  EXPECT_STREQ(info.model.name, "engine-test");
  EXPECT_EQ(info.model.n_layers, 4u);
  EXPECT_EQ(info.model.n_kv_heads, 2u);
  EXPECT_EQ(info.model.head_dim, 32u);
  EXPECT_EQ(info.model.dtype, KDN_BF16);
  EXPECT_EQ(info.model.rope_style, KDN_ROPE_GPTJ);
  EXPECT_EQ(info.model.rotary_dim, 16u);
  EXPECT_EQ(info.n_tokens, 77u);
  EXPECT_EQ(info.position_offset, 123u);
  EXPECT_EQ(std::vector<uint32_t>(info.tokens, info.tokens + info.n_tokens), h.tokens);
  EXPECT_STREQ(info.codec, h.codec.Name().c_str());
  EXPECT_EQ(info.file_bytes, ReadBytes(path).size());
  EXPECT_EQ(info.decoded_bytes, uint64_t{4} * 2 * 77 * 64 * 2);
  EXPECT_EQ(info.fast_path, 0);
  uint64_t lo = 0;
  uint64_t hi = 0;
  for (int i = 7; i >= 0; --i) {
    lo = (lo << 8) | info.fingerprint[i];
    hi = (hi << 8) | info.fingerprint[8 + i];
  }
  EXPECT_EQ(lo, m.Fingerprint().lo);
  EXPECT_EQ(hi, m.Fingerprint().hi);
  EXPECT_EQ(kdn_info(nullptr, &info), KDN_E_INVALID_ARG);
  EXPECT_EQ(kdn_info(c.get(), nullptr), KDN_E_INVALID_ARG);
}

TEST(EngineApi, PrefixHashesAreTheFormatsChain) {
  TempDir dir("kdn-engine");
  CtxPtr ctx = MakeCtx();
  const ModelIdentity m = TestModel(DType::kF16);
  const std::string path = WriteSynthetic(dir, "a.kv", m, 600, "raw", 3);
  CachePtr c = OpenCache(ctx.get(), path);
  ASSERT_TRUE(c);
  const KvHeader h = HeaderOf(path);
  ASSERT_EQ(h.prefix_hashes.size(), 3u);  // 256, 512, 600 tokens

  char hex[3][KDN_PREFIX_HASH_HEX_BYTES];
  uint32_t n = 0;
  uint32_t chunk = 0;
  ASSERT_EQ(kdn_cache_prefix_hashes(c.get(), hex[0], 3, &n, &chunk), KDN_OK) << kdn_last_error();
  EXPECT_EQ(n, 3u);
  EXPECT_EQ(chunk, 256u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(std::string(hex[i]), h.prefix_hashes[i].ToHex());

  // From the model and the token ids alone: the same chain, and another one for other tokens
  // or another chunk size.
  const kdn_model_desc d = ToDesc(m);
  char computed[3][KDN_PREFIX_HASH_HEX_BYTES];
  ASSERT_EQ(kdn_prefix_hashes(&d, h.tokens.data(), 600, 0, computed[0], 3, &n), KDN_OK)
      << kdn_last_error();
  EXPECT_EQ(n, 3u);
  for (int i = 0; i < 3; ++i) EXPECT_STREQ(computed[i], hex[i]);
  ASSERT_EQ(kdn_prefix_hashes(&d, h.tokens.data(), 300, 0, computed[0], 3, &n), KDN_OK);
  EXPECT_EQ(n, 2u);
  EXPECT_STREQ(computed[0], hex[0]);
  EXPECT_STRNE(computed[1], hex[1]) << "300 tokens chain differently from 512";
  ASSERT_EQ(kdn_prefix_hashes(&d, h.tokens.data(), 600, 128, computed[0], 3, &n),
            KDN_E_INVALID_ARG)
      << "5 hashes do not fit in 3";
  EXPECT_EQ(n, 5u);
  ASSERT_EQ(kdn_prefix_hashes(&d, h.tokens.data(), 0, 0, nullptr, 0, &n), KDN_OK);
  EXPECT_EQ(n, 0u);
  EXPECT_EQ(kdn_cache_prefix_hashes(c.get(), hex[0], 2, &n, nullptr), KDN_E_INVALID_ARG);
  EXPECT_EQ(kdn_cache_prefix_hashes(nullptr, hex[0], 3, &n, nullptr), KDN_E_INVALID_ARG);
  EXPECT_EQ(kdn_prefix_hashes(nullptr, h.tokens.data(), 600, 0, computed[0], 3, &n),
            KDN_E_INVALID_ARG);
}

TEST(EngineApi, ModelMismatchNamesTheField) {
  TempDir dir("kdn-engine");
  CtxPtr ctx = MakeCtx();
  const ModelIdentity m = TestModel(DType::kF16, RopeStyle::kNeox, 3, 2, 16, 8);
  CachePtr c = OpenCache(ctx.get(), WriteSynthetic(dir, "a.kv", m, 20, "raw", 1));
  ASSERT_TRUE(c);
  kdn_model_desc good = ToDesc(m);
  EXPECT_EQ(kdn_expect_model(c.get(), &good), KDN_OK) << kdn_last_error();
  good.n_heads = 99;  // not part of the identity
  EXPECT_EQ(kdn_expect_model(c.get(), &good), KDN_OK) << kdn_last_error();

  struct Case {
    const char* field;
    void (*change)(kdn_model_desc*);
  };
  const Case cases[] = {
      {"name", [](kdn_model_desc* d) { d->name = "other-model"; }},
      {"n_layers", [](kdn_model_desc* d) { d->n_layers = 4; }},
      {"n_kv_heads", [](kdn_model_desc* d) { d->n_kv_heads = 4; }},
      {"head_dim", [](kdn_model_desc* d) { d->head_dim = 32; }},
      {"dtype", [](kdn_model_desc* d) { d->dtype = KDN_BF16; }},
      {"rope_style", [](kdn_model_desc* d) { d->rope_style = KDN_ROPE_GPTJ; }},
      {"rotary_dim", [](kdn_model_desc* d) { d->rotary_dim = 16; }},
      {"rope_theta", [](kdn_model_desc* d) { d->rope_theta = 500000.0f; }},
      {"rope_scale", [](kdn_model_desc* d) { d->rope_scale = 2.0f; }},
  };
  for (const Case& k : cases) {
    kdn_model_desc d = ToDesc(m);
    k.change(&d);
    EXPECT_EQ(kdn_expect_model(c.get(), &d), KDN_E_MODEL_MISMATCH) << k.field;
    EXPECT_NE(std::string(kdn_last_error()).find(k.field), std::string::npos)
        << k.field << ": " << kdn_last_error();
  }
  kdn_model_desc d = ToDesc(m);
  d.rope_scale = 0.0f;  // read as 1
  EXPECT_EQ(kdn_expect_model(c.get(), &d), KDN_OK) << kdn_last_error();
  EXPECT_EQ(kdn_test_expect_model_with_style(c.get(), &d, 7), KDN_E_INVALID_ARG);
  d.name = nullptr;
  EXPECT_EQ(kdn_expect_model(c.get(), &d), KDN_E_INVALID_ARG);
  EXPECT_EQ(kdn_expect_model(c.get(), nullptr), KDN_E_INVALID_ARG);
}

TEST(EngineApi, DestHelpers) {
  kdn_dest d;
  void* bases[2] = {nullptr, nullptr};
  ASSERT_EQ(kdn_dest_contiguous(&d, KDN_F16, 2, bases, bases, 4, 64, 100), KDN_OK);
  EXPECT_EQ(d.block_size, 1u);
  EXPECT_EQ(d.block_stride, 256);
  EXPECT_EQ(d.head_stride, 64);
  EXPECT_EQ(d.capacity_tokens, 100u);
  int32_t table[3] = {2, 0, 1};
  ASSERT_EQ(kdn_dest_paged(&d, KDN_BF16, 2, bases, bases, 4, 64, 16, 0, table, 3), KDN_OK);
  EXPECT_EQ(d.block_stride, 16 * 4 * 64);
  EXPECT_EQ(d.token_stride, 4 * 64);
  EXPECT_EQ(d.head_stride, 64);
  EXPECT_EQ(d.capacity_tokens, 48u);
  ASSERT_EQ(kdn_dest_paged(&d, KDN_F32, 2, bases, bases, 4, 64, 16, 1, nullptr, 0), KDN_OK);
  EXPECT_EQ(d.token_stride, 64);
  EXPECT_EQ(d.head_stride, 16 * 64);
  EXPECT_EQ(d.capacity_tokens, UINT32_MAX);
  EXPECT_EQ(kdn_dest_paged(&d, KDN_F32, 2, bases, bases, 4, 64, 16, 2, nullptr, 0),
            KDN_E_INVALID_ARG);
  EXPECT_EQ(kdn_dest_paged(&d, KDN_F32, 2, bases, bases, 4, 64, 0, 0, nullptr, 0),
            KDN_E_INVALID_ARG);
  EXPECT_EQ(kdn_test_dest_contiguous_with_dtype(7), KDN_E_INVALID_ARG);
  EXPECT_EQ(kdn_dest_contiguous(nullptr, KDN_F16, 2, bases, bases, 4, 64, 1), KDN_E_INVALID_ARG);
}

// Every malformed descriptor or range is refused before anything is written.
TEST(EngineApi, LoadValidation) {
  TempDir dir("kdn-engine");
  CtxPtr ctx = MakeCtx();
  const ModelIdentity m = TestModel(DType::kF16, RopeStyle::kNeox, 3, 2, 16);
  CachePtr c = OpenCache(ctx.get(), WriteSynthetic(dir, "a.kv", m, 40, "raw", 1));
  ASSERT_TRUE(c);
  const uint32_t ch = m.channels();
  std::vector<uint16_t> buf(3 * 2 * 64 * ch + 8);
  void* k[3];
  void* v[3];
  for (int l = 0; l < 3; ++l) {
    k[l] = buf.data() + (2 * l) * 64 * ch;
    v[l] = buf.data() + (2 * l + 1) * 64 * ch;
  }
  kdn_dest d;
  ASSERT_EQ(kdn_dest_contiguous(&d, KDN_F16, 3, k, v, 2, 16, 64), KDN_OK);
  ASSERT_EQ(kdn_load(c.get(), 0, 3, &d, 0, nullptr), KDN_OK) << kdn_last_error();
  ASSERT_EQ(kdn_sync(c.get()), KDN_OK) << kdn_last_error();

  const auto expect_invalid = [&](const kdn_dest& bad, uint32_t lb, uint32_t le, uint32_t off,
                                  const char* what) {
    EXPECT_EQ(kdn_load(c.get(), lb, le, &bad, off, nullptr), KDN_E_INVALID_ARG) << what;
    EXPECT_NE(std::string(kdn_last_error()), "") << what;
  };
  expect_invalid(d, 0, 4, 0, "layer_end beyond the cache");
  expect_invalid(d, 2, 1, 0, "reversed range");
  expect_invalid(d, 0, 3, 25, "tokens beyond capacity");
  kdn_dest bad = d;
  bad.n_layers = 2;
  expect_invalid(bad, 0, 3, 0, "layers beyond dest.n_layers");
  bad = d;
  bad.n_kv_heads = 4;
  expect_invalid(bad, 0, 3, 0, "kv heads differ from the cache");
  bad = d;
  bad.head_dim = 8;
  expect_invalid(bad, 0, 3, 0, "head_dim differs from the cache");
  EXPECT_EQ(kdn_test_load_with_dest_dtype(c.get(), &d, 0), KDN_E_INVALID_ARG);
  EXPECT_EQ(kdn_test_load_with_dest_dtype(c.get(), &d, 9), KDN_E_INVALID_ARG);
  bad = d;
  bad.block_size = 0;
  expect_invalid(bad, 0, 3, 0, "block_size 0");
  bad = d;
  bad.head_stride = -1;
  expect_invalid(bad, 0, 3, 0, "negative stride");
  bad = d;
  bad.head_stride = 8;
  expect_invalid(bad, 0, 3, 0, "overlapping heads");
  void* k_odd[3] = {reinterpret_cast<char*>(k[0]) + 1, k[1], k[2]};
  bad = d;
  bad.k_base = k_odd;
  expect_invalid(bad, 0, 3, 0, "misaligned base");
  int32_t table[2] = {0, 1};
  bad = d;
  bad.block_size = 16;
  bad.block_table = table;
  bad.n_block_table = 2;  // 32 tokens, the cache has 40
  expect_invalid(bad, 0, 3, 0, "block table too short");
  int32_t neg_table[3] = {0, -1, 1};
  bad.block_table = neg_table;
  bad.n_block_table = 3;
  expect_invalid(bad, 0, 3, 0, "negative block table entry");
  std::vector<int64_t> slots(30, 0);
  bad = d;
  bad.slot_mapping = slots.data();
  bad.n_slots = 30;
  expect_invalid(bad, 0, 3, 0, "slot mapping too short");
  EXPECT_EQ(kdn_load(c.get(), 0, 3, nullptr, 0, nullptr), KDN_E_INVALID_ARG);
  EXPECT_EQ(kdn_load(nullptr, 0, 3, &d, 0, nullptr), KDN_E_INVALID_ARG);
  EXPECT_EQ(kdn_layer_wait(c.get(), 3), KDN_E_INVALID_ARG);
  EXPECT_EQ(kdn_layer_wait(nullptr, 0), KDN_E_INVALID_ARG);
  EXPECT_EQ(kdn_layer_event(c.get(), 3), nullptr);
  EXPECT_EQ(kdn_sync(nullptr), KDN_E_INVALID_ARG);
  // An empty range is a no-op; an unloaded layer has nothing to wait for.
  EXPECT_EQ(kdn_load(c.get(), 1, 1, &d, 0, nullptr), KDN_OK);
  CachePtr fresh = OpenCache(ctx.get(), WriteSynthetic(dir, "b.kv", m, 40, "raw", 2));
  EXPECT_EQ(kdn_layer_wait(fresh.get(), 2), KDN_OK);
  EXPECT_EQ(kdn_layer_event(fresh.get(), 2), nullptr);  // CPU backend: never an event
}

// A context handle may go before its caches: they keep it alive.
TEST(EngineApi, ContextOutlivedByCaches) {
  TempDir dir("kdn-engine");
  const ModelIdentity m = TestModel(DType::kF32);
  const std::string path = WriteSynthetic(dir, "a.kv", m, 30, "q8", 3);
  kdn_ctx* ctx = nullptr;
  ASSERT_EQ(kdn_ctx_create(-1, &ctx), KDN_OK);
  CachePtr c = OpenCache(ctx, path);
  kdn_ctx_destroy(ctx);
  std::vector<float> k(30 * m.channels());
  void* kb[3] = {k.data(), nullptr, nullptr};
  kdn_dest d;
  ASSERT_EQ(kdn_dest_contiguous(&d, KDN_F32, 3, kb, nullptr, m.n_kv_heads, m.head_dim, 30), KDN_OK);
  ASSERT_EQ(kdn_load(c.get(), 0, 1, &d, 0, nullptr), KDN_OK) << kdn_last_error();
  ASSERT_EQ(kdn_layer_wait(c.get(), 0), KDN_OK) << kdn_last_error();
  const std::vector<std::byte> ref = Reference(path, 0, KvKind::kKey, DType::kF32);
  EXPECT_EQ(std::memcmp(k.data(), ref.data(), ref.size()), 0);
}

// The library reads a file's own bytes and nothing its attributes name. It once followed a
// `user.kdn.extents` attribute into other files: any user could write one, naming a file only the
// engine could read (its bytes then leaked through checksum answers) or a FIFO (kdn_open hung).
TEST(EngineApi, AttributesNeverRedirectReads) {
  TempDir dir("kdn-api");
  CtxPtr ctx = MakeCtx();
  const ModelIdentity m = TestModel(DType::kF16, RopeStyle::kNeox, 3, 4, 32);
  const std::string mine = WriteSynthetic(dir, "mine.kv", m, 200, "q8", 17);
  const std::string secret = WriteSynthetic(dir, "secret.kv", m, 200, "q8", 18);
  ASSERT_EQ(ReadBytes(mine).size(), ReadBytes(secret).size());
  const std::string fifo = dir / "fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const std::string size = std::to_string(ReadBytes(mine).size());
  const std::string text = "kdn-extents 1 " + size + " 0123456789abcdef0123456789abcdef\n" +
                           secret + " 0 " + size + "\n";
  const std::string to_fifo =
      "kdn-extents 1 " + size + " 0123456789abcdef0123456789abcdef\n" + fifo + " 0 " + size + "\n";
  for (const std::string& attr : {text, to_fifo}) {
    int rc = ::setxattr(mine.c_str(), "user.kdn.extents", attr.data(), attr.size(), 0);
    KDN_REQUIRE_OR_SKIP(rc == 0, "the filesystem of " + dir.str() + " has no user xattrs");
    CachePtr c = OpenCache(ctx.get(), mine);  // returns at once: the FIFO is never opened
    ASSERT_TRUE(c);
    kdn_cache_info info;
    ASSERT_EQ(kdn_info(c.get(), &info), KDN_OK);
    EXPECT_EQ(info.fast_path, 0);
    const size_t block = size_t{200} * m.channels() * 2;
    std::vector<std::vector<std::byte>> k(3, std::vector<std::byte>(block));
    std::vector<std::vector<std::byte>> v(3, std::vector<std::byte>(block));
    std::vector<void*> kb = {k[0].data(), k[1].data(), k[2].data()};
    std::vector<void*> vb = {v[0].data(), v[1].data(), v[2].data()};
    kdn_dest d;
    ASSERT_EQ(
        kdn_dest_contiguous(&d, KDN_F16, 3, kb.data(), vb.data(), m.n_kv_heads, m.head_dim, 200),
        KDN_OK);
    ASSERT_EQ(kdn_load(c.get(), 0, 3, &d, 0, nullptr), KDN_OK) << kdn_last_error();
    ASSERT_EQ(kdn_sync(c.get()), KDN_OK) << kdn_last_error();
    for (uint32_t l = 0; l < 3; ++l) {
      EXPECT_TRUE(k[l] == Reference(mine, l, KvKind::kKey, DType::kF16)) << l;
      EXPECT_TRUE(v[l] == Reference(mine, l, KvKind::kValue, DType::kF16)) << l;
    }
  }
}

}  // namespace
}  // namespace kdn::test
