// kdn-engine generate: cached contexts loaded (and blended), the prompt prefilled, greedy tokens.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>

#include "kdn-engine/blend.h"
#include "kdn-engine/commands.h"
#include "kdn-engine/contexts.h"
#include "kdn-engine/kv_io.h"
#include "kdn-engine/session.h"
#include "kdn-engine/tokenizer.h"

namespace kdn::engine {

namespace {

constexpr const char* kHelp =
    "usage: kdn-engine generate (--model PATH | --synthetic-shape SHAPE) [--context PATH.kv ...]\n"
    "                           [--prompt TEXT | --prompt-file FILE] [--max-new N]\n"
    "                           [--blend-ratio R] [--position P] [--logits-out FILE]\n"
    "Loads the contexts one after the other (each re-positioned where it lands), recomputes the\n"
    "ratio R of their most deviating tokens when R > 0 (CacheBlend-style, selected at layer 1),\n"
    "prefills the prompt after them (BOS first only when there is no context) and generates N\n"
    "tokens greedily (stopping early at BOS or EOS). stdout: the generated text only. stderr: a\n"
    "`timing:` line (load, recompute, prefill, time to first token, decode).\n"
    "  --context PATH.kv  a cached document (repeatable; order matters)\n"
    "  --prompt TEXT      what follows the contexts (empty: continue the last context)\n"
    "  --max-new N        tokens to generate (default 64)\n"
    "  --blend-ratio R    share of context tokens to recompute, 0..1 (default 0)\n"
    "  --position P       position of the sequence's first token (default 0)\n"
    "  --logits-out FILE  write the logits behind every generated token (float32, [N][vocab])\n";

using Clock = std::chrono::steady_clock;

double Ms(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

Status Run(const CliArgs& args) {
  if (!args.positional().empty()) return Status::InvalidArgument("unexpected argument");
  KDN_ASSIGN_OR_RETURN(const RuntimeOptions options, ModelOptions(args));
  KDN_ASSIGN_OR_RETURN(const uint32_t max_new, args.GetU32("max-new", 64));
  KDN_ASSIGN_OR_RETURN(const float ratio, args.GetFloat("blend-ratio", 0.0f));
  KDN_ASSIGN_OR_RETURN(const uint32_t position, args.GetU32("position", 0));
  if (ratio < 0.0f || ratio > 1.0f) return Status::InvalidArgument("--blend-ratio must be 0..1");
  std::string prompt = args.Get("prompt");
  if (args.Has("prompt-file")) {
    if (args.Has("prompt")) return Status::InvalidArgument("--prompt or --prompt-file, not both");
    KDN_ASSIGN_OR_RETURN(prompt, ReadTextFile(args.Get("prompt-file")));
  }
  const std::vector<std::string> contexts = args.All("context");
  if (ratio > 0.0f && contexts.empty()) {
    return Status::InvalidArgument("--blend-ratio needs --context");
  }
  std::unique_ptr<std::ofstream> logits_out;
  if (args.Has("logits-out")) {
    logits_out = std::make_unique<std::ofstream>(args.Get("logits-out"), std::ios::binary);
    if (!*logits_out) return Status::IOError("cannot write " + args.Get("logits-out"));
  }

  KDN_ASSIGN_OR_RETURN(auto rt, MakeRuntime(options));
  KDN_ASSIGN_OR_RETURN(auto ctx, KdnContext::Create());
  const ModelConfig& config = rt->model->config();
  if (position >= config.seq_len) return Status::InvalidArgument("--position beyond seq_len");
  // The KV pool is allocated before the clock starts, as an engine does at start-up.
  Session session(*rt->transformer, config.seq_len - position);
  session.Reset(position);

  const auto start = Clock::now();
  std::unique_ptr<ContextLoad> load;
  BlendStats blend;
  double blend_ms = 0, blend_wait_ms = 0;
  if (!contexts.empty()) {
    KDN_ASSIGN_OR_RETURN(load, ContextLoad::Start(*ctx, session, contexts));
  }
  const auto loads_issued = Clock::now();
  if (ratio > 0.0f) {
    const double waited = load->wait_ms();
    KDN_RETURN_IF_ERROR(Blend(*ctx, session, *load, ratio, &blend));
    blend_ms = Ms(loads_issued, Clock::now());
    blend_wait_ms = load->wait_ms() - waited;
  }
  std::vector<uint32_t> prompt_tokens = Tokenize(prompt, /*bos=*/contexts.empty());
  if (prompt_tokens.empty()) {
    if (!load) return Status::InvalidArgument("nothing to start from: give --prompt or --context");
    // The next-token distribution after the contexts needs the last token's hidden state, which
    // a KV cache does not hold: recompute that one token.
    KDN_RETURN_IF_ERROR(load->WaitAll());
    prompt_tokens.push_back(session.tokens().back());
    KDN_RETURN_IF_ERROR(session.Truncate(1));
  }
  std::vector<float> logits;
  const auto prefill_start = Clock::now();
  const double waited_before_prefill = load ? load->wait_ms() : 0;
  KDN_RETURN_IF_ERROR(session.Prefill(prompt_tokens, LogitsFor::kLast, &logits,
                                      load ? load->Hook() : Session::LayerHook{}));
  const auto first_token = Clock::now();
  const double prefill_wait_ms = load ? load->wait_ms() - waited_before_prefill : 0;

  uint32_t generated = 0;
  std::string stop = "max-new";
  for (; generated < max_new; ++generated) {
    const uint32_t token = Argmax(logits);
    if (logits_out) {
      logits_out->write(reinterpret_cast<const char*>(logits.data()),
                        static_cast<std::streamsize>(logits.size() * sizeof(float)));
    }
    if (token == kBos || token == kEos) {
      stop = token == kBos ? "bos" : "eos";
      break;
    }
    const std::string piece = DetokenizeOne(token);
    std::fwrite(piece.data(), 1, piece.size(), stdout);
    std::fflush(stdout);
    if (generated + 1 == max_new) continue;
    if (session.position_base() + session.size() >= config.seq_len) {
      stop = "seq_len";
      ++generated;
      break;
    }
    const uint32_t one[1] = {token};
    KDN_RETURN_IF_ERROR(session.Prefill(one, LogitsFor::kLast, &logits));
  }
  const auto end = Clock::now();
  if (logits_out && !logits_out->flush()) return Status::IOError("writing --logits-out");

  const double load_ms = Ms(start, loads_issued) + (load ? load->wait_ms() : 0);
  // On a terminal the text has no newline of its own: start the timing line below it.
  if (generated > 0 && isatty(STDOUT_FILENO) && isatty(STDERR_FILENO)) std::fputc('\n', stderr);
  std::fprintf(stderr,
               "timing: contexts=%zu context_tokens=%u repositioned=%zu load_ms=%.3f "
               "recomputed_tokens=%u recompute_ms=%.3f prompt_tokens=%zu prefill_ms=%.3f "
               "ttft_ms=%.3f generated=%u decode_ms=%.3f stop=%s\n",
               contexts.size(), load ? load->n_tokens() : 0, load ? load->n_moved() : 0, load_ms,
               blend.recomputed_tokens, blend_ms - blend_wait_ms, prompt_tokens.size(),
               Ms(prefill_start, first_token) - prefill_wait_ms, Ms(start, first_token), generated,
               Ms(first_token, end), stop.c_str());
  return Status::OK();
}

}  // namespace

int GenerateCommand(const std::vector<std::string>& argv) {
  std::set<std::string> opts = kModelOptions;
  opts.insert(
      {"context", "prompt", "prompt-file", "max-new", "blend-ratio", "position", "logits-out"});
  auto args = CliArgs::Parse(argv, opts, {"help"});
  if (!args.ok()) return Fail("generate", args.status());
  if (args->Has("help")) {
    std::printf("%s%s", kHelp, kModelHelp);
    return 0;
  }
  const Status s = Run(*args);
  return s.ok() ? 0 : Fail("generate", s);
}

}  // namespace kdn::engine
