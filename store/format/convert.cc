// ConvertDType: element type conversion with round-to-nearest-even, on the dispatched kernels.
#include <cstring>

#include "kdn/codec.h"
#include "store/format/simd.h"

namespace kdn {

void ConvertDType(DType from, const void* src, DType to, void* dst, size_t n) {
  if (n == 0 || DTypeSize(from) == 0 || DTypeSize(to) == 0) return;
  if (from == to) {
    std::memmove(dst, src, n * DTypeSize(from));
    return;
  }
  simd::ActiveKernels().convert[simd::DTypeIndex(from)][simd::DTypeIndex(to)](src, dst, n);
}

}  // namespace kdn
