// The engine's KV memory, paged like vLLM's: per layer, a pool of fixed-size blocks
// [blocks][block_size][kv_heads][head_dim] (NHD) for K and one for V, and one block table that maps
// the sequence's logical blocks to physical ones. fp32, the dtype the model computes in.
//
// Physical blocks are handed out from the top of the pool down, so a logical block is almost never
// its physical block: code that confused the two would read the wrong rows and fail the tests.
#ifndef KDN_EXAMPLES_KDN_ENGINE_PAGED_KV_CACHE_H_
#define KDN_EXAMPLES_KDN_ENGINE_PAGED_KV_CACHE_H_

#include <cstdint>
#include <vector>

#include "kdn/status.h"

namespace kdn::engine {

class PagedKvCache {
 public:
  static constexpr uint32_t kDefaultBlockSize = 16;

  // Memory for `capacity_tokens` tokens is allocated (and touched) here, once: the engine reuses
  // it for every sequence, as a serving engine keeps its KV pool.
  PagedKvCache(uint32_t n_layers, uint32_t n_kv_heads, uint32_t head_dim, uint32_t capacity_tokens,
               uint32_t block_size = kDefaultBlockSize);

  uint32_t n_layers() const { return n_layers_; }
  uint32_t n_kv_heads() const { return n_kv_heads_; }
  uint32_t head_dim() const { return head_dim_; }
  uint32_t kv_dim() const { return n_kv_heads_ * head_dim_; }
  uint32_t block_size() const { return block_size_; }
  uint32_t capacity() const { return n_physical_ * block_size_; }
  uint32_t size() const { return n_tokens_; }  // tokens the sequence holds

  // Grows the sequence to n_tokens (mapping new blocks) or shrinks it (returning whole blocks).
  // New slots hold stale data until written.
  Status Resize(uint32_t n_tokens);

  // Row of `kv_dim()` floats for sequence slot t (t < size()).
  float* key(uint32_t layer, uint32_t t) { return k_pool_[layer].data() + Offset(t); }
  float* value(uint32_t layer, uint32_t t) { return v_pool_[layer].data() + Offset(t); }
  const float* key(uint32_t layer, uint32_t t) const { return k_pool_[layer].data() + Offset(t); }
  const float* value(uint32_t layer, uint32_t t) const { return v_pool_[layer].data() + Offset(t); }

  // The addressing a KV library needs (libkdn's kdn_dest_paged): per-layer pool bases, the block
  // table (logical -> physical, one entry per mapped block), strides in elements. These pointers
  // stay valid for the cache's lifetime (the table has room for every block from the start).
  void* const* key_bases() const { return k_bases_.data(); }
  void* const* value_bases() const { return v_bases_.data(); }
  const int32_t* block_table() const { return block_table_.data(); }
  uint32_t n_mapped_blocks() const { return static_cast<uint32_t>(block_table_.size()); }

 private:
  size_t Offset(uint32_t t) const {
    const size_t phys = static_cast<size_t>(block_table_[t / block_size_]);
    return (phys * block_size_ + t % block_size_) * kv_dim();
  }

  uint32_t n_layers_, n_kv_heads_, head_dim_, block_size_, n_physical_;
  uint32_t n_tokens_ = 0;
  std::vector<std::vector<float>> k_pool_, v_pool_;
  std::vector<void*> k_bases_, v_bases_;
  std::vector<int32_t> block_table_;
  std::vector<int32_t> free_blocks_;  // a stack: the next block handed out is at the back
};

}  // namespace kdn::engine

#endif  // KDN_EXAMPLES_KDN_ENGINE_PAGED_KV_CACHE_H_
