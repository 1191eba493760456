// One kdn_load (or one cache of a kdn_blend_load): validated, copied, and handed to a backend.
#ifndef KDN_LIBKDN_LOAD_REQUEST_H_
#define KDN_LIBKDN_LOAD_REQUEST_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "libkdn/completion.h"
#include "libkdn/dest.h"

namespace kdn::libkdn {

class BlockReader;
class CacheDeviceState;

// Keys re-rotated by a fixed position delta after decoding (kdn_blend_load).
struct RopeShift {
  uint32_t style = 0;       // RopeKind
  uint32_t rotary_dim = 0;  // even, <= head_dim
  // First rotated dim of each head: 0, or kv_lora_rank for an MLA latent (whose rope part
  // trails it). The CUDA kernels rotate from dim 0 only: the backend refuses another offset.
  uint32_t dim_offset = 0;
  std::vector<float> cos;   // rotary_dim / 2 entries (RopeShiftTable)
  std::vector<float> sin;
};

struct LoadRequest {
  const BlockReader* reader = nullptr;       // the cache's; outlives the request (kdn_close syncs)
  CacheDeviceState* device_state = nullptr;  // likewise; CUDA backend only
  uint32_t layer_begin = 0;
  uint32_t layer_end = 0;
  // The cache's KV head that the destination's head 0 receives: a tensor-parallel rank's
  // destination holds dest->n_kv_heads heads starting there (0 and all heads for a whole load).
  uint32_t head_begin = 0;
  std::shared_ptr<const DestSpec> dest;
  uint32_t dest_token_offset = 0;
  void* stream = nullptr;
  bool rope = false;
  RopeShift rope_shift;
  // layers[l - layer_begin]: CPU: finished when the layer's rows are in place. CUDA: finished when
  // the layer's work is enqueued and its event recorded (or it failed before that).
  std::vector<std::shared_ptr<Completion>> layers;
  // Finished when the backend no longer uses the reader, the destination or the device state.
  Completion done;
};

}  // namespace kdn::libkdn

#endif  // KDN_LIBKDN_LOAD_REQUEST_H_
