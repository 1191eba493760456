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

namespace kdn::libkdn {

struct SaveRequest {
  ModelIdentity model;
  std::span<const uint32_t> tokens;
  uint32_t position_offset = 0;
  const DestSpec* src = nullptr;  // validated: model dtype, every layer's K and V present
  CodecSpec codec;
  uint32_t chunk_tokens = kDefaultChunkTokens;
  uint32_t head_groups = 1;  // KvHeader::head_groups of the file written (checked)
  bool fsync = false;
  std::string path;
};

// Reads the tensors through the backend, encodes them, and writes `path` as a temporary file in
// the same directory renamed over it: readers see the old file or the new one, never a part.
Status SaveKv(Context& ctx, const SaveRequest& req);

// One tensor-parallel rank's share of a save: req.src holds the model's KV heads [head_begin,
// head_end). The share is written (raw, atomically) as a part file beside req.path,
// ".<name>.kdn-heads.<A>-<B>", a `.kv` file of the same model restricted to those heads. Then the
// parts there are read: when those that match this save (model, tokens, position) cover every
// head, the whole file is encoded and written atomically at req.path and the parts are removed;
// *wrote_file says whether this call did that. Concurrent ranks need no lock: every rank that sees
// all parts writes the same bytes (encoding is deterministic), and a part that vanished while it
// was being read was taken by a rank that completed the file.
Status SaveKvHeads(Context& ctx, const SaveRequest& req, uint32_t head_begin, uint32_t head_end,
                   bool* wrote_file);

}  // namespace kdn::libkdn

#endif  // KDN_LIBKDN_SAVE_H_
