// kdn-engine's commands. Each takes the arguments after its name and returns the process exit
// status; errors are printed on stderr. stdout carries only a command's result (the generated
// text for `generate`), so scripts can pipe and compare it.
#ifndef KDN_EXAMPLES_KDN_ENGINE_COMMANDS_H_
#define KDN_EXAMPLES_KDN_ENGINE_COMMANDS_H_

#include <string>
#include <vector>

#include "kdn-engine/cli_args.h"
#include "kdn-engine/runtime.h"

namespace kdn::engine {

int PrefillCommand(const std::vector<std::string>& args);
int GenerateCommand(const std::vector<std::string>& args);
int EvalCommand(const std::vector<std::string>& args);
int InfoCommand(const std::vector<std::string>& args);

// Options every model-running command shares.
inline const std::set<std::string> kModelOptions = {"model", "synthetic-shape", "seed", "threads"};
Result<RuntimeOptions> ModelOptions(const CliArgs& args);
// Prints "kdn-engine <command>: <status>" on stderr; returns 1 (2 for a usage error).
int Fail(const std::string& command, const Status& status);
constexpr const char* kModelHelp =
    "  --model PATH             llama2.c checkpoint (e.g. ../shared/models/stories260K.bin)\n"
    "  --synthetic-shape SHAPE  deterministic random weights instead: 'stories260K' or\n"
    "                           dim=N,layers=N,heads=N,kv_heads=N,hidden=N,vocab=N,seq=N\n"
    "                           (also written --model synthetic:SHAPE)\n"
    "  --seed N                 seed of the synthetic weights (default 1)\n"
    "  --threads N              worker threads (default: all cores)\n";

}  // namespace kdn::engine

#endif  // KDN_EXAMPLES_KDN_ENGINE_COMMANDS_H_
