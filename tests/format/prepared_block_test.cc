// PreparedBlock: DecodeRows over any row range and stride equals DecodeBlock; payload() is the
// documented layout; copies own their bytes.
#include "format_test_util.h"
#include "store/format/codec_internal.h"

namespace kdn {
namespace {

TEST(PreparedBlockTest, DecodeRowsEqualsDecodeBlockForRandomRanges) {
  auto rng = test::Rng(11);
  for (const char* name :
       {"raw", "lossless", "lossless:entropy=rans", "q8", "q4", "q2", "q4+zstd", "q8:g5",
        "q2:g48+zstd"}) {
    for (DType dt : {DType::kF16, DType::kBF16, DType::kF32}) {
      for (KvKind kind : {KvKind::kKey, KvKind::kValue}) {
        SCOPED_TRACE(std::string(name) + " " + std::string(DTypeName(dt)));
        const CodecSpec codec = test::Codec(name);
        const BlockShape shape{75, 48, dt};
        const auto src = test::RandomTensor(shape.elements(), dt, 3);
        std::vector<std::byte> enc;
        ASSERT_TRUE(EncodeBlock(codec, kind, shape, src, &enc).ok());
        auto prepared = PreparedBlock::Prepare(codec, kind, shape, enc);
        ASSERT_TRUE(prepared.ok()) << prepared.status().ToString();
        EXPECT_EQ(prepared->shape().tokens, 75u);
        EXPECT_EQ(prepared->kind(), kind);
        EXPECT_EQ(prepared->codec().Name(), codec.Name());
        EXPECT_EQ(prepared->payload().size(), codec_internal::PayloadBytes(codec, kind, shape));
        for (DType out : {DType::kF16, DType::kBF16, DType::kF32}) {
          const size_t row = size_t{48} * DTypeSize(out);
          std::vector<std::byte> full(75 * row);
          ASSERT_TRUE(DecodeBlock(codec, kind, shape, enc, out, full).ok());
          for (int trial = 0; trial < 12; ++trial) {
            uint32_t a = static_cast<uint32_t>(rng() % 76), b = static_cast<uint32_t>(rng() % 76);
            if (a > b) std::swap(a, b);
            const size_t stride = row + (trial % 3) * 6;  // contiguous, or rows apart (odd gaps)
            std::vector<std::byte> part(stride * (b - a) + 8, std::byte{0xee});
            ASSERT_TRUE(prepared->DecodeRows(a, b, out, part.data() + 1, stride).ok());
            EXPECT_EQ(part[0], std::byte{0xee}) << "wrote before the output";
            for (uint32_t t = a; t < b; ++t) {
              ASSERT_EQ(std::memcmp(part.data() + 1 + (t - a) * stride, full.data() + t * row, row),
                        0)
                  << "row " << t << " of [" << a << ", " << b << ") stride " << stride;
              if (stride > row) {
                EXPECT_EQ(part[1 + (t - a) * stride + row], std::byte{0xee});
              }
            }
          }
        }
      }
    }
  }
}

TEST(PreparedBlockTest, DecodeRowChannelsIsThatSliceOfDecodeBlock) {
  auto rng = test::Rng(12);
  for (const char* name :
       {"raw", "lossless", "q8", "q4+zstd", "q2:g48", "q4:g16", "q8:g5", "tc", "tc:q=2"}) {
    for (DType dt : {DType::kF16, DType::kF32}) {
      for (KvKind kind : {KvKind::kKey, KvKind::kValue}) {
        SCOPED_TRACE(std::string(name) + " " + std::string(DTypeName(dt)));
        const CodecSpec codec = test::Codec(name);
        const BlockShape shape{75, 64, dt};
        const auto src = test::RandomTensor(shape.elements(), dt, 5);
        std::vector<std::byte> enc;
        ASSERT_TRUE(EncodeBlock(codec, kind, shape, src, &enc).ok());
        auto prepared = PreparedBlock::Prepare(codec, kind, shape, enc);
        ASSERT_TRUE(prepared.ok()) << prepared.status().ToString();
        for (DType out : {DType::kF16, DType::kBF16, DType::kF32}) {
          const size_t es = DTypeSize(out), row = size_t{64} * es;
          std::vector<std::byte> full(75 * row);
          ASSERT_TRUE(DecodeBlock(codec, kind, shape, enc, out, full).ok());
          for (int trial = 0; trial < 8; ++trial) {
            uint32_t a = static_cast<uint32_t>(rng() % 76), b = static_cast<uint32_t>(rng() % 76);
            if (a > b) std::swap(a, b);
            // Head-aligned slices and arbitrary ones (the codec must not assume heads).
            uint32_t c0 = static_cast<uint32_t>(rng() % 64), c1 = c0 + 1 + rng() % (64 - c0);
            if (trial % 4 == 0) {  // whole V groups of 32
              c0 = 32 * (trial / 4 % 2);
              c1 = c0 + 32;
            } else if (trial % 4 == 2) {
              c0 = 16 * (trial / 4 % 4);
              c1 = c0 + 16;
            }
            const size_t slice = size_t{c1 - c0} * es;
            const size_t stride = slice + (trial % 3) * 2 * es;
            std::vector<std::byte> part(stride * (b - a) + 8, std::byte{0xee});
            ASSERT_TRUE(
                prepared->DecodeRowChannels(a, b, c0, c1, out, part.data() + 1, stride).ok());
            EXPECT_EQ(part[0], std::byte{0xee}) << "wrote before the output";
            for (uint32_t t = a; t < b; ++t) {
              ASSERT_EQ(std::memcmp(part.data() + 1 + (t - a) * stride,
                                    full.data() + t * row + c0 * es, slice),
                        0)
                  << "row " << t << " channels [" << c0 << ", " << c1 << ")";
              if (stride > slice) {
                EXPECT_EQ(part[1 + (t - a) * stride + slice], std::byte{0xee});
              }
            }
          }
        }
        std::vector<std::byte> out(64 * 4);
        EXPECT_FALSE(prepared->DecodeRowChannels(0, 1, 8, 8, DType::kF32, out.data(), 0).ok());
        EXPECT_FALSE(prepared->DecodeRowChannels(0, 1, 8, 65, DType::kF32, out.data(), 0).ok());
        EXPECT_FALSE(prepared->DecodeRowChannels(0, 76, 0, 8, DType::kF32, out.data(), 32).ok());
        EXPECT_FALSE(prepared->DecodeRowChannels(0, 2, 0, 8, DType::kF32, out.data(), 16).ok());
      }
    }
  }
}

TEST(PreparedBlockTest, PayloadIsTheDocumentedLayout) {
  const BlockShape shape{10, 16, DType::kF16};
  const auto src = test::RandomTensor(shape.elements(), DType::kF16, 9);
  // raw: the values; plain quant: the encoded bytes themselves (no copy).
  std::vector<std::byte> enc;
  ASSERT_TRUE(EncodeBlock(test::Codec("raw"), KvKind::kKey, shape, src, &enc).ok());
  auto raw = PreparedBlock::Prepare(test::Codec("raw"), KvKind::kKey, shape, enc);
  ASSERT_TRUE(raw.ok());
  EXPECT_EQ(raw->payload().data(), enc.data());
  // lossless: byte planes, plane 0 the high byte of each value rotated left by one.
  enc.clear();
  ASSERT_TRUE(EncodeBlock(test::Codec("lossless"), KvKind::kKey, shape, src, &enc).ok());
  auto ll = PreparedBlock::Prepare(test::Codec("lossless"), KvKind::kKey, shape, enc);
  ASSERT_TRUE(ll.ok());
  ASSERT_EQ(ll->payload().size(), src.size());
  for (size_t i = 0; i < shape.elements(); ++i) {
    uint16_t v;
    std::memcpy(&v, src.data() + 2 * i, 2);
    const uint16_t r = elem::RotateLeft1(v);
    EXPECT_EQ(static_cast<uint8_t>(ll->payload()[i]), r >> 8);
    EXPECT_EQ(static_cast<uint8_t>(ll->payload()[shape.elements() + i]), r & 0xff);
  }
  // quant+zstd: params, padding, codes after the frame is undone.
  enc.clear();
  ASSERT_TRUE(EncodeBlock(test::Codec("q4+zstd"), KvKind::kValue, shape, src, &enc).ok());
  auto q = PreparedBlock::Prepare(test::Codec("q4+zstd"), KvKind::kValue, shape, enc);
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(q->codes_offset(), 48u);  // 10 tokens x 1 group x 4 bytes = 40, padded to 48
  EXPECT_EQ(q->payload().size(), 48u + 10 * 8);
  std::vector<std::byte> plain;
  ASSERT_TRUE(EncodeBlock(test::Codec("q4"), KvKind::kValue, shape, src, &plain).ok());
  EXPECT_TRUE(std::equal(plain.begin(), plain.end(), q->payload().begin(), q->payload().end()));
}

TEST(PreparedBlockTest, CopiesOwnTheirBytes) {
  const BlockShape shape{20, 16, DType::kBF16};
  const auto src = test::RandomTensor(shape.elements(), DType::kBF16, 4);
  std::vector<std::byte> enc;
  ASSERT_TRUE(EncodeBlock(test::Codec("lossless"), KvKind::kKey, shape, src, &enc).ok());
  PreparedBlock copy;
  {
    auto p = PreparedBlock::Prepare(test::Codec("lossless"), KvKind::kKey, shape, enc);
    ASSERT_TRUE(p.ok());
    copy = *p;
    PreparedBlock copy2(*p);
    EXPECT_NE(copy2.payload().data(), p->payload().data());
    PreparedBlock moved(std::move(copy2));
    std::vector<std::byte> out(src.size());
    ASSERT_TRUE(moved.DecodeRows(0, 20, DType::kBF16, out.data(), 32).ok());
    EXPECT_EQ(out, src);
  }
  std::vector<std::byte> out(src.size());
  ASSERT_TRUE(copy.DecodeRows(0, 20, DType::kBF16, out.data(), 32).ok());  // original is gone
  EXPECT_EQ(out, src);
  PreparedBlock empty;
  EXPECT_TRUE(empty.DecodeRows(0, 0, DType::kF16, nullptr, 0).ok());
  EXPECT_FALSE(empty.DecodeRows(0, 1, DType::kF16, out.data(), 32).ok());
}

TEST(PreparedBlockTest, BadRequestsAreErrors) {
  const BlockShape shape{8, 16, DType::kF16};
  const auto src = test::RandomTensor(shape.elements(), DType::kF16, 2);
  std::vector<std::byte> enc;
  ASSERT_TRUE(EncodeBlock(test::Codec("q8"), KvKind::kKey, shape, src, &enc).ok());
  EXPECT_FALSE(PreparedBlock::Prepare(test::Codec("q8"), KvKind::kKey, shape,
                                      std::span(enc).first(enc.size() - 1))
                   .ok());
  EXPECT_FALSE(PreparedBlock::Prepare(test::Codec("q4"), KvKind::kKey, shape, enc).ok());
  EXPECT_FALSE(
      PreparedBlock::Prepare(test::Codec("q8"), KvKind::kKey, BlockShape{0, 16, DType::kF16}, enc)
          .ok());
  auto p = PreparedBlock::Prepare(test::Codec("q8"), KvKind::kKey, shape, enc);
  ASSERT_TRUE(p.ok());
  std::vector<std::byte> out(shape.elements() * 4);
  EXPECT_FALSE(p->DecodeRows(3, 2, DType::kF32, out.data(), 64).ok());
  EXPECT_FALSE(p->DecodeRows(0, 9, DType::kF32, out.data(), 64).ok());
  EXPECT_FALSE(p->DecodeRows(0, 2, DType::kF32, out.data(), 63).ok());  // stride < row
  EXPECT_FALSE(p->DecodeRows(0, 2, static_cast<DType>(5), out.data(), 64).ok());
  EXPECT_FALSE(p->DecodeRows(0, 2, DType::kF32, nullptr, 64).ok());
  EXPECT_TRUE(p->DecodeRows(4, 4, DType::kF32, nullptr, 0).ok());
  EXPECT_TRUE(p->DecodeRows(7, 8, DType::kF32, out.data(), 0).ok());  // one row: stride unused
}

}  // namespace
}  // namespace kdn
