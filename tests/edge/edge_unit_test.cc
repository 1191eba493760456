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
#include <thread>
#include <vector>

#include "fs/edge/ns_object.h"
#include "fs/edge/origin_gc.h"
#include "fs/edge/uploader.h"
#include "fs/kdnfs/filesystem.h"
#include "fs_test_util.h"
#include "kdn/format.h"
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

// A directory's marker carries its mode and owner; the two kinds of object never pass for each
// other, and an empty marker (earlier versions) says nothing.
TEST(NsObject, DirectoryMarkersCarryModeAndOwnerOnly) {
  const std::string bytes = EncodeDirMarker(S_IFDIR | 01770, 65534, 100, 1733460000123456789, 5);
  auto back = DecodeDirMarker(bytes);
  ASSERT_TRUE(back.ok()) << back.status().ToString() << "\n" << bytes;
  EXPECT_EQ(back->mode, static_cast<uint32_t>(S_IFDIR | 01770));
  EXPECT_EQ(back->uid, 65534u);
  EXPECT_EQ(back->gid, 100u);
  EXPECT_EQ(back->mtime_ns, 1733460000123456789);
  EXPECT_TRUE(back->chunk.IsZero());
  EXPECT_EQ(EncodeDirMarker(0700, 1, 2, 0, 0), EncodeDirMarker(S_IFDIR | 0700, 1, 2, 0, 0));
  EXPECT_EQ(DecodeNsObject(bytes).status().code(), Code::kCorruption);  // not a file's object
  EXPECT_EQ(DecodeDirMarker(EncodeNsObject(SampleObject())).status().code(), Code::kCorruption);
  NsObject with_xattr;
  with_xattr.mode = S_IFDIR | 0755;
  with_xattr.xattrs = {{"user.x", "1"}};
  EXPECT_EQ(DecodeDirMarker(EncodeNsObject(with_xattr)).status().code(), Code::kCorruption);
  EXPECT_EQ(DecodeDirMarker("").status().code(), Code::kNotFound);
  for (size_t i = 0; i < bytes.size(); ++i) {
    std::string bad = bytes;
    bad[i] = static_cast<char>(bad[i] ^ 0x01);
    EXPECT_FALSE(DecodeDirMarker(bad).ok()) << "byte " << i << " changed was accepted";
  }
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

// A file with more names than a first page of them (64): new content reaches the origin under
// every one.
TEST_F(EdgeFilesystemTest, NewContentIsPublishedUnderEveryHardLink) {
  Ino a = Put(kRootIno, "a.kv", MakeKv(16, 1));
  constexpr int kLinks = 70;
  for (int i = 0; i < kLinks; ++i) {
    auto l = fs_->Link(Root(), a, kRootIno, "l" + std::to_string(i));
    ASSERT_TRUE(l.ok()) << l.status().ToString();
  }
  // New content: one note, published under all 71 names.
  auto kv = MakeKv(16, 2);
  auto w = fs_->Create(Root(), kRootIno, "a.kv", 0644, O_WRONLY | O_CREAT | O_TRUNC);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  ASSERT_EQ(w->attr.ino, a);
  ASSERT_TRUE(fs_->Write(Root(), a, 0, kv).ok());
  ASSERT_TRUE(fs_->Flush(Root(), a).ok());
  ASSERT_TRUE(fs_->Fsync(Root(), a).ok());
  const ChunkId id = fs_->GetAttr(a)->attr.chunk;
  for (int i = -1; i < kLinks; ++i) {
    const std::string name = i < 0 ? "a.kv" : "l" + std::to_string(i);
    auto ns = DecodeNsObject(Slurp(Key("ns/" + name)));
    ASSERT_TRUE(ns.ok()) << name << ": " << ns.status().ToString();
    EXPECT_EQ(ns->chunk, id) << name;
  }
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

  // A read is answered as soon as its bytes are verified; the fetch's commit goes on in the
  // background. Waits (bounded) until the node has no fetch left running.
  bool WaitForFetches(fs::Filesystem& node) {
    for (int i = 0; i < 2000; ++i) {
      if (Stats(node, "origin_fetches_running") == "0") return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
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
  ASSERT_TRUE(WaitForFetches(*b_));
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
// ---- read misses that stream (origin_reader.h) --------------------------------------------------

// A test double of the origin: every call goes to a real (POSIX-directory) origin, but GETs of a
// chunk object that touch [from, to) can be held until released, or fail (after a short delay,
// as the real client fails once its retry budget is spent). It counts the chunk bytes asked for.
class GatedOrigin : public origin::Origin {
 public:
  explicit GatedOrigin(std::shared_ptr<origin::Origin> inner) : inner_(std::move(inner)) {}

  void Hold(uint64_t from, uint64_t to) {
    std::lock_guard lock(mu_);
    from_ = from;
    to_ = to;
    held_ = true;
  }
  void FailRange(uint64_t from, uint64_t to) {
    std::lock_guard lock(mu_);
    from_ = from;
    to_ = to;
    failing_ = true;
  }
  void Release() {
    {
      std::lock_guard lock(mu_);
      held_ = failing_ = false;
    }
    cv_.notify_all();
  }
  uint64_t chunk_bytes_asked() const { return chunk_bytes_.load(); }

  Status Put(std::string_view key, std::span<const uint8_t> data) override {
    return inner_->Put(key, data);
  }
  Status PutFile(std::string_view key, int fd, uint64_t size) override {
    return inner_->PutFile(key, fd, size);
  }
  Result<uint64_t> Get(std::string_view key, uint64_t offset, std::span<uint8_t> out) override {
    if (key.starts_with("chunks/")) {
      chunk_bytes_ += out.size();
      std::unique_lock lock(mu_);
      auto touches = [&] { return offset < to_ && offset + out.size() > from_; };
      if (failing_ && touches()) {
        lock.unlock();
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        return Status::IOError("origin GET " + std::string(key) + ": down (test double)");
      }
      // Bounded, as every call of the real client is.
      bool released = cv_.wait_for(lock, std::chrono::seconds(60),
                                   [&] { return !held_ || !touches(); });
      if (!released) return Status::IOError("held for 60 s (test double)");
    }
    return inner_->Get(key, offset, out);
  }
  Result<origin::ObjectInfo> Head(std::string_view key) override { return inner_->Head(key); }
  Result<origin::ListPage> List(std::string_view prefix, std::string_view delimiter,
                                std::string_view token, unsigned max_keys) override {
    return inner_->List(prefix, delimiter, token, max_keys);
  }
  Status Delete(std::string_view key) override { return inner_->Delete(key); }
  Status Touch(std::string_view key) override { return inner_->Touch(key); }
  std::string Describe() const override { return "gated " + inner_->Describe(); }

 private:
  std::shared_ptr<origin::Origin> inner_;
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t from_ = 0, to_ = 0;
  bool held_ = false, failing_ = false;
  std::atomic<uint64_t> chunk_bytes_{0};
};

// Node A writes; node B reads through a GatedOrigin, in pieces of 64 KiB.
class StreamingFetchTest : public TwoNodesTest {
 protected:
  static constexpr uint64_t kPiece = 64 << 10;

  void SetUp() override {
    TwoNodesTest::SetUp();
    b_.reset();
    origin::OriginOptions oo;
    oo.url = "file://" + origin_dir_.string();
    auto origin = origin::OpenOrigin(oo);
    ASSERT_TRUE(origin.ok()) << origin.status().ToString();
    std::shared_ptr<origin::Origin> plain = std::move(*origin);
    gate_ = std::make_shared<GatedOrigin>(plain);
    StoreOptions so;
    so.sync = SyncPolicy::kNone;
    fs::Filesystem::Options fo;
    fo.idle_commit = std::chrono::milliseconds(0);
    fo.origin = plain;
    fo.read_origin = gate_;
    fo.origin_ttl = std::chrono::milliseconds(0);
    fo.origin_read_timeout = std::chrono::milliseconds(2000);
    fo.origin_piece_bytes = kPiece;
    fo.origin_fetch_threads = 3;
    auto fs = fs::Filesystem::Open((dir_.path() / "b").string(), so, fo);
    ASSERT_TRUE(fs.ok()) << fs.status().ToString();
    b_ = std::move(*fs);
  }
  void TearDown() override {
    if (gate_) gate_->Release();
    b_.reset();
  }

  // A `.kv` of the test model with 2048 tokens: 10 blocks of 256 KiB, about 40 pieces.
  // Published by node A; returns B's placeholder of it.
  Ino Publish(const std::vector<std::byte>& kv, const std::string& name = "big.kv") {
    Ino on_a = Put(*a_, kRootIno, name, kv);
    EXPECT_TRUE(a_->Fsync(Root(), kRootIno).ok());
    id_ = a_->GetAttr(on_a)->attr.chunk;
    return Find(*b_, {name});
  }

  static KvHeader HeaderOf(const std::vector<std::byte>& kv) {
    auto fixed = KvHeaderBytes(std::span(kv).first(kKvFixedHeaderBytes), kv.size());
    EXPECT_TRUE(fixed.ok());
    auto header = ParseKvHeader(std::span(kv).first(*fixed), kv.size());
    EXPECT_TRUE(header.ok()) << header.status().ToString();
    return *header;
  }

  // Staging files of fetches (not kdnfs's first-content slots file, which stays while it runs).
  size_t StagedFiles() {
    const std::filesystem::path slots = b_->store().FirstContentSlotsPath();
    size_t n = 0;
    for (auto& e : std::filesystem::directory_iterator(b_->store().staging_dir())) {
      if (e.path().filename() != slots.filename()) ++n;
    }
    return n;
  }

  std::shared_ptr<GatedOrigin> gate_;
  ChunkId id_;
};

TEST_F(StreamingFetchTest, LastBlockIsServedBeforeTheRestArrives) {
  auto kv = MakeKv(2048, 5);
  const KvHeader h = HeaderOf(kv);
  const BlockEntry& last = h.blocks.back();
  ASSERT_GT(last.offset, 8 * kPiece) << "the test needs a multi-piece object";
  Ino on_b = Publish(kv);
  ASSERT_NE(on_b, 0u);
  // Everything between the first piece and the last block is held on the origin.
  gate_->Hold(kPiece, last.offset / kPiece * kPiece);
  std::vector<std::byte> got(4096);
  auto n = b_->Read(on_b, last.offset + 1000, got);
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  ASSERT_EQ(*n, got.size());
  EXPECT_TRUE(std::equal(got.begin(), got.end(), kv.begin() + last.offset + 1000));
  // Answered while the middle of the object cannot have arrived (no held GET returns before
  // Release): nothing is committed yet.
  EXPECT_EQ(*b_->GetXattr(Root(), on_b, "user.kdn.origin"), "remote");
  EXPECT_EQ(Stats(*b_, "origin_fetches"), "0");
  EXPECT_EQ(Stats(*b_, "origin_fetches_running"), "1");
  EXPECT_EQ(Stats(*b_, "origin_reads_before_commit"), "1");
  // The rest arrives: the whole file reads back, and the content is committed and verified.
  gate_->Release();
  auto bytes = ReadAll(*b_, on_b);
  ASSERT_TRUE(bytes.ok()) << bytes.status().ToString();
  EXPECT_EQ(*bytes, kv);
  ASSERT_TRUE(WaitForFetches(*b_));
  EXPECT_EQ(*b_->GetXattr(Root(), on_b, "user.kdn.origin"), "fetched");
  EXPECT_EQ(b_->GetAttr(on_b)->attr.chunk, id_);
  EXPECT_EQ(Stats(*b_, "origin_fetches"), "1");
  EXPECT_EQ(Stats(*b_, "origin_fetch_errors"), "0");
  EXPECT_EQ(StagedFiles(), 0u);
}

TEST_F(StreamingFetchTest, CorruptBlockIsEioAndNothingIsCached) {
  auto kv = MakeKv(2048, 6);
  const KvHeader h = HeaderOf(kv);
  const BlockEntry& damaged = h.blocks[5];
  Ino on_b = Publish(kv);
  ASSERT_NE(on_b, 0u);
  {
    std::fstream f(origin_dir_ / "chunks" / id_.ToHex(),
                   std::ios::binary | std::ios::in | std::ios::out);
    f.seekp(static_cast<std::streamoff>(damaged.offset + 100));
    f.put(static_cast<char>(std::to_integer<uint8_t>(kv[damaged.offset + 100]) ^ 0x40));
  }
  // What follows the damaged block is held, so that the block's own check is what refuses it
  // (not the hash of the whole object).
  const uint64_t after = (damaged.offset + damaged.encoded_bytes + kPiece - 1) / kPiece * kPiece;
  gate_->Hold(after, kv.size());
  std::vector<std::byte> got(4096);
  auto n = b_->Read(on_b, damaged.offset, got);
  ASSERT_FALSE(n.ok()) << "a damaged block was served";
  EXPECT_EQ(n.status().sys_errno(), EIO) << n.status().ToString();
  EXPECT_NE(n.status().message().find(id_.ToHex()), std::string::npos) << n.status().ToString();
  EXPECT_NE(n.status().message().find("checksum"), std::string::npos) << n.status().ToString();
  ASSERT_TRUE(WaitForFetches(*b_));
  EXPECT_NE(Stats(*b_, "origin_fetch_errors"), "0");
  EXPECT_EQ(*b_->GetXattr(Root(), on_b, "user.kdn.origin"), "remote");  // nothing cached
  EXPECT_TRUE(b_->store().StatChunk(id_).status().IsNotFound());
  EXPECT_EQ(StagedFiles(), 0u) << "the staging file of a refused fetch is left behind";
  // Every later read of the damaged range is refused too (each one tries the origin again).
  n = b_->Read(on_b, damaged.offset, got);
  ASSERT_FALSE(n.ok());
  EXPECT_EQ(n.status().sys_errno(), EIO);
}

TEST_F(StreamingFetchTest, ConcurrentReadersShareOneFetch) {
  auto kv = MakeKv(2048, 7);
  Ino on_b = Publish(kv);
  ASSERT_NE(on_b, 0u);
  // Held until every reader has started, so that they all meet one fetch.
  gate_->Hold(0, kv.size());
  std::vector<std::thread> readers;
  std::vector<Result<std::vector<std::byte>>> results(4, Status::IOError("not run"));
  for (size_t i = 0; i < results.size(); ++i) {
    readers.emplace_back([&, i] { results[i] = ReadAll(*b_, on_b); });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  gate_->Release();
  for (std::thread& t : readers) t.join();
  for (auto& r : results) {
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(*r, kv);
  }
  ASSERT_TRUE(WaitForFetches(*b_));
  EXPECT_EQ(Stats(*b_, "origin_fetches"), "1");
  // Every byte was asked of the origin once.
  EXPECT_EQ(gate_->chunk_bytes_asked(), kv.size());
}

TEST_F(StreamingFetchTest, OriginDownMidFetchIsEioAndALaterReadRetries) {
  auto kv = MakeKv(2048, 8);
  const KvHeader h = HeaderOf(kv);
  Ino on_b = Publish(kv);
  ASSERT_NE(on_b, 0u);
  // The first piece arrives, then the origin goes down.
  gate_->FailRange(kPiece, kv.size());
  std::vector<std::byte> got(4096);
  auto n = b_->Read(on_b, h.blocks.back().offset, got);
  ASSERT_FALSE(n.ok());
  EXPECT_EQ(n.status().sys_errno(), EIO) << n.status().ToString();
  EXPECT_NE(n.status().message().find(id_.ToHex()), std::string::npos) << n.status().ToString();
  ASSERT_TRUE(WaitForFetches(*b_));
  EXPECT_NE(Stats(*b_, "origin_fetch_errors"), "0");
  EXPECT_EQ(*b_->GetXattr(Root(), on_b, "user.kdn.origin"), "remote");
  EXPECT_EQ(StagedFiles(), 0u);
  // Back: the next read starts a new fetch and gets the bytes.
  gate_->Release();
  n = b_->Read(on_b, h.blocks.back().offset, got);
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_TRUE(std::equal(got.begin(), got.end(), kv.begin() + h.blocks.back().offset));
  auto bytes = ReadAll(*b_, on_b);
  ASSERT_TRUE(bytes.ok()) << bytes.status().ToString();
  EXPECT_EQ(*bytes, kv);
  ASSERT_TRUE(WaitForFetches(*b_));
  EXPECT_EQ(*b_->GetXattr(Root(), on_b, "user.kdn.origin"), "fetched");
}

// A reader whose bytes do not come (GETs that hang) fails within the read timeout; the fetch goes
// on, and a read after the origin answers again is served.
TEST_F(StreamingFetchTest, StalledOriginFailsTheReadWithinTheTimeout) {
  auto kv = MakeKv(2048, 9);
  Ino on_b = Publish(kv);
  ASSERT_NE(on_b, 0u);
  gate_->Hold(kPiece, 2 * kPiece);
  std::vector<std::byte> got(4096);
  // The header's bytes come first; the read starts the fetch, whose pool takes the pieces in
  // order: piece 1 is held, and a pool thread waits on it.
  auto n = b_->Read(on_b, 0, std::span(got).first(64));
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_TRUE(std::equal(got.begin(), got.begin() + 64, kv.begin()));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  // This reader's block needs piece 1: it waits for the pool thread, and gives up.
  n = b_->Read(on_b, kPiece + 10, got);
  ASSERT_FALSE(n.ok());
  EXPECT_EQ(n.status().sys_errno(), EIO) << n.status().ToString();
  EXPECT_NE(n.status().message().find("no bytes arrived"), std::string::npos)
      << n.status().ToString();
  gate_->Release();
  auto bytes = ReadAll(*b_, on_b);
  ASSERT_TRUE(bytes.ok()) << bytes.status().ToString();
  EXPECT_EQ(*bytes, kv);
}

// A file that is no `.kv` has no block checksums: nothing of it is served before the whole object
// hashes to its id.
TEST_F(StreamingFetchTest, OtherContentIsServedOnlyWhenWhole) {
  std::vector<std::byte> data(10 * kPiece + 123);
  for (size_t i = 0; i < data.size(); ++i) data[i] = std::byte(i * 7 + 3);
  Ino on_b = Publish(data, "plain.bin");
  ASSERT_NE(on_b, 0u);
  // Its last byte changed on the origin: the first bytes must not be served either.
  {
    std::fstream f(origin_dir_ / "chunks" / id_.ToHex(),
                   std::ios::binary | std::ios::in | std::ios::out);
    f.seekp(static_cast<std::streamoff>(data.size() - 1));
    f.put('x');
  }
  std::vector<std::byte> got(100);
  auto n = b_->Read(on_b, 0, got);
  ASSERT_FALSE(n.ok()) << "bytes of an object that does not match its id were served";
  EXPECT_EQ(n.status().sys_errno(), EIO);
  ASSERT_TRUE(WaitForFetches(*b_));
  EXPECT_EQ(StagedFiles(), 0u);
}

// A write to a file whose fetch is still running waits for that fetch (the content is fetched
// before it is staged), and changes the fetched bytes.
TEST_F(StreamingFetchTest, WriteDuringAFetchWaitsForIt) {
  auto kv = MakeKv(2048, 10);
  const KvHeader h = HeaderOf(kv);
  Ino on_b = Publish(kv);
  ASSERT_NE(on_b, 0u);
  gate_->Hold(kPiece, h.blocks.back().offset / kPiece * kPiece);
  std::vector<std::byte> got(4096);
  ASSERT_TRUE(b_->Read(on_b, h.blocks.back().offset, got).ok());
  std::thread release([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    gate_->Release();
  });
  const std::byte changed{0x42};  // no `.kv` magic any more: committed as a plain file
  auto n = b_->Write(Root(), on_b, 0, std::span(&changed, 1));
  release.join();
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  ASSERT_TRUE(b_->Flush(Root(), on_b).ok());
  auto bytes = ReadAll(*b_, on_b);
  ASSERT_TRUE(bytes.ok()) << bytes.status().ToString();
  auto expected = kv;
  expected[0] = changed;
  EXPECT_EQ(*bytes, expected);
  EXPECT_EQ(Stats(*b_, "origin_fetches"), "1");
}

// The file is rewritten on node A while node B still fetches the old object: B does not keep
// the old bytes under the new object's name, and its next read gets the new content.
TEST_F(StreamingFetchTest, ChangedOnTheOriginWhileFetchedIsNotKept) {
  auto kv = MakeKv(2048, 11);
  auto newer = MakeKv(2048, 12);  // the same size: Put writes over the old bytes
  const KvHeader h = HeaderOf(kv);
  Ino on_b = Publish(kv);
  ASSERT_NE(on_b, 0u);
  gate_->Hold(kPiece, h.blocks.back().offset / kPiece * kPiece);
  std::vector<std::byte> got(4096);
  ASSERT_TRUE(b_->Read(on_b, h.blocks.back().offset, got).ok());
  Put(*a_, kRootIno, "big.kv", newer);
  ASSERT_TRUE(a_->Fsync(Root(), kRootIno).ok());
  ASSERT_EQ(Find(*b_, {"big.kv"}), on_b);  // listed again: a placeholder of the newer object
  EXPECT_EQ(Stats(*b_, "origin_names_changed"), "1");
  gate_->Release();
  ASSERT_TRUE(WaitForFetches(*b_));
  EXPECT_EQ(Stats(*b_, "origin_fetches"), "0") << "the old object was kept";
  auto bytes = ReadAll(*b_, on_b);
  ASSERT_TRUE(bytes.ok()) << bytes.status().ToString();
  EXPECT_EQ(*bytes, newer);
}

}  // namespace
}  // namespace kdn::edge
