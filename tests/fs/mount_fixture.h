// A kdnfs mount for tests: a fresh store and mountpoint in a temporary directory, the built
// daemon started in the foreground, and an unmount that always happens.
//
// Cleanup has three layers, so that no test leaves a mount behind even when it fails or the test
// binary dies: the KdnfsMount destructor (fusermount3 -u, then umount -l, then the daemon is
// killed and waited for); a global test environment that does the same for anything still
// registered at the end; and handlers for fatal signals that detach every registered mountpoint
// and kill every registered daemon with async-signal-safe calls only. And should the test binary
// be killed outright (SIGKILL), each daemon gets SIGTERM from the kernel (PR_SET_PDEATHSIG) and
// unmounts itself.
#ifndef KDN_TESTS_FS_MOUNT_FIXTURE_H_
#define KDN_TESTS_FS_MOUNT_FIXTURE_H_

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "test_util.h"

extern char** environ;

namespace kdn::test {

// ---- registry of live mounts (read by signal handlers) ---------------------------------------

struct MountSlot {
  std::atomic<bool> used{false};
  pid_t pid = -1;
  char mountpoint[512] = {};
};
inline MountSlot g_mount_slots[16];

inline int RegisterMount(const std::string& mountpoint, pid_t pid) {
  for (int i = 0; i < 16; ++i) {
    bool expected = false;
    if (g_mount_slots[i].used.compare_exchange_strong(expected, true)) {
      std::snprintf(g_mount_slots[i].mountpoint, sizeof(g_mount_slots[i].mountpoint), "%s",
                    mountpoint.c_str());
      g_mount_slots[i].pid = pid;
      return i;
    }
  }
  return -1;
}

inline void UnregisterMount(int slot) {
  if (slot >= 0) g_mount_slots[slot].used = false;
}

// Async-signal-safe: kill(2) and umount2(2) only.
inline void EmergencyUnmountAll() {
  for (auto& s : g_mount_slots) {
    if (!s.used) continue;
    if (s.pid > 0) ::kill(s.pid, SIGKILL);
    ::umount2(s.mountpoint, MNT_DETACH);
  }
}

inline void FatalSignalHandler(int sig) {
  EmergencyUnmountAll();
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

inline void InstallFatalSignalHandlers() {
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGILL}) {
    struct sigaction sa;
    std::memset(&sa, 0, sizeof(sa));
    sa.sa_handler = FatalSignalHandler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESETHAND;
    ::sigaction(sig, &sa, nullptr);
  }
}

// ---- helpers ---------------------------------------------------------------------------------

// Whether /proc/self/mountinfo lists `mountpoint` (absolute path).
inline bool IsMounted(const std::string& mountpoint) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream f(line);
    std::string id, parent, dev, root, point;
    f >> id >> parent >> dev >> root >> point;
    if (point == mountpoint) return true;
  }
  return false;
}

struct CommandResult {
  int status = -1;     // exit status, or 128 + signal
  std::string output;  // stdout and stderr
  bool ok() const { return status == 0; }
};

// Runs `command` with /bin/sh -c, capturing stdout and stderr.
inline CommandResult Sh(const std::string& command) {
  CommandResult r;
  FILE* p = ::popen(("(" + command + ") 2>&1").c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) r.output.append(buf, n);
  int status = ::pclose(p);
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

// Starts the daemon with the standard streams to `log_path`. If this process dies, even by
// SIGKILL (a ctest timeout), the kernel sends the daemon SIGTERM, and it unmounts by itself.
inline pid_t SpawnDaemon(const std::vector<std::string>& argv, const std::string& log_path) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid != 0) return pid;
  // The child: only async-signal-safe calls until exec.
  ::prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (::getppid() != parent) ::_exit(127);
  int in = ::open("/dev/null", O_RDONLY);
  int out = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (in < 0 || out < 0) ::_exit(127);
  ::dup2(in, STDIN_FILENO);
  ::dup2(out, STDOUT_FILENO);
  ::dup2(out, STDERR_FILENO);
  ::execv(args[0], args.data());
  ::_exit(127);
}

