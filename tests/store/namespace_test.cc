// The namespace: POSIX semantics of names, links, renames, attributes and xattrs, file content
// published with its chunk, and unlinked files that stay readable while open.
#include <sys/stat.h>

#include <set>

#include "store_test_util.h"

namespace kdn {
namespace {

using test::RandomBytes;

NewNode Node(uint32_t mode, uint32_t uid = 0, uint32_t gid = 0) {
  NewNode n;
  n.mode = mode;
  n.uid = uid;
  n.gid = gid;
  return n;
}

class NamespaceTest : public ::testing::Test {
 protected:
  void SetUp() override { Reopen(); }
  void Reopen() {
    store_.reset();
    StoreOptions o = test::SmallStoreOptions();
    o.sync = SyncPolicy::kNone;  // many small transactions; durability has its own tests
    store_ = test::OpenStore(dir_.str(), o);
    ASSERT_NE(store_, nullptr);
  }
  InodeAttr Make(Ino parent, const std::string& name, uint32_t mode, std::string target = {}) {
    NewNode n;
    n.mode = mode;
    n.uid = 1000;
    n.gid = 100;
    n.symlink_target = std::move(target);
    auto a = store_->MakeNode(parent, name, n);
    EXPECT_TRUE(a.ok()) << name << ": " << a.status().ToString();
    return a.ok() ? *a : InodeAttr{};
  }
  // Stages `bytes` and commits them as the content of `ino`.
  Result<InodeAttr> Commit(Ino ino, std::span<const std::byte> bytes) {
    std::string staged = store_->NewStagingPath();
    test::WriteFile(staged, bytes);
    return store_->CommitFileContent(ino, staged);
  }
  std::vector<std::string> Names(Ino dir) {
    std::vector<std::string> out;
    uint64_t cookie = 0;
    while (true) {
      auto page = store_->ReadDir(dir, cookie, 7);
      EXPECT_TRUE(page.ok()) << page.status().ToString();
      if (!page.ok() || page->empty()) break;
      for (const DirEntry& e : *page) {
        out.push_back(e.name);
        cookie = e.cookie;
      }
    }
    return out;
  }

