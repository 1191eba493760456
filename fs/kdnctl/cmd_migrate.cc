// kdnctl migrate: brings a store to the current version in place (opening it does the work:
// kdn::Store::Open migrates a version 1 store crash-safely), and says what was done.
#include <cstdio>
#include <string>
#include <string_view>

#include "fs/kdnctl/commands.h"
#include "fs/kdnctl/progress.h"
#include "kdn/store.h"

namespace kdnctl {

namespace {

constexpr char kMigrateUsageText[] =
    "Usage: kdnctl migrate STORE_DIR\n"
    "Migrates a store to the current version in place: a version 1 store (segment files) gets a\n"
    "file per chunk and SHA-256 chunk ids. Crash-safe: an interrupted migration resumes the next\n"
    "time the store is opened (by kdnctl or kdnfs, which also migrates on first open). The store\n"
    "must not be in use (stop kdnfs first). Also restricts the store to its owner (0700/0600).\n"
    "Exits 0 when the store is current, 1 when it cannot be opened or migrated, 2 on bad\n"
    "arguments.\n";

}  // namespace

int RunMigrate(int argc, char** argv) {
  std::string dir;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(kMigrateUsageText, stdout);
      return kExitOk;
    }
    if (!arg.empty() && arg[0] == '-') {
      std::fprintf(stderr, "kdnctl migrate: unknown option %s (see kdnctl migrate --help)\n",
                   argv[i]);
      return kExitUsage;
    }
    if (!dir.empty()) {
      std::fprintf(stderr, "kdnctl migrate: expected one STORE_DIR (see kdnctl migrate --help)\n");
      return kExitUsage;
    }
    dir = arg;
  }
  if (dir.empty()) {
    std::fprintf(stderr, "kdnctl migrate: expected one STORE_DIR (see kdnctl migrate --help)\n");
    return kExitUsage;
  }
  kdn::StoreOptions options;
  options.create_if_missing = false;
  Progress progress("kdnctl migrate: " + dir + ": copying chunks");
  options.migrate_progress = [&progress](uint64_t done, uint64_t total) {
    progress.Update(done, total);
  };
  auto store = kdn::Store::Open(dir, options);
  progress.Finish();
  if (!store.ok()) {
    std::fprintf(stderr, "kdnctl migrate: %s: %s\n", dir.c_str(),
                 store.status().ToString().c_str());
    return kExitBadInput;
  }
  for (const std::string& w : (*store)->OpenWarnings()) std::printf("%s\n", w.c_str());
  std::printf("%s: current\n", dir.c_str());
  return kExitOk;
}

}  // namespace kdnctl
