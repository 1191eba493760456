// Helpers for the format tests: small caches built in memory, header edits that keep the header
// checksum valid (so that a test reaches the check it means to reach), random tensors.
#ifndef KDN_TESTS_FORMAT_FORMAT_TEST_UTIL_H_
#define KDN_TESTS_FORMAT_FORMAT_TEST_UTIL_H_

#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "kdn/codec.h"
#include "kdn/format.h"
#include "kdn/synthetic.h"
#include "store/format/element_math.h"
#include "store/format/kv_layout.h"
#include "test_util.h"

namespace kdn::test {

// A small model: 2 layers, 2 KV heads of 8 dims (16 channels).
inline ModelIdentity SmallModel(DType dtype = DType::kF16, uint32_t layers = 2,
                                uint32_t kv_heads = 2, uint32_t head_dim = 8) {
  ModelIdentity m;
  m.name = "test-model";
  m.n_layers = layers;
  m.n_heads = 2 * kv_heads;
  m.n_kv_heads = kv_heads;
  m.head_dim = head_dim;
  m.dtype = dtype;
  m.rope_style = RopeStyle::kNeox;
  m.rope_theta = 10000.0f;
  return m;
}

inline CodecSpec Codec(std::string_view text) {
  auto c = CodecSpec::Parse(text);
  EXPECT_TRUE(c.ok()) << c.status().ToString();
  return c.ok() ? *c : CodecSpec{};
}

// A complete synthetic file.
inline std::vector<std::byte> MakeFile(const ModelIdentity& m, uint32_t tokens,
                                       std::string_view codec, uint64_t seed = 1,
                                       uint32_t position = 0) {
  auto f = SynthesizeKvFile(m, tokens, Codec(codec), seed, position);
  EXPECT_TRUE(f.ok()) << f.status().ToString();
  return f.ok() ? std::move(*f) : std::vector<std::byte>{};
}

template <typename T>
inline T Get(const std::vector<std::byte>& f, size_t off) {
  T v;
  std::memcpy(&v, f.data() + off, sizeof v);
  return v;
}

template <typename T>
inline void Put(std::vector<std::byte>* f, size_t off, T v) {
  std::memcpy(f->data() + off, &v, sizeof v);
}

// Recomputes the header checksum after an edit (the file's header_bytes field says how far).
// Absurd header_bytes values are clamped to the bytes there are.
inline void ResealHeader(std::vector<std::byte>* f) {
  const uint64_t header_bytes =
      std::min<uint64_t>(Get<uint64_t>(*f, layout::kHeaderBytes), f->size());
  Put<uint64_t>(f, layout::kHeaderChecksum, 0);
  Put<uint64_t>(f, layout::kHeaderChecksum, HashBytes64(f->data(), header_bytes));
}

inline Result<KvHeader> Parse(const std::vector<std::byte>& f) {
  return ParseKvHeader(f, f.size());
}

// Opens the bytes and runs every check a reader has.
inline Status OpenAndVerify(const std::vector<std::byte>& f) {
  auto r = KvReader::Open(MemorySource(f));
  if (!r.ok()) return r.status();
  return (*r)->VerifyAll();
}

inline std::vector<std::byte> RandomBytes(size_t n, uint64_t seed) {
  std::vector<std::byte> out(n);
  auto rng = Rng(seed);
  for (auto& b : out) b = static_cast<std::byte>(rng() & 0xff);
  return out;
}

// Random tensor of `dtype`: normal values with a few outliers (and exact values of the dtype).
inline std::vector<std::byte> RandomTensor(uint64_t elements, DType dtype, uint64_t seed,
                                           float sigma = 1.0f) {
  auto rng = Rng(seed);
  std::normal_distribution<float> normal(0.0f, sigma);
  std::vector<float> f(elements);
  for (auto& x : f) x = normal(rng) * ((rng() % 64) == 0 ? 20.0f : 1.0f);
  std::vector<std::byte> out(elements * DTypeSize(dtype));
  ConvertDType(DType::kF32, f.data(), dtype, out.data(), elements);
  return out;
}

inline float LoadAsFloat(const std::byte* p, DType t, size_t i) {
  uint16_t h;
  float f;
  switch (t) {
    case DType::kF32:
      std::memcpy(&f, p + 4 * i, 4);
      return f;
    case DType::kF16:
      std::memcpy(&h, p + 2 * i, 2);
      return elem::HalfToFloat(h);
    case DType::kBF16:
      std::memcpy(&h, p + 2 * i, 2);
      return elem::Bf16ToFloat(h);
  }
  return 0;
}

}  // namespace kdn::test

#endif  // KDN_TESTS_FORMAT_FORMAT_TEST_UTIL_H_