  test::TempDir dir_{"kdn-ns"};
  std::unique_ptr<Store> store_;
};

TEST_F(NamespaceTest, RootAndNodesOfEveryType) {
  auto root = store_->GetAttr(kRootIno);
  ASSERT_TRUE(root.ok());
  EXPECT_TRUE(S_ISDIR(root->mode));
  EXPECT_EQ(root->nlink, 2u);
  InodeAttr d = Make(kRootIno, "set", S_IFDIR | 0755);
  InodeAttr f = Make(d.ino, "a.kv", S_IFREG | 0640);
  InodeAttr l = Make(d.ino, "link", S_IFLNK | 0777, "a.kv");
  InodeAttr p = Make(d.ino, "pipe", S_IFIFO | 0600);
  NewNode dev = Node(S_IFCHR | 0600);
  dev.rdev = 0x0501;
  auto c = store_->MakeNode(d.ino, "tty", dev);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->rdev, 0x0501u);
  EXPECT_EQ(store_->GetAttr(kRootIno)->nlink, 3u);  // "set" is a subdirectory
  EXPECT_EQ(d.nlink, 2u);
  EXPECT_EQ(f.uid, 1000u);
  EXPECT_EQ(f.gid, 100u);
  EXPECT_EQ(f.mode, S_IFREG | 0640u);
  EXPECT_EQ(l.size, 4u);
  EXPECT_EQ(*store_->ReadLink(l.ino), "a.kv");
  EXPECT_FALSE(store_->ReadLink(f.ino).ok());
  EXPECT_TRUE(S_ISFIFO(p.mode));
  auto found = store_->Lookup(d.ino, "a.kv");
  ASSERT_TRUE(found.ok());
  EXPECT_EQ(found->ino, f.ino);
  EXPECT_EQ(store_->Lookup(d.ino, ".")->ino, d.ino);
  EXPECT_EQ(store_->Lookup(d.ino, "..")->ino, kRootIno);
  EXPECT_TRUE(store_->Lookup(d.ino, "nope").status().IsNotFound());
  EXPECT_EQ(store_->Lookup(f.ino, "x").status().sys_errno(), ENOTDIR);
  EXPECT_EQ(*store_->PathOf(f.ino), "/set/a.kv");
  EXPECT_EQ(*store_->PathOf(kRootIno), "/");
  test::ExpectClean(*store_);
}

TEST_F(NamespaceTest, NamesAreChecked) {
  NewNode n = Node(S_IFREG | 0644);
  EXPECT_EQ(store_->MakeNode(kRootIno, "a/b", n).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(store_->MakeNode(kRootIno, "..", n).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(store_->MakeNode(kRootIno, std::string(256, 'x'), n).status().sys_errno(),
            ENAMETOOLONG);
  EXPECT_TRUE(store_->MakeNode(kRootIno, std::string(255, 'x'), n).ok());
  EXPECT_TRUE(store_->MakeNode(kRootIno, "dup", n).ok());
  EXPECT_EQ(store_->MakeNode(kRootIno, "dup", n).status().sys_errno(), EEXIST);
  InodeAttr f = Make(kRootIno, "file", S_IFREG | 0644);
  EXPECT_EQ(store_->MakeNode(f.ino, "child", n).status().sys_errno(), ENOTDIR);
  EXPECT_EQ(store_->MakeNode(kRootIno, "weird", Node(0170000)).status().code(),
            Code::kInvalidArgument);
  EXPECT_EQ(store_->MakeNode(kRootIno, "l", Node(S_IFLNK | 0777)).status().code(),
            Code::kInvalidArgument);
}

TEST_F(NamespaceTest, ReadDirPagesWithStableCookies) {
  InodeAttr d = Make(kRootIno, "d", S_IFDIR | 0755);
  std::set<std::string> want;
  for (int i = 0; i < 300; ++i) {
    std::string name = "f" + std::to_string(i);
    Make(d.ino, name, S_IFREG | 0644);
    want.insert(name);
  }
  auto names = Names(d.ino);
  ASSERT_EQ(names.size(), 302u);
  EXPECT_EQ(names[0], ".");
  EXPECT_EQ(names[1], "..");
  EXPECT_EQ(std::set<std::string>(names.begin() + 2, names.end()), want);
  // Removing entries behind and ahead of a cookie neither repeats nor skips the others.
  auto first = store_->ReadDir(d.ino, 0, 52);
  ASSERT_TRUE(first.ok());
  ASSERT_EQ(first->size(), 52u);
  std::set<std::string> seen;
  for (size_t i = 2; i < first->size(); ++i) seen.insert((*first)[i].name);
  ASSERT_TRUE(store_->Unlink(d.ino, (*first)[10].name).ok());  // already listed
  ASSERT_TRUE(store_->Unlink(d.ino, "f299").ok());             // not yet listed
  want.erase("f299");
  uint64_t cookie = first->back().cookie;
  while (true) {
    auto page = store_->ReadDir(d.ino, cookie, 64);
    ASSERT_TRUE(page.ok());
    if (page->empty()) break;
    for (const DirEntry& e : *page) {
      EXPECT_TRUE(seen.insert(e.name).second) << "listed twice: " << e.name;
      cookie = e.cookie;
    }
  }
  EXPECT_EQ(seen, want);
  EXPECT_EQ(store_->ReadDir(Make(d.ino, "file", S_IFREG).ino, 0, 10).status().sys_errno(), ENOTDIR);
}

// A file takes at most kMaxLinks names, as on ext4: whatever a user does, the work that follows
// a file's names (publishing each to an origin, a quota check of each parent) stays bounded.
TEST_F(NamespaceTest, AFileHasAtMostMaxLinksNames) {
  InodeAttr f = Make(kRootIno, "f", S_IFREG | 0644);
  InodeAttr d = Make(kRootIno, "d", S_IFDIR | 0755);
  for (uint32_t i = 1; i < kMaxLinks; ++i) {
    auto linked = store_->Link(f.ino, d.ino, "n" + std::to_string(i));
    ASSERT_TRUE(linked.ok()) << i << ": " << linked.status().ToString();
  }
  EXPECT_EQ(store_->GetAttr(f.ino)->nlink, kMaxLinks);
  EXPECT_EQ(store_->Link(f.ino, d.ino, "one-more").status().sys_errno(), EMLINK);
  EXPECT_TRUE(store_->Lookup(d.ino, "one-more").status().IsNotFound());
  ASSERT_TRUE(store_->Unlink(d.ino, "n1").ok());
  EXPECT_TRUE(store_->Link(f.ino, d.ino, "one-more").ok());  // room again after an unlink
}

TEST_F(NamespaceTest, HardLinksUnlinkAndRmdir) {
  InodeAttr a = Make(kRootIno, "a", S_IFDIR | 0755);
  InodeAttr b = Make(kRootIno, "b", S_IFDIR | 0755);
  InodeAttr f = Make(a.ino, "x.kv", S_IFREG | 0644);
  ASSERT_TRUE(Commit(f.ino, RandomBytes(70000, 1)).ok());
  auto linked = store_->Link(f.ino, b.ino, "y.kv");
  ASSERT_TRUE(linked.ok());
  EXPECT_EQ(linked->nlink, 2u);
  EXPECT_EQ(store_->Usage().chunks, 1u);  // one file, one chunk, two names
  EXPECT_EQ(store_->Link(a.ino, b.ino, "dirlink").status().sys_errno(), EPERM);
  EXPECT_EQ(store_->Link(f.ino, b.ino, "y.kv").status().sys_errno(), EEXIST);
  EXPECT_EQ(store_->Unlink(kRootIno, "a").status().sys_errno(), EISDIR);
  EXPECT_EQ(store_->Rmdir(a.ino, "x.kv").sys_errno(), ENOTDIR);
  EXPECT_EQ(store_->Rmdir(kRootIno, "a").sys_errno(), ENOTEMPTY);
  auto u = store_->Unlink(a.ino, "x.kv");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->nlink, 1u);
  EXPECT_EQ(store_->Usage().chunks, 1u);
  ASSERT_TRUE(store_->Rmdir(kRootIno, "a").ok());
  EXPECT_EQ(store_->GetAttr(kRootIno)->nlink, 3u);
  EXPECT_TRUE(store_->GetAttr(a.ino).status().IsNotFound());
  ASSERT_TRUE(store_->Unlink(b.ino, "y.kv").ok());
  EXPECT_TRUE(store_->GetAttr(f.ino).status().IsNotFound());
  EXPECT_EQ(store_->Usage().chunks, 0u);  // the last name took the content with it
  EXPECT_TRUE(store_->Unlink(b.ino, "y.kv").status().IsNotFound());
  test::ExpectClean(*store_);
}

TEST_F(NamespaceTest, RenameReplacesAtomically) {
  InodeAttr d = Make(kRootIno, "d", S_IFDIR | 0755);
  InodeAttr tmp = Make(d.ino, ".tmp", S_IFREG | 0644);
  InodeAttr old = Make(d.ino, "doc.kv", S_IFREG | 0644);
  auto old_bytes = RandomBytes(10000, 1), new_bytes = RandomBytes(20000, 2);
  ASSERT_TRUE(Commit(old.ino, old_bytes).ok());
  ASSERT_TRUE(Commit(tmp.ino, new_bytes).ok());
  EXPECT_EQ(store_->Usage().chunks, 2u);
  // rsync's pattern: write a temporary name, rename it over the real one.
  ASSERT_TRUE(store_->Rename(d.ino, ".tmp", d.ino, "doc.kv").ok());
  auto now = store_->Lookup(d.ino, "doc.kv");
  ASSERT_TRUE(now.ok());
  EXPECT_EQ(now->ino, tmp.ino);
  EXPECT_EQ(test::ReadWhole(*store_, now->chunk, now->size), new_bytes);
  EXPECT_TRUE(store_->Lookup(d.ino, ".tmp").status().IsNotFound());
  EXPECT_TRUE(store_->GetAttr(old.ino).status().IsNotFound());
  EXPECT_EQ(store_->Usage().chunks, 1u);  // the replaced file's content is released
  // Moves across directories.
  InodeAttr e = Make(kRootIno, "e", S_IFDIR | 0755);
  ASSERT_TRUE(store_->Rename(d.ino, "doc.kv", e.ino, "moved.kv").ok());
  EXPECT_EQ(store_->Lookup(e.ino, "moved.kv")->ino, tmp.ino);
  test::ExpectClean(*store_);
}

TEST_F(NamespaceTest, RenameRulesAndFlags) {
  InodeAttr a = Make(kRootIno, "a", S_IFDIR | 0755);
  InodeAttr sub = Make(a.ino, "sub", S_IFDIR | 0755);
  InodeAttr b = Make(kRootIno, "b", S_IFDIR | 0755);
  InodeAttr f = Make(kRootIno, "f", S_IFREG | 0644);
  InodeAttr g = Make(kRootIno, "g", S_IFREG | 0644);
  Make(b.ino, "inside", S_IFREG | 0644);
  // A directory cannot move into its own subtree.
  EXPECT_EQ(store_->Rename(kRootIno, "a", sub.ino, "loop").code(), Code::kInvalidArgument);
  EXPECT_EQ(store_->Rename(kRootIno, "a", a.ino, "self").code(), Code::kInvalidArgument);
  EXPECT_EQ(store_->Rename(kRootIno, "a", kRootIno, "b").sys_errno(), ENOTEMPTY);
  EXPECT_EQ(store_->Rename(kRootIno, "a", kRootIno, "f").sys_errno(), ENOTDIR);
  EXPECT_EQ(store_->Rename(kRootIno, "f", kRootIno, "a").sys_errno(), EISDIR);
  EXPECT_EQ(store_->Rename(kRootIno, "f", kRootIno, "g", kRenameNoReplace).sys_errno(), EEXIST);
  EXPECT_TRUE(store_->Rename(kRootIno, "nope", kRootIno, "x").IsNotFound());
  // Exchange a file and a directory that live in different directories.
  ASSERT_TRUE(store_->Rename(kRootIno, "f", a.ino, "sub", kRenameExchange).ok());
  EXPECT_EQ(store_->Lookup(kRootIno, "f")->ino, sub.ino);
  EXPECT_EQ(store_->Lookup(a.ino, "sub")->ino, f.ino);
  EXPECT_EQ(store_->GetAttr(a.ino)->nlink, 2u);     // lost its subdirectory
  EXPECT_EQ(store_->GetAttr(kRootIno)->nlink, 5u);  // a, b, and now "f" (a directory)
  EXPECT_EQ(store_->Lookup(sub.ino, "..")->ino, kRootIno);
  EXPECT_TRUE(store_->Rename(kRootIno, "g", kRootIno, "missing", kRenameExchange).IsNotFound());
  // A directory over an empty directory.
  InodeAttr empty = Make(kRootIno, "empty", S_IFDIR | 0755);
  ASSERT_TRUE(store_->Rename(kRootIno, "b", kRootIno, "empty").ok());
  EXPECT_TRUE(store_->GetAttr(empty.ino).status().IsNotFound());
  EXPECT_EQ(store_->Lookup(kRootIno, "empty")->ino, b.ino);
  // Two names of one inode: nothing happens.
  ASSERT_TRUE(store_->Link(g.ino, kRootIno, "g2").ok());
  ASSERT_TRUE(store_->Rename(kRootIno, "g", kRootIno, "g2").ok());
  EXPECT_EQ(store_->GetAttr(g.ino)->nlink, 2u);
  EXPECT_EQ(store_->Rename(kRootIno, "g", kRootIno, "h", 7).code(), Code::kInvalidArgument);
  test::ExpectClean(*store_);
}

TEST_F(NamespaceTest, SetAttrChangesWhatItSays) {
  InodeAttr f = Make(kRootIno, "f", S_IFREG | 0644);
  ASSERT_TRUE(Commit(f.ino, RandomBytes(5000, 3)).ok());
  SetAttrRequest r;
  r.mode = 0600 | S_IFDIR;  // type bits are ignored
  r.uid = 7;
  r.gid = 8;
  r.mtime_ns = 123456789;
  r.atime_ns = 42;
  auto a = store_->SetAttr(f.ino, r);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->mode, S_IFREG | 0600u);
  EXPECT_EQ(a->uid, 7u);
  EXPECT_EQ(a->gid, 8u);
  EXPECT_EQ(a->mtime_ns, 123456789);
  EXPECT_EQ(a->atime_ns, 42);
  EXPECT_GT(a->ctime_ns, 123456789);
  EXPECT_EQ(*store_->GetAttr(f.ino), *a) << "stored attributes differ from the returned ones";
  SetAttrRequest grow;
  grow.size = 9000;
  EXPECT_EQ(store_->SetAttr(f.ino, grow).status().code(), Code::kInvalidArgument);
  SetAttrRequest same;
  same.size = 5000;
  EXPECT_TRUE(store_->SetAttr(f.ino, same).ok());
  SetAttrRequest zero;
  zero.size = 0;
  auto t = store_->SetAttr(f.ino, zero);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->size, 0u);
  EXPECT_TRUE(t->chunk.IsZero());
  EXPECT_EQ(store_->Usage().chunks, 0u);
  InodeAttr d = Make(kRootIno, "d", S_IFDIR | 0755);
  SetAttrRequest dir_size;
  dir_size.size = 1;
  EXPECT_EQ(store_->SetAttr(d.ino, dir_size).status().sys_errno(), EISDIR);
  test::ExpectClean(*store_);
}

