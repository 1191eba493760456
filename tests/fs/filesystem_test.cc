// kdnfs's filesystem logic, driven without a mount: the calls the FUSE adapter makes, in the
// orders the kernel makes them.
#include "fs/kdnfs/filesystem.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <utility>
#include <thread>

#include "fs/kdnfs/control_files.h"
#include "fs/kdnfs/mount_util.h"
#include "fs_test_util.h"
#include "sha256_util.h"
#include "security/hostile_kv.h"

namespace kdn::fs {
namespace {

using kdn::test::AsBytes;
using kdn::test::MakeKv;
using kdn::test::MakeKvOver;
using kdn::test::PromptTokens;

class FakeProcesses : public Processes {
 public:
  int32_t ThreadGroupOf(int32_t tid) override {
    auto it = tgid_.find(tid);
    return it == tgid_.end() ? tid : it->second;
  }
  bool Alive(int32_t tid) override { return !dead_.count(tid); }
  std::map<int32_t, int32_t> tgid_;
  std::set<int32_t> dead_;
};

class RecordingCache : public KernelCache {
 public:
  void ForgetName(Ino parent, const std::string& name, Ino ino) override {
    std::lock_guard lock(mu);
    forgotten.push_back({parent, name, ino});
  }
  void InvalidateInode(Ino ino, bool data) override {
    std::lock_guard lock(mu);
    invalidated.emplace_back(ino, data);
  }
  std::mutex mu;
  std::vector<EvictedName> forgotten;
  std::vector<std::pair<Ino, bool>> invalidated;
};

Caller As(uint32_t uid, uint32_t gid, int32_t pid) {
  Caller c;
  c.uid = uid;
  c.gid = gid;
  c.pid = pid;
  return c;
}

SetAttrRequest Size(uint64_t size) {
  SetAttrRequest r;
  r.size = size;
  return r;
}

SetAttrRequest ModeAndGroup(uint32_t mode, std::optional<uint32_t> gid = std::nullopt) {
  SetAttrRequest r;
  r.mode = mode;
  r.gid = gid;
  return r;
}

std::string Text(std::span<const std::byte> b) {
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

class FilesystemTest : public ::testing::Test {
 protected:
  void SetUp() override { Open(); }

  void Open(uint64_t capacity = 0, uint64_t user_quota = 0) {
    fs_.reset();
    StoreOptions so;
    so.sync = SyncPolicy::kNone;  // scratch store: the tests are about the logic, not durability
    so.capacity_bytes = capacity;
    Filesystem::Options fo;
    fo.idle_commit = std::chrono::milliseconds(0);
    fo.user_quota_bytes = user_quota;
    auto fs = Filesystem::Open(dir_ / "store", so, fo);
    ASSERT_TRUE(fs.ok()) << fs.status().ToString();
    fs_ = std::move(*fs);
    fs_->SetProcesses(&procs_);
    fs_->SetKernelCache(&cache_);
  }

  Ino Create(Ino parent, std::string_view name, const Caller& c = As(0, 0, 100),
             uint32_t mode = 0644) {
    auto e = fs_->Create(c, parent, name, mode, O_WRONLY | O_CREAT);
    EXPECT_TRUE(e.ok()) << e.status().ToString();
    return e.ok() ? e->attr.ino : 0;
  }

  Ino MkDir(Ino parent, std::string_view name, const Caller& c = As(0, 0, 100),
            uint32_t mode = 0755) {
    auto e = fs_->MakeDir(c, parent, name, mode);
    EXPECT_TRUE(e.ok()) << e.status().ToString();
    return e.ok() ? e->attr.ino : 0;
  }

  void Write(Ino ino, uint64_t off, std::span<const std::byte> data,
             const Caller& c = As(0, 0, 100)) {
    auto n = fs_->Write(c, ino, off, data);
    ASSERT_TRUE(n.ok()) << n.status().ToString();
    EXPECT_EQ(*n, data.size());
  }

  // cp: create, write, close.
  Ino Put(Ino parent, std::string_view name, std::span<const std::byte> data,
          const Caller& c = As(0, 0, 100)) {
    Ino ino = Create(parent, name, c);
    if (!data.empty()) Write(ino, 0, data, c);
    Status st = fs_->Flush(c, ino);
    EXPECT_TRUE(st.ok()) << st.ToString();
    return ino;
  }

  std::vector<std::byte> ReadAll(Ino ino) {
    auto attr = fs_->GetAttr(ino);
    EXPECT_TRUE(attr.ok());
    if (!attr.ok()) return {};
    std::vector<std::byte> out(attr->attr.size);
    size_t done = 0;
    while (done < out.size()) {
      auto n = fs_->Read(ino, done,
                         std::span(out).subspan(done, std::min<size_t>(65536, out.size() - done)));
      EXPECT_TRUE(n.ok()) << n.status().ToString();
      if (!n.ok() || *n == 0) break;
      done += *n;
    }
    out.resize(done);
    return out;
  }

  InodeAttr Committed(Ino ino) {
    auto a = fs_->store().GetAttr(ino);
    EXPECT_TRUE(a.ok()) << a.status().ToString();
    return a.ok() ? *a : InodeAttr{};
  }

  std::vector<std::string> List(Ino dir) {
    std::vector<std::string> names;
    Status st = fs_->ReadDir(dir, 0, false, 1000, [&](std::string_view n, const Entry&, uint64_t) {
      names.emplace_back(n);
      return true;
    });
    EXPECT_TRUE(st.ok()) << st.ToString();
    return names;
  }

  kdn::test::TempDir dir_{"kdnfs-unit"};
  FakeProcesses procs_;
  RecordingCache cache_;
  std::unique_ptr<Filesystem> fs_;
};

TEST_F(FilesystemTest, WritesAreStagedUntilTheWritersClose) {
  Ino a = Create(kRootIno, "a");
  Write(a, 0, AsBytes("hello"));
  EXPECT_EQ(fs_->GetAttr(a)->attr.size, 5u);  // what the writer and readers see
  EXPECT_EQ(Committed(a).size, 0u);           // what a crash would leave
  EXPECT_TRUE(Committed(a).chunk.IsZero());
  EXPECT_EQ(Text(ReadAll(a)), "hello");
  EXPECT_EQ(fs_->staged_count(), 1u);

  ASSERT_TRUE(fs_->Flush(As(0, 0, 100), a).ok());
  EXPECT_EQ(fs_->staged_count(), 0u);
  EXPECT_EQ(Committed(a).size, 5u);
  EXPECT_FALSE(Committed(a).chunk.IsZero());
  EXPECT_EQ(Text(ReadAll(a)), "hello");
  EXPECT_EQ(fs_->counters().commits.load(), 1u);
}

TEST_F(FilesystemTest, OnlyAWritersCloseCommits) {
  procs_.tgid_[101] = 100;  // a second thread of the writing process
  Ino a = Create(kRootIno, "a");
  Write(a, 0, AsBytes("partial"), As(0, 0, 100));
  // A reader's close must neither commit nor fail on somebody else's half-written file.
  ASSERT_TRUE(fs_->Flush(As(0, 0, 200), a).ok());
  EXPECT_EQ(fs_->staged_count(), 1u);
  EXPECT_EQ(Committed(a).size, 0u);
  // Another thread of the writer closes: that is the writer's close.
  ASSERT_TRUE(fs_->Flush(As(0, 0, 101), a).ok());
  EXPECT_EQ(fs_->staged_count(), 0u);
  EXPECT_EQ(Committed(a).size, 7u);
}

TEST_F(FilesystemTest, AnInvalidKvIsRefusedAndThePreviousContentStays) {
  auto good = MakeKv(64, 1);
  Ino f = Put(kRootIno, "doc.kv", good);
  ChunkId before = Committed(f).chunk;
  for (const auto& bad : {kdn::test::CorruptKv(good), kdn::test::TruncateKv(good, good.size() / 2),
                          kdn::test::TruncateKv(good, 100)}) {
    // cp over an existing file: O_TRUNC (SETATTR size 0), writes, close.
    Caller cp = As(0, 0, 300);
    ASSERT_TRUE(fs_->SetAttr(cp, f, Size(0)).ok());
    Write(f, 0, bad, cp);
    Status st = fs_->Flush(cp, f);
    EXPECT_EQ(st.code(), Code::kInvalidArgument) << st.ToString();
    EXPECT_EQ(st.sys_errno(), EINVAL);
    EXPECT_EQ(Committed(f).chunk, before);
    EXPECT_EQ(ReadAll(f), good);
    EXPECT_EQ(fs_->GetAttr(f)->attr.size, good.size());
    EXPECT_EQ(fs_->staged_count(), 0u);
    // The kernel is told to drop the refused pages.
    std::lock_guard lock(cache_.mu);
    ASSERT_FALSE(cache_.invalidated.empty());
    EXPECT_EQ(cache_.invalidated.back(), std::make_pair(f, true));
  }
  EXPECT_EQ(fs_->counters().refused_kv.load(), 3u);
}

// Files whose checksums all hold but that `kdnctl verify` refuses: the commit runs the same
// verification and refuses each one; the name keeps its content.
TEST_F(FilesystemTest, EveryKvThatVerifyRefusesIsRefusedAtCommit) {
  auto good = MakeKv(64, 1);
  Ino f = Put(kRootIno, "doc.kv", good);
  const ChunkId before = Committed(f).chunk;
  uint64_t refused = 0;
  for (kdn::test::hostile::Kind kind : kdn::test::hostile::AllKinds()) {
    SCOPED_TRACE(kdn::test::hostile::Name(kind));
    const std::vector<std::byte> bad = kdn::test::hostile::Make(kind);
    ASSERT_FALSE(bad.empty());
    ASSERT_FALSE(VerifyKv(*MemorySource(bad)).ok());
    Caller cp = As(0, 0, 300);
    ASSERT_TRUE(fs_->SetAttr(cp, f, Size(0)).ok());
    Write(f, 0, bad, cp);
    Status st = fs_->Flush(cp, f);
    EXPECT_EQ(st.code(), Code::kInvalidArgument) << st.ToString();
    EXPECT_EQ(st.sys_errno(), EINVAL);
    EXPECT_EQ(Committed(f).chunk, before);
    EXPECT_EQ(ReadAll(f), good);
    EXPECT_EQ(fs_->counters().refused_kv.load(), ++refused);
  }
}

// A sparse file whose valid header claims blocks far beyond the store's capacity: the truncate
// that makes it that large is refused with ENOSPC at once, before any byte is read; the header
// alone is then refused at close (EINVAL), and the file keeps its content.
TEST_F(FilesystemTest, CapacityIsCheckedBeforeTheContentIsRead) {
  Open(64 << 20);
  auto good = MakeKv(64, 1);
  Ino f = Put(kRootIno, "doc.kv", good);
  const ChunkId before = Committed(f).chunk;
  for (uint64_t block : {uint64_t{3} << 30, uint64_t{64} << 30}) {
    uint64_t size = 0;
    const auto head = kdn::test::hostile::HugeBlockHeader(block, &size);
    Caller cp = As(0, 0, 300);
    ASSERT_TRUE(fs_->SetAttr(cp, f, Size(0)).ok());
    Write(f, 0, head, cp);
    Status grown = fs_->SetAttr(cp, f, Size(size)).status();
    EXPECT_EQ(grown.code(), Code::kNoSpace) << grown.ToString();
    EXPECT_EQ(grown.sys_errno(), ENOSPC);
    EXPECT_EQ(fs_->GetAttr(f)->attr.size, head.size());
    EXPECT_EQ(fs_->Flush(cp, f).sys_errno(), EINVAL);
    EXPECT_EQ(Committed(f).chunk, before);
    EXPECT_EQ(fs_->GetAttr(f)->attr.size, good.size());
  }
}

// cp of an invalid `.kv` to a new name: the close fails and the name is gone, not left empty.
// A refused copy over an existing file keeps that file.
TEST_F(FilesystemTest, ARefusedNewFileIsRemovedAtClose) {
  auto bad = kdn::test::CorruptKv(MakeKv(64, 1));
  Caller cp = As(0, 0, 300);
  Ino f = Create(kRootIno, "new.kv", cp);
  ASSERT_TRUE(fs_->Lookup(cp, kRootIno, "new.kv").ok());  // a second kernel reference
  Write(f, 0, bad, cp);
  Status st = fs_->Flush(cp, f);
  EXPECT_EQ(st.code(), Code::kInvalidArgument) << st.ToString();
  auto gone = fs_->Lookup(cp, kRootIno, "new.kv");
  EXPECT_TRUE(!gone.ok() || gone->attr.ino == 0);
  EXPECT_TRUE(fs_->store().Lookup(kRootIno, "new.kv").status().IsNotFound());
  {
    std::lock_guard lock(cache_.mu);
    ASSERT_EQ(cache_.forgotten.size(), 1u);
    EXPECT_EQ(cache_.forgotten[0].name, "new.kv");
    EXPECT_EQ(cache_.forgotten[0].ino, f);
  }
  // Whoever still has it open reads it as it is (empty) until the kernel forgets it.
  EXPECT_EQ(fs_->GetAttr(f)->attr.size, 0u);
  fs_->Forget(f, 2);
  EXPECT_TRUE(fs_->store().GetAttr(f).status().IsNotFound());
  // A file that has content is never removed by a refusal.
  Ino g = Put(kRootIno, "good.kv", MakeKv(64, 2));
  ASSERT_TRUE(fs_->SetAttr(cp, g, Size(0)).ok());
  Write(g, 0, bad, cp);
  EXPECT_EQ(fs_->Flush(cp, g).code(), Code::kInvalidArgument);
  EXPECT_EQ(ReadAll(g), MakeKv(64, 2));
  // Nor is a new file whose content commits.
  Put(kRootIno, "fine.txt", AsBytes("fine"));
  EXPECT_TRUE(fs_->store().Lookup(kRootIno, "fine.txt").ok());
}

// The daemon dies while a new file's first content is staged: the next start removes the file.
// (The store's own tests cover the recovery; this one shows that kdnfs stages a new file's first
// content where recovery finds it: small content in memory, its inode in the first-content slots
// file; large content in a staging file named after its inode. Content that replaces committed
// content is in memory, and nowhere on disk, while small.)
TEST_F(FilesystemTest, ANewFilesFirstContentIsStagedWhereRecoveryFindsIt) {
  Ino small = Create(kRootIno, "small.txt");
  Write(small, 0, AsBytes("first"));
  Ino large = Create(kRootIno, "copying.kv");
  const std::vector<std::byte> kv = MakeKv(4096, 1);
  ASSERT_GT(kv.size(), StagedFile::kMostInMemory);
  Write(large, 0, kv);
  Ino g = Put(kRootIno, "old.txt", AsBytes("old"));
  Write(g, 3, AsBytes(" and new"));
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(fs_->store().staging_dir())) {
    names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  ASSERT_EQ(names.size(), 2u);
  EXPECT_TRUE(names[0].ends_with(".first-" + std::to_string(large) + ".tmp")) << names[0];
  EXPECT_EQ(fs_->store().staging_dir() + "/" + names[1], fs_->store().FirstContentSlotsPath());
  // The slots: the new files (`large` took its slot before its content spilled to its file),
  // not `g`, which had content.
  auto slots_of = [&] {
    std::ifstream in(fs_->store().FirstContentSlotsPath(), std::ios::binary);
    std::vector<Ino> inos;
    unsigned char record[8];
    while (in.read(reinterpret_cast<char*>(record), sizeof record)) {
      Ino ino = 0;
      for (int b = 7; b >= 0; --b) ino = (ino << 8) | record[b];
      if (ino != 0) inos.push_back(ino);
    }
    return inos;
  };
  EXPECT_EQ(slots_of(), (std::vector<Ino>{small, large}));
  // Committed: the slot is free again (a later empty content of the file must not remove it).
  ASSERT_TRUE(fs_->Flush(As(0, 0, 100), small).ok());
  EXPECT_EQ(slots_of(), std::vector<Ino>{large});
  EXPECT_EQ(Text(ReadAll(small)), "first");
  EXPECT_EQ(Text(ReadAll(g)), "old and new");
}

// The FUSE loop answers a file's first write itself when it stays in memory: only for a file just
// created that nothing changed since, and only while the write ends within kMostInMemory.
TEST_F(FilesystemTest, OnlyTheFirstSmallWriteOfANewFileStaysInMemoryAtOnce) {
  Ino f = Create(kRootIno, "new");
  EXPECT_TRUE(fs_->FirstWriteStaysInMemory(f, 100));
  EXPECT_TRUE(fs_->FirstWriteStaysInMemory(f, StagedFile::kMostInMemory));
  EXPECT_FALSE(fs_->FirstWriteStaysInMemory(f, StagedFile::kMostInMemory + 1));
  Write(f, 0, AsBytes("first"));
  EXPECT_FALSE(fs_->FirstWriteStaysInMemory(f, 100));  // staged now: the pool's
  ASSERT_TRUE(fs_->Flush(As(0, 0, 100), f).ok());
  EXPECT_FALSE(fs_->FirstWriteStaysInMemory(f, 100));  // has content
  Ino g = Create(kRootIno, "chmodded");
  ASSERT_TRUE(fs_->SetAttr(As(0, 0, 1), g, ModeAndGroup(0600)).ok());
  EXPECT_FALSE(fs_->FirstWriteStaysInMemory(g, 100));
  Write(g, 0, AsBytes("x"));
  ASSERT_TRUE(fs_->Flush(As(0, 0, 100), g).ok());
  EXPECT_EQ(Text(ReadAll(g)), "x");
  EXPECT_EQ(Committed(g).mode & 07777, 0600u);
}

// Staged content in memory moves to a staging file once it outgrows StagedFile::kMostInMemory,
// by a write or a truncate, and reads the same before and after the move and once committed.
TEST_F(FilesystemTest, SmallStagedContentSpillsToAFileWhenItGrows) {
  Ino f = Put(kRootIno, "grows", AsBytes("0123456789"));
  Write(f, 20, AsBytes("tail"));
  auto staging_files = [&] {
    size_t n = 0;
    for (const auto& entry : std::filesystem::directory_iterator(fs_->store().staging_dir())) {
      n += entry.path().string() != fs_->store().FirstContentSlotsPath();
    }
    return n;
  };
  EXPECT_EQ(staging_files(), 0u);
  std::vector<std::byte> expected(24, std::byte{0});
  std::memcpy(expected.data(), "0123456789", 10);
  std::memcpy(expected.data() + 20, "tail", 4);
  EXPECT_EQ(ReadAll(f), expected);
  SetAttrRequest grow;
  grow.size = StagedFile::kMostInMemory + 1;
  ASSERT_TRUE(fs_->SetAttr(As(0, 0, 100), f, grow).ok());
  EXPECT_EQ(staging_files(), 1u);
  expected.resize(*grow.size, std::byte{0});
  EXPECT_EQ(ReadAll(f), expected);
  Write(f, 5, AsBytes("xy"));
  expected[5] = std::byte{'x'};
  expected[6] = std::byte{'y'};
  ASSERT_TRUE(fs_->Flush(As(0, 0, 100), f).ok());
  EXPECT_EQ(staging_files(), 0u);
  EXPECT_EQ(ReadAll(f), expected);
}

// Appends by one writer, each committed at close, while observers ask for the size through
// GetAttr, Lookup and READDIRPLUS: no observer may ever see the size go back (a kernel that got
// an older size would append the next record over the last one).
TEST_F(FilesystemTest, SizesNeverGoBackWhileAppendsCommit) {
  Ino f = Create(kRootIno, "log");
  ASSERT_TRUE(fs_->Flush(As(0, 0, 100), f).ok());
  constexpr int kRecords = 400;
  std::atomic<bool> done{false};
  std::atomic<int> regressions{0};
  auto observe = [&](int how) {
    uint64_t last = 0;
    while (!done.load()) {
      uint64_t size = 0;
      if (how == 0) {
        auto a = fs_->GetAttr(f);
        if (!a.ok()) continue;
        size = a->attr.size;
      } else if (how == 1) {
        auto e = fs_->Lookup(As(0, 0, 500), kRootIno, "log");
        if (!e.ok() || e->attr.ino == 0) continue;
        size = e->attr.size;
        fs_->Forget(f, 1);
      } else {
        (void)fs_->ReadDir(kRootIno, 0, true, 100, [&](std::string_view n, const Entry& e,
                                                       uint64_t) {
          if (n == "log") size = e.attr.size;
          return true;
        });
        fs_->Forget(f, 1);
      }
      if (size < last) ++regressions;
      last = std::max(last, size);
    }
  };
  std::vector<std::thread> observers;
  for (int how = 0; how < 3; ++how) observers.emplace_back(observe, how);
  const std::string record(10, 'x');
  for (int i = 0; i < kRecords; ++i) {
    Caller w = As(0, 0, 1000 + i);  // open, write at the end, close: one process per record
    Write(f, static_cast<uint64_t>(i) * record.size(), AsBytes(record), w);
    ASSERT_TRUE(fs_->Flush(w, f).ok());
  }
  done = true;
  for (auto& t : observers) t.join();
  EXPECT_EQ(regressions.load(), 0);
  EXPECT_EQ(ReadAll(f).size(), kRecords * record.size());
}

TEST_F(FilesystemTest, TruncationIsStagedAndCommittedAtClose) {
  Ino a = Put(kRootIno, "a", AsBytes("hello world"));
  Caller t = As(0, 0, 300);
  auto shrunk = fs_->SetAttr(t, a, Size(5));
  ASSERT_TRUE(shrunk.ok()) << shrunk.status().ToString();
  EXPECT_EQ(shrunk->attr.size, 5u);
  EXPECT_EQ(Text(ReadAll(a)), "hello");
  EXPECT_EQ(Committed(a).size, 11u);
  ASSERT_TRUE(fs_->Flush(t, a).ok());
  EXPECT_EQ(Committed(a).size, 5u);

  // Growing zero-fills.
  ASSERT_TRUE(fs_->SetAttr(t, a, Size(8)).ok());
  ASSERT_TRUE(fs_->Flush(t, a).ok());
  EXPECT_EQ(Text(ReadAll(a)), std::string("hello\0\0\0", 8));
}

TEST_F(FilesystemTest, AWriteInTheMiddleKeepsTheRest) {
  auto data = kdn::test::PlainBytes(3 << 20, 7);
  Ino a = Put(kRootIno, "big", data);
  Write(a, 4096 + 3, AsBytes("patch"), As(0, 0, 500));
  ASSERT_TRUE(fs_->Flush(As(0, 0, 500), a).ok());
  std::memcpy(data.data() + 4096 + 3, "patch", 5);
  EXPECT_EQ(ReadAll(a), data);
  // Appending.
  Write(a, data.size(), AsBytes("tail"), As(0, 0, 500));
  ASSERT_TRUE(fs_->Fsync(As(0, 0, 500), a).ok());  // fsync commits too
  EXPECT_EQ(Committed(a).size, data.size() + 4);
}

TEST_F(FilesystemTest, ReadsFollowNewContentWhileTheOldIsStillStored) {
  Ino a = Put(kRootIno, "a", AsBytes("same old bytes"));
  Ino b = Put(kRootIno, "b", AsBytes("same old bytes"));  // one chunk, two files
  EXPECT_EQ(Text(ReadAll(a)), "same old bytes");          // a's content is now cached
  Caller w = As(0, 0, 900);
  ASSERT_TRUE(fs_->SetAttr(w, a, Size(0)).ok());
  Write(a, 0, AsBytes("new"), w);
  ASSERT_TRUE(fs_->Flush(w, a).ok());
  EXPECT_EQ(Text(ReadAll(a)), "new");
  EXPECT_EQ(Text(ReadAll(b)), "same old bytes");
}

TEST_F(FilesystemTest, StagedContentWithoutLiveWritersIsCommittedWhenIdle) {
  Ino a = Put(kRootIno, "a", AsBytes("0123456789"));
  // truncate(2) on a path: no close follows.
  ASSERT_TRUE(fs_->SetAttr(As(0, 0, 600), a, Size(3)).ok());
  fs_->CommitIdle();
  EXPECT_EQ(Committed(a).size, 10u) << "committed while the truncating process lives";
  procs_.dead_.insert(600);
  fs_->CommitIdle();
  EXPECT_EQ(Committed(a).size, 3u);
  EXPECT_EQ(fs_->staged_count(), 0u);
}

TEST_F(FilesystemTest, TheLastForgetCommitsWhatIsLeft) {
  Ino a = Create(kRootIno, "a");  // one kernel reference
  Write(a, 0, AsBytes("data"), As(0, 0, 700));
  fs_->Forget(a, 1);
  EXPECT_EQ(Committed(a).size, 4u);
}

TEST_F(FilesystemTest, UnmountCommitsEverything) {
  Ino a = Create(kRootIno, "a");
  Write(a, 0, AsBytes("data"), As(0, 0, 700));
  fs_->CommitAll();
  EXPECT_EQ(Committed(a).size, 4u);
}

TEST_F(FilesystemTest, AnUnlinkedFileStaysReadableWhileTheKernelHoldsIt) {
  Ino a = Put(kRootIno, "a", AsBytes("still here"));  // Create counted one reference
  ASSERT_TRUE(fs_->Unlink(As(0, 0, 1), kRootIno, "a").ok());
  EXPECT_FALSE(fs_->Lookup(As(0, 0, 1), kRootIno, "a")->attr.ino != 0);
  EXPECT_EQ(Text(ReadAll(a)), "still here");
  fs_->Forget(a, 1);
  EXPECT_FALSE(fs_->store().GetAttr(a).ok()) << "reclaimed after the last reference";
}

TEST_F(FilesystemTest, RenameReplacesAtomicallyOrRefuses) {
  Ino a = Put(kRootIno, "a", AsBytes("A"));
  Ino b = Put(kRootIno, "b", AsBytes("B"));
  Caller c = As(0, 0, 1);
  EXPECT_EQ(fs_->Rename(c, kRootIno, "a", kRootIno, "b", kRenameNoReplace).sys_errno(), EEXIST);
  ASSERT_TRUE(fs_->Rename(c, kRootIno, "a", kRootIno, "b", kRenameExchange).ok());
  EXPECT_EQ(fs_->Lookup(c, kRootIno, "a")->attr.ino, b);
  EXPECT_EQ(fs_->Lookup(c, kRootIno, "b")->attr.ino, a);
  ASSERT_TRUE(fs_->Rename(c, kRootIno, "a", kRootIno, "b", 0).ok());
  EXPECT_EQ(fs_->Lookup(c, kRootIno, "a")->attr.ino, 0u);
  EXPECT_EQ(Text(ReadAll(fs_->Lookup(c, kRootIno, "b")->attr.ino)), "B");
  // The replaced file is still referenced by the kernel: readable until forgotten.
  EXPECT_EQ(Text(ReadAll(a)), "A");
  Ino d = MkDir(kRootIno, "d");
  Ino sub = MkDir(d, "sub");
  EXPECT_EQ(fs_->Rename(c, kRootIno, "d", sub, "x", 0).sys_errno(), EINVAL);
  EXPECT_EQ(fs_->Rename(c, kRootIno, "b", kRootIno, "d", 0).sys_errno(), EISDIR);
}

TEST_F(FilesystemTest, HardLinksShareOneChunk) {
  auto kv = MakeKv(32, 3);
  Ino set1 = MkDir(kRootIno, "set1");
  Ino set2 = MkDir(kRootIno, "set2");
  Ino f = Put(set1, "doc.kv", kv);
  auto linked = fs_->Link(As(0, 0, 1), f, set2, "doc.kv");
  ASSERT_TRUE(linked.ok()) << linked.status().ToString();
  EXPECT_EQ(linked->attr.ino, f);
  EXPECT_EQ(linked->attr.nlink, 2u);
  Put(set2, "copy.kv", kv);  // same bytes under another inode: stored once
  EXPECT_EQ(fs_->store().Stats().chunks, 1u);
  EXPECT_EQ(fs_->Link(As(0, 0, 1), set1, set2, "dirlink").status().sys_errno(), EPERM);
}

TEST_F(FilesystemTest, SymlinksAndSpecialFiles) {
  auto s = fs_->MakeSymlink(As(0, 0, 1), kRootIno, "s", "target/path");
  ASSERT_TRUE(s.ok());
  EXPECT_TRUE(S_ISLNK(s->attr.mode));
  EXPECT_EQ(*fs_->ReadLink(s->attr.ino), "target/path");
  auto fifo = fs_->MakeNode(As(0, 0, 1), kRootIno, "fifo", S_IFIFO | 0600, 0);
  ASSERT_TRUE(fifo.ok());
  EXPECT_TRUE(S_ISFIFO(fifo->attr.mode));
  EXPECT_EQ(fs_->Write(As(0, 0, 1), fifo->attr.ino, 0, AsBytes("x")).status().sys_errno(), EINVAL);
}

TEST_F(FilesystemTest, NewNodesBelongToTheCallerAndSetgidDirectoriesPassTheirGroupOn) {
  Caller user = As(1000, 1001, 42);
  Ino mine = Create(kRootIno, "mine", user);
  EXPECT_EQ(Committed(mine).uid, 1000u);
  EXPECT_EQ(Committed(mine).gid, 1001u);

  Ino shared = MkDir(kRootIno, "shared", As(0, 0, 1), 0775);
  ASSERT_TRUE(fs_->SetAttr(As(0, 0, 1), shared, ModeAndGroup(02777, 50)).ok());
  Ino file = Create(shared, "f", user);
  EXPECT_EQ(Committed(file).gid, 50u);
  Ino sub = MkDir(shared, "sub", user);
  EXPECT_EQ(Committed(sub).gid, 50u);
  EXPECT_TRUE(Committed(sub).mode & S_ISGID);
  // A setgid file in a group its creator is not in loses the bit, as on ext4.
  Ino sgid = Create(shared, "sgid", user, 02755);
  EXPECT_FALSE(Committed(sgid).mode & S_ISGID);
  user.in_group = [](uint32_t g) { return g == 50; };
  Ino member = Create(shared, "member", user, 02755);
  EXPECT_TRUE(Committed(member).mode & S_ISGID);
  // A change of the directory applies to the very next new node in it (kdnfs remembers the
  // directory between creates).
  ASSERT_TRUE(fs_->SetAttr(As(0, 0, 1), shared, ModeAndGroup(02777, 60)).ok());
  EXPECT_EQ(Committed(Create(shared, "after", user)).gid, 60u);
  ASSERT_TRUE(fs_->SetAttr(As(0, 0, 1), shared, ModeAndGroup(0777, 60)).ok());
  EXPECT_EQ(Committed(Create(shared, "plain", user)).gid, 1001u);
}

TEST_F(FilesystemTest, TheControlDirectoryIsHiddenButReachable) {
  Put(kRootIno, "visible", AsBytes("x"));
  auto names = List(kRootIno);
  EXPECT_EQ(std::count(names.begin(), names.end(), ".kdn"), 0);
  EXPECT_EQ(std::count(names.begin(), names.end(), "visible"), 1);

  Caller c = As(0, 0, 1);
  auto kdn = fs_->Lookup(c, kRootIno, ".kdn");
  ASSERT_TRUE(kdn.ok());
  EXPECT_EQ(kdn->attr.ino, kControlDirIno);
  EXPECT_TRUE(S_ISDIR(kdn->attr.mode));
  auto listed = List(kControlDirIno);
  EXPECT_EQ(listed, (std::vector<std::string>{".", "..", "stats", "metrics", "by-id"}));

  auto stats = fs_->Lookup(c, kControlDirIno, "stats");
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->entry_timeout, 0.0);
  std::string text = Text(ReadAll(kStatsIno));
  EXPECT_EQ(text.size(), stats->attr.size);
  std::map<std::string, std::string> values;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    auto space = line.find(' ');
    ASSERT_NE(space, std::string::npos) << line;
    EXPECT_EQ(line.find(' ', space + 1), std::string::npos) << "one `name value` per line";
    values[line.substr(0, space)] = line.substr(space + 1);
  }
  for (const char* key : {"files", "chunks", "logical_bytes", "stored_bytes", "dedup_ratio",
                          "compression_ratio", "reads", "read_bytes", "prefix_hits", "evictions",
                          "errors", "read_latency_p50_us", "read_latency_p99_us"}) {
    EXPECT_TRUE(values.count(key)) << key;
  }
  EXPECT_EQ(values["files"], "1");

