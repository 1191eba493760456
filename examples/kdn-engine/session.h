// One sequence being served: its tokens, its paged KV cache and the forward passes over it.
//
// The sequence's token i sits in cache slot i at RoPE position position_base + i. Tokens enter
// either by prefill (computed here) or as cached context (their KV written into the cache by
// someone else, e.g. libkdn loading a `.kv` file, before the layers that read it run).
#ifndef KDN_EXAMPLES_KDN_ENGINE_SESSION_H_
#define KDN_EXAMPLES_KDN_ENGINE_SESSION_H_

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "kdn-engine/paged_kv_cache.h"
#include "kdn-engine/transformer.h"
#include "kdn/status.h"

namespace kdn::engine {

enum class LogitsFor { kNone, kLast, kAll };

class Session {
 public:
  // Called before layer l runs, e.g. to wait until a load has put layer l's cached KV in place.
  using LayerHook = std::function<Status(uint32_t layer)>;

  Session(Transformer& transformer, uint32_t capacity_tokens,
          uint32_t block_size = PagedKvCache::kDefaultBlockSize);

  // Empties the sequence; its first token will sit at `position_base`. The KV memory is kept.
  void Reset(uint32_t position_base = 0);

  uint32_t size() const { return static_cast<uint32_t>(tokens_.size()); }
  uint32_t position_base() const { return position_base_; }
  const std::vector<uint32_t>& tokens() const { return tokens_; }
  PagedKvCache& cache() { return cache_; }
  const PagedKvCache& cache() const { return cache_; }
  Transformer& transformer() { return transformer_; }
  const ModelConfig& config() const { return transformer_.config(); }

  // Appends tokens whose KV the caller provides: slots [size(), size() + n) are mapped in the cache
  // and returned as the first slot; the caller fills every layer before the next forward pass.
  Result<uint32_t> AppendCached(std::span<const uint32_t> tokens);

  // Runs `tokens` through the model after the current sequence, writing their KV, and fills
  // `logits` ([vocab] for kLast, [n][vocab] for kAll).
  Status Prefill(std::span<const uint32_t> tokens, LogitsFor want, std::vector<float>* logits,
                 const LayerHook& before_layer = {});

  // Forgets the last n tokens (their slots are rewritten by the next prefill).
  Status Truncate(uint32_t n);

 private:
  Status CheckTokens(std::span<const uint32_t> tokens) const;

  Transformer& transformer_;
  PagedKvCache cache_;
  std::vector<uint32_t> tokens_;
  uint32_t position_base_ = 0;
  Rows rows_;  // reused between calls
};

// Index of the largest logit (the first one on ties).
uint32_t Argmax(std::span<const float> logits);

}  // namespace kdn::engine

#endif  // KDN_EXAMPLES_KDN_ENGINE_SESSION_H_