TEST_F(NamespaceTest, Xattrs) {
  InodeAttr f = Make(kRootIno, "f", S_IFREG | 0644);
  EXPECT_TRUE(store_->GetXattr(f.ino, "user.a").status().IsNotFound());
  ASSERT_TRUE(store_->SetXattr(f.ino, "user.a", "1").ok());
  ASSERT_TRUE(store_->SetXattr(f.ino, "user.b", std::string("\0bin", 4)).ok());
  EXPECT_EQ(*store_->GetXattr(f.ino, "user.a"), "1");
  EXPECT_EQ(*store_->GetXattr(f.ino, "user.b"), std::string("\0bin", 4));
  EXPECT_EQ(store_->SetXattr(f.ino, "user.a", "2", XattrSetMode::kCreate).sys_errno(), EEXIST);
  EXPECT_TRUE(store_->SetXattr(f.ino, "user.c", "2", XattrSetMode::kReplace).IsNotFound());
  ASSERT_TRUE(store_->SetXattr(f.ino, "user.a", "3", XattrSetMode::kReplace).ok());
  EXPECT_EQ(*store_->GetXattr(f.ino, "user.a"), "3");
  EXPECT_EQ(*store_->ListXattr(f.ino), (std::vector<std::string>{"user.a", "user.b"}));
  ASSERT_TRUE(store_->RemoveXattr(f.ino, "user.a").ok());
  EXPECT_TRUE(store_->RemoveXattr(f.ino, "user.a").IsNotFound());
  EXPECT_EQ(store_->SetXattr(f.ino, "user.big", std::string(70000, 'x')).sys_errno(), E2BIG);
  EXPECT_TRUE(store_->GetXattr(999999, "user.a").status().IsNotFound());
  ASSERT_TRUE(store_->Unlink(kRootIno, "f").ok());
  test::ExpectClean(*store_);  // xattrs go with their inode
}