  // Nothing under /.kdn can be changed.
  EXPECT_EQ(fs_->Create(c, kControlDirIno, "x", 0644, O_CREAT).status().sys_errno(), EPERM);
  EXPECT_EQ(fs_->MakeDir(c, kRootIno, ".kdn", 0755).status().sys_errno(), EPERM);
  EXPECT_EQ(fs_->Write(c, kStatsIno, 0, AsBytes("x")).status().sys_errno(), EPERM);
  EXPECT_EQ(fs_->Unlink(c, kControlDirIno, "stats").sys_errno(), EPERM);
  EXPECT_EQ(fs_->Rename(c, kRootIno, "visible", kRootIno, ".kdn", 0).sys_errno(), EPERM);
  EXPECT_EQ(fs_->SetAttr(c, kStatsIno, ModeAndGroup(0777)).status().sys_errno(), EPERM);
}

class SetPrefixTest : public FilesystemTest {
 protected:
  // The file `<dir>/.kdn-prefix/<hash>` leads to ("../name"), or the lookup's error.
  Result<std::string> Resolve(const Caller& c, Ino dir, const Hash128& hash) {
    auto vdir = fs_->Lookup(c, dir, ".kdn-prefix");
    if (!vdir.ok()) return vdir.status();
    EXPECT_TRUE(S_ISDIR(vdir->attr.mode));
    auto link = fs_->Lookup(c, vdir->attr.ino, hash.ToHex());
    if (!link.ok()) return link.status();
    EXPECT_TRUE(S_ISLNK(link->attr.mode));
    EXPECT_EQ(link->entry_timeout, 0.0);
    auto target = fs_->ReadLink(link->attr.ino);
    fs_->Forget(link->attr.ino, 1);
    return target;
  }
  // The same as text, the error's included, for EXPECT_EQ.
  std::string Got(const Caller& c, Ino dir, const Hash128& hash) {
    auto r = Resolve(c, dir, hash);
    return r.ok() ? *r : "error: " + r.status().ToString();
  }

