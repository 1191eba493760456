// kdnfs mounted for real: the POSIX behaviour users expect, exercised with the tools they use.
// Each test mounts a fresh store in a temporary directory and always unmounts (mount_fixture.h).
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/fs.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <thread>
#include <future>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "fs_test_util.h"
#include "sha256_util.h"
#include "kdn/kdn.h"
#include "kdn/store.h"
#include "mount_fixture.h"

namespace kdn::test {
namespace {

[[maybe_unused]] auto* const kCleanup =
    ::testing::AddGlobalTestEnvironment(new MountCleanupEnvironment);

bool FuseAvailable() {
  return ::access("/dev/fuse", R_OK | W_OK) == 0;
}

#define REQUIRE_FUSE()                                                  \
  KDN_REQUIRE_OR_SKIP(FuseAvailable(), "/dev/fuse is not usable here"); \
  KDN_REQUIRE_FUSE_URING_IF_ASKED()
#define REQUIRE_ROOT() KDN_REQUIRE_OR_SKIP(::geteuid() == 0, "needs root (setuid to another user)")

// Runs a shell command and fails the test with its output unless it succeeds.
#define SH_OK(cmd)                                         \
  do {                                                     \
    auto r_ = Sh(cmd);                                     \
    ASSERT_EQ(r_.status, 0) << (cmd) << "\n" << r_.output; \
  } while (0)

std::string Out(const std::string& cmd) {
  auto r = Sh(cmd);
  EXPECT_EQ(r.status, 0) << cmd << "\n" << r.output;
  while (!r.output.empty() && r.output.back() == '\n') r.output.pop_back();
  return r.output;
}

struct stat Stat(const std::string& path) {
  struct stat st;
  std::memset(&st, 0, sizeof(st));
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path << ": " << std::strerror(errno);
  return st;
}

// Whether the kernel agreed to FUSE passthrough on this mount (/.kdn/stats).
bool PassthroughOn(const KdnfsMount& m) {
  return Out("awk '$1 == \"passthrough\" {print $2}' " + m.path(".kdn/stats")) == "on";
}

bool Exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

// Whether `path` is gone. The kernel is told to forget a removed name right after the reply
// that removed it, so a lookup may still find it for a moment: asked again until it is gone
// (bounded, not a timing assertion: the outcome is what is checked).
bool Gone(const std::string& path) {
  for (int i = 0; i < 500; ++i) {
    if (!Exists(path)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

// A tree on the local disk: files, a `.kv`, a symlink, modes and times to preserve.
void MakeSourceTree(const std::string& root) {
  ASSERT_TRUE(Sh("mkdir -p " + root + "/sub/deeper").ok());
  ASSERT_TRUE(WriteWholeFile(root + "/README", AsBytes("a knowledge set\n")));
  ASSERT_TRUE(WriteWholeFile(root + "/doc.kv", MakeKv(300, 11)));
  ASSERT_TRUE(WriteWholeFile(root + "/sub/big.bin", PlainBytes(3 << 20, 12)));
  ASSERT_TRUE(WriteWholeFile(root + "/sub/deeper/q4.kv", MakeKv(70, 13, "q4+zstd")));
  ASSERT_TRUE(WriteWholeFile(root + "/sub/empty", {}));
  SH_OK("ln -s ../README " + root + "/sub/readme-link");
  SH_OK("chmod 0640 " + root + "/sub/big.bin && chmod 0700 " + root + "/sub/deeper");
  SH_OK("touch -h -d '2021-02-03 04:05:06' " + root + "/sub/readme-link " + root + "/doc.kv " +
        root + "/sub/big.bin");
}

// Type, mode, mtime, link target of every entry under `root`, and sizes of files. rsync
// updates directory times while its receiver may still be renaming files into them (on ext4 as
// well), so `dir_times` can leave them out.
std::string Listing(const std::string& root, bool dir_times = true) {
  std::string dirs = dir_times ? "'%P %y %m %T@\\n'" : "'%P %y %m\\n'";
  return Out("cd " + root + " && find . \\( -type d -printf " + dirs +
             " \\) -o -printf '%P %y %m %s %T@ %l\\n' | grep -v '^ ' | sort");
}

TEST(KdnfsMount, EverydayToolsWork) {
  REQUIRE_FUSE();
  KdnfsMount m({"capacity=1G"});
  ASSERT_TRUE(m.Start());
  std::string src = m.scratch("src");
  MakeSourceTree(src);

  SH_OK("mkdir -p " + m.path("set/a/b"));
  SH_OK("cp " + src + "/doc.kv " + m.path("set/"));
  SH_OK("cmp " + src + "/doc.kv " + m.path("set/doc.kv"));
  SH_OK("cp -a " + src + " " + m.path("set/copy"));
  EXPECT_EQ(Listing(src), Listing(m.path("set/copy")));
  SH_OK("diff -r " + src + " " + m.path("set/copy"));
  EXPECT_EQ(Stat(m.path("set/copy/sub/big.bin")).st_mode & 07777, 0640u);

  SH_OK("mv " + m.path("set/doc.kv") + " " + m.path("set/a/b/moved.kv"));
  EXPECT_FALSE(Exists(m.path("set/doc.kv")));
  SH_OK("cmp " + src + "/doc.kv " + m.path("set/a/b/moved.kv"));
  SH_OK("ln " + m.path("set/a/b/moved.kv") + " " + m.path("set/hard.kv"));
  EXPECT_EQ(Stat(m.path("set/hard.kv")).st_nlink, 2u);
  EXPECT_EQ(Stat(m.path("set/hard.kv")).st_ino, Stat(m.path("set/a/b/moved.kv")).st_ino);
  SH_OK("ln -s a/b/moved.kv " + m.path("set/soft.kv"));
  EXPECT_EQ(Out("readlink " + m.path("set/soft.kv")), "a/b/moved.kv");
  SH_OK("cmp " + src + "/doc.kv " + m.path("set/soft.kv"));

  EXPECT_EQ(Out("cd " + m.mnt() + " && find set -maxdepth 1 | sort"),
            "set\nset/a\nset/copy\nset/hard.kv\nset/soft.kv");
  EXPECT_EQ(Out("stat -c '%s %h %F' " + m.path("set/copy/sub/empty")), "0 1 regular empty file");
  uint64_t du = std::stoull(Out("du -sk " + m.path("set") + " | cut -f1"));
  EXPECT_GE(du, 3u * 1024) << "du counts the 3 MiB file";
  // df shows the capacity and what is stored.
  auto df = Out("df -B1 --output=size,used " + m.mnt() + " | tail -1");
  std::istringstream dfs(df);
  uint64_t size = 0, used = 0;
  dfs >> size >> used;
  EXPECT_EQ(size, uint64_t{1} << 30) << df;
  EXPECT_GE(used, uint64_t{3} << 20) << df;

  SH_OK("rm -r " + m.path("set/a"));
  EXPECT_FALSE(Exists(m.path("set/a")));
  EXPECT_EQ(Stat(m.path("set/hard.kv")).st_nlink, 1u);
  SH_OK("cmp " + src + "/doc.kv " + m.path("set/hard.kv"));
  EXPECT_NE(Sh("cat " + m.path("set/soft.kv")).status, 0) << "dangling symlink";
  SH_OK("rm -r " + m.path("set"));
  EXPECT_EQ(Out("ls -A " + m.mnt()), "");
}

TEST(KdnfsMount, RsyncTarAndMovesAcrossFilesystems) {
  REQUIRE_FUSE();
  KdnfsMount m;
  ASSERT_TRUE(m.Start());
  std::string src = m.scratch("src");
  MakeSourceTree(src);

  SH_OK("rsync -a " + src + "/ " + m.path("rsynced/"));
  EXPECT_EQ(Listing(src, false), Listing(m.path("rsynced"), false));
  SH_OK("diff -r " + src + " " + m.path("rsynced"));
  // A second run rewrites a changed file through a temp file and a rename.
  ASSERT_TRUE(WriteWholeFile(src + "/README", AsBytes("a knowledge set, revised\n")));
  SH_OK("rsync -a " + src + "/ " + m.path("rsynced/"));
  SH_OK("cmp " + src + "/README " + m.path("rsynced/README"));
  EXPECT_EQ(Out("ls -A " + m.path("rsynced") + " | grep -c '^\\.' || true"), "0")
      << "no temp file left";

  SH_OK("mkdir " + m.path("untarred") + " && tar -C " + src + " --format=posix -cf - . | tar -C " +
        m.path("untarred") + " -xpf -");
  EXPECT_EQ(Listing(src), Listing(m.path("untarred")));
  // And back out of the mount.
  SH_OK("mkdir " + m.scratch("out") + " && tar -C " + m.path("untarred") +
        " --format=posix -cf - . | tar -C " + m.scratch("out") + " -xpf -");
  SH_OK("diff -r " + src + " " + m.scratch("out"));

  // mv across filesystems copies and unlinks, in both directions.
  SH_OK("cp " + src + "/doc.kv " + m.scratch("loose.kv"));
  SH_OK("mv " + m.scratch("loose.kv") + " " + m.path("moved-in.kv"));
  EXPECT_FALSE(Exists(m.scratch("loose.kv")));
  SH_OK("cmp " + src + "/doc.kv " + m.path("moved-in.kv"));
  SH_OK("mv " + m.path("moved-in.kv") + " " + m.scratch("moved-out.kv"));
  EXPECT_FALSE(Exists(m.path("moved-in.kv")));
  SH_OK("cmp " + src + "/doc.kv " + m.scratch("moved-out.kv"));
  SH_OK("mv " + m.path("untarred") + " " + m.scratch("dir-out"));
  SH_OK("diff -r " + src + " " + m.scratch("dir-out"));
}

TEST(KdnfsMount, InvalidKvCopiesAreRefusedAndTheOldFileSurvives) {
  REQUIRE_FUSE();
  KdnfsMount m;
  ASSERT_TRUE(m.Start());
  auto good = MakeKv(300, 21);
  ASSERT_TRUE(WriteWholeFile(m.scratch("good.kv"), good));
  ASSERT_TRUE(WriteWholeFile(m.scratch("corrupt.kv"), CorruptKv(good)));
  ASSERT_TRUE(WriteWholeFile(m.scratch("truncated.kv"), TruncateKv(good, good.size() - 5000)));
  SH_OK("mkdir " + m.path("set") + " && cp " + m.scratch("good.kv") + " " + m.path("set/doc.kv"));

  for (const char* bad : {"corrupt.kv", "truncated.kv"}) {
    auto cp = Sh("cp " + m.scratch(bad) + " " + m.path("set/doc.kv"));
    EXPECT_NE(cp.status, 0) << bad << " was accepted";
    EXPECT_NE(cp.output.find("Invalid argument"), std::string::npos) << cp.output;
    SH_OK("cmp " + m.scratch("good.kv") + " " + m.path("set/doc.kv"));
    // A new name is refused just as well, and removed: no empty `.kv` stays in the set.
    auto fresh = Sh("cp " + m.scratch(bad) + " " + m.path(std::string("set/new-") + bad));
    EXPECT_NE(fresh.status, 0);
    EXPECT_TRUE(Gone(m.path(std::string("set/new-") + bad)));
  }
  // Reads after the refusal come from the store again, not from the kernel's cached pages.
  EXPECT_EQ(ReadWholeFile(m.path("set/doc.kv")), good);
  std::string log = m.log();
  EXPECT_NE(log.find("refused /set/doc.kv"), std::string::npos) << log;
  EXPECT_NE(log.find("layer"), std::string::npos) << log;
  EXPECT_NE(log.find("truncated"), std::string::npos) << log;
  // The stats count the refusals.
  EXPECT_EQ(Out("grep '^refused_kv ' " + m.path(".kdn/stats")), "refused_kv 4");
}

TEST(KdnfsMount, AttributesThroughGetfattrAndSetfattr) {
  REQUIRE_FUSE();
  KdnfsMount m;
  ASSERT_TRUE(m.Start());
  auto kv = MakeKv(512, 31, "q8");
  SH_OK("mkdir -p " + m.path("set"));
  ASSERT_TRUE(WriteWholeFile(m.path("set/doc.kv"), kv));
  std::string all = Out("getfattr --absolute-names -d " + m.path("set/doc.kv"));
  for (const char* want : {"user.kdn.model=\"stories260K\"", "user.kdn.tokens=\"512\"",
                           "user.kdn.codec=\"q8\"", "user.kdn.layers=\"5\"", "user.kdn.id=",
                           "user.kdn.fingerprint=", "user.kdn.raw_bytes="}) {
    EXPECT_NE(all.find(want), std::string::npos) << want << " missing from\n" << all;
  }
  EXPECT_EQ(Out("getfattr --absolute-names --only-values -n user.kdn.id " + m.path("set/doc.kv")),
            test::Sha256Hex(kv));

  // Gone: it named store files for engines to read behind the mount's back.
  EXPECT_EQ(all.find("user.kdn.extents"), std::string::npos) << all;
  EXPECT_NE(Sh("getfattr -n user.kdn.extents " + m.path("set/doc.kv")).status, 0);

  SH_OK("setfattr -n user.source -v wiki-2024 " + m.path("set/doc.kv"));
  EXPECT_EQ(Out("getfattr --absolute-names --only-values -n user.source " + m.path("set/doc.kv")),
            "wiki-2024");
  auto ro = Sh("setfattr -n user.kdn.model -v other " + m.path("set/doc.kv"));
  EXPECT_NE(ro.status, 0);
  EXPECT_NE(ro.output.find("Operation not permitted"), std::string::npos) << ro.output;
  SH_OK("setfattr -x user.source " + m.path("set/doc.kv"));
  EXPECT_NE(Sh("getfattr -n user.source " + m.path("set/doc.kv")).status, 0);

  SH_OK("setfattr -n user.kdn.evictable -v 1 " + m.path("set"));
  SH_OK("cp " + m.path("set/doc.kv") + " " + m.path("set/later.kv"));
  EXPECT_EQ(Out("getfattr --absolute-names --only-values -n user.kdn.evictable " +
                m.path("set/later.kv")),
            "1");
  SH_OK("setfattr -n user.kdn.pin -v 1 " + m.path("set/later.kv"));
  EXPECT_EQ(
      Out("getfattr --absolute-names --only-values -n user.kdn.pin " + m.path("set/later.kv")),
      "1");
  // Attributes travel with cp -a and rsync -aX.
  SH_OK("setfattr -n user.note -v kept " + m.path("set/doc.kv"));
  SH_OK("cp -a " + m.path("set/doc.kv") + " " + m.scratch("out.kv"));
  EXPECT_EQ(Out("getfattr --absolute-names --only-values -n user.note " + m.scratch("out.kv")),
            "kept");
}

// Failed requests are counted per operation and errno in /.kdn/stats (RequestOutcomes).
TEST(KdnfsMount, FailedRequestsAreCountedInStats) {
  REQUIRE_FUSE();
  KdnfsMount m;
  ASSERT_TRUE(m.Start());
  SH_OK("mkdir -p " + m.path("full/child"));
  EXPECT_NE(Sh("rmdir " + m.path("full")).status, 0);
  EXPECT_NE(Sh("getfattr --absolute-names -n user.nothing " + m.path("full")).status, 0);
  auto count = [&](const std::string& name) {
    return Out("awk '$1 == \"" + name + "\" {print $2}' " + m.path(".kdn/stats"));
  };
  EXPECT_EQ(count("fuse.rmdir.ENOTEMPTY"), "1");
  EXPECT_EQ(count("fuse.getxattr.ENODATA"), "1");
  EXPECT_EQ(count("fuse.mkdir.ok"), "2");
}

TEST(KdnfsMount, ControlFilesAreHiddenButReachable) {
  REQUIRE_FUSE();
  KdnfsMount m;
  ASSERT_TRUE(m.Start());
  auto kv = MakeKv(600, 41);
  auto header = ParseKvHeader(kv, kv.size());
  ASSERT_TRUE(header.ok());
  SH_OK("mkdir " + m.path("set"));
  ASSERT_TRUE(WriteWholeFile(m.path("set/doc.kv"), kv));

  EXPECT_EQ(Out("ls -A " + m.mnt()), "set");
  std::string stats = Out("cat " + m.path(".kdn/stats"));
  EXPECT_NE(stats.find("\nfiles 1\n"), std::string::npos) << stats;
  EXPECT_NE(stats.find("\nkv_chunks 1\n"), std::string::npos) << stats;
  // A fresh snapshot at every open.
  SH_OK("cp " + m.path("set/doc.kv") + " " + m.path("set/other.kv"));
  SH_OK("echo extra > " + m.path("set/notes.txt"));
  EXPECT_NE(Out("cat " + m.path(".kdn/stats")).find("\nfiles 3\n"), std::string::npos);

  // One stat in the set finds the file that holds a prefix; the store-wide lookup is gone.
  std::string link = m.path("set/.kdn-prefix/" + header->prefix_hashes[1].ToHex());
  EXPECT_EQ(static_cast<size_t>(Stat(link).st_size), kv.size());
  std::string target = Out("readlink " + link);
  EXPECT_TRUE(target == "../doc.kv" || target == "../other.kv") << target;
  SH_OK("cmp " + link + " " + m.path("set/doc.kv"));
  EXPECT_FALSE(Exists(m.path(".kdn/prefix")));
  EXPECT_EQ(Out("ls -A " + m.path("set")), "doc.kv\nnotes.txt\nother.kv");
  std::string id =
      Out("getfattr --absolute-names --only-values -n user.kdn.id " + m.path("set/notes.txt"));
  EXPECT_EQ(Out("readlink " + m.path(".kdn/by-id/" + id)), "../../set/notes.txt");
  EXPECT_FALSE(Exists(m.path("set/.kdn-prefix/" + std::string(32, 'a'))));
  EXPECT_GE(std::stoull(Out("awk '$1 == \"prefix_hits\" {print $2}' " + m.path(".kdn/stats"))), 1u);
  EXPECT_NE(Sh("touch " + m.path(".kdn/new")).status, 0);
  EXPECT_NE(Sh("rm " + m.path(".kdn/stats")).status, 0);
}

// The syscalls tools make, one by one.
TEST(KdnfsMount, TruncateAppendMmapAndUnlinkWhileOpen) {
  REQUIRE_FUSE();
  KdnfsMount m;
  ASSERT_TRUE(m.Start());
  std::string f = m.path("f");
  ASSERT_TRUE(WriteWholeFile(f, AsBytes("0123456789")));
  SH_OK("echo -n abc >> " + f);
  EXPECT_EQ(Out("cat " + f), "0123456789abc");
  SH_OK("truncate -s 4 " + f);
  EXPECT_EQ(Out("cat " + f), "0123");
  ASSERT_EQ(::truncate(f.c_str(), 2), 0);  // truncate(2) on a path: no close follows
  EXPECT_EQ(Stat(f).st_size, 2);
  EXPECT_EQ(Out("cat " + f), "01");
  SH_OK("echo -n xyz > " + f);  // O_TRUNC
  EXPECT_EQ(Out("cat " + f), "xyz");

  {  // pwrite in the middle, read back through another descriptor before and after close
    int fd = ::open(f.c_str(), O_RDWR);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::pwrite(fd, "Y", 1, 1), 1);
    // Other openers see the committed bytes until the writer commits (issue 12, item 5; with
    // passthrough, where kdnfs knows which open a READ comes from).
    if (PassthroughOn(m)) {
      EXPECT_EQ(Out("cat " + f), "xyz") << "a reader saw uncommitted bytes";
    }
    ASSERT_EQ(::fsync(fd), 0);  // commits
    ASSERT_EQ(::close(fd), 0);
    EXPECT_EQ(Out("cat " + f), "xYz");
  }
  {  // mmap of a committed file
    auto data = PlainBytes(5 << 20, 51);
    ASSERT_TRUE(WriteWholeFile(m.path("mapped"), data));
    int fd = ::open(m.path("mapped").c_str(), O_RDONLY);
    ASSERT_GE(fd, 0);
    void* p = ::mmap(nullptr, data.size(), PROT_READ, MAP_SHARED, fd, 0);
    ASSERT_NE(p, MAP_FAILED) << std::strerror(errno);
    EXPECT_EQ(std::memcmp(p, data.data(), data.size()), 0);
    ::munmap(p, data.size());
    ::close(fd);
  }
  {  // an unlinked file stays readable through an open descriptor
    auto data = PlainBytes(300 << 10, 52);
    ASSERT_TRUE(WriteWholeFile(m.path("doomed"), data));
    SH_OK("echo 3 > /proc/sys/vm/drop_caches || true");
    int fd = ::open(m.path("doomed").c_str(), O_RDONLY);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::unlink(m.path("doomed").c_str()), 0);
    EXPECT_FALSE(Exists(m.path("doomed")));
    std::vector<std::byte> back(data.size());
    EXPECT_EQ(::pread(fd, back.data(), back.size(), 0), static_cast<ssize_t>(back.size()));
    EXPECT_EQ(back, data);
    ::close(fd);
  }
  {  // rename(2) flags
    ASSERT_TRUE(WriteWholeFile(m.path("x"), AsBytes("X")));
    ASSERT_TRUE(WriteWholeFile(m.path("y"), AsBytes("Y")));
    EXPECT_EQ(syscall(SYS_renameat2, AT_FDCWD, m.path("x").c_str(), AT_FDCWD, m.path("y").c_str(),
                      RENAME_NOREPLACE),
              -1);
    EXPECT_EQ(errno, EEXIST);
    ASSERT_EQ(syscall(SYS_renameat2, AT_FDCWD, m.path("x").c_str(), AT_FDCWD, m.path("y").c_str(),
                      RENAME_EXCHANGE),
              0);
    EXPECT_EQ(Out("cat " + m.path("x") + " " + m.path("y")), "YX");
    ASSERT_EQ(::rename(m.path("x").c_str(), m.path("y").c_str()), 0);
    EXPECT_EQ(Out("cat " + m.path("y")), "Y");
  }
  {  // chmod, chown, utimens
    SH_OK("chmod 0600 " + f + " && chown 123:456 " + f + " && touch -d '2020-01-01 00:00:00' " + f);
    struct stat st = Stat(f);
    EXPECT_EQ(st.st_mode & 07777, 0600u);
    EXPECT_EQ(st.st_uid, 123u);
    EXPECT_EQ(st.st_gid, 456u);
    EXPECT_EQ(Out("date -u -d @" + std::to_string(st.st_mtime) + " +%Y"), "2020");
  }
}

TEST(KdnfsMount, AKnowledgeSetOfAThousandFiles) {
  REQUIRE_FUSE();
  KdnfsMount m;
  ASSERT_TRUE(m.Start());
  std::string src = m.scratch("set");
  ASSERT_TRUE(Sh("mkdir -p " + src).ok());
  auto kv = MakeKv(8, 61);
  auto header = ParseKvHeader(kv, kv.size());
  ASSERT_TRUE(header.ok());
  for (int i = 0; i < 1000; ++i) {
    // Distinct files: each a valid `.kv` of its own tokens.
    auto file = MakeKv(8 + (i % 7), 1000 + i);
    char name[32];
    std::snprintf(name, sizeof(name), "/chunk-%04d.kv", i);
    ASSERT_TRUE(WriteWholeFile(src + name, file));
  }
  SH_OK("cp -r " + src + " " + m.path("set"));
  EXPECT_EQ(Out("find " + m.path("set") + " -type f | wc -l"), "1000");
  EXPECT_EQ(Out("ls " + m.path("set") + " | wc -l"), "1000");
  SH_OK("diff -r " + src + " " + m.path("set"));
  auto bytes = [](const std::string& dir) {
    return Out("find " + dir + " -type f -printf '%s\\n' | awk '{s += $1} END {print s}'");
  };
  EXPECT_EQ(bytes(src), bytes(m.path("set")));
  EXPECT_GE(std::stoull(Out("du -sk " + m.path("set") + " | cut -f1")), 44000u);
  EXPECT_NE(Out("cat " + m.path(".kdn/stats")).find("\nkv_chunks 1000\n"), std::string::npos);
  // A second set sharing every chunk through hard links costs no space.
  std::string used_before = Out("df -B1 --output=used " + m.mnt() + " | tail -1");
  SH_OK("cp -al " + m.path("set") + " " + m.path("set-v2"));
  EXPECT_EQ(Out("df -B1 --output=used " + m.mnt() + " | tail -1"), used_before);
  SH_OK("rm -r " + m.path("set"));
  EXPECT_EQ(Out("find " + m.path("set-v2") + " -type f | wc -l"), "1000");
  SH_OK("rm -r " + m.path("set-v2"));
}

// Several processes at once: writers of their own files, readers of committed files and of a
// file while it is being written (their close must neither fail nor commit someone's half).
TEST(KdnfsMount, ConcurrentReadersAndWriters) {
  REQUIRE_FUSE();
  KdnfsMount m;
  ASSERT_TRUE(m.Start());
  constexpr int kWriters = 4, kReaders = 4, kFilesPerWriter = 12;
  std::vector<std::vector<std::byte>> shared;
  for (int i = 0; i < 4; ++i) {
    shared.push_back(i % 2 ? MakeKv(200 + i, 70 + i) : PlainBytes((1 << 20) + i * 777, 70 + i));
    ASSERT_TRUE(WriteWholeFile(m.path("shared-" + std::to_string(i)), shared.back()));
  }
  auto content = [](int w, int f) {
    return f % 3 == 0 ? MakeKv(64 + f, 100 * w + f)
                      : PlainBytes((w + 1) * 40000 + f * 1000, 100 * w + f);
  };
  std::vector<pid_t> children;
  for (int w = 0; w < kWriters; ++w) {
    pid_t pid = ::fork();
    if (pid == 0) {
      int failures = 0;
      for (int f = 0; f < kFilesPerWriter; ++f) {
        auto data = content(w, f);
        std::string path = m.path("w" + std::to_string(w) + "-" + std::to_string(f));
        int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0) {
          ++failures;
          continue;
        }
        // Written in pieces, so that readers find it half done.
        for (size_t off = 0; off < data.size(); off += 16384) {
          size_t n = std::min<size_t>(16384, data.size() - off);
          if (::pwrite(fd, data.data() + off, n, static_cast<off_t>(off)) !=
              static_cast<ssize_t>(n))
            ++failures;
        }
        if (::close(fd) != 0) ++failures;
      }
      ::_exit(failures);
    }
    children.push_back(pid);
  }
  for (int r = 0; r < kReaders; ++r) {
    pid_t pid = ::fork();
    if (pid == 0) {
      int failures = 0;
      std::vector<std::byte> buf(4 << 20);
      for (int round = 0; round < 40; ++round) {
        int i = (round + r) % 4;
        int fd = ::open(m.path("shared-" + std::to_string(i)).c_str(), O_RDONLY);
        if (fd < 0) {
          ++failures;
          continue;
        }
        ssize_t n = ::read(fd, buf.data(), buf.size());
        if (n != static_cast<ssize_t>(shared[i].size()) ||
            std::memcmp(buf.data(), shared[i].data(), shared[i].size()) != 0)
          ++failures;
        if (::close(fd) != 0) ++failures;
        // Files being written: readable, and closing them is not their writer's close.
        int wfd = ::open(
            m.path("w" + std::to_string(r) + "-" + std::to_string(round % kFilesPerWriter)).c_str(),
            O_RDONLY);
        if (wfd >= 0) {
          (void)!::read(wfd, buf.data(), buf.size());
          if (::close(wfd) != 0) ++failures;
        }
      }
      ::_exit(failures);
    }
    children.push_back(pid);
  }
  for (pid_t pid : children) {
    int status = 0;
    ASSERT_TRUE(WaitFor(pid, std::chrono::seconds(120), &status));
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << "child " << pid << " status " << status;
  }
  for (int w = 0; w < kWriters; ++w) {
    for (int f = 0; f < kFilesPerWriter; ++f) {
      EXPECT_EQ(ReadWholeFile(m.path("w" + std::to_string(w) + "-" + std::to_string(f))),
                content(w, f))
          << w << "-" << f;
    }
  }
  EXPECT_EQ(Out("grep -E '^(refused_kv|commit_errors|staged_files) ' " + m.path(".kdn/stats")),
            "refused_kv 0\ncommit_errors 0\nstaged_files 0");
}

// kill -9 of the daemon in the middle of copying many files; after a restart every file whose
// copy finished is intact, no file holds part of its content, and the store is sound.
TEST(KdnfsMount, KillDuringCopyLosesNoFinishedFile) {
  REQUIRE_FUSE();
  KdnfsMount m;
  ASSERT_TRUE(m.Start());
  std::string src = m.scratch("src");
  ASSERT_TRUE(Sh("mkdir -p " + src).ok());
  std::map<std::string, std::vector<std::byte>> files;
  for (int i = 0; i < 400; ++i) {
    char name[32];
    std::snprintf(name, sizeof(name), "f%03d%s", i, i % 2 ? ".kv" : ".bin");
    files[name] = i % 2 ? MakeKv(100 + i, 500 + i) : PlainBytes(64 * 1024 + i * 100, 500 + i);
    ASSERT_TRUE(WriteWholeFile(src + "/" + name, files[name]));
  }
  SH_OK("mkdir " + m.path("set"));
  std::string done = m.scratch("done.txt");
  // One cp per file, so that the log says exactly which copies completed.
  std::string script = "for f in " + src + "/*; do cp \"$f\" " + m.path("set/") +
                       " && basename \"$f\" >> " + done + " || exit 1; done";
  pid_t copier = Spawn({"/bin/sh", "-c", script}, m.scratch("copier.log"));
  ASSERT_GT(copier, 0);
  auto lines = [&done] {
    std::ifstream in(done);
    return std::count(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>(), '\n');
  };
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (lines() < 60 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_GE(lines(), 60) << "the copy did not progress";
  m.Kill9();
  int status;
  ASSERT_TRUE(WaitFor(copier, std::chrono::seconds(60), &status));
  EXPECT_NE(WEXITSTATUS(status), 0) << "the copy should have failed with the daemon gone";
  struct statfs sf;
  EXPECT_EQ(::statfs(m.mnt().c_str(), &sf), -1);
  // ECONNABORTED: a request that reached a dead daemon's io_uring queue before the kernel had
  // torn the queues down.
  EXPECT_TRUE(errno == ENOTCONN || errno == ECONNABORTED) << std::strerror(errno);

  ASSERT_TRUE(m.Start()) << "restart on the stale mountpoint";
  EXPECT_NE(m.log().find("stale mount"), std::string::npos);
  std::set<std::string> completed;
  std::ifstream in(done);
  for (std::string name; std::getline(in, name);) completed.insert(name);
  ASSERT_GE(completed.size(), 60u);
  for (const auto& name : completed) {
    EXPECT_EQ(ReadWholeFile(m.path("set/" + name)), files[name]) << name;
  }
  // The copy in flight when the daemon died: either finished (its log line was not written
  // yet) or its name exists (created) with none of its bytes. Never a part of them.
  size_t complete = 0, empty = 0;
  for (const auto& [name, bytes] : files) {
    if (!Exists(m.path("set/" + name))) continue;
    auto got = ReadWholeFile(m.path("set/" + name));
    if (got == bytes) {
      ++complete;
    } else {
      ++empty;
      EXPECT_TRUE(got.empty()) << name << " holds " << got.size() << " of " << bytes.size()
                               << " bytes";
    }
  }
  EXPECT_GE(complete, completed.size());
  EXPECT_LE(complete + empty, completed.size() + 2);
  m.Stop();
  auto fsck = Sh(std::string(KDNCTL_PATH) + " fsck " + m.store());
  EXPECT_EQ(fsck.status, 0) << fsck.output;
  auto report = Store::Fsck(m.store());
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  std::string problems;
  for (const auto& p : report->problems) problems += p + "\n";
  EXPECT_TRUE(report->clean()) << problems;
  EXPECT_EQ(report->chunks, complete);
}

// The durability promised in fs/kdnfs/README.md: a change that returned survives kill -9 of the
// daemon at once, with no log sync (the background sync is an hour away here), and fsync of a
// file or of a directory makes every earlier change durable against power loss (the log synced:
// `unsynced_changes 0` in /.kdn/stats; a power loss itself cannot be simulated here).
TEST(KdnfsMount, ChangesSurviveKill9AtOnceAndFsyncMakesThemDurable) {
  REQUIRE_FUSE();
  KdnfsMount m({"commit=3600000"});
  ASSERT_TRUE(m.Start());
  auto unsynced = [&m] {
    return Out("grep '^unsynced_changes ' " + m.path(".kdn/stats") + " | cut -d' ' -f2");
  };
  SH_OK("mkdir " + m.path("d"));
  for (int i = 0; i < 50; ++i) {
    ASSERT_TRUE(WriteWholeFile(m.path("d/f" + std::to_string(i)), {})) << i;
  }
  ASSERT_NE(unsynced(), "0") << "the creates should wait for a sync";
  int dir_fd = ::open(m.path("d").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(dir_fd, 0);
  EXPECT_EQ(::fsync(dir_fd), 0) << std::strerror(errno);
  ::close(dir_fd);
  EXPECT_EQ(unsynced(), "0") << "fsync of a directory";

  std::vector<std::byte> content = PlainBytes(3000, 7);
  int fd = ::open(m.path("d/written").c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::write(fd, content.data(), content.size()), static_cast<ssize_t>(content.size()));
  EXPECT_EQ(::fdatasync(fd), 0) << std::strerror(errno);
  EXPECT_EQ(unsynced(), "0") << "fdatasync of a file";
  ::close(fd);

  // Every kind of change, then kill -9 right away: none of them has been synced.
  for (int i = 0; i < 200; ++i) {
    ASSERT_TRUE(WriteWholeFile(m.path("d/g" + std::to_string(i)), {})) << i;
  }
  ASSERT_TRUE(WriteWholeFile(m.path("d/small"), AsBytes("small content\n")));
  SH_OK("mkdir -p " + m.path("d/sub/deeper"));
  SH_OK("mv " + m.path("d/f0") + " " + m.path("d/sub/moved"));
  SH_OK("rm " + m.path("d/f1") + " && rmdir " + m.path("d/sub/deeper"));
  SH_OK("ln -s small " + m.path("d/link") + " && ln " + m.path("d/f2") + " " + m.path("d/hard"));
  SH_OK("chmod 0600 " + m.path("d/f3") + " && setfattr -n user.note -v kept " + m.path("d/f4"));
  SH_OK("touch -d '2020-01-02 03:04:05' " + m.path("d/f5"));
  const std::string before = Listing(m.path("d"));
  ASSERT_NE(unsynced(), "0");
  m.Kill9();

  ASSERT_TRUE(m.Start()) << "restart on the stale mountpoint";
  EXPECT_EQ(Listing(m.path("d")), before);
  EXPECT_EQ(ReadWholeFile(m.path("d/written")), content);
  EXPECT_EQ(Out("cat " + m.path("d/small")), "small content");
  EXPECT_EQ(Out("getfattr --absolute-names --only-values -n user.note " + m.path("d/f4")), "kept");
  EXPECT_EQ(Stat(m.path("d/f2")).st_nlink, 2u);
  m.Stop();
  auto report = Store::Fsck(m.store());
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_TRUE(report->clean());
}

// What one user may do to another's files: the kernel checks modes (default_permissions), kdnfs
// sets owners and setgid inheritance.
// Two processes append records with open/write/close each (bash >>) while a third stats the
// file: no record is lost.
TEST(KdnfsMount, ConcurrentAppendsLoseNoRecord) {
  REQUIRE_FUSE();
  KdnfsMount m;
  ASSERT_TRUE(m.Start());
  constexpr int kRecords = 1000;
  const std::string log = m.path("log");
  SH_OK(": > " + log);
  std::atomic<bool> done{false};
  std::atomic<int> regressions{0};
  std::thread watcher([&] {
    off_t last = 0;
    while (!done.load()) {
      struct stat st;
      if (::stat(log.c_str(), &st) != 0) continue;
      if (st.st_size < last) ++regressions;
      last = std::max(last, st.st_size);
    }
  });
  const std::string loop = "for i in $(seq " + std::to_string(kRecords) + "); do echo \"$W $i\" >> " +
                           log + "; done";
  auto a = std::async(std::launch::async, [&] { return Sh("W=a; " + loop); });
  auto b = std::async(std::launch::async, [&] { return Sh("W=b; " + loop); });
  EXPECT_TRUE(a.get().ok());
  EXPECT_TRUE(b.get().ok());
  done = true;
  watcher.join();
  EXPECT_EQ(Out("wc -l < " + log), std::to_string(2 * kRecords));
  EXPECT_EQ(Out("grep -c '^a ' " + log), std::to_string(kRecords));
  EXPECT_EQ(Out("grep -c '^b ' " + log), std::to_string(kRecords));
  // kdnfs's own answers never go back (FilesystemTest.SizesNeverGoBackWhileAppendsCommit), but
  // the kernel's view still can, by one record (fs/kdnfs/README.md, "Sizes never go back"):
  // counted, not asserted, until that is understood.
  std::printf("stat saw the size go back %d times\n", regressions.load());
}

// kill -9 of the daemon while a new file is being written: after the restart the file is not
// there (it never had content), files that were complete are.
TEST(KdnfsMount, ACrashLeavesNoEmptyNewFile) {
  REQUIRE_FUSE();
  KdnfsMount m;
  ASSERT_TRUE(m.Start());
  auto good = MakeKv(300, 31);
  ASSERT_TRUE(WriteWholeFile(m.path("done.kv"), good));
  SH_OK("touch " + m.path("empty"));
  int fd = ::open(m.path("copying.kv").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::write(fd, good.data(), 8192), 8192);
  m.Kill9();
  ::close(fd);
  m.Stop();
  ASSERT_TRUE(m.Start());
  EXPECT_FALSE(Exists(m.path("copying.kv")));
  EXPECT_EQ(ReadWholeFile(m.path("done.kv")), good);
  EXPECT_TRUE(Exists(m.path("empty")));
}

TEST(KdnfsMount, PermissionsBetweenUsers) {
  REQUIRE_FUSE();
  REQUIRE_ROOT();
  KdnfsMount m;
  ASSERT_TRUE(m.Start());
  SH_OK("chmod 0755 " + m.mnt());
  SH_OK("mkdir -m 0700 " + m.path("private") + " && mkdir -m 0755 " + m.path("public") +
        " && mkdir -m 1777 " + m.path("shared") + " && mkdir -m 2777 " + m.path("group") +
        " && chgrp 100 " + m.path("group"));
  SH_OK("echo root > " + m.path("public/root.txt") + " && echo root > " +
        m.path("shared/root.txt"));
  // The test's temporary directory must be traversable by the other user.
  SH_OK("chmod 0755 " + m.scratch(""));

  constexpr uid_t kNobody = 65534;
  int pipefd[2];
  ASSERT_EQ(::pipe(pipefd), 0);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(pipefd[0]);
    std::string report;
    auto check = [&report](bool ok, const std::string& what) {
      if (!ok) report += what + " (errno " + std::strerror(errno) + ")\n";
    };
    if (::setgroups(0, nullptr) != 0 || ::setgid(kNobody) != 0 || ::setuid(kNobody) != 0) {
      report = "cannot become nobody\n";
    } else {
      errno = 0;
      check(::open(m.path("private/x").c_str(), O_CREAT | O_WRONLY, 0644) < 0 && errno == EACCES,
            "create in a 0700 directory of root");
      check(::access(m.path("public/root.txt").c_str(), R_OK) == 0, "read a 0644 file");
      check(::open(m.path("public/root.txt").c_str(), O_WRONLY) < 0 && errno == EACCES,
            "write root's 0644 file");
      check(::unlink(m.path("public/root.txt").c_str()) < 0 && errno == EACCES,
            "unlink in root's 0755 directory");
      check(::chmod(m.path("public/root.txt").c_str(), 0666) < 0 && errno == EPERM,
            "chmod of root's file");
      check(::setxattr(m.path("public/root.txt").c_str(), "user.x", "1", 1, 0) < 0 &&
                (errno == EACCES || errno == EPERM),
            "setxattr on root's file");
      int fd = ::open(m.path("shared/mine.txt").c_str(), O_CREAT | O_WRONLY, 0644);
      check(fd >= 0 && ::write(fd, "mine", 4) == 4 && ::close(fd) == 0,
            "create in a 1777 directory");
      struct stat st;
      check(::stat(m.path("shared/mine.txt").c_str(), &st) == 0 && st.st_uid == kNobody &&
                st.st_gid == kNobody,
            "new files belong to their creator");
      check(::unlink(m.path("shared/root.txt").c_str()) < 0 && errno == EPERM,
            "unlink of root's file in a sticky directory");
      check(::rename(m.path("shared/root.txt").c_str(), m.path("shared/stolen").c_str()) < 0 &&
                errno == EPERM,
            "rename of root's file in a sticky directory");
      fd = ::open(m.path("group/g.txt").c_str(), O_CREAT | O_WRONLY, 0644);
      check(fd >= 0 && ::close(fd) == 0, "create in a setgid 2777 directory");
      check(::stat(m.path("group/g.txt").c_str(), &st) == 0 && st.st_gid == 100,
            "the setgid directory's group");
      check(::mkdir(m.path("group/sub").c_str(), 0755) == 0 &&
                ::stat(m.path("group/sub").c_str(), &st) == 0 && (st.st_mode & S_ISGID) &&
                st.st_gid == 100,
            "subdirectories of a setgid directory are setgid");
      check(::unlink(m.path("shared/mine.txt").c_str()) == 0, "unlink of one's own file");
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
  ASSERT_TRUE(WaitFor(pid, std::chrono::seconds(60), &status));
  EXPECT_EQ(report, "");
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_EQ(Out("cat " + m.path("shared/root.txt")), "root");
}

// Runs `command` (no single quotes in it) as nobody: uid and gid 65534, no other groups.
CommandResult AsNobody(const std::string& command) {
  return Sh("setpriv --reuid=65534 --regid=65534 --clear-groups -- sh -c '" + command + "'");
}

kdn_model_desc DescOf(const ModelIdentity& m) {
  kdn_model_desc d{};
  d.name = m.name.c_str();
  d.n_layers = m.n_layers;
  d.n_heads = m.n_heads;
  d.n_kv_heads = m.n_kv_heads;
  d.head_dim = m.head_dim;
  d.dtype = static_cast<kdn_dtype>(m.dtype);
  d.rope_style = static_cast<kdn_rope_style>(m.rope_style);
  d.rotary_dim = m.rotary_dim;
  d.rope_theta = m.rope_theta;
  d.rope_scale = m.rope_scale;
  return d;
}

// Issue 17 as two users: A (root) and B (nobody). B stores caches of A's prompt prefix with other
// values; A's engine (kdn_find_prefix, and a plain stat of <set>/.kdn-prefix/<hash>) is never
// handed one unless A's set trusts B.
TEST(KdnfsMount, PrefixLookupsNeverHandOutAnotherTenantsCache) {
  REQUIRE_FUSE();
  REQUIRE_ROOT();
  KdnfsMount m;
  ASSERT_TRUE(m.Start());
  SH_OK("chmod 0755 " + m.mnt() + " " + m.scratch(""));
  // A's set `a` may be written by B; B owns set `b`.
  SH_OK("mkdir -m 0777 " + m.path("a") + " && mkdir " + m.path("b") + " && chown 65534:65534 " +
        m.path("b"));
  const ModelIdentity model = *ModelPreset("tiny");
  const kdn_model_desc desc = DescOf(model);
  const std::vector<uint32_t> prompt = PromptTokens(600, 3);
  const std::vector<Hash128> chain = PrefixHashes(model.Fingerprint(), prompt, kDefaultChunkTokens);
  ASSERT_EQ(chain.size(), 3u);
  ASSERT_TRUE(WriteWholeFile(m.scratch("forged.kv"), MakeKvOver(prompt, 666)));
  ASSERT_TRUE(WriteWholeFile(m.scratch("mine.kv"), MakeKvOver(prompt, 1)));
  SH_OK("chmod 0644 " + m.scratch("forged.kv"));
  auto r = AsNobody("cp " + m.scratch("forged.kv") + " " + m.path("a/0-b.kv") + " && cp " +
                    m.scratch("forged.kv") + " " + m.path("b/b.kv"));
  ASSERT_EQ(r.status, 0) << r.output;
  ASSERT_EQ(Stat(m.path("a/0-b.kv")).st_uid, 65534u);

  // A's engine lookup: "path tokens", or the status name.
  auto find = [&](const std::string& set) {
    char path[4096];
    uint32_t n = 0;
    kdn_status s = kdn_find_prefix(m.path(set).c_str(), &desc, prompt.data(),
                                   static_cast<uint32_t>(prompt.size()), 0, path, sizeof path, &n);
    if (s != KDN_OK) return std::string(kdn_status_name(s));
    std::string p = path;
    if (p.starts_with(m.mnt() + "/")) p = p.substr(m.mnt().size() + 1);
    return p + " " + std::to_string(n);
  };
  auto reaches = [&](const std::string& set, const Hash128& h) {
    return Exists(m.path(set + "/.kdn-prefix/" + h.ToHex())) &&
           ::access(m.path(set + "/.kdn-prefix/" + h.ToHex()).c_str(), F_OK) == 0;
  };

  EXPECT_EQ(find("a"), "KDN_E_NOT_FOUND") << "A has not listed B";
  for (const Hash128& h : chain) EXPECT_FALSE(reaches("a", h));
  EXPECT_EQ(find("b"), "b/b.kv 600") << "B's own set trusts B";
  // A's own cache is found, and one stat of the virtual name reaches it.
  SH_OK("cp " + m.scratch("mine.kv") + " " + m.path("a/a.kv"));
  EXPECT_EQ(find("a"), "a/a.kv 600");
  EXPECT_EQ(Out("readlink " + m.path("a/.kdn-prefix/" + chain[2].ToHex())), "../a.kv");
  SH_OK("cmp " + m.path("a/.kdn-prefix/" + chain[0].ToHex()) + " " + m.scratch("mine.kv"));
  // B may write A's set but not decide whom it trusts.
  r = AsNobody("setfattr -n user.kdn.trust -v 65534 " + m.path("a"));
  EXPECT_NE(r.status, 0) << r.output;
  SH_OK("rm " + m.path("a/a.kv"));
  EXPECT_EQ(find("a"), "KDN_E_NOT_FOUND");
  // Once A lists B, B's cache in A's set is answered.
  SH_OK("setfattr -n user.kdn.trust -v 65534 " + m.path("a"));
  EXPECT_EQ(Out("getfattr --absolute-names --only-values -n user.kdn.trust " + m.path("a")),
            "65534");
  EXPECT_EQ(find("a"), "a/0-b.kv 600");
  SH_OK("setfattr -x user.kdn.trust " + m.path("a"));
  EXPECT_EQ(find("a"), "KDN_E_NOT_FOUND");

  // A file the prefix index claims holds A's prefix, whose tokens are others, is never answered.
  const std::vector<uint32_t> other = PromptTokens(300, 99);
  const auto other_chain = PrefixHashes(model.Fingerprint(), other, kDefaultChunkTokens);
  SH_OK("mkdir " + m.path("c"));
  ASSERT_TRUE(WriteWholeFile(m.path("c/other.kv"), MakeKvOver(other, 5)));
  EXPECT_TRUE(reaches("c", other_chain[0]));
  m.Stop();
  ASSERT_EQ(ForgePrefixIndexRow(m.store() + "/meta.db", chain[0], other_chain[0]), "");
  ASSERT_TRUE(m.Start());
  for (const Hash128& h : chain) EXPECT_FALSE(reaches("c", h));
  EXPECT_EQ(find("c"), "KDN_E_NOT_FOUND");
  EXPECT_NE(m.log().find("do not chain"), std::string::npos) << m.log();
  EXPECT_TRUE(reaches("c", other_chain[1]));
}

// Issue 12, items 3 and 4, as nobody.
TEST(KdnfsMount, ControlFilesTellOtherUsersNothingAboutFilesTheyCannotReach) {
  REQUIRE_FUSE();
  REQUIRE_ROOT();
  KdnfsMount m;
  ASSERT_TRUE(m.Start());
  SH_OK("chmod 0755 " + m.mnt() + " " + m.scratch(""));
  SH_OK("mkdir -m 0700 " + m.path("private") + " && mkdir -m 0755 " + m.path("public"));
  ASSERT_TRUE(WriteWholeFile(m.path("private/secret.kv"), MakeKv(100, 8)));
  ASSERT_TRUE(WriteWholeFile(m.path("public/open.txt"), AsBytes("open")));
  auto id_of = [&](const std::string& rel) {
    return Out("getfattr --absolute-names --only-values -n user.kdn.id " + m.path(rel));
  };
  const std::string secret = id_of("private/secret.kv"), open = id_of("public/open.txt");
  EXPECT_EQ(Out("readlink " + m.path(".kdn/by-id/" + secret)), "../../private/secret.kv");
  auto r = AsNobody("readlink " + m.path(".kdn/by-id/" + secret));
  EXPECT_NE(r.status, 0);
  EXPECT_EQ(r.output.find("private"), std::string::npos) << r.output;
  r = AsNobody("stat " + m.path(".kdn/by-id/" + secret));
  EXPECT_NE(r.output.find("No such file"), std::string::npos) << r.output;
  r = AsNobody("readlink " + m.path(".kdn/by-id/" + open));
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(r.output, "../../public/open.txt\n");
  // Root's answer right before does not leak to nobody through the kernel's caches.
  EXPECT_EQ(Out("readlink " + m.path(".kdn/by-id/" + secret)), "../../private/secret.kv");
  EXPECT_NE(AsNobody("readlink " + m.path(".kdn/by-id/" + secret)).status, 0);

  // Store-wide counters: root sees them, nobody does not (not even right after root read them).
  std::string full = Out("cat " + m.path(".kdn/stats"));
  EXPECT_NE(full.find("\nchunks "), std::string::npos) << full;
  r = AsNobody("cat " + m.path(".kdn/stats"));
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(r.output, "store_wide_counters 0\n");
  EXPECT_NE(Out("cat " + m.path(".kdn/stats")).find("\ndedup_hits "), std::string::npos);
}

TEST(KdnfsMount, SignalsUnmountCleanlyAndStaleMountsAreCleared) {
  REQUIRE_FUSE();
  KdnfsMount m;
  ASSERT_TRUE(m.Start());
  ASSERT_TRUE(WriteWholeFile(m.path("kept"), AsBytes("kept")));
  int fd = ::open(m.path("pending").c_str(), O_WRONLY | O_CREAT, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::write(fd, "pending", 7), 7);  // still open: committed at unmount
  ::close(fd);
  EXPECT_EQ(m.Terminate(), 0);
  EXPECT_FALSE(IsMounted(m.mnt()));

  ASSERT_TRUE(m.Start());
  EXPECT_EQ(Out("cat " + m.path("kept") + " " + m.path("pending")), "keptpending");
  m.Kill9();
  EXPECT_TRUE(IsMounted(m.mnt())) << "a killed daemon leaves its mount behind";
  ASSERT_TRUE(m.Start());
  EXPECT_NE(m.log().find("detached a stale mount"), std::string::npos) << m.log();
  EXPECT_EQ(Out("cat " + m.path("kept")), "kept");
  EXPECT_EQ(Out("grep -c ' " + m.mnt() + " ' /proc/self/mountinfo"), "1");
}

// CPU time (user + system, in clock ticks) the process has used so far.
long CpuTicks(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // Fields after the command name, which is in parentheses and may hold spaces.
  std::istringstream rest(stat.substr(stat.rfind(')') + 2));
  std::string field;
  long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14) utime = std::stol(field);
    if (i == 15) stime = std::stol(field);
  }
  return utime + stime;
}

// With spin=, the receiving thread polls /dev/fuse after each request, but only for a bounded
// time: everything still works (a close that commits is handed to another thread), and an idle
// daemon goes back to sleep instead of burning a CPU.
TEST(KdnfsMount, SpinningReceiverWorksAndSleepsWhenIdle) {
  REQUIRE_FUSE();
  KdnfsMount m;
  ASSERT_TRUE(m.Start({"spin=2000"}));
  auto kv = MakeKv(64, 5);
  SH_OK("mkdir " + m.path("set"));
  ASSERT_TRUE(WriteWholeFile(m.path("set/a.kv"), kv));
  for (int i = 0; i < 50; ++i) EXPECT_EQ(ReadWholeFile(m.path("set/a.kv")), kv);
  EXPECT_FALSE(WriteWholeFile(m.path("set/a.kv"), CorruptKv(kv))) << "close() refuses it";
  EXPECT_EQ(ReadWholeFile(m.path("set/a.kv")), kv);

  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  long before = CpuTicks(m.pid());
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  long used = CpuTicks(m.pid()) - before;
  // A receiver that never stopped spinning would use the whole half second (~50 ticks).
  EXPECT_LE(used, 5) << "ticks of CPU used by an idle daemon";
}

// A read-only mount serves everything and changes nothing; closing a file costs no FLUSH.
TEST(KdnfsMount, ReadOnlyMount) {
  REQUIRE_FUSE();
  KdnfsMount m;
  ASSERT_TRUE(m.Start());
  auto kv = MakeKv(100, 81);
  SH_OK("mkdir " + m.path("set"));
  ASSERT_TRUE(WriteWholeFile(m.path("set/doc.kv"), kv));
  m.Stop();
  ASSERT_TRUE(m.Start({"ro"}));
  EXPECT_EQ(ReadWholeFile(m.path("set/doc.kv")), kv);
  EXPECT_EQ(ReadWholeFile(m.path("set/doc.kv")), kv);
  auto w = Sh("echo x > " + m.path("set/new.txt"));
  EXPECT_NE(w.status, 0);
  EXPECT_NE(w.output.find("Read-only file system"), std::string::npos) << w.output;
  EXPECT_NE(Sh("rm " + m.path("set/doc.kv")).status, 0);
  EXPECT_NE(Sh("setfattr -n user.x -v 1 " + m.path("set/doc.kv")).status, 0);
  EXPECT_EQ(
      Out("getfattr --absolute-names --only-values -n user.kdn.tokens " + m.path("set/doc.kv")),
      "100");
  EXPECT_NE(Out("cat " + m.path(".kdn/stats")).find("\nfiles 1\n"), std::string::npos);
}

TEST(KdnfsMount, RunsInTheBackgroundUntilUnmounted) {
  REQUIRE_FUSE();
  TempDir dir("kdnfs-daemon");
  SH_OK("mkdir " + dir / "mnt");
  int slot = RegisterMount(dir / "mnt", -1);
  auto start = Sh(std::string(KDNFS_PATH) + " " + dir / "store" + " " + dir / "mnt");
  EXPECT_EQ(start.status, 0) << start.output;
  EXPECT_TRUE(IsMounted(dir / "mnt")) << "mounted when the command returns";
  SH_OK("echo hello > " + dir / "mnt/f && cat " + dir / "mnt/f");
  SH_OK("fusermount3 -u " + dir / "mnt");
  EXPECT_FALSE(IsMounted(dir / "mnt"));
  UnregisterMount(slot);
  // The daemon has exited and released the store.
  bool reopened = false;
  for (int i = 0; i < 200 && !reopened; ++i) {
    reopened = Store::Open(dir / "store", StoreOptions{}).ok();
    if (!reopened) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(reopened);
  // A bad command line is refused before anything is mounted.
  EXPECT_EQ(
      Sh(std::string(KDNFS_PATH) + " -o capacity=lots " + dir / "store" + " " + dir / "mnt").status,
      2);
  EXPECT_EQ(
      Sh(std::string(KDNFS_PATH) + " -o fuse_uring=maybe " + dir / "store" + " " + dir / "mnt")
          .status,
      2);
  EXPECT_FALSE(IsMounted(dir / "mnt"));
}

TEST(KdnfsCommandLine, HelpAndVersion) {
  auto help = Sh(std::string(KDNFS_PATH) + " --help");
  EXPECT_EQ(help.status, 0);
  EXPECT_NE(help.output.find("usage: kdnfs"), std::string::npos);
  EXPECT_NE(help.output.find("capacity=SIZE"), std::string::npos);
  auto version = Sh(std::string(KDNFS_PATH) + " --version");
  EXPECT_EQ(version.status, 0);
  EXPECT_EQ(version.output.rfind("kdnfs ", 0), 0u) << version.output;
  EXPECT_EQ(Sh(std::string(KDNFS_PATH) + " only-one-arg").status, 2);
}

}  // namespace
}  // namespace kdn::test
