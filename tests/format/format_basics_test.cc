// DType and RoPE names, Hash128, codec names, model identity and presets.
#include <xxhash.h>

#include <cmath>
#include <fstream>
#include <limits>

#include "format_test_util.h"
#include "store/format/guard_alloc.h"

namespace kdn {
namespace {

TEST(DTypeTest, SizesNamesAndParsing) {
  EXPECT_EQ(DTypeSize(DType::kF16), 2u);
  EXPECT_EQ(DTypeSize(DType::kBF16), 2u);
  EXPECT_EQ(DTypeSize(DType::kF32), 4u);
  EXPECT_EQ(DTypeSize(static_cast<DType>(9)), 0u);
  for (DType t : {DType::kF16, DType::kBF16, DType::kF32}) {
    auto parsed = ParseDType(DTypeName(t));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, t);
  }
  EXPECT_EQ(*ParseDType("float16"), DType::kF16);
  EXPECT_EQ(*ParseDType("BF16"), DType::kBF16);
  EXPECT_EQ(*ParseDType("f32"), DType::kF32);
  auto bad = ParseDType("int8");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("int8"), std::string::npos);
}

TEST(RopeStyleTest, NamesAndParsing) {
  for (RopeStyle s : {RopeStyle::kNone, RopeStyle::kNeox, RopeStyle::kGptj}) {
    EXPECT_EQ(*ParseRopeStyle(RopeStyleName(s)), s);
  }
  EXPECT_FALSE(ParseRopeStyle("yarn").ok());
}

TEST(Hash128Test, HexRoundTripAndErrors) {
  const Hash128 h{0x0123456789abcdefull, 0xfedcba9876543210ull};
  EXPECT_EQ(h.ToHex(), "fedcba98765432100123456789abcdef");
  auto back = Hash128::FromHex(h.ToHex());
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, h);
  EXPECT_EQ(*Hash128::FromHex("FEDCBA98765432100123456789ABCDEF"), h);
  EXPECT_FALSE(Hash128::FromHex("abc").ok());
  EXPECT_FALSE(Hash128::FromHex("zedcba98765432100123456789abcdef").ok());
  EXPECT_TRUE(Hash128{}.IsZero());
  EXPECT_FALSE(h.IsZero());
}

TEST(HashTest, MatchesXxh3) {
  const std::string s = "knowledge delivery";
  const XXH128_hash_t ref = XXH3_128bits(s.data(), s.size());
  const Hash128 h = HashBytes128(s.data(), s.size());
  EXPECT_EQ(h.lo, ref.low64);
  EXPECT_EQ(h.hi, ref.high64);
  EXPECT_EQ(HashBytes64(s.data(), s.size()), XXH3_64bits(s.data(), s.size()));
}

TEST(CodecSpecTest, ParseAndCanonicalNames) {
  struct Case {
    const char* text;
    CodecId id;
    int bits;
    int group;
    bool zstd;
    int level;
    const char* name;
  } cases[] = {
      {"raw", CodecId::kRaw, 0, 32, false, 3, "raw"},
      {"lossless", CodecId::kLossless, 0, 32, false, 3, "lossless"},
      {"lossless:l9", CodecId::kLossless, 0, 32, false, 9, "lossless:l9"},
      {"q8", CodecId::kQuant, 8, 32, false, 3, "q8"},
      {"q4+zstd", CodecId::kQuant, 4, 32, true, 3, "q4+zstd"},
      {"q4:g64", CodecId::kQuant, 4, 64, false, 3, "q4:g64"},
      {"q2:g128+zstd", CodecId::kQuant, 2, 128, true, 3, "q2:g128+zstd"},
      {"q2+zstd:g128", CodecId::kQuant, 2, 128, true, 3, "q2:g128+zstd"},
      {"q8:g7:l19+zstd", CodecId::kQuant, 8, 7, true, 19, "q8:g7:l19+zstd"},
      {"lossless:l-5", CodecId::kLossless, 0, 32, false, -5, "lossless:l-5"},
      {"lossless:entropy=rans", CodecId::kLossless, 0, 32, false, 3, "lossless:entropy=rans"},
      {"lossless:entropy=zstd", CodecId::kLossless, 0, 32, false, 3, "lossless"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.text);
    auto spec = CodecSpec::Parse(c.text);
    ASSERT_TRUE(spec.ok()) << spec.status().ToString();
    EXPECT_EQ(spec->id, c.id);
    EXPECT_EQ(spec->bits, c.bits);
    EXPECT_EQ(spec->group_size, c.group);
    EXPECT_EQ(spec->zstd, c.zstd);
    EXPECT_EQ(spec->zstd_level, c.level);
    EXPECT_EQ(spec->Name(), c.name);
    EXPECT_EQ(spec->lossy(), c.id == CodecId::kQuant);
    auto again = CodecSpec::Parse(spec->Name());
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(again->Name(), spec->Name());
  }
}

