// CacheBlend-style repair of contexts whose KV was computed apart from each other.
//
// A document's cache computed on its own lacks its tokens' attention to the documents placed
// before it. Layer 0 needs no repair (its KV depends only on the token and its position, which
// re-rotation fixes), so blending runs layer 0 over every context token with the loaded KV,
// projects layer 1's K/V afresh for every token, and lets libkdn pick the tokens whose fresh V
// deviates most from the cached V (kdn_select_deviation, ratio R of them). From layer 1 on, only
// those tokens are recomputed; their fresh K/V rows replace the cached ones (kdn_scatter_rows), so
// the prompt that follows attends to repaired rows. R = 1 recomputes every token from layer 1 on.
#ifndef KDN_EXAMPLES_KDN_ENGINE_BLEND_H_
#define KDN_EXAMPLES_KDN_ENGINE_BLEND_H_

#include <cstdint>

#include "kdn-engine/contexts.h"
#include "kdn-engine/kv_io.h"
#include "kdn-engine/session.h"

namespace kdn::engine {

struct BlendStats {
  uint32_t context_tokens = 0;
  uint32_t recomputed_tokens = 0;  // selected at layer 1
};

// Recomputes the ceil(ratio * n) most deviating of the n tokens that `load` placed; ratio in
// (0, 1]. Waits for each layer of the load before it reads it.
Status Blend(KdnContext& ctx, Session& session, ContextLoad& load, float ratio, BlendStats* stats);

}  // namespace kdn::engine

#endif  // KDN_EXAMPLES_KDN_ENGINE_BLEND_H_
