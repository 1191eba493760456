// kdn_save: KV tensors of an engine encoded into a `.kv` file, written atomically.
#ifndef KDN_LIBKDN_SAVE_H_
#define KDN_LIBKDN_SAVE_H_

#include <cstdint>
#include <span>
#include <string>

#include "libkdn/context.h"
#include "libkdn/dest.h"
#include "kdn/format.h"
#include "kdn/status.h"

namespace kdn::gpu {

struct SaveRequest {
  ModelIdentity model;
  std::span<const uint32_t> tokens;
  uint32_t position_offset = 0;
  const DestSpec* src = nullptr;  // validated: model dtype, every layer's K and V present
  CodecSpec codec;
  uint32_t chunk_tokens = kDefaultChunkTokens;
  bool fsync = false;
  std::string path;
};

// Reads the tensors through the backend, encodes them, and writes `path` as a temporary file in
// the same directory renamed over it: readers see the old file or the new one, never a part.
Status SaveKv(Context& ctx, const SaveRequest& req);

}  // namespace kdn::gpu

#endif  // KDN_LIBKDN_SAVE_H_
