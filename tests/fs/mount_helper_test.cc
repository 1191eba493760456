// Mounting kdnfs the way every filesystem is mounted (README "Mounting"): `mount -t fuse.kdnfs`,
// an fstab line through `mount -T`, mount(8)'s helper mount.fuse.kdnfs, the systemd unit's command
// line (readiness on mount, stop = clean unmount), `umount` ending the daemon with its store
// clean; /.kdn/metrics validated by promtool through a mount; and a store mounted by an
// unprivileged user.
#include <dirent.h>
#include <sys/sysmacros.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <fstream>
#include <regex>

#include "mount_fixture.h"

namespace kdn::test {
namespace {

[[maybe_unused]] auto* const kCleanup =
    ::testing::AddGlobalTestEnvironment(new MountCleanupEnvironment);

const std::string kBuildHelperDir = KDNFS_BUILD_DIR;  // mount.fuse.kdnfs, kdnfs@.service (built)

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string DirOf(const std::string& path) { return path.substr(0, path.rfind('/')); }

bool HaveTool(const std::string& name) { return Sh("command -v " + name + " >/dev/null").ok(); }

// kdnfs daemons whose command line names `store` (mount(8) runs them detached: not our children).
std::vector<pid_t> DaemonsOf(const std::string& store) {
  std::vector<pid_t> pids;
  DIR* proc = ::opendir("/proc");
  if (proc == nullptr) return pids;
  while (dirent* e = ::readdir(proc)) {
    pid_t pid = std::atoi(e->d_name);
    if (pid <= 0) continue;
    std::string cmdline = ReadFile("/proc/" + std::string(e->d_name) + "/cmdline");
    std::replace(cmdline.begin(), cmdline.end(), '\0', ' ');
    if (cmdline.find("kdnfs") != std::string::npos &&
        cmdline.find(" " + store + " ") != std::string::npos) {
      pids.push_back(pid);
    }
  }
  ::closedir(proc);
  return pids;
}

bool GoneWithin(const std::vector<pid_t>& pids, std::chrono::seconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    bool any = false;
    for (pid_t p : pids) any = any || ::kill(p, 0) == 0;
    if (!any) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

// A temporary store and mountpoint mounted by something other than the fixture, always detached
// at the end.
class Paths {
 public:
  Paths() { ::mkdir(mnt().c_str(), 0755); }
  ~Paths() {
    if (IsMounted(mnt())) {
      Sh("umount " + mnt());
      if (IsMounted(mnt())) ::umount2(mnt().c_str(), MNT_DETACH);
    }
    for (pid_t p : DaemonsOf(store())) ::kill(p, SIGKILL);
  }
  std::string store() const { return dir_ / "store"; }
  std::string mnt() const { return dir_ / "mnt"; }
  std::string scratch(std::string_view rel) const { return dir_ / rel; }

 private:
  TempDir dir_{"kdnfs-mount-helper"};
};

// Writes and reads a file through the mount with ordinary tools, unmounts with umount(8), and
// checks that the daemon exited and left its store clean and holding the file.
void WriteUnmountAndCheck(const Paths& p) {
  ASSERT_TRUE(IsMounted(p.mnt()));
  const std::vector<pid_t> daemons = DaemonsOf(p.store());
  ASSERT_EQ(daemons.size(), 1u) << "one kdnfs serves " << p.store();
  ASSERT_TRUE(Sh("mkdir " + p.mnt() + "/set && seq 1 20000 > " + p.mnt() + "/set/numbers").ok());
  CommandResult sum = Sh("sort -n " + p.mnt() + "/set/numbers | tail -n 1");
  ASSERT_TRUE(sum.ok()) << sum.output;
  EXPECT_EQ(sum.output, "20000\n");
  CommandResult umount = Sh("umount " + p.mnt());
  ASSERT_TRUE(umount.ok()) << umount.output;
  EXPECT_FALSE(IsMounted(p.mnt()));
  ASSERT_TRUE(GoneWithin(daemons, std::chrono::seconds(30))) << "kdnfs still runs after umount";
  CommandResult fsck = Sh(std::string(KDNCTL_PATH) + " fsck " + p.store());
  EXPECT_TRUE(fsck.ok()) << fsck.output;
  EXPECT_NE(fsck.output.find("clean"), std::string::npos) << fsck.output;
  EXPECT_NE(fsck.output.find("1 chunks"), std::string::npos) << "the file was committed: "
                                                             << fsck.output;
}

// The options every mount in these tests gets: the tests' own transport (mount_fixture.h).
std::string TestOptions() { return FuseUringMode() ? "fuse_uring=on" : "fuse_uring=off"; }

// mount(8) runs its helper without $PATH, so fuse3's mount.fuse3 finds `kdnfs` on /bin/sh's
// default PATH (/usr/local/sbin:/usr/local/bin:/usr/sbin:...), where an installed kdnfs is. For the
// built one, mount(8) runs in a private mount namespace (unshare -m) where /usr/local/sbin is a
// directory holding a link to it; every check of the mount runs in there too (the mount belongs
// to that namespace), and this script says MOUNT-CHECKS-PASSED when all held.
constexpr char kMountChecks[] = R"sh(set -eu
bin=$1 store=$2 mnt=$3
shift 3
mount --bind "$bin" /usr/local/sbin
"$@"
fstype=$(findmnt -n -o FSTYPE "$mnt" || true)
[ "$fstype" = fuse.kdnfs ] || { echo "mounted as '$fstype', not fuse.kdnfs"; exit 1; }
pid=$(pgrep -f -- "^kdnfs $store $mnt " || true)  # as mount.fuse3 runs it
[ "$(echo $pid | wc -w)" = 1 ] || { echo "not one kdnfs for the store:"; ps -o pid,ppid,stat,args -p "$(echo $pid | tr " " ,)"; exit 1; }
mkdir "$mnt/set"
seq 1 20000 > "$mnt/set/numbers"
[ "$(sort -n "$mnt/set/numbers" | tail -n 1)" = 20000 ] || { echo "read back wrong"; exit 1; }
umount "$mnt"
if findmnt "$mnt" > /dev/null; then echo "still mounted after umount"; exit 1; fi
i=0
while kill -0 "$pid" 2> /dev/null; do
  i=$((i + 1))
  if [ $i -gt 3000 ]; then echo "kdnfs still runs 30 s after umount"; exit 1; fi
  sleep 0.01
done
echo MOUNT-CHECKS-PASSED
)sh";

// Runs `mount_command` (mount(8) with its arguments) through kMountChecks, then fsck.
void MountThroughMount8(const Paths& p, const std::string& mount_command) {
  KDN_REQUIRE_OR_SKIP(::geteuid() == 0, "mount(8) of a FUSE filesystem needs root");
  KDN_REQUIRE_OR_SKIP(HaveTool("unshare") && HaveTool("findmnt") && HaveTool("pgrep"),
                      "unshare, findmnt (util-linux) and pgrep (procps) are needed");
  KDN_REQUIRE_OR_SKIP(::access("/usr/local/sbin", F_OK) == 0,
                      "/usr/local/sbin (on /bin/sh's default PATH) does not exist");
  const std::string bin = p.scratch("bin");
  ASSERT_TRUE(Sh("mkdir " + bin + " && ln -s " + KDNFS_PATH + " " + bin + "/kdnfs").ok());
  const std::string script = p.scratch("checks.sh");
  std::ofstream(script) << kMountChecks;
  CommandResult r = Sh("unshare --mount --propagation private sh " + script + " " + bin + " " +
                       p.store() + " " + p.mnt() + " " + mount_command);
  EXPECT_NE(r.output.find("MOUNT-CHECKS-PASSED"), std::string::npos)
      << "status " << r.status << ":\n" << r.output;
  CommandResult fsck = Sh(std::string(KDNCTL_PATH) + " fsck " + p.store());
  EXPECT_TRUE(fsck.ok()) << fsck.output;
  EXPECT_NE(fsck.output.find("clean"), std::string::npos) << fsck.output;
  EXPECT_NE(fsck.output.find("1 chunks"), std::string::npos)
      << "the file was committed at umount: " << fsck.output;
}

TEST(MountHelper, MountTypeFuseKdnfsAndUmount) {
  KDN_REQUIRE_FUSE_URING_IF_ASKED();
  Paths p;
  MountThroughMount8(p, "mount -t fuse.kdnfs " + p.store() + " " + p.mnt() + " -o capacity=1G," +
                            TestOptions());
}

TEST(MountHelper, FstabLineThroughMountT) {
  KDN_REQUIRE_FUSE_URING_IF_ASKED();
  KDN_REQUIRE_OR_SKIP(Sh("mount --help | grep -q -- --fstab").ok(),
                      "this mount(8) has no -T (util-linux has)");
  Paths p;
  // The options mount(8) and systemd read (noauto, nofail, x-systemd.*) reach kdnfs too, which
  // must ignore them.
  const std::string fstab = p.scratch("fstab");
  std::ofstream(fstab) << "# a test fstab\n"
                       << p.store() << "  " << p.mnt() << "  fuse.kdnfs  "
                       << "noauto,nofail,x-systemd.mount-timeout=30,capacity=1G,"
                       << TestOptions() << "  0  0\n";
  MountThroughMount8(p, "mount -T " + fstab + " " + p.mnt());
}

TEST(MountHelper, HelperRunsAsMountRunsIt) {
  KDN_REQUIRE_OR_SKIP(::geteuid() == 0, "mounting for others (allow_other) needs root");
  KDN_REQUIRE_FUSE_URING_IF_ASKED();
  Paths p;
  // The argument list mount(8) gives a /sbin/mount.<type> helper; -n (no mtab) is one of its
  // flags.
  CommandResult mount = Sh(kBuildHelperDir + "/mount.fuse.kdnfs " + p.store() + " " + p.mnt() +
                           " -n -o rw,noauto,_netdev,capacity=1G," + TestOptions());
  ASSERT_TRUE(mount.ok()) << mount.output;
  WriteUnmountAndCheck(p);
  // mount -f (fake) mounts nothing.
  ASSERT_TRUE(Sh(kBuildHelperDir + "/mount.fuse.kdnfs " + p.store() + " " + p.mnt() + " -f").ok());
  EXPECT_FALSE(IsMounted(p.mnt()));
}

// ---- the systemd unit -------------------------------------------------------------------------

// The ExecStart= line of the built kdnfs@.service for mountpoint `mnt`, with the environment's
// defaults replaced as systemd would: ${VAR} is one word.
std::vector<std::string> UnitCommandLine(const std::string& store, const std::string& mnt,
                                         const std::string& options) {
  std::istringstream unit(ReadFile(kBuildHelperDir + "/kdnfs@.service"));
  std::string line;
  std::vector<std::string> argv;
  while (std::getline(unit, line)) {
    if (!line.starts_with("ExecStart=")) continue;
    std::istringstream words(line.substr(std::strlen("ExecStart=")));
    std::string w;
    while (words >> w) {
      if (w == "${KDN_STORE}") w = store;
      if (w == "${KDN_OPTIONS}") w = options;
      if (w == "%f") w = mnt;
      argv.push_back(w);
    }
  }
  return argv;
}

TEST(SystemdUnit, CommandLineIsReadyWhenMountedAndStopsClean) {
  KDN_REQUIRE_OR_SKIP(::geteuid() == 0, "the unit runs kdnfs as root");
  KDN_REQUIRE_FUSE_URING_IF_ASKED();
  Paths p;
  std::vector<std::string> argv = UnitCommandLine(p.store(), p.mnt(), "capacity=1G," + TestOptions());
  ASSERT_GE(argv.size(), 4u);
  EXPECT_EQ(argv[0], KDNFS_PATH);
  EXPECT_NE(std::find(argv.begin(), argv.end(), "-f"), argv.end()) << "Type=notify needs -f";

  // systemd's side of the readiness protocol: a datagram socket named in $NOTIFY_SOCKET.
  const std::string socket_path = p.scratch("notify");
  int sock = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(sock, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", socket_path.c_str());
  ASSERT_EQ(::bind(sock, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  timeval timeout{30, 0};
  ::setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  ::setenv("NOTIFY_SOCKET", socket_path.c_str(), 1);
  pid_t pid = SpawnDaemon(argv, p.scratch("kdnfs.log"));
  ::unsetenv("NOTIFY_SOCKET");
  ASSERT_GT(pid, 0);
  int slot = RegisterMount(p.mnt(), pid);

  char buf[256];
  ssize_t n = ::recv(sock, buf, sizeof(buf), 0);
  ASSERT_GT(n, 0) << "no readiness in 30 s:\n" << ReadFile(p.scratch("kdnfs.log"));
  EXPECT_EQ(std::string(buf, static_cast<size_t>(n)), "READY=1");
  EXPECT_TRUE(IsMounted(p.mnt())) << "ready means mounted";
  ASSERT_TRUE(Sh("echo hello > " + p.mnt() + "/greeting").ok());

  // `systemctl stop`: SIGTERM (KillSignal=) to the main process.
  ::kill(pid, SIGTERM);
  int status = 0;
  ASSERT_TRUE(WaitFor(pid, std::chrono::seconds(60), &status));
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << ReadFile(p.scratch("kdnfs.log"));
  n = ::recv(sock, buf, sizeof(buf), MSG_DONTWAIT);
  EXPECT_EQ(n > 0 ? std::string(buf, static_cast<size_t>(n)) : "", "STOPPING=1");
  ::close(sock);
  EXPECT_FALSE(IsMounted(p.mnt()));
  UnregisterMount(slot);
  CommandResult fsck = Sh(std::string(KDNCTL_PATH) + " fsck " + p.store());
  EXPECT_TRUE(fsck.ok()) << fsck.output;
  EXPECT_NE(fsck.output.find("1 chunks"), std::string::npos) << fsck.output;
}

TEST(SystemdUnit, UnitFilesVerify) {
  KDN_REQUIRE_OR_SKIP(HaveTool("systemd-analyze"), "systemd-analyze is not installed (apt: systemd)");
  TempDir dir("kdnfs-unit");
  // An instance of the template (systemd-analyze verifies unit files, not templates), and the
  // example mount unit under its own name.
  ASSERT_TRUE(Sh("cp " + kBuildHelperDir + "/kdnfs@.service " + dir.str() + "/kdnfs@kdn.service")
                  .ok());
  ASSERT_TRUE(Sh("cp " + std::string(KDN_SOURCE_DIR) + "/fs/kdnfs/kdn.mount " + dir.str()).ok());
  for (const char* unit : {"kdnfs@kdn.service", "kdn.mount"}) {
    CommandResult verify =
        Sh("SYSTEMD_LOG_LEVEL=warning systemd-analyze verify --man=no " + dir / unit);
    EXPECT_TRUE(verify.ok()) << unit << ":\n" << verify.output;
    // Anything it says about our unit is a problem, whatever the exit status.
    EXPECT_EQ(verify.output.find(unit), std::string::npos) << verify.output;
  }
}

// ---- metrics -----------------------------------------------------------------------------------

TEST(Metrics, PromtoolAcceptsTheFileThroughAMount) {
  KDN_REQUIRE_FUSE_URING_IF_ASKED();
  KDN_REQUIRE_OR_SKIP(HaveTool("promtool"), "promtool is not installed (apt: prometheus)");
  KdnfsMount m({"passthrough=off"});  // reads through kdnfs: the store's read histogram fills
  ASSERT_TRUE(m.Start());
  ASSERT_TRUE(Sh("head -c 300000 /dev/urandom > " + m.path("blob")).ok());
  ASSERT_TRUE(Sh("sync " + m.path("blob")).ok());
  // O_DIRECT: past the kernel's page cache, to kdnfs and the store.
  ASSERT_TRUE(Sh("dd if=" + m.path("blob") + " of=/dev/null bs=64k iflag=direct").ok());
  // A failure the kernel cannot answer itself: rmdir of a directory that is not empty.
  ASSERT_TRUE(Sh("mkdir " + m.path("dir") + " && touch " + m.path("dir/file")).ok());
  EXPECT_FALSE(Sh("rmdir " + m.path("dir")).ok());

  const std::string metrics = ReadFile(m.path(".kdn/metrics"));
  const std::string copy = m.scratch("metrics.prom");
  std::ofstream(copy) << metrics;
  CommandResult check = Sh("promtool check metrics < " + copy);
  EXPECT_TRUE(check.ok()) << check.output << "\n" << metrics;
  EXPECT_EQ(check.output, "") << "promtool's lint found problems";

  // Per operation and outcome, with the counts of what was done above.
  std::smatch hit;
  ASSERT_TRUE(std::regex_search(
      metrics, hit, std::regex("kdn_fuse_requests_total\\{op=\"rmdir\",outcome=\"ENOTEMPTY\"\\} (\\d+)")))
      << metrics;
  EXPECT_GE(std::stoull(hit[1]), 1u);
  ASSERT_TRUE(std::regex_search(
      metrics, hit, std::regex("kdn_fuse_requests_total\\{op=\"write\",outcome=\"ok\"\\} (\\d+)")));
  EXPECT_GE(std::stoull(hit[1]), 1u);
  ASSERT_TRUE(std::regex_search(metrics, hit,
                                std::regex("kdn_store_read_duration_seconds_count (\\d+)")));
  EXPECT_GE(std::stoull(hit[1]), 1u) << "the read went to the store";
  EXPECT_NE(metrics.find("kdn_store_read_duration_seconds_bucket{le=\"+Inf\"} " + hit[1].str()),
            std::string::npos);
  ASSERT_TRUE(std::regex_search(metrics, hit, std::regex("kdn_fs_write_bytes_total (\\d+)")));
  EXPECT_EQ(std::stoull(hit[1]), 300000u);
}

TEST(Metrics, OtherUsersGetNoStoreWideFigures) {
  KDN_REQUIRE_FUSE_URING_IF_ASKED();
  KDN_REQUIRE_OR_SKIP(::geteuid() == 0, "needs root (to become nobody)");
  KDN_REQUIRE_OR_SKIP(HaveTool("setpriv"), "setpriv is not installed (apt: util-linux)");
  KdnfsMount m;
  ASSERT_TRUE(m.Start());
  ASSERT_TRUE(Sh("chmod 755 " + DirOf(m.mnt()) + " && echo x > " + m.path("file")).ok());
  CommandResult as_nobody =
      Sh("setpriv --reuid=nobody --regid=nogroup --clear-groups cat " + m.path(".kdn/metrics"));
  ASSERT_TRUE(as_nobody.ok()) << as_nobody.output;
  EXPECT_NE(as_nobody.output.find("kdn_store_wide_metrics 0"), std::string::npos);
  EXPECT_EQ(as_nobody.output.find("kdn_store_"  "chunks"), std::string::npos) << as_nobody.output;
  EXPECT_EQ(as_nobody.output.find("kdn_fuse_requests_total"), std::string::npos);
  if (HaveTool("promtool")) {
    const std::string copy = m.scratch("nobody.prom");
    std::ofstream(copy) << as_nobody.output;
    EXPECT_TRUE(Sh("promtool check metrics < " + copy).ok());
  }
  // Root still gets everything, right after (a different inode: no page cached for nobody).
  EXPECT_NE(ReadFile(m.path(".kdn/metrics")).find("kdn_store_chunks 1"), std::string::npos);
}

// ---- without root -------------------------------------------------------------------------------

TEST(NonRoot, NobodyMountsAndUnmountsOwnStore) {
  KDN_REQUIRE_FUSE_URING_IF_ASKED();
  KDN_REQUIRE_OR_SKIP(::geteuid() == 0, "needs root (to become nobody)");
  KDN_REQUIRE_OR_SKIP(HaveTool("setpriv"), "setpriv is not installed (apt: util-linux)");
  const std::string as_nobody = "setpriv --reuid=nobody --regid=nogroup --clear-groups ";
  // A user mounts through the setuid fusermount3, which opens /dev/fuse as that user.
  if (!Sh(as_nobody + "sh -c 'test -r /dev/fuse && test -w /dev/fuse'").ok()) {
    ASSERT_EQ(std::getenv("KDN_TEST_DEV_FUSE_0666"), nullptr) << "the namespace did not help";
    // /dev/fuse is root's only here (containers often make it 0600); on a usual host it is 0666.
    // The test runs again as a usual host would have it: in a private mount namespace where
    // /dev/fuse is a 0666 node of the same device.
    TempDir dev("kdn-dev-fuse");
    const std::string node = dev / "fuse";
    KDN_REQUIRE_OR_SKIP(::mknod(node.c_str(), S_IFCHR | 0666, makedev(10, 229)) == 0 &&
                            ::chmod(node.c_str(), 0666) == 0 && HaveTool("unshare"),
                        "/dev/fuse is 0600 and no 0666 node of it can be made here (mknod, "
                        "unshare)");
    char self[4096];
    ssize_t n = ::readlink("/proc/self/exe", self, sizeof(self) - 1);
    ASSERT_GT(n, 0);
    self[n] = '\0';
    CommandResult again = Sh(
        "KDN_TEST_DEV_FUSE_0666=1 unshare --mount --propagation private sh -c 'mount --bind " +
        node + " /dev/fuse && exec " + self +
        " --gtest_filter=NonRoot.NobodyMountsAndUnmountsOwnStore'");
    EXPECT_TRUE(again.ok()) << again.output;
    EXPECT_NE(again.output.find("[  PASSED  ] 1 test"), std::string::npos) << again.output;
    return;
  }
  TempDir dir("kdnfs-nobody");
  ASSERT_TRUE(Sh("chmod 755 " + dir.str() + " && mkdir " + dir / "mnt" + " " + dir / "store" +
                 " && chown nobody:nogroup " + dir / "mnt" + " " + dir / "store")
                  .ok());
  const std::string store = dir / "store", mnt = dir / "mnt";
  CommandResult mount =
      Sh(as_nobody + KDNFS_PATH + " -o " + TestOptions() + " " + store + " " + mnt);
  ASSERT_TRUE(mount.ok()) << mount.output;
  struct Unmount {
    std::string mnt;
    ~Unmount() {
      if (IsMounted(mnt)) ::umount2(mnt.c_str(), MNT_DETACH);
    }
  } unmount{mnt};
  const std::vector<pid_t> daemons = DaemonsOf(store);
  ASSERT_EQ(daemons.size(), 1u);
  CommandResult rw = Sh(as_nobody + "sh -c 'echo mine > " + mnt + "/file && cat " + mnt +
                        "/file && grep -c ^kdn_store_chunks " + mnt + "/.kdn/metrics'");
  EXPECT_TRUE(rw.ok()) << rw.output;
  EXPECT_EQ(rw.output, "mine\n1\n") << "the store's owner sees its metrics";
  // Without allow_other, no other user, root included, reaches the mount.
  EXPECT_FALSE(Sh("setpriv --reuid=daemon --regid=daemon --clear-groups ls " + mnt).ok());
  EXPECT_FALSE(Sh("ls " + mnt).ok());
  CommandResult unmounted = Sh(as_nobody + "fusermount3 -u " + mnt);
  ASSERT_TRUE(unmounted.ok()) << unmounted.output;
  ASSERT_TRUE(GoneWithin(daemons, std::chrono::seconds(30)));
  CommandResult fsck = Sh(as_nobody + KDNCTL_PATH + " fsck " + store);
  EXPECT_TRUE(fsck.ok()) << fsck.output;
}

}  // namespace
}  // namespace kdn::test