TEST_F(NamespaceTest, CommitReplacesContentInOneStep) {
  InodeAttr f = Make(kRootIno, "f", S_IFREG | 0644);
  auto v1 = RandomBytes(100000, 1), v2 = RandomBytes(150000, 2);
  auto a1 = Commit(f.ino, v1);
  ASSERT_TRUE(a1.ok()) << a1.status().ToString();
  EXPECT_EQ(a1->size, v1.size());
  EXPECT_EQ(test::ReadWhole(*store_, a1->chunk, v1.size()), v1);
  auto a2 = Commit(f.ino, v2);
  ASSERT_TRUE(a2.ok());
  EXPECT_EQ(store_->Usage().chunks, 1u);  // v1 released
  EXPECT_TRUE(store_->StatChunk(a1->chunk).status().IsNotFound());
  auto again = Commit(f.ino, v2);  // same content again: nothing lost
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->chunk, a2->chunk);
  EXPECT_EQ(store_->StatChunk(a2->chunk)->refs, 1u);
  auto empty = Commit(f.ino, {});
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->size, 0u);
  EXPECT_TRUE(empty->chunk.IsZero());
  // Content already stored by a Put is shared by the file.
  auto id = store_->Put(v1);
  ASSERT_TRUE(id.ok());
  auto shared = Commit(f.ino, v1);
  ASSERT_TRUE(shared.ok());
  EXPECT_EQ(shared->chunk, *id);
  EXPECT_EQ(store_->StatChunk(*id)->refs, 2u);
  EXPECT_EQ(*store_->InodesWithChunk(*id), std::vector<Ino>{f.ino});
  InodeAttr d = Make(kRootIno, "d", S_IFDIR | 0755);
  EXPECT_EQ(Commit(d.ino, v1).status().sys_errno(), EISDIR);
  test::ExpectClean(*store_);
}

