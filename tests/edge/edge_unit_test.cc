// The edge's write side without a mount: the namespace object codec, and kdnfs's filesystem logic
// over a POSIX-directory origin (fs/edge/uploader.h): commits, unlinks and renames reach the
// origin through the store's outbox, fsync waits for them, an unreachable origin fails fsync but
// not local work, and notes survive a restart.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xxhash.h>

#include <cctype>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <functional>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "fs/edge/ns_object.h"
#include "fs/edge/origin_gc.h"
#include "fs/edge/uploader.h"
#include "fs/kdnfs/filesystem.h"
#include "fs_test_util.h"
#include "interleaving_origin.h"
#include "kdn/origin.h"
#include "sha256_util.h"

namespace kdn::edge {
namespace {

using kdn::test::MakeKv;

std::string Slurp(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

NsObject SampleObject() {
  NsObject o;
  o.chunk = *ChunkId::FromHex(std::string(62, 'a') + "0f");
  o.size = 1048576;
  o.mode = S_IFREG | 0644;
  o.uid = 1000;
  o.gid = 100;
  o.mtime_ns = 1733460000123456789;
  o.ctime_ns = -1500000001;  // before the epoch: the nanoseconds stay non-negative
  o.xattrs = {{"user.note", std::string("he\nllo\0x", 8)}, {"user.z", ""}};
  return o;
}

TEST(NsObject, RoundTripsEveryField) {
  NsObject o = SampleObject();
  std::string bytes = EncodeNsObject(o);
  EXPECT_TRUE(bytes.starts_with("kdn-ns 1\nchunk ")) << bytes;
  auto back = DecodeNsObject(bytes);
  ASSERT_TRUE(back.ok()) << back.status().ToString() << "\n" << bytes;
  EXPECT_EQ(*back, o);
}

TEST(NsObject, EmptyFileHasNoChunk) {
  NsObject o;
  o.mode = S_IFREG | 0600;
  auto back = DecodeNsObject(EncodeNsObject(o));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_TRUE(back->chunk.IsZero());
  EXPECT_EQ(back->size, 0u);
}

TEST(NsObject, RefusesEveryChangedByte) {
  const std::string good = EncodeNsObject(SampleObject());
  for (size_t i = 0; i < good.size(); ++i) {
    std::string bad = good;
    bad[i] = static_cast<char>(bad[i] ^ 0x01);
    auto r = DecodeNsObject(bad);
    EXPECT_FALSE(r.ok()) << "byte " << i << " changed was accepted";
  }
  EXPECT_EQ(DecodeNsObject(good.substr(0, good.size() - 1)).status().code(), Code::kCorruption);
  EXPECT_EQ(DecodeNsObject(good + "x").status().code(), Code::kCorruption);
}

TEST(NsObject, RefusesOtherVersionsAndBounds) {
  std::string v2 = EncodeNsObject(SampleObject());
  v2[7] = '2';
  EXPECT_EQ(DecodeNsObject(v2).status().code(), Code::kUnsupported);
  EXPECT_EQ(DecodeNsObject(std::string(kMaxNsObjectBytes + 1, 'k')).status().code(),
            Code::kCorruption);
  NsObject many = SampleObject();
  many.xattrs.clear();
  for (int i = 0; i < 80; ++i) many.xattrs.emplace_back("user.x" + std::to_string(100 + i), "v");
  auto back = DecodeNsObject(EncodeNsObject(many));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->xattrs.size(), kMaxNsXattrs);  // the encoder keeps within the reader's bounds
  NsObject dir = SampleObject();
  dir.mode = S_IFDIR | 0755;
  EXPECT_EQ(DecodeNsObject(EncodeNsObject(dir)).status().code(), Code::kCorruption);
}

// One spelling per object: what the reader accepts encodes back to the same bytes (the fuzz
// target checks the same; these are the spellings it found).
TEST(NsObject, RefusesOtherSpellingsOfTheSameObject) {
  const std::string good = EncodeNsObject(SampleObject());
  auto respelled = [&](std::string_view from, std::string_view to) {
    std::string body = good.substr(0, good.rfind("sum "));
    size_t at = body.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    body.replace(at, from.size(), to);
    char sum[24];
    std::snprintf(sum, sizeof(sum), "%016llx",
                  static_cast<unsigned long long>(XXH3_64bits(body.data(), body.size())));
    return body + "sum " + sum + "\n";
  };
  EXPECT_TRUE(DecodeNsObject(respelled("uid 1000", "uid 1000")).ok());
  EXPECT_FALSE(DecodeNsObject(respelled("uid 1000", "uid 01000")).ok());
  EXPECT_FALSE(DecodeNsObject(respelled("mode 0100644", "mode 00100644")).ok());
  EXPECT_FALSE(DecodeNsObject(respelled("chunk aaaa", "chunk AAAA")).ok());
  EXPECT_FALSE(DecodeNsObject(respelled("ctime -2.", "ctime --2.")).ok());
  std::string upper_sum = good;
  for (size_t i = upper_sum.rfind("sum ") + 4; i < upper_sum.size(); ++i) {
    upper_sum[i] = static_cast<char>(std::toupper(static_cast<unsigned char>(upper_sum[i])));
  }
  ASSERT_NE(upper_sum, good) << "the sample's sum has no hex letter to change";
  EXPECT_FALSE(DecodeNsObject(upper_sum).ok());
}

TEST(OutboxNotes, PathsThatArePublished) {
  EXPECT_TRUE(Publishable("/set/a.kv"));
  EXPECT_TRUE(Publishable("/a b/c\nd"));
  EXPECT_FALSE(Publishable("/set/.kdn-tmp.123"));
  EXPECT_FALSE(Publishable("/set/.kdn-dir"));  // the directory marker's name
  EXPECT_FALSE(Publishable("/.kdn-dir/a.kv"));
  EXPECT_TRUE(Publishable("/set/.kdn-dirt"));
  EXPECT_EQ(DirMarkerKey("/set/sub"), "ns/set/sub/.kdn-dir");
  EXPECT_FALSE(Publishable("/"));
  EXPECT_FALSE(Publishable("relative"));
}

fs::Caller Root(int32_t pid = 100) {
  fs::Caller c;
  c.pid = pid;
  return c;
}

class EdgeFilesystemTest : public ::testing::Test {
 protected:
  void SetUp() override {
    origin_dir_ = dir_.path() / "origin";
    std::filesystem::create_directories(origin_dir_);
    Open();
  }

