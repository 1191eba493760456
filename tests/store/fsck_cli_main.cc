// A stand-in for kdnctl's main, so that the fsck subcommand (fs/kdnctl/cmd_fsck.cc) is built and
// tested with the store before kdnctl itself wires it in: `kdnctl_fsck fsck ARGS...`.
#include <cstdio>
#include <cstring>

namespace kdnctl {
int RunFsck(int argc, char** argv);
}  // namespace kdnctl

int main(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "fsck") != 0) {
    std::fprintf(stderr, "usage: kdnctl_fsck fsck [ARGS...]\n");
    return 2;
  }
  return kdnctl::RunFsck(argc - 1, argv + 1);
}
