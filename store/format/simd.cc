// ISA detection and the kernel tables.
#include "store/format/simd.h"

#include <cstdlib>
#include <string>

namespace kdn::simd {

namespace {

bool CpuHas(Isa isa) {
#if defined(__x86_64__) || defined(__i386__)
  switch (isa) {
    case Isa::kScalar:
      return true;
    case Isa::kAvx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
    case Isa::kAvx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx2") &&
             __builtin_cpu_supports("f16c");
  }
  return false;
#else
  return isa == Isa::kScalar;
#endif
}

Kernels Build(Isa isa) {
  Kernels k;
  FillScalarKernels(&k);
  if (isa == Isa::kAvx2) {
    FillQuantAvx2(&k);
    FillConvertAvx2(&k);
    FillPlaneAvx2(&k);
  } else if (isa == Isa::kAvx512) {
    FillQuantAvx512(&k);
    FillConvertAvx512(&k);
    FillPlaneAvx512(&k);
  }
  k.isa = isa;
  return k;
}

}  // namespace

std::string_view IsaName(Isa isa) {
  switch (isa) {
    case Isa::kScalar:
      return "scalar";
    case Isa::kAvx2:
      return "avx2";
    case Isa::kAvx512:
      return "avx512";
  }
  return "invalid";
}

bool IsaSupported(Isa isa) {
#if defined(__x86_64__)
  return CpuHas(isa);
#else
  return isa == Isa::kScalar;
#endif
}

std::vector<Isa> SupportedIsas() {
  std::vector<Isa> out;
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512}) {
    if (IsaSupported(isa)) out.push_back(isa);
  }
  return out;
}

Isa BestIsa() {
  static const Isa best = [] {
    if (const char* env = std::getenv("KDN_ISA"); env != nullptr && *env != '\0') {
      for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512}) {
        if (IsaName(isa) == env && IsaSupported(isa)) return isa;
      }
    }
    if (IsaSupported(Isa::kAvx512)) return Isa::kAvx512;
    if (IsaSupported(Isa::kAvx2)) return Isa::kAvx2;
    return Isa::kScalar;
  }();
  return best;
}

const Kernels& KernelsFor(Isa isa) {
  static const Kernels tables[3] = {
      Build(Isa::kScalar), IsaSupported(Isa::kAvx2) ? Build(Isa::kAvx2) : Build(Isa::kScalar),
      IsaSupported(Isa::kAvx512) ? Build(Isa::kAvx512) : Build(Isa::kScalar)};
  return tables[static_cast<int>(isa)];
}

const Kernels& ActiveKernels() {
  static const Kernels& active = KernelsFor(BestIsa());
  return active;
}

}  // namespace kdn::simd