  void Open(std::chrono::milliseconds sync_timeout = std::chrono::seconds(20)) {
    fs_.reset();
    origin::OriginOptions oo;
    oo.url = "file://" + origin_dir_.string();
    auto origin = origin::OpenOrigin(oo);
    ASSERT_TRUE(origin.ok()) << origin.status().ToString();
    StoreOptions so;
    so.sync = SyncPolicy::kNone;
    fs::Filesystem::Options fo;
    fo.idle_commit = std::chrono::milliseconds(0);
    fo.origin = std::move(*origin);
    fo.upload.sync_timeout = sync_timeout;
    fo.upload.backoff_base = std::chrono::milliseconds(20);
    fo.upload.backoff_max = std::chrono::milliseconds(100);
    auto fs = fs::Filesystem::Open((dir_.path() / "store").string(), so, fo);
    ASSERT_TRUE(fs.ok()) << fs.status().ToString();
    fs_ = std::move(*fs);
  }

  Ino Put(Ino parent, std::string_view name, std::span<const std::byte> data) {
    auto e = fs_->Create(Root(), parent, name, 0644, O_WRONLY | O_CREAT);
    EXPECT_TRUE(e.ok()) << e.status().ToString();
    if (!e.ok()) return 0;
    auto n = fs_->Write(Root(), e->attr.ino, 0, data);
    EXPECT_TRUE(n.ok()) << n.status().ToString();
    Status st = fs_->Flush(Root(), e->attr.ino);
    EXPECT_TRUE(st.ok()) << st.ToString();
    return e->attr.ino;
  }

  std::filesystem::path Key(std::string_view key) const { return origin_dir_ / key; }

  // Moves the origin's directory away (the shared filesystem is gone: a plain file stands in its
  // place, so that nothing can be created under it) or back.
  void OriginDown() {
    std::filesystem::rename(origin_dir_, dir_.path() / "origin.away");
    std::ofstream(origin_dir_) << "unreachable";
  }
  void OriginUp() {
    std::filesystem::remove(origin_dir_);
    std::filesystem::rename(dir_.path() / "origin.away", origin_dir_);
  }

