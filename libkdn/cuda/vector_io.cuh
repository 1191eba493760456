// 16-byte (or narrower) loads and stores of a thread's run of consecutive elements.
#ifndef KDN_LIBKDN_CUDA_VECTOR_IO_CUH_
#define KDN_LIBKDN_CUDA_VECTOR_IO_CUH_

#include <stdint.h>

namespace kdn::libkdn {

// Copies kBytes from src to dst, both aligned to min(kBytes, 16), in the widest accesses that fit.
template <int kBytes>
__device__ __forceinline__ void CopyAligned(void* dst, const void* src) {
  if constexpr (kBytes >= 16) {
    static_assert(kBytes % 16 == 0, "whole 16-byte pieces");
#pragma unroll
    for (int i = 0; i < kBytes / 16; ++i) {
      static_cast<uint4*>(dst)[i] = static_cast<const uint4*>(src)[i];
    }
  } else if constexpr (kBytes == 8) {
    *static_cast<uint2*>(dst) = *static_cast<const uint2*>(src);
  } else if constexpr (kBytes == 4) {
    *static_cast<uint32_t*>(dst) = *static_cast<const uint32_t*>(src);
  } else {
    static_assert(kBytes == 2, "2, 4, 8 or a multiple of 16 bytes");
    *static_cast<uint16_t*>(dst) = *static_cast<const uint16_t*>(src);
  }
}

}  // namespace kdn::libkdn

#endif  // KDN_LIBKDN_CUDA_VECTOR_IO_CUH_
