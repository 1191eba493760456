// The header: every field written and parsed back, the prefix hash chain recomputed
// independently, and each field's validation reached with a valid header checksum.
#include <xxhash.h>

#include <limits>

#include "format_test_util.h"
#include "store/format/limits.h"

namespace kdn {
namespace {

using test::Get;
using test::Put;
using test::ResealHeader;

// The chain built here from its definition, with a one-shot hash over concatenated bytes.
std::vector<Hash128> ReferenceChain(const Hash128& fp, const std::vector<uint32_t>& tokens,
                                    uint32_t chunk) {
  std::vector<Hash128> out;
  Hash128 prev;
  for (size_t b = 0; b < tokens.size(); b += chunk) {
    std::vector<unsigned char> buf(32);
    std::memcpy(buf.data(), &prev.lo, 8);
    std::memcpy(buf.data() + 8, &prev.hi, 8);
    std::memcpy(buf.data() + 16, &fp.lo, 8);
    std::memcpy(buf.data() + 24, &fp.hi, 8);
    for (size_t i = b; i < std::min(tokens.size(), b + chunk); ++i) {
      const uint32_t t = tokens[i];
      const unsigned char le[4] = {
          static_cast<unsigned char>(t), static_cast<unsigned char>(t >> 8),
          static_cast<unsigned char>(t >> 16), static_cast<unsigned char>(t >> 24)};
      buf.insert(buf.end(), le, le + 4);
    }
    const XXH128_hash_t h = XXH3_128bits(buf.data(), buf.size());
    prev = Hash128{h.low64, h.high64};
    out.push_back(prev);
  }
  return out;
}

TEST(PrefixHashTest, ChainMatchesItsDefinition) {
  const Hash128 fp = test::SmallModel().Fingerprint();
  const std::vector<uint32_t> tokens = SynthesizeTokens(1000, 7);
  for (uint32_t chunk : {1u, 7u, 256u, 999u, 1000u, 1001u}) {
    SCOPED_TRACE(chunk);
    const auto chain = PrefixHashes(fp, tokens, chunk);
    EXPECT_EQ(chain.size(), (tokens.size() + chunk - 1) / chunk);
    EXPECT_EQ(chain, ReferenceChain(fp, tokens, chunk));
  }
  // A prefix has the same hashes for its complete chunks; a different fingerprint changes all.
  const std::vector<uint32_t> prefix(tokens.begin(), tokens.begin() + 512);
  const auto a = PrefixHashes(fp, tokens, 256);
  const auto b = PrefixHashes(fp, prefix, 256);
  ASSERT_EQ(b.size(), 2u);
  EXPECT_EQ(a[0], b[0]);
  EXPECT_EQ(a[1], b[1]);
  const auto c = PrefixHashes(Hash128{1, 2}, prefix, 256);
  EXPECT_NE(c[0], b[0]);
  EXPECT_TRUE(PrefixHashes(fp, tokens, 0).empty());
}

TEST(KvHeaderTest, EveryFieldRoundTrips) {
  ModelIdentity m = test::SmallModel(DType::kBF16, 3, 2, 16);
  m.name = "модель-α";  // UTF-8
  m.n_heads = 8;
  m.rope_style = RopeStyle::kGptj;
  m.rotary_dim = 8;
  m.rope_theta = 123456.5f;
  m.rope_scale = 2.5f;
  const std::vector<uint32_t> tokens = SynthesizeTokens(77, 3, 50000);
  const CodecSpec codec = test::Codec("q4:g16+zstd");
  KvWriter w(m, codec, tokens, /*position_offset=*/4242, /*chunk_tokens=*/10);
  const size_t bytes = 77 * m.channels() * 2;
  std::vector<std::byte> k(bytes), v(bytes);
  for (uint32_t l = 0; l < 3; ++l) {
    ASSERT_TRUE(SynthesizeLayerKv(m, 77, l, 3, k, v).ok());
    ASSERT_TRUE(w.AddLayer(k, v).ok());
  }
  auto file = w.FinishToMemory();
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  const std::vector<std::byte>& f = *file;

  // The fixed header, byte by byte against docs/kv-format.md.
  EXPECT_TRUE(HasKvMagic(f));
  EXPECT_EQ(std::memcmp(f.data(), "\x89KDNKV\r\n", 8), 0);
  EXPECT_EQ(Get<uint32_t>(f, 8), 1u);
  EXPECT_EQ(Get<uint32_t>(f, 12), 128u);
  EXPECT_EQ(Get<uint64_t>(f, 24), f.size());
  EXPECT_EQ(Get<uint32_t>(f, 56), 3u);
  EXPECT_EQ(Get<uint32_t>(f, 60), 8u);
  EXPECT_EQ(Get<uint32_t>(f, 64), 2u);
  EXPECT_EQ(Get<uint32_t>(f, 68), 16u);
  EXPECT_EQ(Get<uint8_t>(f, 72), 2u);
  EXPECT_EQ(Get<uint8_t>(f, 73), 2u);
  EXPECT_EQ(Get<uint8_t>(f, 74), 2u);
  EXPECT_EQ(Get<uint8_t>(f, 75), 4u);
  EXPECT_EQ(Get<uint32_t>(f, 76), 8u);
  EXPECT_EQ(Get<float>(f, 80), 123456.5f);
  EXPECT_EQ(Get<float>(f, 84), 2.5f);
  EXPECT_EQ(Get<uint32_t>(f, 88), 77u);
  EXPECT_EQ(Get<uint32_t>(f, 92), 4242u);
  EXPECT_EQ(Get<uint32_t>(f, 96), 10u);
  EXPECT_EQ(Get<uint16_t>(f, 100), 16u);
  EXPECT_EQ(Get<uint8_t>(f, 102), 1u);
  EXPECT_EQ(Get<uint8_t>(f, 103), m.name.size());
  for (size_t i = 104; i < 128; ++i) EXPECT_EQ(f[i], std::byte{0});
  const uint64_t header_bytes = Get<uint64_t>(f, 16);
  const uint64_t name_pad = (m.name.size() + 7) / 8 * 8;
  const uint64_t chunks = (77 + 9) / 10;
  EXPECT_EQ(header_bytes, 128 + name_pad + (77 * 4 + 7) / 8 * 8 + 16 * chunks + 32 * 2 * 3);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(f.data() + 128), m.name.size()), m.name);

