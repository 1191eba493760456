// Reading and writing one element of a destination dtype as binary32, for the CPU backend and the
// CUDA kernels alike (the conversions are element_math.h's: round to nearest even, NaN kept).
#ifndef KDN_LIBKDN_ELEMENT_IO_H_
#define KDN_LIBKDN_ELEMENT_IO_H_

#include <stdint.h>

#include "store/format/element_math.h"

namespace kdn::libkdn {

// Element types by their kdn::DType / kdn_dtype value (1 fp16, 2 bf16, 3 fp32).
enum ElemType : uint32_t { kElemF16 = 1, kElemBF16 = 2, kElemF32 = 3 };

KDN_HD uint32_t ElemSize(uint32_t t) {
  return t == kElemF32 ? 4u : 2u;
}

KDN_HD float LoadElem(const void* base, int64_t index, uint32_t t) {
  if (t == kElemF32) return static_cast<const float*>(base)[index];
  const uint16_t bits = static_cast<const uint16_t*>(base)[index];
  return t == kElemF16 ? elem::HalfToFloat(bits) : elem::Bf16ToFloat(bits);
}

KDN_HD void StoreElem(void* base, int64_t index, uint32_t t, float v) {
  if (t == kElemF32) {
    static_cast<float*>(base)[index] = v;
  } else {
    static_cast<uint16_t*>(base)[index] =
        t == kElemF16 ? elem::FloatToHalf(v) : elem::FloatToBf16(v);
  }
}

}  // namespace kdn::libkdn

#endif  // KDN_LIBKDN_ELEMENT_IO_H_
