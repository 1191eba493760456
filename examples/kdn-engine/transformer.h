// The llama forward pass (RMSNorm, GPT-J-style RoPE, grouped-query attention, SwiGLU) over a set of
// rows: tokens that go through the layers together, each with its own sequence slot (where its K
// and V live in the cache, and which slots it attends to: [0, slot]) and its own RoPE position.
//
// A layer is three steps, so that blending (blend.h) can compare freshly computed K/V with cached
// K/V and choose which rows to carry on with, before attention:
//   ProjectQkv  x -> q, k, v (q and k rotated at the rows' positions)
//   StoreKv     k, v -> the cache at the rows' slots
//   Finish      attention over the cache, output projection, residual, feed-forward, residual
#ifndef KDN_EXAMPLES_KDN_ENGINE_TRANSFORMER_H_
#define KDN_EXAMPLES_KDN_ENGINE_TRANSFORMER_H_

#include <cstdint>
#include <span>
#include <vector>

#include "kdn-engine/model.h"
#include "kdn-engine/paged_kv_cache.h"
#include "kdn-engine/thread_pool.h"

namespace kdn::engine {

// Activations of n rows; every matrix is row-major with one row per token.
struct Rows {
  std::vector<uint32_t> slot;      // sequence slot of each row
  std::vector<uint32_t> position;  // RoPE position of each row
  std::vector<float> x;            // [n][dim] residual stream
  std::vector<float> q;            // [n][dim]
  std::vector<float> k, v;         // [n][kv_dim]
  std::vector<float> xb, att;      // [n][dim] scratch: normed input, attention output
  std::vector<float> h1, h3;       // [n][hidden] feed-forward scratch

  size_t size() const { return slot.size(); }
  void Resize(size_t n, const ModelConfig& c);
  // Keeps rows keep[0], keep[1], ... (increasing indices), in that order, with all their state.
  void Keep(std::span<const uint32_t> keep, const ModelConfig& c);
};

class Transformer {
 public:
  Transformer(const Model& model, ThreadPool& pool);

  const Model& model() const { return model_; }
  const ModelConfig& config() const { return model_.config(); }
  ThreadPool& pool() { return pool_; }

  // Sets up rows for tokens at consecutive slots first_slot.. and positions first_position..,
  // their residual stream set to the token embeddings.
  void Embed(std::span<const uint32_t> tokens, uint32_t first_slot, uint32_t first_position,
             Rows& rows) const;

  void ProjectQkv(uint32_t layer, Rows& rows);
  void StoreKv(uint32_t layer, const Rows& rows, PagedKvCache& cache) const;
  void Finish(uint32_t layer, Rows& rows, const PagedKvCache& cache);
  // All three steps.
  void Layer(uint32_t layer, Rows& rows, PagedKvCache& cache);

  // Final norm and classifier for rows [begin, begin + n): out is [n][vocab].
  void Logits(Rows& rows, size_t begin, size_t n, float* out);

  // Rotates one row of `n_heads` heads in place to `position` (GPT-J pairs). Exposed for tests.
  void Rope(float* row, uint32_t n_heads, uint32_t position) const;

 private:
  void Attend(uint32_t layer, Rows& rows, const PagedKvCache& cache);

  const Model& model_;
  ThreadPool& pool_;
  std::vector<double> inv_freq_;  // per pair i of a head: theta^(-2i/head_dim)
};

}  // namespace kdn::engine

#endif  // KDN_EXAMPLES_KDN_ENGINE_TRANSFORMER_H_
