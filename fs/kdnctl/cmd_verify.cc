// kdnctl verify: every checksum and structure of a .kv file.
#include <cstdio>
#include <string>

#include "fs/kdnctl/args.h"
#include "fs/kdnctl/commands.h"
#include "kdn/format.h"

namespace kdnctl {

namespace {

constexpr char kUsage[] =
    "Usage: kdnctl verify FILE\n"
    "Checks a .kv file: the header (checksum, every field, the model fingerprint, the prefix\n"
    "hashes, the block table), then every block (its xxh3 checksum, its zstd stage decoded,\n"
    "its padding). Prints 'ok' and exits 0 when the file is sound; otherwise prints one line\n"
    "naming what is wrong and where (e.g. 'layer 3 V block: checksum mismatch') and exits 1.\n";

}  // namespace

int RunVerify(int argc, char** argv) {
  constexpr const char* kCmd = "verify";
  auto args = ParseArgs(argc, argv, {});
  if (!args.ok()) return UsageError(kCmd, args.status().message());
  if (args->help) {
    std::fputs(kUsage, stdout);
    return kExitOk;
  }
  if (args->positional.size() != 1) return UsageError(kCmd, "expected one FILE");
  const std::string& path = args->positional[0];
  auto source = kdn::OpenFileSource(path);
  if (!source.ok()) return Fail(kCmd, kExitBadInput, WithPath(path, source.status()));
  // The very check the store runs before it publishes a `.kv` file (kdnfs refuses what this does).
  if (auto verified = kdn::VerifyKv(**source); !verified.ok()) {
    return Fail(kCmd, kExitBadInput, WithPath(path, verified.status()));
  }
  std::printf("ok\n");
  return kExitOk;
}

}  // namespace kdnctl
