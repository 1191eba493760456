// A kdn_dest, validated against what a call will touch, and copied so that work still running
// after the call returns does not depend on the caller's descriptor arrays.
//
// Checked: NULL pointers, dtype, shape against the cache (n_kv_heads, head_dim), strides, the
// layer range against n_layers, every destination token against capacity_tokens, the block table
// (n_block_table, entries >= 0) or the slot mapping (n_slots), alignment of base pointers to the
// element size, and that the furthest element addressed fits in the address space. The backing
// memory's size is not known to the library: capacity_tokens and the tables are the bounds.
#ifndef KDN_LIBKDN_DEST_H_
#define KDN_LIBKDN_DEST_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "libkdn/dest_addressing.h"
#include "kdn/format.h"
#include "kdn/kdn.h"
#include "kdn/status.h"

namespace kdn::libkdn {

struct DestSpec {
  DType dtype = DType::kF16;
  size_t elem_size = 2;
  uint32_t n_kv_heads = 0;
  uint32_t head_dim = 0;
  uint32_t block_size = 1;
  int64_t block_stride = 0;
  int64_t token_stride = 0;
  int64_t head_stride = 0;
  uint32_t capacity_tokens = 0;
  std::vector<void*> k_base;  // n_layers entries; nullptr = skipped
  std::vector<void*> v_base;
  bool has_block_table = false;
  std::vector<int32_t> block_table;  // the entries the validated tokens use (a prefix)
  bool has_slot_mapping = false;
  std::vector<int64_t> slot_mapping;  // likewise

  uint32_t channels() const { return n_kv_heads * head_dim; }
  void* base(uint32_t layer, KvKind kind) const {
    const std::vector<void*>& v = kind == KvKind::kKey ? k_base : v_base;
    return layer < v.size() ? v[layer] : nullptr;
  }
  // True when the heads of a row are contiguous, so a token's row is channels() elements in a row.
  bool rows_contiguous() const { return n_kv_heads == 1 || head_stride == head_dim; }
  // Addressing over the host copies of the tables.
  DestAddressing addressing() const;
};

// What a call needs of a destination.
struct DestUse {
  const char* what = "dest";  // for messages: "dest", "keys", "src", "cached"
  uint32_t n_kv_heads = 0;    // must equal the descriptor's
  uint32_t head_dim = 0;
  uint32_t layer_begin = 0;  // [layer_begin, layer_end) must be < n_layers
  uint32_t layer_end = 0;
  bool need_dtype = false;  // the descriptor's dtype must equal `dtype`
  DType dtype = DType::kF16;
};

// Validates `d` for destination tokens [token_begin, token_begin + n_tokens).
Result<std::shared_ptr<const DestSpec>> ValidateDest(const kdn_dest* d, const DestUse& use,
                                                     uint32_t token_begin, uint32_t n_tokens);
// Validates `d` for an explicit list of destination tokens.
Result<std::shared_ptr<const DestSpec>> ValidateDestTokens(const kdn_dest* d, const DestUse& use,
                                                           std::span<const uint32_t> tokens);

}  // namespace kdn::libkdn

#endif  // KDN_LIBKDN_DEST_H_
