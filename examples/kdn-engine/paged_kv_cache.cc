#include "kdn-engine/paged_kv_cache.h"

#include <string>

namespace kdn::engine {

PagedKvCache::PagedKvCache(uint32_t n_layers, uint32_t n_kv_heads, uint32_t head_dim,
                           uint32_t capacity_tokens, uint32_t block_size)
    : n_layers_(n_layers),
      n_kv_heads_(n_kv_heads),
      head_dim_(head_dim),
      block_size_(block_size == 0 ? kDefaultBlockSize : block_size),
      n_physical_((capacity_tokens + block_size_ - 1) / block_size_) {
  const size_t pool = size_t{n_physical_} * block_size_ * kv_dim();
  k_pool_.assign(n_layers_, std::vector<float>(pool, 0.0f));
  v_pool_.assign(n_layers_, std::vector<float>(pool, 0.0f));
  for (uint32_t l = 0; l < n_layers_; ++l) {
    k_bases_.push_back(k_pool_[l].data());
    v_bases_.push_back(v_pool_[l].data());
  }
  // The block table never reallocates, so a descriptor handed to libkdn stays valid while the
  // sequence grows behind a running load.
  block_table_.reserve(n_physical_);
  // Block 0 is handed out last: see the header.
  for (uint32_t b = 0; b < n_physical_; ++b) free_blocks_.push_back(static_cast<int32_t>(b));
}

Status PagedKvCache::Resize(uint32_t n_tokens) {
  if (n_tokens > capacity()) {
    return Status::NoSpace("KV cache: " + std::to_string(n_tokens) +
                           " tokens exceed its capacity of " + std::to_string(capacity()));
  }
  const size_t blocks = (size_t{n_tokens} + block_size_ - 1) / block_size_;
  while (block_table_.size() < blocks) {
    block_table_.push_back(free_blocks_.back());
    free_blocks_.pop_back();
  }
  while (block_table_.size() > blocks) {
    free_blocks_.push_back(block_table_.back());
    block_table_.pop_back();
  }
  n_tokens_ = n_tokens;
  return Status::OK();
}

}  // namespace kdn::engine
