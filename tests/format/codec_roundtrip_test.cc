// Round trips of every codec and dtype: raw and lossless bit-exact, quant within a bound derived
// from the format's arithmetic, odd shapes, every output dtype, and the quant decoder against the
// formula of docs/kv-format.md on hand-built blocks.
#include <cmath>
#include <limits>

#include "format_test_util.h"
#include "store/format/codec_internal.h"

namespace kdn {
namespace {

constexpr DType kDTypes[] = {DType::kF16, DType::kBF16, DType::kF32};
constexpr KvKind kKinds[] = {KvKind::kKey, KvKind::kValue};

struct Shape {
  uint32_t tokens, channels;
};
// 1 token; tokens and channels that are not multiples of any group; a common shape.
constexpr Shape kShapes[] = {{1, 16}, {1, 1}, {37, 16}, {5, 2}, {33, 24}, {70, 130}, {64, 256}};

std::vector<std::byte> Encode(const CodecSpec& c, KvKind kind, const BlockShape& shape,
                              const std::vector<std::byte>& src) {
  std::vector<std::byte> enc;
  const Status st = EncodeBlock(c, kind, shape, src, &enc);
  EXPECT_TRUE(st.ok()) << st.ToString();
  return enc;
}

std::vector<std::byte> Decode(const CodecSpec& c, KvKind kind, const BlockShape& shape,
                              const std::vector<std::byte>& enc, DType out_dtype) {
  std::vector<std::byte> out(shape.elements() * DTypeSize(out_dtype));
  const Status st = DecodeBlock(c, kind, shape, enc, out_dtype, out);
  EXPECT_TRUE(st.ok()) << st.ToString();
  return out;
}

std::vector<std::byte> Converted(const std::vector<std::byte>& src, DType from, DType to) {
  const size_t n = src.size() / DTypeSize(from);
  std::vector<std::byte> out(n * DTypeSize(to));
  ConvertDType(from, src.data(), to, out.data(), n);
  return out;
}

// lossless:entropy=rans on blocks of many segments, planes of one value (a table whose one symbol
// gets a neighbour) and damaged blocks: bit-exact, or an error naming the segment, never a crash.
TEST(CodecRoundTripTest, LosslessRansIsBitExactAndNamesDamagedSegments) {
  const CodecSpec codec = test::Codec("lossless:entropy=rans");
  for (DType dt : kDTypes) {
    SCOPED_TRACE(std::string(DTypeName(dt)));
    const BlockShape shape{300, 128, dt};
    auto rng = test::Rng(3);
    std::normal_distribution<float> normal(0.0f, 1.5f);
    std::vector<float> x(shape.elements());
    for (auto& v : x) v = normal(rng);
    std::vector<std::byte> src(shape.bytes());
    ConvertDType(DType::kF32, x.data(), dt, src.data(), x.size());
    const auto enc = Encode(codec, KvKind::kKey, shape, src);
    EXPECT_EQ(Decode(codec, KvKind::kKey, shape, enc, dt), src);
    EXPECT_LT(enc.size(), src.size());
    auto parsed = codec_internal::LosslessRansBlock::Parse(shape, enc);
    ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
    EXPECT_GT((*parsed)->view().n_segments, 2u);
    const std::vector<std::byte> zeros(shape.bytes());
    EXPECT_EQ(Decode(codec, KvKind::kValue, shape, Encode(codec, KvKind::kValue, shape, zeros), dt),
              zeros);

    std::vector<std::byte> out(shape.bytes());
    const uint64_t area = (*parsed)->segments_offset();
    int named = 0;
    for (uint64_t pos = area + 7; pos < enc.size(); pos += 307) {
      auto bad = enc;
      bad[pos] ^= std::byte{0x04};
      const Status st = DecodeBlock(codec, KvKind::kKey, shape, bad, dt, out);
      if (!st.ok()) {
        EXPECT_TRUE(st.IsCorruption()) << st.ToString();
        named += st.message().find("lossless rANS segment") != std::string::npos;
      }
    }
    EXPECT_GT(named, 0);
    for (size_t n = 0; n < enc.size(); n += (n < 1200 ? 3 : 997)) {
      std::vector<std::byte> cut(enc.begin(), enc.begin() + n);
      EXPECT_FALSE(DecodeBlock(codec, KvKind::kKey, shape, cut, dt, out).ok()) << n;
    }
    for (int i = 0; i < 200; ++i) {
      auto bad = enc;
      for (int k = 0; k < 1 + i % 4; ++k) bad[rng() % bad.size()] = std::byte(rng() & 0xff);
      (void)DecodeBlock(codec, KvKind::kKey, shape, bad, dt, out);
    }
  }
}

// The rANS stage's tables are written compactly (version 2): smaller than version 1's 256 u16 per
// plane; a version 1 block with the same tables still decodes to the same values; a table that
// is malformed is an error naming it.
TEST(CodecRoundTripTest, LosslessRansTablesAreCompactAndVersionOneStillDecodes) {
  const CodecSpec codec = test::Codec("lossless:entropy=rans");
  for (DType dt : kDTypes) {
    SCOPED_TRACE(std::string(DTypeName(dt)));
    const BlockShape shape{200, 128, dt};
    const uint32_t planes = static_cast<uint32_t>(DTypeSize(dt));
    auto rng = test::Rng(9);
    std::normal_distribution<float> normal(0.0f, 0.8f);
    std::vector<float> x(shape.elements());
    for (auto& v : x) v = normal(rng);
    std::vector<std::byte> src(shape.bytes());
    ConvertDType(DType::kF32, x.data(), dt, src.data(), x.size());
    const auto enc = Encode(codec, KvKind::kValue, shape, src);
    ASSERT_EQ(static_cast<uint8_t>(enc[0]), 2);
    auto parsed = codec_internal::LosslessRansBlock::Parse(shape, enc);
    ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
    const codec_internal::LosslessRansBlock& b = **parsed;
    const uint64_t tables_end = b.segments_offset() - 8ull * b.view().n_segments;
    const uint64_t v1_tables_end = 16 + 512ull * planes;
    EXPECT_LT(2 * (tables_end - 16), v1_tables_end - 16) << tables_end;

    // The same block with version 1 tables, rebuilt from the decode tables (a symbol's
    // frequency is the number of its slots).
    std::vector<std::byte> v1(enc.begin(), enc.begin() + 16);
    v1[0] = std::byte{1};
    for (uint32_t t = 0; t < planes; ++t) {
      uint16_t freq[256] = {};
      for (uint32_t j = 0; j < 4096; ++j) freq[b.slots()[t * 4096 + j] & 0xff]++;
      for (uint16_t f : freq) {
        v1.push_back(std::byte(f & 0xff));
        v1.push_back(std::byte(f >> 8));
      }
    }
    v1.insert(v1.end(), enc.begin() + tables_end, enc.end());
    EXPECT_EQ(Decode(codec, KvKind::kValue, shape, v1, dt), src);

    std::vector<std::byte> out(shape.bytes());
    auto bad_mode = enc;
    bad_mode[16] = std::byte{7};
    Status st = DecodeBlock(codec, KvKind::kValue, shape, bad_mode, dt, out);
    EXPECT_TRUE(st.IsCorruption() && st.message().find("table mode") != std::string::npos)
        << st.ToString();
    if (static_cast<uint8_t>(enc[16]) == 0 && static_cast<uint8_t>(enc[49]) < 0x80) {
      // A one-byte frequency written in two bytes.
      auto long_form = enc;
      long_form[49] |= std::byte{0x80};
      long_form.insert(long_form.begin() + 50, std::byte{0});
      st = DecodeBlock(codec, KvKind::kValue, shape, long_form, dt, out);
      EXPECT_TRUE(st.IsCorruption() && st.message().find("badly encoded") != std::string::npos)
          << st.ToString();
    } else {
      ADD_FAILURE() << "the first plane's table is not counted with a one-byte first frequency";
    }
  }
}

TEST(CodecRoundTripTest, RawAndLosslessAreBitExact) {
  for (const char* name : {"raw", "lossless", "lossless:l1", "lossless:l12", "lossless:l-3",
                           "lossless:entropy=rans"}) {
    const CodecSpec codec = test::Codec(name);
    for (DType dt : kDTypes) {
      for (KvKind kind : kKinds) {
        for (const Shape& s : kShapes) {
          SCOPED_TRACE(std::string(name) + " " + std::string(DTypeName(dt)) + " " +
                       std::to_string(s.tokens) + "x" + std::to_string(s.channels));
          const BlockShape shape{s.tokens, s.channels, dt};
          // Arbitrary bit patterns: NaN payloads, infinities, -0 and subnormals included.
          const auto src = test::RandomBytes(shape.bytes(), s.tokens * 31 + s.channels);
          const auto enc = Encode(codec, kind, shape, src);
          if (codec.id == CodecId::kRaw) {
            EXPECT_EQ(enc, src);
          }
          EXPECT_EQ(Decode(codec, kind, shape, enc, dt), src);
          // Other output dtypes: exactly the conversion of the source.
          for (DType out : kDTypes) {
            if (out == dt) continue;
            EXPECT_EQ(Decode(codec, kind, shape, enc, out), Converted(src, dt, out));
          }
        }
      }
    }
  }
}

TEST(CodecRoundTripTest, LosslessCompressesRealisticKv) {
  // Synthetic KV has the exponent structure of real caches: the byte planes must pay off.
  const ModelIdentity m = *ModelPreset("llama3-8b");
  const uint32_t tokens = 256;
  std::vector<std::byte> k(size_t{tokens} * m.channels() * 2), v(k.size());
  ASSERT_TRUE(SynthesizeLayerKv(m, tokens, 0, 1, k, v).ok());
  const BlockShape shape{tokens, m.channels(), m.dtype};
  const auto enc = Encode(test::Codec("lossless"), KvKind::kKey, shape, k);
  EXPECT_LT(enc.size() * 1.2, k.size()) << "ratio " << double(k.size()) / enc.size();
  EXPECT_EQ(Decode(test::Codec("lossless"), KvKind::kKey, shape, enc, m.dtype), k);
}

// The bound for one decoded value of a group with range [lo, hi], b bits (M = 2^b - 1):
//   zero = fp16(lo), scale = fp16((hi - lo) / M), code = clamp(rne((x - zero) / scale), 0, M).
//   Interior codes are within scale/2 of x. A code clamped at 0 means x < zero, so |x - x'| <=
//   zero - lo; clamped at M means x - x' <= (lo - zero) + M * (scale_exact - scale). So
//     |x - (scale * code + zero)| <= scale/2 + |zero - lo| + M * |scale - scale_exact|
//   plus binary32 rounding: (x - zero) / scale is within 2^-22 relative, which may move a code
//   across a tie (<= scale * M * 2^-22), and scale * code and + zero are each rounded
//   (<= 2^-23 * (|zero| + scale * M)). The output dtype then rounds x' to nearest even: half an
//   ulp, |x'| * 2^-11 for fp16 (2^-25 for subnormals), |x'| * 2^-8 for bf16, 0 for fp32.
double QuantBound(float lo, float hi, uint32_t bits, float decoded, DType out) {
  const double m = double((1u << bits) - 1);
  const float zero = elem::HalfToFloat(elem::FloatToHalf(lo));
  const float scale = elem::HalfToFloat(elem::FloatToHalf((hi - lo) / float(m)));
  const double scale_exact = (double(hi) - double(lo)) / m;
  double b = scale / 2.0 + std::fabs(double(zero) - lo) + m * std::fabs(scale - scale_exact);
  b += std::ldexp(1.0, -21) * (std::fabs(zero) + scale * m);
  const double ad = std::fabs(decoded);
  if (out == DType::kF16) b += std::max(std::ldexp(1.0, -25), ad * std::ldexp(1.0, -11));
  if (out == DType::kBF16) b += ad * std::ldexp(1.0, -8) + 1e-38;
  return b;
}

void CheckQuantBound(const CodecSpec& codec, KvKind kind, const BlockShape& shape,
                     const std::vector<std::byte>& src, const std::vector<std::byte>& out,
                     DType out_dtype) {
  const uint32_t g = codec.group_size, t_n = shape.tokens, c_n = shape.channels;
  int failures = 0;
  auto check_group = [&](uint32_t t0, uint32_t t1, uint32_t c0, uint32_t c1) {
    float lo = std::numeric_limits<float>::infinity(), hi = -lo;
    for (uint32_t t = t0; t < t1; ++t) {
      for (uint32_t c = c0; c < c1; ++c) {
        const float x = test::LoadAsFloat(src.data(), shape.dtype, size_t{t} * c_n + c);
        lo = std::min(lo, x);
        hi = std::max(hi, x);
      }
    }
    for (uint32_t t = t0; t < t1; ++t) {
      for (uint32_t c = c0; c < c1; ++c) {
        const size_t i = size_t{t} * c_n + c;
        const float x = test::LoadAsFloat(src.data(), shape.dtype, i);
        const float y = test::LoadAsFloat(out.data(), out_dtype, i);
        const double err = std::fabs(double(x) - y);
        if (!(err <= QuantBound(lo, hi, codec.bits, y, out_dtype)) && failures++ < 5) {
          ADD_FAILURE() << "token " << t << " channel " << c << ": x " << x << " decoded " << y
                        << " error " << err << " bound "
                        << QuantBound(lo, hi, codec.bits, y, out_dtype) << " (group range " << lo
                        << ".." << hi << ")";
        }
      }
    }
  };
  if (kind == KvKind::kKey) {
    for (uint32_t t0 = 0; t0 < t_n; t0 += g) {
      for (uint32_t c = 0; c < c_n; ++c) check_group(t0, std::min(t_n, t0 + g), c, c + 1);
    }
  } else {
    for (uint32_t t = 0; t < t_n; ++t) {
      for (uint32_t c0 = 0; c0 < c_n; c0 += g) check_group(t, t + 1, c0, std::min(c_n, c0 + g));
    }
  }
}

TEST(CodecRoundTripTest, QuantWithinTheStatedBound) {
  for (const char* name : {"q8", "q4", "q2", "q8+zstd", "q4+zstd", "q2+zstd", "q4:g1", "q4:g7",
                           "q8:g64", "q2:g100+zstd", "q4:g16", "q8:g8"}) {
    const CodecSpec codec = test::Codec(name);
    for (DType dt : kDTypes) {
      for (KvKind kind : kKinds) {
        for (const Shape& s : kShapes) {
          SCOPED_TRACE(std::string(name) + " " + std::string(DTypeName(dt)) +
                       (kind == KvKind::kKey ? " K " : " V ") + std::to_string(s.tokens) + "x" +
                       std::to_string(s.channels));
          const BlockShape shape{s.tokens, s.channels, dt};
          const auto src =
              test::RandomTensor(shape.elements(), dt, s.tokens * 7 + s.channels, 3.0f);
          const auto enc = Encode(codec, kind, shape, src);
          const auto q =
              codec_internal::ComputeQuantLayout(kind, shape, codec.bits, codec.group_size);
          if (!codec.zstd) {
            EXPECT_EQ(enc.size(), q.total);
          }
          for (DType out : kDTypes) {
            CheckQuantBound(codec, kind, shape, src, Decode(codec, kind, shape, enc, out), out);
          }
          // Encoding is deterministic.
          EXPECT_EQ(Encode(codec, kind, shape, src), enc);
        }
      }
    }
  }
}

// The bound above holds whatever the data; on KV-like data the error is also small where it
// matters: relative RMS error per codec (KIVI reports similar figures on real caches).
TEST(CodecRoundTripTest, QuantErrorOnKvLikeData) {
  const ModelIdentity m = *ModelPreset("llama3-8b");
  const uint32_t tokens = 256;
  std::vector<std::byte> k(size_t{tokens} * m.channels() * 2), v(k.size());
  ASSERT_TRUE(SynthesizeLayerKv(m, tokens, 1, 1, k, v).ok());
  const BlockShape shape{tokens, m.channels(), m.dtype};
  struct Case {
    const char* codec;
    double max_rel_rms;
  } cases[] = {{"q8", 0.01}, {"q4", 0.12}, {"q2", 0.5}};
  for (const Case& c : cases) {
    for (KvKind kind : kKinds) {
      const auto& src = kind == KvKind::kKey ? k : v;
      const auto out = Decode(test::Codec(c.codec), kind, shape,
                              Encode(test::Codec(c.codec), kind, shape, src), DType::kF32);
      double err2 = 0, sig2 = 0;
      for (size_t i = 0; i < shape.elements(); ++i) {
        const double x = test::LoadAsFloat(src.data(), DType::kBF16, i);
        const double y = test::LoadAsFloat(out.data(), DType::kF32, i);
        err2 += (x - y) * (x - y);
        sig2 += x * x;
      }
      const double rel = std::sqrt(err2 / sig2);
      EXPECT_LT(rel, c.max_rel_rms) << c.codec << (kind == KvKind::kKey ? " K" : " V");
      EXPECT_GT(rel, 0.0);
    }
  }
}

TEST(CodecRoundTripTest, QuantDecodesGroupEndpointsExactly) {
  const BlockShape shape{40, 32, DType::kF16};
  std::vector<uint16_t> src(shape.elements(), elem::FloatToHalf(1.375f));
  // Every K group (a channel over 32 tokens) holds both values; its range is 1.875, whose steps
  // 1.875/3 and 1.875/15 are exact in fp16, so both endpoints decode exactly.
  for (size_t i = 0; i < src.size(); i += 3) src[i] = elem::FloatToHalf(-0.5f);
  std::vector<std::byte> bytes(shape.bytes());
  std::memcpy(bytes.data(), src.data(), bytes.size());
  for (const char* name : {"q2", "q4+zstd"}) {
    const CodecSpec codec = test::Codec(name);
    const auto out =
        Decode(codec, KvKind::kKey, shape, Encode(codec, KvKind::kKey, shape, bytes), DType::kF16);
    for (size_t i = 0; i < src.size(); ++i) {
      const float x = elem::HalfToFloat(src[i]);
      const float y = test::LoadAsFloat(out.data(), DType::kF16, i);
      EXPECT_EQ(x, y) << name << " element " << i;
    }
  }
}

TEST(CodecRoundTripTest, QuantEncoderRefusesWhatFp16CannotHold) {
  const BlockShape shape{4, 8, DType::kF32};
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                    -std::numeric_limits<float>::infinity(), 70000.0f, -65505.0f}) {
    for (KvKind kind : kKinds) {
      std::vector<float> v(shape.elements(), 0.25f);
      v[13] = bad;  // token 1, channel 5
      std::vector<std::byte> src(shape.bytes());
      std::memcpy(src.data(), v.data(), src.size());
      std::vector<std::byte> enc;
      const Status st = EncodeBlock(test::Codec("q4"), kind, shape, src, &enc);
      ASSERT_FALSE(st.ok()) << bad;
      EXPECT_EQ(st.code(), Code::kInvalidArgument);
      EXPECT_NE(st.message().find("at token 1, channel 5"), std::string::npos) << st.message();
      EXPECT_NE(st.message().find("65504"), std::string::npos) << st.message();
      EXPECT_TRUE(enc.empty()) << "nothing appended on failure";
    }
  }
  // The fp16 maximum itself is fine.
  std::vector<float> v(shape.elements(), 65504.0f);
  v[0] = -65504.0f;
  std::vector<std::byte> src(shape.bytes());
  std::memcpy(src.data(), v.data(), src.size());
  std::vector<std::byte> enc;
  EXPECT_TRUE(EncodeBlock(test::Codec("q8"), KvKind::kValue, shape, src, &enc).ok());
  // raw and lossless keep whatever bits they are given.
  v[3] = std::numeric_limits<float>::quiet_NaN();
  std::memcpy(src.data(), v.data(), src.size());
  enc.clear();
  EXPECT_TRUE(EncodeBlock(test::Codec("lossless"), KvKind::kValue, shape, src, &enc).ok());
}

