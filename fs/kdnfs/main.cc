// kdnfs: mounts a KDN chunk store as a filesystem.
//
//   kdnfs [-f] [-d] [-o opt[,opt...]] STORE_DIR MOUNTPOINT
//
// Creates the store when STORE_DIR is empty or missing. Runs in the background unless -f; the
// parent process exits once the filesystem is mounted (status 0) or could not be (status 1, with
// the reason on stderr). SIGINT, SIGTERM and SIGHUP unmount and exit after committing whatever is
// still being written; so does `umount MOUNTPOINT`. A mountpoint left behind by a killed daemon is
// detached first. Started by systemd (`Type=notify`, kdnfs@.service), it says READY=1 once mounted.
//
// mount(8) runs it too: `mount -t fuse.kdnfs STORE_DIR MOUNTPOINT -o ...` and fstab lines of type
// fuse.kdnfs go through fuse3's mount.fuse3 (or the mount.fuse.kdnfs helper installed with it),
// which pass fstab's options along; those that only mount(8) reads are ignored here.
#define FUSE_USE_VERSION 312  // 3.12: the loop config of fuse_loop_cfg_create()
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "fs/kdnfs/filesystem.h"
#include "fs/kdnfs/fuse_adapter.h"
#include "fs/kdnfs/log.h"
#include "fs/kdnfs/mount_util.h"
#include "fs/kdnfs/service_notify.h"
#include "kdn/origin.h"

#ifndef KDN_VERSION
#define KDN_VERSION "unknown"
#endif