  auto parsed = test::Parse(f);
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  const KvHeader& h = *parsed;
  EXPECT_EQ(h.version, 1u);
  EXPECT_EQ(h.model.name, m.name);
  EXPECT_EQ(h.model.n_layers, 3u);
  EXPECT_EQ(h.model.n_heads, 8u);
  EXPECT_EQ(h.model.n_kv_heads, 2u);
  EXPECT_EQ(h.model.head_dim, 16u);
  EXPECT_EQ(h.model.dtype, DType::kBF16);
  EXPECT_EQ(h.model.rope_style, RopeStyle::kGptj);
  EXPECT_EQ(h.model.rotary_dim, 8u);
  EXPECT_EQ(h.model.rope_theta, 123456.5f);
  EXPECT_EQ(h.model.rope_scale, 2.5f);
  EXPECT_EQ(h.fingerprint, m.Fingerprint());
  EXPECT_EQ(h.fingerprint.lo, Get<uint64_t>(f, 40));
  EXPECT_EQ(h.fingerprint.hi, Get<uint64_t>(f, 48));
  EXPECT_EQ(h.n_tokens, 77u);
  EXPECT_EQ(h.position_offset, 4242u);
  EXPECT_EQ(h.chunk_tokens, 10u);
  EXPECT_EQ(h.codec.Name(), "q4:g16+zstd");
  EXPECT_EQ(h.tokens, tokens);
  EXPECT_EQ(h.prefix_hashes, ReferenceChain(h.fingerprint, tokens, 10));
  EXPECT_EQ(h.header_bytes, header_bytes);
  EXPECT_EQ(h.file_bytes, f.size());
  EXPECT_EQ(h.file_bytes % kKvBlockAlign, 0u);
  ASSERT_EQ(h.blocks.size(), 6u);
  uint64_t pos = (header_bytes + 4095) / 4096 * 4096;
  for (size_t i = 0; i < h.blocks.size(); ++i) {
    const BlockEntry& b = h.blocks[i];
    EXPECT_EQ(b.offset, pos) << i;
    EXPECT_EQ(b.decoded_bytes, bytes);
    EXPECT_EQ(b.checksum, HashBytes64(f.data() + b.offset, b.encoded_bytes));
    for (uint64_t p = b.offset + b.encoded_bytes;
         p < (b.offset + b.encoded_bytes + 4095) / 4096 * 4096; ++p) {
      ASSERT_EQ(f[p], std::byte{0}) << "padding after block " << i;
    }
    pos = (b.offset + b.encoded_bytes + 4095) / 4096 * 4096;
  }
  EXPECT_EQ(&h.block(1, KvKind::kValue), &h.blocks[3]);
  EXPECT_EQ(h.decoded_bytes(), 6 * bytes);
  EXPECT_EQ(h.decoded_block_bytes(DType::kF32), 2 * bytes);
  uint64_t enc = 0;
  for (const auto& b : h.blocks) enc += b.encoded_bytes;
  EXPECT_EQ(h.encoded_bytes(), enc);