  kdn::test::TempDir dir_{"kdn-edge"};
  std::filesystem::path origin_dir_;
  std::unique_ptr<fs::Filesystem> fs_;
};

TEST_F(EdgeFilesystemTest, FsyncUploadsChunkThenNamespaceObject) {
  auto kv = MakeKv(64, 7);
  auto set_entry = fs_->MakeDir(Root(), kRootIno, "set", 0755);
  ASSERT_TRUE(set_entry.ok()) << set_entry.status().ToString();
  Ino set = set_entry->attr.ino;
  Ino a = Put(set, "a.kv", kv);
  ASSERT_TRUE(fs_->SetXattr(Root(), a, "user.note", "hi", 0).ok());
  ASSERT_TRUE(fs_->Fsync(Root(), a).ok());
  auto attr = fs_->GetAttr(a);
  ASSERT_TRUE(attr.ok());
  const ChunkId id = attr->attr.chunk;
  // The chunk object is the file's bytes under its SHA-256.
  std::string chunk = Slurp(Key("chunks/" + id.ToHex()));
  ASSERT_EQ(chunk.size(), kv.size());
  EXPECT_EQ(std::memcmp(chunk.data(), kv.data(), kv.size()), 0);
  EXPECT_EQ(kdn::test::Sha256Hex(std::as_bytes(std::span(chunk))), id.ToHex());
  auto ns = DecodeNsObject(Slurp(Key("ns/set/a.kv")));
  ASSERT_TRUE(ns.ok()) << ns.status().ToString();
  EXPECT_EQ(ns->chunk, id);
  EXPECT_EQ(ns->size, kv.size());
  EXPECT_EQ(ns->mode, S_IFREG | 0644u);
  EXPECT_EQ(ns->mtime_ns, attr->attr.mtime_ns);
  auto state = fs_->GetXattr(Root(), a, "user.kdn.origin");
  ASSERT_TRUE(state.ok()) << state.status().ToString();
  EXPECT_EQ(*state, "uploaded");
  std::string stats = fs_->StatsText();
  EXPECT_NE(stats.find("origin_queue 0\n"), std::string::npos) << stats;
  EXPECT_NE(stats.find("origin_chunk_uploads 1\n"), std::string::npos) << stats;
}

TEST_F(EdgeFilesystemTest, UnlinkAndRenameReachTheOrigin) {
  auto kv = MakeKv(32, 1);
  Ino a = Put(kRootIno, "a.kv", kv);
  Put(kRootIno, "b.kv", MakeKv(32, 2));
  ASSERT_TRUE(fs_->Fsync(Root(), a).ok());
  ASSERT_TRUE(std::filesystem::exists(Key("ns/a.kv")));
  ASSERT_TRUE(fs_->Rename(Root(), kRootIno, "a.kv", kRootIno, "c.kv", 0).ok());
  ASSERT_TRUE(fs_->Unlink(Root(), kRootIno, "b.kv").ok());
  ASSERT_TRUE(fs_->Fsync(Root(), kRootIno).ok());
  EXPECT_FALSE(std::filesystem::exists(Key("ns/a.kv")));
  EXPECT_FALSE(std::filesystem::exists(Key("ns/b.kv")));
  auto ns = DecodeNsObject(Slurp(Key("ns/c.kv")));
  ASSERT_TRUE(ns.ok()) << ns.status().ToString();
  EXPECT_EQ(ns->size, kv.size());
  // A directory moves with everything the origin has under it.
  Ino d = fs_->MakeDir(Root(), kRootIno, "d", 0755)->attr.ino;
  Put(d, "x.kv", kv);
  ASSERT_TRUE(fs_->Fsync(Root(), kRootIno).ok());
  ASSERT_TRUE(std::filesystem::exists(Key("ns/d/x.kv")));
  ASSERT_TRUE(fs_->Rename(Root(), kRootIno, "d", kRootIno, "e", 0).ok());
  ASSERT_TRUE(fs_->Fsync(Root(), kRootIno).ok());
  EXPECT_FALSE(std::filesystem::exists(Key("ns/d/x.kv")));
  EXPECT_TRUE(DecodeNsObject(Slurp(Key("ns/e/x.kv"))).ok());
}

TEST_F(EdgeFilesystemTest, OriginDownLocalWorkGoesOnAndSyncFails) {
  Open(std::chrono::milliseconds(500));
  OriginDown();
  auto kv = MakeKv(48, 3);
  Ino a = Put(kRootIno, "a.kv", kv);  // commits locally
  auto state = fs_->GetXattr(Root(), a, "user.kdn.origin");
  ASSERT_TRUE(state.ok());
  EXPECT_EQ(*state, "pending");
  Status synced = fs_->Fsync(Root(), kRootIno);
  EXPECT_EQ(synced.sys_errno(), EIO) << synced.ToString();
  EXPECT_NE(synced.message().find("last error"), std::string::npos) << synced.ToString();
  std::string stats = fs_->StatsText();
  EXPECT_NE(stats.find("origin_queue 1\n"), std::string::npos) << stats;
  EXPECT_EQ(stats.find("origin_upload_errors 0\n"), std::string::npos) << stats;
  // The local file is whole and readable meanwhile.
  std::vector<std::byte> back(kv.size());
  auto n = fs_->Read(a, 0, back);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(back, kv);
  OriginUp();
  Status again = fs_->Fsync(Root(), kRootIno);
  EXPECT_TRUE(again.ok()) << again.ToString();
  EXPECT_TRUE(DecodeNsObject(Slurp(Key("ns/a.kv"))).ok());
}

TEST_F(EdgeFilesystemTest, QueuedUploadsSurviveARestart) {
  Open(std::chrono::milliseconds(300));
  OriginDown();
  auto kv = MakeKv(40, 4);
  Put(kRootIno, "a.kv", kv);
  EXPECT_FALSE(fs_->Fsync(Root(), kRootIno).ok());
  fs_.reset();  // the daemon stops with the upload still queued
  OriginUp();
  Open();
  ASSERT_TRUE(fs_->Fsync(Root(), kRootIno).ok());
  auto ns = DecodeNsObject(Slurp(Key("ns/a.kv")));
  ASSERT_TRUE(ns.ok()) << ns.status().ToString();
  EXPECT_EQ(ns->size, kv.size());
  EXPECT_TRUE(std::filesystem::exists(Key("chunks/" + ns->chunk.ToHex())));
}

// Node B, an edge of the same origin as node A: what A published appears on B (listing), is
// fetched on B's first read, verified, and then served locally; changes on A follow after the TTL.
class TwoNodesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    origin_dir_ = dir_.path() / "origin";
    std::filesystem::create_directories(origin_dir_);
    a_ = OpenNode("a");
    b_ = OpenNode("b");
  }

  std::unique_ptr<fs::Filesystem> OpenNode(const std::string& name) {
    origin::OriginOptions oo;
    oo.url = "file://" + origin_dir_.string();
    auto origin = origin::OpenOrigin(oo);
    EXPECT_TRUE(origin.ok()) << origin.status().ToString();
    if (!origin.ok()) return nullptr;
    StoreOptions so;
    so.sync = SyncPolicy::kNone;
    fs::Filesystem::Options fo;
    fo.idle_commit = std::chrono::milliseconds(0);
    fo.origin = std::move(*origin);
    fo.origin_ttl = std::chrono::milliseconds(0);  // every lookup lists again
    fo.upload.sync_timeout = std::chrono::seconds(20);
    auto fs = fs::Filesystem::Open((dir_.path() / name).string(), so, fo);
    EXPECT_TRUE(fs.ok()) << fs.status().ToString();
    return fs.ok() ? std::move(*fs) : nullptr;
  }

  Ino Put(fs::Filesystem& node, Ino parent, std::string_view name,
          std::span<const std::byte> data) {
    auto e = node.Create(Root(), parent, name, 0640, O_WRONLY | O_CREAT);
    EXPECT_TRUE(e.ok()) << e.status().ToString();
    if (!e.ok()) return 0;
    EXPECT_TRUE(node.Write(Root(), e->attr.ino, 0, data).ok());
    EXPECT_TRUE(node.Flush(Root(), e->attr.ino).ok());
    return e->attr.ino;
  }

  // Looks a path up on a node the way the kernel does, one name at a time; 0 when absent.
  Ino Find(fs::Filesystem& node, std::vector<std::string> names) {
    Ino at = kRootIno;
    for (const std::string& n : names) {
      auto e = node.Lookup(Root(), at, n);
      if (!e.ok() || e->attr.ino == 0) return 0;
      at = e->attr.ino;
    }
    return at;
  }

