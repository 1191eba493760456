// Chunk files: one regular file per chunk holding exactly its bytes, holes for zero blocks, the
// backing descriptor for passthrough (readable after the chunk is deleted), stray files removed at
// open, fsck's checks of the files.
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "store_test_util.h"

namespace kdn {
namespace {

using test::RandomBytes;

std::string ChunkPath(const Store& store, const ChunkId& id) {
  const std::string hex = id.ToHex();
  return store.dir() + "/chunks/" + hex.substr(0, 2) + "/" + hex;
}

std::vector<std::byte> ReadFd(int fd, size_t size) {
  std::vector<std::byte> out(size);
  size_t done = 0;
  while (done < size) {
    ssize_t n = ::pread(fd, out.data() + done, size - done, static_cast<off_t>(done));
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
  out.resize(done);
  return out;
}

std::vector<std::string> FilesUnder(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    if (e.is_regular_file()) out.push_back(e.path().string());
  }
  return out;
}

class ChunkFilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = test::OpenStore(dir_.str(), test::SmallStoreOptions());
    ASSERT_NE(store_, nullptr);
  }
  test::TempDir dir_{"kdn-store"};
  std::unique_ptr<Store> store_;
};

TEST_F(ChunkFilesTest, EachChunkIsAFileOfExactlyItsBytes) {
  for (size_t size : {size_t{1}, size_t{4095}, size_t{4096}, size_t{300001}}) {
    auto bytes = RandomBytes(size, size);
    auto id = store_->Put(bytes);
    ASSERT_TRUE(id.ok()) << id.status().ToString();
    struct stat st;
    ASSERT_EQ(::stat(ChunkPath(*store_, *id).c_str(), &st), 0) << ChunkPath(*store_, *id);
    EXPECT_TRUE(S_ISREG(st.st_mode));
    EXPECT_EQ(static_cast<size_t>(st.st_size), size);
    auto fd = store_->OpenChunkForRead(*id);
    ASSERT_TRUE(fd.ok()) << fd.status().ToString();
    EXPECT_EQ(ReadFd(*fd, size + 10), bytes) << "offset N of the file is offset N of the chunk";
    EXPECT_NE(::fcntl(*fd, F_GETFD) & FD_CLOEXEC, 0);
    EXPECT_EQ(::fcntl(*fd, F_GETFL) & O_ACCMODE, O_RDONLY);
    ::close(*fd);
  }
  EXPECT_TRUE(FilesUnder(store_->staging_dir()).empty()) << "no temporary file is left behind";
  test::ExpectClean(*store_);
}

TEST_F(ChunkFilesTest, DeletedChunkStaysReadableThroughAnOpenDescriptor) {
  auto bytes = RandomBytes(1 << 20, 4);
  auto id = store_->Put(bytes);
  ASSERT_TRUE(id.ok());
  auto fd = store_->OpenChunkForRead(*id);
  ASSERT_TRUE(fd.ok()) << fd.status().ToString();
  ASSERT_TRUE(store_->Release(*id).ok());
  // Its space goes back to the host once the release is durable (include/kdn/store.h,
  // Durability): the file is unlinked after the log sync.
  ASSERT_TRUE(store_->Sync().ok());
  EXPECT_NE(::access(ChunkPath(*store_, *id).c_str(), F_OK), 0);
  EXPECT_EQ(store_->Usage().used_bytes, 0u);
  EXPECT_TRUE(store_->OpenChunkForRead(*id).status().IsNotFound());
  EXPECT_EQ(ReadFd(*fd, bytes.size()), bytes) << "an open descriptor keeps the bytes";
  ::close(*fd);
  EXPECT_TRUE(store_->OpenChunkForRead(ChunkId{}).status().IsNotFound());
  test::ExpectClean(*store_);
}

