// lossless:entropy=rans on the device against the CPU: the byte planes decoded by
// libkdn/cuda/lossless_rans_launch.cu equal the format library's, for every dtype and a block of
// many segments; a damaged segment is an error on the device as on the CPU.
//
// Without a CUDA device these tests are skipped, saying so.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "kdn/codec.h"
#include "kdn/format.h"
#include "libkdn/cuda/lossless_rans_launch.h"
#include "store/format/codec_internal.h"

namespace kdn {
namespace {

std::string NoDeviceReason() {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    return std::string("cudaGetDeviceCount: ") + cudaGetErrorString(err);
  }
  return n == 0 ? "no CUDA device present" : "";
}

#define REQUIRE_CUDA_DEVICE()                                    \
  do {                                                           \
    const std::string why = NoDeviceReason();                    \
    if (!why.empty()) GTEST_SKIP() << "no CUDA device: " << why; \
  } while (0)

std::vector<std::byte> Values(uint64_t n, DType dt, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> f(n);
  for (auto& x : f) x = normal(rng) * ((rng() % 64) == 0 ? 20.0f : 1.0f);
  std::vector<std::byte> out(n * DTypeSize(dt));
  ConvertDType(DType::kF32, f.data(), dt, out.data(), n);
  return out;
}

// The planes decoded on the device, and the device decode's status.
Status DevicePlanes(const codec_internal::LosslessRansBlock& b, const std::vector<std::byte>& enc,
                    std::vector<std::byte>* planes) {
  void* d_enc = nullptr;
  void* d_planes = nullptr;
  EXPECT_EQ(cudaMalloc(&d_enc, enc.size()), cudaSuccess);
  EXPECT_EQ(cudaMalloc(&d_planes, planes->size()), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(d_enc, enc.data(), enc.size(), cudaMemcpyHostToDevice), cudaSuccess);
  const Status st = libkdn::DecodeLosslessRansOnDevice(b, static_cast<const uint8_t*>(d_enc),
                                                    static_cast<uint8_t*>(d_planes), nullptr);
  EXPECT_EQ(cudaMemcpy(planes->data(), d_planes, planes->size(), cudaMemcpyDeviceToHost),
            cudaSuccess);
  cudaFree(d_enc);
  cudaFree(d_planes);
  return st;
}

TEST(LosslessRansCudaTest, DevicePlanesEqualCpuPlanes) {
  REQUIRE_CUDA_DEVICE();
  const CodecSpec codec = *CodecSpec::Parse("lossless:entropy=rans");
  for (DType dt : {DType::kF16, DType::kBF16, DType::kF32}) {
    SCOPED_TRACE(std::string(DTypeName(dt)));
    const BlockShape shape{700, 1024, dt};
    const auto src = Values(shape.elements(), dt, 7);
    std::vector<std::byte> enc;
    ASSERT_TRUE(EncodeBlock(codec, KvKind::kKey, shape, src, &enc).ok());
    auto b = codec_internal::LosslessRansBlock::Parse(shape, enc);
    ASSERT_TRUE(b.ok()) << b.status().ToString();
    EXPECT_GT((*b)->view().n_segments, 1u);
    std::vector<std::byte> cpu(shape.bytes()), gpu(shape.bytes());
    ASSERT_TRUE(codec_internal::UndoRansStage(shape, enc, cpu).ok());
    const Status st = DevicePlanes(**b, enc, &gpu);
    ASSERT_TRUE(st.ok()) << st.ToString();
    EXPECT_TRUE(cpu == gpu);
  }
}

TEST(LosslessRansCudaTest, DamagedSegmentIsAnErrorOnTheDevice) {
  REQUIRE_CUDA_DEVICE();
  const BlockShape shape{2000, 256, DType::kBF16};
  const auto src = Values(shape.elements(), shape.dtype, 9);
  const CodecSpec codec = *CodecSpec::Parse("lossless:entropy=rans");
  std::vector<std::byte> enc;
  ASSERT_TRUE(EncodeBlock(codec, KvKind::kValue, shape, src, &enc).ok());
  auto b = codec_internal::LosslessRansBlock::Parse(shape, enc);
  ASSERT_TRUE(b.ok());
  const uint64_t last = (*b)->seg_begin()[(*b)->view().n_segments - 1];
  const uint64_t at = (*b)->segments_offset() + last + 200;
  enc[at] ^= std::byte{0xff};
  enc[at + 1] ^= std::byte{0x5a};
  std::vector<std::byte> cpu(shape.bytes()), gpu(shape.bytes());
  const Status cst = codec_internal::UndoRansStage(shape, enc, cpu);
  const Status st = DevicePlanes(**b, enc, &gpu);
  EXPECT_EQ(st.ok(), cst.ok()) << st.ToString() << " / " << cst.ToString();
  if (!st.ok()) {
    EXPECT_NE(st.message().find("lossless rANS segment"), std::string::npos) << st.ToString();
  }
}

}  // namespace
}  // namespace kdn