// Blocks built by hand from the layout of docs/kv-format.md: the decoder is the formula.
TEST(CodecRoundTripTest, QuantDecoderFollowsTheSpecifiedLayout) {
  auto rng = test::Rng(5);
  for (uint32_t bits : {8u, 4u, 2u}) {
    for (KvKind kind : kKinds) {
      for (uint32_t group : {1u, 3u, 16u, 32u}) {
        const BlockShape shape{19, 37, DType::kBF16};
        CodecSpec codec = test::Codec("q" + std::to_string(bits));
        codec.group_size = static_cast<uint16_t>(group);
        const auto q = codec_internal::ComputeQuantLayout(kind, shape, bits, group);
        const uint32_t ngc = (37 + group - 1) / group;
        EXPECT_EQ(q.n_params, kind == KvKind::kKey ? uint64_t{(19 + group - 1) / group} * 37
                                                   : uint64_t{19} * ngc);
        EXPECT_EQ(q.codes_offset, (q.n_params * 4 + 15) / 16 * 16);
        EXPECT_EQ(q.row_bytes, (37 * bits + 7) / 8);
        std::vector<std::byte> block(q.total);
        std::vector<uint16_t> params(2 * q.n_params);
        for (size_t i = 0; i < params.size(); i += 2) {
          params[i] = elem::FloatToHalf(float(rng() % 1000) / 997.0f);                  // scale
          params[i + 1] = elem::FloatToHalf(float(int(rng() % 2000) - 1000) / 311.0f);  // zero
        }
        std::memcpy(block.data(), params.data(), 4 * q.n_params);
        std::vector<uint32_t> codes(shape.elements());
        for (uint32_t t = 0; t < 19; ++t) {
          for (uint32_t c = 0; c < 37; ++c) {
            const uint32_t code = static_cast<uint32_t>(rng() & ((1u << bits) - 1));
            codes[t * 37 + c] = code;
            const size_t bit = size_t{c} * bits;
            auto& byte = block[q.codes_offset + size_t{t} * q.row_bytes + bit / 8];
            byte |= static_cast<std::byte>(code << (bit % 8));
          }
        }
        for (DType out : kDTypes) {
          const auto dec = Decode(codec, kind, shape, block, out);
          for (uint32_t t = 0; t < 19; ++t) {
            for (uint32_t c = 0; c < 37; ++c) {
              const size_t p =
                  kind == KvKind::kKey ? size_t{t / group} * 37 + c : size_t{t} * ngc + c / group;
              const float want = elem::Dequant(params[2 * p], params[2 * p + 1], codes[t * 37 + c]);
              std::vector<std::byte> w(4);
              ConvertDType(DType::kF32, &want, out, w.data(), 1);
              ASSERT_EQ(std::memcmp(dec.data() + (size_t{t} * 37 + c) * DTypeSize(out), w.data(),
                                    DTypeSize(out)),
                        0)
                  << "bits " << bits << " group " << group << " t " << t << " c " << c;
            }
          }
        }
      }
    }
  }
}

