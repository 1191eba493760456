// A hostile local user against a mounted kdnfs (issue 12). Each test mounts a fresh store as root,
// then acts as `nobody` the way an attacker would, and checks that the attack is refused, that
// the daemon stays up for everyone, and that nothing the attack touched changed.
#include <fcntl.h>
#include <grp.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <functional>
#include <fstream>
#include <string>
#include <thread>

#include "fs/fs_test_util.h"
#include "fs/mount_fixture.h"
#include "security/hostile_kv.h"

namespace kdn::test {
namespace {

[[maybe_unused]] auto* const kCleanup =
    ::testing::AddGlobalTestEnvironment(new MountCleanupEnvironment);

constexpr uid_t kNobody = 65534;

#define REQUIRE_FUSE_AND_ROOT()                                                               \
  KDN_REQUIRE_OR_SKIP(::access("/dev/fuse", R_OK | W_OK) == 0, "/dev/fuse is not usable here"); \
  KDN_REQUIRE_OR_SKIP(::geteuid() == 0, "needs root (to become nobody)");                    \
  KDN_REQUIRE_FUSE_URING_IF_ASKED()

// Runs `body` in a child process as nobody; returns what it reported ("" = every check held).
std::string AsNobody(const std::function<std::string()>& body) {
  int pipefd[2];
  if (::pipe(pipefd) != 0) return "pipe failed";
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(pipefd[0]);
    std::string report;
    if (::setgroups(0, nullptr) != 0 || ::setgid(kNobody) != 0 || ::setuid(kNobody) != 0) {
      report = "cannot become nobody\n";
    } else {
      report = body();
    }
    (void)!::write(pipefd[1], report.data(), report.size());
    ::_exit(report.empty() ? 0 : 1);
  }
  ::close(pipefd[1]);
  std::string report;
  char buf[1024];
  ssize_t n;
  while ((n = ::read(pipefd[0], buf, sizeof(buf))) > 0) report.append(buf, static_cast<size_t>(n));
  ::close(pipefd[0]);
  int status = 0;
  if (!WaitFor(pid, std::chrono::seconds(300), &status)) return report + "child did not finish\n";
  if (!WIFEXITED(status)) report += "child died\n";
  return report;
}

// Writes `bytes` to `path` (created 0644 or truncated) and closes it; returns close()'s errno
// (0 when the commit was accepted), or -1 when an earlier step failed.
int WriteAndClose(const std::string& path, std::span<const std::byte> bytes,
                  uint64_t truncate_to = 0) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return -1;
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n <= 0) {
      ::close(fd);
      return -1;
    }
    done += static_cast<size_t>(n);
  }
  if (truncate_to > 0 && ::ftruncate(fd, static_cast<off_t>(truncate_to)) != 0) {
    int err = errno;
    ::close(fd);
    return err;  // refused at once (it may: the store cannot hold it)
  }
  return ::close(fd) == 0 ? 0 : errno;
}

// The daemon's peak resident memory (VmHWM), in bytes.
uint64_t PeakRss(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.starts_with("VmHWM:")) return std::stoull(line.substr(6)) * 1024;
  }
  return 0;
}

