// A llama2.c checkpoint (or deterministic random weights of any shape), ready for the transformer.
//
// The checkpoint format: 7 int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size,
// seq_len; a negative vocab_size means the classifier is stored apart from the token embedding),
// then float32 tensors in this order: token embedding [vocab][dim], rms_att [L][dim],
// wq [L][n_heads*head_dim][dim], wk [L][kv_dim][dim], wv [L][kv_dim][dim], wo [L][dim][dim],
// rms_ffn [L][dim], w1 [L][hidden][dim], w2 [L][dim][hidden], w3 [L][hidden][dim], rms_final
// [dim], two legacy RoPE tables of seq_len*head_dim/2 floats (unused), then wcls [vocab][dim] when
// unshared. Matrices are [out][in], row-major.
#ifndef KDN_EXAMPLES_KDN_ENGINE_MODEL_H_
#define KDN_EXAMPLES_KDN_ENGINE_MODEL_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "kdn/status.h"

namespace kdn::engine {

struct ModelConfig {
  uint32_t dim = 0;
  uint32_t hidden_dim = 0;
  uint32_t n_layers = 0;
  uint32_t n_heads = 0;
  uint32_t n_kv_heads = 0;
  uint32_t vocab_size = 0;
  uint32_t seq_len = 0;  // the longest sequence the model was trained for
  bool shared_classifier = true;
  float rope_theta = 10000.0f;  // llama2.c: 10000, GPT-J style (adjacent pairs)
  float norm_eps = 1e-5f;

  uint32_t head_dim() const { return dim / n_heads; }
  uint32_t kv_dim() const { return n_kv_heads * head_dim(); }
  // Parameters in the checkpoint (the legacy RoPE tables included).
  uint64_t checkpoint_floats() const;
  // OK when the shape is one this engine can run (and whose tensors fit in memory).
  Status Validate() const;
  std::string Describe() const;  // "dim 64, hidden 172, layers 5, heads 8, kv heads 4, ..."
};

// Per-layer weight pointers (into memory the Model owns or maps).
struct LayerWeights {
  const float* rms_att;  // [dim]
  const float* wq;       // [dim][dim]
  const float* wk;       // [kv_dim][dim]
  const float* wv;       // [kv_dim][dim]
  const float* wo;       // [dim][dim]
  const float* rms_ffn;  // [dim]
  const float* w1;       // [hidden][dim]
  const float* w2;       // [dim][hidden]
  const float* w3;       // [hidden][dim]
};

class Model {
 public:
  // Maps a llama2.c checkpoint read-only. Every header field and the file size are checked.
  static Result<std::unique_ptr<Model>> Load(const std::string& path);
  // Deterministic random weights of `config`'s shape (same config and seed, same weights on every
  // machine). Used to time larger shapes: prefill cost depends on shape, not weight values.
  static Result<std::unique_ptr<Model>> Synthetic(const ModelConfig& config, uint64_t seed);

  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const ModelConfig& config() const { return config_; }
  // Identity of the KV this model computes (the stem of the checkpoint file, or a name that
  // spells out the synthetic shape and seed).
  const std::string& name() const { return name_; }
  const float* token_embedding() const { return token_embedding_; }  // [vocab][dim]
  const LayerWeights& layer(uint32_t l) const { return layers_[l]; }
  const float* rms_final() const { return rms_final_; }  // [dim]
  const float* classifier() const { return wcls_; }      // [vocab][dim]

 private:
  Model() = default;
  // Points every tensor into `data` (checkpoint order); `n` floats are available.
  Status Bind(const float* data, uint64_t n);

  ModelConfig config_;
  std::string name_;
  struct Mapping;
  std::unique_ptr<Mapping> mapping_;  // checkpoint: the mapped file
  std::vector<float> owned_;          // synthetic: the weights
  const float* token_embedding_ = nullptr;
  std::vector<LayerWeights> layers_;
  const float* rms_final_ = nullptr;
  const float* wcls_ = nullptr;
};

// Parses "stories260K" (the shape of the test model) or comma-separated key=value pairs over it or
// over the llama defaults: dim, hidden, layers, heads, kv_heads, vocab, seq, e.g.
// "dim=1024,layers=8,kv_heads=8". Unset keys: heads = dim/128 (at least 1), hidden = the llama rule
// (8/3 dim rounded up to 32), kv_heads = heads, vocab 512, seq 4096, layers 8.
Result<ModelConfig> ParseSyntheticShape(std::string_view spec);

}  // namespace kdn::engine

#endif  // KDN_EXAMPLES_KDN_ENGINE_MODEL_H_
