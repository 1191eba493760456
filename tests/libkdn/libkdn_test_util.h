// Helpers of the engine library's tests: synthetic caches on disk, reference decodes through the
// format library (KvReader::DecodeBlock), RAII for C API handles, and an independent statement of
// the destination layouts (written apart from the library's addressing on purpose).
#ifndef KDN_TESTS_LIBKDN_ENGINE_TEST_UTIL_H_
#define KDN_TESTS_LIBKDN_ENGINE_TEST_UTIL_H_

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kdn/codec.h"
#include "kdn/format.h"
#include "kdn/kdn.h"
#include "kdn/synthetic.h"
#include "test_util.h"

namespace kdn::test {

struct CtxDeleter {
  void operator()(kdn_ctx* c) const { kdn_ctx_destroy(c); }
};
struct CacheDeleter {
  void operator()(kdn_cache* c) const { kdn_close(c); }
};
using CtxPtr = std::unique_ptr<kdn_ctx, CtxDeleter>;
using CachePtr = std::unique_ptr<kdn_cache, CacheDeleter>;

inline CtxPtr MakeCtx(int device = -1) {
  kdn_ctx* ctx = nullptr;
  const kdn_status s = kdn_ctx_create(device, &ctx);
  EXPECT_EQ(s, KDN_OK) << kdn_last_error();
  return CtxPtr(ctx);
}

inline CachePtr OpenCache(kdn_ctx* ctx, const std::string& path) {
  kdn_cache* c = nullptr;
  const kdn_status s = kdn_open(ctx, path.c_str(), &c);
  EXPECT_EQ(s, KDN_OK) << path << ": " << kdn_last_error();
  return CachePtr(c);
}

inline ModelIdentity TestModel(DType dtype, RopeStyle style = RopeStyle::kNeox,
                               uint32_t n_layers = 3, uint32_t n_kv_heads = 2,
                               uint32_t head_dim = 16, uint32_t rotary_dim = 0) {
  ModelIdentity m;
  m.name = "engine-test";
  m.n_layers = n_layers;
  m.n_heads = n_kv_heads * 2;
  m.n_kv_heads = n_kv_heads;
  m.head_dim = head_dim;
  m.dtype = dtype;
  m.rope_style = style;
  m.rotary_dim = rotary_dim;
  m.rope_theta = 10000.0f;
  m.rope_scale = 1.0f;
  return m;
}

// The C descriptor of `m` (name points into m).
inline kdn_model_desc ToDesc(const ModelIdentity& m) {
  kdn_model_desc d{};
  d.name = m.name.c_str();
  d.n_layers = m.n_layers;
  d.n_heads = m.n_heads;
  d.n_kv_heads = m.n_kv_heads;
  d.head_dim = m.head_dim;
  d.dtype = static_cast<kdn_dtype>(m.dtype);
  d.rope_style = static_cast<kdn_rope_style>(m.rope_style);
  d.rotary_dim = m.rotary_dim;
  d.rope_theta = m.rope_theta;
  d.rope_scale = m.rope_scale;
  return d;
}

inline void WriteBytes(const std::string& path, const void* data, size_t size) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
  ASSERT_TRUE(f.good()) << path;
}

inline std::vector<std::byte> ReadBytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::vector<char> v((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::vector<std::byte> out(v.size());
  if (!v.empty()) std::memcpy(out.data(), v.data(), v.size());
  return out;
}

// A synthetic cache written to dir/name; returns its path.
inline std::string WriteSynthetic(const TempDir& dir, const std::string& name,
                                  const ModelIdentity& m, uint32_t n_tokens,
                                  const std::string& codec, uint64_t seed,
                                  uint32_t position_offset = 0, uint32_t head_groups = 1) {
  Result<CodecSpec> spec = CodecSpec::Parse(codec);
  EXPECT_TRUE(spec.ok()) << codec << ": " << spec.status().ToString();
  Result<std::vector<std::byte>> bytes =
      SynthesizeKvFile(m, n_tokens, *spec, seed, position_offset, head_groups);
  EXPECT_TRUE(bytes.ok()) << bytes.status().ToString();
  const std::string path = dir / name;
  WriteBytes(path, bytes->data(), bytes->size());
  return path;
}

// One block decoded by the format library: [tokens][channels] of `dtype`.
inline std::vector<std::byte> Reference(const std::string& path, uint32_t layer, KvKind kind,
                                        DType dtype) {
  Result<std::unique_ptr<KvReader>> r = KvReader::Open(path);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  if (!r.ok()) return {};
  std::vector<std::byte> out((*r)->header().decoded_block_bytes(dtype));
  const Status s = (*r)->DecodeBlock(layer, kind, dtype, out);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return out;
}

inline KvHeader HeaderOf(const std::string& path) {
  Result<std::unique_ptr<KvReader>> r = KvReader::Open(path);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? (*r)->header() : KvHeader{};
}

inline size_t ElemBytes(kdn_dtype t) {
  return t == KDN_F32 ? 4 : 2;
}

// Destination layouts, stated independently of the library: element offset of (token slot,
// head, dim) given the physical block and the position in it.
enum class Layout { kContiguous, kNhd, kHnd };
inline int64_t LayoutOffset(Layout l, uint32_t heads, uint32_t dim, uint32_t block_size,
                            int64_t phys, uint32_t in_block, uint32_t h, uint32_t d) {
  switch (l) {
    case Layout::kContiguous:
      return (phys * heads + h) * dim + d;  // block_size 1
    case Layout::kNhd:
      return ((phys * block_size + in_block) * heads + h) * dim + d;
    case Layout::kHnd:
      return ((phys * heads + h) * block_size + in_block) * dim + d;
  }
  return 0;
}

// A host buffer filled with a guard byte, so that writes outside the intended rows show up.
inline constexpr std::byte kGuard{0xA5};
inline std::vector<std::byte> Guarded(size_t bytes) {
  return std::vector<std::byte>(bytes, kGuard);
}

}  // namespace kdn::test

#endif  // KDN_TESTS_LIBKDN_ENGINE_TEST_UTIL_H_
