// Progress of long work: kdnctl convert, fsck and migrate (migrate in tests/store/migrate_test.cc)
// and the set scripts' export and import draw it on a terminal (a pty made by script(1)) and write
// not one byte of it when stderr is a file.
#include <sys/wait.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>

#include "kdn/store.h"
#include "test_util.h"

namespace kdn::test {
namespace {

struct CommandResult {
  int status = -1;
  std::string output;
};

CommandResult Sh(const std::string& command) {
  CommandResult r;
  FILE* p = ::popen(command.c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) r.output.append(buf, n);
  int status = ::pclose(p);
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

bool HaveScript() { return Sh("command -v script >/dev/null").status == 0; }

// Runs `command` with its stdout and stderr on a pseudo-terminal; returns what it wrote there.
CommandResult OnTerminal(const std::string& command) {
  return Sh("script -qec '" + command + "' /dev/null");
}

// Runs `command` with stderr to a file (not a terminal); returns what it wrote to stderr.
std::string StderrOf(const std::string& command, const TempDir& dir, int* status) {
  const std::string err = dir / "stderr";
  CommandResult r = Sh(command + " 2>" + err + " >/dev/null");
  *status = r.status;
  return ReadFile(err);
}

class ProgressTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(Sh(kdnctl_ + " synth --model tiny --tokens 256 --codec q8 -o " + dir_ / "a.kv")
                  .status,
              0);
  }
  const std::string kdnctl_ = KDNCTL_PATH;
  TempDir dir_{"kdn-progress"};
};

TEST_F(ProgressTest, ConvertWritesNoProgressWhenStderrIsAFile) {
  int status = 0;
  std::string err =
      StderrOf(kdnctl_ + " convert --codec lossless " + dir_ / "a.kv" + " " + dir_ / "b.kv", dir_,
               &status);
  EXPECT_EQ(status, 0);
  EXPECT_EQ(err, "");
}

TEST_F(ProgressTest, ConvertDrawsProgressOnATerminal) {
  KDN_REQUIRE_OR_SKIP(HaveScript(), "script(1) is not installed (apt: util-linux)");
  CommandResult r =
      OnTerminal(kdnctl_ + " convert --codec lossless " + dir_ / "a.kv" + " " + dir_ / "b.kv");
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("\rkdnctl convert: " + dir_ / "a.kv" + ": layers 5/5 (100%)"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("-> lossless"), std::string::npos) << "the result follows";
}

TEST_F(ProgressTest, FsckDrawsProgressOnATerminalOnly) {
  const std::string store = dir_ / "store";
  {
    auto opened = Store::Open(store, StoreOptions{});
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    for (int i = 0; i < 3; ++i) {
      std::vector<std::byte> bytes(10000 + i, std::byte{static_cast<unsigned char>(i)});
      ASSERT_TRUE((*opened)->Put(bytes).ok());
    }
  }
  int status = 0;
  std::string err = StderrOf(kdnctl_ + " fsck " + store, dir_, &status);
  EXPECT_EQ(status, 0);
  EXPECT_EQ(err, "");
  if (!HaveScript()) {
    KDN_REQUIRE_OR_SKIP(false, "script(1) is not installed (apt: util-linux)");
  }
  CommandResult r = OnTerminal(kdnctl_ + " fsck " + store);
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("\rkdnctl fsck: " + store + ": verifying chunks 3/3 (100%)"),
            std::string::npos)
      << r.output;
}

TEST_F(ProgressTest, SetScriptsDrawProgressOnATerminalOnly) {
  const std::string sets = std::string(KDN_SOURCE_DIR) + "/examples/sets/";
  const std::string set = dir_ / "tales";
  // Large enough for a few of tar's checkpoints (one per MiB).
  ASSERT_EQ(Sh("mkdir " + set + " && cp " + dir_ / "a.kv" + " " + set +
               "/ && head -c 3000000 /dev/urandom > " + set + "/big.kv")
                .status,
            0);
  int status = 0;
  std::string err = StderrOf(sets + "kdn-set-export " + set + " " + dir_ / "quiet.tar", dir_,
                             &status);
  EXPECT_EQ(status, 0);
  EXPECT_EQ(err, "kdn-set-export: " + set + " -> " + dir_ / "quiet.tar" + "\n");
  err = StderrOf(sets + "kdn-set-import " + dir_ / "quiet.tar" + " " + dir_ / "quiet", dir_,
                 &status);
  EXPECT_EQ(status, 0);
  EXPECT_EQ(err, "kdn-set-import: " + dir_ / "quiet.tar" + " -> " + dir_ / "quiet" + "\n");
  EXPECT_EQ(Sh("cmp " + set + "/big.kv " + dir_ / "quiet/big.kv").status, 0);

  KDN_REQUIRE_OR_SKIP(HaveScript(), "script(1) is not installed (apt: util-linux)");
  CommandResult r = OnTerminal(sets + "kdn-set-export " + set + " " + dir_ / "tty.tar");
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("\rkdn-set-export: "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("bytes"), std::string::npos) << r.output;
  r = OnTerminal(sets + "kdn-set-import " + dir_ / "tty.tar" + " " + dir_ / "tty");
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("\rkdn-set-import: "), std::string::npos) << r.output;
  EXPECT_EQ(Sh("cmp " + set + "/big.kv " + dir_ / "tty/big.kv").status, 0);
}

}  // namespace
}  // namespace kdn::test
