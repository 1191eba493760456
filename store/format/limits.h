// Bounds of a `.kv` file that writers respect and readers enforce (docs/kv-format.md, "Limits a
// reader enforces"). They keep every size computed from a header inside 64 bits and every
// allocation a reader makes proportional to the bytes it was given.
#ifndef KDN_STORE_FORMAT_LIMITS_H_
#define KDN_STORE_FORMAT_LIMITS_H_

#include <cstdint>

namespace kdn::limits {

inline constexpr uint32_t kMaxLayers = 1024;
inline constexpr uint32_t kMaxKvHeads = 1024;
inline constexpr uint32_t kMaxHeads = 65536;
inline constexpr uint32_t kMinHeadDim = 2;
inline constexpr uint32_t kMaxHeadDim = 1024;
inline constexpr uint32_t kMaxTokens = 1u << 24;
inline constexpr uint32_t kMaxChunkTokens = 1u << 20;
inline constexpr uint64_t kMaxHeaderBytes = uint64_t{256} << 20;
inline constexpr uint32_t kMaxNameBytes = 255;
// A tc block is checked whole (its tables and every rANS segment), so verification holds it in
// memory: this caps what one verification of a hostile file can make a reader allocate. A tc
// block of a 128k-token layer of a 70B-class model (8 KV heads x 128) is about 50 MiB.
inline constexpr uint64_t kMaxWholeCheckBlockBytes = uint64_t{64} << 20;
// channels = kv_heads * head_dim
inline constexpr uint32_t kMaxChannels = kMaxKvHeads * kMaxHeadDim;
// The quant encoder's input range: parameters are fp16, so values must be finite fp16 values.
inline constexpr float kMaxQuantAbs = 65504.0f;

}  // namespace kdn::limits

#endif  // KDN_STORE_FORMAT_LIMITS_H_
