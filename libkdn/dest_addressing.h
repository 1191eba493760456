// Where destination token t, channel c (= head * head_dim + dim) of one layer's K or V lives:
// the addressing formula of kdn_dest (include/kdn/kdn.h), written once for the CPU backend and
// the CUDA kernels.
#ifndef KDN_LIBKDN_DEST_ADDRESSING_H_
#define KDN_LIBKDN_DEST_ADDRESSING_H_

#include <stdint.h>

#include "store/format/element_math.h"  // KDN_HD

namespace kdn::libkdn {

// A validated kdn_dest reduced to what addressing needs. block_table and slot_mapping point to
// memory of the backend that reads them (host for the CPU, device for CUDA), indexed by absolute
// destination token (slot_mapping) or logical block (block_table).
struct DestAddressing {
  int64_t block_stride = 0;  // elements
  int64_t token_stride = 0;
  int64_t head_stride = 0;
  uint32_t block_size = 1;
  uint32_t head_dim = 1;
  const int32_t* block_table = nullptr;
  const int64_t* slot_mapping = nullptr;
};

// Element offset of token t's channel 0, or -1 when the slot mapping skips the token.
KDN_HD int64_t DestRowOffset(const DestAddressing& a, uint32_t t) {
  int64_t block;
  int64_t in_block;
  if (a.slot_mapping != nullptr) {
    const int64_t slot = a.slot_mapping[t];
    if (slot < 0) return -1;
    block = slot / a.block_size;
    in_block = slot % a.block_size;
  } else {
    const uint32_t logical = t / a.block_size;
    block = a.block_table != nullptr ? a.block_table[logical] : static_cast<int64_t>(logical);
    in_block = t % a.block_size;
  }
  return block * a.block_stride + in_block * a.token_stride;
}

// Element offset of channel c within a row.
KDN_HD int64_t DestChannelOffset(const DestAddressing& a, uint32_t c) {
  return static_cast<int64_t>(c / a.head_dim) * a.head_stride + c % a.head_dim;
}

}  // namespace kdn::libkdn

#endif  // KDN_LIBKDN_DEST_ADDRESSING_H_