TEST(CodecSpecTest, RejectsMalformed) {
  for (const char* text :
       {"", "q3", "q4:g0", "q4:g70000", "q4:gx", "q4+lz4", "raw+zstd", "lossless+zstd", "raw:l3",
        "q4:l3", "raw:g32", "q4:l99+zstd", "q4:", "Q4", "q4 ",
        "lossless:entropy=rans:l9", "q4:entropy=rans", "lossless:entropy=lz4"}) {
    SCOPED_TRACE(text);
    auto spec = CodecSpec::Parse(text);
    ASSERT_FALSE(spec.ok());
    EXPECT_EQ(spec.status().code(), Code::kInvalidArgument);
    EXPECT_FALSE(spec.status().message().empty());
  }
  CodecSpec bad;
  bad.id = CodecId::kQuant;
  bad.bits = 3;
  EXPECT_FALSE(bad.Validate().ok());
  bad.id = static_cast<CodecId>(7);
  EXPECT_FALSE(bad.Validate().ok());
}

// The canonical identity record, built here independently of the library.
Hash128 ReferenceFingerprint(const ModelIdentity& m) {
  std::vector<unsigned char> r;
  auto put = [&r](const void* p, size_t n) {
    r.insert(r.end(), static_cast<const unsigned char*>(p),
             static_cast<const unsigned char*>(p) + n);
  };
  const uint8_t len = static_cast<uint8_t>(m.name.size());
  put(&len, 1);
  put(m.name.data(), m.name.size());
  put(&m.n_layers, 4);
  put(&m.n_kv_heads, 4);
  put(&m.head_dim, 4);
  const uint8_t dt = static_cast<uint8_t>(m.dtype), rs = static_cast<uint8_t>(m.rope_style);
  put(&dt, 1);
  put(&rs, 1);
  const uint32_t rot = m.rotary_dim ? m.rotary_dim : m.head_dim;
  put(&rot, 4);
  put(&m.rope_theta, 4);
  put(&m.rope_scale, 4);
  if (!m.layer_windows.empty()) {
    const uint8_t tag = 1;
    put(&tag, 1);
    put(m.layer_windows.data(), 4 * m.layer_windows.size());
  }
  if (m.attention == AttentionKind::kMla) {
    const uint8_t tag = 2;
    put(&tag, 1);
    put(&m.kv_lora_rank, 4);
  }
  const XXH128_hash_t h = XXH3_128bits(r.data(), r.size());
  return Hash128{h.low64, h.high64};
}

TEST(ModelIdentityTest, FingerprintIsTheCanonicalRecord) {
  for (const auto name : ModelPresetNames()) {
    auto m = ModelPreset(name);
    ASSERT_TRUE(m.ok());
    EXPECT_EQ(m->Fingerprint(), ReferenceFingerprint(*m)) << name;
  }
  ModelIdentity m = test::SmallModel();
  const Hash128 base = m.Fingerprint();
  // n_heads is informational; rotary_dim 0 means head_dim.
  ModelIdentity same = m;
  same.n_heads = 99;
  same.rotary_dim = m.head_dim;
  EXPECT_EQ(same.Fingerprint(), base);
  // Every identity field changes it.
  auto differs = [&](auto mutate) {
    ModelIdentity x = m;
    mutate(x);
    return x.Fingerprint() != base;
  };
  EXPECT_TRUE(differs([](ModelIdentity& x) { x.name = "other"; }));
  EXPECT_TRUE(differs([](ModelIdentity& x) { x.n_layers += 1; }));
  EXPECT_TRUE(differs([](ModelIdentity& x) { x.n_kv_heads += 1; }));
  EXPECT_TRUE(differs([](ModelIdentity& x) { x.head_dim += 2; }));
  EXPECT_TRUE(differs([](ModelIdentity& x) { x.dtype = DType::kBF16; }));
  EXPECT_TRUE(differs([](ModelIdentity& x) { x.rope_style = RopeStyle::kGptj; }));
  EXPECT_TRUE(differs([](ModelIdentity& x) { x.rotary_dim = 4; }));
  EXPECT_TRUE(differs([](ModelIdentity& x) { x.rope_theta = 500000.0f; }));
  EXPECT_TRUE(differs([](ModelIdentity& x) { x.rope_scale = 2.0f; }));
}

