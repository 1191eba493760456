// The I/O engine: batches, registered buffers and files, every error and short transfer reported,
// the same behaviour from io_uring and from the pread/pwrite fallback.
#include <fcntl.h>
#include <liburing.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <numeric>
#include <vector>

#include "iouring/aligned_buffer.h"
#include "iouring/io_engine.h"
#include "test_util.h"

namespace kdn::io {
namespace {

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

class EngineTest : public ::testing::TestWithParam<EngineKind> {
 protected:
  std::unique_ptr<IoEngine> Make(uint32_t depth = 8, uint32_t buffers = 0, uint32_t bytes = 0) {
    EngineOptions o;
    o.kind = GetParam();
    o.queue_depth = depth;
    o.buffer_count = buffers;
    o.buffer_bytes = bytes;
    auto engine = CreateIoEngine(o);
    EXPECT_TRUE(engine.ok()) << engine.status().ToString();
    if (!engine.ok()) return nullptr;
    EXPECT_EQ((*engine)->kind(), GetParam());
    return std::move(*engine);
  }
  int OpenDirect(const std::string& path) {
    return ::open(path.c_str(), O_RDWR | O_CREAT | O_DIRECT | O_CLOEXEC, 0644);
  }
  test::TempDir dir_{"kdn-iouring"};
};

std::vector<std::byte> Pattern(size_t n, uint64_t seed) {
  std::vector<std::byte> v(n);
  auto rng = test::Rng(seed);
  for (auto& b : v) b = static_cast<std::byte>(rng());
  return v;
}

TEST_P(EngineTest, BatchedWriteThenReadRoundTrips) {
  auto engine = Make(8);
  ASSERT_NE(engine, nullptr);
  Fd fd(OpenDirect(dir_ / "f"));
  ASSERT_GE(fd.get(), 0) << std::strerror(errno);
  constexpr size_t kOps = 40, kLen = 64 * 1024;  // more ops than the queue depth
  AlignedBuffer out(kOps * kLen), in(kOps * kLen);
  auto data = Pattern(kOps * kLen, 1);
  std::memcpy(out.data(), data.data(), data.size());
  std::vector<IoOp> ops(kOps);
  for (size_t i = 0; i < kOps; ++i) {
    ops[i] = IoOp{IoOp::Kind::kWrite, fd.get(), i * kLen, out.data() + i * kLen, kLen};
  }
  ASSERT_TRUE(engine->Run(ops).ok());
  ASSERT_TRUE(engine->SyncData(fd.get()).ok());
  for (size_t i = 0; i < kOps; ++i) {
    // Read back in reverse order of position, to show results go to the right op.
    size_t j = kOps - 1 - i;
    ops[i] = IoOp{IoOp::Kind::kRead, fd.get(), j * kLen, in.data() + j * kLen, kLen};
  }
  Status s = engine->Run(ops);
  ASSERT_TRUE(s.ok()) << s.ToString();
  for (const IoOp& op : ops) EXPECT_EQ(op.result, static_cast<int64_t>(kLen));
  EXPECT_EQ(std::memcmp(in.data(), data.data(), data.size()), 0);
}

TEST_P(EngineTest, RegisteredBuffersAndFiles) {
  auto engine = Make(4, 4, 16384);
  ASSERT_NE(engine, nullptr);
  ASSERT_EQ(engine->buffer_count(), 4u);
  Fd fd(OpenDirect(dir_ / "f"));
  ASSERT_GE(fd.get(), 0);
  ASSERT_TRUE(engine->RegisterFile(fd.get()).ok());
  std::vector<IoOp> ops(4);
  for (uint32_t i = 0; i < 4; ++i) {
    std::memset(engine->buffer(i), 'a' + i, 16384);
    ops[i] = IoOp{IoOp::Kind::kWrite, fd.get(), i * 16384ull,
                  engine->buffer(i),  16384,    static_cast<int32_t>(i)};
  }
  ASSERT_TRUE(engine->Run(ops).ok());
  ASSERT_TRUE(engine->SyncData(fd.get()).ok());
  for (uint32_t i = 0; i < 4; ++i) {
    std::memset(engine->buffer(i), 0, 16384);
    ops[i].kind = IoOp::Kind::kRead;
    ops[i].offset = (3 - i) * 16384ull;
  }
  ASSERT_TRUE(engine->Run(ops).ok());
  for (uint32_t i = 0; i < 4; ++i) {
    EXPECT_EQ(static_cast<char>(engine->buffer(i)[100]), static_cast<char>('a' + 3 - i));
  }
  ASSERT_TRUE(engine->UnregisterFile(fd.get()).ok());
  ops.resize(1);
  ASSERT_TRUE(engine->Run(ops).ok());  // still works unregistered
}

TEST_P(EngineTest, ReportsEveryErrorAndShortRead) {
  auto engine = Make(8);
  ASSERT_NE(engine, nullptr);
  Fd fd(OpenDirect(dir_ / "f"));
  ASSERT_GE(fd.get(), 0);
  ASSERT_EQ(::ftruncate(fd.get(), 8192), 0);
  AlignedBuffer buf(4 * 8192);
  std::vector<IoOp> ops = {
      {IoOp::Kind::kRead, fd.get(), 0, buf.data(), 4096},             // fine
      {IoOp::Kind::kRead, fd.get(), 4096, buf.data() + 8192, 8192},   // short: file ends at 8192
      {IoOp::Kind::kRead, -1, 0, buf.data() + 16384, 4096},           // EBADF
      {IoOp::Kind::kRead, fd.get(), 8192, buf.data() + 24576, 4096},  // at EOF: 0 bytes
  };
  Status s = engine->Run(ops);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(ops[0].result, 4096);
  EXPECT_EQ(ops[1].result, 4096);
  EXPECT_EQ(ops[2].result, -EBADF);
  EXPECT_EQ(ops[3].result, 0);
  // The first failure by position is the short read, and the message says how many more failed.
  EXPECT_NE(s.message().find("short read"), std::string::npos) << s.ToString();
  EXPECT_NE(s.message().find("offset 4096"), std::string::npos) << s.ToString();
  EXPECT_NE(s.message().find("2 more"), std::string::npos) << s.ToString();
}

TEST_P(EngineTest, MisalignedDirectIoIsAnErrorNotACrash) {
  auto engine = Make(2);
  ASSERT_NE(engine, nullptr);
  Fd fd(OpenDirect(dir_ / "f"));
  ASSERT_GE(fd.get(), 0);
  AlignedBuffer buf(8192);
  std::vector<IoOp> ops = {{IoOp::Kind::kWrite, fd.get(), 0, buf.data() + 1, 4096}};
  Status s = engine->Run(ops);
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(ops[0].result, -EINVAL);
  EXPECT_EQ(s.sys_errno(), EINVAL);
}

TEST_P(EngineTest, SubmitAndReapOneByOne) {
  auto engine = Make(2);
  ASSERT_NE(engine, nullptr);
  Fd fd(OpenDirect(dir_ / "f"));
  ASSERT_GE(fd.get(), 0);
  AlignedBuffer buf(3 * 4096);
  IoOp a{IoOp::Kind::kWrite, fd.get(), 0, buf.data(), 4096};
  IoOp b{IoOp::Kind::kWrite, fd.get(), 4096, buf.data() + 4096, 4096};
  IoOp c{IoOp::Kind::kWrite, fd.get(), 8192, buf.data() + 8192, 4096};
  ASSERT_TRUE(engine->Submit(&a).ok());
  ASSERT_TRUE(engine->Submit(&b).ok());
  EXPECT_EQ(engine->outstanding(), 2u);
  EXPECT_FALSE(engine->Submit(&c).ok());  // beyond the queue depth
  ASSERT_TRUE(engine->Kick().ok());
  std::vector<IoOp*> got;
  for (int i = 0; i < 2; ++i) {
    auto op = engine->Reap();
    ASSERT_TRUE(op.ok());
    got.push_back(*op);
  }
  EXPECT_EQ(engine->outstanding(), 0u);
  EXPECT_TRUE((got[0] == &a && got[1] == &b) || (got[0] == &b && got[1] == &a));
  EXPECT_FALSE(engine->Reap().ok());  // nothing outstanding
}

INSTANTIATE_TEST_SUITE_P(Engines, EngineTest,
                         ::testing::Values(EngineKind::kIoUring, EngineKind::kPsync),
                         [](const auto& info) { return std::string(EngineKindName(info.param)); });

TEST(EngineSelection, EnvironmentForcesTheFallback) {
  ::setenv("KDN_IO_ENGINE", "psync", 1);
  EXPECT_EQ(ResolveEngineKind(EngineKind::kAuto), EngineKind::kPsync);
  auto engine = CreateIoEngine(EngineOptions{});
  ASSERT_TRUE(engine.ok());
  EXPECT_EQ((*engine)->kind(), EngineKind::kPsync);
  // An explicit choice wins over the environment.
  EXPECT_EQ(ResolveEngineKind(EngineKind::kIoUring), EngineKind::kIoUring);
  ::setenv("KDN_IO_ENGINE", "io_uring", 1);
  EXPECT_EQ(ResolveEngineKind(EngineKind::kAuto), EngineKind::kIoUring);
  ::unsetenv("KDN_IO_ENGINE");
  // Without the variable, auto picks io_uring exactly when the kernel gives us a ring.
  io_uring ring;
  bool uring_works = io_uring_queue_init(4, &ring, 0) == 0;
  if (uring_works) io_uring_queue_exit(&ring);
  EXPECT_EQ(ResolveEngineKind(EngineKind::kAuto),
            uring_works ? EngineKind::kIoUring : EngineKind::kPsync);
}

TEST(EngineSelection, RejectsBadOptions) {
  EngineOptions o;
  o.queue_depth = 0;
  EXPECT_FALSE(CreateIoEngine(o).ok());
  o.queue_depth = 4;
  o.buffer_count = 2;
  o.buffer_bytes = 1000;
  EXPECT_FALSE(CreateIoEngine(o).ok());
}

}  // namespace
}  // namespace kdn::io
