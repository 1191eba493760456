// Where e2e tests keep their `.kv` files: a plain directory, or a real kdnfs mount (a store in a
// temporary directory, `kdnfs -f STORE MNT` in the background, always unmounted in teardown).
// The mount is offered when the build has kdnfs (KDN_KDNFS_BIN) and the machine has /dev/fuse.
#ifndef KDN_TESTS_E2E_KDN_ROOT_H_
#define KDN_TESTS_E2E_KDN_ROOT_H_

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <ostream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "e2e_util.h"
#include "kdn/status.h"
#include "test_util.h"

namespace kdn::e2e {

enum class RootKind { kPlain, kMount };

inline std::string_view RootName(RootKind k) {
  return k == RootKind::kPlain ? "plain" : "mount";
}
// For gtest's test names and messages.
inline void PrintTo(RootKind k, std::ostream* os) {
  *os << RootName(k);
}

inline bool MountBuilt() {
#ifdef KDN_KDNFS_BIN
  return true;
#else
  return false;
#endif
}

// The kinds this build can run; under CI a build with kdnfs must run the mount kind.
inline std::vector<RootKind> AvailableRoots() {
  std::vector<RootKind> kinds = {RootKind::kPlain};
  if (MountBuilt()) kinds.push_back(RootKind::kMount);
  return kinds;
}

// True when `path` is a mount point (its device differs from its parent's).
inline bool IsMountPoint(const std::string& path) {
  struct stat a, b;
  if (::stat(path.c_str(), &a) != 0) return false;
  const std::string parent = std::filesystem::path(path).parent_path().string();
  if (::stat(parent.c_str(), &b) != 0) return false;
  return a.st_dev != b.st_dev;
}

class KdnRoot {
 public:
  static Result<std::unique_ptr<KdnRoot>> Make(RootKind kind) {
    std::unique_ptr<KdnRoot> root(new KdnRoot());
    if (kind == RootKind::kPlain) {
      root->path_ = root->tmp_.str();
      return root;
    }
#ifdef KDN_KDNFS_BIN
    KDN_RETURN_IF_ERROR(root->Mount());
    return root;
#else
    return Status::Unsupported("this build has no kdnfs");
#endif
  }

  ~KdnRoot() {
    Unmount();
  }
  KdnRoot(const KdnRoot&) = delete;
  KdnRoot& operator=(const KdnRoot&) = delete;

  const std::string& path() const {
    return path_;
  }
  bool mounted() const {
    return pid_ > 0;
  }
  // Where the store lives (mount kind).
  const std::string& store() const {
    return store_;
  }
  std::string daemon_log() const {
    return ReadFile(log_);
  }

 private:
  KdnRoot() = default;

#ifdef KDN_KDNFS_BIN
  Status Mount() {
    if (::access("/dev/fuse", R_OK | W_OK) != 0) {
      return Status::Unsupported("/dev/fuse is not usable here");
    }
    store_ = tmp_ / "store";
    path_ = tmp_ / "mnt";
    log_ = tmp_ / "kdnfs.log";
    std::filesystem::create_directories(store_);
    std::filesystem::create_directories(path_);
    pid_ = ::fork();
    if (pid_ == 0) {
      const int fd = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
      ::execl(KDN_KDNFS_BIN, KDN_KDNFS_BIN, "-f", store_.c_str(), path_.c_str(),
              static_cast<char*>(nullptr));
      ::_exit(127);
    }
    if (pid_ < 0) return Status::FromErrno("fork kdnfs", errno);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!IsMountPoint(path_)) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return Status::IOError("kdnfs exited before mounting: " + daemon_log());
      }
      if (std::chrono::steady_clock::now() > deadline) {
        return Status::IOError("kdnfs did not mount within 20 s: " + daemon_log());
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return Status::OK();
  }
#endif

  void Unmount() {
    if (pid_ <= 0) return;
    // fusermount3 -u ends a normal mount; umount -l detaches one whose daemon is stuck.
    if (IsMountPoint(path_)) {
      RunCommand({"fusermount3", "-u", path_});
      if (IsMountPoint(path_)) RunCommand({"umount", "-l", path_});
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    int status = 0;
    while (::waitpid(pid_, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    pid_ = -1;
  }

  kdn::test::TempDir tmp_{"kdn-root"};
  std::string path_, store_, log_;
  pid_t pid_ = -1;
};

// One root per kind, shared by the tests of a suite (tearing a mount down takes the daemon a few
// seconds): a fixture calls Get in SetUp, gives each test its own subdirectory, and calls Clear
// in TearDownTestSuite.
class SharedRoots {
 public:
  Result<KdnRoot*> Get(RootKind kind) {
    auto& slot = roots_[static_cast<int>(kind)];
    if (!slot) {
      KDN_ASSIGN_OR_RETURN(slot, KdnRoot::Make(kind));
    }
    return slot.get();
  }
  void Clear() {
    for (auto& r : roots_) r.reset();
  }

 private:
  std::unique_ptr<KdnRoot> roots_[2];
};

// A directory name for the running test ("RawAndLossless..._plain").
inline std::string TestDirName() {
  std::string name = ::testing::UnitTest::GetInstance()->current_test_info()->name();
  for (char& c : name) {
    if (c == '/') c = '_';
  }
  return name;
}

}  // namespace kdn::e2e

#endif  // KDN_TESTS_E2E_KDN_ROOT_H_
