// Launch configuration of the decode kernels: vector width, tile size, grid.
#include <algorithm>

#include "libkdn/cuda/cuda_util.h"
#include "libkdn/cuda/decode_kernels.cuh"
#include "libkdn/cuda/decode_launch.h"

namespace kdn::libkdn {
namespace {

// Vectors per thread block (8 per thread): enough work to amortize a block, small enough tiles
// that a few thousand tokens give every multiprocessor several blocks.
constexpr uint32_t kVecsPerBlock = 2048;

bool Divides(int64_t stride, uint32_t vec) {
  return stride % vec == 0;
}

// The widest run of consecutive channels a thread can load and store as one aligned vector: it
// must divide head_dim (a run stays in one head) and every stride that matters, and the bases must
// be aligned to the run's bytes (at most 16).
uint32_t PickVector(const DecodeArgs& a) {
  const uint32_t out_size = ElemSize(a.out_dtype);
  for (uint32_t vec : {8u, 4u, 2u}) {
    if (a.addr.head_dim % vec != 0) continue;
    if (!Divides(a.addr.block_stride, vec)) continue;
    if (a.addr.block_size > 1 && !Divides(a.addr.token_stride, vec)) continue;
    if (a.channels != a.addr.head_dim && !Divides(a.addr.head_stride, vec)) continue;
    const uintptr_t align = std::min<uint32_t>(16, vec * out_size);
    bool aligned = true;
    for (const DecodeBlockArgs& b : a.block) {
      if (b.out != nullptr && reinterpret_cast<uintptr_t>(b.out) % align != 0) aligned = false;
      if (b.payload != nullptr && reinterpret_cast<uintptr_t>(b.payload) % 16 != 0) aligned = false;
    }
    if (aligned) return vec;
  }
  return 1;
}

template <uint32_t kCodec>
void LaunchCodec(uint32_t vec, const DecodeTile& tile, dim3 grid, cudaStream_t stream) {
  switch (vec) {
    case 8:
      DecodeKernel<kCodec, 8><<<grid, kDecodeThreads, 0, stream>>>(tile);
      break;
    case 4:
      DecodeKernel<kCodec, 4><<<grid, kDecodeThreads, 0, stream>>>(tile);
      break;
    case 2:
      DecodeKernel<kCodec, 2><<<grid, kDecodeThreads, 0, stream>>>(tile);
      break;
    default:
      DecodeKernel<kCodec, 1><<<grid, kDecodeThreads, 0, stream>>>(tile);
      break;
  }
}

}  // namespace

Status LaunchDecode(const DecodeArgs& args, cudaStream_t stream) {
  if (args.tokens == 0 || (args.block[0].out == nullptr && args.block[1].out == nullptr)) {
    return Status::OK();
  }
  if (args.channels == 0 || args.addr.head_dim == 0 || args.channels % args.addr.head_dim != 0) {
    return Status::Internal("LaunchDecode: bad shape");
  }
  if (args.codec == kDecodeQuant &&
      (args.group_size == 0 || (args.bits != 2 && args.bits != 4 && args.bits != 8))) {
    return Status::Internal("LaunchDecode: bad quant parameters");
  }
  const uint32_t vec = PickVector(args);
  const uint32_t vecs_per_row = args.channels / vec;
  DecodeTile tile;
  tile.args = args;
  tile.tile_tokens = std::max(1u, kVecsPerBlock / vecs_per_row);
  const dim3 grid((args.tokens + tile.tile_tokens - 1) / tile.tile_tokens, 2);
  switch (args.codec) {
    case kDecodeRaw:
      LaunchCodec<kDecodeRaw>(vec, tile, grid, stream);
      break;
    case kDecodeLossless:
      LaunchCodec<kDecodeLossless>(vec, tile, grid, stream);
      break;
    case kDecodeQuant:
      LaunchCodec<kDecodeQuant>(vec, tile, grid, stream);
      break;
    default:
      return Status::Internal("LaunchDecode: unknown codec");
  }
  return CudaStatus(cudaGetLastError(), "decode kernel launch");
}

}  // namespace kdn::libkdn
