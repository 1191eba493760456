// KvWriter and KvReader over real files: write, open, read and decode layer by layer; writer and
// reader misuse is an error.
#include <sys/stat.h>

#include <fstream>

#include "format_test_util.h"

namespace kdn {
namespace {

TEST(KvIoTest, WriteFileThenReadLayerByLayer) {
  test::TempDir dir("kdn-format");
  const ModelIdentity m = test::SmallModel(DType::kF16, 3);
  const std::vector<uint32_t> tokens = SynthesizeTokens(100, 1);
  for (const char* name : {"raw", "lossless", "q4+zstd"}) {
    SCOPED_TRACE(name);
    const std::string path = dir / (std::string(name) + ".kv");
    KvWriter w(m, test::Codec(name), tokens, 5, 32);
    const size_t bytes = 100 * m.channels() * 2;
    std::vector<std::vector<std::byte>> ks, vs;
    for (uint32_t l = 0; l < 3; ++l) {
      ks.emplace_back(bytes);
      vs.emplace_back(bytes);
      ASSERT_TRUE(SynthesizeLayerKv(m, 100, l, 1, ks.back(), vs.back()).ok());
      ASSERT_TRUE(w.AddLayer(ks.back(), vs.back()).ok());
    }
    ASSERT_TRUE(w.Finish(path, /*sync=*/true).ok());
    auto mem = w.FinishToMemory();
    ASSERT_TRUE(mem.ok());
    struct stat st;
    ASSERT_EQ(::stat(path.c_str(), &st), 0);
    EXPECT_EQ(static_cast<size_t>(st.st_size), mem->size());
    std::ifstream in(path, std::ios::binary);
    std::vector<std::byte> disk(mem->size());
    in.read(reinterpret_cast<char*>(disk.data()), static_cast<std::streamsize>(disk.size()));
    EXPECT_EQ(disk, *mem) << "Finish and FinishToMemory write the same bytes";

    auto r = KvReader::Open(path);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_TRUE((*r)->VerifyAll().ok());
    const KvHeader& h = (*r)->header();
    EXPECT_EQ(h.chunk_tokens, 32u);
    EXPECT_EQ(h.prefix_hashes.size(), 4u);
    std::vector<std::byte> out(bytes);
    for (uint32_t l = 0; l < 3; ++l) {
      ASSERT_TRUE((*r)->DecodeBlock(l, KvKind::kKey, DType::kF16, out).ok());
      if (std::string(name) != "q4+zstd") {
        EXPECT_EQ(out, ks[l]);
      }
      std::vector<std::byte> enc(h.block(l, KvKind::kValue).encoded_bytes);
      ASSERT_TRUE((*r)->ReadBlock(l, KvKind::kValue, enc).ok());
      EXPECT_EQ(
          std::memcmp(enc.data(), mem->data() + h.block(l, KvKind::kValue).offset, enc.size()), 0);
    }
    // Out of range requests.
    EXPECT_FALSE((*r)->DecodeBlock(3, KvKind::kKey, DType::kF16, out).ok());
    EXPECT_FALSE((*r)->DecodeBlock(0, static_cast<KvKind>(2), DType::kF16, out).ok());
    EXPECT_FALSE((*r)->DecodeBlock(0, KvKind::kKey, DType::kF32, out).ok());  // buffer too small
    std::vector<std::byte> tiny(1);
    EXPECT_FALSE((*r)->ReadBlock(0, KvKind::kKey, tiny).ok());
  }
}

TEST(KvIoTest, WriterMisuseIsAnError) {
  test::TempDir dir("kdn-format");
  const ModelIdentity m = test::SmallModel();
  const size_t bytes = 4 * m.channels() * 2;
  std::vector<std::byte> k(bytes), v(bytes);
  {
    KvWriter w(m, CodecSpec{}, SynthesizeTokens(4, 1));
    ASSERT_TRUE(w.AddLayer(k, v).ok());
    const Status st = w.Finish(dir / "partial.kv");
    EXPECT_EQ(st.message(), "KvWriter: 1 of 2 layers added");
    EXPECT_FALSE(std::filesystem::exists(dir / "partial.kv")) << "no file is created";
    EXPECT_FALSE(w.AddLayer(std::span(k).first(10), v).ok());
    ASSERT_TRUE(w.AddLayer(k, v).ok());
    EXPECT_NE(w.AddLayer(k, v).message().find("already added"), std::string::npos);
    EXPECT_TRUE(w.Finish(dir / "ok.kv").ok());
    EXPECT_FALSE(w.Finish(dir / "no-such-dir/x.kv").ok());
  }
  ModelIdentity bad = m;
  bad.head_dim = 3;
  KvWriter w1(bad, CodecSpec{}, SynthesizeTokens(4, 1));
  EXPECT_NE(w1.AddLayer(k, v).message().find("head_dim"), std::string::npos);
  EXPECT_FALSE(w1.FinishToMemory().ok());
  KvWriter w2(m, CodecSpec{}, {});
  EXPECT_NE(w2.AddLayer(k, v).message().find("token count 0"), std::string::npos);
  KvWriter w3(m, CodecSpec{}, SynthesizeTokens(4, 1), 0, 0);
  EXPECT_NE(w3.AddLayer(k, v).message().find("chunk_tokens"), std::string::npos);
  CodecSpec q;
  q.id = CodecId::kQuant;
  q.bits = 6;
  KvWriter w4(m, q, SynthesizeTokens(4, 1));
  EXPECT_FALSE(w4.AddLayer(k, v).ok());
  // A quant encoding failure names the block and leaves the writer usable.
  std::vector<uint16_t> nan_k(bytes / 2, 0x3c00);
  nan_k[20] = 0x7e00;
  KvWriter w5(m, test::Codec("q8"), SynthesizeTokens(4, 1));
  const Status st = w5.AddLayer(std::as_bytes(std::span(nan_k)), v);
  EXPECT_EQ(
      st.message().rfind("layer 0 K block: quant encoder: value nan at token 1, channel 4", 0), 0u)
      << st.message();
  EXPECT_TRUE(w5.AddLayer(k, v).ok());
}

TEST(KvIoTest, ReaderErrors) {
  test::TempDir dir("kdn-format");
  auto r = KvReader::Open(dir / "missing.kv");
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsNotFound());
  EXPECT_NE(r.status().message().find("missing.kv"), std::string::npos);
  r = KvReader::Open(dir.str());
  EXPECT_FALSE(r.ok());
  r = KvReader::Open(std::unique_ptr<ByteSource>());
  EXPECT_FALSE(r.ok());
  // Reads beyond the end of a source.
  const std::vector<std::byte> bytes(10);
  auto src = MemorySource(bytes);
  std::vector<std::byte> out(4);
  EXPECT_TRUE(src->ReadAt(6, out).ok());
  EXPECT_FALSE(src->ReadAt(7, out).ok());
  EXPECT_FALSE(src->ReadAt(~uint64_t{0}, out).ok());
  {
    std::ofstream f(dir / "ten", std::ios::binary);
    f.write("0123456789", 10);
  }
  auto fs = OpenFileSource(dir / "ten");
  ASSERT_TRUE(fs.ok());
  EXPECT_EQ((*fs)->size(), 10u);
  ASSERT_TRUE((*fs)->ReadAt(6, out).ok());
  EXPECT_EQ(static_cast<char>(out[0]), '6');
  EXPECT_FALSE((*fs)->ReadAt(7, out).ok());
  EXPECT_FALSE((*fs)->ReadAt(~uint64_t{0} - 2, out).ok());
}

}  // namespace
}  // namespace kdn
