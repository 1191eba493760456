// Bad input: truncated files, flipped bytes in the header, the table and every block, absurd sizes
// and counts. Each is a clear one-line error naming what is wrong, never a crash (these tests also
// run under ASan and UBSan).
#include <set>

#include "format_test_util.h"
#include "store/format/text.h"

namespace kdn {
namespace {

using test::Get;
using test::Put;

std::vector<std::byte> Truncate(const std::vector<std::byte>& f, size_t n) {
  return std::vector<std::byte>(f.begin(), f.begin() + static_cast<std::ptrdiff_t>(n));
}

void ExpectOneLineError(const Status& st, const std::string& what) {
  ASSERT_FALSE(st.ok()) << what;
  EXPECT_FALSE(st.message().empty()) << what;
  EXPECT_EQ(st.message().find('\n'), std::string::npos) << what << ": " << st.message();
}

const char* const kCodecs[] = {"raw",   "lossless", "lossless:entropy=rans", "q8", "q4", "q2:g8",
                               "q4+zstd", "q8:g5+zstd"};

TEST(KvCorruptionTest, TruncationAtEverySectionBoundary) {
  for (const char* codec : kCodecs) {
    SCOPED_TRACE(codec);
    const auto f = test::MakeFile(test::SmallModel(), 300, codec);
    auto h = test::Parse(f);
    ASSERT_TRUE(h.ok());
    const auto s = layout::ComputeSections(10, 300, kDefaultChunkTokens, 2);
    struct Cut {
      uint64_t at;
      const char* words;
    };
    std::vector<Cut> cuts = {
        {0, "fixed header truncated"},
        {7, "fixed header truncated"},
        {8, "fixed header truncated"},
        {127, "fixed header truncated"},
        {128, "model name section truncated: need 16 bytes at offset 128, file has 128"},
        {s.tokens_offset,
         "token ids section truncated: need 1200 bytes at offset 144, file has 144"},
        {s.tokens_offset + 100, "token ids section truncated"},
        {s.prefix_offset, "prefix hashes section truncated"},
        {s.table_offset, "block table section truncated"},
        {s.end - 1, "block table section truncated"},
        {s.end, "layer 0 K block truncated"},
    };
    for (size_t i = 0; i < h->blocks.size(); ++i) {
      const BlockEntry& b = h->blocks[i];
      const std::string name = layout::BlockName(i);
      cuts.push_back({b.offset, nullptr});
      cuts.push_back({b.offset + 1, nullptr});
      cuts.push_back({b.offset + b.encoded_bytes - 1, nullptr});
      if (i + 1 < h->blocks.size()) cuts.push_back({b.offset + b.encoded_bytes, nullptr});
    }
    cuts.push_back({f.size() - 1, "file truncated"});
    for (const Cut& cut : cuts) {
      const auto g = Truncate(f, cut.at);
      const Status st = test::OpenAndVerify(g);
      ExpectOneLineError(st, "cut at " + std::to_string(cut.at));
      EXPECT_TRUE(st.IsCorruption()) << st.ToString();
      if (cut.words != nullptr) {
        EXPECT_NE(st.message().find(cut.words), std::string::npos)
            << "cut at " << cut.at << ": " << st.message();
      } else {
        // Inside the block area: the message names the first block that does not fit.
        EXPECT_NE(st.message().find("block truncated"), std::string::npos) << st.message();
      }
      // The same from ParseKvHeader with the prefix that exists.
      EXPECT_FALSE(ParseKvHeader(g, g.size()).ok());
    }
  }
}

TEST(KvCorruptionTest, TruncationAtRandomPoints) {
  const auto f = test::MakeFile(test::SmallModel(DType::kF32, 3), 100, "q4+zstd");
  auto rng = test::Rng(42);
  for (int i = 0; i < 300; ++i) {
    const size_t n = rng() % f.size();
    ExpectOneLineError(test::OpenAndVerify(Truncate(f, n)), "cut at " + std::to_string(n));
  }
  // Trailing bytes are an error too.
  auto g = f;
  g.push_back(std::byte{0});
  const Status st = test::OpenAndVerify(g);
  ExpectOneLineError(st, "trailing");
  EXPECT_NE(st.message().find("trailing"), std::string::npos);
}

TEST(KvCorruptionTest, FlippedHeaderAndTableBytesAreDetected) {
  const auto f = test::MakeFile(test::SmallModel(), 64, "q4");
  auto h = test::Parse(f);
  ASSERT_TRUE(h.ok());
  for (uint64_t off = 0; off < h->header_bytes; ++off) {
    auto g = f;
    g[off] ^= std::byte{0x01};
    const Status st = test::OpenAndVerify(g);
    ExpectOneLineError(st, "flip at " + std::to_string(off));
    // Bytes of the magic and version are reported as such; every other flip by the checksum.
    if (off >= 16) {
      if (off >= 16 && off < 24) continue;  // header_bytes: a range or truncation error first
      EXPECT_NE(st.message().find("header checksum mismatch"), std::string::npos)
          << off << ": " << st.message();
    }
  }
}

TEST(KvCorruptionTest, FlippedBlockBytesNameTheBlock) {
  for (const char* codec : kCodecs) {
    SCOPED_TRACE(codec);
    const auto f = test::MakeFile(test::SmallModel(DType::kBF16), 50, codec);
    auto h = test::Parse(f);
    ASSERT_TRUE(h.ok());
    for (size_t i = 0; i < h->blocks.size(); ++i) {
      const BlockEntry& b = h->blocks[i];
      const std::string name = layout::BlockName(i);
      // Every byte of small blocks; a spread of bytes of larger ones.
      const uint64_t step = b.encoded_bytes <= 2048 ? 1 : b.encoded_bytes / 997;
      for (uint64_t p = 0; p < b.encoded_bytes; p += step) {
        auto g = f;
        g[b.offset + p] ^= std::byte{0x20};
        auto r = KvReader::Open(MemorySource(g));
        ASSERT_TRUE(r.ok()) << "the header is intact";
        const Status st = (*r)->VerifyAll();
        ExpectOneLineError(st, name);
        EXPECT_EQ(st.message(),
                  name + ": checksum mismatch (stored " + text::Hex64(b.checksum) + ", computed " +
                      text::Hex64(HashBytes64(g.data() + b.offset, b.encoded_bytes)) + ")");
        // The block read path checks too; the other blocks still read.
        std::vector<std::byte> buf(b.encoded_bytes);
        const Status rs =
            (*r)->ReadBlock(static_cast<uint32_t>(i / 2), static_cast<KvKind>(i % 2), buf);
        EXPECT_TRUE(rs.IsCorruption());
        EXPECT_EQ(rs.message().rfind(name, 0), 0u) << rs.message();
        const size_t other = (i + 1) % h->blocks.size();
        std::vector<std::byte> buf2(h->blocks[other].encoded_bytes);
        EXPECT_TRUE(
            (*r)->ReadBlock(static_cast<uint32_t>(other / 2), static_cast<KvKind>(other % 2), buf2)
                .ok());
        if (step != 1)
          break;  // large blocks: one full verify per block is enough beyond the checksum
      }
    }
  }
}

TEST(KvCorruptionTest, NonZeroPaddingIsReported) {
  const auto f = test::MakeFile(test::SmallModel(), 20, "raw");
  auto h = test::Parse(f);
  ASSERT_TRUE(h.ok());
  auto g = f;
  g[h->header_bytes + 5] = std::byte{1};
  Status st = test::OpenAndVerify(g);
  EXPECT_NE(st.message().find("padding after the header"), std::string::npos) << st.message();
  g = f;
  g[h->blocks[1].offset + h->blocks[1].encoded_bytes + 3] = std::byte{1};
  st = test::OpenAndVerify(g);
  EXPECT_NE(st.message().find("padding after layer 0 V block"), std::string::npos) << st.message();
  g = f;
  g.back() = std::byte{1};
  st = test::OpenAndVerify(g);
  EXPECT_NE(st.message().find("padding after layer 1 V block"), std::string::npos) << st.message();
}

// A block whose bytes are forged but whose checksum is recomputed: the content checks still hold.
TEST(KvCorruptionTest, ForgedBlocksWithValidChecksums) {
  auto reseal_block = [](std::vector<std::byte>* g, const KvHeader& h, size_t i) {
    const auto s = layout::ComputeSections(static_cast<uint32_t>(h.model.name.size()), h.n_tokens,
                                           h.chunk_tokens, h.model.n_layers);
    const BlockEntry& b = h.blocks[i];
    Put<uint64_t>(g, s.table_offset + 32 * i + 24,
                  HashBytes64(g->data() + b.offset, b.encoded_bytes));
    test::ResealHeader(g);
  };
  // lossless: garbage in the zstd frame.
  {
    const auto f = test::MakeFile(test::SmallModel(), 64, "lossless");
    auto h = test::Parse(f);
    ASSERT_TRUE(h.ok());
    // The frame's magic: the frame no longer parses. (A forged literal inside a frame can decode
    // to other values without any error: only the checksum, forged here too, would see it.)
    for (uint64_t p : {0, 1, 2, 3}) {
      auto g = f;
      g[h->blocks[2].offset + p] ^= std::byte{0xff};
      reseal_block(&g, *h, 2);
      const Status st = test::OpenAndVerify(g);
      ExpectOneLineError(st, "lossless forged at " + std::to_string(p));
      EXPECT_EQ(st.message().rfind("layer 1 K block: zstd stage", 0), 0u) << st.message();
      // DecodeBlock says the same; PreparedBlock too.
      auto r = KvReader::Open(MemorySource(g));
      ASSERT_TRUE(r.ok());
      std::vector<std::byte> out(h->decoded_block_bytes(DType::kF32));
      EXPECT_FALSE((*r)->DecodeBlock(1, KvKind::kKey, DType::kF32, out).ok());
    }
  }
  // quant: non-zero padding between parameters and codes (q4, K, 64 tokens, 16 channels:
  // 2 groups x 16 channels x 4 bytes = 128 bytes of parameters, already 16-aligned; use V with
  // g5: 64 x 4 groups x 4 = 1024 -> aligned too; so use 3 tokens: K 1 group x 16 x 4 = 64; V g5:
  // 3 x 4 x 4 = 48; g7: 3 x 3 x 4 = 36 -> 12 bytes of padding).
  {
    const auto f = test::MakeFile(test::SmallModel(), 3, "q8:g7");
    auto h = test::Parse(f);
    ASSERT_TRUE(h.ok());
    auto g = f;
    g[h->blocks[1].offset + 40] = std::byte{1};
    reseal_block(&g, *h, 1);
    const Status st = test::OpenAndVerify(g);
    EXPECT_EQ(st.message(), "layer 0 V block: quant padding at byte 40 is not zero");
  }
}

TEST(KvCorruptionTest, AbsurdSizesAndCountsNeverAllocateOrCrash) {
  const auto f = test::MakeFile(test::SmallModel(), 16, "lossless");
  // Every 8-byte field of the fixed header set to absurd values, resealed or not.
  for (size_t off = 8; off + 8 <= 128; off += 4) {
    for (uint64_t v : {~uint64_t{0}, uint64_t{1} << 63, uint64_t{0x7fffffff}, uint64_t{0}}) {
      for (bool reseal : {false, true}) {
        auto g = f;
        Put<uint64_t>(&g, off, v);
        if (reseal) test::ResealHeader(&g);
        // Writes that land only on the checksum (then resealed), or that change nothing, leave a
        // valid file.
        bool changed = false;
        for (size_t i = 0; i < 128; ++i) changed |= (i < 32 || i >= 40) && g[i] != f[i];
        if (!changed && (reseal || g == f)) {
          EXPECT_TRUE(test::OpenAndVerify(g).ok());
          continue;
        }
        ExpectOneLineError(test::OpenAndVerify(g), "field at " + std::to_string(off));
      }
    }
  }
  // Huge counts with a header_bytes that matches them but a file that is small.
  auto g = f;
  Put<uint32_t>(&g, layout::kNTokens, 1u << 24);
  Put<uint32_t>(&g, layout::kChunkTokens, 256);
  Put<uint32_t>(&g, layout::kNLayers, 1024);
  const auto s = layout::ComputeSections(10, 1u << 24, 256, 1024);
  Put<uint64_t>(&g, layout::kHeaderBytes, s.end);
  test::ResealHeader(&g);  // over the bytes that exist: header_bytes > file size is caught first
  const Status st = test::OpenAndVerify(g);
  ExpectOneLineError(st, "huge counts");
  EXPECT_NE(st.message().find("token ids section truncated: need 67108864 bytes at offset 144"),
            std::string::npos)
      << st.message();
}

TEST(KvCorruptionTest, WrongMagicAndVersion) {
  const auto f = test::MakeFile(test::SmallModel(), 8, "raw");
  auto g = f;
  g[1] = std::byte{'X'};
  EXPECT_EQ(test::OpenAndVerify(g).message(), "not a .kv file (bad magic)");
  EXPECT_FALSE(HasKvMagic(g));
  // A text-mode transfer that turned CR LF into LF.
  g = std::vector<std::byte>(f.begin(), f.begin() + 6);
  g.push_back(std::byte{'\n'});
  g.insert(g.end(), f.begin() + 8, f.end());
  EXPECT_EQ(test::OpenAndVerify(g).message(), "not a .kv file (bad magic)");
  g = f;
  Put<uint32_t>(&g, 8, 7);
  const Status st = test::OpenAndVerify(g);
  EXPECT_EQ(st.code(), Code::kUnsupported);
  EXPECT_EQ(st.message(), ".kv version 7 unsupported (this build reads 1)");
  // A short file that is not a .kv file at all.
  const std::string text = "hello";
  std::vector<std::byte> t(reinterpret_cast<const std::byte*>(text.data()),
                           reinterpret_cast<const std::byte*>(text.data()) + text.size());
  EXPECT_NE(test::OpenAndVerify(t).message().find("fixed header truncated"), std::string::npos);
  EXPECT_EQ(test::OpenAndVerify({}).message(),
            "fixed header truncated: need 128 bytes at offset 0, file has 0");
}

TEST(KvCorruptionTest, RandomGarbageNeverCrashes) {
  auto rng = test::Rng(7);
  const auto f = test::MakeFile(test::SmallModel(), 30, "q4+zstd");
  for (int i = 0; i < 400; ++i) {
    auto g = f;
    const int flips = 1 + static_cast<int>(rng() % 8);
    for (int k = 0; k < flips; ++k) g[rng() % g.size()] = static_cast<std::byte>(rng());
    if (i % 2) test::ResealHeader(&g);
    const Status st = test::OpenAndVerify(g);
    if (!st.ok()) {
      EXPECT_EQ(st.message().find('\n'), std::string::npos);
    }
  }
}

}  // namespace
}  // namespace kdn