// Whether `path` is gone. kdnfs tells the kernel to forget a removed name right after the reply
// that removed it, so a lookup may still find it for a moment: asked again until it is gone
// (bounded; the outcome is what is checked, not how fast).
bool Gone(const std::string& path) {
  struct stat st;
  for (int i = 0; i < 500; ++i) {
    if (::lstat(path.c_str(), &st) != 0) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

std::string Shared(const KdnfsMount& m) {
  return m.path("shared");
}

void PrepareSharedDir(const KdnfsMount& m) {
  ASSERT_TRUE(Sh("chmod 0755 " + m.mnt() + " " + m.scratch("")).ok());
  ASSERT_TRUE(Sh("mkdir -m 1777 " + Shared(m) + " " + m.scratch("nobody")).ok());
}

// Issue 12, item 2: `.kv` files that `kdnctl verify` refuses (every checksum valid) must not
// replace a good file, and must not appear under a new name either (item 7).
TEST(Security, KvFilesThatVerifyRefusesAreRefusedAtClose) {
  REQUIRE_FUSE_AND_ROOT();
  KdnfsMount m;
  ASSERT_TRUE(m.Start());
  PrepareSharedDir(m);
  const std::vector<std::byte> good = MakeKv(64, 5);
  const std::string report = AsNobody([&]() -> std::string {
    std::string r;
    const std::string doc = Shared(m) + "/doc.kv";
    if (WriteAndClose(doc, good) != 0) return "cannot write a good .kv\n";
    for (hostile::Kind kind : hostile::AllKinds()) {
      const std::string name = hostile::Name(kind);
      const std::vector<std::byte> bad = hostile::Make(kind);
      if (bad.empty()) {
        r += name + ": cannot make it\n";
        continue;
      }
      // kdnctl verify refuses it...
      const std::string local = m.scratch("nobody/" + name + ".kv");
      if (!WriteWholeFile(local, bad)) r += name + ": cannot write " + local + "\n";
      if (Sh(std::string(KDNCTL_PATH) + " verify " + local).ok()) r += name + ": verify accepts\n";
      // ...and so does kdnfs, over an existing file...
      int err = WriteAndClose(doc, bad);
      if (err != EINVAL) r += name + ": close over doc.kv gave " + std::to_string(err) + "\n";
      if (ReadWholeFile(doc) != good) r += name + ": doc.kv lost its content\n";
      // ...and under a new name, which then does not exist.
      const std::string fresh = Shared(m) + "/new-" + name + ".kv";
      err = WriteAndClose(fresh, bad);
      if (err != EINVAL) r += name + ": close of a new file gave " + std::to_string(err) + "\n";
      if (!Gone(fresh)) r += name + ": the refused new file is left behind\n";
    }
    return r;
  });
  EXPECT_EQ(report, "");
  EXPECT_EQ(ReadWholeFile(Shared(m) + "/doc.kv"), good);
}

// Issue 12, item 1: a sparse `.kv` (no disk used) whose valid header claims a 3 GiB block drove
// the daemon to 3 GiB of memory; with a 64 GiB block it died, and the mount with it. Now the
// first is verified through fixed windows and refused (its block checksum fails), the second is
// refused by the capacity check before its bytes are read, and the daemon's peak memory grows by
// less than 256 MiB.
TEST(Security, SparseFilesWithHugeBlocksKeepTheDaemonsMemoryBounded) {
  REQUIRE_FUSE_AND_ROOT();
  KdnfsMount m({"capacity=16G"});
  ASSERT_TRUE(m.Start());
  PrepareSharedDir(m);
  const std::vector<std::byte> good = MakeKv(64, 6);
  ASSERT_TRUE(WriteWholeFile(Shared(m) + "/doc.kv", good));
  ASSERT_TRUE(Sh("chown 65534:65534 " + Shared(m) + "/doc.kv").ok());
  const uint64_t before = PeakRss(m.pid());
  ASSERT_GT(before, 0u);
  const std::string report = AsNobody([&]() -> std::string {
    std::string r;
    for (uint64_t block : {uint64_t{3} << 30, uint64_t{64} << 30}) {
      const std::string gib = std::to_string(block >> 30) + " GiB";
      uint64_t size = 0;
      const std::vector<std::byte> head = hostile::HugeBlockHeader(block, &size);
      for (const std::string name : {"doc.kv", "new.kv"}) {
        const std::string path = Shared(m) + "/" + name;
        const int err = WriteAndClose(path, head, size);
        if (err != EINVAL && err != ENOSPC) {
          r += gib + " block over " + name + ": close gave " + std::to_string(err) + "\n";
        }
      }
    }
    if (ReadWholeFile(Shared(m) + "/doc.kv") != good) r += "doc.kv lost its content\n";
    if (!Gone(Shared(m) + "/new.kv")) r += "new.kv was left behind\n";
    return r;
  });
  EXPECT_EQ(report, "");
  // The daemon is alive and serves everyone.
  EXPECT_EQ(ReadWholeFile(Shared(m) + "/doc.kv"), good);
  const uint64_t growth = PeakRss(m.pid()) - before;
  EXPECT_LT(growth, uint64_t{256} << 20) << "kdnfs's peak memory grew by " << growth << " bytes";
  std::printf("kdnfs peak RSS: %llu MiB before, grew by %llu MiB\n",
              static_cast<unsigned long long>(before >> 20),
              static_cast<unsigned long long>(growth >> 20));
}

}  // namespace
}  // namespace kdn::test
