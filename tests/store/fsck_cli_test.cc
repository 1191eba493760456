// `kdnctl fsck` (fs/kdnctl/cmd_fsck.cc) on a sound store, a damaged one, one in use, bad arguments.
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>

#include "store_test_util.h"

namespace kdn {
namespace {

struct CliRun {
  int code = -1;
  std::string out;
};

CliRun Fsck(const std::string& args) {
  const std::string bin = KDNCTL_PATH;
  FILE* p = ::popen((bin + " fsck " + args + " 2>&1").c_str(), "r");
  CliRun r;
  if (p == nullptr) return r;
  char buf[4096];
  while (size_t n = std::fread(buf, 1, sizeof(buf), p)) r.out.append(buf, n);
  int status = ::pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

TEST(FsckCli, ExitCodesSayWhatItFound) {
  test::TempDir dir("kdn-fsck");
  const std::string store_dir = dir / "s";
  ChunkId id;
  {
    auto store = test::OpenStore(store_dir, test::SmallStoreOptions());
    ASSERT_NE(store, nullptr);
    auto put = store->Put(test::RandomBytes(300000, 1));
    ASSERT_TRUE(put.ok());
    id = *put;
    CliRun busy = Fsck(store_dir);
    EXPECT_EQ(busy.code, 1) << busy.out;
    EXPECT_NE(busy.out.find("in use"), std::string::npos) << busy.out;
  }
  CliRun clean = Fsck(store_dir);
  EXPECT_EQ(clean.code, 0) << clean.out;
  EXPECT_NE(clean.out.find("1 chunks (300000 bytes verified)"), std::string::npos) << clean.out;
  EXPECT_NE(clean.out.find("clean"), std::string::npos) << clean.out;
  // Damage the chunk's bytes behind the store's back.
  std::string segment;
  uint64_t offset = 0;
  {
    auto store = test::OpenStore(store_dir, test::SmallStoreOptions());
    ASSERT_NE(store, nullptr);
    auto extents = store->Extents(id);
    ASSERT_TRUE(extents.ok());
    segment = extents->front().path;
    offset = extents->front().offset;
  }
  FILE* f = std::fopen(segment.c_str(), "r+b");
  ASSERT_NE(f, nullptr);
  std::fseek(f, static_cast<long>(offset + 1000), SEEK_SET);
  std::fputc(0x5a, f);
  std::fclose(f);
  CliRun bad = Fsck(store_dir);
  EXPECT_EQ(bad.code, 1) << bad.out;
  EXPECT_NE(bad.out.find("checksum mismatch"), std::string::npos) << bad.out;
  CliRun no_data = Fsck("--no-data " + store_dir);
  EXPECT_EQ(no_data.code, 0) << no_data.out;  // the metadata is sound
  EXPECT_EQ(Fsck("").code, 2);
  EXPECT_EQ(Fsck("--bogus " + store_dir).code, 2);
  EXPECT_EQ(Fsck("a b").code, 2);
  CliRun help = Fsck("--help");
  EXPECT_EQ(help.code, 0);
  EXPECT_NE(help.out.find("Usage: kdnctl fsck"), std::string::npos);
  EXPECT_EQ(Fsck(dir / "missing").code, 1);
}

}  // namespace
}  // namespace kdn
