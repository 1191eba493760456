// A store only its owner can read: 0700 directories and 0600 files when created, wider modes
// fixed (and reported) at open, and another user can neither list the store nor open anything
// in it.
#include <dirent.h>
#include <grp.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>

#include "store_test_util.h"

namespace kdn {
namespace {

using test::RandomBytes;

mode_t ModeOf(const std::string& path) {
  struct stat st;
  EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

// Every entry of the store, the directory included.
std::vector<std::string> Entries(const std::string& dir) {
  std::vector<std::string> out{dir};
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    out.push_back(e.path().string());
  }
  return out;
}

void ExpectPrivate(const std::string& dir) {
  for (const std::string& p : Entries(dir)) {
    const mode_t mode = ModeOf(p);
    EXPECT_EQ(mode & 077, 0u) << p << " is mode " << std::oct << mode;
  }
}

std::unique_ptr<Store> StoreWithData(const std::string& dir, ChunkId* id) {
  auto store = test::OpenStore(dir, test::SmallStoreOptions());
  if (store == nullptr) return nullptr;
  auto put = store->Put(RandomBytes(100000, 1));
  EXPECT_TRUE(put.ok());
  if (put.ok()) *id = *put;
  auto ino = store->MakeNode(kRootIno, "secret", NewNode{S_IFREG | 0600, 0, 0, 0, "", kTimeNow});
  EXPECT_TRUE(ino.ok());
  return store;
}

TEST(PrivateModes, NewStoreIsOwnerOnly) {
  ::umask(022);  // what a careless caller runs with
  test::TempDir tmp("kdn-store");
  const std::string dir = tmp / "store";
  ChunkId id;
  auto store = StoreWithData(dir, &id);
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(ModeOf(dir), 0700u);
  for (const char* name : {"meta.db", "meta.db-wal", "meta.db-shm", "LOCK"}) {
    EXPECT_EQ(ModeOf(dir + "/" + name), 0600u) << name;
  }
  EXPECT_TRUE(store->OpenWarnings().empty());
  ExpectPrivate(dir);
}

TEST(PrivateModes, WiderModesAreFixedAtOpenAndReported) {
  test::TempDir tmp("kdn-store");
  const std::string dir = tmp / "store";
  ChunkId id;
  std::string chunk_file;
  {
    auto store = StoreWithData(dir, &id);
    ASSERT_NE(store, nullptr);
    chunk_file = dir + "/chunks/" + id.ToHex().substr(0, 2) + "/" + id.ToHex();
  }
  // What an older version left: everything readable by all.
  for (const std::string& p : Entries(dir)) {
    ASSERT_EQ(::chmod(p.c_str(), std::filesystem::is_directory(p) ? 0755 : 0644), 0) << p;
  }
  auto store = test::OpenStore(dir, test::SmallStoreOptions());
  ASSERT_NE(store, nullptr);
  ExpectPrivate(dir);
  std::string all;
  for (const std::string& w : store->OpenWarnings()) all += w + "\n";
  EXPECT_NE(all.find(dir + " was mode 0755, now 0700"), std::string::npos) << all;
  EXPECT_NE(all.find(dir + "/meta.db was mode 0644, now 0600"), std::string::npos) << all;
  EXPECT_NE(all.find("under " + dir + "/chunks"), std::string::npos) << all;
  EXPECT_EQ(test::ReadWhole(*store, id, 100000), RandomBytes(100000, 1));
}

TEST(PrivateModes, AnotherUserCanReadNothing) {
  if (::geteuid() != 0) {
    GTEST_SKIP() << "needs root to create a store and then act as user nobody";
  }
  test::TempDir tmp("kdn-store");
  // Only the store's own modes may protect it: its parent is open to everyone.
  ASSERT_EQ(::chmod(tmp.str().c_str(), 0755), 0);
  const std::string dir = tmp / "store";
  ChunkId id;
  auto store = StoreWithData(dir, &id);
  ASSERT_NE(store, nullptr);
  const std::string chunk_file = dir + "/chunks/" + id.ToHex().substr(0, 2) + "/" + id.ToHex();
  std::vector<std::string> paths = Entries(dir);
  ASSERT_GE(paths.size(), 8u);

  constexpr uid_t kNobody = 65534;
  int pipefd[2];
  ASSERT_EQ(::pipe(pipefd), 0);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(pipefd[0]);
    std::string report;
    if (::setgroups(0, nullptr) != 0 || ::setgid(kNobody) != 0 || ::setuid(kNobody) != 0) {
      report = "cannot become nobody\n";
    } else {
      if (DIR* d = ::opendir(dir.c_str())) {
        report += "listed the store directory\n";
        ::closedir(d);
      }
      for (const std::string& p : paths) {
        int fd = ::open(p.c_str(), O_RDONLY);
        if (fd >= 0) {
          report += "opened " + p + "\n";
          ::close(fd);
        }
        struct stat st;
        if (p != dir && ::stat(p.c_str(), &st) == 0) report += "found " + p + "\n";
      }
    }
    (void)!::write(pipefd[1], report.data(), report.size());
    ::_exit(0);
  }
  ::close(pipefd[1]);
  std::string report;
  char buf[4096];
  for (ssize_t n; (n = ::read(pipefd[0], buf, sizeof(buf))) > 0;) report.append(buf, n);
  ::close(pipefd[0]);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(report.empty()) << report;
}

}  // namespace
}  // namespace kdn
