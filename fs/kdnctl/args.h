// Command-line parsing shared by the kdnctl subcommands: long options with a value
// (`--codec q4` or `--codec=q4`), flags (`--json`), a short alias (`-o`), positional arguments,
// and messages in one format: `kdnctl <cmd>: <message>` on stderr.
#ifndef KDN_FS_KDNCTL_ARGS_H_
#define KDN_FS_KDNCTL_ARGS_H_

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kdn/format.h"
#include "kdn/status.h"

namespace kdnctl {

struct OptionSpec {
  const char* name;  // "codec" for --codec
  char short_name;   // 'o' for -o, or 0
  bool takes_value;
};

struct Args {
  std::map<std::string, std::string> values;
  std::set<std::string> flags;
  std::vector<std::string> positional;
  bool help = false;

  bool Has(const std::string& name) const { return values.count(name) || flags.count(name); }
  std::optional<std::string> Get(const std::string& name) const;
};

// Parses argv[1..argc) (argv[0] is the subcommand). `--help`/`-h` sets help.
kdn::Result<Args> ParseArgs(int argc, char** argv, std::span<const OptionSpec> specs);

// Numbers with their option's name in the error.
kdn::Result<uint32_t> ParseU32(const std::string& text, std::string_view option);
kdn::Result<uint64_t> ParseU64(const std::string& text, std::string_view option);
kdn::Result<float> ParseFloat(const std::string& text, std::string_view option);

// --head-groups N|auto for a file of `model`: N as given (checked: 1 or a divisor of n_kv_heads),
// auto = kdn::DefaultHeadGroups, absent = `absent`.
kdn::Result<uint32_t> HeadGroupsOption(const Args& a, const kdn::ModelIdentity& model,
                                       uint32_t absent);

// "<path>: <message>", unless the message names the path already (errors from the OS do).
std::string WithPath(const std::string& path, const kdn::Status& st);

// Prints `kdnctl <cmd>: <message>` to stderr and returns `code`.
int Fail(std::string_view cmd, int code, std::string_view message);
// A usage error: the message, a pointer to --help, exit code kExitUsage.
int UsageError(std::string_view cmd, std::string_view message);

}  // namespace kdnctl

#endif  // KDN_FS_KDNCTL_ARGS_H_