TEST_F(ChunkFilesTest, ZeroBlocksOfPlainContentAreHoles) {
  // 8 MiB, mostly zero: three 4 KiB blocks of data and a tail.
  std::vector<std::byte> bytes(8 << 20);
  auto data = RandomBytes(3 * 4096 + 100, 5);
  std::copy(data.begin(), data.begin() + 4096, bytes.begin() + 4096);
  std::copy(data.begin() + 4096, data.begin() + 8192, bytes.begin() + (3 << 20));
  std::copy(data.begin() + 8192, data.end(), bytes.end() - (4096 + 100));
  auto id = store_->Put(bytes);
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  struct stat st;
  ASSERT_EQ(::stat(ChunkPath(*store_, *id).c_str(), &st), 0);
  EXPECT_EQ(static_cast<size_t>(st.st_size), bytes.size());
  EXPECT_LT(uint64_t(st.st_blocks) * 512, uint64_t{1} << 20)
      << "zero blocks take no space (" << st.st_blocks << " blocks)";
  EXPECT_EQ(test::ReadWhole(*store_, *id, bytes.size()), bytes);
  EXPECT_EQ(store_->StatChunk(*id)->stored_bytes, bytes.size()) << "capacity counts the size";
  test::ExpectClean(*store_);
}

TEST(ChunkFilesOpen, StrayFilesAreRemovedAtOpen) {
  test::TempDir dir("kdn-store");
  ChunkId kept;
  std::string stray, junk, temp;
  {
    auto store = test::OpenStore(dir.str(), test::SmallStoreOptions());
    ASSERT_NE(store, nullptr);
    auto id = store->Put(RandomBytes(10000, 1));
    ASSERT_TRUE(id.ok());
    kept = *id;
    // What a crash leaves: a file renamed into place whose commit never happened, a temporary
    // file, and a name that is no chunk's.
    auto other = store->Put(RandomBytes(10000, 2));
    ASSERT_TRUE(other.ok());
    stray = ChunkPath(*store, *other);
    std::filesystem::copy_file(stray, stray + ".copy");
    ASSERT_TRUE(store->Release(*other).ok());
    ASSERT_TRUE(store->Sync().ok());  // the release durable, its file removed
    std::filesystem::rename(stray + ".copy", stray);
    junk = store->dir() + "/chunks/zz";
    test::WriteFile(junk, RandomBytes(10, 3));
    temp = store->dir() + "/staging/chunk-0123456789abcdef.tmp";
    test::WriteFile(temp, RandomBytes(10, 4));
    auto report = store->Fsck();
    ASSERT_TRUE(report.ok());
    EXPECT_EQ(report->problems.size(), 2u) << "the stray file and the foreign one";
  }
  auto store = test::OpenStore(dir.str(), test::SmallStoreOptions());
  ASSERT_NE(store, nullptr);
  EXPECT_NE(::access(stray.c_str(), F_OK), 0);
  EXPECT_NE(::access(junk.c_str(), F_OK), 0);
  EXPECT_NE(::access(temp.c_str(), F_OK), 0);
  EXPECT_EQ(test::ReadWhole(*store, kept, 10000), RandomBytes(10000, 1));
  test::ExpectClean(*store);
}

TEST(ChunkFilesOpen, FsckFindsMissingAndTruncatedFiles) {
  test::TempDir dir("kdn-store");
  auto store = test::OpenStore(dir.str(), test::SmallStoreOptions());
  ASSERT_NE(store, nullptr);
  auto a = store->Put(RandomBytes(50000, 1));
  auto b = store->Put(RandomBytes(50000, 2));
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_EQ(::unlink(ChunkPath(*store, *a).c_str()), 0);
  ASSERT_EQ(::truncate(ChunkPath(*store, *b).c_str(), 4096), 0);
  FsckOptions o;
  o.verify_data = false;
  auto report = store->Fsck(o);
  ASSERT_TRUE(report.ok());
  std::string all;
  for (const auto& p : report->problems) all += p + "\n";
  EXPECT_NE(all.find("chunk " + a->ToHex() + ": chunk file"), std::string::npos) << all;
  EXPECT_NE(all.find("is missing"), std::string::npos) << all;
  EXPECT_NE(all.find("chunk " + b->ToHex() + ": chunk file holds 4096 of 50000 bytes"),
            std::string::npos)
      << all;
}

}  // namespace
}  // namespace kdn
