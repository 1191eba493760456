// kdn-engine info: what a `.kv` file holds, read through libkdn (kdn_open + kdn_info).
#include <cstdio>
#include <iterator>
#include <memory>

#include "kdn-engine/commands.h"
#include "kdn-engine/kv_io.h"

namespace kdn::engine {

namespace {

constexpr const char* kHelp =
    "usage: kdn-engine info [--field NAME] PATH.kv ...\n"
    "Prints, per file, `name: value` lines: path, model, tokens, position, codec, file_bytes,\n"
    "decoded_bytes (the KV of every layer in the model's dtype). With --field, only\n"
    "that value, one line per file (for scripts).\n";

constexpr const char* kFields[] = {"path",  "model",      "tokens",
                                   "position", "codec", "file_bytes", "decoded_bytes"};

Status Run(const CliArgs& args) {
  if (args.positional().empty()) return Status::InvalidArgument("no .kv file given");
  const std::string field = args.Get("field");
  if (!field.empty()) {
    bool known = false;
    for (const char* f : kFields) known = known || field == f;
    if (!known) return Status::InvalidArgument("--field: unknown field '" + field + "'");
  }
  KDN_ASSIGN_OR_RETURN(auto ctx, KdnContext::Create());
  for (const std::string& path : args.positional()) {
    kdn_cache* raw = nullptr;
    KDN_RETURN_IF_ERROR(FromKdn(kdn_open(ctx->get(), path.c_str(), &raw), path));
    std::unique_ptr<kdn_cache, void (*)(kdn_cache*)> cache(raw, kdn_close);
    kdn_cache_info info{};
    KDN_RETURN_IF_ERROR(FromKdn(kdn_info(cache.get(), &info), path));
    const std::string values[] = {path,
                                  info.model.name,
                                  std::to_string(info.n_tokens),
                                  std::to_string(info.position_offset),
                                  info.codec,
                                  std::to_string(info.file_bytes),
                                  std::to_string(info.decoded_bytes)};
    for (size_t i = 0; i < std::size(kFields); ++i) {
      if (field.empty()) {
        std::printf("%s: %s\n", kFields[i], values[i].c_str());
      } else if (field == kFields[i]) {
        std::printf("%s\n", values[i].c_str());
      }
    }
  }
  return Status::OK();
}

}  // namespace

int InfoCommand(const std::vector<std::string>& argv) {
  auto args = CliArgs::Parse(argv, {"field"}, {"help"});
  if (!args.ok()) return Fail("info", args.status());
  if (args->Has("help")) {
    std::printf("%s", kHelp);
    return 0;
  }
  const Status s = Run(*args);
  return s.ok() ? 0 : Fail("info", s);
}

}  // namespace kdn::engine