inline pid_t Spawn(const std::vector<std::string>& argv, const std::string& log_path) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log_path.c_str(),
                                   O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  int err = posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  return err == 0 ? pid : -1;
}

// waitpid with a deadline; true when the child was reaped (its status in *status).
inline bool WaitFor(pid_t pid, std::chrono::milliseconds timeout, int* status) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    pid_t r = ::waitpid(pid, status, WNOHANG);
    if (r == pid) return true;
    if (r < 0 && errno != EINTR) return true;  // not our child any more
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

inline constexpr long kFuseSuperMagic = 0x65735546;

// ---- FUSE over io_uring ------------------------------------------------------------------------

// The mount tests run twice: as they are, with kdnfs told to stay on /dev/fuse (-o
// fuse_uring=off), and as "uring.*" with KDN_TEST_FUSE_URING=1, where every mount must be
// served through FUSE over io_uring (fs/kdnfs/fuse_uring.h).
inline bool FuseUringMode() {
  const char* v = std::getenv("KDN_TEST_FUSE_URING");
  return v != nullptr && std::strcmp(v, "1") == 0;
}

inline constexpr char kEnableUringParam[] = "/sys/module/fuse/parameters/enable_uring";

// The fuse module offers io_uring only with enable_uring=Y (off by default). It is switched on
// and left on: the tests run in parallel, and it changes nothing for servers that do not ask.
inline bool EnableFuseUring() {
  {
    std::ofstream out(kEnableUringParam);
    if (out) out << "Y\n";
  }
  std::ifstream in(kEnableUringParam);
  std::string v;
  return static_cast<bool>(in >> v) && v == "Y";
}