  // Two-step parsing from the fixed part.
  auto hb = KvHeaderBytes(std::span(f).first(128), f.size());
  ASSERT_TRUE(hb.ok());
  EXPECT_EQ(*hb, header_bytes);
  EXPECT_TRUE(ParseKvHeader(std::span(f).first(header_bytes), f.size()).ok());
}

TEST(KvHeaderTest, NonQuantCodecsStoreZeroParameters) {
  for (const char* codec : {"raw", "lossless"}) {
    const auto f = test::MakeFile(test::SmallModel(), 5, codec);
    EXPECT_EQ(Get<uint8_t>(f, 75), 0u);
    EXPECT_EQ(Get<uint16_t>(f, 100), 0u);
    EXPECT_EQ(Get<uint8_t>(f, 102), 0u);
    auto h = test::Parse(f);
    ASSERT_TRUE(h.ok());
    EXPECT_EQ(h->codec.Name(), codec);
  }
}

// Edits one field, reseals the header, and expects a Corruption (or Unsupported) naming `word`.
void ExpectFieldError(std::vector<std::byte> f, void (*edit)(std::vector<std::byte>*),
                      const char* word, Code code = Code::kCorruption) {
  edit(&f);
  ResealHeader(&f);
  auto h = test::Parse(f);
  ASSERT_FALSE(h.ok()) << word;
  EXPECT_EQ(h.status().code(), code) << h.status().ToString();
  EXPECT_NE(h.status().message().find(word), std::string::npos)
      << "expected '" << word << "' in: " << h.status().message();
  // Never more than one line.
  EXPECT_EQ(h.status().message().find('\n'), std::string::npos);
}