TEST_F(NamespaceTest, BadKvContentLeavesThePreviousContent) {
  InodeAttr f = Make(kRootIno, "doc.kv", S_IFREG | 0644);
  auto good = RandomBytes(9000, 1);
  auto a = Commit(f.ino, good);
  ASSERT_TRUE(a.ok());
  auto bad = RandomBytes(9000, 2);
  std::memcpy(bad.data(), kKvMagic.data(), kKvMagic.size());  // the magic, then garbage
  std::string staged = store_->NewStagingPath();
  test::WriteFile(staged, bad);
  auto r = store_->CommitFileContent(f.ino, staged);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().sys_errno(), EINVAL) << r.status().ToString();
  EXPECT_EQ(::access(staged.c_str(), F_OK), 0) << "a refused staged file stays for the caller";
  auto now = store_->GetAttr(f.ino);
  EXPECT_EQ(now->chunk, a->chunk);
  EXPECT_EQ(test::ReadWhole(*store_, now->chunk, now->size), good);
  EXPECT_FALSE(store_->Put(bad).ok());
  EXPECT_EQ(store_->Usage().chunks, 1u);
  test::ExpectClean(*store_);
}

TEST_F(NamespaceTest, UnlinkedOpenFilesKeepTheirContentUntilClosed) {
  InodeAttr f = Make(kRootIno, "f", S_IFREG | 0644);
  auto bytes = RandomBytes(200000, 4);
  auto a = Commit(f.ino, bytes);
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE(store_->OpenInode(f.ino).ok());
  ASSERT_TRUE(store_->OpenInode(f.ino).ok());
  auto u = store_->Unlink(kRootIno, "f");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->nlink, 0u);
  EXPECT_EQ(store_->GetAttr(f.ino)->nlink, 0u);
  EXPECT_EQ(test::ReadWhole(*store_, a->chunk, bytes.size()), bytes);
  test::ExpectClean(*store_);  // an open orphan is legitimate
  ASSERT_TRUE(store_->CloseInode(f.ino).ok());
  EXPECT_EQ(test::ReadWhole(*store_, a->chunk, bytes.size()), bytes);
  ASSERT_TRUE(store_->CloseInode(f.ino).ok());
  EXPECT_TRUE(store_->GetAttr(f.ino).status().IsNotFound());
  EXPECT_TRUE(store_->StatChunk(a->chunk).status().IsNotFound());
  EXPECT_FALSE(store_->CloseInode(f.ino).ok());
  EXPECT_TRUE(store_->OpenInode(f.ino).IsNotFound());
  test::ExpectClean(*store_);
}