inline size_t CountOf(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// In the uring copy of a test: skips (with the reason) where the kernel has no FUSE over
// io_uring (Linux 6.14+ built with CONFIG_FUSE_IO_URING); the machine cannot run it then.
#define KDN_REQUIRE_FUSE_URING_IF_ASKED()                                       \
  do {                                                                          \
    if (::kdn::test::FuseUringMode() && !::kdn::test::EnableFuseUring()) {      \
      GTEST_SKIP() << "skipped: this kernel has no FUSE over io_uring ("        \
                   << ::kdn::test::kEnableUringParam << " cannot be set to Y)"; \
    }                                                                           \
  } while (0)

// ---- the mount -------------------------------------------------------------------------------

class KdnfsMount {
 public:
  explicit KdnfsMount(std::vector<std::string> options = {}) : options_(std::move(options)) {
    store_ = dir_ / "store";
    mountpoint_ = dir_ / "mnt";
    log_ = dir_ / "kdnfs.log";
    ::mkdir(mountpoint_.c_str(), 0755);
  }
  ~KdnfsMount() { Stop(); }
  KdnfsMount(const KdnfsMount&) = delete;
  KdnfsMount& operator=(const KdnfsMount&) = delete;

  const std::string& mnt() const { return mountpoint_; }
  const std::string& store() const { return store_; }
  std::string path(std::string_view rel) const { return mountpoint_ + "/" + std::string(rel); }
  std::string scratch(std::string_view rel) const { return dir_ / rel; }
  pid_t pid() const { return pid_; }
  std::string log() const {
    std::ifstream in(log_);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

  // Starts `kdnfs -f` and waits until the mount answers.
  ::testing::AssertionResult Start(std::vector<std::string> extra = {}) {
    std::vector<std::string> argv = {KDNFS_PATH, "-f", "-o",
                                     FuseUringMode() ? "fuse_uring=on" : "fuse_uring=off"};
    const char* kUringLine = "FUSE over io_uring:";
    size_t uring_starts = CountOf(log(), kUringLine);
    for (const auto& o : options_) argv.insert(argv.end(), {"-o", o});
    for (const auto& o : extra) argv.insert(argv.end(), {"-o", o});
    argv.push_back(store_);
    argv.push_back(mountpoint_);
    pid_ = SpawnDaemon(argv, log_);
    if (pid_ < 0) return ::testing::AssertionFailure() << "cannot start " << KDNFS_PATH;
    if (slot_ < 0) {
      slot_ = RegisterMount(mountpoint_, pid_);
    } else {
      g_mount_slots[slot_].pid = pid_;  // a restart on the same mountpoint
    }
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (std::chrono::steady_clock::now() < deadline) {
      int status;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return ::testing::AssertionFailure() << "kdnfs exited at start:\n" << log();
      }
      // statfs reaches the daemon: a stale mount left on the same path does not answer it.
      struct statfs sf;
      if (IsMounted(mountpoint_) && ::statfs(mountpoint_.c_str(), &sf) == 0 &&
          sf.f_type == kFuseSuperMagic) {
        if (!FuseUringMode()) return ::testing::AssertionSuccess();
        // The daemon logs it right after its INIT reply, which the statfs above came after.
        for (int i = 0; i < 100 && CountOf(log(), kUringLine) == uring_starts; ++i) {
          std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        if (CountOf(log(), kUringLine) > uring_starts) return ::testing::AssertionSuccess();
        return ::testing::AssertionFailure() << "kdnfs did not use FUSE over io_uring:\n" << log();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return ::testing::AssertionFailure() << "kdnfs did not mount in 30 s:\n" << log();
  }

  // The daemon dies without unmounting: the mountpoint becomes stale.
  void Kill9() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    int status;
    WaitFor(pid_, std::chrono::seconds(10), &status);
    pid_ = -1;
  }

  // SIGTERM: the daemon unmounts and exits by itself. Returns its exit status.
  int Terminate() {
    if (pid_ <= 0) return -1;
    ::kill(pid_, SIGTERM);
    int status = 0;
    if (!WaitFor(pid_, std::chrono::seconds(30), &status)) return -1;
    pid_ = -1;
    if (!IsMounted(mountpoint_)) {
      UnregisterMount(slot_);
      slot_ = -1;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

  // Unmounts (fusermount3 -u, then umount -l) and makes sure the daemon is gone.
  void Stop() {
    if (IsMounted(mountpoint_)) {
      Sh("fusermount3 -u " + mountpoint_);
      if (IsMounted(mountpoint_)) Sh("umount -l " + mountpoint_);
      if (IsMounted(mountpoint_)) ::umount2(mountpoint_.c_str(), MNT_DETACH);
    }
    if (pid_ > 0) {
      int status;
      if (!WaitFor(pid_, std::chrono::seconds(20), &status)) {
        ::kill(pid_, SIGKILL);
        WaitFor(pid_, std::chrono::seconds(10), &status);
      }
      pid_ = -1;
    }
    UnregisterMount(slot_);
    slot_ = -1;
    EXPECT_FALSE(IsMounted(mountpoint_)) << "a mount was left on " << mountpoint_;
  }

 private:
  TempDir dir_{"kdnfs-mount"};
  std::vector<std::string> options_;
  std::string store_;
  std::string mountpoint_;
  std::string log_;
  pid_t pid_ = -1;
  int slot_ = -1;
};

// At the end of the run: nothing registered may still be mounted.
class MountCleanupEnvironment : public ::testing::Environment {
 public:
  void SetUp() override { InstallFatalSignalHandlers(); }
  void TearDown() override {
    for (auto& s : g_mount_slots) {
      if (!s.used) continue;
      ADD_FAILURE() << "mount left registered: " << s.mountpoint;
      if (s.pid > 0) ::kill(s.pid, SIGKILL);
      Sh(std::string("fusermount3 -u ") + s.mountpoint);
      ::umount2(s.mountpoint, MNT_DETACH);
      EXPECT_FALSE(IsMounted(s.mountpoint));
      s.used = false;
    }
  }
};

}  // namespace kdn::test

#endif  // KDN_TESTS_FS_MOUNT_FIXTURE_H_