  Result<std::vector<std::byte>> ReadAll(fs::Filesystem& node, Ino ino) {
    KDN_ASSIGN_OR_RETURN(fs::Attr attr, node.GetAttr(ino));
    std::vector<std::byte> out(attr.attr.size);
    size_t done = 0;
    while (done < out.size()) {
      KDN_ASSIGN_OR_RETURN(size_t n, node.Read(ino, done, std::span(out).subspan(done)));
      if (n == 0) break;
      done += n;
    }
    out.resize(done);
    return out;
  }

  std::string Stats(fs::Filesystem& node, const std::string& key) {
    std::string text = node.StatsText();
    size_t at = text.find("\n" + key + " ");
    if (at == std::string::npos) return "";
    size_t end = text.find('\n', at + 1);
    return text.substr(at + key.size() + 2, end - at - key.size() - 2);
  }

  kdn::test::TempDir dir_{"kdn-edge2"};
  std::filesystem::path origin_dir_;
  std::unique_ptr<fs::Filesystem> a_, b_;
};

TEST_F(TwoNodesTest, WrittenOnAIsListedAndReadOnB) {
  auto kv = MakeKv(128, 21);
  auto set = a_->MakeDir(Root(), kRootIno, "set", 0755);
  ASSERT_TRUE(set.ok());
  Ino on_a = Put(*a_, set->attr.ino, "doc.kv", kv);
  ASSERT_TRUE(a_->SetXattr(Root(), on_a, "user.note", "from a", 0).ok());
  ASSERT_TRUE(a_->Fsync(Root(), kRootIno).ok());

  Ino on_b = Find(*b_, {"set", "doc.kv"});
  ASSERT_NE(on_b, 0u) << "node B does not see set/doc.kv";
  auto attr = b_->GetAttr(on_b);
  ASSERT_TRUE(attr.ok());
  EXPECT_EQ(attr->attr.size, kv.size());
  EXPECT_EQ(attr->attr.mode, S_IFREG | 0640u);
  EXPECT_EQ(attr->attr.mtime_ns, a_->GetAttr(on_a)->attr.mtime_ns);
  EXPECT_EQ(*b_->GetXattr(Root(), on_b, "user.kdn.origin"), "remote");
  EXPECT_EQ(*b_->GetXattr(Root(), on_b, "user.note"), "from a");
  auto names = b_->ListXattr(Root(), on_b);
  ASSERT_TRUE(names.ok());
  for (const auto& n : *names) EXPECT_NE(n, "user.kdn.remote") << "kdnfs's record is listed";
  EXPECT_FALSE(b_->GetXattr(Root(), on_b, "user.kdn.remote").ok());
  EXPECT_FALSE(b_->SetXattr(Root(), on_b, "user.kdn.remote", "forged", 0).ok());

  auto bytes = ReadAll(*b_, on_b);
  ASSERT_TRUE(bytes.ok()) << bytes.status().ToString();
  EXPECT_EQ(*bytes, kv);
  EXPECT_EQ(*b_->GetXattr(Root(), on_b, "user.kdn.origin"), "fetched");
  EXPECT_EQ(b_->GetAttr(on_b)->attr.chunk, a_->GetAttr(on_a)->attr.chunk);
  EXPECT_EQ(Stats(*b_, "origin_fetches"), "1");
  EXPECT_EQ(Stats(*b_, "origin_fetch_bytes"), std::to_string(kv.size()));
  // A second read is a hit: no fetch.
  ASSERT_TRUE(ReadAll(*b_, on_b).ok());
  EXPECT_EQ(Stats(*b_, "origin_fetches"), "1");
  // B fetched it: B uploads nothing.
  ASSERT_TRUE(b_->Fsync(Root(), kRootIno).ok());
  EXPECT_EQ(Stats(*b_, "origin_chunk_uploads"), "0");
  EXPECT_EQ(Stats(*b_, "origin_ns_puts"), "0");
}

// A file B only knows from the listing, renamed on B: the origin gets the new name with the
// object's content, not an empty file.
TEST_F(TwoNodesTest, RenamingAPlaceholderKeepsItsContentOnTheOrigin) {
  auto kv = MakeKv(40, 12);
  Ino on_a = Put(*a_, kRootIno, "x.kv", kv);
  ASSERT_TRUE(a_->Fsync(Root(), kRootIno).ok());
  ASSERT_NE(Find(*b_, {"x.kv"}), 0u);
  ASSERT_TRUE(b_->Rename(Root(), kRootIno, "x.kv", kRootIno, "y.kv", 0).ok());
  ASSERT_TRUE(b_->Fsync(Root(), kRootIno).ok());
  EXPECT_FALSE(std::filesystem::exists(origin_dir_ / "ns" / "x.kv"));
  auto ns = DecodeNsObject(Slurp(origin_dir_ / "ns" / "y.kv"));
  ASSERT_TRUE(ns.ok()) << ns.status().ToString();
  EXPECT_EQ(ns->size, kv.size());
  EXPECT_EQ(ns->chunk, a_->GetAttr(on_a)->attr.chunk);
  Ino y = Find(*b_, {"y.kv"});
  ASSERT_NE(y, 0u);
  auto bytes = ReadAll(*b_, y);
  ASSERT_TRUE(bytes.ok()) << bytes.status().ToString();
  EXPECT_EQ(*bytes, kv);
}

