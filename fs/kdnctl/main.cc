// kdnctl: the offline tool. `kdnctl CMD [ARGS]`; `kdnctl --help` lists the commands.
#include <cstdio>
#include <cstring>
#include <string_view>

#include "fs/kdnctl/commands.h"

namespace kdnctl {
namespace {

constexpr Command kCommands[] = {
    {"synth", "write a deterministic synthetic .kv cache (for sizes and speeds)", RunSynth},
    {"inspect", "print a .kv file's header, layer table and compression", RunInspect},
    {"verify", "check every checksum and structure of a .kv file", RunVerify},
    {"convert", "re-encode a .kv file with another codec", RunConvert},
    {"export", "write one decoded K or V tensor as raw little-endian bytes", RunExport},
    {"fsck", "check a store directory: database, chunk files, references, every chunk's bytes",
     RunFsck},
    {"migrate", "migrate a store to the current version in place (v1 segment files)", RunMigrate},
    {"sync", "wait until a mount's changes are durable and uploaded to its origin", RunSync},
    {"origin-gc", "delete an origin's chunk objects that no name points at (after a grace)",
     RunOriginGc},
};

const Command* Find(std::string_view name) {
  for (const Command& c : kCommands) {
    if (name == c.name) return &c;
  }
  return nullptr;
}

void PrintUsage(std::FILE* out) {
  std::fprintf(out,
               "Usage: kdnctl COMMAND [ARGS...]\n"
               "The offline tool of KDN (Knowledge Delivery Network) for .kv KV-cache files.\n\n"
               "Commands:\n");
  for (const Command& c : kCommands) std::fprintf(out, "  %-10s %s\n", c.name, c.summary);
  std::fprintf(out,
               "\n'kdnctl help COMMAND' or 'kdnctl COMMAND --help' describes a command.\n"
               "Exit status: 0 ok, 1 bad input file or failed verification, 2 usage error.\n");
}

int RunHelp(const Command& c) {
  char name[32];
  std::snprintf(name, sizeof name, "%s", c.name);
  char help[] = "--help";
  char* argv[] = {name, help, nullptr};
  return c.run(2, argv);
}

}  // namespace
}  // namespace kdnctl

int main(int argc, char** argv) {
  using namespace kdnctl;
  if (argc < 2) {
    PrintUsage(stderr);
    return kExitUsage;
  }
  const std::string_view first = argv[1];
  if (first == "--help" || first == "-h") {
    PrintUsage(stdout);
    return kExitOk;
  }
  if (first == "--version") {
    std::printf("kdnctl %s\n", KDN_VERSION);
    return kExitOk;
  }
  if (first == "help") {
    if (argc < 3) {
      PrintUsage(stdout);
      return kExitOk;
    }
    const Command* c = Find(argv[2]);
    if (c == nullptr) {
      std::fprintf(stderr, "kdnctl: unknown command '%s' (see 'kdnctl --help')\n", argv[2]);
      return kExitUsage;
    }
    return RunHelp(*c);
  }
  const Command* c = Find(first);
  if (c == nullptr) {
    std::fprintf(stderr, "kdnctl: unknown command '%s' (see 'kdnctl --help')\n", argv[1]);
    return kExitUsage;
  }
  return c->run(argc - 1, argv + 1);
}