TEST(KvHeaderTest, EachFieldIsValidated) {
  const auto f = test::MakeFile(test::SmallModel(), 40, "q8");
  ASSERT_TRUE(test::Parse(f).ok());
  using F = std::vector<std::byte>;
  ExpectFieldError(
      f, [](F* x) { (*x)[0] = std::byte{'K'}; }, "magic");
  ExpectFieldError(
      f, [](F* x) { Put<uint32_t>(x, 8, 2); }, "version 2", Code::kUnsupported);
  ExpectFieldError(
      f, [](F* x) { Put<uint32_t>(x, 12, 64); }, "fixed header size");
  ExpectFieldError(
      f, [](F* x) { Put<uint64_t>(x, 16, 100); }, "header_bytes");
  ExpectFieldError(
      f, [](F* x) { Put<uint64_t>(x, 16, uint64_t{1} << 40); }, "header_bytes");
  ExpectFieldError(
      f, [](F* x) { Put<uint64_t>(x, 24, Get<uint64_t>(*x, 24) + 4096); }, "file_bytes");
  ExpectFieldError(
      f, [](F* x) { Put<uint64_t>(x, 40, 1); }, "fingerprint");
  ExpectFieldError(
      f, [](F* x) { Put<uint32_t>(x, 56, 0); }, "n_layers 0");
  ExpectFieldError(
      f, [](F* x) { Put<uint32_t>(x, 56, 1000000000); }, "n_layers 1000000000");
  ExpectFieldError(
      f, [](F* x) { Put<uint32_t>(x, 60, 0); }, "n_heads");
  ExpectFieldError(
      f, [](F* x) { Put<uint32_t>(x, 64, 0); }, "n_kv_heads");
  ExpectFieldError(
      f, [](F* x) { Put<uint32_t>(x, 64, 5000); }, "n_kv_heads");
  ExpectFieldError(
      f, [](F* x) { Put<uint32_t>(x, 68, 9); }, "head_dim");
  ExpectFieldError(
      f, [](F* x) { Put<uint32_t>(x, 68, 1 << 30); }, "head_dim");
  ExpectFieldError(
      f, [](F* x) { Put<uint8_t>(x, 72, 0); }, "dtype");
  ExpectFieldError(
      f, [](F* x) { Put<uint8_t>(x, 72, 4); }, "dtype");
  ExpectFieldError(
      f, [](F* x) { Put<uint8_t>(x, 73, 3); }, "rope style");
  ExpectFieldError(
      f, [](F* x) { Put<uint8_t>(x, 74, 4); }, "codec 4");
  ExpectFieldError(
      f, [](F* x) { Put<uint8_t>(x, 75, 3); }, "bits");
  ExpectFieldError(
      f, [](F* x) { Put<uint32_t>(x, 76, 3); }, "rotary_dim");
  ExpectFieldError(
      f, [](F* x) { Put<uint32_t>(x, 76, 18); }, "rotary_dim");
  ExpectFieldError(
      f, [](F* x) { Put<float>(x, 80, -1.0f); }, "rope_theta");
  ExpectFieldError(
      f, [](F* x) { Put<float>(x, 80, std::numeric_limits<float>::quiet_NaN()); }, "rope_theta");
  ExpectFieldError(
      f, [](F* x) { Put<float>(x, 84, 0.0f); }, "rope_scale");
  ExpectFieldError(
      f, [](F* x) { Put<float>(x, 84, std::numeric_limits<float>::infinity()); }, "rope_scale");
  ExpectFieldError(
      f, [](F* x) { Put<uint32_t>(x, 88, 0); }, "n_tokens 0");
  ExpectFieldError(
      f, [](F* x) { Put<uint32_t>(x, 88, (1u << 24) + 1); }, "n_tokens");
  ExpectFieldError(
      f, [](F* x) { Put<uint32_t>(x, 88, 41); }, "header_bytes");  // sections no longer fit
  ExpectFieldError(
      f, [](F* x) { Put<uint32_t>(x, 96, 0); }, "chunk_tokens");
  ExpectFieldError(
      f, [](F* x) { Put<uint32_t>(x, 96, (1u << 20) + 1); }, "chunk_tokens");
  ExpectFieldError(
      f, [](F* x) { Put<uint16_t>(x, 100, 0); }, "group_size");
  ExpectFieldError(
      f, [](F* x) { Put<uint8_t>(x, 102, 2); }, "flags");
  ExpectFieldError(
      f, [](F* x) { Put<uint8_t>(x, 103, 0); }, "name_len");
  // Identity flags: an unknown bit, and the windows bit on a header without that section.
  ExpectFieldError(
      f, [](F* x) { Put<uint8_t>(x, 104, 2); }, "identity flags");
  ExpectFieldError(
      f, [](F* x) { Put<uint8_t>(x, 104, 1); }, "does not match its sections");
  // Attention kind: unknown, and MLA for a K/V file (whose shape is not an MLA latent's).
  ExpectFieldError(
      f, [](F* x) { Put<uint8_t>(x, 105, 2); }, "attention");
  ExpectFieldError(
      f, [](F* x) { Put<uint8_t>(x, 105, 1); }, "MLA");
  ExpectFieldError(
      f, [](F* x) { Put<uint32_t>(x, 108, 4); }, "kv_lora_rank");
  for (size_t off : {112, 120, 127}) {
    auto g = f;
    g[off] = std::byte{1};
    ResealHeader(&g);
    auto h = test::Parse(g);
    ASSERT_FALSE(h.ok()) << off;
    EXPECT_NE(h.status().message().find("reserved"), std::string::npos) << h.status().message();
  }
  // Head groups (bytes 106..107, u16): 1 is written as 0; 256 does not divide the KV heads.
  ExpectFieldError(
      f, [](F* x) { Put<uint8_t>(x, 106, 1); }, "head groups 1 is written as 0");
  ExpectFieldError(
      f, [](F* x) { Put<uint8_t>(x, 107, 1); }, "head groups 256 must divide n_kv_heads");
  // Section contents: name padding, token padding, a prefix hash, NUL or bad UTF-8 in the name.
  ExpectFieldError(
      f, [](F* x) { (*x)[128 + 10] = std::byte{1}; }, "model name section: padding");
  ExpectFieldError(
      f, [](F* x) { (*x)[128] = std::byte{0}; }, "NUL");
  ExpectFieldError(
      f, [](F* x) { (*x)[128] = std::byte{0xff}; }, "UTF-8");
  ExpectFieldError(
      f, [](F* x) { (*x)[128 + 16] ^= std::byte{1}; }, "prefix hash 0");
}