namespace kdn::fs {
namespace {

struct CommandLine {
  bool help = false;
  bool version = false;
  bool foreground = false;
  bool debug = false;
  std::string store_dir;
  std::string mountpoint;
  StoreOptions store;
  FuseOptions fuse;
  Filesystem::Options fs;
  origin::OriginOptions origin;  // url empty: no origin
  edge::UploaderOptions upload;
  std::chrono::milliseconds origin_ttl{1000};
  long origin_read_timeout_ms = 5000;
  unsigned origin_fetch_threads = 4;
  uint64_t origin_fetch_piece_bytes = 8ull << 20;
};

void PrintUsage(FILE* out) {
  std::fprintf(out,
               "usage: kdnfs [-f] [-d] [-o opt[,opt...]] STORE_DIR MOUNTPOINT\n"
               "\n"
               "Mounts the KDN chunk store in STORE_DIR (created when empty or missing) at\n"
               "MOUNTPOINT: knowledge sets are directories, KV caches are files.\n"
               "\n"
               "  -f                 stay in the foreground (log to stderr)\n"
               "  -d                 debug: foreground, verbose log and every FUSE request\n"
               "  -h, --help         this help\n"
               "  -V, --version      version\n"
               "\n"
               "kdnfs options (-o):\n"
               "  capacity=SIZE      limit on stored bytes, e.g. 64G (K, M, G, T); over it,\n"
               "                     evictable chunks go first, then writes fail with ENOSPC.\n"
               "                     Default: the recorded limit (none for a new store)\n"
               "  user_quota=SIZE    the most bytes the files of one user (not root) may hold;\n"
               "                     over it writes fail with EDQUOT (user.kdn.quota=SIZE on\n"
               "                     a directory limits the files named in it)\n"
               "  readahead=SIZE     kernel readahead of the mount (default 16M)\n"
               "  threads=N          request threads (default 64)\n"
               "  spin=US            after a request, poll for the next one this long before\n"
               "                     sleeping; 0 never polls (default 50)\n"
               "  sched=batch|normal batch: request threads never preempt the task on\n"
               "                     their CPU when a request wakes them, so a close's\n"
               "                     RELEASE waits for the client's next request; normal:\n"
               "                     they do, and a busy CPU delays no request (default\n"
               "                     batch)\n"
               "  io_engine=KIND     auto, io_uring or psync (default auto)\n"
               "  fuse_uring=on|off  take requests from per-CPU io_uring queues when the\n"
               "                     kernel offers them (Linux 6.14+ with the fuse module's\n"
               "                     enable_uring=Y); off: /dev/fuse only (default on)\n"
               "  passthrough=on|off the kernel reads committed files straight from their\n"
               "                     chunk files (Linux 6.9+, needs CAP_SYS_ADMIN); off: every\n"
               "                     read goes through kdnfs (default on)\n"
               "  sync=full|none     none skips every sync: scratch stores only (default full)\n"
               "  commit=MS          with sync=full: a change that returned is durable against\n"
               "                     power loss at most MS milliseconds later, or at the next\n"
               "                     fsync on the mount; 0: before it returns (default 1000)\n"
               "  origin=URL         be an edge of this origin (docs/origin.md):\n"
               "                     s3://BUCKET[/PREFIX] or file:///DIR (or /DIR); committed\n"
               "                     files, unlinks and renames are uploaded in the background\n"
               "                     from a durable queue; fsync waits for the upload\n"
               "  origin_endpoint=URL  S3: http(s)://HOST[:PORT] (default: AWS); credentials\n"
               "                     from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or\n"
               "                     ~/.aws/credentials, region from AWS_REGION\n"
               "  origin_ttl=SECONDS how long a directory's listing from the origin is\n"
               "                     believed before it is read again (default 1)\n"
               "  origin_read_timeout=MS  a listing or read miss gives up (EIO, or the local\n"
               "                     view) after about this long when the origin is down\n"
               "                     (default 5000)\n"
               "  origin_threads=N   chunk uploads at once (default 4)\n"
               "  origin_fetch_threads=N  ranged GETs at once for read misses (default 4)\n"
               "  origin_fetch_piece_kib=N  bytes of one such GET (default 8192)\n"
               "  origin_sync_timeout=S  longest an fsync waits for the origin (default 30)\n"
               "\n"
               "Other -o options go to FUSE and the kernel, e.g. ro (read-only: closing a\n"
               "file then costs no request to the daemon), allow_other (the default\n"
               "when run as root), fsname=NAME. default_permissions is always on: the kernel\n"
               "checks modes and owners. Options of fstab lines that are for mount(8)\n"
               "and systemd only (defaults, auto, noauto, user, users, nofail, _netdev,\n"
               "x-*, comment=) are ignored.\n");
}

// Options of an fstab line that mean something to mount(8) or systemd only (when to mount, who
// may), not to the filesystem: mount.fuse3 drops some of them, not all.
bool MountOnlyOption(std::string_view opt) {
  for (std::string_view o : {"defaults", "auto", "noauto", "user", "users", "nouser", "owner",
                             "group", "nofail", "_netdev"}) {
    if (opt == o) return true;
  }
  return opt.starts_with("x-") || opt.starts_with("comment=");
}

Status ParseKdnOption(std::string_view opt, CommandLine& cl, bool& ours) {
  ours = true;
  auto value = [&opt](std::string_view key) -> std::string_view {
    return opt.substr(key.size() + 1);
  };
  auto is = [&opt](std::string_view key) {
    return opt.size() > key.size() && opt.starts_with(key) && opt[key.size()] == '=';
  };
  if (is("capacity")) {
    KDN_ASSIGN_OR_RETURN(cl.store.capacity_bytes, ParseSize(value("capacity")));
    if (cl.store.capacity_bytes == 0) return Status::InvalidArgument("capacity must be > 0");
  } else if (is("user_quota")) {
    KDN_ASSIGN_OR_RETURN(cl.fs.user_quota_bytes, ParseSize(value("user_quota")));
    if (cl.fs.user_quota_bytes == 0) return Status::InvalidArgument("user_quota must be > 0");
  } else if (is("readahead")) {
    KDN_ASSIGN_OR_RETURN(cl.fuse.readahead_bytes, ParseSize(value("readahead")));
  } else if (is("threads")) {
    int n = std::atoi(std::string(value("threads")).c_str());
    if (n < 1 || n > 1024) return Status::InvalidArgument("threads must be 1..1024");
    cl.fuse.max_threads = static_cast<unsigned>(n);
  } else if (is("spin")) {
    int us = std::atoi(std::string(value("spin")).c_str());
    if (us < 0 || us > 100000) return Status::InvalidArgument("spin must be 0..100000 (us)");
    cl.fuse.spin = std::chrono::microseconds(us);
  } else if (is("sched")) {
    std::string_view v = value("sched");
    if (v != "batch" && v != "normal") {
      return Status::InvalidArgument("sched must be batch or normal");
    }
    cl.fuse.batch_scheduling = v == "batch";
  } else if (is("fuse_uring")) {
    std::string_view v = value("fuse_uring");
    if (v != "on" && v != "off") return Status::InvalidArgument("fuse_uring must be on or off");
    cl.fuse.io_uring = v == "on";
  } else if (is("passthrough")) {
    std::string_view v = value("passthrough");
    if (v != "on" && v != "off") return Status::InvalidArgument("passthrough must be on or off");
    cl.fuse.passthrough = v == "on";
  } else if (is("io_engine")) {
    std::string_view v = value("io_engine");
    if (v == "auto")
      cl.store.io_engine = IoEngineKind::kAuto;
    else if (v == "io_uring")
      cl.store.io_engine = IoEngineKind::kIoUring;
    else if (v == "psync")
      cl.store.io_engine = IoEngineKind::kPsync;
    else
      return Status::InvalidArgument("io_engine must be auto, io_uring or psync");
  } else if (is("sync")) {
    std::string_view v = value("sync");
    if (v == "full")
      cl.store.sync = SyncPolicy::kFull;
    else if (v == "none")
      cl.store.sync = SyncPolicy::kNone;
    else
      return Status::InvalidArgument("sync must be full or none");
  } else if (is("origin")) {
    std::string url(value("origin"));
    if (url.starts_with("/")) url = "file://" + url;
    cl.origin.url = url;
  } else if (is("origin_endpoint")) {
    cl.origin.endpoint = std::string(value("origin_endpoint"));
  } else if (is("origin_ttl")) {
    std::string v(value("origin_ttl"));
    char* end = nullptr;
    double sec = std::strtod(v.c_str(), &end);
    if (v.empty() || *end != '\0' || !(sec >= 0 && sec <= 86400)) {
      return Status::InvalidArgument("origin_ttl must be 0..86400 (seconds)");
    }
    cl.origin_ttl = std::chrono::milliseconds(static_cast<int64_t>(sec * 1000));
  } else if (is("origin_read_timeout")) {
    int ms = std::atoi(std::string(value("origin_read_timeout")).c_str());
    if (ms < 100 || ms > 600000) {
      return Status::InvalidArgument("origin_read_timeout must be 100..600000 (ms)");
    }
    cl.origin_read_timeout_ms = ms;
  } else if (is("origin_fetch_threads")) {
    int n = std::atoi(std::string(value("origin_fetch_threads")).c_str());
    if (n < 1 || n > 64) return Status::InvalidArgument("origin_fetch_threads must be 1..64");
    cl.origin_fetch_threads = static_cast<unsigned>(n);
  } else if (is("origin_fetch_piece_kib")) {
    int n = std::atoi(std::string(value("origin_fetch_piece_kib")).c_str());
    if (n < 64 || n > 262144) {
      return Status::InvalidArgument("origin_fetch_piece_kib must be 64..262144");
    }
    cl.origin_fetch_piece_bytes = uint64_t(n) << 10;
  } else if (is("origin_threads")) {
    int n = std::atoi(std::string(value("origin_threads")).c_str());
    if (n < 1 || n > 64) return Status::InvalidArgument("origin_threads must be 1..64");
    cl.upload.threads = static_cast<unsigned>(n);
  } else if (is("origin_sync_timeout")) {
    int sec = std::atoi(std::string(value("origin_sync_timeout")).c_str());
    if (sec < 1 || sec > 86400) {
      return Status::InvalidArgument("origin_sync_timeout must be 1..86400 (seconds)");
    }
    cl.upload.sync_timeout = std::chrono::seconds(sec);
  } else if (is("commit")) {
    std::string v(value("commit"));
    char* end = nullptr;
    unsigned long ms = std::strtoul(v.c_str(), &end, 10);
    if (v.empty() || *end != '\0' || ms > 3600000) {
      return Status::InvalidArgument("commit must be 0..3600000 (milliseconds)");
    }
    cl.store.log_sync_interval_ms = static_cast<uint32_t>(ms);
  } else {
    ours = false;
  }
  return Status::OK();
}

Result<CommandLine> ParseCommandLine(int argc, char** argv) {
  CommandLine cl;
  std::vector<std::string> positional;
  bool allow_other_given = false;
  bool fsname_given = false;
  bool subtype_given = false;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      cl.help = true;
    } else if (arg == "-V" || arg == "--version") {
      cl.version = true;
    } else if (arg == "-f") {
      cl.foreground = true;
    } else if (arg == "-d") {
      cl.foreground = cl.debug = true;
    } else if (arg == "-o" || (arg.starts_with("-o") && arg.size() > 2)) {
      std::string list;
      if (arg == "-o") {
        if (++i >= argc) return Status::InvalidArgument("-o needs an argument");
        list = argv[i];
      } else {
        list = std::string(arg.substr(2));
      }
      size_t start = 0;
      while (start <= list.size()) {
        size_t comma = list.find(',', start);
        std::string opt =
            list.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
        start = comma == std::string::npos ? list.size() + 1 : comma + 1;
        if (opt.empty() || MountOnlyOption(opt)) continue;
        bool ours = false;
        KDN_RETURN_IF_ERROR(ParseKdnOption(opt, cl, ours));
        if (ours) continue;
        if (opt == "allow_other") allow_other_given = true;
        if (opt.starts_with("fsname=")) fsname_given = true;
        if (opt.starts_with("subtype=")) subtype_given = true;
        if (opt == "default_permissions") continue;  // always on
        if (opt == "ro") cl.fuse.read_only = true;
        if (opt == "rw") cl.fuse.read_only = false;
        cl.fuse.fuse_options.push_back(opt);
      }
    } else if (arg.starts_with("-") && arg.size() > 1) {
      return Status::InvalidArgument("unknown option " + std::string(arg));
    } else {
      positional.emplace_back(arg);
    }
  }
  if (cl.help || cl.version) return cl;
  if (positional.size() != 2) {
    return Status::InvalidArgument("expected STORE_DIR and MOUNTPOINT");
  }
  cl.store_dir = positional[0];
  cl.mountpoint = positional[1];
  // As root, other users may use the mount; the kernel still checks their permissions.
  if (::geteuid() == 0 && !allow_other_given) cl.fuse.fuse_options.emplace_back("allow_other");
  if (!fsname_given) cl.fuse.fuse_options.push_back("fsname=kdnfs");
  if (!subtype_given) cl.fuse.fuse_options.emplace_back("subtype=kdnfs");
  if (cl.debug) cl.fuse.fuse_options.emplace_back("debug");
  return cl;
}