  const Caller a_ = As(1000, 1000, 10);
  const Caller b_ = As(2000, 2000, 20);
  const std::vector<uint32_t> tokens_ = PromptTokens(600, 3);  // three prefix hashes of 256 tokens
  const std::vector<Hash128> chain_ =
      PrefixHashes(ModelPreset("tiny")->Fingerprint(), tokens_, kDefaultChunkTokens);
};

TEST_F(SetPrefixTest, OnlyFilesOfOwnersTheSetTrustsAreAnswered) {
  ASSERT_EQ(chain_.size(), 3u);
  Ino root_set = MkDir(kRootIno, "shared", As(0, 0, 1), 0777);
  ASSERT_TRUE(fs_->SetAttr(As(0, 0, 1), root_set, ModeAndGroup(0777)).ok());
  Ino a_set = MkDir(root_set, "a-set", a_, 0777);  // A's set, writable by B
  ASSERT_TRUE(fs_->SetAttr(a_, a_set, ModeAndGroup(0777)).ok());
  Ino b_set = MkDir(root_set, "b-set", b_);
  // B stores a cache for A's prefix, with other values, in B's own set and in A's set.
  auto forged = MakeKvOver(tokens_, 666);
  Put(b_set, "b.kv", forged, b_);
  Put(a_set, "0-b.kv", forged, b_);

  for (const Hash128& h : chain_) {
    EXPECT_TRUE(Resolve(a_, a_set, h).status().IsNotFound()) << "A has not listed B";
    EXPECT_EQ(Got(a_, b_set, h), "../b.kv") << "B's own set trusts B";
  }
  // A's own cache is answered; B's is still not, even though its name sorts first.
  Put(a_set, "a.kv", MakeKvOver(tokens_, 1), a_);
  for (const Hash128& h : chain_) EXPECT_EQ(Got(a_, a_set, h), "../a.kv");
  // Whoever asks gets the same answer: the set decides, not the caller.
  EXPECT_EQ(Got(b_, a_set, chain_[0]), "../a.kv");
  ASSERT_TRUE(fs_->Unlink(a_, a_set, "a.kv").ok());
  EXPECT_TRUE(Resolve(a_, a_set, chain_[1]).status().IsNotFound());

  // Only the set's owner (or root) decides whom it trusts; B cannot trust itself.
  EXPECT_EQ(fs_->SetXattr(b_, a_set, "user.kdn.trust", "2000", 0).sys_errno(), EPERM);
  EXPECT_EQ(fs_->RemoveXattr(b_, a_set, "user.kdn.trust").sys_errno(), EPERM);
  EXPECT_EQ(fs_->SetXattr(a_, a_set, "user.kdn.trust", "2000,x", 0).sys_errno(), EINVAL);
  EXPECT_EQ(fs_->SetXattr(a_, a_set, "user.kdn.trust", "-1", 0).sys_errno(), EINVAL);
  EXPECT_EQ(fs_->SetXattr(a_, a_set, "user.kdn.trust", std::string(2000, '1'), 0).sys_errno(),
            EINVAL);
  Ino file = Put(a_set, "notes.txt", AsBytes("x"), a_);
  EXPECT_EQ(fs_->SetXattr(a_, file, "user.kdn.trust", "2000", 0).sys_errno(), EPERM);
  ASSERT_TRUE(fs_->SetXattr(a_, a_set, "user.kdn.trust", " 2000, 3000,2000", 0).ok());
  EXPECT_EQ(*fs_->GetXattr(b_, a_set, "user.kdn.trust"), "2000,3000");
  auto names = fs_->ListXattr(a_, a_set);
  ASSERT_TRUE(names.ok());
  EXPECT_EQ(std::count(names->begin(), names->end(), "user.kdn.trust"), 1);
  // Once A lists B, B's file in A's set is answered.
  for (const Hash128& h : chain_) EXPECT_EQ(Got(a_, a_set, h), "../0-b.kv");
  ASSERT_TRUE(fs_->RemoveXattr(a_, a_set, "user.kdn.trust").ok());
  EXPECT_TRUE(Resolve(a_, a_set, chain_[0]).status().IsNotFound());
  // Root may change it too.
  ASSERT_TRUE(fs_->SetXattr(As(0, 0, 1), a_set, "user.kdn.trust", "2000", 0).ok());
  EXPECT_EQ(Got(a_, a_set, chain_[0]), "../0-b.kv");
}

TEST_F(SetPrefixTest, OnlyKvFilesDirectlyInTheSetAreAnswered) {
  Ino set = MkDir(kRootIno, "set", a_);
  Ino sub = MkDir(set, "sub", a_);
  auto kv = MakeKvOver(tokens_, 1);
  Put(sub, "deep.kv", kv, a_);
  Put(set, "copy.bin", kv, a_);  // the same content under a name that is not a `.kv` file
  EXPECT_TRUE(Resolve(a_, set, chain_[0]).status().IsNotFound());
  EXPECT_EQ(Got(a_, sub, chain_[0]), "../deep.kv");
  // The root directory is a set like any other.
  Put(kRootIno, "top.kv", kv, As(0, 0, 1));
  EXPECT_EQ(Got(a_, kRootIno, chain_[2]), "../top.kv");

  // Not a hash, no such hash, a prefix of nothing in the set.
  auto vdir = fs_->Lookup(a_, set, ".kdn-prefix");
  ASSERT_TRUE(vdir.ok());
  EXPECT_TRUE(fs_->Lookup(a_, vdir->attr.ino, "not-hex").status().IsNotFound());
  EXPECT_TRUE(fs_->Lookup(a_, vdir->attr.ino, std::string(32, '0')).status().IsNotFound());
  // The virtual directory is not listed, lists nothing, and its name cannot be taken.
  auto listed = List(set);
  EXPECT_EQ(std::count(listed.begin(), listed.end(), ".kdn-prefix"), 0);
  EXPECT_EQ(List(vdir->attr.ino), (std::vector<std::string>{".", ".."}));
  EXPECT_EQ(fs_->Create(a_, set, ".kdn-prefix", 0644, O_CREAT).status().sys_errno(), EPERM);
  EXPECT_EQ(fs_->MakeDir(a_, sub, ".kdn-prefix", 0755).status().sys_errno(), EPERM);
  EXPECT_EQ(fs_->Create(a_, vdir->attr.ino, "x.kv", 0644, O_CREAT).status().sys_errno(), EPERM);
  Ino file = Put(set, "f", AsBytes("x"), a_);
  EXPECT_EQ(fs_->Lookup(a_, file, ".kdn-prefix").status().sys_errno(), ENOTDIR);
  // A rename in the set is followed.
  ASSERT_TRUE(fs_->Rename(a_, sub, "deep.kv", set, "moved.kv", 0).ok());
  EXPECT_EQ(Got(a_, set, chain_[1]), "../moved.kv");
  EXPECT_TRUE(Resolve(a_, sub, chain_[1]).status().IsNotFound());
}

// The prefix index is a hint: a file it claims holds a prefix is only answered when the file's
// own tokens chain to that hash. A forged index row (here written straight into the database of
// a closed store, the way a bug or a damaged database would leave it) is never answered.
TEST_F(SetPrefixTest, AFileWhoseTokensDoNotChainToTheHashIsNeverAnswered) {
  Ino set = MkDir(kRootIno, "set", a_);
  Put(set, "other.kv", MakeKvOver(PromptTokens(300, 99), 5), a_);  // different tokens
  auto own = PrefixHashes(ModelPreset("tiny")->Fingerprint(), PromptTokens(300, 99), 256);
  fs_.reset();
  ASSERT_EQ(kdn::test::ForgePrefixIndexRow(dir_ / "store/meta.db", chain_[0], own[0]), "");
  Open();
  // The index does claim it...
  const uint32_t owners[] = {1000};
  auto claimed = fs_->store().LookupPrefixInDir(set, chain_[0], owners);
  ASSERT_TRUE(claimed.ok()) << claimed.status().ToString();
  ASSERT_EQ(claimed->size(), 1u);
  EXPECT_EQ(claimed->front().name, "other.kv");
  // ...and the lookup does not answer it, while the file's own prefix still resolves.
  EXPECT_TRUE(Resolve(a_, set, chain_[0]).status().IsNotFound());
  EXPECT_EQ(Got(a_, set, own[1]), "../other.kv");
}

TEST_F(FilesystemTest, StoreWidePrefixLookupIsGone) {
  Caller c = As(0, 0, 1);
  EXPECT_TRUE(fs_->Lookup(c, kControlDirIno, "prefix").status().IsNotFound());
}

TEST_F(FilesystemTest, IdLinksAnswerOnlyWithAPathTheCallerCanReach) {
  const Caller root = As(0, 0, 1), a = As(1000, 1000, 10), b = As(2000, 2000, 20);
  Ino open_dir = MkDir(kRootIno, "open", a, 0755);
  Ino secret = MkDir(open_dir, "secret", a, 0700);
  Ino doc = Put(secret, "secret.kv", MakeKv(100, 4), a);
  auto id = fs_->GetXattr(a, doc, "user.kdn.id");
  ASSERT_TRUE(id.ok());
  auto link_for = [&](const Caller& c) -> Result<std::string> {
    auto e = fs_->Lookup(c, kByIdDirIno, *id);
    if (!e.ok()) return e.status();
    EXPECT_EQ(e->entry_timeout, 0.0);
    return fs_->ReadLink(e->attr.ino);
  };
  EXPECT_EQ(*link_for(a), "../../open/secret/secret.kv");
  EXPECT_EQ(*link_for(root), "../../open/secret/secret.kv");
  EXPECT_TRUE(link_for(b).status().IsNotFound()) << "B cannot search A's 0700 directory";
  // Group search permission counts, with supplementary groups.
  ASSERT_TRUE(fs_->SetAttr(a, secret, ModeAndGroup(0710, 3000)).ok());
  EXPECT_TRUE(link_for(b).status().IsNotFound());
  Caller member = b;
  member.in_group = [](uint32_t g) { return g == 3000; };
  EXPECT_EQ(*link_for(member), "../../open/secret/secret.kv");
  // Every directory on the way counts, the root included.
  ASSERT_TRUE(fs_->SetAttr(a, open_dir, ModeAndGroup(0700)).ok());
  EXPECT_TRUE(link_for(member).status().IsNotFound());
  // The same answer as for an id nobody stores.
  EXPECT_TRUE(link_for(root).ok());
  auto none = fs_->Lookup(b, kByIdDirIno, std::string(id->size(), '0'));
  EXPECT_TRUE(none.status().IsNotFound());
  EXPECT_TRUE(fs_->Lookup(b, kByIdDirIno, "not-hex").status().IsNotFound());
  // A file the caller can reach is answered through its own path.
  Ino pub = Put(kRootIno, "pub.txt", AsBytes("public"), a);
  auto pub_id = fs_->GetXattr(a, pub, "user.kdn.id");
  auto e = fs_->Lookup(b, kByIdDirIno, *pub_id);
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(*fs_->ReadLink(e->attr.ino), "../../pub.txt");
}

TEST_F(FilesystemTest, StoreWideStatsAreForRootAndTheStoreOwnerOnly) {
  Put(kRootIno, "doc.kv", MakeKv(100, 4));
  // This process opened the store: it is the store's owner, as the daemon is.
  const Caller owner = As(::geteuid(), 0, 1);
  const Caller other = As(::geteuid() == 4242 ? 4343 : 4242, 4242, 2);
  for (const Caller& c : {As(0, 0, 1), owner}) {
    auto st = fs_->Lookup(c, kControlDirIno, "stats");
    ASSERT_TRUE(st.ok());
    EXPECT_EQ(st->attr.ino, kStatsIno);
    EXPECT_EQ(st->attr.mode, S_IFREG | 0400u) << "not readable by others even by inode";
    EXPECT_NE(Text(ReadAll(kStatsIno)).find("\nchunks 1\n"), std::string::npos);
  }
  auto st = fs_->Lookup(other, kControlDirIno, "stats");
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->attr.ino, kUserStatsIno);
  EXPECT_EQ(st->entry_timeout, 0.0);
  std::string text = Text(ReadAll(kUserStatsIno));
  EXPECT_EQ(text.size(), st->attr.size);
  for (const char* key : {"chunks", "stored_bytes", "dedup_ratio", "dedup_hits", "puts",
                          "used_bytes", "files", "kv_chunks", "prefix_hits"}) {
    EXPECT_EQ(text.find(std::string("\n") + key + " "), std::string::npos) << key;
    EXPECT_FALSE(text.starts_with(std::string(key) + " ")) << key;
  }
  EXPECT_EQ(text, "store_wide_counters 0\n");
}

