// FUSE passthrough, mounted for real (fs/kdnfs/passthrough.h): committed files read by the kernel
// from their chunk files, byte for byte, through read, mmap and O_DIRECT; rewrites and writers
// beside passthrough readers; small files read from the kernel's page cache instead; and
// -o passthrough=off. /.kdn/stats tells whether the kernel or kdnfs served an open
// (passthrough_opens, served_opens) and every READ kdnfs served (fs_reads).
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "fs_test_util.h"
#include "mount_fixture.h"

namespace kdn::test {
namespace {

[[maybe_unused]] auto* const kCleanup =
    ::testing::AddGlobalTestEnvironment(new MountCleanupEnvironment);

std::map<std::string, std::string> Stats(const KdnfsMount& m) {
  std::ifstream in(m.path(".kdn/stats"));
  std::map<std::string, std::string> out;
  std::string name, value;
  while (in >> name >> value) out[name] = value;
  return out;
}

uint64_t Stat(const KdnfsMount& m, const std::string& name) {
  auto s = Stats(m);
  auto it = s.find(name);
  EXPECT_NE(it, s.end()) << name << " missing from /.kdn/stats";
  return it == s.end() ? 0 : std::stoull(it->second);
}

// Committed content of up to this many bytes is read from the kernel's page cache, not passed
// through (Passthrough::kCachedReadMax).
constexpr size_t kCachedReadMax = 64 << 10;

// Mounts with passthrough on (the default) and checks that the kernel agreed. It needs root
// (CAP_SYS_ADMIN) and Linux 6.9+ with CONFIG_FUSE_PASSTHROUGH; elsewhere the test skips, saying
// why, except under CI=true, which runs as root on such a kernel.
#define START_WITH_PASSTHROUGH(m)                                                            \
  do {                                                                                       \
    KDN_REQUIRE_OR_SKIP(::access("/dev/fuse", R_OK | W_OK) == 0, "/dev/fuse is not usable"); \
    KDN_REQUIRE_FUSE_URING_IF_ASKED();                                                       \
    KDN_REQUIRE_OR_SKIP(::geteuid() == 0, "passthrough needs root (CAP_SYS_ADMIN)");         \
    ASSERT_TRUE((m).Start());                                                                \
    if (Stats(m)["passthrough"] != "on") {                                                   \
      std::string log_ = (m).log();                                                          \
      KDN_REQUIRE_OR_SKIP(log_.find("the kernel does not offer it") == std::string::npos,    \
                          "this kernel has no FUSE passthrough (Linux 6.9+)");               \
      FAIL() << "kdnfs did not turn passthrough on:\n" << log_;                              \
    }                                                                                        \
    /* A probe: the store must give chunk files (store v2) for anything to pass through. */  \
    ASSERT_TRUE(WriteWholeFile((m).path(".probe"), PlainBytes(kCachedReadMax + 1, 1)));      \
    uint64_t before_ = Stat(m, "passthrough_opens");                                         \
    ASSERT_EQ(ReadWholeFile((m).path(".probe")).size(), kCachedReadMax + 1);                 \
    if (Stat(m, "passthrough_opens") == before_) {                                           \
      std::string log_ = (m).log();                                                          \
      KDN_REQUIRE_OR_SKIP(log_.find("the store gives no chunk file") == std::string::npos,   \
                          "this store keeps no chunk files (Store::OpenChunkForRead)");      \
      FAIL() << "a committed file did not pass through:\n" << log_;                          \
    }                                                                                        \
  } while (0)

struct Fd {
  int fd;
  explicit Fd(int f) : fd(f) {}
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
};

// Maps `path` shared and read-only and compares its bytes with `data`.
void ExpectMappedBytes(const std::string& path, const std::vector<std::byte>& data) {
  Fd f(::open(path.c_str(), O_RDONLY));
  ASSERT_GE(f.fd, 0) << path << ": " << std::strerror(errno);
  void* p = ::mmap(nullptr, data.size(), PROT_READ, MAP_SHARED, f.fd, 0);
  ASSERT_NE(p, MAP_FAILED) << std::strerror(errno);
  EXPECT_EQ(std::memcmp(p, data.data(), data.size()), 0) << path;
  ::munmap(p, data.size());
}

std::vector<std::byte> PRead(int fd, size_t size, off_t off = 0) {
  std::vector<std::byte> out(size);
  size_t got = 0;
  while (got < size) {
    ssize_t n = ::pread(fd, out.data() + got, size - got, off + static_cast<off_t>(got));
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  out.resize(got);
  return out;
}

TEST(KdnfsPassthrough, ReadMmapAndODirectAreByteIdenticalAndSkipTheDaemon) {
  KdnfsMount m;
  START_WITH_PASSTHROUGH(m);
  // Not a multiple of the page size: the last page is partial.
  auto data = PlainBytes((6 << 20) + 1234, 301);
  auto kv = MakeKv(200, 302);
  ASSERT_TRUE(WriteWholeFile(m.path("big.bin"), data));
  ASSERT_TRUE(WriteWholeFile(m.path("doc.kv"), kv));
  uint64_t reads = Stat(m, "fs_reads");
  uint64_t pt = Stat(m, "passthrough_opens");

  EXPECT_EQ(ReadWholeFile(m.path("big.bin")), data);
  EXPECT_EQ(ReadWholeFile(m.path("doc.kv")), kv);
  ExpectMappedBytes(m.path("big.bin"), data);
  {
    Fd f(::open(m.path("big.bin").c_str(), O_RDONLY | O_DIRECT));
    ASSERT_GE(f.fd, 0) << std::strerror(errno);
    size_t cap = (data.size() + 4095) / 4096 * 4096;
    void* buf = std::aligned_alloc(4096, cap);
    ASSERT_NE(buf, nullptr);
    size_t got = 0;
    for (;;) {  // aligned requests; the last one comes back short at the end of the file
      ssize_t n = ::pread(f.fd, static_cast<char*>(buf) + got, std::min<size_t>(cap - got, 1 << 20),
                          static_cast<off_t>(got));
      ASSERT_GE(n, 0) << std::strerror(errno);
      if (n == 0) break;
      got += static_cast<size_t>(n);
      if (got % 4096 != 0) break;
    }
    EXPECT_EQ(got, data.size());
    EXPECT_EQ(std::memcmp(buf, data.data(), std::min(got, data.size())), 0);
    std::free(buf);
  }
  // Four opens, all passed through; kdnfs served no READ for any of them.
  EXPECT_EQ(Stat(m, "passthrough_opens") - pt, 4u);
  EXPECT_EQ(Stat(m, "fs_reads"), reads) << "the kernel asked kdnfs for bytes";
  // Their backing ids stay registered a while for later opens of the same content, and are
  // closed once idle for Passthrough::kIdleBacking (the sweeper looks every second).
  uint64_t backing = Stat(m, "backing_files");
  for (int i = 0; i < 100 && backing != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    backing = Stat(m, "backing_files");
  }
  EXPECT_EQ(backing, 0u) << "an idle backing id outlived its expiry";
  // A later open of the content registers it again.
  EXPECT_EQ(ReadWholeFile(m.path("doc.kv")), kv);
  EXPECT_EQ(Stat(m, "passthrough_opens") - pt, 5u);
}

TEST(KdnfsPassthrough, OpensOfOneContentShareOneBackingId) {
  KdnfsMount m;
  START_WITH_PASSTHROUGH(m);
  // Two names, one content (one chunk), and a third file with other bytes.
  auto same = PlainBytes(kCachedReadMax + 10000, 311);
  auto other = PlainBytes(kCachedReadMax + 10000, 312);
  ASSERT_TRUE(WriteWholeFile(m.path("a.bin"), same));
  ASSERT_TRUE(WriteWholeFile(m.path("b.bin"), same));
  ASSERT_TRUE(WriteWholeFile(m.path("c.bin"), other));
  const uint64_t reads = Stat(m, "fs_reads");
  const uint64_t pt = Stat(m, "passthrough_opens");
  const uint64_t backing = Stat(m, "backing_files");  // the probe's may still be registered
  for (int round = 0; round < 3; ++round) {
    EXPECT_EQ(ReadWholeFile(m.path("a.bin")), same);
    EXPECT_EQ(ReadWholeFile(m.path("b.bin")), same);
    EXPECT_EQ(ReadWholeFile(m.path("c.bin")), other);
  }
  EXPECT_EQ(Stat(m, "passthrough_opens") - pt, 9u);
  EXPECT_EQ(Stat(m, "fs_reads"), reads) << "the kernel asked kdnfs for bytes";
  // Kept between opens (each file was closed before the next opened), one per chunk.
  EXPECT_GE(Stat(m, "backing_files"), 2u) << "backing ids closed at the last release";
  EXPECT_LE(Stat(m, "backing_files"), backing + 2) << "more than one backing id per chunk";
  // A rewrite of a name changes its content: its opens pass through to the new chunk.
  auto fresh = PlainBytes(kCachedReadMax + 10000, 313);
  ASSERT_TRUE(WriteWholeFile(m.path("a.bin"), fresh));
  EXPECT_EQ(ReadWholeFile(m.path("a.bin")), fresh);
  EXPECT_EQ(ReadWholeFile(m.path("b.bin")), same);
}

// Opens a file for writing with O_TRUNC and writes `data`: 0, or the errno that failed.
int Rewrite(const std::string& path, const std::vector<std::byte>& data) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return errno;
  int err = 0;
  if (::write(fd, data.data(), data.size()) != static_cast<ssize_t>(data.size())) err = errno;
  if (::close(fd) != 0 && err == 0) err = errno;
  return err;
}

// While a file is open for passthrough reading its content cannot change in place (the kernel
// passes every open of the inode through to the same backing): writers get ETXTBSY, as with a
// running executable, and the reader keeps its bytes. A rewrite by rename works at any time: the
// old reader keeps the old bytes, new opens see the new ones, passed through as well.
TEST(KdnfsPassthrough, RewriteWhileAPassthroughReaderIsOpen) {
  KdnfsMount m;
  START_WITH_PASSTHROUGH(m);
  auto before = PlainBytes(3 << 20, 311);
  auto after = PlainBytes(3 << 20, 312);  // the same size: stale bytes cannot hide
  auto third = PlainBytes(1 << 20, 313);
  std::string f = m.path("f.bin");
  ASSERT_TRUE(WriteWholeFile(f, before));
  uint64_t pt = Stat(m, "passthrough_opens");

  Fd old_reader(::open(f.c_str(), O_RDONLY));
  ASSERT_GE(old_reader.fd, 0);
  EXPECT_EQ(Stat(m, "passthrough_opens"), pt + 1);
  EXPECT_EQ(PRead(old_reader.fd, 4096), std::vector<std::byte>(before.begin(), before.begin() + 4096));

  // In place: refused, never EIO, nothing changes.
  EXPECT_EQ(Rewrite(f, after), ETXTBSY);
  EXPECT_EQ(::truncate(f.c_str(), 10), -1);
  EXPECT_EQ(errno, ETXTBSY);
  EXPECT_EQ(ReadWholeFile(f), before) << "a later reader shares the old reader's content";

  // By rename: the old reader keeps its bytes, new opens get the new file.
  ASSERT_TRUE(WriteWholeFile(m.path("f.bin.tmp"), after));
  ASSERT_EQ(::rename(m.path("f.bin.tmp").c_str(), f.c_str()), 0) << std::strerror(errno);
  {
    Fd new_reader(::open(f.c_str(), O_RDONLY));
    ASSERT_GE(new_reader.fd, 0) << std::strerror(errno);
    EXPECT_EQ(PRead(new_reader.fd, after.size() + 1), after);
  }
  EXPECT_EQ(PRead(old_reader.fd, before.size() + 1), before) << "the old reader's bytes changed";
  ::close(old_reader.fd);
  old_reader.fd = -1;
  EXPECT_EQ(Stat(m, "passthrough_opens"), pt + 3);  // old reader, later reader, new reader

  // In place once no passthrough reader is left: the writer goes first, readers see its bytes.
  EXPECT_EQ(Rewrite(f, third), 0);
  EXPECT_EQ(ReadWholeFile(f), third);
  EXPECT_EQ(Stat(m, "passthrough_opens"), pt + 4) << "the new chunk passes through";
}

// Writers and readers of one inode, in any order: no open or read ever fails with EIO (what the
// kernel answers to an open whose mode conflicts with the inode's); readers never fail at all,
// writers only with ETXTBSY while passthrough readers are open.
TEST(KdnfsPassthrough, ConcurrentReadersAndAWriterOnOneInode) {
  KdnfsMount m;
  START_WITH_PASSTHROUGH(m);
  std::string f = m.path("shared.bin");
  constexpr size_t kSize = 256 << 10;
  ASSERT_TRUE(WriteWholeFile(f, PlainBytes(kSize, 320)));
  std::atomic<bool> stop{false};
  std::atomic<int> failures{0};
  std::string first_failure;
  std::mutex mu;
  auto fail = [&](const std::string& what) {
    std::lock_guard lock(mu);
    if (failures++ == 0) first_failure = what + ": " + std::strerror(errno);
  };
  std::vector<std::thread> readers;
  for (int r = 0; r < 3; ++r) {
    readers.emplace_back([&, r] {
      while (!stop.load()) {
        Fd fd(::open(f.c_str(), O_RDONLY));
        if (fd.fd < 0) {
          fail("open for reading");
          continue;
        }
        char buf[4096];
        if (::pread(fd.fd, buf, sizeof(buf), 0) < 0) fail("read");
        if (r == 0) {  // one reader maps the file too
          void* p = ::mmap(nullptr, 4096, PROT_READ, MAP_SHARED, fd.fd, 0);
          if (p == MAP_FAILED) fail("mmap");
          if (p != MAP_FAILED) ::munmap(p, 4096);
        }
      }
    });
  }
  int written = 0;
  int busy = 0;
  for (int i = 0; i < 60; ++i) {
    int err = Rewrite(f, PlainBytes(kSize, 400 + static_cast<uint64_t>(i)));
    if (err == 0) {
      ++written;
    } else if (err == ETXTBSY) {
      ++busy;
    } else {
      errno = err;
      fail("rewrite");
    }
  }
  stop = true;
  for (auto& t : readers) t.join();
  EXPECT_EQ(failures.load(), 0) << first_failure;
  std::printf("rewrites: %d written, %d refused with ETXTBSY\n", written, busy);
  auto last = PlainBytes(kSize, 500);
  EXPECT_EQ(Rewrite(f, last), 0) << "no reader left";
  EXPECT_EQ(ReadWholeFile(f), last);
  EXPECT_GT(Stat(m, "passthrough_opens"), 0u);
  EXPECT_GT(Stat(m, "served_opens"), 0u);
}

// Issue 12, item 5: while a file is being rewritten, other openers read the last committed
// content — not the writer's partial bytes, not a `.kv` that is later refused — until the new
// content commits; the writer reads its own bytes. Sizes never go backwards for stat(2), which
// shows the newest size; reads end at the committed size.
TEST(KdnfsPassthrough, ReadersSeeOnlyCommittedContentWhileAWriterIsAtWork) {
  KdnfsMount m;
  START_WITH_PASSTHROUGH(m);
  std::string f = m.path("f.bin");
  auto before = PlainBytes((64 << 10) + 3, 601);
  auto after = PlainBytes(200 << 10, 602);  // longer, and written in two halves
  ASSERT_TRUE(WriteWholeFile(f, before));

  Fd writer(::open(f.c_str(), O_RDWR | O_TRUNC));
  ASSERT_GE(writer.fd, 0) << std::strerror(errno);
  const size_t half = after.size() / 2;
  ASSERT_EQ(::pwrite(writer.fd, after.data(), half, 0), static_cast<ssize_t>(half));

  // A reader opened now, in this process and in another one, sees `before`, whole.
  Fd reader(::open(f.c_str(), O_RDONLY));
  ASSERT_GE(reader.fd, 0) << std::strerror(errno);
  EXPECT_EQ(PRead(reader.fd, after.size() + 1), before) << "a reader saw uncommitted bytes";
  ASSERT_TRUE(WriteWholeFile(m.scratch("before.bin"), before));
  EXPECT_TRUE(Sh("cmp " + f + " " + m.scratch("before.bin")).ok())
      << "another process saw uncommitted bytes";
  // The writer sees its own bytes; stat shows the newest size.
  EXPECT_EQ(PRead(writer.fd, after.size()), std::vector<std::byte>(after.begin(), after.begin() + half));
  struct stat st;
  ASSERT_EQ(::fstat(reader.fd, &st), 0);
  EXPECT_EQ(static_cast<size_t>(st.st_size), half);

  ASSERT_EQ(::pwrite(writer.fd, after.data() + half, after.size() - half, half),
            static_cast<ssize_t>(after.size() - half));
  EXPECT_EQ(PRead(reader.fd, after.size() + 1), before) << "a reader saw uncommitted bytes";
  ASSERT_EQ(::close(writer.fd), 0) << std::strerror(errno);
  writer.fd = -1;
  // Committed: the open reader and new ones read the new content.
  EXPECT_EQ(PRead(reader.fd, after.size() + 1), after);
  EXPECT_EQ(ReadWholeFile(f), after);
  ::close(reader.fd);
  reader.fd = -1;

  // A `.kv` rewritten with bytes that are refused at close: readers never see them, before or
  // after the refusal.
  std::string kv = m.path("doc.kv");
  auto good = MakeKv(64, 603);
  ASSERT_TRUE(WriteWholeFile(kv, good));
  auto bad = CorruptKv(MakeKv(96, 604));
  Fd kv_writer(::open(kv.c_str(), O_WRONLY | O_TRUNC));
  ASSERT_GE(kv_writer.fd, 0) << std::strerror(errno);
  ASSERT_EQ(::write(kv_writer.fd, bad.data(), bad.size()), static_cast<ssize_t>(bad.size()));
  Fd kv_reader(::open(kv.c_str(), O_RDONLY));
  ASSERT_GE(kv_reader.fd, 0) << std::strerror(errno);
  EXPECT_EQ(PRead(kv_reader.fd, bad.size() + 1), good);
  EXPECT_EQ(::close(kv_writer.fd), -1) << "the corrupt .kv was committed";
  kv_writer.fd = -1;
  EXPECT_EQ(PRead(kv_reader.fd, bad.size() + 1), good);
  EXPECT_EQ(ReadWholeFile(kv), good);
}

// Small committed files are read from the kernel's page cache: kdnfs serves the first READ, and
// later opens of the file read the same pages without a request (and open no backing file).
// read, mmap and O_DIRECT give the file's bytes.
TEST(KdnfsPassthrough, SmallFilesAreReadFromThePageCacheFilledOnce) {
  KdnfsMount m;
  START_WITH_PASSTHROUGH(m);
  auto data = PlainBytes(10000, 340);
  auto edge = PlainBytes(kCachedReadMax, 341);  // the largest that is not passed through
  ASSERT_TRUE(WriteWholeFile(m.path("small.bin"), data));
  ASSERT_TRUE(WriteWholeFile(m.path("edge.bin"), edge));
  const uint64_t pt = Stat(m, "passthrough_opens");
  const uint64_t served = Stat(m, "served_opens");
  const uint64_t reads = Stat(m, "fs_reads");
  EXPECT_EQ(ReadWholeFile(m.path("small.bin")), data);
  EXPECT_EQ(ReadWholeFile(m.path("edge.bin")), edge);
  const uint64_t first_reads = Stat(m, "fs_reads");
  EXPECT_GT(first_reads, reads) << "kdnfs did not fill the page cache";
  for (int round = 0; round < 3; ++round) {
    EXPECT_EQ(ReadWholeFile(m.path("small.bin")), data);
    EXPECT_EQ(ReadWholeFile(m.path("edge.bin")), edge);
  }
  EXPECT_EQ(Stat(m, "fs_reads"), first_reads) << "the page cache was dropped between opens";
  ExpectMappedBytes(m.path("small.bin"), data);
  {
    Fd f(::open(m.path("small.bin").c_str(), O_RDONLY | O_DIRECT));
    ASSERT_GE(f.fd, 0) << std::strerror(errno);
    void* buf = std::aligned_alloc(4096, 16384);
    ASSERT_NE(buf, nullptr);
    ssize_t n = ::pread(f.fd, buf, 16384, 0);
    EXPECT_EQ(n, static_cast<ssize_t>(data.size())) << std::strerror(errno);
    EXPECT_EQ(std::memcmp(buf, data.data(), data.size()), 0);
    std::free(buf);
  }
  EXPECT_EQ(Stat(m, "passthrough_opens"), pt) << "a small file was passed through";
  EXPECT_EQ(Stat(m, "served_opens") - served, 10u);
}

// A reader of a small file pins its content as a passthrough reader does: a writer gets ETXTBSY
// while it is open, so the reader never sees the writer's bytes in the page cache they share.
// Once it is closed the writer goes first, and later readers see the new bytes, never stale
// pages (same size, so stale bytes cannot hide).
TEST(KdnfsPassthrough, RewriteWhileASmallFilesReaderIsOpen) {
  KdnfsMount m;
  START_WITH_PASSTHROUGH(m);
  auto before = PlainBytes(20000, 350);
  auto after = PlainBytes(20000, 351);
  auto third = PlainBytes(20000, 352);
  std::string f = m.path("f.bin");
  ASSERT_TRUE(WriteWholeFile(f, before));
  EXPECT_EQ(ReadWholeFile(f), before);  // its pages are in the cache now

  Fd reader(::open(f.c_str(), O_RDONLY));
  ASSERT_GE(reader.fd, 0) << std::strerror(errno);
  EXPECT_EQ(Rewrite(f, after), ETXTBSY);
  int writer = ::open(f.c_str(), O_WRONLY);
  EXPECT_EQ(writer, -1) << "opened for writing beside a reader";
  EXPECT_EQ(errno, ETXTBSY);
  if (writer >= 0) ::close(writer);
  EXPECT_EQ(::truncate(f.c_str(), 10), -1);
  EXPECT_EQ(errno, ETXTBSY);
  EXPECT_EQ(PRead(reader.fd, before.size() + 1), before);
  ::close(reader.fd);
  reader.fd = -1;

  EXPECT_EQ(Rewrite(f, after), 0) << "no reader left";
  EXPECT_EQ(ReadWholeFile(f), after);
  EXPECT_EQ(ReadWholeFile(f), after);
  // Rewritten by another process too (cp), and replaced by rename while a reader is open.
  ASSERT_TRUE(WriteWholeFile(m.scratch("third.bin"), third));
  ASSERT_TRUE(Sh("cp " + m.scratch("third.bin") + " " + f).ok());
  EXPECT_EQ(ReadWholeFile(f), third);
  Fd old_reader(::open(f.c_str(), O_RDONLY));
  ASSERT_GE(old_reader.fd, 0) << std::strerror(errno);
  ASSERT_TRUE(WriteWholeFile(m.path("f.tmp"), before));
  ASSERT_EQ(::rename(m.path("f.tmp").c_str(), f.c_str()), 0) << std::strerror(errno);
  EXPECT_EQ(ReadWholeFile(f), before);
  EXPECT_EQ(PRead(old_reader.fd, third.size() + 1), third) << "the old reader's bytes changed";
}

// A reader opened while a writer of a small file is at work reads the committed bytes (direct
// mode), and cached readers opened after the commit read the new ones.
TEST(KdnfsPassthrough, SmallFilesReaderBesideAWriterSeesOnlyCommittedBytes) {
  KdnfsMount m;
  START_WITH_PASSTHROUGH(m);
  auto before = PlainBytes(30000, 360);
  auto after = PlainBytes(30000, 361);
  std::string f = m.path("f.bin");
  ASSERT_TRUE(WriteWholeFile(f, before));
  EXPECT_EQ(ReadWholeFile(f), before);
  Fd writer(::open(f.c_str(), O_WRONLY));
  ASSERT_GE(writer.fd, 0) << std::strerror(errno);
  ASSERT_EQ(::pwrite(writer.fd, after.data(), after.size(), 0), static_cast<ssize_t>(after.size()));
  EXPECT_EQ(ReadWholeFile(f), before) << "a reader saw uncommitted bytes";
  ASSERT_EQ(::close(writer.fd), 0) << std::strerror(errno);
  writer.fd = -1;
  EXPECT_EQ(ReadWholeFile(f), after);
  EXPECT_EQ(ReadWholeFile(f), after);
}

TEST(KdnfsPassthrough, OffServesEveryReadItself) {
  KDN_REQUIRE_OR_SKIP(::access("/dev/fuse", R_OK | W_OK) == 0, "/dev/fuse is not usable");
  KDN_REQUIRE_FUSE_URING_IF_ASKED();
  KdnfsMount m({"passthrough=off"});
  ASSERT_TRUE(m.Start());
  auto data = PlainBytes((2 << 20) + 7, 330);
  ASSERT_TRUE(WriteWholeFile(m.path("f.bin"), data));
  uint64_t reads = Stat(m, "fs_reads");
  EXPECT_EQ(ReadWholeFile(m.path("f.bin")), data);
  ExpectMappedBytes(m.path("f.bin"), data);
  auto s = Stats(m);
  EXPECT_EQ(s["passthrough"], "off");
  EXPECT_EQ(s["passthrough_opens"], "0");
  EXPECT_GT(Stat(m, "fs_reads"), reads) << "kdnfs served the reads";
  std::string log = m.log();
  EXPECT_EQ(CountOf(log, "FUSE passthrough not used: turned off (-o passthrough=off)"), 1u) << log;
}

}  // namespace
}  // namespace kdn::test