TEST(KvHeaderTest, TokenPaddingAndPrefixHashesAreChecked) {
  const auto f = test::MakeFile(test::SmallModel(), 41, "raw");  // 41 tokens: 4 bytes of padding
  auto h = test::Parse(f);
  ASSERT_TRUE(h.ok());
  const auto s = layout::ComputeSections(10, 41, kDefaultChunkTokens, 2);
  auto g = f;
  g[s.tokens_offset + 41 * 4] = std::byte{7};
  ResealHeader(&g);
  EXPECT_NE(test::Parse(g).status().message().find("token ids section: padding"),
            std::string::npos);
  g = f;
  g[s.prefix_offset + 3] ^= std::byte{0x10};
  ResealHeader(&g);
  EXPECT_NE(test::Parse(g).status().message().find("prefix hash 0 does not match"),
            std::string::npos);
}

TEST(KvHeaderTest, BlockTableIsValidated) {
  const auto f = test::MakeFile(test::SmallModel(), 40, "q4");
  const auto s = layout::ComputeSections(10, 40, kDefaultChunkTokens, 2);
  auto entry = [&](size_t i, size_t field) { return s.table_offset + 32 * i + 8 * field; };
  using F = std::vector<std::byte>;
  struct Case {
    size_t block, field;
    int64_t delta;
    const char* words;
  } cases[] = {
      {0, 0, 4096, "layer 0 K block: offset"},
      {3, 0, -4096, "layer 1 V block: offset"},
      {2, 0, 1, "layer 1 K block: offset"},
      {1, 1, 1, "layer 0 V block: encoded_bytes"},
      {1, 1, int64_t{1} << 50, "layer 0 V block: encoded_bytes"},
      {2, 2, 2, "layer 1 K block: decoded_bytes"},
  };
  for (const Case& c : cases) {
    F g = f;
    Put<uint64_t>(&g, entry(c.block, c.field), Get<uint64_t>(g, entry(c.block, c.field)) + c.delta);
    ResealHeader(&g);
    auto h = test::Parse(g);
    ASSERT_FALSE(h.ok()) << c.words;
    EXPECT_NE(h.status().message().find(c.words), std::string::npos) << h.status().message();
  }
}

TEST(KvHeaderTest, ZstdBlocksHaveBoundedSizes) {
  const auto f = test::MakeFile(test::SmallModel(), 40, "lossless");
  const auto s = layout::ComputeSections(10, 40, kDefaultChunkTokens, 2);
  auto g = f;
  Put<uint64_t>(&g, s.table_offset + 8, 0);
  ResealHeader(&g);
  EXPECT_NE(test::Parse(g).status().message().find("layer 0 K block: encoded_bytes 0 out of range"),
            std::string::npos);
}


// Sliding-window layers: the optional layer windows section after the block table, flagged in the
// identity flags byte, covered by the fingerprint (and so by every prefix hash).
ModelIdentity WindowedModel() {
  ModelIdentity m = test::SmallModel(DType::kF16, 4);
  m.layer_windows = {4096, 0, 7, 0};
  return m;
}