TEST_F(FilesystemTest, MetricsFollowTheStatsRule) {
  Put(kRootIno, "doc.kv", MakeKv(100, 4));
  const Caller owner = As(::geteuid(), 0, 1);
  const Caller other = As(::geteuid() == 4242 ? 4343 : 4242, 4242, 2);
  for (const Caller& c : {As(0, 0, 1), owner}) {
    auto m = fs_->Lookup(c, kControlDirIno, "metrics");
    ASSERT_TRUE(m.ok());
    EXPECT_EQ(m->attr.ino, kMetricsIno);
    EXPECT_EQ(m->attr.mode, S_IFREG | 0400u);
    EXPECT_EQ(m->entry_timeout, 0.0);
    const std::string text = Text(ReadAll(kMetricsIno));
    EXPECT_EQ(text.size(), m->attr.size);
    EXPECT_NE(text.find("\nkdn_store_chunks 1\n"), std::string::npos) << text;
    EXPECT_NE(text.find("# TYPE kdn_store_read_duration_seconds histogram\n"), std::string::npos);
  }
  auto m = fs_->Lookup(other, kControlDirIno, "metrics");
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->attr.ino, kUserMetricsIno);
  const std::string text = Text(ReadAll(kUserMetricsIno));
  EXPECT_EQ(text.size(), m->attr.size);
  EXPECT_EQ(text.find("kdn_store_chunks"), std::string::npos) << text;
  EXPECT_EQ(text.find("kdn_fuse_requests_total"), std::string::npos) << text;
  EXPECT_NE(text.find("\nkdn_store_wide_metrics 0\n"), std::string::npos) << text;
}