// Forks; the parent waits until the child says it has mounted (or failed) and exits with that.
// Returns in the child with the write end of the pipe it must answer on.
int Daemonize() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    std::perror("kdnfs: pipe");
    std::exit(1);
  }
  pid_t pid = ::fork();
  if (pid < 0) {
    std::perror("kdnfs: fork");
    std::exit(1);
  }
  if (pid > 0) {
    ::close(fds[1]);
    char status = 1;
    ssize_t n;
    while ((n = ::read(fds[0], &status, 1)) < 0 && errno == EINTR) {
    }
    std::_Exit(n == 1 ? status : 1);
  }
  ::close(fds[0]);
  ::setsid();
  return fds[1];
}

void DetachStdio() {
  int null = ::open("/dev/null", O_RDWR);
  if (null < 0) return;
  ::dup2(null, STDIN_FILENO);
  ::dup2(null, STDOUT_FILENO);
  ::dup2(null, STDERR_FILENO);
  if (null > STDERR_FILENO) ::close(null);
}

int Run(const CommandLine& cl) {
  auto mountpoint = AbsoluteMountPoint(cl.mountpoint);
  if (!mountpoint.ok()) {
    KDN_LOG_ERROR("mountpoint %s: %s", cl.mountpoint.c_str(),
                  mountpoint.status().ToString().c_str());
    return 1;
  }
  auto stale = ClearStaleMount(*mountpoint);
  if (!stale.ok()) {
    KDN_LOG_ERROR("%s", stale.status().ToString().c_str());
    return 1;
  }
  if (*stale)
    KDN_LOG_INFO("detached a stale mount on %s (its daemon had died)", mountpoint->c_str());

  int report_fd = cl.foreground ? -1 : Daemonize();
  auto report = [report_fd](char status) {
    if (report_fd < 0) return;
    (void)!::write(report_fd, &status, 1);
    ::close(report_fd);
  };

  Filesystem::Options fs_options = cl.fs;
  if (!cl.origin.url.empty()) {
    auto origin = origin::OpenOrigin(cl.origin);
    if (!origin.ok()) {
      KDN_LOG_ERROR("origin %s: %s", cl.origin.url.c_str(), origin.status().ToString().c_str());
      report(1);
      return 1;
    }
    // Reads get a tighter bound than uploads (which retry in the background anyway): a miss
    // must fail quickly when the origin is down.
    origin::OriginOptions read = cl.origin;
    read.connect_timeout_ms = std::min<long>(read.connect_timeout_ms, cl.origin_read_timeout_ms);
    read.retry_budget_ms = cl.origin_read_timeout_ms;
    read.max_attempts = 3;
    read.low_speed_seconds = std::max<long>(1, cl.origin_read_timeout_ms / 1000);
    auto read_origin = origin::OpenOrigin(read);
    if (!read_origin.ok()) {
      KDN_LOG_ERROR("origin %s: %s", cl.origin.url.c_str(),
                    read_origin.status().ToString().c_str());
      report(1);
      return 1;
    }
    fs_options.origin = std::move(*origin);
    fs_options.read_origin = std::move(*read_origin);
    fs_options.origin_ttl = cl.origin_ttl;
    fs_options.origin_read_timeout = std::chrono::milliseconds(cl.origin_read_timeout_ms);
    fs_options.origin_fetch_threads = cl.origin_fetch_threads;
    fs_options.origin_piece_bytes = cl.origin_fetch_piece_bytes;
    fs_options.upload = cl.upload;
    KDN_LOG_INFO("edge of origin %s", fs_options.origin->Describe().c_str());
  }
  auto fs = Filesystem::Open(cl.store_dir, cl.store, fs_options);
  if (!fs.ok()) {
    KDN_LOG_ERROR("cannot open the store in %s: %s", cl.store_dir.c_str(),
                  fs.status().ToString().c_str());
    report(1);
    return 1;
  }
  for (const std::string& w : (*fs)->store().OpenWarnings()) KDN_LOG_WARNING("%s", w.c_str());
  auto adapter = FuseAdapter::Create(fs->get(), cl.fuse);
  if (!adapter.ok()) {
    KDN_LOG_ERROR("%s", adapter.status().ToString().c_str());
    report(1);
    return 1;
  }
  Status mounted = (*adapter)->Mount(*mountpoint);
  if (!mounted.ok()) {
    KDN_LOG_ERROR("%s", mounted.ToString().c_str());
    report(1);
    return 1;
  }
  KDN_LOG_INFO("mounted %s on %s", (*fs)->store().dir().c_str(), mountpoint->c_str());
  if (report_fd >= 0) {
    if (::chdir("/") != 0) KDN_LOG_WARNING("chdir /: %s", std::strerror(errno));
    DetachStdio();
    LogToSyslog();
    report(0);
  }
  if (Status ready = NotifyServiceManager("READY=1"); !ready.ok()) {
    KDN_LOG_WARNING("readiness not sent: %s", ready.ToString().c_str());
  }
  Status ran = (*adapter)->Run();
  (void)NotifyServiceManager("STOPPING=1");
  adapter->reset();  // unmounted; the filesystem commits what is staged as it closes
  fs->reset();
  if (!ran.ok()) {
    KDN_LOG_ERROR("%s", ran.ToString().c_str());
    return 1;
  }
  KDN_LOG_INFO("unmounted %s", mountpoint->c_str());
  return 0;
}

}  // namespace
}  // namespace kdn::fs

int main(int argc, char** argv) {
  using namespace kdn::fs;
  ::umask(077);  // the daemon's own files (the store, staged writes) are for its user only
  auto cl = ParseCommandLine(argc, argv);
  if (!cl.ok()) {
    std::fprintf(stderr, "kdnfs: %s\n", cl.status().message().c_str());
    PrintUsage(stderr);
    return 2;
  }
  if (cl->help) {
    PrintUsage(stdout);
    return 0;
  }
  if (cl->version) {
    std::printf("kdnfs %s (libfuse %s)\n", KDN_VERSION, fuse_pkgversion());
    return 0;
  }
  if (cl->debug) SetLogLevel(LogLevel::kDebug);
  cl->store.info_log = DaemonLogger();
  return Run(*cl);
}
