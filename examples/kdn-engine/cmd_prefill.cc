// kdn-engine prefill: a document's KV cache, computed once and saved through libkdn.
#include <chrono>
#include <cstdio>

#include "kdn-engine/commands.h"
#include "kdn-engine/kv_io.h"
#include "kdn-engine/session.h"
#include "kdn-engine/tokenizer.h"

namespace kdn::engine {

namespace {

constexpr const char* kHelp =
    "usage: kdn-engine prefill (--model PATH | --synthetic-shape SHAPE) --text FILE --out PATH.kv\n"
    "                          [--codec C] [--position P] [--fsync]\n"
    "Prefills BOS + the bytes of FILE and saves the KV cache of every layer as a .kv file.\n"
    "  --text FILE     the document\n"
    "  --out PATH.kv   where to save it (written atomically: temporary file, then rename)\n"
    "  --codec C       raw (default), lossless, q8, q4, q2; options +zstd, :gN (group size)\n"
    "  --position P    position of the first token (default 0): a cache computed where it will\n"
    "                  be used needs no re-rotation\n"
    "  --fsync         fsync the file before returning\n";

double MsSince(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count();
}

Status Run(const CliArgs& args) {
  if (!args.Has("text") || !args.Has("out")) {
    return Status::InvalidArgument("--text and --out are required (see --help)");
  }
  if (!args.positional().empty()) return Status::InvalidArgument("unexpected argument");
  KDN_ASSIGN_OR_RETURN(const RuntimeOptions options, ModelOptions(args));
  KDN_ASSIGN_OR_RETURN(const uint32_t position, args.GetU32("position", 0));
  KDN_ASSIGN_OR_RETURN(const std::string text, ReadTextFile(args.Get("text")));
  if (text.empty()) return Status::InvalidArgument(args.Get("text") + " is empty");
  KDN_ASSIGN_OR_RETURN(auto rt, MakeRuntime(options));
  KDN_ASSIGN_OR_RETURN(auto ctx, KdnContext::Create());

  const std::vector<uint32_t> tokens = Tokenize(text, /*bos=*/true);
  Session session(*rt->transformer, static_cast<uint32_t>(tokens.size()));
  session.Reset(position);
  const auto start = std::chrono::steady_clock::now();
  KDN_RETURN_IF_ERROR(session.Prefill(tokens, LogitsFor::kNone, nullptr));
  const double prefill_ms = MsSince(start);
  const auto save_start = std::chrono::steady_clock::now();
  const std::string out = args.Get("out"), codec = args.Get("codec", "raw");
  KDN_RETURN_IF_ERROR(
      SaveKv(*ctx, *rt->model, session.cache(), tokens, position, codec, out, args.Has("fsync")));
  std::fprintf(
      stderr, "timing: tokens=%zu position=%u prefill_ms=%.3f save_ms=%.3f codec=%s out=%s\n",
      tokens.size(), position, prefill_ms, MsSince(save_start), codec.c_str(), out.c_str());
  return Status::OK();
}

}  // namespace

int PrefillCommand(const std::vector<std::string>& argv) {
  std::set<std::string> opts = kModelOptions;
  opts.insert({"text", "out", "codec", "position"});
  auto args = CliArgs::Parse(argv, opts, {"fsync", "help"});
  if (!args.ok()) return Fail("prefill", args.status());
  if (args->Has("help")) {
    std::printf("%s%s", kHelp, kModelHelp);
    return 0;
  }
  const Status s = Run(*args);
  return s.ok() ? 0 : Fail("prefill", s);
}

}  // namespace kdn::engine