// chmod and setxattr on A reach the origin on their own (no new content), and B's copy follows.
TEST_F(TwoNodesTest, ChmodAndXattrsReachTheOriginAndOtherNodes) {
  auto kv = MakeKv(24, 6);
  Ino on_a = Put(*a_, kRootIno, "m.kv", kv);
  ASSERT_TRUE(a_->Fsync(Root(), kRootIno).ok());
  Ino on_b = Find(*b_, {"m.kv"});
  ASSERT_NE(on_b, 0u);
  ASSERT_TRUE(ReadAll(*b_, on_b).ok());  // a fetched copy
  SetAttrRequest chmod;
  chmod.mode = 0600;
  ASSERT_TRUE(a_->SetAttr(Root(), on_a, chmod).ok());
  ASSERT_TRUE(a_->SetXattr(Root(), on_a, "user.tag", "v2", 0).ok());
  ASSERT_TRUE(a_->Fsync(Root(), kRootIno).ok());
  auto ns = DecodeNsObject(Slurp(origin_dir_ / "ns" / "m.kv"));
  ASSERT_TRUE(ns.ok()) << ns.status().ToString();
  EXPECT_EQ(ns->mode, S_IFREG | 0600u);
  ASSERT_EQ(ns->xattrs.size(), 1u);
  EXPECT_EQ(ns->xattrs[0], std::make_pair(std::string("user.tag"), std::string("v2")));
  ASSERT_EQ(Find(*b_, {"m.kv"}), on_b);
  EXPECT_EQ(b_->GetAttr(on_b)->attr.mode, S_IFREG | 0600u);
  EXPECT_EQ(*b_->GetXattr(Root(), on_b, "user.tag"), "v2");
  ASSERT_TRUE(a_->RemoveXattr(Root(), on_a, "user.tag").ok());
  ASSERT_TRUE(a_->Fsync(Root(), kRootIno).ok());
  ns = DecodeNsObject(Slurp(origin_dir_ / "ns" / "m.kv"));
  ASSERT_TRUE(ns.ok());
  EXPECT_TRUE(ns->xattrs.empty());
}

// The race the refresh closes (docs/origin.md, "Garbage"): a chunk lost its only name two hours
// ago; the collector (grace: one hour) lists the chunks and the names; then, before it deletes,
// node B writes a file with that content. B finds the chunk on the origin, so it does not upload
// it, and names it. The chunk must stay: B refreshed it (Origin::Touch) before writing the name,
// and the collector HEADs each chunk again just before it deletes it. A third node reads the file.
TEST_F(TwoNodesTest, CollectorKeepsAnOldChunkThatANodeNamesMeanwhile) {
  auto kv = MakeKv(48, 33);
  Ino on_a = Put(*a_, kRootIno, "old.kv", kv);
  ASSERT_TRUE(a_->Fsync(Root(), kRootIno).ok());
  const ChunkId chunk = a_->GetAttr(on_a)->attr.chunk;
  ASSERT_TRUE(a_->Unlink(Root(), kRootIno, "old.kv").ok());
  ASSERT_TRUE(a_->Fsync(Root(), kRootIno).ok());
  const std::filesystem::path key = origin_dir_ / ChunkKey(chunk);
  ASSERT_TRUE(std::filesystem::exists(key));
  ASSERT_FALSE(std::filesystem::exists(origin_dir_ / "ns" / "old.kv"));
  const time_t two_hours_ago = std::time(nullptr) - 7200;
  const struct timespec old[2] = {{two_hours_ago, 0}, {two_hours_ago, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, key.c_str(), old, 0), 0) << std::strerror(errno);

  origin::OriginOptions oo;
  oo.url = "file://" + origin_dir_.string();
  auto opened = origin::OpenOrigin(oo);
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  Status named_on_b = Status::Internal("the collector never listed the names");
  kdn::test::InterleavingOrigin origin(std::move(*opened), [&] {
    Put(*b_, kRootIno, "new.kv", kv);
    named_on_b = b_->Fsync(Root(), kRootIno);
  });
  GcOptions gc;
  gc.grace = std::chrono::seconds(3600);
  auto report = CollectUnnamedChunks(origin, gc);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  ASSERT_TRUE(named_on_b.ok()) << named_on_b.ToString();
  ASSERT_TRUE(std::filesystem::exists(origin_dir_ / "ns" / "new.kv"));
  EXPECT_EQ(report->names, 0u);  // listed before B's name: to the collector, the chunk is unnamed
  EXPECT_EQ(report->unnamed, 1u);
  EXPECT_EQ(report->refreshed, 1u);
  EXPECT_EQ(report->deleted, 0u);
  ASSERT_TRUE(std::filesystem::exists(key)) << "the collector deleted the chunk B had just named";
  EXPECT_EQ(Stats(*b_, "origin_chunk_uploads"), "0");  // found on the origin, not sent again
  EXPECT_EQ(Stats(*b_, "origin_chunk_refreshes"), "1");
  EXPECT_GT(std::filesystem::last_write_time(key),
            std::filesystem::file_time_type::clock::now() - std::chrono::minutes(5));

  auto c = OpenNode("c");
  ASSERT_NE(c, nullptr);
  Ino on_c = Find(*c, {"new.kv"});
  ASSERT_NE(on_c, 0u);
  auto bytes = ReadAll(*c, on_c);
  ASSERT_TRUE(bytes.ok()) << bytes.status().ToString();
  EXPECT_EQ(*bytes, kv);
  // The next collection sees the name.
  report = CollectUnnamedChunks(origin, gc);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->names, 1u);
  EXPECT_EQ(report->unnamed, 0u);
  EXPECT_TRUE(std::filesystem::exists(key));
}

