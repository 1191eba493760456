// AVX-512 dequantization (bfloat16 rounded with integer arithmetic).
#include "store/format/scalar_kernels.h"
#include "store/format/simd.h"
#include "store/format/simd_x86.h"

#if defined(__x86_64__)

namespace kdn::simd {

#define KDN_TGT KDN_TARGET_AVX512
#define KDN_HW_BF16 0
#include "store/format/quant_simd_avx512.inc"
#undef KDN_HW_BF16
#undef KDN_TGT

void FillQuantAvx512(Kernels* k) {
  FillAll(k);
}

}  // namespace kdn::simd

#else

namespace kdn::simd {
void FillQuantAvx512(Kernels*) {}
}  // namespace kdn::simd

#endif
