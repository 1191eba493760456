#include "kdn-engine/eval.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <functional>

#include "kdn-engine/blend.h"
#include "kdn-engine/contexts.h"
#include "kdn-engine/kernels.h"
#include "kdn-engine/session.h"
#include "kdn-engine/tokenizer.h"
#include "kdn/format.h"

namespace kdn::engine {

namespace {

using Clock = std::chrono::steady_clock;

double Ms(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

// Median wall time of `runs` calls of fn, after one call that warms caches and page tables. A
// first call of more than a second is counted as a run instead: what it warms is noise there.
Result<double> MedianMs(unsigned runs, const std::function<Status()>& fn) {
  runs = std::max(1u, runs);
  std::vector<double> times;
  const auto warm = Clock::now();
  KDN_RETURN_IF_ERROR(fn());
  if (const double ms = Ms(warm, Clock::now()); ms > 1000.0) times.push_back(ms);
  while (times.size() < runs) {
    const auto start = Clock::now();
    KDN_RETURN_IF_ERROR(fn());
    times.push_back(Ms(start, Clock::now()));
  }
  std::sort(times.begin(), times.end());
  const size_t m = times.size() / 2;
  return times.size() % 2 ? times[m] : (times[m - 1] + times[m]) / 2;
}

std::vector<double> LogSoftmax(const float* logits, size_t n) {
  double max = logits[0];
  for (size_t i = 1; i < n; ++i) max = std::max(max, double{logits[i]});
  double sum = 0;
  for (size_t i = 0; i < n; ++i) sum += std::exp(double{logits[i]} - max);
  const double lse = max + std::log(sum);
  std::vector<double> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = double{logits[i]} - lse;
  return out;
}

// Encoded bytes of every block, from the file's header (format.h: metadata only, no KV).
Result<uint64_t> EncodedBytes(const std::string& path) {
  KDN_ASSIGN_OR_RETURN(auto reader, KvReader::Open(path));
  return reader->header().encoded_bytes();
}

std::string Fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

// "q4+zstd" -> "q4_zstd": a name usable in `name: value` lines.
std::string LineName(const std::string& s) {
  std::string out;
  for (char c : s) out += (std::isalnum(static_cast<unsigned char>(c)) || c == '.') ? c : '_';
  return out;
}

}  // namespace

Result<EvalInput> MakeEvalInput(const std::vector<std::string>& texts,
                                const std::string& query_text, uint32_t continuation,
                                uint32_t doc_tokens) {
  if (texts.empty()) return Status::InvalidArgument("eval: at least one --text is required");
  EvalInput in;
  for (const std::string& text : texts) {
    if (text.empty()) return Status::InvalidArgument("eval: a document is empty");
    std::string bytes = text;
    if (doc_tokens > 0) {
      if (doc_tokens < 2) return Status::InvalidArgument("eval: --doc-tokens must be at least 2");
      bytes.clear();
      while (bytes.size() < doc_tokens - 1) bytes += text;
      bytes.resize(doc_tokens - 1);
    }
    in.documents.push_back(Tokenize(bytes, /*bos=*/true));
  }
  if (!query_text.empty()) {
    in.query = Tokenize(query_text, /*bos=*/false);
  } else {
    std::vector<uint32_t>& last = in.documents.back();
    const uint32_t n = std::min<uint32_t>(continuation, static_cast<uint32_t>(last.size() / 2));
    if (n == 0) return Status::InvalidArgument("eval: the last document is too short to split");
    in.query.assign(last.end() - n, last.end());
    last.resize(last.size() - n);
  }
  return in;
}

Quality CompareLogits(const std::vector<float>& reference, const std::vector<float>& test,
                      size_t vocab) {
  Quality q;
  const size_t rows = std::min(reference.size(), test.size()) / vocab;
  if (rows == 0) return q;
  size_t agree = 0;
  double kl_sum = 0;
  for (size_t r = 0; r < rows; ++r) {
    const float* a = &reference[r * vocab];
    const float* b = &test[r * vocab];
    agree += Argmax({a, vocab}) == Argmax({b, vocab});
    const std::vector<double> la = LogSoftmax(a, vocab), lb = LogSoftmax(b, vocab);
    double kl = 0;
    for (size_t i = 0; i < vocab; ++i) kl += std::exp(la[i]) * (la[i] - lb[i]);
    kl = std::max(kl, 0.0);  // rounding can make an exact match read as -1e-17
    kl_sum += kl;
    q.max_kl = std::max(q.max_kl, kl);
  }
  q.agreement = static_cast<double>(agree) / rows;
  q.mean_kl = kl_sum / rows;
  return q;
}

Result<EvalReport> Evaluate(Runtime& rt, KdnContext& ctx, const EvalInput& input,
                            const EvalOptions& options) {
  if (input.documents.empty() || input.query.empty()) {
    return Status::InvalidArgument("eval: needs documents and a query");
  }
  if (options.work_dir.empty()) return Status::InvalidArgument("eval: no work directory");
  Transformer& tf = *rt.transformer;
  const Model& model = *rt.model;
  const size_t vocab = model.config().vocab_size;

  EvalReport report;
  report.model = model.name();
  report.shape = model.config().Describe();
  report.quality = options.quality;
  report.runs = std::max(1u, options.runs);
  report.n_documents = input.documents.size();
  std::vector<uint32_t> context, all;
  for (const auto& d : input.documents) context.insert(context.end(), d.begin(), d.end());
  all = context;
  all.insert(all.end(), input.query.begin(), input.query.end());
  report.context_tokens = static_cast<uint32_t>(context.size());
  report.query_tokens = static_cast<uint32_t>(input.query.size());
  const size_t q_rows = input.query.size();

  // One KV pool for every run, as a serving engine keeps one.
  Session s(tf, static_cast<uint32_t>(all.size()));
  std::vector<float> logits, reference;

  // The reference: full prefill, logits at the query's positions.
  if (options.quality) {
    s.Reset();
    KDN_RETURN_IF_ERROR(s.Prefill(all, LogitsFor::kAll, &logits));
    reference.assign(logits.end() - q_rows * vocab, logits.end());
  }
  KDN_ASSIGN_OR_RETURN(report.full_ttft_ms, MedianMs(report.runs, [&] {
                         s.Reset();
                         return s.Prefill(all, LogitsFor::kLast, &logits);
                       }));

  // The caches: all documents together (one per codec), and each document on its own.
  const std::string dir = options.work_dir + "/";
  std::vector<std::string> codec_paths, doc_paths;
  s.Reset();
  KDN_RETURN_IF_ERROR(s.Prefill(context, LogitsFor::kNone, nullptr));
  for (size_t i = 0; i < options.codecs.size(); ++i) {
    codec_paths.push_back(dir + "context-" + LineName(options.codecs[i]) + ".kv");
    KDN_RETURN_IF_ERROR(
        SaveKv(ctx, model, s.cache(), context, 0, options.codecs[i], codec_paths.back()));
  }
  for (size_t i = 0; i < input.documents.size(); ++i) {
    s.Reset();
    KDN_RETURN_IF_ERROR(s.Prefill(input.documents[i], LogitsFor::kNone, nullptr));
    doc_paths.push_back(dir + "document-" + std::to_string(i) + ".kv");
    KDN_RETURN_IF_ERROR(SaveKv(ctx, model, s.cache(), input.documents[i], 0, options.blend_codec,
                               doc_paths.back()));
  }

  // Loads `paths` into the session, blends when ratio > 0, prefills the query.
  auto reuse = [&](const std::vector<std::string>& paths, float ratio, LogitsFor want,
                   BlendStats* stats) -> Status {
    s.Reset();
    KDN_ASSIGN_OR_RETURN(auto load, ContextLoad::Start(ctx, s, paths));
    if (ratio > 0) KDN_RETURN_IF_ERROR(Blend(ctx, s, *load, ratio, stats));
    return s.Prefill(input.query, want, &logits, load->Hook());
  };

  for (size_t i = 0; i < options.codecs.size(); ++i) {
    CodecResult r;
    r.codec = options.codecs[i];
    const std::vector<std::string> paths = {codec_paths[i]};
    if (options.quality) {
      KDN_RETURN_IF_ERROR(reuse(paths, 0, LogitsFor::kAll, nullptr));
      r.quality = CompareLogits(reference, logits, vocab);
    }
    KDN_ASSIGN_OR_RETURN(r.ttft_ms, MedianMs(report.runs, [&] {
                           return reuse(paths, 0, LogitsFor::kLast, nullptr);
                         }));
    {
      KDN_ASSIGN_OR_RETURN(auto cache, KvCache::Open(ctx, codec_paths[i], model));
      r.file_bytes = cache->info().file_bytes;
      r.decoded_bytes = cache->info().decoded_bytes;
    }
    KDN_ASSIGN_OR_RETURN(r.encoded_bytes, EncodedBytes(codec_paths[i]));
    const double values =
        static_cast<double>(context.size()) * model.config().kv_dim() * 2 * model.config().n_layers;
    r.bits_per_value = 8.0 * static_cast<double>(r.encoded_bytes) / values;
    report.codecs.push_back(r);
  }

  for (const float ratio : options.ratios) {
    BlendResult r;
    r.ratio = ratio;
    BlendStats stats;
    if (options.quality) {
      KDN_RETURN_IF_ERROR(reuse(doc_paths, ratio, LogitsFor::kAll, &stats));
      r.quality = CompareLogits(reference, logits, vocab);
    }
    KDN_ASSIGN_OR_RETURN(r.ttft_ms, MedianMs(report.runs, [&] {
                           return reuse(doc_paths, ratio, LogitsFor::kLast, &stats);
                         }));
    r.recomputed_tokens = ratio > 0 ? stats.recomputed_tokens : 0;
    report.blends.push_back(r);
  }
  return report;
}

void PrintTable(const EvalReport& r, std::FILE* out) {
  auto q = [&](double v, int digits, bool percent) {
    if (!r.quality) return std::string("-");
    return percent ? Fixed(100 * v, digits) + "%" : Fixed(v, digits);
  };
  std::fprintf(out, "model %s (%s)%s, kernels %s\n", r.model.c_str(), r.shape.c_str(),
               r.quality ? "" : " [synthetic weights: timings only]",
               std::string(IsaName(ActiveIsa())).c_str());
  std::fprintf(out,
               "%zu document(s), %u context tokens, %u query tokens; full prefill time to first "
               "token %.3f ms (median of %u)\n\n",
               r.n_documents, r.context_tokens, r.query_tokens, r.full_ttft_ms, r.runs);
  std::fprintf(out, "%-12s %10s %12s %12s %11s %11s %10s %10s\n", "codec", "agreement", "mean_kl",
               "max_kl", "bits/value", "size_ratio", "ttft_ms", "ttft_gain");
  for (const CodecResult& c : r.codecs) {
    std::fprintf(out, "%-12s %10s %12s %12s %11.2f %10.2fx %10.3f %9.2fx\n", c.codec.c_str(),
                 q(c.quality.agreement, 2, true).c_str(), q(c.quality.mean_kl, 6, false).c_str(),
                 q(c.quality.max_kl, 6, false).c_str(), c.bits_per_value,
                 c.file_bytes ? double(c.decoded_bytes) / double(c.file_bytes) : 0.0, c.ttft_ms,
                 c.ttft_ms > 0 ? r.full_ttft_ms / c.ttft_ms : 0.0);
  }
  std::fprintf(out, "\n%-12s %10s %12s %12s %11s %10s %10s\n", "blend_ratio", "agreement",
               "mean_kl", "max_kl", "recomputed", "ttft_ms", "ttft_gain");
  for (const BlendResult& b : r.blends) {
    std::fprintf(out, "%-12.2f %10s %12s %12s %11u %10.3f %9.2fx\n", b.ratio,
                 q(b.quality.agreement, 2, true).c_str(), q(b.quality.mean_kl, 6, false).c_str(),
                 q(b.quality.max_kl, 6, false).c_str(), b.recomputed_tokens, b.ttft_ms,
                 b.ttft_ms > 0 ? r.full_ttft_ms / b.ttft_ms : 0.0);
  }
}

void PrintLines(const EvalReport& r, const std::string& prefix, std::FILE* out) {
  const std::string p = prefix.empty() ? "" : prefix + "_";
  auto line = [&](const std::string& name, const std::string& value) {
    std::fprintf(out, "%s%s: %s\n", p.c_str(), name.c_str(), value.c_str());
  };
  auto num = [](double v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.6g", v);
    return std::string(buf);
  };
  line("context_tokens", std::to_string(r.context_tokens));
  line("query_tokens", std::to_string(r.query_tokens));
  line("full_prefill_ttft_ms", num(r.full_ttft_ms));
  for (const CodecResult& c : r.codecs) {
    const std::string n = LineName(c.codec);
    if (r.quality) {
      line(n + "_agreement", num(c.quality.agreement));
      line(n + "_kl", num(c.quality.mean_kl));
    }
    line(n + "_bits_per_value", num(c.bits_per_value));
    line(n + "_size_ratio", num(c.file_bytes ? double(c.decoded_bytes) / c.file_bytes : 0));
    line(n + "_ttft_ms", num(c.ttft_ms));
    line(n + "_ttft_gain", num(c.ttft_ms > 0 ? r.full_ttft_ms / c.ttft_ms : 0));
    if (c.codec == "raw") line("ttft_load_vs_prefill", num(r.full_ttft_ms / c.ttft_ms));
  }
  for (const BlendResult& b : r.blends) {
    const std::string n = "blend_" + LineName(num(b.ratio));
    if (r.quality) {
      line(n + "_agreement", num(b.quality.agreement));
      line(n + "_kl", num(b.quality.mean_kl));
    }
    line(n + "_recomputed_tokens", std::to_string(b.recomputed_tokens));
    line(n + "_ttft_ms", num(b.ttft_ms));
    line(n + "_ttft_gain", num(b.ttft_ms > 0 ? r.full_ttft_ms / b.ttft_ms : 0));
  }
}

void PrintJson(const EvalReport& r, std::FILE* out) {
  auto num = [](double v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.6g", v);
    return std::string(buf);
  };
  auto str = [](const std::string& v) {
    std::string o = "\"";
    for (char c : v) {
      if (c == '"' || c == '\\') o += '\\';
      if (static_cast<unsigned char>(c) >= 0x20) o += c;
    }
    return o + "\"";
  };
  auto quality = [&](const Quality& q) {
    if (!r.quality) return std::string("\"agreement\": null, \"mean_kl\": null, \"max_kl\": null");
    return "\"agreement\": " + num(q.agreement) + ", \"mean_kl\": " + num(q.mean_kl) +
           ", \"max_kl\": " + num(q.max_kl);
  };
  std::fprintf(out, "{\"model\": %s, \"shape\": %s, \"quality\": %s, \"documents\": %zu, ",
               str(r.model).c_str(), str(r.shape).c_str(), r.quality ? "true" : "false",
               r.n_documents);
  std::fprintf(out, "\"context_tokens\": %u, \"query_tokens\": %u, \"full_prefill_ttft_ms\": %s,\n",
               r.context_tokens, r.query_tokens, num(r.full_ttft_ms).c_str());
  std::fprintf(out, " \"codecs\": [");
  for (size_t i = 0; i < r.codecs.size(); ++i) {
    const CodecResult& c = r.codecs[i];
    // Values: bits_per_value = encoded bits / values, so values = encoded bits / bits_per_value.
    const double values =
        c.bits_per_value > 0 ? 8.0 * static_cast<double>(c.encoded_bytes) / c.bits_per_value : 0;
    std::fprintf(out,
                 "%s\n  {\"codec\": %s, %s, \"bits_per_value\": %s, \"file_bits_per_value\": %s, "
                 "\"encoded_bytes\": %llu, \"file_bytes\": %llu, \"ttft_ms\": %s}",
                 i ? "," : "", str(c.codec).c_str(), quality(c.quality).c_str(),
                 num(c.bits_per_value).c_str(),
                 num(values > 0 ? 8.0 * static_cast<double>(c.file_bytes) / values : 0).c_str(),
                 static_cast<unsigned long long>(c.encoded_bytes),
                 static_cast<unsigned long long>(c.file_bytes), num(c.ttft_ms).c_str());
  }
  std::fprintf(out, "],\n \"blends\": [");
  for (size_t i = 0; i < r.blends.size(); ++i) {
    const BlendResult& b = r.blends[i];
    std::fprintf(out, "%s\n  {\"ratio\": %s, %s, \"recomputed_tokens\": %u, \"ttft_ms\": %s}",
                 i ? "," : "", num(b.ratio).c_str(), quality(b.quality).c_str(),
                 b.recomputed_tokens, num(b.ttft_ms).c_str());
  }
  std::fprintf(out, "]}\n");
}

}  // namespace kdn::engine
