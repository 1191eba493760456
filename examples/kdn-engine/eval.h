// `kdn-engine eval`: what reusing KV costs in quality and gains in time to first token.
//
// The setup: documents D1..Dn, then a query Q that continues them. The reference is a full
// prefill of D1..Dn Q. Every figure compares the next-token distributions at Q's positions
// (teacher-forced: Q's own tokens go in whatever the model predicts) against the reference:
// agreement = share of positions with the same argmax, mean KL(reference || reused).
//   codecs: one cache of D1..Dn computed together, saved with each codec, loaded, Q prefilled.
//           Only the codec differs from the reference (raw and lossless must be exact).
//   blend:  each Di cached on its own at position 0, placed after the others (keys re-rotated),
//           the ratio R of most deviating tokens recomputed (blend.h), Q prefilled. R = 1 is a
//           full recompute from layer 1 on.
// Time to first token (TTFT) is measured without the quality work (only the last logits), as a
// median over runs after a warm-up, against the full prefill measured the same way.
#ifndef KDN_EXAMPLES_KDN_ENGINE_EVAL_H_
#define KDN_EXAMPLES_KDN_ENGINE_EVAL_H_

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "kdn-engine/kv_io.h"
#include "kdn-engine/runtime.h"

namespace kdn::engine {

struct EvalInput {
  std::vector<std::vector<uint32_t>> documents;  // each starts with BOS
  std::vector<uint32_t> query;                   // continues them (no BOS)
};

// Documents from texts (BOS + bytes; with doc_tokens > 0, each text's bytes repeated or cut to
// make exactly doc_tokens tokens). The query from `query_text` when it is not empty, else the last
// `continuation` tokens (at most half) of the last document, cut off it.
Result<EvalInput> MakeEvalInput(const std::vector<std::string>& texts,
                                const std::string& query_text, uint32_t continuation,
                                uint32_t doc_tokens);

struct EvalOptions {
  std::vector<std::string> codecs = {"raw", "lossless", "q8", "q4", "q2"};
  std::vector<float> ratios = {0.0f, 0.05f, 0.15f, 0.3f, 1.0f};
  std::string blend_codec = "raw";  // how the separately computed documents are stored
  unsigned runs = 3;                // timing repetitions (median reported)
  bool quality = true;              // false: timings only (synthetic weights)
  std::string work_dir;             // an existing directory for the `.kv` files
};

struct Quality {
  double agreement = 0;  // in [0, 1]
  double mean_kl = 0;    // nats
  double max_kl = 0;
};

struct CodecResult {
  std::string codec;
  Quality quality;
  uint64_t file_bytes = 0;
  uint64_t decoded_bytes = 0;  // fp32 KV of every layer
  uint64_t encoded_bytes = 0;  // the blocks alone, without header and 4 KiB padding
  double bits_per_value = 0;   // encoded bits per K or V element
  double ttft_ms = 0;
};

struct BlendResult {
  float ratio = 0;
  Quality quality;
  uint32_t recomputed_tokens = 0;
  double ttft_ms = 0;
};

struct EvalReport {
  std::string model;
  std::string shape;
  bool quality = true;
  unsigned runs = 0;
  size_t n_documents = 0;
  uint32_t context_tokens = 0;
  uint32_t query_tokens = 0;
  double full_ttft_ms = 0;
  std::vector<CodecResult> codecs;
  std::vector<BlendResult> blends;
};

Result<EvalReport> Evaluate(Runtime& rt, KdnContext& ctx, const EvalInput& input,
                            const EvalOptions& options);

// Human-readable tables.
void PrintTable(const EvalReport& report, std::FILE* out);
// `name: value` lines for tests/bench (q4_agreement, q4_kl, q4_bits_per_value, blend_0.15_kl,
// ttft_load_vs_prefill, ...), names prefixed with `prefix` when it is not empty.
void PrintLines(const EvalReport& report, const std::string& prefix, std::FILE* out);

// The report as one JSON object: per codec (and operating point) bits/value of the blocks and of
// the whole file, argmax agreement and mean/max KL against full prefill; per blend ratio the same.
void PrintJson(const EvalReport& report, std::FILE* out);

// Agreement and KL of `test` against `reference`, both [rows][vocab] logits.
Quality CompareLogits(const std::vector<float>& reference, const std::vector<float>& test,
                      size_t vocab);

}  // namespace kdn::engine

#endif  // KDN_EXAMPLES_KDN_ENGINE_EVAL_H_
