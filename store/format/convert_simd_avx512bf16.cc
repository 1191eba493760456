// AVX-512 dtype conversion with AVX512-BF16 conversions to bfloat16.
#include "store/format/scalar_kernels.h"
#include "store/format/simd.h"
#include "store/format/simd_x86.h"

#if defined(__x86_64__)

namespace kdn::simd {

#define KDN_TGT KDN_TARGET_AVX512BF16
#define KDN_HW_BF16 1
#include "store/format/convert_simd_avx512.inc"
#undef KDN_HW_BF16
#undef KDN_TGT

void FillConvertAvx512Bf16(Kernels* k) {
  FillAll(k);
}

}  // namespace kdn::simd

#else

namespace kdn::simd {
void FillConvertAvx512Bf16(Kernels*) {}
}  // namespace kdn::simd

#endif
