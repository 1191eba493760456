// kdn-engine: a small llama2.c inference engine that learns documents once (their KV caches saved
// as `.kv` files through libkdn) and answers later prompts by loading and blending those caches.
#include <cstdio>
#include <string>
#include <vector>

#include "kdn-engine/commands.h"
#include "kdn-engine/runtime.h"

namespace kdn::engine {

Result<RuntimeOptions> ModelOptions(const CliArgs& args) {
  RuntimeOptions o;
  o.model_path = args.Get("model");
  o.synthetic_shape = args.Get("synthetic-shape");
  KDN_ASSIGN_OR_RETURN(const uint32_t seed, args.GetU32("seed", 1));
  KDN_ASSIGN_OR_RETURN(o.threads, args.GetU32("threads", 0));
  o.seed = seed;
  return o;
}

int Fail(const std::string& command, const Status& status) {
  std::fprintf(stderr, "kdn-engine %s: %s\n", command.c_str(), status.ToString().c_str());
  return status.code() == Code::kInvalidArgument ? 2 : 1;
}

}  // namespace kdn::engine

namespace {

constexpr const char* kUsage =
    "usage: kdn-engine COMMAND [options]    (kdn-engine COMMAND --help for its options)\n"
    "  prefill   compute a document's KV cache once and save it as a .kv file\n"
    "  generate  answer a prompt after cached contexts (loaded, placed, optionally blended)\n"
    "  eval      quality and time to first token of reuse, per codec and blend ratio\n"
    "  info      what a .kv file holds (tokens, codec, sizes)\n"
    "Text is fed as bytes (token = byte + 3) after BOS; generated ids 3..258 print as bytes,\n"
    "others as <id>. Generated text goes to stdout, timings to stderr.\n";

}  // namespace

int main(int argc, char** argv) {
  using namespace kdn::engine;
  if (argc < 2) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  const std::string command = argv[1];
  const std::vector<std::string> args(argv + 2, argv + argc);
  if (command == "--help" || command == "-h" || command == "help") {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (command == "prefill") return PrefillCommand(args);
  if (command == "generate") return GenerateCommand(args);
  if (command == "eval") return EvalCommand(args);
  if (command == "info") return InfoCommand(args);
  std::fprintf(stderr, "kdn-engine: unknown command '%s'\n%s", command.c_str(), kUsage);
  return 2;
}
