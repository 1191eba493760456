// Host side of the decode kernels: one launch decodes one layer's K and V blocks (already on the
// device, as docs/kv-format.md lays them out after any zstd stage) into the destination.
#ifndef KDN_LIBKDN_CUDA_DECODE_LAUNCH_H_
#define KDN_LIBKDN_CUDA_DECODE_LAUNCH_H_

#include <cuda_runtime_api.h>
#include <stdint.h>

#include "libkdn/dest_addressing.h"
#include "kdn/status.h"

namespace kdn::libkdn {

enum DecodeCodec : uint32_t { kDecodeRaw = 0, kDecodeLossless = 1, kDecodeQuant = 2 };

struct DecodeBlockArgs {
  const uint8_t* payload = nullptr;  // device; 16-byte aligned
  void* out = nullptr;               // the layer's K or V base (device); nullptr = skip
  uint32_t codes_offset = 0;         // quant: where the codes start in the payload
};

struct DecodeArgs {
  uint32_t codec = kDecodeRaw;  // DecodeCodec (= kdn::CodecId)
  uint32_t bits = 0;            // quant: 8, 4, 2
  uint32_t group_size = 0;      // quant
  uint32_t model_dtype = 1;     // ElemType of the stored values
  uint32_t out_dtype = 1;       // ElemType to write
  uint32_t tokens = 0;
  uint32_t channels = 0;
  DecodeBlockArgs block[2];  // K, V
  DestAddressing addr;       // tables in device memory
  uint32_t dest_token_offset = 0;
};

// Enqueues the decode of args.block[0] and [1] on `stream`.
Status LaunchDecode(const DecodeArgs& args, cudaStream_t stream);

}  // namespace kdn::libkdn

#endif  // KDN_LIBKDN_CUDA_DECODE_LAUNCH_H_
