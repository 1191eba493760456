// The tc codec decoded on the device: the same KDN_HD functions as the CPU (store/format/rans.h,
// store/format/tc_math.h), one thread per rANS segment for the entropy stage, then one thread per
// (token, head) for dequantization, the inverse Hadamard transform, the mean and RoPE.
#ifndef KDN_LIBKDN_CUDA_TC_LAUNCH_H_
#define KDN_LIBKDN_CUDA_TC_LAUNCH_H_

#include <cuda_runtime_api.h>
#include <stdint.h>

#include "kdn/status.h"
#include "store/format/codec_internal.h"

namespace kdn::libkdn {

// Decodes `block` (parsed on the host from the same bytes) into `out`: [tokens][channels] values
// of `out_dtype` (1 fp16, 2 bf16, 3 fp32), contiguous, on the device. `device_block` is the whole
// encoded block on the device. The host's tables (a few KiB) are copied up with it. Waits for the
// stream; Corruption naming the first bad segment when a rANS stream does not end exactly.
Status DecodeTcOnDevice(const codec_internal::TcBlock& block, const uint8_t* device_block,
                        uint32_t out_dtype, void* out, cudaStream_t stream);

}  // namespace kdn::libkdn

#endif  // KDN_LIBKDN_CUDA_TC_LAUNCH_H_
