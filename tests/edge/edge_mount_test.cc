// Two kdnfs nodes (separate stores and mountpoints) that are edges of one origin, with the real
// daemon and real tools: a `.kv` copied onto node A reaches the origin by `kdnctl sync`; a daemon
// killed with its uploads still queued finishes them after a restart; with the origin unreachable,
// local work goes on and `kdnctl sync` says why it cannot finish. The origin is a POSIX
// directory (label mount), or the RGW that the origin_rgw fixture starts (label origin).
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>

#include "fs/edge/ns_object.h"
#include "fs_test_util.h"
#include "kdn/format.h"
#include "kdn/origin.h"
#include "mount_fixture.h"
#include "sha256_util.h"

namespace kdn::test {
namespace {

[[maybe_unused]] auto* const kCleanup =
    ::testing::AddGlobalTestEnvironment(new MountCleanupEnvironment);

#define REQUIRE_FUSE()                                                              \
  do {                                                                              \
    if (::access("/dev/fuse", R_OK | W_OK) != 0) {                                  \
      GTEST_SKIP() << "skipped: /dev/fuse is not usable here (needs root or fuse)"; \
    }                                                                               \
  } while (0)

std::string Slurp(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void WriteFile(const std::string& p, std::span<const std::byte> bytes) {
  std::ofstream out(p, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

// The RGW of the origin_rgw fixture, as scripts/origin-rgw's env file says.
std::map<std::string, std::string> RgwEnv() {
  std::map<std::string, std::string> env;
  const char* dir = std::getenv("KDN_TEST_RGW_DIR");
  std::ifstream in(std::string(dir ? dir : "") + "/s3.env");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("export ", 0) != 0) continue;
    size_t eq = line.find('=');
    if (eq != std::string::npos) env[line.substr(7, eq - 7)] = line.substr(eq + 1);
  }
  return env;
}

// One origin for the nodes of a test: a fresh POSIX directory, or a fresh prefix on the RGW.
class Origin {
 public:
  explicit Origin(bool rgw) {
    if (!rgw) {
      url_ = "file://" + dir_.str() + "/origin";
      std::filesystem::create_directories(dir_.path() / "origin");
    } else {
      auto env = RgwEnv();
      static int n = 0;
      url_ = "s3://" + env["KDN_ORIGIN_BUCKET"] + "/edge-" + std::to_string(::getpid()) + "-" +
             std::to_string(n++);
      endpoint_ = env["KDN_ORIGIN_ENDPOINT"];
      ::setenv("AWS_ACCESS_KEY_ID", env["AWS_ACCESS_KEY_ID"].c_str(), 1);
      ::setenv("AWS_SECRET_ACCESS_KEY", env["AWS_SECRET_ACCESS_KEY"].c_str(), 1);
    }
    origin::OriginOptions o;
    o.url = url_;
    o.endpoint = endpoint_;
    auto opened = origin::OpenOrigin(o);
    EXPECT_TRUE(opened.ok()) << opened.status().ToString();
    if (opened.ok()) client_ = std::move(*opened);
  }
  std::vector<std::string> Options() const {
    std::vector<std::string> o = {"origin=" + url_, "origin_sync_timeout=3"};
    if (!endpoint_.empty()) o.push_back("origin_endpoint=" + endpoint_);
    return o;
  }
  // The POSIX origin's directory moved away (the shared filesystem gone: a plain file stands in
  // its place, so that nothing can be created under it) and back.
  void Down() {
    std::filesystem::rename(dir_.path() / "origin", dir_.path() / "away");
    std::ofstream(dir_.path() / "origin") << "unreachable";
  }
  void Up() {
    std::filesystem::remove(dir_.path() / "origin");
    std::filesystem::rename(dir_.path() / "away", dir_.path() / "origin");
  }

  // The file of an object on a POSIX origin.
  std::filesystem::path File(const std::string& key) const { return dir_.path() / "origin" / key; }

  Result<std::string> Get(const std::string& key) {
    KDN_ASSIGN_OR_RETURN(origin::ObjectInfo info, client_->Head(key));
    std::string bytes(info.size, '\0');
    KDN_ASSIGN_OR_RETURN(
        uint64_t n,
        client_->Get(key, 0, std::span(reinterpret_cast<uint8_t*>(bytes.data()), bytes.size())));
    bytes.resize(n);
    return bytes;
  }

 private:
  TempDir dir_{"kdn-origin"};
  std::string url_, endpoint_;
  std::unique_ptr<origin::Origin> client_;
};

// A read miss is answered as soon as its bytes are verified; the commit of the fetched content
// goes on in the background. Waits (bounded) until the node has no fetch running; returns the
// stats it read last.
std::string StatsAfterFetches(const KdnfsMount& node) {
  std::string stats;
  for (int i = 0; i < 2000; ++i) {
    stats = Slurp(node.path(".kdn/stats"));
    if (stats.find("origin_fetches_running 0\n") != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return stats;
}

CommandResult Sync(const KdnfsMount& node) {
  return Sh(std::string(KDNCTL_PATH) + " sync " + node.mnt());
}

class EdgeMountTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    if (GetParam() && RgwEnv().empty()) {
      if (std::getenv("CI") && std::string(std::getenv("CI")) == "true") {
        FAIL() << "no RGW: KDN_TEST_RGW_DIR/s3.env is missing (the origin_rgw fixture)";
      }
      GTEST_SKIP() << "skipped: no RGW running (run with ctest -L origin: its fixture starts one)";
    }
  }
};

// What node A committed and synced is on the origin, bit for bit, under the documented keys.
TEST_P(EdgeMountTest, CopyOnNodeAReachesTheOriginAtSync) {
  REQUIRE_FUSE();
  Origin origin(GetParam());
  KdnfsMount a(origin.Options());
  ASSERT_TRUE(a.Start());
  auto kv = MakeKv(96, 11);
  WriteFile(a.scratch("src.kv"), kv);
  ASSERT_TRUE(
      Sh("mkdir -p " + a.path("set") + " && cp " + a.scratch("src.kv") + " " + a.path("set/doc.kv"))
          .ok());
  CommandResult synced = Sync(a);
  ASSERT_TRUE(synced.ok()) << synced.output << a.log();
  CommandResult state =
      Sh("getfattr --absolute-names --only-values -n user.kdn.origin " + a.path("set/doc.kv"));
  EXPECT_EQ(state.output, "uploaded") << state.output;
  auto ns_bytes = origin.Get("ns/set/doc.kv");
  ASSERT_TRUE(ns_bytes.ok()) << ns_bytes.status().ToString() << a.log();
  auto ns = edge::DecodeNsObject(*ns_bytes);
  ASSERT_TRUE(ns.ok()) << ns.status().ToString();
  EXPECT_EQ(ns->size, kv.size());
  EXPECT_EQ(ns->chunk.ToHex(), Sha256Hex(kv));
  auto chunk = origin.Get("chunks/" + ns->chunk.ToHex());
  ASSERT_TRUE(chunk.ok()) << chunk.status().ToString();
  ASSERT_EQ(chunk->size(), kv.size());
  EXPECT_EQ(std::memcmp(chunk->data(), kv.data(), kv.size()), 0);
  // mv and rm on A reach the origin too.
  ASSERT_TRUE(Sh("mv " + a.path("set/doc.kv") + " " + a.path("set/moved.kv")).ok());
  ASSERT_TRUE(Sync(a).ok()) << a.log();
  EXPECT_TRUE(origin.Get("ns/set/doc.kv").status().IsNotFound());
  EXPECT_TRUE(origin.Get("ns/set/moved.kv").ok());
  ASSERT_TRUE(Sh("rm " + a.path("set/moved.kv")).ok());
  ASSERT_TRUE(Sync(a).ok()) << a.log();
  EXPECT_TRUE(origin.Get("ns/set/moved.kv").status().IsNotFound());
  std::string stats = Slurp(a.path(".kdn/stats"));
  EXPECT_NE(stats.find("origin_queue 0\n"), std::string::npos) << stats;
  EXPECT_NE(stats.find("origin_chunk_uploads 1\n"), std::string::npos) << stats;
  a.Stop();
}

// Node B, an edge of the same origin, writes too: both nodes' files are on the origin, and a
// chunk the origin already has is not uploaded again.
TEST_P(EdgeMountTest, TwoNodesShareOneOrigin) {
  REQUIRE_FUSE();
  Origin origin(GetParam());
  KdnfsMount a(origin.Options()), b(origin.Options());
  ASSERT_TRUE(a.Start());
  ASSERT_TRUE(b.Start());
  auto kv = MakeKv(64, 5);
  WriteFile(a.scratch("src.kv"), kv);
  ASSERT_TRUE(Sh("cp " + a.scratch("src.kv") + " " + a.path("a.kv")).ok());
  ASSERT_TRUE(Sync(a).ok()) << a.log();
  ASSERT_TRUE(Sh("cp " + a.scratch("src.kv") + " " + b.path("b.kv")).ok());
  ASSERT_TRUE(Sync(b).ok()) << b.log();
  EXPECT_TRUE(origin.Get("ns/a.kv").ok());
  EXPECT_TRUE(origin.Get("ns/b.kv").ok());
  std::string stats = Slurp(b.path(".kdn/stats"));
  EXPECT_NE(stats.find("origin_chunks_present 1\n"), std::string::npos) << stats;
  EXPECT_NE(stats.find("origin_chunk_uploads 0\n"), std::string::npos) << stats;
  a.Stop();
  b.Stop();
}

// The knowledge-set workflow: a set copied onto node A is listed on node B and read there
// bit for bit (fetched from the origin on the first read, from B's own store after that); a
// third node C sees A's and B's files.
TEST_P(EdgeMountTest, SetWrittenOnAIsListedAndReadOnBAndC) {
  REQUIRE_FUSE();
  Origin origin(GetParam());
  KdnfsMount a(origin.Options()), b(origin.Options());
  ASSERT_TRUE(a.Start());
  ASSERT_TRUE(b.Start());
  ASSERT_TRUE(Sh("mkdir -p " + a.scratch("src") + " " + a.path("legal")).ok());
  for (int i = 0; i < 3; ++i) {
    WriteFile(a.scratch("src/doc" + std::to_string(i) + ".kv"), MakeKv(64 + 32 * i, 40 + i));
  }
  ASSERT_TRUE(Sh("cp " + a.scratch("src") + "/*.kv " + a.path("legal/")).ok());
  ASSERT_TRUE(Sync(a).ok()) << a.log();
  // Listed on B with their sizes before any byte moved.
  CommandResult listed = Sh("ls " + b.path("legal"));
  EXPECT_EQ(listed.output, "doc0.kv\ndoc1.kv\ndoc2.kv\n") << listed.output << b.log();
  CommandResult sizes = Sh("stat -c %s " + b.path("legal/doc2.kv") + " " + a.path("legal/doc2.kv"));
  ASSERT_TRUE(sizes.ok()) << sizes.output;
  std::istringstream two(sizes.output);
  std::string size_b, size_a;
  two >> size_b >> size_a;
  EXPECT_EQ(size_b, size_a);
  CommandResult state =
      Sh("getfattr --absolute-names --only-values -n user.kdn.origin " + b.path("legal/doc0.kv"));
  EXPECT_EQ(state.output, "remote");
  CommandResult same = Sh("cmp " + a.scratch("src") + "/doc0.kv " + b.path("legal/doc0.kv") +
                          " && cmp " + a.scratch("src") + "/doc1.kv " + b.path("legal/doc1.kv") +
                          " && cmp " + a.scratch("src") + "/doc2.kv " + b.path("legal/doc2.kv"));
  EXPECT_TRUE(same.ok()) << same.output << b.log();
  std::string stats = StatsAfterFetches(b);
  state =
      Sh("getfattr --absolute-names --only-values -n user.kdn.origin " + b.path("legal/doc0.kv"));
  EXPECT_EQ(state.output, "fetched");
  EXPECT_NE(stats.find("origin_fetches 3\n"), std::string::npos) << stats;
  // rm on A is seen on B after the TTL (1 s).
  ASSERT_TRUE(Sh("rm " + a.path("legal/doc1.kv")).ok());
  ASSERT_TRUE(Sync(a).ok()) << a.log();
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  listed = Sh("ls " + b.path("legal"));
  EXPECT_EQ(listed.output, "doc0.kv\ndoc2.kv\n") << listed.output << b.log();
  // A third node: B's additions reach it and A alike, and it reads what A learned.
  KdnfsMount c(origin.Options());
  ASSERT_TRUE(c.Start());
  WriteFile(b.scratch("b.kv"), MakeKv(48, 77));
  ASSERT_TRUE(Sh("cp " + b.scratch("b.kv") + " " + b.path("legal/from-b.kv")).ok());
  ASSERT_TRUE(Sync(b).ok()) << b.log();
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  same = Sh("cmp " + b.scratch("b.kv") + " " + c.path("legal/from-b.kv") + " && cmp " +
            b.scratch("b.kv") + " " + a.path("legal/from-b.kv") + " && cmp " + a.scratch("src") +
            "/doc2.kv " + c.path("legal/doc2.kv"));
  EXPECT_TRUE(same.ok()) << same.output << c.log();
  listed = Sh("ls " + c.path("legal"));
  EXPECT_EQ(listed.output, "doc0.kv\ndoc2.kv\nfrom-b.kv\n") << listed.output << c.log();
  a.Stop();
  b.Stop();
  c.Stop();
}

class EdgePosixMountTest : public ::testing::Test {};

// kill -9 after the local commit but before the upload (the origin is unreachable then): the
// queue is in the store, and the restarted daemon finishes the upload.
TEST_F(EdgePosixMountTest, KilledDaemonFinishesItsUploadsAfterRestart) {
  REQUIRE_FUSE();
  Origin origin(false);
  KdnfsMount a(origin.Options());
  ASSERT_TRUE(a.Start());
  origin.Down();
  auto kv = MakeKv(80, 9);
  WriteFile(a.scratch("src.kv"), kv);
  ASSERT_TRUE(Sh("cp " + a.scratch("src.kv") + " " + a.path("doc.kv")).ok());  // acknowledged
  CommandResult state =
      Sh("getfattr --absolute-names --only-values -n user.kdn.origin " + a.path("doc.kv"));
  EXPECT_EQ(state.output, "pending");
  a.Kill9();
  origin.Up();
  ASSERT_TRUE(a.Start());
  CommandResult synced = Sync(a);
  ASSERT_TRUE(synced.ok()) << synced.output << a.log();
  auto ns = origin.Get("ns/doc.kv");
  ASSERT_TRUE(ns.ok()) << ns.status().ToString() << a.log();
  auto chunk = origin.Get("chunks/" + Sha256Hex(kv));
  ASSERT_TRUE(chunk.ok()) << chunk.status().ToString();
  EXPECT_EQ(chunk->size(), kv.size());
  // Every acknowledged file reaches the other nodes.
  KdnfsMount b(origin.Options());
  ASSERT_TRUE(b.Start());
  CommandResult same = Sh("cmp " + a.scratch("src.kv") + " " + b.path("doc.kv"));
  EXPECT_TRUE(same.ok()) << same.output << b.log();
  a.Stop();
  b.Stop();
}

// The origin unreachable: cp, ls and reads on the node go on; `kdnctl sync` fails within its
// timeout and says why; once the origin is back, sync succeeds.
TEST_F(EdgePosixMountTest, OriginDownLocalWorkGoesOnAndSyncSaysWhy) {
  REQUIRE_FUSE();
  Origin origin(false);
  KdnfsMount a(origin.Options()), b(origin.Options());
  ASSERT_TRUE(a.Start());
  ASSERT_TRUE(b.Start());
  WriteFile(a.scratch("hit.kv"), MakeKv(56, 3));
  WriteFile(a.scratch("miss.kv"), MakeKv(56, 4));
  ASSERT_TRUE(Sh("cp " + a.scratch("hit.kv") + " " + a.scratch("miss.kv") + " " + a.mnt()).ok());
  ASSERT_TRUE(Sync(a).ok()) << a.log();
  ASSERT_TRUE(Sh("cmp " + a.scratch("hit.kv") + " " + b.path("hit.kv")).ok()) << b.log();
  ASSERT_TRUE(Sh("ls -l " + b.path("miss.kv")).ok()) << b.log();  // listed, not fetched
  origin.Down();
  // Node B: its hits are served, a miss fails with EIO (not a hang), new names stay unknown.
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));  // past the TTL
  CommandResult hit = Sh("cmp " + a.scratch("hit.kv") + " " + b.path("hit.kv"));
  EXPECT_TRUE(hit.ok()) << hit.output << b.log();
  auto miss_started = std::chrono::steady_clock::now();
  CommandResult miss = Sh("cat " + b.path("miss.kv") + " > /dev/null");
  EXPECT_FALSE(miss.ok());
  EXPECT_NE(miss.output.find("Input/output error"), std::string::npos) << miss.output;
  EXPECT_LT(std::chrono::steady_clock::now() - miss_started, std::chrono::seconds(30));
  EXPECT_NE(b.log().find("origin fetch of chunks/"), std::string::npos) << b.log();
  CommandResult unknown = Sh("cat " + b.path("unknown.kv"));
  EXPECT_NE(unknown.output.find("No such file or directory"), std::string::npos) << unknown.output;
  std::string b_stats = Slurp(b.path(".kdn/stats"));
  // Counted (once per READ the kernel sent for it).
  EXPECT_EQ(b_stats.find("origin_fetch_errors 0\n"), std::string::npos) << b_stats;
  EXPECT_NE(b_stats.find("origin_fetch_errors "), std::string::npos) << b_stats;
  auto kv = MakeKv(72, 2);
  WriteFile(a.scratch("src.kv"), kv);
  ASSERT_TRUE(Sh("cp " + a.scratch("src.kv") + " " + a.path("doc.kv")).ok());
  ASSERT_TRUE(Sh("cmp " + a.scratch("src.kv") + " " + a.path("doc.kv")).ok());
  auto started = std::chrono::steady_clock::now();
  CommandResult synced = Sync(a);
  auto took = std::chrono::steady_clock::now() - started;
  EXPECT_EQ(synced.status, 1) << synced.output;
  EXPECT_NE(synced.output.find("last error"), std::string::npos) << synced.output;
  EXPECT_LT(took, std::chrono::seconds(30));  // bounded by origin_sync_timeout=3, not hung
  std::string stats = Slurp(a.path(".kdn/stats"));
  EXPECT_NE(stats.find("origin_queue 1\n"), std::string::npos) << stats;
  origin.Up();
  synced = Sync(a);
  EXPECT_TRUE(synced.ok()) << synced.output << a.log();
  EXPECT_TRUE(origin.Get("ns/doc.kv").ok());
  // The origin back: B's miss is served.
  miss = Sh("cmp " + a.scratch("miss.kv") + " " + b.path("miss.kv"));
  EXPECT_TRUE(miss.ok()) << miss.output << b.log();
  a.Stop();
  b.Stop();
}

// A read miss through the mount streams: a block far into a multi-piece `.kv` reads back right
// (the daemon fetches it first), the file is committed and later reads are hits; a block damaged
// on the origin is EIO, with a log line naming the object, and nothing is cached.
TEST_F(EdgePosixMountTest, StreamedMissServesBlocksAndRefusesADamagedOne) {
  REQUIRE_FUSE();
  Origin origin(false);
  std::vector<std::string> options = origin.Options();
  options.push_back("origin_fetch_piece_kib=64");
  KdnfsMount a(options), b(options);
  ASSERT_TRUE(a.Start());
  ASSERT_TRUE(b.Start());
  auto kv = MakeKv(2048, 31);
  auto damaged_kv = MakeKv(2048, 32);
  WriteFile(a.scratch("big.kv"), kv);
  WriteFile(a.scratch("damaged.kv"), damaged_kv);
  ASSERT_TRUE(Sh("cp " + a.scratch("big.kv") + " " + a.scratch("damaged.kv") + " " + a.mnt()).ok());
  ASSERT_TRUE(Sync(a).ok()) << a.log();
  auto fixed = KvHeaderBytes(std::span(kv).first(kKvFixedHeaderBytes), kv.size());
  ASSERT_TRUE(fixed.ok());
  auto header = ParseKvHeader(std::span(kv).first(*fixed), kv.size());
  ASSERT_TRUE(header.ok()) << header.status().ToString();
  const BlockEntry last = header->blocks.back();
  const BlockEntry middle = header->blocks[5];

  // The last block first, as an engine that loads it first would.
  WriteFile(a.scratch("last.expected"),
            std::span(kv).subspan(last.offset, static_cast<size_t>(last.encoded_bytes)));
  CommandResult tail = Sh("dd if=" + b.path("big.kv") + " of=" + a.scratch("last.got") +
                          " bs=4096 skip=" + std::to_string(last.offset / 4096) + " count=" +
                          std::to_string(last.encoded_bytes / 4096) + " 2>&1 && cmp " +
                          a.scratch("last.expected") + " " + a.scratch("last.got"));
  EXPECT_TRUE(tail.ok()) << tail.output << b.log();
  CommandResult whole = Sh("cmp " + a.scratch("big.kv") + " " + b.path("big.kv"));
  EXPECT_TRUE(whole.ok()) << whole.output << b.log();
  std::string stats = StatsAfterFetches(b);
  EXPECT_NE(stats.find("origin_fetches 1\n"), std::string::npos) << stats;
  EXPECT_EQ(Sh("getfattr --absolute-names --only-values -n user.kdn.origin " + b.path("big.kv"))
                .output,
            "fetched");
  whole = Sh("cmp " + a.scratch("big.kv") + " " + b.path("big.kv"));
  EXPECT_TRUE(whole.ok()) << whole.output << b.log();
  EXPECT_NE(Slurp(b.path(".kdn/stats")).find("origin_fetches 1\n"), std::string::npos);

  // One byte of block 5 changed on the origin.
  const std::string id = Sha256Hex(damaged_kv);
  {
    std::fstream f(origin.File("chunks/" + id), std::ios::binary | std::ios::in | std::ios::out);
    ASSERT_TRUE(f.good());
    f.seekp(static_cast<std::streamoff>(middle.offset + 10));
    f.put(static_cast<char>(std::to_integer<uint8_t>(damaged_kv[middle.offset + 10]) ^ 1));
  }
  CommandResult bad = Sh("dd if=" + b.path("damaged.kv") + " of=/dev/null bs=4096 skip=" +
                         std::to_string(middle.offset / 4096) + " count=1 2>&1");
  EXPECT_FALSE(bad.ok()) << bad.output;
  EXPECT_NE(bad.output.find("Input/output error"), std::string::npos) << bad.output;
  EXPECT_NE(b.log().find("origin fetch of chunks/" + id), std::string::npos) << b.log();
  stats = StatsAfterFetches(b);
  EXPECT_EQ(stats.find("origin_fetch_errors 0\n"), std::string::npos) << stats;
  EXPECT_EQ(Sh("getfattr --absolute-names --only-values -n user.kdn.origin " +
               b.path("damaged.kv"))
                .output,
            "remote");
  EXPECT_TRUE(std::filesystem::is_empty(b.store() + "/staging"))
      << "a refused fetch left its staging file";
  a.Stop();
  b.Stop();
}

INSTANTIATE_TEST_SUITE_P(Posix, EdgeMountTest, ::testing::Values(false));
INSTANTIATE_TEST_SUITE_P(Rgw, EdgeMountTest, ::testing::Values(true));

}  // namespace
}  // namespace kdn::test