TEST_F(NamespaceTest, OrphansOfAStoppedProcessAreReclaimedAtOpen) {
  InodeAttr f = Make(kRootIno, "f", S_IFREG | 0644);
  auto a = Commit(f.ino, RandomBytes(50000, 5));
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE(store_->OpenInode(f.ino).ok());
  ASSERT_TRUE(store_->Unlink(kRootIno, "f").ok());
  Reopen();  // the holder is gone (as after a crash): the orphan goes
  EXPECT_TRUE(store_->GetAttr(f.ino).status().IsNotFound());
  EXPECT_TRUE(store_->StatChunk(a->chunk).status().IsNotFound());
  EXPECT_EQ(store_->Usage().used_bytes, 0u);
  test::ExpectClean(*store_);
}

TEST_F(NamespaceTest, FlagsAreInheritedAndCounted) {
  InodeAttr cache = Make(kRootIno, "cache", S_IFDIR | 0755);
  ASSERT_TRUE(store_->SetEvictable(cache.ino, true).ok());
  InodeAttr f = Make(cache.ino, "f", S_IFREG | 0644);
  InodeAttr sub = Make(cache.ino, "sub", S_IFDIR | 0755);
  EXPECT_TRUE(f.evictable);
  EXPECT_TRUE(sub.evictable);
  EXPECT_FALSE(Make(kRootIno, "g", S_IFREG | 0644).evictable);
  auto a = Commit(f.ino, RandomBytes(1000, 8));
  ASSERT_TRUE(a.ok());
  EXPECT_TRUE(store_->StatChunk(a->chunk)->evictable);
  ASSERT_TRUE(store_->SetPinned(f.ino, true).ok());
  EXPECT_TRUE(store_->GetAttr(f.ino)->pinned);
  EXPECT_FALSE(store_->StatChunk(a->chunk)->evictable);
  ASSERT_TRUE(store_->SetPinned(f.ino, false).ok());
  EXPECT_TRUE(store_->StatChunk(a->chunk)->evictable);
  ASSERT_TRUE(store_->SetEvictable(f.ino, false).ok());
  EXPECT_FALSE(store_->StatChunk(a->chunk)->evictable);
  EXPECT_FALSE(store_->SetPinned(cache.ino, true).ok());
  test::ExpectClean(*store_);
  auto stats = store_->Stats();
  EXPECT_EQ(stats.files, 2u);
  EXPECT_EQ(stats.directories, 3u);
  EXPECT_EQ(stats.logical_bytes, 1000u);
}

}  // namespace
}  // namespace kdn