// A directory renamed on a node that does not have its files: the origin's objects under it are
// copied to the new prefix, each a new name for its chunk, so an old chunk is refreshed first,
// as for any other name (the collector may be between its listing and its deletes meanwhile).
TEST_F(TwoNodesTest, MovedDirectoryRefreshesTheOldChunksItNames) {
  auto kv = MakeKv(32, 35);
  auto dir = a_->MakeDir(Root(), kRootIno, "d", 0755);
  ASSERT_TRUE(dir.ok());
  Ino on_a = Put(*a_, dir->attr.ino, "x.kv", kv);
  ASSERT_TRUE(a_->Fsync(Root(), kRootIno).ok());
  const std::filesystem::path key = origin_dir_ / ChunkKey(a_->GetAttr(on_a)->attr.chunk);
  const time_t two_hours_ago = std::time(nullptr) - 7200;
  const struct timespec old[2] = {{two_hours_ago, 0}, {two_hours_ago, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, key.c_str(), old, 0), 0) << std::strerror(errno);
  ASSERT_NE(Find(*b_, {"d", "x.kv"}), 0u);
  ASSERT_TRUE(b_->Rename(Root(), kRootIno, "d", kRootIno, "e", 0).ok());
  ASSERT_TRUE(b_->Fsync(Root(), kRootIno).ok());
  ASSERT_TRUE(std::filesystem::exists(origin_dir_ / "ns" / "e" / "x.kv"));
  EXPECT_FALSE(std::filesystem::exists(origin_dir_ / "ns" / "d" / "x.kv"));
  EXPECT_EQ(Stats(*b_, "origin_chunk_refreshes"), "1");
  EXPECT_GT(std::filesystem::last_write_time(key),
            std::filesystem::file_time_type::clock::now() - std::chrono::minutes(5));
}

// A chunk that lost its name two hours ago, and that nobody names: the collector (grace: one
// hour) deletes it after its second look, and a node that then writes that content uploads it.
TEST_F(TwoNodesTest, CollectorDeletesAnOldUnnamedChunkAndANodeUploadsItAgain) {
  auto kv = MakeKv(40, 34);
  Ino on_a = Put(*a_, kRootIno, "gone.kv", kv);
  ASSERT_TRUE(a_->Fsync(Root(), kRootIno).ok());
  const ChunkId chunk = a_->GetAttr(on_a)->attr.chunk;
  ASSERT_TRUE(a_->Unlink(Root(), kRootIno, "gone.kv").ok());
  ASSERT_TRUE(a_->Fsync(Root(), kRootIno).ok());
  const std::filesystem::path key = origin_dir_ / ChunkKey(chunk);
  const time_t two_hours_ago = std::time(nullptr) - 7200;
  const struct timespec old[2] = {{two_hours_ago, 0}, {two_hours_ago, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, key.c_str(), old, 0), 0) << std::strerror(errno);
  origin::OriginOptions oo;
  oo.url = "file://" + origin_dir_.string();
  auto origin = origin::OpenOrigin(oo);
  ASSERT_TRUE(origin.ok()) << origin.status().ToString();
  GcOptions gc;
  gc.grace = std::chrono::seconds(3600);
  auto report = CollectUnnamedChunks(**origin, gc);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->deleted, 1u);
  EXPECT_EQ(report->refreshed, 0u);
  EXPECT_FALSE(std::filesystem::exists(key));
  Put(*b_, kRootIno, "again.kv", kv);
  ASSERT_TRUE(b_->Fsync(Root(), kRootIno).ok());
  EXPECT_EQ(Stats(*b_, "origin_chunk_uploads"), "1");
  EXPECT_TRUE(std::filesystem::exists(key));
}

// Whoever can write to the origin cannot plant a setuid or setgid file on every node.
TEST_F(TwoNodesTest, OriginModesLoseSetuidAndSetgid) {
  Ino on_a = Put(*a_, kRootIno, "tool", MakeKv(16, 1));
  SetAttrRequest suid;
  suid.mode = 06755;
  ASSERT_TRUE(a_->SetAttr(Root(), on_a, suid).ok());
  ASSERT_TRUE(a_->Rename(Root(), kRootIno, "tool", kRootIno, "tool2", 0).ok());  // republished
  ASSERT_TRUE(a_->Fsync(Root(), kRootIno).ok());
  auto ns = DecodeNsObject(Slurp(origin_dir_ / "ns" / "tool2"));
  ASSERT_TRUE(ns.ok()) << ns.status().ToString();
  EXPECT_EQ(ns->mode & 06000, 06000u);  // the origin says setuid and setgid
  Ino on_b = Find(*b_, {"tool2"});
  ASSERT_NE(on_b, 0u);
  EXPECT_EQ(b_->GetAttr(on_b)->attr.mode, S_IFREG | 0755u);
}

