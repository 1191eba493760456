// lossless:entropy=rans decoded on the device: the same KDN_HD decoder as the CPU
// (store/format/lossless_rans.h), one thread per segment, into the byte planes that the lossless
// decode kernel (decode_launch.h) turns into values.
#ifndef KDN_LIBKDN_CUDA_LOSSLESS_RANS_LAUNCH_H_
#define KDN_LIBKDN_CUDA_LOSSLESS_RANS_LAUNCH_H_

#include <cuda_runtime_api.h>
#include <stdint.h>

#include "kdn/status.h"
#include "store/format/codec_internal.h"

namespace kdn::libkdn {

// Decodes `block` (parsed on the host from the same bytes) into `planes` (device, elements x
// planes bytes: the lossless payload). `device_block` is the whole encoded block on the device;
// the host's tables (a few KiB) are copied up with it. Waits for the stream; Corruption naming the
// first bad segment when a rANS stream does not end exactly.
Status DecodeLosslessRansOnDevice(const codec_internal::LosslessRansBlock& block,
                                  const uint8_t* device_block, uint8_t* planes,
                                  cudaStream_t stream);

}  // namespace kdn::libkdn

#endif  // KDN_LIBKDN_CUDA_LOSSLESS_RANS_LAUNCH_H_
