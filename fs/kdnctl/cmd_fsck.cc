// kdnctl fsck: checks a store (kdn::Store::Fsck) and says what is wrong.
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>

#include "fs/kdnctl/progress.h"
#include "kdn/store.h"

namespace kdnctl {

namespace {

constexpr int kFsckClean = 0;
constexpr int kFsckProblems = 1;  // problems found, or the store cannot be checked
constexpr int kFsckUsage = 2;

constexpr char kFsckUsageText[] =
    "Usage: kdnctl fsck [--no-data] [--quiet] STORE_DIR\n"
    "Checks a store: its database, every chunk's file (present, its size, no stray files), the\n"
    "reference counts, the namespace (names, links, directories, orphans),\n"
    "and, unless --no-data, every chunk's bytes: its hash, its block checksums and the checksums\n"
    "of .kv content. The store must not be in use (stop kdnfs first).\n"
    "Prints a summary and one line per problem (--quiet: problems only). Exits 0 when the store\n"
    "is sound, 1 when problems were found or it cannot be opened, 2 on bad arguments.\n";

int FsckUsageError(std::string_view message) {
  std::fprintf(stderr, "kdnctl fsck: %.*s (see kdnctl fsck --help)\n",
               static_cast<int>(message.size()), message.data());
  return kFsckUsage;
}

}  // namespace

int RunFsck(int argc, char** argv) {
  kdn::FsckOptions options;
  // What the store notices on its way (an I/O engine fallback) goes to stderr with the rest.
  options.info_log = std::make_shared<kdn::StderrLogger>("kdnctl", kdn::LogLevel::kWarning);
  bool quiet = false;
  std::string dir;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "--help" || a == "-h") {
      std::fputs(kFsckUsageText, stdout);
      return kFsckClean;
    }
    if (a == "--no-data") {
      options.verify_data = false;
    } else if (a == "--quiet" || a == "-q") {
      quiet = true;
    } else if (a.size() > 1 && a[0] == '-') {
      return FsckUsageError("unknown option " + std::string(a));
    } else if (dir.empty()) {
      dir = a;
    } else {
      return FsckUsageError("expected one STORE_DIR");
    }
  }
  if (dir.empty()) return FsckUsageError("expected one STORE_DIR");

  Progress progress("kdnctl fsck: " + dir + ": verifying chunks");
  options.progress = [&progress](uint64_t done, uint64_t total) { progress.Update(done, total); };
  kdn::Result<kdn::FsckReport> report = kdn::Store::Fsck(dir, options);
  progress.Finish();
  if (!report.ok()) {
    std::fprintf(stderr, "kdnctl fsck: %s: %s\n", dir.c_str(), report.status().ToString().c_str());
    return kFsckProblems;
  }
  if (!quiet) {
    std::printf("%s: %llu chunks (%llu bytes verified), %llu inodes, %llu entries: %s\n",
                dir.c_str(), static_cast<unsigned long long>(report->chunks),
                static_cast<unsigned long long>(report->bytes_verified),
                static_cast<unsigned long long>(report->inodes),
                static_cast<unsigned long long>(report->dentries),
                report->clean() ? "clean"
                                : (std::to_string(report->problems.size()) + " problems").c_str());
  }
  for (const std::string& f : report->fixed) std::printf("fixed: %s\n", f.c_str());
  for (const std::string& p : report->problems) std::printf("%s\n", p.c_str());
  return report->clean() ? kFsckClean : kFsckProblems;
}

}  // namespace kdnctl