namespace kdn {
namespace {

// A large directory lists completely, page by page, in creation order (the query walks an index
// from the cookie on, so each page costs the same whatever the directory's size).
TEST(NamespaceScale, HundredThousandEntries) {
  test::TempDir dir("kdn-ns");
  StoreOptions o = test::SmallStoreOptions();
  o.sync = SyncPolicy::kNone;
  auto store = test::OpenStore(dir.str(), o);
  ASSERT_NE(store, nullptr);
  NewNode d;
  d.mode = S_IFDIR | 0755;
  auto set = store->MakeNode(kRootIno, "set", d);
  ASSERT_TRUE(set.ok());
  constexpr int kEntries = 100000;
  NewNode f;
  f.mode = S_IFREG | 0644;
  for (int i = 0; i < kEntries; ++i) {
    ASSERT_TRUE(store->MakeNode(set->ino, "chunk-" + std::to_string(i) + ".kv", f).ok());
  }
  uint64_t cookie = 2;  // after "." and ".."
  int next = 0;
  while (true) {
    auto page = store->ReadDir(set->ino, cookie, 1000);
    ASSERT_TRUE(page.ok());
    if (page->empty()) break;
    for (const DirEntry& e : *page) {
      ASSERT_EQ(e.name, "chunk-" + std::to_string(next) + ".kv");
      ++next;
      cookie = e.cookie;
    }
  }
  EXPECT_EQ(next, kEntries);
  EXPECT_EQ(store->Lookup(set->ino, "chunk-99999.kv")->nlink, 1u);
}

}  // namespace
}  // namespace kdn

namespace kdn {
namespace {

// A crash while the first content of a new file was being written (cp killed with the daemon):
// the next open removes the file, which would otherwise stay empty forever. Files that are empty
// on purpose, and files whose first content did commit, stay.
TEST(FirstContentRecoveryTest, ANewFileWhoseFirstContentNeverCommittedIsRemovedAtOpen) {
  test::TempDir dir("kdn-first");
  StoreOptions o = test::SmallStoreOptions();
  Ino unborn = 0, empty = 0, committed = 0, linked = 0;
  {
    auto store = test::OpenStore(dir.str(), o);
    ASSERT_TRUE(store);
    NewNode file;
    file.mode = S_IFREG | 0644;
    auto a = store->MakeNode(kRootIno, "copying.kv", file);
    auto b = store->MakeNode(kRootIno, "empty", file);
    auto c = store->MakeNode(kRootIno, "done.kv", file);
    ASSERT_TRUE(a.ok() && b.ok() && c.ok());
    unborn = a->ino;
    empty = b->ino;
    committed = c->ino;
    // A second name of the unborn file goes with it.
    auto l = store->Link(unborn, kRootIno, "copying-link.kv");
    ASSERT_TRUE(l.ok()) << l.status().ToString();
    linked = l->ino;
    test::WriteFile(store->NewStagingPath(unborn), test::RandomBytes(5000, 1));
    // Committed, then the process died before its staging file was gone: it keeps its content.
    const std::string done = store->NewStagingPath(committed);
    test::WriteFile(done, test::RandomBytes(3000, 2));
    ASSERT_TRUE(store->CommitFileContent(committed, done).ok());
    test::WriteFile(done, test::RandomBytes(3000, 3));
  }
  auto store = test::OpenStore(dir.str(), o);
  ASSERT_TRUE(store);
  EXPECT_TRUE(store->Lookup(kRootIno, "copying.kv").status().IsNotFound());
  EXPECT_TRUE(store->Lookup(kRootIno, "copying-link.kv").status().IsNotFound());
  EXPECT_TRUE(store->GetAttr(unborn).status().IsNotFound());
  EXPECT_EQ(linked, unborn);
  auto e = store->Lookup(kRootIno, "empty");
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->ino, empty);
  auto d = store->Lookup(kRootIno, "done.kv");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->size, 3000u);
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(store->staging_dir()),
                          std::filesystem::directory_iterator()),
            0);
  test::ExpectClean(*store);
}