TEST_F(TwoNodesTest, RenameAndRemoveOnAAreSeenOnB) {
  auto kv = MakeKv(32, 3);
  Put(*a_, kRootIno, "a.kv", kv);
  Put(*a_, kRootIno, "b.kv", MakeKv(32, 4));
  ASSERT_TRUE(a_->Fsync(Root(), kRootIno).ok());
  Ino a_on_b = Find(*b_, {"a.kv"});
  ASSERT_NE(a_on_b, 0u);
  ASSERT_TRUE(ReadAll(*b_, a_on_b).ok());  // fetched: a copy with content
  ASSERT_NE(Find(*b_, {"b.kv"}), 0u);      // only listed

  ASSERT_TRUE(a_->Rename(Root(), kRootIno, "a.kv", kRootIno, "c.kv", 0).ok());
  ASSERT_TRUE(a_->Unlink(Root(), kRootIno, "b.kv").ok());
  ASSERT_TRUE(a_->Fsync(Root(), kRootIno).ok());
  EXPECT_EQ(Find(*b_, {"a.kv"}), 0u);
  EXPECT_EQ(Find(*b_, {"b.kv"}), 0u);
  Ino c_on_b = Find(*b_, {"c.kv"});
  ASSERT_NE(c_on_b, 0u);
  auto bytes = ReadAll(*b_, c_on_b);
  ASSERT_TRUE(bytes.ok());
  EXPECT_EQ(*bytes, kv);
  // New content under a name B has a copy of: B's copy follows it.
  auto kv2 = MakeKv(48, 5);
  Ino c_on_a = Find(*a_, {"c.kv"});
  ASSERT_TRUE(a_->SetAttr(Root(), c_on_a,
                          [] {
                            SetAttrRequest r;
                            r.size = 0;
                            return r;
                          }())
                  .ok());
  ASSERT_TRUE(a_->Write(Root(), c_on_a, 0, kv2).ok());
  ASSERT_TRUE(a_->Fsync(Root(), c_on_a).ok());
  c_on_b = Find(*b_, {"c.kv"});
  ASSERT_NE(c_on_b, 0u);
  EXPECT_EQ(b_->GetAttr(c_on_b)->attr.size, kv2.size());
  bytes = ReadAll(*b_, c_on_b);
  ASSERT_TRUE(bytes.ok());
  EXPECT_EQ(*bytes, kv2);
  // A file B wrote itself is not B's copy of anything: A's listing never removes it.
  Put(*b_, kRootIno, "own.kv", kv);
  ASSERT_NE(Find(*b_, {"own.kv"}), 0u);
}

TEST_F(TwoNodesTest, OverwrittenObjectIsRefusedAndNotCached) {
  auto kv = MakeKv(64, 8);
  Ino on_a = Put(*a_, kRootIno, "doc.kv", kv);
  ASSERT_TRUE(a_->Fsync(Root(), kRootIno).ok());
  const ChunkId id = a_->GetAttr(on_a)->attr.chunk;
  Ino on_b = Find(*b_, {"doc.kv"});
  ASSERT_NE(on_b, 0u);
  // Other bytes of the same length under the chunk's key.
  auto other = MakeKv(64, 9);
  ASSERT_EQ(other.size(), kv.size());
  {
    std::ofstream out(origin_dir_ / "chunks" / id.ToHex(), std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(other.data()),
              static_cast<std::streamsize>(other.size()));
  }
  auto bytes = ReadAll(*b_, on_b);
  ASSERT_FALSE(bytes.ok());
  EXPECT_EQ(bytes.status().sys_errno(), EIO) << bytes.status().ToString();
  EXPECT_NE(bytes.status().message().find(id.ToHex()), std::string::npos);
  EXPECT_EQ(Stats(*b_, "origin_fetch_errors"), "1");
  EXPECT_EQ(*b_->GetXattr(Root(), on_b, "user.kdn.origin"), "remote");  // nothing cached
  EXPECT_TRUE(b_->store().StatChunk(id).status().IsNotFound());
  // Repaired on the origin: the next read fetches it.
  {
    std::ofstream out(origin_dir_ / "chunks" / id.ToHex(), std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(kv.data()), static_cast<std::streamsize>(kv.size()));
  }
  bytes = ReadAll(*b_, on_b);
  ASSERT_TRUE(bytes.ok()) << bytes.status().ToString();
  EXPECT_EQ(*bytes, kv);
}

TEST_F(TwoNodesTest, OriginDownHitsServeMissesFail) {
  auto kv = MakeKv(40, 1);
  Put(*a_, kRootIno, "hit.kv", kv);
  Put(*a_, kRootIno, "miss.kv", MakeKv(40, 2));
  ASSERT_TRUE(a_->Fsync(Root(), kRootIno).ok());
  Ino hit = Find(*b_, {"hit.kv"});
  Ino miss = Find(*b_, {"miss.kv"});
  ASSERT_NE(hit, 0u);
  ASSERT_NE(miss, 0u);
  ASSERT_TRUE(ReadAll(*b_, hit).ok());
  std::filesystem::rename(origin_dir_, dir_.path() / "away");
  std::ofstream(origin_dir_) << "unreachable";
  auto bytes = ReadAll(*b_, hit);
  ASSERT_TRUE(bytes.ok()) << bytes.status().ToString();
  EXPECT_EQ(*bytes, kv);
  // Names stay as last listed; the listing error is counted.
  EXPECT_EQ(Find(*b_, {"hit.kv"}), hit);
  EXPECT_NE(Stats(*b_, "origin_listing_errors"), "0");
  auto missed = ReadAll(*b_, miss);
  ASSERT_FALSE(missed.ok());
  EXPECT_EQ(missed.status().sys_errno(), EIO);
  EXPECT_EQ(Find(*b_, {"unknown.kv"}), 0u);
  // Writes still commit locally and queue.
  Put(*b_, kRootIno, "new.kv", kv);
  EXPECT_EQ(*b_->GetXattr(Root(), Find(*b_, {"new.kv"}), "user.kdn.origin"), "pending");
}

