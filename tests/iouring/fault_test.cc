// Fault injection: failed I/Os, lost unsynced writes, dropped writes, and a power cut at an exact
// write, for both engines.
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "iouring/aligned_buffer.h"
#include "fault/fault_injector.h"
#include "iouring/io_engine.h"
#include "test_util.h"

namespace kdn::io {
namespace {

class FaultTest : public ::testing::TestWithParam<EngineKind> {
 protected:
  void SetUp() override {
    EngineOptions o;
    o.kind = GetParam();
    o.queue_depth = 8;
    o.wrapper = FaultInjection();
    auto engine = CreateIoEngine(o);
    ASSERT_TRUE(engine.ok()) << engine.status().ToString();
    engine_ = std::move(*engine);
    fd_ = ::open((dir_ / "f").c_str(), O_RDWR | O_CREAT | O_DIRECT | O_CLOEXEC, 0644);
    ASSERT_GE(fd_, 0);
    ASSERT_EQ(::ftruncate(fd_, 16 * 4096), 0);
    buf_ = AlignedBuffer(16 * 4096);
  }
  void TearDown() override {
    ClearFaultPlan();
    if (fd_ >= 0) ::close(fd_);
  }
  // Writes block i filled with `fill`.
  Status WriteBlock(int i, char fill) {
    std::memset(buf_.data() + i * 4096, fill, 4096);
    IoOp op{IoOp::Kind::kWrite, fd_, i * 4096ull, buf_.data() + i * 4096, 4096};
    return engine_->Run(std::span(&op, 1));
  }
  // First byte of block i as it is in the file (read around the engine and its faults).
  char FileByte(int i) {
    AlignedBuffer b(4096);
    EXPECT_EQ(::pread(fd_, b.data(), 4096, i * 4096), 4096);
    return static_cast<char>(b.data()[0]);
  }

  test::TempDir dir_{"kdn-fault"};
  std::unique_ptr<IoEngine> engine_;
  int fd_ = -1;
  AlignedBuffer buf_;
};

TEST_P(FaultTest, FailsTheNthIoWithTheChosenErrno) {
  FaultPlan plan;
  plan.fail_at = 3;
  plan.fail_op = FaultOp::kWrite;
  plan.fail_errno = ENOSPC;
  SetFaultPlan(plan);
  EXPECT_TRUE(WriteBlock(0, 'a').ok());
  EXPECT_TRUE(WriteBlock(1, 'b').ok());
  Status s = WriteBlock(2, 'c');
  EXPECT_TRUE(s.IsNoSpace()) << s.ToString();
  EXPECT_EQ(s.sys_errno(), ENOSPC);
  EXPECT_TRUE(WriteBlock(3, 'd').ok());  // one failure only (fail_count 1)
  EXPECT_EQ(FileByte(2), 0);
  EXPECT_EQ(FileByte(3), 'd');
  EXPECT_EQ(GetFaultCounters().failed, 1u);
}

TEST_P(FaultTest, FailsReadsAndSyncsWithEio) {
  FaultPlan plan;
  plan.fail_at = 1;
  plan.fail_count = 2;
  plan.fail_op = FaultOp::kAny;
  SetFaultPlan(plan);
  IoOp op{IoOp::Kind::kRead, fd_, 0, buf_.data(), 4096};
  Status s = engine_->Run(std::span(&op, 1));
  EXPECT_EQ(s.sys_errno(), EIO) << s.ToString();
  EXPECT_EQ(op.result, -EIO);
  EXPECT_EQ(engine_->SyncData(fd_).sys_errno(), EIO);
  EXPECT_TRUE(engine_->SyncData(fd_).ok());
}

TEST_P(FaultTest, VolatileWritesReachTheFileOnlyAtSync) {
  FaultPlan plan;
  plan.volatile_writes = true;
  SetFaultPlan(plan);
  ASSERT_TRUE(WriteBlock(0, 'x').ok());
  ASSERT_TRUE(WriteBlock(1, 'y').ok());
  EXPECT_EQ(FileByte(0), 0);  // still "in the drive's cache"
  ASSERT_TRUE(engine_->SyncData(fd_).ok());
  EXPECT_EQ(FileByte(0), 'x');
  EXPECT_EQ(FileByte(1), 'y');
  EXPECT_EQ(GetFaultCounters().held, 2u);
}

TEST_P(FaultTest, DroppedWritesReportSuccessButVanish) {
  FaultPlan plan;
  plan.drop_writes_after = 1;
  SetFaultPlan(plan);
  ASSERT_TRUE(WriteBlock(0, 'k').ok());
  ASSERT_TRUE(WriteBlock(1, 'l').ok());
  ASSERT_TRUE(engine_->SyncData(fd_).ok());
  EXPECT_EQ(FileByte(0), 'k');
  EXPECT_EQ(FileByte(1), 0);
  EXPECT_EQ(GetFaultCounters().dropped, 1u);
}

TEST_P(FaultTest, PowerCutAtAWriteLosesUnsyncedWritesOnly) {
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    FaultPlan plan;
    plan.volatile_writes = true;
    plan.kill_at_write = 4;
    SetFaultPlan(plan);
    bool ok = WriteBlock(0, 'p').ok() && WriteBlock(1, 'q').ok() && engine_->SyncData(fd_).ok() &&
              WriteBlock(2, 'r').ok();
    WriteBlock(3, 's').ok();  // the power goes out here
    ::_exit(ok ? 0 : 1);      // not reached
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status)) << "child exited with " << WEXITSTATUS(status);
  EXPECT_EQ(WTERMSIG(status), SIGKILL);
  EXPECT_EQ(FileByte(0), 'p');
  EXPECT_EQ(FileByte(1), 'q');
  EXPECT_EQ(FileByte(2), 0);  // written but never synced: lost
  EXPECT_EQ(FileByte(3), 0);
}

INSTANTIATE_TEST_SUITE_P(Engines, FaultTest,
                         ::testing::Values(EngineKind::kIoUring, EngineKind::kPsync),
                         [](const auto& info) { return std::string(EngineKindName(info.param)); });

TEST(FaultPlanText, ParsesEveryItem) {
  auto plan = ParseFaultPlan(
      "volatile,fail_at=7,fail_count=2,fail_op=sync,fail_errno=ENOSPC,"
      "kill_at_write=40,drop_writes_after=9");
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_TRUE(plan->volatile_writes);
  EXPECT_EQ(plan->fail_at, 7u);
  EXPECT_EQ(plan->fail_count, 2u);
  EXPECT_EQ(plan->fail_op, FaultOp::kSync);
  EXPECT_EQ(plan->fail_errno, ENOSPC);
  EXPECT_EQ(plan->kill_at_write, 40u);
  EXPECT_EQ(plan->drop_writes_after, 9u);
  EXPECT_EQ(ParseFaultPlan("fail_errno=28")->fail_errno, 28);
  EXPECT_FALSE(ParseFaultPlan("fail_at=x").ok());
  EXPECT_FALSE(ParseFaultPlan("explode").ok());
  EXPECT_FALSE(ParseFaultPlan("fail_op=sometimes").ok());
}

}  // namespace
}  // namespace kdn::io
