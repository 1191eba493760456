#include "kdn-engine/session.h"

#include <string>

namespace kdn::engine {

Session::Session(Transformer& transformer, uint32_t capacity_tokens, uint32_t block_size)
    : transformer_(transformer),
      cache_(transformer.config().n_layers, transformer.config().n_kv_heads,
             transformer.config().head_dim(), capacity_tokens, block_size) {}

void Session::Reset(uint32_t position_base) {
  tokens_.clear();
  position_base_ = position_base;
  (void)cache_.Resize(0);  // shrinking cannot fail
}

Status Session::CheckTokens(std::span<const uint32_t> tokens) const {
  for (const uint32_t t : tokens) {
    if (t >= config().vocab_size) {
      return Status::InvalidArgument("token id " + std::to_string(t) +
                                     " is outside the vocabulary (" +
                                     std::to_string(config().vocab_size) + ")");
    }
  }
  const uint64_t end = uint64_t{position_base_} + tokens_.size() + tokens.size();
  if (end > config().seq_len) {
    return Status::InvalidArgument("sequence would reach position " + std::to_string(end) +
                                   ", beyond the model's seq_len " +
                                   std::to_string(config().seq_len));
  }
  if (tokens_.size() + tokens.size() > cache_.capacity()) {
    return Status::NoSpace("sequence of " + std::to_string(tokens_.size() + tokens.size()) +
                           " tokens exceeds the KV cache (" + std::to_string(cache_.capacity()) +
                           ")");
  }
  return Status::OK();
}

Result<uint32_t> Session::AppendCached(std::span<const uint32_t> tokens) {
  KDN_RETURN_IF_ERROR(CheckTokens(tokens));
  const uint32_t first = size();
  KDN_RETURN_IF_ERROR(cache_.Resize(first + static_cast<uint32_t>(tokens.size())));
  tokens_.insert(tokens_.end(), tokens.begin(), tokens.end());
  return first;
}

Status Session::Prefill(std::span<const uint32_t> tokens, LogitsFor want,
                        std::vector<float>* logits, const LayerHook& before_layer) {
  if (tokens.empty()) return Status::InvalidArgument("prefill: no tokens");
  KDN_RETURN_IF_ERROR(CheckTokens(tokens));
  const uint32_t first = size();
  KDN_RETURN_IF_ERROR(cache_.Resize(first + static_cast<uint32_t>(tokens.size())));
  Transformer& tf = transformer_;
  tf.Embed(tokens, first, position_base_ + first, rows_);
  for (uint32_t l = 0; l < config().n_layers; ++l) {
    if (before_layer) {
      if (Status s = before_layer(l); !s.ok()) {
        (void)cache_.Resize(first);
        return s;
      }
    }
    tf.Layer(l, rows_, cache_);
  }
  tokens_.insert(tokens_.end(), tokens.begin(), tokens.end());
  const size_t vocab = config().vocab_size, n = tokens.size();
  if (want == LogitsFor::kLast) {
    logits->resize(vocab);
    tf.Logits(rows_, n - 1, 1, logits->data());
  } else if (want == LogitsFor::kAll) {
    logits->resize(n * vocab);
    tf.Logits(rows_, 0, n, logits->data());
  }
  return Status::OK();
}

Status Session::Truncate(uint32_t n) {
  if (n > size()) return Status::InvalidArgument("truncate: more tokens than the sequence holds");
  tokens_.resize(tokens_.size() - n);
  return cache_.Resize(size());
}

uint32_t Argmax(std::span<const float> logits) {
  uint32_t best = 0;
  for (uint32_t i = 1; i < logits.size(); ++i) {
    if (logits[i] > logits[best]) best = i;
  }
  return best;
}

}  // namespace kdn::engine
