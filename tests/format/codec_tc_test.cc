// The tc codec and its rANS stage: rANS round trips over random tables (escapes included), tc
// round trips at every quality, dtype and kind (keys with RoPE undone and redone), row ranges
// equal to whole decodes, and corrupt or truncated blocks rejected with an error that names the
// segment, never a crash or a read outside the block (the ASan build checks the latter).
#include <cmath>
#include <cstring>

#include "format_test_util.h"
#include "store/format/codec_internal.h"
#include "store/format/rans.h"
#include "store/format/rans_encode.h"
#include "store/format/simd.h"
#include "store/format/tc_math.h"

namespace kdn {
namespace {

constexpr DType kDTypes[] = {DType::kF16, DType::kBF16, DType::kF32};
constexpr KvKind kKinds[] = {KvKind::kKey, KvKind::kValue};

// Random frequencies over nsym symbols summing to kProbScale, every one at least 1.
std::vector<uint16_t> RandomFreqs(uint32_t nsym, std::mt19937_64& rng) {
  std::vector<uint16_t> f(nsym, 1);
  for (uint32_t left = rans::kProbScale - nsym; left > 0; --left) f[rng() % (rng() % nsym + 1)]++;
  return f;
}

TEST(RansTest, RoundTripsInterleavedStreams) {
  std::mt19937_64 rng(7);
  for (uint32_t trial = 0; trial < 40; ++trial) {
    const uint32_t nsym = 2 + rng() % 255;
    const auto freq = RandomFreqs(nsym, rng);
    std::vector<uint32_t> cum(nsym + 1, 0);
    for (uint32_t s = 0; s < nsym; ++s) cum[s + 1] = cum[s] + freq[s];
    std::vector<uint32_t> slots(rans::kProbScale);
    rans::BuildDecodeTable(freq.data(), nsym, slots.data());
    // Symbols drawn from the table's distribution, every 7th a uniform byte instead.
    const size_t n = rng() % 5000;
    std::vector<uint32_t> sym(n);
    std::vector<rans::RansEncoder::Sym> enc_syms;
    for (size_t i = 0; i < n; ++i) {
      if (i % 7 == 6) {
        sym[i] = rng() & 0xff;
        enc_syms.push_back({16 * sym[i], 16});
      } else {
        sym[i] = slots[rng() % rans::kProbScale] & 0xff;
        enc_syms.push_back({cum[sym[i]], freq[sym[i]]});
      }
    }
    std::vector<std::byte> seg;
    rans::RansEncoder().Encode(enc_syms, &seg);
    const auto* b = reinterpret_cast<const uint8_t*>(seg.data());
    rans::RansDecoder d(b, b + seg.size());
    for (size_t i = 0; i < n; ++i) {
      const uint32_t got = i % 7 == 6 ? d.DecodeByte() : d.Decode(slots.data());
      ASSERT_EQ(got, sym[i]) << "trial " << trial << " symbol " << i;
    }
    EXPECT_TRUE(d.Finish());
    // Truncated by one word: the decoder notices.
    if (seg.size() > rans::kStateBytes) {
      rans::RansDecoder t(b, b + seg.size() - 2);
      for (size_t i = 0; i < n; ++i) (void)(i % 7 == 6 ? t.DecodeByte() : t.Decode(slots.data()));
      EXPECT_FALSE(t.Finish());
    }
  }
}

// Relative RMS error of decoded against source values.
double RelRms(const std::vector<std::byte>& a, const std::vector<std::byte>& b, DType dt,
              size_t n) {
  double err = 0, ref = 0;
  for (size_t i = 0; i < n; ++i) {
    const double x = test::LoadAsFloat(a.data(), dt, i), y = test::LoadAsFloat(b.data(), dt, i);
    err += (x - y) * (x - y);
    ref += x * x;
  }
  return std::sqrt(err / std::max(ref, 1e-30));
}

// Keys as a RoPE model makes them: a stationary per-channel signal rotated by position.
std::vector<std::byte> RotatedKeys(const ModelIdentity& m, uint32_t tokens, uint32_t position,
                                   DType dt, uint64_t seed) {
  auto rng = test::Rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const uint32_t C = m.channels(), hd = m.head_dim, r = m.effective_rotary_dim();
  std::vector<float> base(C);
  for (auto& v : base) v = 2.0f * normal(rng);
  std::vector<float> x(uint64_t{tokens} * C);
  for (uint32_t t = 0; t < tokens; ++t) {
    for (uint32_t c = 0; c < C; ++c) x[uint64_t{t} * C + c] = base[c] + 0.3f * normal(rng);
    for (uint32_t h = 0; h < m.n_kv_heads; ++h) {
      float* v = x.data() + uint64_t{t} * C + h * hd;
      for (uint32_t i = 0; i < r / 2; ++i) {
        const double a = (position + t) * std::pow(double(m.rope_theta), -2.0 * i / r);
        const uint32_t p = m.rope_style == RopeStyle::kGptj ? 2 * i : i;
        const uint32_t q = m.rope_style == RopeStyle::kGptj ? 2 * i + 1 : i + r / 2;
        const double xa = v[p], xb = v[q];
        v[p] = float(xa * std::cos(a) - xb * std::sin(a));
        v[q] = float(xa * std::sin(a) + xb * std::cos(a));
      }
    }
  }
  std::vector<std::byte> out(x.size() * DTypeSize(dt));
  ConvertDType(DType::kF32, x.data(), dt, out.data(), x.size());
  return out;
}

TEST(TcCodecTest, RoundTripsEveryQualityDTypeAndKind) {
  for (uint32_t q = kTcMinQuality; q <= kTcMaxQuality; ++q) {
    const CodecSpec codec = test::Codec("tc:q=" + std::to_string(q));
    for (DType dt : kDTypes) {
      for (KvKind kind : kKinds) {
        for (const auto& [tokens, channels] : {std::pair{1u, 16u}, {37u, 16u}, {300u, 24u},
                                              {5u, 2u}, {64u, 256u}, {33u, 3u}}) {
          SCOPED_TRACE("q=" + std::to_string(q) + " " + std::string(DTypeName(dt)) + " " +
                       std::to_string(tokens) + "x" + std::to_string(channels));
          const BlockShape shape{tokens, channels, dt};
          const auto src = test::RandomTensor(shape.elements(), dt, q * 100 + tokens);
          std::vector<std::byte> enc;
          ASSERT_TRUE(EncodeBlock(codec, kind, shape, src, &enc).ok());
          std::vector<std::byte> out(shape.bytes());
          const Status st = DecodeBlock(codec, kind, shape, enc, dt, out);
          ASSERT_TRUE(st.ok()) << st.ToString();
          // The step is RMS * 2^((2 - q) / 2); a uniform quantizer errs by step / sqrt(12) RMS.
          const double bound = 1.3 * std::exp2((2.0 - q) / 2.0) / std::sqrt(12.0) + 0.01;
          EXPECT_LE(RelRms(src, out, dt, shape.elements()), bound);
        }
      }
    }
  }
}

TEST(TcCodecTest, FinerQualitiesCostMoreBitsAndErrLess) {
  const BlockShape shape{512, 64, DType::kF16};
  const auto src = test::RandomTensor(shape.elements(), shape.dtype, 3);
  size_t prev_bytes = 0;
  double prev_err = 1e9;
  for (uint32_t q = kTcMinQuality; q <= kTcMaxQuality; ++q) {
    std::vector<std::byte> enc, out(shape.bytes());
    const CodecSpec codec = test::Codec("tc:q=" + std::to_string(q));
    ASSERT_TRUE(EncodeBlock(codec, KvKind::kValue, shape, src, &enc).ok());
    ASSERT_TRUE(DecodeBlock(codec, KvKind::kValue, shape, enc, shape.dtype, out).ok());
    const double err = RelRms(src, out, shape.dtype, shape.elements());
    EXPECT_GT(enc.size(), prev_bytes) << "q=" << q;
    EXPECT_LT(err, prev_err) << "q=" << q;
    prev_bytes = enc.size();
    prev_err = err;
  }
}

TEST(TcCodecTest, KeysAreUnrotatedAndRotatedBack) {
  for (RopeStyle style : {RopeStyle::kNeox, RopeStyle::kGptj}) {
    ModelIdentity m = test::SmallModel(DType::kF32, 2, 2, 16);
    m.rope_style = style;
    m.rotary_dim = 8;
    const uint32_t tokens = 200, position = 1000;
    const BlockShape shape{tokens, m.channels(), m.dtype};
    const auto src = RotatedKeys(m, tokens, position, m.dtype, 5);
    const CodecSpec codec = test::Codec("tc:q=6");
    std::vector<std::byte> with_rope, without_rope;
    ASSERT_TRUE(EncodeBlock(codec, KvKind::kKey, shape, src, &with_rope,
                            BlockContext::For(m, position, 0))
                    .ok());
    ASSERT_TRUE(EncodeBlock(codec, KvKind::kKey, shape, src, &without_rope).ok());
    std::vector<std::byte> out(shape.bytes());
    ASSERT_TRUE(DecodeBlock(codec, KvKind::kKey, shape, with_rope, m.dtype, out).ok());
    const double err = RelRms(src, out, m.dtype, shape.elements());
    EXPECT_LT(err, 0.05);
    // Un-rotated, the keys are stationary around their means: at about the same size, a much
    // smaller error than coding them rotated.
    std::vector<std::byte> out2(shape.bytes());
    ASSERT_TRUE(DecodeBlock(codec, KvKind::kKey, shape, without_rope, m.dtype, out2).ok());
    const double err_rotated = RelRms(src, out2, m.dtype, shape.elements());
    EXPECT_LT(err, err_rotated / 2);
    EXPECT_LT(with_rope.size(), without_rope.size() * 6 / 5)
        << with_rope.size() << " vs " << without_rope.size();
    // The block says how it was rotated: decoding needs no model.
    ASSERT_TRUE(DecodeBlock(codec, KvKind::kValue, shape, with_rope, m.dtype, out).ok());
    EXPECT_LT(RelRms(src, out, m.dtype, shape.elements()), 0.05);
  }
}

TEST(TcCodecTest, RowRangesEqualTheWholeDecode) {
  const BlockShape shape{1000, 128, DType::kF16};
  const auto src = test::RandomTensor(shape.elements(), shape.dtype, 11);
  const CodecSpec codec = test::Codec("tc:q=8");
  std::vector<std::byte> enc;
  ASSERT_TRUE(EncodeBlock(codec, KvKind::kValue, shape, src, &enc).ok());
  auto prepared = PreparedBlock::Prepare(codec, KvKind::kValue, shape, enc);
  ASSERT_TRUE(prepared.ok()) << prepared.status().ToString();
  ASSERT_NE(prepared->tc(), nullptr);
  EXPECT_GT(prepared->tc()->view().n_segments, 1u);  // several segments at this size
  std::vector<std::byte> whole(shape.bytes());
  ASSERT_TRUE(DecodeBlock(codec, KvKind::kValue, shape, enc, DType::kF16, whole).ok());
  const size_t row = shape.channels * 2;
  for (const auto& [a, b] : {std::pair{0u, 1000u}, {3u, 4u}, {17u, 513u}, {999u, 1000u}}) {
    std::vector<std::byte> part((b - a) * row);
    ASSERT_TRUE(prepared->DecodeRows(a, b, DType::kF16, part.data(), row).ok());
    EXPECT_TRUE(std::equal(part.begin(), part.end(), whole.begin() + a * row)) << a << ".." << b;
  }
}

TEST(TcCodecTest, CorruptAndTruncatedSegmentsAreErrors) {
  const BlockShape shape{600, 64, DType::kF16};
  const auto src = test::RandomTensor(shape.elements(), shape.dtype, 13);
  const CodecSpec codec = test::Codec("tc:q=5");
  std::vector<std::byte> enc;
  ASSERT_TRUE(EncodeBlock(codec, KvKind::kValue, shape, src, &enc).ok());
  std::vector<std::byte> out(shape.bytes());
  auto tc = codec_internal::TcBlock::Parse(shape, enc);
  ASSERT_TRUE(tc.ok());
  const uint64_t area = (*tc)->segments_offset();
  // A flipped bit inside a segment's stream: the segment is named.
  int named = 0;
  for (uint64_t pos = area + 10; pos < enc.size(); pos += 97) {
    auto bad = enc;
    bad[pos] ^= std::byte{0x10};
    const Status st = DecodeBlock(codec, KvKind::kValue, shape, bad, shape.dtype, out);
    if (!st.ok()) {
      EXPECT_TRUE(st.IsCorruption()) << st.ToString();
      named += st.message().find("tc segment") != std::string::npos;
    }
  }
  EXPECT_GT(named, 0);
  // Every truncation is an error, never a crash.
  for (size_t n = 0; n < enc.size(); n += (n < 256 ? 1 : 61)) {
    std::vector<std::byte> cut(enc.begin(), enc.begin() + n);
    EXPECT_FALSE(DecodeBlock(codec, KvKind::kValue, shape, cut, shape.dtype, out).ok()) << n;
  }
  // Random bytes anywhere: any status, no crash.
  auto rng = test::Rng(17);
  for (int i = 0; i < 2000; ++i) {
    auto bad = enc;
    for (int k = 0; k < 1 + i % 4; ++k) bad[rng() % bad.size()] = std::byte(rng() & 0xff);
    (void)DecodeBlock(codec, KvKind::kValue, shape, bad, shape.dtype, out);
  }
}

// The vector kernels (simd.h: tc_decode_segment and _pair, tc_reconstruct_row and _store)
// against tc_math.h, which the CUDA kernels run: the same coefficients, the same verdict on damaged
// streams and the same bits (binary32 rows, and rows stored as each dtype), on every ISA this CPU
// has. Shapes cover head sizes below, at and above a vector, ones that are not a power of two
// (identity transform), rotary halves that leave pairs over, partial and full rotation in both
// RoPE styles, rows that do not fill a vector, and outliers that take the escape path.
TEST(TcCodecTest, EveryIsaDecodesTheReferenceBits) {
  std::vector<simd::Isa> isas;
  for (simd::Isa isa : simd::SupportedIsas()) {
    if (isa != simd::Isa::kScalar) isas.push_back(isa);
  }
#if defined(__x86_64__)
  KDN_REQUIRE_OR_SKIP(!isas.empty(), "this x86-64 CPU has neither AVX2+F16C nor AVX-512");
#else
  GTEST_SKIP() << "no vector tc kernels on this architecture: tc_math.h is the only decoder";
#endif
  const simd::Kernels& ref = simd::KernelsFor(simd::Isa::kScalar);
  struct Case {
    uint32_t kv_heads, head_dim, rotary_dim;
    RopeStyle style;
    uint32_t tokens, q;
  };
  const Case cases[] = {
      {2, 128, 0, RopeStyle::kNeox, 300, 4},  {8, 128, 0, RopeStyle::kNeox, 70, 12},
      {3, 64, 40, RopeStyle::kNeox, 129, 6},  {2, 32, 0, RopeStyle::kGptj, 200, 2},
      {4, 16, 12, RopeStyle::kGptj, 64, 8},   {4, 8, 0, RopeStyle::kNeox, 500, 5},
      {3, 96, 0, RopeStyle::kNeox, 40, 7},    {5, 4, 0, RopeStyle::kGptj, 33, 3},
      {2, 256, 0, RopeStyle::kNeox, 50, 4},   {2, 128, 64, RopeStyle::kNeox, 40, 4},
      {2, 64, 32, RopeStyle::kGptj, 40, 5},   {1, 48, 0, RopeStyle::kNeox, 30, 4},
  };
  for (const Case& k : cases) {
    ModelIdentity m = test::SmallModel(DType::kF32, 2, k.kv_heads, k.head_dim);
    m.rope_style = k.style;
    m.rotary_dim = k.rotary_dim;
    const BlockShape shape{k.tokens, m.channels(), m.dtype};
    for (KvKind kind : kKinds) {
      SCOPED_TRACE(std::to_string(k.kv_heads) + "x" + std::to_string(k.head_dim) + " rotary " +
                   std::to_string(k.rotary_dim) + " q=" + std::to_string(k.q) +
                   (kind == KvKind::kKey ? " keys" : " values"));
      auto src = RotatedKeys(m, k.tokens, 77, m.dtype, k.head_dim + k.tokens);
      // Outliers far beyond the tables' symbols: escapes.
      auto rng = test::Rng(k.tokens);
      float* f = reinterpret_cast<float*>(src.data());
      for (int i = 0; i < 40; ++i) f[rng() % shape.elements()] = (rng() & 1 ? 1 : -1) * 300.0f;
      std::vector<std::byte> enc;
      ASSERT_TRUE(EncodeBlock(test::Codec("tc:q=" + std::to_string(k.q)), kind, shape, src, &enc,
                              BlockContext::For(m, 77, 0))
                      .ok());
      auto parsed = codec_internal::TcBlock::Parse(shape, enc);
      ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
      const codec_internal::TcBlock& b = **parsed;
      const tc::TcView& v = b.view();
      std::vector<uint32_t> slot_base(v.channels), escape(v.channels);
      for (uint32_t c = 0; c < v.channels; ++c) {
        slot_base[c] = uint32_t{b.table_of()[c]} * rans::kProbScale;
        escape[c] = b.escape()[b.table_of()[c]];
      }
      const simd::TcChannels ch{slot_base.data(), escape.data()};
      const size_t seg_values = size_t{std::min(v.seg_tokens, v.tokens)} * v.channels;
      std::vector<int16_t> q_ref(seg_values), q_isa(seg_values);
      std::vector<float> x_ref(v.channels), x_isa(v.channels);
      for (simd::Isa isa : isas) {
        SCOPED_TRACE(std::string(simd::IsaName(isa)));
        const simd::Kernels& kern = simd::KernelsFor(isa);
        for (uint32_t seg = 0; seg < v.n_segments; ++seg) {
          ASSERT_TRUE(ref.tc_decode_segment(v, ch, seg, q_ref.data()));
          ASSERT_TRUE(kern.tc_decode_segment(v, ch, seg, q_isa.data()));
          const size_t n = size_t{tc::SegmentTokens(v, seg)} * v.channels;
          ASSERT_TRUE(std::equal(q_ref.begin(), q_ref.begin() + n, q_isa.begin())) << seg;
          for (uint32_t r = 0; r < tc::SegmentTokens(v, seg); ++r) {
            const uint32_t t = seg * v.seg_tokens + r;
            ref.tc_reconstruct_row(v, q_ref.data() + size_t{r} * v.channels, t, x_ref.data());
            kern.tc_reconstruct_row(v, q_isa.data() + size_t{r} * v.channels, t, x_isa.data());
            ASSERT_EQ(0, std::memcmp(x_ref.data(), x_isa.data(), 4 * x_ref.size())) << "token " << t;
            if (kern.tc_reconstruct_store == nullptr) continue;
            // The row written straight to each output dtype: tc::StoreFloats's bytes.
            for (DType dt : {DType::kF16, DType::kBF16, DType::kF32}) {
              const size_t bytes = size_t{v.channels} * DTypeSize(dt);
              std::vector<uint8_t> want(bytes);
              std::vector<std::byte> got(bytes + 1);
              tc::StoreFloats(x_ref.data(), v.channels, static_cast<uint32_t>(dt), want.data());
              // At an odd address: the output rows of a dtype need no alignment.
              kern.tc_reconstruct_store(v, q_isa.data() + size_t{r} * v.channels, t, dt,
                                        got.data() + 1);
              ASSERT_EQ(0, std::memcmp(want.data(), got.data() + 1, bytes))
                  << "token " << t << " dtype " << static_cast<int>(dt);
            }
          }
        }
        // Two segments decoded together: each as alone.
        std::vector<int16_t> q_ref1(seg_values), q_pair0(seg_values), q_pair1(seg_values);
        for (uint32_t seg = 0; kern.tc_decode_segment_pair && seg + 1 < v.n_segments; ++seg) {
          ASSERT_TRUE(ref.tc_decode_segment(v, ch, seg, q_ref.data()));
          ASSERT_TRUE(ref.tc_decode_segment(v, ch, seg + 1, q_ref1.data()));
          bool ok[2] = {false, false};
          kern.tc_decode_segment_pair(v, ch, seg, q_pair0.data(), q_pair1.data(), ok);
          ASSERT_TRUE(ok[0] && ok[1]) << seg;
          const size_t n0 = size_t{tc::SegmentTokens(v, seg)} * v.channels;
          const size_t n1 = size_t{tc::SegmentTokens(v, seg + 1)} * v.channels;
          ASSERT_TRUE(std::equal(q_ref.begin(), q_ref.begin() + n0, q_pair0.begin())) << seg;
          ASSERT_TRUE(std::equal(q_ref1.begin(), q_ref1.begin() + n1, q_pair1.begin())) << seg;
        }
        // Damaged streams: the same verdict, segment by segment.
        auto segs = reinterpret_cast<uint8_t*>(enc.data() + b.segments_offset());
        const uint64_t area = enc.size() - b.segments_offset();
        for (int trial = 0; trial < 200; ++trial) {
          const uint64_t at = rng() % area;
          const uint8_t keep = segs[at];
          segs[at] = static_cast<uint8_t>(rng());
          for (uint32_t seg = 0; seg < v.n_segments; ++seg) {
            ASSERT_EQ(ref.tc_decode_segment(v, ch, seg, q_ref.data()),
                      kern.tc_decode_segment(v, ch, seg, q_isa.data()))
                << "byte " << at << " segment " << seg;
          }
          for (uint32_t seg = 0; kern.tc_decode_segment_pair && seg + 1 < v.n_segments; ++seg) {
            bool ok[2] = {false, false};
            kern.tc_decode_segment_pair(v, ch, seg, q_pair0.data(), q_pair1.data(), ok);
            ASSERT_EQ(ref.tc_decode_segment(v, ch, seg, q_ref.data()), ok[0])
                << "byte " << at << " pair at segment " << seg;
            ASSERT_EQ(ref.tc_decode_segment(v, ch, seg + 1, q_ref.data()), ok[1])
                << "byte " << at << " pair at segment " << seg;
          }
          segs[at] = keep;
        }
      }
    }
  }
}

TEST(TcCodecTest, ASegmentCountTheFileMadeUpIsRefusedBeforeAnyAllocation) {
  // Found by the fuzzer: seg_tokens near 2^32 with one segment passed the segment-count check,
  // and the decoder sized its coefficient buffer from it (4 G rows).
  const BlockShape shape{600, 64, DType::kF16};
  const auto src = test::RandomTensor(shape.elements(), shape.dtype, 21);
  const CodecSpec codec = test::Codec("tc:q=5");
  std::vector<std::byte> enc;
  ASSERT_TRUE(EncodeBlock(codec, KvKind::kValue, shape, src, &enc).ok());
  auto bad = enc;
  const uint32_t huge = 0xFFFFFFFFu, one = 1;
  std::memcpy(bad.data() + 24, &huge, 4);  // seg_tokens (docs/kv-format.md, "tc")
  std::memcpy(bad.data() + 28, &one, 4);   // n_segments, consistent with it
  std::vector<std::byte> out(shape.bytes());
  const Status st = DecodeBlock(codec, KvKind::kValue, shape, bad, shape.dtype, out);
  EXPECT_TRUE(st.IsCorruption()) << st.ToString();
  EXPECT_NE(st.message().find("seg_tokens"), std::string::npos) << st.ToString();
}

TEST(TcCodecTest, FilesRoundTripAndVerify) {
  const ModelIdentity m = test::SmallModel(DType::kBF16, 3, 2, 8);
  for (const char* name : {"tc", "tc:q=1", "tc:q=8:t=id"}) {
    const auto file = test::MakeFile(m, 300, name, 9, 40);
    ASSERT_FALSE(file.empty());
    auto h = test::Parse(file);
    ASSERT_TRUE(h.ok()) << h.status().ToString();
    EXPECT_EQ(h->codec.id, CodecId::kTc);
    EXPECT_EQ(h->codec.bits, test::Codec(name).bits);  // the transform is in each block
    EXPECT_TRUE(test::OpenAndVerify(file).ok());
    auto r = KvReader::Open(MemorySource(file));
    ASSERT_TRUE(r.ok());
    std::vector<std::byte> out(h->decoded_block_bytes(DType::kF32));
    for (uint32_t l = 0; l < m.n_layers; ++l) {
      for (KvKind k : kKinds) EXPECT_TRUE((*r)->DecodeBlock(l, k, DType::kF32, out).ok());
    }
  }
}

TEST(TcCodecTest, VerifyDecodesEverySegment) {
  const ModelIdentity m = test::SmallModel(DType::kF16, 2, 2, 8);
  auto file = test::MakeFile(m, 2000, "tc:q=6", 3);
  auto h = test::Parse(file);
  ASSERT_TRUE(h.ok());
  ASSERT_TRUE(test::OpenAndVerify(file).ok());
  // Corrupt layer 1's V stream near its end and reseal every checksum: only decoding notices.
  const BlockEntry& b = h->block(1, KvKind::kValue);
  file[b.offset + b.encoded_bytes - 7] ^= std::byte{0x21};
  const uint64_t table = h->header_bytes - 32ull * h->blocks.size();
  test::Put<uint64_t>(&file, table + 32 * 3 + 24,
                      HashBytes64(file.data() + b.offset, b.encoded_bytes));
  test::ResealHeader(&file);
  const Status st = test::OpenAndVerify(file);
  ASSERT_FALSE(st.ok());
  EXPECT_TRUE(st.IsCorruption()) << st.ToString();
  EXPECT_NE(st.message().find("layer 1"), std::string::npos) << st.ToString();
  EXPECT_NE(st.message().find("tc segment"), std::string::npos) << st.ToString();
}

TEST(TcCodecTest, SpecParsesQualityAndTransform) {
  EXPECT_EQ(test::Codec("tc").Name(), "tc:q=4");
  EXPECT_EQ(test::Codec("tc:q=2").bits, 2);
  EXPECT_EQ(test::Codec("tc:t=id:q=7").Name(), "tc:q=7:t=id");
  for (const char* bad : {"tc:q=0", "tc:q=15", "tc+zstd", "tc:g32", "tc:q=", "tc:t=dct"}) {
    EXPECT_FALSE(CodecSpec::Parse(bad).ok()) << bad;
  }
}

}  // namespace
}  // namespace kdn
