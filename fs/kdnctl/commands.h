// kdnctl: the offline tool for `.kv` files and for stores. Each subcommand lives in its
// own cmd_<name>.cc and is listed in the table in main.cc.
#ifndef KDN_FS_KDNCTL_COMMANDS_H_
#define KDN_FS_KDNCTL_COMMANDS_H_

namespace kdnctl {

// Exit codes of every subcommand.
inline constexpr int kExitOk = 0;
inline constexpr int kExitBadInput = 1;  // a bad input file, a failed verification, an I/O error
inline constexpr int kExitUsage = 2;     // bad arguments

struct Command {
  const char* name;
  const char* summary;                // one line, for `kdnctl --help`
  int (*run)(int argc, char** argv);  // argv[0] is the subcommand's name; `--help` prints usage
};

int RunSynth(int argc, char** argv);
int RunInspect(int argc, char** argv);
int RunVerify(int argc, char** argv);
int RunConvert(int argc, char** argv);
int RunExport(int argc, char** argv);
int RunFsck(int argc, char** argv);
int RunMigrate(int argc, char** argv);
int RunSync(int argc, char** argv);
int RunOriginGc(int argc, char** argv);

}  // namespace kdnctl

#endif  // KDN_FS_KDNCTL_COMMANDS_H_
