// Per-thread reusable buffers, so that decoding a block allocates nothing after the first call
// (the VM pays heavily the first time memory is touched). Each slot belongs to one step of a
// decode; a function uses only its own slot, so nested steps never share a buffer.
#ifndef KDN_STORE_FORMAT_SCRATCH_H_
#define KDN_STORE_FORMAT_SCRATCH_H_

#include <cstddef>
#include <span>

#include "kdn/status.h"

namespace kdn::scratch {

enum class Slot : int {
  kEncoded = 0,  // a block's encoded bytes, read from a source
  kPayload,      // a block's bytes after its zstd stage
  kParams,       // dequantization parameters expanded to floats
  kTile,         // rows in the model dtype before a dtype conversion
  kCodes,        // quant codes of a row, one byte each, before packing
  kStream,       // streaming verification output window
  kRows,         // whole decoded rows before a channel slice is taken from them
  kCount,
};

// At least n bytes of this thread's buffer for `slot` (contents unspecified, 64-byte aligned).
// Fails with NoSpace when the memory cannot be had (a forged size must not abort the process).
Result<std::span<std::byte>> Get(Slot slot, size_t n);

}  // namespace kdn::scratch

#endif  // KDN_STORE_FORMAT_SCRATCH_H_
