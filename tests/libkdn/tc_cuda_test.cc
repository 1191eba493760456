// The tc decoder on the device against the CPU: the same blocks decoded by libkdn/cuda/tc_launch.cu
// and by the format library give the same bytes, for every dtype, keys (RoPE re-applied) and
// values, several segments; a corrupt segment is an error on the device too.
//
// Without a CUDA device these tests are skipped, saying so.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "libkdn/cuda/tc_launch.h"
#include "kdn/codec.h"
#include "kdn/format.h"
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

// Decodes `enc` on the device into out_dtype; the status of the device decode.
Status DeviceDecode(const codec_internal::TcBlock& b, const std::vector<std::byte>& enc,
                    DType out_dtype, std::vector<std::byte>* out) {
  void* d_enc = nullptr;
  void* d_out = nullptr;
  EXPECT_EQ(cudaMalloc(&d_enc, enc.size()), cudaSuccess);
  EXPECT_EQ(cudaMalloc(&d_out, out->size()), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(d_enc, enc.data(), enc.size(), cudaMemcpyHostToDevice), cudaSuccess);
  const Status st = libkdn::DecodeTcOnDevice(b, static_cast<const uint8_t*>(d_enc),
                                          static_cast<uint32_t>(out_dtype), d_out, nullptr);
  EXPECT_EQ(cudaMemcpy(out->data(), d_out, out->size(), cudaMemcpyDeviceToHost), cudaSuccess);
  cudaFree(d_enc);
  cudaFree(d_out);
  return st;
}

TEST(TcCudaTest, DeviceDecodeEqualsCpuBitForBit) {
  REQUIRE_CUDA_DEVICE();
  ModelIdentity m = *ModelPreset("llama3-8b");
  for (const char* name : {"tc:q=2", "tc:q=8", "tc:q=6:t=id"}) {
    for (KvKind kind : {KvKind::kKey, KvKind::kValue}) {
      const BlockShape shape{700, m.channels(), m.dtype};
      const auto src = Values(shape.elements(), shape.dtype, 3);
      const CodecSpec codec = *CodecSpec::Parse(name);
      std::vector<std::byte> enc;
      ASSERT_TRUE(EncodeBlock(codec, kind, shape, src, &enc, BlockContext::For(m, 100, 1)).ok());
      auto b = codec_internal::TcBlock::Parse(shape, enc);
      ASSERT_TRUE(b.ok()) << b.status().ToString();
      EXPECT_GT((*b)->view().n_segments, 1u);
      for (DType dt : {DType::kF16, DType::kBF16, DType::kF32}) {
        SCOPED_TRACE(std::string(name) + (kind == KvKind::kKey ? " K " : " V ") +
                     std::string(DTypeName(dt)));
        std::vector<std::byte> cpu(shape.elements() * DTypeSize(dt)), gpu(cpu.size());
        ASSERT_TRUE(DecodeBlock(codec, kind, shape, enc, dt, cpu).ok());
        const Status st = DeviceDecode(**b, enc, dt, &gpu);
        ASSERT_TRUE(st.ok()) << st.ToString();
        EXPECT_TRUE(cpu == gpu);
      }
    }
  }
}

TEST(TcCudaTest, CorruptSegmentIsAnErrorOnTheDevice) {
  REQUIRE_CUDA_DEVICE();
  const BlockShape shape{2000, 256, DType::kF16};
  const auto src = Values(shape.elements(), shape.dtype, 5);
  const CodecSpec codec = *CodecSpec::Parse("tc:q=5");
  std::vector<std::byte> enc;
  ASSERT_TRUE(EncodeBlock(codec, KvKind::kValue, shape, src, &enc).ok());
  auto b = codec_internal::TcBlock::Parse(shape, enc);
  ASSERT_TRUE(b.ok());
  // Drop a word from the middle of the last segment's stream: it cannot end exactly.
  const uint64_t last = (*b)->seg_begin()[(*b)->view().n_segments - 1];
  const uint64_t at = (*b)->segments_offset() + last + 200;
  enc[at] ^= std::byte{0xff};
  enc[at + 1] ^= std::byte{0x5a};
  std::vector<std::byte> gpu(shape.bytes());
  const Status st = DeviceDecode(**b, enc, DType::kF16, &gpu);
  std::vector<std::byte> cpu(shape.bytes());
  const Status cst = DecodeBlock(codec, KvKind::kValue, shape, enc, DType::kF16, cpu);
  EXPECT_EQ(st.ok(), cst.ok()) << st.ToString() << " / " << cst.ToString();
  if (!st.ok()) {
    EXPECT_NE(st.message().find("tc segment"), std::string::npos) << st.ToString();
  }
}

}  // namespace
}  // namespace kdn