TEST(CodecRoundTripTest, BadArgumentsAreErrors) {
  const BlockShape shape{4, 8, DType::kF16};
  const auto src = test::RandomTensor(shape.elements(), DType::kF16, 1);
  std::vector<std::byte> enc;
  EXPECT_FALSE(
      EncodeBlock(test::Codec("raw"), KvKind::kKey, shape, std::span(src).first(10), &enc).ok());
  EXPECT_FALSE(
      EncodeBlock(test::Codec("raw"), KvKind::kKey, BlockShape{0, 8, DType::kF16}, {}, &enc).ok());
  EXPECT_FALSE(
      EncodeBlock(test::Codec("raw"), KvKind::kKey, BlockShape{4, 0, DType::kF16}, {}, &enc).ok());
  EXPECT_FALSE(EncodeBlock(test::Codec("raw"), KvKind::kKey,
                           BlockShape{4, 8, static_cast<DType>(0)}, src, &enc)
                   .ok());
  EXPECT_FALSE(
      EncodeBlock(test::Codec("raw"), KvKind::kKey, BlockShape{1u << 25, 8, DType::kF16}, src, &enc)
          .ok());
  EXPECT_FALSE(EncodeBlock(test::Codec("raw"), static_cast<KvKind>(2), shape, src, &enc).ok());
  CodecSpec bad_codec;
  bad_codec.id = CodecId::kQuant;
  bad_codec.bits = 5;
  EXPECT_FALSE(EncodeBlock(bad_codec, KvKind::kKey, shape, src, &enc).ok());
  EXPECT_TRUE(enc.empty());

  for (const char* name : {"raw", "lossless", "lossless:entropy=rans", "q4", "q4+zstd"}) {
    SCOPED_TRACE(name);
    const CodecSpec codec = test::Codec(name);
    const auto e = Encode(codec, KvKind::kValue, shape, src);
    std::vector<std::byte> out(shape.elements() * 4);
    // Output too small.
    EXPECT_FALSE(
        DecodeBlock(codec, KvKind::kValue, shape, e, DType::kF32, std::span(out).first(10)).ok());
    // Encoded bytes that do not fit the shape.
    auto shorter = e;
    shorter.pop_back();
    const Status st = DecodeBlock(codec, KvKind::kValue, shape, shorter, DType::kF32, out);
    EXPECT_TRUE(st.IsCorruption()) << st.ToString();
    auto longer = e;
    longer.push_back(std::byte{0});
    EXPECT_TRUE(DecodeBlock(codec, KvKind::kValue, shape, longer, DType::kF32, out).IsCorruption());
    EXPECT_FALSE(DecodeBlock(codec, KvKind::kValue, shape, {}, DType::kF32, out).ok());
    EXPECT_FALSE(DecodeBlock(codec, KvKind::kValue, shape, e, static_cast<DType>(0), out).ok());
    // The other kind's layout differs for quant (K 1 group x 8 channels, V 4 tokens x 1 group).
    EXPECT_TRUE(DecodeBlock(codec, KvKind::kValue, shape, e, DType::kF32, out).ok());
  }
  // A zstd frame of the wrong size, and one followed by more bytes (zeros: small frames).
  const std::vector<std::byte> zeros(shape.bytes());
  const auto lossless = Encode(test::Codec("lossless"), KvKind::kKey, shape, zeros);
  const BlockShape bigger{5, 8, DType::kF16};
  std::vector<std::byte> out(bigger.bytes());
  Status st =
      DecodeBlock(test::Codec("lossless"), KvKind::kKey, bigger, lossless, DType::kF16, out);
  EXPECT_NE(st.message().find("declares 64 content bytes, expected 80"), std::string::npos)
      << st.message();
  auto two = lossless;
  two.insert(two.end(), lossless.begin(), lossless.end());
  st = DecodeBlock(test::Codec("lossless"), KvKind::kKey, shape, two, DType::kF16, out);
  EXPECT_NE(st.message().find("follow the frame"), std::string::npos) << st.message();
}