TEST_F(FilesystemTest, MetricsCountRequestsPerOperationAndOutcome) {
  fs_->requests().Succeeded(FsOp::kRmdir);
  EXPECT_EQ(fs_->requests().Failed(FsOp::kRmdir, ENOTEMPTY, "not empty"), ENOTEMPTY);
  EXPECT_EQ(fs_->requests().Failed(FsOp::kRmdir, ENOTEMPTY, "not empty"), ENOTEMPTY);
  const std::string text = fs_->MetricsText();
  EXPECT_NE(text.find("\nkdn_fuse_requests_total{op=\"rmdir\",outcome=\"ok\"} 1\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("\nkdn_fuse_requests_total{op=\"rmdir\",outcome=\"ENOTEMPTY\"} 2\n"),
            std::string::npos);
  EXPECT_NE(text.find("\nkdn_fuse_requests_total{op=\"lookup\",outcome=\"ok\"} 0\n"),
            std::string::npos);
  EXPECT_EQ(text.find("outcome=\"EIO\""), std::string::npos) << "only outcomes seen";
  // One HELP and TYPE per family, before its samples.
  EXPECT_EQ(text.find("# TYPE kdn_fuse_requests_total counter\n"),
            text.find("# HELP kdn_fuse_requests_total") +
                text.substr(text.find("# HELP kdn_fuse_requests_total")).find('\n') + 1);
}

TEST_F(FilesystemTest, KdnAttributesDescribeTheContent) {
  auto kv = MakeKv(100, 9, "q8");
  Ino set = MkDir(kRootIno, "set");
  Ino doc = Put(set, "doc.kv", kv);
  Caller c = As(0, 0, 1);
  auto get = [&](const char* name) {
    auto v = fs_->GetXattr(c, doc, name);
    EXPECT_TRUE(v.ok()) << name << ": " << v.status().ToString();
    return v.ok() ? *v : std::string();
  };
  EXPECT_EQ(get("user.kdn.model"), "stories260K");
  EXPECT_EQ(get("user.kdn.tokens"), "100");
  EXPECT_EQ(get("user.kdn.layers"), "5");
  EXPECT_EQ(get("user.kdn.codec"), "q8");
  EXPECT_EQ(get("user.kdn.fingerprint"), ModelPreset("tiny")->Fingerprint().ToHex());
  EXPECT_EQ(get("user.kdn.raw_bytes"), std::to_string(5 * 2 * 100 * 32 * 4));
  EXPECT_EQ(get("user.kdn.id"), test::Sha256Hex(kv));
  EXPECT_EQ(get("user.kdn.pin"), "0");

  // No attribute tells where the bytes lie in the store any more (engines read the file).
  EXPECT_TRUE(fs_->GetXattr(c, doc, "user.kdn.extents").status().IsNotFound());
  EXPECT_EQ(fs_->SetXattr(c, doc, "user.kdn.extents", "kdn-extents 1", 0).sys_errno(), EPERM);

  auto names = fs_->ListXattr(c, doc);
  ASSERT_TRUE(names.ok());
  for (const char* n : {"user.kdn.model", "user.kdn.id", "user.kdn.pin"}) {
    EXPECT_EQ(std::count(names->begin(), names->end(), n), 1) << n;
  }
  EXPECT_EQ(std::count(names->begin(), names->end(), "user.kdn.extents"), 0);
  // Computed attributes are read-only; other user attributes are kept.
  EXPECT_EQ(fs_->SetXattr(c, doc, "user.kdn.model", "x", 0).sys_errno(), EPERM);
  EXPECT_EQ(fs_->SetXattr(c, doc, "user.kdn.whatever", "x", 0).sys_errno(), EPERM);
  EXPECT_EQ(fs_->SetXattr(c, doc, "user.kdn.pin", "maybe", 0).sys_errno(), EINVAL);
  ASSERT_TRUE(fs_->SetXattr(c, doc, "user.origin", "wiki-2024", 0).ok());
  EXPECT_EQ(*fs_->GetXattr(c, doc, "user.origin"), "wiki-2024");
  EXPECT_EQ(fs_->SetXattr(c, doc, "user.origin", "x", XATTR_CREATE).sys_errno(), EEXIST);
  EXPECT_EQ(fs_->SetXattr(c, doc, "user.none", "x", XATTR_REPLACE).sys_errno(), ENODATA);
  ASSERT_TRUE(fs_->RemoveXattr(c, doc, "user.origin").ok());
  EXPECT_TRUE(fs_->GetXattr(c, doc, "user.origin").status().IsNotFound());
  EXPECT_EQ(fs_->SetXattr(c, doc, "system.posix_acl_access", "x", 0).sys_errno(), EOPNOTSUPP);

  // Pins and evictable directories.
  ASSERT_TRUE(fs_->SetXattr(c, doc, "user.kdn.pin", "1\n", 0).ok());
  EXPECT_EQ(get("user.kdn.pin"), "1");
  ASSERT_TRUE(fs_->SetXattr(c, set, "user.kdn.evictable", "1", 0).ok());
  EXPECT_EQ(*fs_->GetXattr(c, set, "user.kdn.evictable"), "1");
  Ino later = Put(set, "later.kv", MakeKv(10, 10));
  EXPECT_EQ(*fs_->GetXattr(c, later, "user.kdn.evictable"), "1");
  EXPECT_EQ(get("user.kdn.evictable"), "0") << "only entries created later inherit it";
  // A plain file has an id and extents but no `.kv` attributes.
  Ino plain = Put(kRootIno, "README", AsBytes("about this set\n"));
  EXPECT_TRUE(fs_->GetXattr(c, plain, "user.kdn.id").ok());
  EXPECT_TRUE(fs_->GetXattr(c, plain, "user.kdn.model").status().IsNotFound());
}

TEST_F(FilesystemTest, ListingsResumeFromTheirCookies) {
  Ino d = MkDir(kRootIno, "d");
  std::set<std::string> expected = {".", ".."};
  for (int i = 0; i < 300; ++i) {
    std::string name = "file-" + std::to_string(i);
    Create(d, name);
    expected.insert(name);
  }
  // Small replies: seven entries each, resumed from the last cookie taken.
  std::vector<std::string> seen;
  uint64_t cookie = 0;
  for (int calls = 0; calls < 1000; ++calls) {
    size_t taken = 0;
    uint64_t next = cookie;
    Status st =
        fs_->ReadDir(d, cookie, true, 7, [&](std::string_view n, const Entry& e, uint64_t c) {
          if (taken == 7) return false;
          EXPECT_NE(e.attr.ino, 0u);
          seen.emplace_back(n);
          next = c;
          ++taken;
          return true;
        });
    ASSERT_TRUE(st.ok());
    if (taken == 0) break;
    cookie = next;
  }
  EXPECT_EQ(seen.size(), expected.size());
  EXPECT_EQ(std::set<std::string>(seen.begin(), seen.end()), expected);
}

TEST_F(FilesystemTest, ListsOneHundredThousandEntries) {
  Ino d = MkDir(kRootIno, "big");
  NewNode node;
  node.mode = S_IFREG | 0644;
  for (int i = 0; i < 100000; ++i) {
    ASSERT_TRUE(fs_->store().MakeNode(d, "chunk-" + std::to_string(i), node).ok()) << i;
  }
  // As the kernel lists: replies of about 4 KiB, each resumed from the last cookie it took.
  size_t seen = 0, calls = 0;
  uint64_t cookie = 0;
  std::set<std::string> names;
  for (;;) {
    size_t bytes = 0, taken = 0;
    uint64_t next = cookie;
    Status st = fs_->ReadDir(d, cookie, false, 4096 / 32,
                             [&](std::string_view n, const Entry&, uint64_t c) {
                               bytes += 24 + (n.size() + 7) / 8 * 8;  // a fuse_dirent
                               if (bytes > 4096) return false;
                               if (n != "." && n != "..") names.emplace(n);
                               next = c;
                               ++taken;
                               return true;
                             });
    ASSERT_TRUE(st.ok()) << st.ToString();
    if (taken == 0) break;
    seen += taken;
    cookie = next;
    ++calls;
  }
  EXPECT_EQ(seen, 100002u);
  EXPECT_EQ(names.size(), 100000u);
  EXPECT_GT(calls, 500u) << "small replies, resumed by cookie";
}

TEST_F(FilesystemTest, NamesAreChecked) {
  std::string long_name(256, 'x');
  EXPECT_EQ(fs_->Create(As(0, 0, 1), kRootIno, long_name, 0644, O_CREAT).status().sys_errno(),
            ENAMETOOLONG);
  EXPECT_EQ(fs_->Lookup(As(0, 0, 1), kRootIno, long_name).status().sys_errno(), ENAMETOOLONG);
  Create(kRootIno, "dup");
  EXPECT_EQ(fs_->Create(As(0, 0, 1), kRootIno, "dup", 0644, O_CREAT | O_EXCL).status().sys_errno(),
            EEXIST);
  // O_CREAT without O_EXCL opens (and with O_TRUNC truncates) the existing file.
  Ino existing = Put(kRootIno, "exists", AsBytes("content"));
  auto opened = fs_->Create(As(0, 0, 55), kRootIno, "exists", 0644, O_CREAT | O_TRUNC);
  ASSERT_TRUE(opened.ok());
  EXPECT_EQ(opened->attr.ino, existing);
  EXPECT_EQ(fs_->GetAttr(existing)->attr.size, 0u);
}

TEST_F(FilesystemTest, StatFsShowsTheCapacity) {
  Open(64u << 20);
  auto before = fs_->StatFs();
  ASSERT_TRUE(before.ok());
  EXPECT_EQ(before->capacity_bytes, 64u << 20);
  Put(kRootIno, "f", kdn::test::PlainBytes(1 << 20, 3));
  auto after = fs_->StatFs();
  EXPECT_GE(after->used_bytes, before->used_bytes + (1u << 20));
}

TEST_F(FilesystemTest, EvictionIsAnnouncedToTheKernel) {
  Open(2u << 20);  // room for about three 600 KiB files
  Caller c = As(0, 0, 1);
  Ino cache = MkDir(kRootIno, "cache");
  ASSERT_TRUE(fs_->SetXattr(c, cache, "user.kdn.evictable", "1", 0).ok());
  std::vector<Ino> files;
  for (int i = 0; i < 6; ++i) {
    files.push_back(Put(cache, "f" + std::to_string(i), kdn::test::PlainBytes(600 << 10, 20 + i)));
    fs_->Forget(files.back(), 1);  // the kernel let go of it (eviction skips open files)
  }
  {
    std::lock_guard lock(cache_.mu);
    ASSERT_FALSE(cache_.forgotten.empty());
    EXPECT_EQ(cache_.forgotten.front().name, "f0");
    EXPECT_EQ(cache_.forgotten.front().parent, cache);
  }
  EXPECT_EQ(fs_->Lookup(c, cache, "f0")->attr.ino, 0u);
  // Not evictable: a full store refuses the commit; the file keeps its (empty) content.
  Ino keep = MkDir(kRootIno, "keep");
  Ino big = Create(keep, "big");
  auto written = fs_->Write(As(0, 0, 800), big, 0, kdn::test::PlainBytes(3 << 20, 99));
  EXPECT_EQ(written.status().sys_errno(), ENOSPC);
  EXPECT_TRUE(fs_->Flush(As(0, 0, 800), big).ok());
  EXPECT_EQ(Committed(big).size, 0u);
}

// Issue 11: space is reserved as a file is written. A write that would pass the capacity fails
// with ENOSPC at write(), not at close(); what was written before it commits; the reservation is
// given back when the content commits or is dropped.
TEST_F(FilesystemTest, AWriteBeyondTheCapacityFailsAtWrite) {
  Open(4u << 20);
  Caller c = As(0, 0, 100);
  Ino f = Create(kRootIno, "f");
  for (uint64_t i = 0; i < 3; ++i) Write(f, i << 20, kdn::test::PlainBytes(1 << 20, 7 + i), c);
  auto more = fs_->Write(c, f, 3u << 20, kdn::test::PlainBytes(2 << 20, 10));
  ASSERT_FALSE(more.ok());
  EXPECT_EQ(more.status().sys_errno(), ENOSPC);
  EXPECT_EQ(fs_->GetAttr(f)->attr.size, 3u << 20);
  ASSERT_TRUE(fs_->Flush(c, f).ok());
  EXPECT_EQ(Committed(f).size, 3u << 20);
  EXPECT_EQ(fs_->StatFs()->used_bytes, 3u << 20);  // the chunk; nothing left reserved
  // Refused content gives its reservation back too.
  Ino bad = Create(kRootIno, "bad.kv");
  Write(bad, 0, kdn::test::CorruptKv(MakeKv(64, 2)), c);
  EXPECT_EQ(fs_->Flush(c, bad).sys_errno(), EINVAL);
  EXPECT_EQ(fs_->StatFs()->used_bytes, 3u << 20);
  // So the last MiB is there for the next file.
  Put(kRootIno, "g", kdn::test::PlainBytes(1 << 20, 11), c);
  EXPECT_EQ(fs_->StatFs()->used_bytes, 4u << 20);
}

// Issue 12, item 9: `truncate -s 20G` on a 300M store is ENOSPC at once (it was accepted, and the
// close then spent the daemon's CPU hashing 20 GiB of zeros before refusing it).
TEST_F(FilesystemTest, ATruncateBeyondTheCapacityFailsAtOnce) {
  Open(300u << 20);
  Caller c = As(0, 0, 100);
  Ino f = Put(kRootIno, "f", AsBytes("hello"), c);
  Status st = fs_->SetAttr(c, f, Size(uint64_t{20} << 30)).status();
  EXPECT_EQ(st.sys_errno(), ENOSPC) << st.ToString();
  EXPECT_EQ(fs_->GetAttr(f)->attr.size, 5u);
  EXPECT_TRUE(fs_->Flush(c, f).ok());
  EXPECT_EQ(Text(ReadAll(f)), "hello");
  // A new file too, and the largest offset a write can name.
  Ino g = Create(kRootIno, "g", c);
  EXPECT_EQ(fs_->SetAttr(c, g, Size(uint64_t{20} << 30)).status().sys_errno(), ENOSPC);
  EXPECT_EQ(fs_->Write(c, g, (uint64_t{1} << 62), AsBytes("x")).status().sys_errno(), ENOSPC);
}

// Issue 12, item 9: -o user_quota. A user's files (sizes rounded to 4 KiB) stay within the quota:
// the write that would pass it fails with EDQUOT; other users and root are counted apart.
TEST_F(FilesystemTest, AUsersFilesStayWithinTheUserQuota) {
  Open(0, 1u << 20);
  Caller root = As(0, 0, 100);
  Caller alice = As(1000, 1000, 500);
  Caller bob = As(1001, 1001, 600);
  Ino dir = MkDir(kRootIno, "d", root, 0777);
  Ino a = Put(dir, "a", kdn::test::PlainBytes(600 << 10, 1), alice);
  Ino b = Create(dir, "b", alice);
  auto over = fs_->Write(alice, b, 0, kdn::test::PlainBytes(600 << 10, 2));
  EXPECT_EQ(over.status().sys_errno(), EDQUOT) << over.status().ToString();
  EXPECT_EQ(fs_->SetAttr(alice, b, Size(600 << 10)).status().sys_errno(), EDQUOT);
  Write(b, 0, kdn::test::PlainBytes(400 << 10, 3), alice);  // 600 + 400 KiB fit in 1 MiB
  ASSERT_TRUE(fs_->Flush(alice, b).ok());
  Put(dir, "c", kdn::test::PlainBytes(600 << 10, 4), bob);
  Put(dir, "r", kdn::test::PlainBytes(2 << 20, 5), root);
  // Rewriting a file counts its new size instead of its old one.
  ASSERT_TRUE(fs_->SetAttr(alice, a, Size(0)).ok());
  Write(a, 0, kdn::test::PlainBytes(600 << 10, 6), alice);
  ASSERT_TRUE(fs_->Flush(alice, a).ok());
  // Removed files count no more.
  ASSERT_TRUE(fs_->Unlink(alice, dir, "a").ok());
  fs_->Forget(a, 1);
  Put(dir, "e", kdn::test::PlainBytes(600 << 10, 7), alice);
}

// Issue 12, item 9: user.kdn.quota on a set limits the files named directly in it (writes,
// truncates, links and renames into it); only the set's owner or root may set it.
TEST_F(FilesystemTest, ASetsQuotaLimitsTheFilesNamedInIt) {
  Caller owner = As(1000, 1000, 500);
  Caller other = As(1001, 1001, 600);
  Ino set = MkDir(kRootIno, "set", owner, 0777);
  Ino f = Put(kRootIno, "file", AsBytes("x"), owner);
  EXPECT_EQ(fs_->SetXattr(other, set, "user.kdn.quota", "1M", 0).sys_errno(), EPERM);
  EXPECT_EQ(fs_->SetXattr(owner, f, "user.kdn.quota", "1M", 0).sys_errno(), EPERM);
  EXPECT_EQ(fs_->SetXattr(owner, set, "user.kdn.quota", "lots", 0).sys_errno(), EINVAL);
  ASSERT_TRUE(fs_->SetXattr(owner, set, "user.kdn.quota", "1M", 0).ok());
  EXPECT_EQ(*fs_->GetXattr(owner, set, "user.kdn.quota"), "1048576");
  Put(set, "a", kdn::test::PlainBytes(600 << 10, 1), other);
  Ino b = Create(set, "b", owner);
  EXPECT_EQ(fs_->Write(owner, b, 0, kdn::test::PlainBytes(600 << 10, 2)).status().sys_errno(),
            EDQUOT);
  // Files elsewhere do not count, and cannot be moved or linked in past the quota.
  Ino outside = Put(kRootIno, "big", kdn::test::PlainBytes(600 << 10, 3), owner);
  EXPECT_EQ(fs_->Rename(owner, kRootIno, "big", set, "big", 0).sys_errno(), EDQUOT);
  EXPECT_EQ(fs_->Link(owner, outside, set, "big").status().sys_errno(), EDQUOT);
  ASSERT_TRUE(fs_->Rename(owner, kRootIno, "file", set, "small", 0).ok());
  // The quota survives a restart (it is in the store), and its removal lifts it.
  Open();
  b = fs_->Lookup(owner, set, "b")->attr.ino;
  EXPECT_EQ(fs_->Write(owner, b, 0, kdn::test::PlainBytes(600 << 10, 2)).status().sys_errno(),
            EDQUOT);
  ASSERT_TRUE(fs_->RemoveXattr(owner, set, "user.kdn.quota").ok());
  Write(b, 0, kdn::test::PlainBytes(600 << 10, 2), owner);
  ASSERT_TRUE(fs_->Flush(owner, b).ok());
}

// Issue 12, item 9: extended attributes count against the capacity (names and values), a value
// holds at most 64 KiB (E2BIG) and one inode's attributes at most 64 KiB in all (ENOSPC).
TEST_F(FilesystemTest, ExtendedAttributesHaveLimitsAndCountAgainstTheCapacity) {
  Open(1u << 20);
  Caller c = As(0, 0, 100);
  Ino f = Put(kRootIno, "f", AsBytes("x"), c);
  const uint64_t before = fs_->StatFs()->used_bytes;
  ASSERT_TRUE(fs_->SetXattr(c, f, "user.a", std::string(40000, 'a'), 0).ok());
  EXPECT_EQ(fs_->StatFs()->used_bytes, before + 6 + 40000);
  EXPECT_EQ(fs_->SetXattr(c, f, "user.b", std::string(70000, 'b'), 0).sys_errno(), E2BIG);
  EXPECT_EQ(fs_->SetXattr(c, f, "user.b", std::string(30000, 'b'), 0).sys_errno(), ENOSPC);
  ASSERT_TRUE(fs_->SetXattr(c, f, "user.a", std::string(10, 'a'), 0).ok());
  EXPECT_EQ(fs_->StatFs()->used_bytes, before + 16);
  ASSERT_TRUE(fs_->SetXattr(c, f, "user.b", std::string(30000, 'b'), 0).ok());
  ASSERT_TRUE(fs_->RemoveXattr(c, f, "user.b").ok());
  EXPECT_EQ(fs_->StatFs()->used_bytes, before + 16);
  // Counted again when the store is opened.
  Open(1u << 20);
  EXPECT_EQ(fs_->StatFs()->used_bytes, before + 16);
  // A full store refuses a new attribute.
  Put(kRootIno, "g", kdn::test::PlainBytes((1 << 20) - 2 * 4096, 1), c);
  Ino g = fs_->Lookup(c, kRootIno, "g")->attr.ino;
  EXPECT_EQ(fs_->SetXattr(c, g, "user.c", std::string(5000, 'c'), 0).sys_errno(), ENOSPC);
  ASSERT_TRUE(fs_->SetXattr(c, g, "user.c", std::string(1000, 'c'), 0).ok());
  // A file's attributes go with it.
  const uint64_t with_f = fs_->StatFs()->used_bytes;
  ASSERT_TRUE(fs_->Unlink(c, kRootIno, "f").ok());
  fs_->Forget(f, 1);
  EXPECT_EQ(fs_->StatFs()->used_bytes, with_f - 4096 - 16);
}

TEST(MountUtilTest, ParsesSizes) {
  EXPECT_EQ(*ParseSize("4096"), 4096u);
  EXPECT_EQ(*ParseSize("64K"), 64u << 10);
  EXPECT_EQ(*ParseSize("16M"), 16u << 20);
  EXPECT_EQ(*ParseSize("64G"), uint64_t{64} << 30);
  EXPECT_EQ(*ParseSize("2T"), uint64_t{2} << 40);
  EXPECT_EQ(*ParseSize("1.5G"), uint64_t{3} << 29);
  EXPECT_EQ(*ParseSize("10GiB"), uint64_t{10} << 30);
  EXPECT_FALSE(ParseSize("").ok());
  EXPECT_FALSE(ParseSize("12X").ok());
  EXPECT_FALSE(ParseSize("-1G").ok());
  EXPECT_FALSE(ParseSize("G").ok());
}

TEST(MountUtilTest, ReadsTheMountTable) {
  kdn::test::TempDir dir("kdnfs-mountinfo");
  std::string path = dir / "mountinfo";
  std::ofstream(path) << "22 1 0:21 / /proc rw,nosuid - proc proc rw\n"
                         "95 22 0:52 / /tmp/my\\040mnt rw,nosuid,nodev,relatime shared:1 - "
                         "fuse.kdnfs kdnfs rw,user_id=0,group_id=0,default_permissions\n";
  auto table = ReadMountTable(path);
  ASSERT_EQ(table.size(), 2u);
  EXPECT_EQ(table[1].mount_point, "/tmp/my mnt");
  EXPECT_EQ(table[1].fs_type, "fuse.kdnfs");
  EXPECT_EQ(table[1].source, "kdnfs");
  EXPECT_EQ(table[1].major, 0u);
  EXPECT_EQ(table[1].minor, 52u);
  EXPECT_EQ(table[1].mount_id, 95);
}

TEST(MountUtilTest, AbsoluteMountPointsWorkWithoutStat) {
  kdn::test::TempDir dir("kdnfs-abs");
  auto p = AbsoluteMountPoint(dir.str() + "/not-yet/");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(*p, dir.str() + "/not-yet");
}

// Every failed request goes through RequestOutcomes: counted per operation and errno (shown in
// /.kdn/stats), logged at a level that says whose failure it is, with a bounded number of lines.
class CapturingLogger : public Logger {
 public:
  void Log(LogLevel level, std::string_view message) override {
    std::lock_guard lock(mu);
    lines.emplace_back(level, std::string(message));
  }
  std::mutex mu;
  std::vector<std::pair<LogLevel, std::string>> lines;
};

TEST(RequestOutcomes, FailuresAreCountedByErrnoLoggedAndShownInStats) {
  kdn::test::TempDir dir("kdnfs-outcomes");
  auto log = std::make_shared<CapturingLogger>();
  StoreOptions so;
  so.sync = SyncPolicy::kNone;
  so.info_log = log;
  auto opened = Filesystem::Open(dir / "store", so, Filesystem::Options());
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  Filesystem& fs = **opened;
  auto d = fs.MakeDir(As(0, 0, 100), kRootIno, "full", 0755);
  ASSERT_TRUE(d.ok());
  ASSERT_TRUE(fs.MakeDir(As(0, 0, 100), d->attr.ino, "child", 0755).ok());

  // An ordinary answer: rmdir of a directory that is not empty.
  Status st = fs.Rmdir(As(0, 0, 100), kRootIno, "full");
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(fs.requests().Failed(FsOp::kRmdir, st), ENOTEMPTY);
  fs.requests().Succeeded(FsOp::kRmdir);
  EXPECT_EQ(fs.requests().errors(FsOp::kRmdir, ENOTEMPTY), 1u);
  EXPECT_EQ(fs.requests().ok(FsOp::kRmdir), 1u);
  ASSERT_EQ(log->lines.size(), 1u);
  EXPECT_EQ(log->lines[0].first, LogLevel::kDebug);
  EXPECT_NE(log->lines[0].second.find("rmdir: ENOTEMPTY"), std::string::npos)
      << log->lines[0].second;

  // The daemon's failure: a warning. A flood is counted in full but logged within the limit.
  for (int i = 0; i < 1000; ++i) {
    EXPECT_EQ(fs.requests().Failed(FsOp::kRead, Status::IOError("disk on fire")), EIO);
  }
  EXPECT_EQ(fs.requests().errors(FsOp::kRead, EIO), 1000u);
  EXPECT_EQ(log->lines[1].first, LogLevel::kWarning);
  EXPECT_NE(log->lines[1].second.find("read: EIO: I/O error: disk on fire"), std::string::npos)
      << log->lines[1].second;
  EXPECT_LE(log->lines.size(), 60u);
  // No errno at all (an internal error) is answered EIO.
  EXPECT_EQ(fs.requests().Failed(FsOp::kGetxattr, Status::Internal("bug")), EIO);

  const std::string stats = fs.StatsText();
  EXPECT_NE(stats.find("\nfuse.rmdir.ok 1\n"), std::string::npos) << stats;
  EXPECT_NE(stats.find("\nfuse.rmdir.ENOTEMPTY 1\n"), std::string::npos) << stats;
  EXPECT_NE(stats.find("\nfuse.read.EIO 1000\n"), std::string::npos) << stats;
  EXPECT_NE(stats.find("\nfuse.getxattr.EIO 1\n"), std::string::npos) << stats;
  EXPECT_NE(stats.find("\nfuse.lookup.ok 0\n"), std::string::npos) << stats;
}

}  // namespace
}  // namespace kdn::fs