// kdnfs holds small first content in memory and names its inode in the slots file instead: the
// next open treats those inodes as it treats the staging files' (a free slot is 0, a cut-short
// record is ignored).
TEST(FirstContentRecoveryTest, InodesNamedInTheSlotsFileAreRemovedIfStillEmpty) {
  test::TempDir dir("kdn-first");
  StoreOptions o = test::SmallStoreOptions();
  Ino unborn = 0, committed = 0, empty = 0;
  {
    auto store = test::OpenStore(dir.str(), o);
    ASSERT_TRUE(store);
    NewNode file;
    file.mode = S_IFREG | 0644;
    auto a = store->MakeNode(kRootIno, "copying", file);
    auto b = store->MakeNode(kRootIno, "done", file);
    auto c = store->MakeNode(kRootIno, "empty", file);
    ASSERT_TRUE(a.ok() && b.ok() && c.ok());
    unborn = a->ino;
    committed = b->ino;
    empty = c->ino;
    const std::vector<std::byte> content = test::RandomBytes(100, 5);
    ASSERT_TRUE(store->CommitFileContent(committed, std::span<const std::byte>(content)).ok());
    std::vector<std::byte> slots(8 * 3 + 5, std::byte{0});
    auto put = [&](size_t slot, Ino ino) {
      for (size_t k = 0; k < 8; ++k) slots[slot * 8 + k] = std::byte((ino >> (8 * k)) & 0xff);
    };
    put(0, committed);  // its content committed before the slot was freed
    put(2, unborn);
    test::WriteFile(store->FirstContentSlotsPath(), slots);
  }
  auto store = test::OpenStore(dir.str(), o);
  ASSERT_TRUE(store);
  EXPECT_TRUE(store->Lookup(kRootIno, "copying").status().IsNotFound());
  EXPECT_TRUE(store->GetAttr(unborn).status().IsNotFound());
  auto d = store->Lookup(kRootIno, "done");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->size, 100u);
  auto e = store->Lookup(kRootIno, "empty");
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->ino, empty);
  EXPECT_FALSE(std::filesystem::exists(store->FirstContentSlotsPath()));
  test::ExpectClean(*store);
}

// Content committed from memory is stored (deduplicated) like content from a staging file.
TEST(FirstContentRecoveryTest, ContentCommittedFromMemoryReadsBackAndDeduplicates) {
  test::TempDir dir("kdn-first");
  auto store = test::OpenStore(dir.str(), test::SmallStoreOptions());
  ASSERT_TRUE(store);
  NewNode file;
  file.mode = S_IFREG | 0644;
  auto a = store->MakeNode(kRootIno, "a", file);
  auto b = store->MakeNode(kRootIno, "b", file);
  ASSERT_TRUE(a.ok() && b.ok());
  const std::vector<std::byte> content = test::RandomBytes(5000, 6);
  auto ca = store->CommitFileContent(a->ino, std::span<const std::byte>(content));
  auto cb = store->CommitFileContent(b->ino, std::span<const std::byte>(content));
  ASSERT_TRUE(ca.ok() && cb.ok());
  EXPECT_EQ(ca->chunk, cb->chunk);
  EXPECT_EQ(cb->size, 5000u);
  std::vector<std::byte> back(5000);
  auto got = store->Get(cb->chunk, 0, back);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, 5000u);
  EXPECT_EQ(back, content);
  ASSERT_TRUE(store->Unlink(kRootIno, "a").ok());
  ASSERT_TRUE(store->Unlink(kRootIno, "b").ok());
  test::ExpectClean(*store);
}

TEST(FirstContentRecoveryTest, RemoveIfEmptyRemovesOnlyEmptyFiles) {
  test::TempDir dir("kdn-first");
  auto store = test::OpenStore(dir.str(), test::SmallStoreOptions());
  ASSERT_TRUE(store);
  NewNode file;
  file.mode = S_IFREG | 0644;
  auto a = store->MakeNode(kRootIno, "a", file);
  auto b = store->MakeNode(kRootIno, "b", file);
  ASSERT_TRUE(a.ok() && b.ok());
  const std::string staged = store->NewStagingPath();
  test::WriteFile(staged, test::RandomBytes(100, 4));
  ASSERT_TRUE(store->CommitFileContent(b->ino, staged).ok());
  auto removed = store->RemoveIfEmpty(a->ino);
  ASSERT_TRUE(removed.ok()) << removed.status().ToString();
  ASSERT_EQ(removed->size(), 1u);
  EXPECT_EQ((*removed)[0].name, "a");
  EXPECT_EQ((*removed)[0].parent, kRootIno);
  EXPECT_TRUE(store->Lookup(kRootIno, "a").status().IsNotFound());
  removed = store->RemoveIfEmpty(b->ino);
  ASSERT_TRUE(removed.ok());
  EXPECT_TRUE(removed->empty());
  EXPECT_TRUE(store->Lookup(kRootIno, "b").ok());
  test::ExpectClean(*store);
}

}  // namespace
}  // namespace kdn