TEST(ConvertDTypeTest, RoundsToNearestEven) {
  // 1 + 2^-11 is a tie between 1 and 1 + 2^-10 in fp16: even is 1.
  const float f[] = {1.0f + std::ldexp(1.0f, -11), 1.0f + 3 * std::ldexp(1.0f, -11), 65520.0f,
                     1.0f + std::ldexp(1.0f, -8), 1.0f + 3 * std::ldexp(1.0f, -8)};
  uint16_t h[5], b[5];
  ConvertDType(DType::kF32, f, DType::kF16, h, 5);
  ConvertDType(DType::kF32, f, DType::kBF16, b, 5);
  EXPECT_EQ(h[0], 0x3c00);
  EXPECT_EQ(h[1], 0x3c02);
  EXPECT_EQ(h[2], 0x7c00);  // rounds to infinity
  EXPECT_EQ(b[3], 0x3f80);
  EXPECT_EQ(b[4], 0x3f82);
  float back[5];
  ConvertDType(DType::kF16, h, DType::kF32, back, 2);
  EXPECT_EQ(back[0], 1.0f);
  ConvertDType(DType::kF32, f, DType::kF32, back, 5);
  EXPECT_EQ(std::memcmp(back, f, sizeof f), 0);
}

}  // namespace
}  // namespace kdn
