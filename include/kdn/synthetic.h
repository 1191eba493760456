// Deterministic synthetic KV caches: for sizes, speeds and tests of everything that does not need
// real model quality (real KV comes from the example engine and the real model).
//
// The values imitate what real caches look like to a codec: per-channel offsets and scales (K has a
// few outlier channels, as RoPE'd keys do), smooth variation along tokens, and noise, so that
// compression ratios and quantization errors are in the range real caches show. Same arguments,
// same bytes, on every machine.
#ifndef KDN_SYNTHETIC_H_
#define KDN_SYNTHETIC_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "kdn/format.h"
#include "kdn/status.h"

namespace kdn {

// Token ids in [3, vocab): deterministic in (n, seed).
std::vector<uint32_t> SynthesizeTokens(uint32_t n, uint64_t seed, uint32_t vocab = 32000);

// Fills one layer's K and V ([tokens][kv_heads][head_dim] of model.dtype, tokens * channels
// elements each; for an MLA model `k` is the latent and `v` must be empty). Deterministic in
// (model shape, n_tokens, layer, seed).
Status SynthesizeLayerKv(const ModelIdentity& model, uint32_t n_tokens, uint32_t layer,
                         uint64_t seed, std::span<std::byte> k, std::span<std::byte> v);

// A complete `.kv` file in memory: tokens from SynthesizeTokens(n_tokens, seed), every layer from
// SynthesizeLayerKv, encoded with `codec`, in `head_groups` head groups (KvHeader::head_groups).
Result<std::vector<std::byte>> SynthesizeKvFile(const ModelIdentity& model, uint32_t n_tokens,
                                                const CodecSpec& codec, uint64_t seed,
                                                uint32_t position_offset = 0,
                                                uint32_t head_groups = 1);

}  // namespace kdn

#endif  // KDN_SYNTHETIC_H_