TEST(KvHeaderTest, LayerWindowsRoundTripAndVerify) {
  const ModelIdentity m = WindowedModel();
  const auto f = test::MakeFile(m, 40, "q4");
  auto h = test::Parse(f);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_EQ(h->model.layer_windows, m.layer_windows);
  EXPECT_EQ(h->window_begin(0), 0u);   // window longer than the file: every token
  EXPECT_EQ(h->window_begin(1), 0u);   // full attention
  EXPECT_EQ(h->window_begin(2), 33u);  // the last 7 of 40
  EXPECT_EQ(Get<uint8_t>(f, 104), 1u);
  const auto s = layout::ComputeSections(static_cast<uint32_t>(m.name.size()), 40,
                                         kDefaultChunkTokens, 4, true);
  EXPECT_EQ(Get<uint64_t>(f, 16), s.end);
  EXPECT_EQ(Get<uint32_t>(f, s.windows_offset + 8), 7u);
  EXPECT_TRUE(test::OpenAndVerify(f).ok());

  // The same model without windows: no section, flags 0, other fingerprint and prefix hashes.
  ModelIdentity plain = m;
  plain.layer_windows.clear();
  const auto g = test::MakeFile(plain, 40, "q4");
  EXPECT_EQ(Get<uint8_t>(g, 104), 0u);
  EXPECT_EQ(Get<uint64_t>(g, 16) + 16, Get<uint64_t>(f, 16));
  auto hp = test::Parse(g);
  ASSERT_TRUE(hp.ok());
  EXPECT_NE(hp->fingerprint, h->fingerprint);
  EXPECT_NE(hp->prefix_hashes[0], h->prefix_hashes[0]);
  EXPECT_FALSE(h->model.Compare(plain).ok());
  EXPECT_NE(h->model.Compare(plain).message().find("layer 0 window"), std::string::npos);
  // Another window on one layer is another identity.
  ModelIdentity other = m;
  other.layer_windows[2] = 8;
  EXPECT_NE(other.Fingerprint(), m.Fingerprint());
}

TEST(KvHeaderTest, LayerWindowsAreValidated) {
  const ModelIdentity m = WindowedModel();
  const auto f = test::MakeFile(m, 40, "raw");
  const auto s = layout::ComputeSections(static_cast<uint32_t>(m.name.size()), 40,
                                         kDefaultChunkTokens, 4, true);
  using F = std::vector<std::byte>;
  static uint64_t windows;  // the section's offset, for the captureless edits below
  windows = s.windows_offset;
  // A changed window no longer matches the stored fingerprint.
  ExpectFieldError(
      f, [](F* x) { Put<uint32_t>(x, windows + 4, 9); }, "fingerprint");
  ExpectFieldError(
      f, [](F* x) { Put<uint32_t>(x, windows + 4, (1u << 24) + 1); }, "window");
  // 4 layers: 16 bytes, no padding; a 3-layer file has 4 bytes of it.
  ModelIdentity three = m;
  three.n_layers = 3;
  three.layer_windows = {0, 5, 0};
  const auto g = test::MakeFile(three, 40, "raw");
  const auto s3 = layout::ComputeSections(static_cast<uint32_t>(m.name.size()), 40,
                                          kDefaultChunkTokens, 3, true);
  ASSERT_EQ(s3.windows_bytes, 16u);
  windows = s3.windows_offset;
  ExpectFieldError(
      g, [](F* x) { (*x)[windows + 13] = std::byte{1}; }, "layer windows section: padding");
  // All zero is not a list (full attention has one identity).
  ModelIdentity zeros = m;
  zeros.layer_windows = {0, 0, 0, 0};
  EXPECT_FALSE(zeros.Validate().ok());
  ModelIdentity short_list = m;
  short_list.layer_windows = {1, 2};
  EXPECT_FALSE(short_list.Validate().ok());
  // Clearing the flag leaves the section's bytes unaccounted for.
  ExpectFieldError(
      f, [](F* x) { Put<uint8_t>(x, 104, 0); }, "does not match its sections");
}

}  // namespace
}  // namespace kdn
