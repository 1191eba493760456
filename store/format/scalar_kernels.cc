// The scalar kernel table: the reference every SIMD kernel must match bit for bit.
#include "store/format/scalar_kernels.h"

#include "store/format/simd.h"

namespace kdn::simd {

namespace {

template <uint32_t B>
void FillBits(Kernels* k) {
  const int b = BitsIndex(B);
  k->dequant_channels[b][DTypeIndex(DType::kF16)] = scalar::DequantChannels<B, DType::kF16>;
  k->dequant_channels[b][DTypeIndex(DType::kBF16)] = scalar::DequantChannels<B, DType::kBF16>;
  k->dequant_channels[b][DTypeIndex(DType::kF32)] = scalar::DequantChannels<B, DType::kF32>;
  k->dequant_groups[b][DTypeIndex(DType::kF16)] = scalar::DequantGroups<B, DType::kF16>;
  k->dequant_groups[b][DTypeIndex(DType::kBF16)] = scalar::DequantGroups<B, DType::kBF16>;
  k->dequant_groups[b][DTypeIndex(DType::kF32)] = scalar::DequantGroups<B, DType::kF32>;
}

template <DType I>
void FillConvertFrom(Kernels* k) {
  const int i = DTypeIndex(I);
  k->convert[i][DTypeIndex(DType::kF16)] = scalar::Convert<I, DType::kF16>;
  k->convert[i][DTypeIndex(DType::kBF16)] = scalar::Convert<I, DType::kBF16>;
  k->convert[i][DTypeIndex(DType::kF32)] = scalar::Convert<I, DType::kF32>;
}

}  // namespace

void FillScalarKernels(Kernels* k) {
  k->isa = Isa::kScalar;
  k->group_multiple = 1;
  FillBits<8>(k);
  FillBits<4>(k);
  FillBits<2>(k);
  FillConvertFrom<DType::kF16>(k);
  FillConvertFrom<DType::kBF16>(k);
  FillConvertFrom<DType::kF32>(k);
  k->unplane[0] = scalar::Unplane<2>;
  k->unplane[1] = scalar::Unplane<4>;
  k->plane[0] = scalar::Plane<2>;
  k->plane[1] = scalar::Plane<4>;
  k->widen_params = scalar::WidenParams;
  k->in_range = scalar::InRange;
  k->min_max = scalar::MinMax;
  k->group_range = scalar::GroupRange;
  k->make_params = scalar::MakeParams;
  k->quantize = scalar::Quantize;
  k->quantize_groups = scalar::QuantizeGroups;
  k->pack = scalar::Pack;
}

}  // namespace kdn::simd
