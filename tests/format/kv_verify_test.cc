// VerifyKv, the one complete check of a `.kv` file (kdnctl verify, the store's commit, fsck):
// files whose checksums are all valid but whose content is malformed, and sparse files whose
// header claims huge blocks, verified in bounded memory.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <string>

#include "kdn/format.h"
#include "security/hostile_kv.h"
#include "test_util.h"

namespace kdn {
namespace {

namespace hostile = test::hostile;

// Peak resident memory of this process (VmHWM), in bytes.
uint64_t PeakRss() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.starts_with("VmHWM:")) return std::stoull(line.substr(6)) * 1024;
  }
  return 0;
}

TEST(VerifyKvTest, SoundFilesPass) {
  for (const char* codec : {"raw", "lossless", "lossless:entropy=rans", "q8:g7", "q4+zstd"}) {
    auto f = hostile::Synth(64, codec);
    ASSERT_FALSE(f.empty());
    auto h = VerifyKv(*MemorySource(f));
    EXPECT_TRUE(h.ok()) << codec << ": " << h.status().ToString();
  }
}

// Every block checksum and the header checksum hold: a check that stops at checksums accepts
// these. VerifyKv refuses each, with the reason.
TEST(VerifyKvTest, MalformedContentWithValidChecksumsIsRefused) {
  const std::map<hostile::Kind, std::string> reason = {
      {hostile::Kind::kBlockPadding, "padding after layer 1 V block is not zero"},
      {hostile::Kind::kQuantPadding, "quant padding at byte 40 is not zero"},
      {hostile::Kind::kCorruptZstd, "zstd stage"},
      {hostile::Kind::kBytesAfterFrame, "bytes follow the frame"},
      {hostile::Kind::kTwoFrames, "bytes follow the frame"},
      {hostile::Kind::kNoContentSize, "does not declare its content size"},
      {hostile::Kind::kWrongContentSize, "frame declares 2047 content bytes, expected 2048"},
      {hostile::Kind::kBomb, "zstd stage"},
  };
  for (hostile::Kind kind : hostile::AllKinds()) {
    SCOPED_TRACE(hostile::Name(kind));
    const std::vector<std::byte> f = hostile::Make(kind);
    ASSERT_FALSE(f.empty());
    // The header and every block checksum are sound.
    auto reader = KvReader::Open(MemorySource(f));
    ASSERT_TRUE(reader.ok()) << reader.status().ToString();
    const KvHeader& h = (*reader)->header();
    for (uint32_t layer = 0; layer < h.model.n_layers; ++layer) {
      for (KvKind k : {KvKind::kKey, KvKind::kValue}) {
        std::vector<std::byte> block(h.block(layer, k).encoded_bytes);
        EXPECT_TRUE((*reader)->ReadBlock(layer, k, block).ok());
      }
    }
    auto verified = VerifyKv(*MemorySource(f));
    ASSERT_FALSE(verified.ok());
    EXPECT_EQ(verified.status().code(), Code::kCorruption) << verified.status().ToString();
    EXPECT_NE(verified.status().message().find(reason.at(kind)), std::string::npos)
        << verified.status().ToString();
  }
}

// A sparse file (no disk used) with a valid header that claims a 3 GiB block: verified through
// fixed windows, refused at the block's checksum, and this process's peak memory barely moves.
TEST(VerifyKvTest, AHugeSparseBlockIsVerifiedInBoundedMemory) {
  test::TempDir dir("kdn-verify");
  const std::string path = dir / "huge.kv";
  ASSERT_TRUE(hostile::WriteSparseHugeKv(path, uint64_t{3} << 30));
  auto source = OpenFileSource(path);
  ASSERT_TRUE(source.ok()) << source.status().ToString();
  const uint64_t before = PeakRss();
  auto verified = VerifyKv(**source);
  const uint64_t growth = PeakRss() - before;
  ASSERT_FALSE(verified.ok());
  EXPECT_NE(verified.status().message().find("layer 0 K block: checksum mismatch"),
            std::string::npos)
      << verified.status().ToString();
  EXPECT_LT(growth, uint64_t{64} << 20) << "peak memory grew by " << growth << " bytes";
}

}  // namespace
}  // namespace kdn