TEST(ModelIdentityTest, ValidateNamesTheBadField) {
  EXPECT_TRUE(test::SmallModel().Validate().ok());
  struct Case {
    void (*mutate)(ModelIdentity&);
    const char* word;
  } cases[] = {
      {[](ModelIdentity& m) { m.name = ""; }, "name"},
      {[](ModelIdentity& m) { m.name = std::string(256, 'a'); }, "name"},
      {[](ModelIdentity& m) { m.name = std::string("a\0b", 3); }, "NUL"},
      {[](ModelIdentity& m) { m.name = "\xff\xfe"; }, "UTF-8"},
      {[](ModelIdentity& m) { m.n_layers = 0; }, "n_layers"},
      {[](ModelIdentity& m) { m.n_layers = 1025; }, "n_layers"},
      {[](ModelIdentity& m) { m.n_heads = 0; }, "n_heads"},
      {[](ModelIdentity& m) { m.n_kv_heads = 0; }, "n_kv_heads"},
      {[](ModelIdentity& m) { m.n_kv_heads = 2000; }, "n_kv_heads"},
      {[](ModelIdentity& m) { m.head_dim = 7; }, "head_dim"},
      {[](ModelIdentity& m) { m.head_dim = 0; }, "head_dim"},
      {[](ModelIdentity& m) { m.head_dim = 2048; }, "head_dim"},
      {[](ModelIdentity& m) { m.rotary_dim = 3; }, "rotary_dim"},
      {[](ModelIdentity& m) { m.rotary_dim = 16; }, "rotary_dim"},
      {[](ModelIdentity& m) { m.dtype = static_cast<DType>(0); }, "dtype"},
      {[](ModelIdentity& m) { m.rope_style = static_cast<RopeStyle>(5); }, "rope"},
      {[](ModelIdentity& m) { m.rope_theta = 0.0f; }, "rope_theta"},
      {[](ModelIdentity& m) { m.rope_theta = std::numeric_limits<float>::infinity(); },
       "rope_theta"},
      {[](ModelIdentity& m) { m.rope_scale = std::nanf(""); }, "rope_scale"},
  };
  for (const Case& c : cases) {
    ModelIdentity m = test::SmallModel();
    c.mutate(m);
    const Status st = m.Validate();
    ASSERT_FALSE(st.ok()) << c.word;
    EXPECT_NE(st.message().find(c.word), std::string::npos) << st.message();
  }
}

TEST(ModelIdentityTest, CompareNamesTheFirstDifference) {
  const ModelIdentity model = test::SmallModel();
  EXPECT_TRUE(model.Compare(model).ok());
  ModelIdentity cache = model;
  cache.n_heads = 1;  // informational: not compared
  EXPECT_TRUE(cache.Compare(model).ok());
  cache.n_kv_heads = 8;
  const Status st = cache.Compare(model);
  EXPECT_EQ(st.code(), Code::kModelMismatch);
  EXPECT_EQ(st.message(), "n_kv_heads: cache has 8, model has 2");
  cache = model;
  cache.dtype = DType::kBF16;
  EXPECT_EQ(cache.Compare(model).message(), "dtype: cache has bf16, model has fp16");
  cache = model;
  cache.rope_theta = 500000.0f;
  EXPECT_EQ(cache.Compare(model).message(), "rope_theta: cache has 500000, model has 10000");
  cache = model;
  cache.name = "x";
  EXPECT_EQ(cache.Compare(model).message(), "name: cache has 'x', model has 'test-model'");
}

TEST(ModelPresetTest, KnownShapes) {
  auto tiny = ModelPreset("tiny");
  ASSERT_TRUE(tiny.ok());
  EXPECT_EQ(tiny->name, "stories260K");
  EXPECT_EQ(tiny->n_layers, 5u);
  EXPECT_EQ(tiny->n_heads, 8u);
  EXPECT_EQ(tiny->n_kv_heads, 4u);
  EXPECT_EQ(tiny->head_dim, 8u);
  EXPECT_EQ(tiny->dtype, DType::kF32);
  EXPECT_EQ(tiny->rope_style, RopeStyle::kGptj);
  EXPECT_EQ(tiny->rope_theta, 10000.0f);
  auto l8 = ModelPreset("llama3-8b");
  ASSERT_TRUE(l8.ok());
  EXPECT_EQ(l8->n_layers, 32u);
  EXPECT_EQ(l8->n_heads, 32u);
  EXPECT_EQ(l8->n_kv_heads, 8u);
  EXPECT_EQ(l8->head_dim, 128u);
  EXPECT_EQ(l8->dtype, DType::kBF16);
  EXPECT_EQ(l8->rope_style, RopeStyle::kNeox);
  EXPECT_EQ(l8->rope_theta, 500000.0f);
  auto l70 = ModelPreset("llama3-70b");
  ASSERT_TRUE(l70.ok());
  EXPECT_EQ(l70->n_layers, 80u);
  EXPECT_EQ(l70->n_heads, 64u);
  EXPECT_EQ(l70->n_kv_heads, 8u);
  auto mis = ModelPreset("mistral-7b");
  ASSERT_TRUE(mis.ok());
  EXPECT_EQ(mis->rope_theta, 1000000.0f);
  EXPECT_EQ(mis->n_layers, 32u);
  auto gemma = ModelPreset("gemma2-9b");
  ASSERT_TRUE(gemma.ok());
  ASSERT_EQ(gemma->layer_windows.size(), 42u);
  for (uint32_t l = 0; l < 42; ++l) {
    EXPECT_EQ(gemma->layer_window(l), l % 2 == 0 ? 4096u : 0u) << "layer " << l;
  }
  EXPECT_TRUE(mis->layer_windows.empty());
  for (const auto name : ModelPresetNames())
    EXPECT_TRUE(ModelPreset(name)->Validate().ok()) << name;
  auto bad = ModelPreset("gpt-9");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("llama3-8b"), std::string::npos);
}

}  // namespace
}  // namespace kdn

