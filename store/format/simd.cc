// ISA detection and the kernel tables.
#include "store/format/simd.h"

#include <atomic>
#include <cstdlib>
#if defined(__x86_64__)
#include <cpuid.h>
#endif
#include <string>

namespace kdn::simd {

namespace {

#if defined(__x86_64__)
// F16C from CPUID (clang 14's __builtin_cpu_supports does not know "f16c"). It uses the AVX
// register state, whose OS support __builtin_cpu_supports("avx2") has already checked.
bool HasF16c() {
  unsigned eax, ebx, ecx, edx;
  return __get_cpuid(1, &eax, &ebx, &ecx, &edx) != 0 && (ecx & bit_F16C) != 0;
}
#endif

bool CpuHas(Isa isa) {
#if defined(__x86_64__)
  switch (isa) {
    case Isa::kScalar:
      return true;
    case Isa::kAvx2:
      return __builtin_cpu_supports("avx2") && HasF16c();
    case Isa::kAvx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx2") && HasF16c();
    case Isa::kAvx512Bf16:
      return CpuHas(Isa::kAvx512) && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx512bf16");
  }
  return false;
#else
  return isa == Isa::kScalar;
#endif
}

Kernels Build(Isa isa) {
  Kernels k;
  FillScalarKernels(&k);
  FillTcScalar(&k);
  if (isa == Isa::kAvx2) {
    FillQuantAvx2(&k);
    FillQuantEncodeAvx2(&k);
    FillConvertAvx2(&k);
    FillPlaneAvx2(&k);
    FillTcAvx2(&k);
  } else if (isa == Isa::kAvx512) {
    FillQuantAvx512(&k);
    FillQuantEncodeAvx512(&k);
    FillConvertAvx512(&k);
    FillPlaneAvx512(&k);
    FillTcAvx512(&k);
  } else if (isa == Isa::kAvx512Bf16) {
    FillQuantAvx512Bf16(&k);
    FillQuantEncodeAvx512(&k);  // no bfloat16 in the encoder
    FillConvertAvx512Bf16(&k);
    FillPlaneAvx512(&k);  // no bfloat16 arithmetic in the planes
    FillTcAvx512(&k);     // rows are rebuilt in binary32; ConvertDType narrows them
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
    case Isa::kAvx512Bf16:
      return "avx512bf16";
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
  for (Isa isa : kAllIsas) {
    if (IsaSupported(isa)) out.push_back(isa);
  }
  return out;
}

Isa BestIsa() {
  static const Isa best = [] {
    if (const char* env = std::getenv("KDN_ISA"); env != nullptr && *env != '\0') {
      for (Isa isa : kAllIsas) {
        if (IsaName(isa) == env && IsaSupported(isa)) return isa;
      }
    }
    if (IsaSupported(Isa::kAvx512Bf16)) return Isa::kAvx512Bf16;
    if (IsaSupported(Isa::kAvx512)) return Isa::kAvx512;
    if (IsaSupported(Isa::kAvx2)) return Isa::kAvx2;
    return Isa::kScalar;
  }();
  return best;
}

const Kernels& KernelsFor(Isa isa) {
  // Unsupported ISAs get the scalar table (whose isa field says so).
  static const Kernels tables[4] = {
      Build(Isa::kScalar), Build(IsaSupported(Isa::kAvx2) ? Isa::kAvx2 : Isa::kScalar),
      Build(IsaSupported(Isa::kAvx512) ? Isa::kAvx512 : Isa::kScalar),
      Build(IsaSupported(Isa::kAvx512Bf16) ? Isa::kAvx512Bf16 : Isa::kScalar)};
  return tables[static_cast<int>(isa)];
}

namespace {
std::atomic<const Kernels*> g_active{nullptr};
}  // namespace

const Kernels& ActiveKernels() {
  const Kernels* k = g_active.load(std::memory_order_acquire);
  if (__builtin_expect(k == nullptr, 0)) {
    k = &KernelsFor(BestIsa());
    g_active.store(k, std::memory_order_release);
  }
  return *k;
}

void SetActiveIsaForTesting(Isa isa) {
  g_active.store(&KernelsFor(isa), std::memory_order_release);
}

}  // namespace kdn::simd
