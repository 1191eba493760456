// kdn-engine eval: the quality and time-to-first-token tables of eval.h.
#include <cstdio>
#include <filesystem>
#include <system_error>

#include "kdn-engine/commands.h"
#include "kdn-engine/eval.h"
#include "kdn-engine/kernels.h"
#include "kdn-engine/kv_io.h"

namespace kdn::engine {

namespace {

constexpr const char* kHelp =
    "usage: kdn-engine eval (--model PATH | --synthetic-shape SHAPE) --text FILE [--text FILE "
    "...]\n"
    "                       [--query FILE | --continuation N] [--doc-tokens N] [--codecs LIST]\n"
    "                       [--ratios LIST] [--blend-codec C] [--runs N] [--work-dir DIR]\n"
    "                       [--format table|lines|json] [--json] [--prefix NAME]\n"
    "Compares reuse against a full prefill of the documents followed by the query: per codec\n"
    "(the documents cached together) and per blend ratio (each document cached on its own,\n"
    "placed after the others), greedy-token agreement and mean KL of the next-token\n"
    "distributions over the query (teacher-forced), and time to first token.\n"
    "  --text FILE        a document (repeatable)\n"
    "  --query FILE       the continuation (default: the last N tokens of the last document)\n"
    "  --continuation N   N for the default query (default 96, at most half the document)\n"
    "  --doc-tokens N     make every document exactly N tokens (its text repeated or cut)\n"
    "  --codecs LIST      default raw,lossless,q8,q4,q2 (also tc:q=1..8)\n"
    "  --ratios LIST      default 0,0.05,0.15,0.3,1\n"
    "  --blend-codec C    codec of the separately cached documents (default raw)\n"
    "  --runs N           timing repetitions, median reported (default 3)\n"
    "  --work-dir DIR     where the .kv files go (default: a temporary directory, removed)\n"
    "  --format F         table (default), lines (`name: value`, for tests/bench) or json\n"
    "  --json             the same as --format json\n"
    "  --prefix NAME      prefix of every name in lines format\n"
    "With --synthetic-shape only timings are reported: quality needs real weights.\n";

// A temporary directory removed with its contents, unless the user named the directory.
class WorkDir {
 public:
  static Result<WorkDir> Make(const std::string& given) {
    WorkDir w;
    if (!given.empty()) {
      std::error_code ec;
      std::filesystem::create_directories(given, ec);
      if (ec) return Status::IOError("--work-dir " + given + ": " + ec.message());
      w.path_ = given;
      return w;
    }
    const char* tmp = std::getenv("TMPDIR");
    std::string tmpl = std::string(tmp && *tmp ? tmp : "/tmp") + "/kdn-eval.XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) return Status::FromErrno("mkdtemp " + tmpl, errno);
    w.path_ = tmpl;
    w.owned_ = true;
    return w;
  }
  WorkDir() = default;
  WorkDir(WorkDir&& o) noexcept : path_(std::move(o.path_)), owned_(o.owned_) { o.owned_ = false; }
  ~WorkDir() {
    if (owned_) {
      std::error_code ec;
      std::filesystem::remove_all(path_, ec);
    }
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  bool owned_ = false;
};

Status Run(const CliArgs& args) {
  if (!args.positional().empty()) return Status::InvalidArgument("unexpected argument");
  KDN_ASSIGN_OR_RETURN(const RuntimeOptions options, ModelOptions(args));
  std::vector<std::string> texts;
  for (const std::string& path : args.All("text")) {
    KDN_ASSIGN_OR_RETURN(std::string text, ReadTextFile(path));
    texts.push_back(std::move(text));
  }
  std::string query;
  if (args.Has("query")) {
    KDN_ASSIGN_OR_RETURN(query, ReadTextFile(args.Get("query")));
    if (query.empty()) return Status::InvalidArgument("--query file is empty");
  }
  KDN_ASSIGN_OR_RETURN(const uint32_t continuation, args.GetU32("continuation", 96));
  KDN_ASSIGN_OR_RETURN(const uint32_t doc_tokens, args.GetU32("doc-tokens", 0));
  KDN_ASSIGN_OR_RETURN(const EvalInput input,
                       MakeEvalInput(texts, query, continuation, doc_tokens));

  EvalOptions eo;
  if (args.Has("codecs")) eo.codecs = SplitList(args.Get("codecs"));
  if (args.Has("ratios")) {
    eo.ratios.clear();
    for (const std::string& r : SplitList(args.Get("ratios"))) {
      KDN_ASSIGN_OR_RETURN(const float v, ParseFloat(r, "--ratios"));
      if (v < 0.0f || v > 1.0f) return Status::InvalidArgument("--ratios: each must be 0..1");
      eo.ratios.push_back(v);
    }
  }
  eo.blend_codec = args.Get("blend-codec", "raw");
  KDN_ASSIGN_OR_RETURN(eo.runs, args.GetU32("runs", 3));
  std::string format = args.Get("format", "table");
  if (args.Has("json")) format = "json";
  if (format != "table" && format != "lines" && format != "json") {
    return Status::InvalidArgument("--format must be table, lines or json");
  }
  KDN_ASSIGN_OR_RETURN(auto rt, MakeRuntime(options));
  eo.quality = !rt->synthetic;
  KDN_ASSIGN_OR_RETURN(WorkDir dir, WorkDir::Make(args.Get("work-dir")));
  eo.work_dir = dir.path();
  KDN_ASSIGN_OR_RETURN(auto ctx, KdnContext::Create());
  std::fprintf(stderr, "eval: %s, %zu document(s), %u threads, kernels %s\n",
               rt->model->name().c_str(), input.documents.size(), rt->pool->size(),
               std::string(IsaName(ActiveIsa())).c_str());
  KDN_ASSIGN_OR_RETURN(const EvalReport report, Evaluate(*rt, *ctx, input, eo));
  if (format == "table") {
    PrintTable(report, stdout);
  } else if (format == "json") {
    PrintJson(report, stdout);
  } else {
    PrintLines(report, args.Get("prefix"), stdout);
  }
  return Status::OK();
}

}  // namespace

int EvalCommand(const std::vector<std::string>& argv) {
  std::set<std::string> opts = kModelOptions;
  opts.insert({"text", "query", "continuation", "doc-tokens", "codecs", "ratios", "blend-codec",
               "runs", "work-dir", "format", "prefix"});
  auto args = CliArgs::Parse(argv, opts, {"help", "json"});
  if (!args.ok()) return Fail("eval", args.status());
  if (args->Has("help")) {
    std::printf("%s%s", kHelp, kModelHelp);
    return 0;
  }
  const Status s = Run(*args);
  return s.ok() ? 0 : Fail("eval", s);
}

}  // namespace kdn::engine