namespace kdn {
namespace {

// One errno -> Code mapping for every layer: the code depends on the errno, not on who saw it.
TEST(StatusTest, ErrnoMapsToOneCode) {
  EXPECT_TRUE(Status::FromErrno("x", ENOENT).IsNotFound());
  EXPECT_EQ(Status::FromErrno("x", EEXIST).code(), Code::kAlreadyExists);
  EXPECT_EQ(Status::FromErrno("x", EDQUOT).code(), Code::kNoSpace);
  EXPECT_EQ(Status::FromErrno("x", EPERM).code(), Code::kPermissionDenied);
  EXPECT_EQ(Status::FromErrno("x", ENOMEM).code(), Code::kNoMemory);
  EXPECT_EQ(Status::FromErrno("x", EINVAL).code(), Code::kInvalidArgument);
  EXPECT_EQ(Status::FromErrno("x", ENOTDIR).code(), Code::kIOError);
  EXPECT_EQ(Status::FromErrno("x", ENOTDIR).sys_errno(), ENOTDIR);  // the errno is kept
  EXPECT_EQ(Status::FromErrno("rmdir", ENOTEMPTY).message(), "rmdir: Directory not empty");
  EXPECT_EQ(Status::NoMemory("m").sys_errno(), ENOMEM);
  EXPECT_EQ(Status::Device("cudaMalloc: out of memory").code(), Code::kDevice);
  EXPECT_EQ(Status::Device("d").sys_errno(), EIO);  // what kdnfs would answer
  EXPECT_EQ(CodeName(Code::kDevice), "Device error");
}

TEST(GuardAllocTest, AllocationFailuresBecomeStatuses) {
  const Status st = GuardAlloc("encode", []() -> Status { throw std::bad_alloc(); });
  EXPECT_EQ(st.code(), Code::kNoMemory);
  EXPECT_EQ(st.sys_errno(), ENOMEM);
  EXPECT_EQ(st.message(), "encode: out of memory");
  const Result<int> r = GuardAlloc("x", []() -> Result<int> {
    std::vector<int> v;
    v.reserve(v.max_size() + 1);  // length_error
    return 1;
  });
  EXPECT_EQ(r.status().code(), Code::kNoMemory);
  EXPECT_EQ(*GuardAlloc("y", []() -> Result<int> { return 7; }), 7);
}

}  // namespace
}  // namespace kdn

namespace kdn {
namespace {

// The "tiny" preset is the test model's KV shape: read from the llama2.c checkpoint's header
// (7 int32: dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len).
TEST(ModelPresetTest, TinyMatchesTheTestModel) {
  const std::string path = test::TestModelPath();
  KDN_REQUIRE_OR_SKIP(!path.empty(), "the test model stories260K.bin is not available");
  std::ifstream in(path, std::ios::binary);
  int32_t h[7] = {};
  in.read(reinterpret_cast<char*>(h), sizeof h);
  ASSERT_TRUE(in.good());
  const ModelIdentity tiny = *ModelPreset("tiny");
  EXPECT_EQ(tiny.n_layers, static_cast<uint32_t>(h[2]));
  EXPECT_EQ(tiny.n_heads, static_cast<uint32_t>(h[3]));
  EXPECT_EQ(tiny.n_kv_heads, static_cast<uint32_t>(h[4]));
  EXPECT_EQ(tiny.head_dim, static_cast<uint32_t>(h[0] / h[3]));
}

}  // namespace
}  // namespace kdn