// Uploaded content is cache: evicted when the store is full, listed and fetched again on use.
TEST_F(TwoNodesTest, UploadedFilesAreEvictableAndComeBack) {
  a_.reset();
  origin::OriginOptions oo;
  oo.url = "file://" + origin_dir_.string();
  auto origin = origin::OpenOrigin(oo);
  ASSERT_TRUE(origin.ok());
  StoreOptions so;
  so.sync = SyncPolicy::kNone;
  so.capacity_bytes = 3 * 65536;
  fs::Filesystem::Options fo;
  fo.origin = std::move(*origin);
  fo.origin_ttl = std::chrono::seconds(3600);  // only an eviction makes it list again
  auto opened = fs::Filesystem::Open((dir_.path() / "small").string(), so, fo);
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  fs::Filesystem& a = **opened;
  auto bytes_of = [](char c) { return std::vector<std::byte>(60000, std::byte(c)); };
  Put(a, kRootIno, "first", bytes_of('1'));
  ASSERT_TRUE(a.Fsync(Root(), kRootIno).ok());
  EXPECT_EQ(*a.GetXattr(Root(), Find(a, {"first"}), "user.kdn.evictable"), "1");
  for (char c : {'2', '3', '4'}) {
    Put(a, kRootIno, std::string(1, c), bytes_of(c));
    ASSERT_TRUE(a.Fsync(Root(), kRootIno).ok());
  }
  EXPECT_NE(Stats(a, "evictions"), "0");
  Ino back = Find(a, {"first"});
  ASSERT_NE(back, 0u) << "an evicted, uploaded file must come back from the origin";
  auto bytes = ReadAll(a, back);
  ASSERT_TRUE(bytes.ok()) << bytes.status().ToString();
  EXPECT_EQ(*bytes, bytes_of('1'));
}

// The store never evicts a chunk that an outbox note still needs (its bytes are not on the
// origin yet); once the note is gone, it is ordinary evictable cache.
TEST(Outbox, KeepsNamedChunksFromEviction) {
  kdn::test::TempDir dir("kdn-outbox");
  StoreOptions so;
  so.sync = SyncPolicy::kNone;
  so.capacity_bytes = 3 * 65536;
  auto store = Store::Open((dir.path() / "store").string(), so);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  Store& s = **store;
  auto node = [](uint32_t mode) {
    NewNode n;
    n.mode = mode;
    return n;
  };
  auto dir_attr = s.MakeNode(kRootIno, "cache", node(S_IFDIR | 0755));
  ASSERT_TRUE(dir_attr.ok());
  ASSERT_TRUE(s.SetEvictable(dir_attr->ino, true).ok());
  auto commit = [&](std::string_view name, char fill, std::string note) -> Result<InodeAttr> {
    KDN_ASSIGN_OR_RETURN(InodeAttr f, s.MakeNode(dir_attr->ino, name, node(S_IFREG | 0644)));
    std::string staged = s.NewStagingPath();
    {
      std::ofstream out(staged, std::ios::binary);
      out << std::string(65536, fill);
    }
    CommitOptions co;
    co.outbox_note = std::move(note);
    return s.CommitFileContent(f.ino, staged, co);
  };
  auto pending = commit("pending", 'p', "upload me");
  ASSERT_TRUE(pending.ok()) << pending.status().ToString();
  auto notes = s.ReadOutbox(0, 10);
  ASSERT_TRUE(notes.ok());
  ASSERT_EQ(notes->size(), 1u);
  EXPECT_EQ((*notes)[0].chunk, pending->chunk);
  EXPECT_EQ((*notes)[0].body, "upload me");
  for (char c : {'a', 'b', 'c', 'd'}) {
    ASSERT_TRUE(commit(std::string(1, c), c, "").ok());
  }
  EXPECT_TRUE(s.Lookup(dir_attr->ino, "pending").ok()) << "a chunk with a note was evicted";
  ASSERT_TRUE(s.RemoveOutboxNote((*notes)[0].seq).ok());
  auto state = s.GetOutboxState();
  ASSERT_TRUE(state.ok());
  EXPECT_EQ(state->notes, 0u);
  for (char c : {'e', 'f', 'g'}) ASSERT_TRUE(commit(std::string(1, c), c, "").ok());
  EXPECT_TRUE(s.Lookup(dir_attr->ino, "pending").status().IsNotFound());
}

// mkdir, link and rmdir write their notes in the change's own transaction (a refused change
// writes none); PathsOf names a file through each of its names.
TEST(Outbox, NamespaceChangesCarryTheirNotes) {
  kdn::test::TempDir dir("kdn-outbox");
  StoreOptions so;
  so.sync = SyncPolicy::kNone;
  auto store = Store::Open((dir.path() / "store").string(), so);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  Store& s = **store;
  auto node = [](uint32_t mode) {
    NewNode n;
    n.mode = mode;
    return n;
  };
  auto d = s.MakeNode(kRootIno, "d", node(S_IFDIR | 0755), "mkdir d");
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  auto f = s.MakeNode(d->ino, "f", node(S_IFREG | 0644));
  ASSERT_TRUE(f.ok());
  ASSERT_TRUE(s.Link(f->ino, kRootIno, "g", "link g").ok());
  EXPECT_FALSE(s.MakeNode(kRootIno, "d", node(S_IFDIR | 0755), "mkdir again").ok());
  EXPECT_FALSE(s.Link(f->ino, kRootIno, "g", "link again").ok());
  EXPECT_FALSE(s.Rmdir(kRootIno, "d", "rmdir too early").ok());  // not empty
  auto paths = s.PathsOf(f->ino);
  ASSERT_TRUE(paths.ok()) << paths.status().ToString();
  EXPECT_EQ(*paths, (std::vector<std::string>{"/d/f", "/g"}));
  ASSERT_TRUE(s.Unlink(d->ino, "f").ok());
  ASSERT_TRUE(s.Rmdir(kRootIno, "d", "rmdir d").ok());
  paths = s.PathsOf(f->ino);
  ASSERT_TRUE(paths.ok());
  EXPECT_EQ(*paths, std::vector<std::string>{"/g"});
  auto notes = s.ReadOutbox(0, 10);
  ASSERT_TRUE(notes.ok());
  std::vector<std::string> bodies;
  for (const OutboxNote& n : *notes) bodies.push_back(n.body);
  EXPECT_EQ(bodies, (std::vector<std::string>{"mkdir d", "link g", "rmdir d"}));
}

}  // namespace
}  // namespace kdn::edge
