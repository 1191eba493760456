// The CUDA backend against the CPU backend: decoded bytes equal bit for bit for every codec,
// dtype and layout (guard bytes included); RoPE shift, blend, deviation and scatter agree within
// tolerance (by construction they are bit-identical too: same host tables, same KDN_HD math,
// no fused multiply-add on either side); events, streams and errors behave as documented.
//
// Without a CUDA device these tests are skipped, saying so.
#include <cuda_runtime_api.h>

#include <cmath>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "libkdn_test_util.h"
#include "store/format/element_math.h"

namespace kdn::test {
namespace {

std::string NoDeviceReason() {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    return std::string("cudaGetDeviceCount: ") + cudaGetErrorString(err);
  }
  if (n == 0) return "no CUDA device present";
  return "";
}

#define REQUIRE_CUDA_DEVICE()                                    \
  do {                                                           \
    const std::string why = NoDeviceReason();                    \
    if (!why.empty()) GTEST_SKIP() << "no CUDA device: " << why; \
  } while (0)

#define CUDA_OK(call) \
  ASSERT_EQ((call), cudaSuccess) << #call << ": " << cudaGetErrorString(cudaGetLastError())

// Device memory holding a copy of a host buffer, freed on destruction.
class DeviceBuffer {
 public:
  explicit DeviceBuffer(const std::vector<std::byte>& init) : size_(init.size()) {
    EXPECT_EQ(cudaMalloc(&ptr_, size_), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(ptr_, init.data(), size_, cudaMemcpyHostToDevice), cudaSuccess);
  }
  ~DeviceBuffer() { (void)cudaFree(ptr_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void* get() const { return ptr_; }
  std::vector<std::byte> Read() const {
    std::vector<std::byte> out(size_);
    EXPECT_EQ(cudaMemcpy(out.data(), ptr_, size_, cudaMemcpyDeviceToHost), cudaSuccess);
    return out;
  }

 private:
  void* ptr_ = nullptr;
  size_t size_;
};

// Per-layer K and V buffers of one layout, on the host and the device, both guard-filled.
struct Twin {
  std::vector<std::vector<std::byte>> host;  // [layer * 2 + kv]
  std::vector<std::unique_ptr<DeviceBuffer>> dev;
  std::vector<void*> hk, hv, dk, dv;
  kdn_dest hd{}, dd{};
  std::vector<int32_t> table;

  Twin(const ModelIdentity& m, Layout layout, uint32_t block_size, uint32_t tokens, DType out) {
    const uint32_t blocks =
        layout == Layout::kContiguous ? tokens : (tokens + block_size - 1) / block_size + 3;
    const size_t bytes = size_t{blocks} * (layout == Layout::kContiguous ? 1 : block_size) *
                         m.channels() * DTypeSize(out);
    for (uint32_t i = 0; i < 2 * m.n_layers; ++i) {
      host.push_back(Guarded(bytes));
      dev.push_back(std::make_unique<DeviceBuffer>(host.back()));
    }
    for (uint32_t l = 0; l < m.n_layers; ++l) {
      hk.push_back(host[2 * l].data());
      hv.push_back(host[2 * l + 1].data());
      dk.push_back(dev[2 * l]->get());
      dv.push_back(dev[2 * l + 1]->get());
    }
    const kdn_dtype dt = static_cast<kdn_dtype>(out);
    if (layout == Layout::kContiguous) {
      EXPECT_EQ(kdn_dest_contiguous(&hd, dt, m.n_layers, hk.data(), hv.data(), m.n_kv_heads,
                                    m.head_dim, tokens),
                KDN_OK);
      EXPECT_EQ(kdn_dest_contiguous(&dd, dt, m.n_layers, dk.data(), dv.data(), m.n_kv_heads,
                                    m.head_dim, tokens),
                KDN_OK);
    } else {
      const uint32_t logical = (tokens + block_size - 1) / block_size;
      // A permutation, with spare blocks that must stay untouched.
      for (uint32_t b = 0; b < logical; ++b) table.push_back(static_cast<int32_t>(blocks - 1 - b));
      const int hnd = layout == Layout::kHnd ? 1 : 0;
      EXPECT_EQ(kdn_dest_paged(&hd, dt, m.n_layers, hk.data(), hv.data(), m.n_kv_heads, m.head_dim,
                               block_size, hnd, table.data(), logical),
                KDN_OK);
      EXPECT_EQ(kdn_dest_paged(&dd, dt, m.n_layers, dk.data(), dv.data(), m.n_kv_heads, m.head_dim,
                               block_size, hnd, table.data(), logical),
                KDN_OK);
    }
  }
  void ExpectEqual(const std::string& what) const {
    for (size_t i = 0; i < host.size(); ++i) {
      EXPECT_TRUE(dev[i]->Read() == host[i])
          << what << ": layer " << i / 2 << (i % 2 ? " V" : " K");
    }
  }
};

class CudaDecode : public ::testing::TestWithParam<std::tuple<const char*, DType, DType, Layout>> {
};

TEST_P(CudaDecode, EqualsCpuBitForBit) {
  REQUIRE_CUDA_DEVICE();
  const auto [codec, model_dtype, out, layout] = GetParam();
  TempDir dir("kdn-cuda");
  CtxPtr cpu = MakeCtx(-1);
  CtxPtr gpu = MakeCtx(0);
  ASSERT_TRUE(gpu);
  const ModelIdentity m = TestModel(model_dtype, RopeStyle::kNeox, 3, 4, 64);
  const uint32_t n = 333;
  const std::string path = WriteSynthetic(dir, "a.kv", m, n, codec, 77);
  Twin t(m, layout, layout == Layout::kHnd ? 32 : 16, n + 5, out);
  CachePtr hc = OpenCache(cpu.get(), path);
  CachePtr dc = OpenCache(gpu.get(), path);
  ASSERT_EQ(kdn_load(hc.get(), 0, 3, &t.hd, 5, nullptr), KDN_OK) << kdn_last_error();
  ASSERT_EQ(kdn_sync(hc.get()), KDN_OK) << kdn_last_error();
  cudaStream_t stream;
  CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  ASSERT_EQ(kdn_load(dc.get(), 0, 3, &t.dd, 5, stream), KDN_OK) << kdn_last_error();
  for (uint32_t l = 0; l < 3; ++l) {
    void* ev = kdn_layer_event(dc.get(), l);
    ASSERT_NE(ev, nullptr);
    CUDA_OK(cudaStreamWaitEvent(stream, static_cast<cudaEvent_t>(ev), 0));
    ASSERT_EQ(kdn_layer_wait(dc.get(), l), KDN_OK) << kdn_last_error();
  }
  ASSERT_EQ(kdn_sync(dc.get()), KDN_OK) << kdn_last_error();
  CUDA_OK(cudaStreamSynchronize(stream));
  CUDA_OK(cudaStreamDestroy(stream));
  t.ExpectEqual(std::string(codec));
}

INSTANTIATE_TEST_SUITE_P(
    All, CudaDecode,
    ::testing::Combine(::testing::Values("raw", "lossless", "lossless:entropy=rans", "q8", "q4",
                                         "q2", "q4:g64+zstd", "tc:q=4", "tc:q=8:t=id"),
                       ::testing::Values(DType::kF16, DType::kBF16, DType::kF32),
                       ::testing::Values(DType::kF16, DType::kBF16, DType::kF32),
                       ::testing::Values(Layout::kContiguous, Layout::kNhd, Layout::kHnd)),
    [](const auto& info) {
      std::string n = std::string(std::get<0>(info.param)) + "_" +
                      std::string(DTypeName(std::get<1>(info.param))) + "_to_" +
                      std::string(DTypeName(std::get<2>(info.param))) + "_" +
                      (std::get<3>(info.param) == Layout::kContiguous ? "contig"
                       : std::get<3>(info.param) == Layout::kNhd      ? "nhd"
                                                                      : "hnd");
      for (char& ch : n) {
        if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
      }
      return n;
    });

// A file of head groups loads whole on the device: every group's block into its heads' channels,
// as the CPU backend loads it, for every codec and destination layout.
TEST(CudaDecodeGrouped, GroupedFileEqualsCpuBitForBit) {
  REQUIRE_CUDA_DEVICE();
  CtxPtr cpu = MakeCtx(-1);
  CtxPtr gpu = MakeCtx(0);
  ASSERT_TRUE(gpu);
  const ModelIdentity m = TestModel(DType::kBF16, RopeStyle::kNeox, 3, 4, 64);
  const uint32_t n = 203;
  for (const char* codec :
       {"raw", "lossless", "lossless:entropy=rans", "q8", "q4:g64+zstd", "q2", "tc:q=4"}) {
    for (uint32_t groups : {2u, 4u}) {
      for (Layout layout : {Layout::kContiguous, Layout::kNhd, Layout::kHnd}) {
        SCOPED_TRACE(std::string(codec) + ", " + std::to_string(groups) + " groups");
        TempDir dir("kdn-cuda");
        const std::string path = WriteSynthetic(dir, "a.kv", m, n, codec, 9, 0, groups);
        Twin t(m, layout, 16, n + 3, DType::kF32);
        CachePtr hc = OpenCache(cpu.get(), path);
        CachePtr dc = OpenCache(gpu.get(), path);
        ASSERT_EQ(kdn_load(hc.get(), 0, 3, &t.hd, 3, nullptr), KDN_OK) << kdn_last_error();
        ASSERT_EQ(kdn_sync(hc.get()), KDN_OK) << kdn_last_error();
        ASSERT_EQ(kdn_load(dc.get(), 0, 3, &t.dd, 3, nullptr), KDN_OK) << kdn_last_error();
        ASSERT_EQ(kdn_sync(dc.get()), KDN_OK) << kdn_last_error();
        t.ExpectEqual(codec);
      }
    }
  }
}

// Rows of odd alignment (head_dim 6: no 16-byte vectors) and slot mappings with skipped tokens.
TEST(CudaDecodeOdd, UnalignedHeadsAndSlots) {
  REQUIRE_CUDA_DEVICE();
  TempDir dir("kdn-cuda");
  CtxPtr cpu = MakeCtx(-1);
  CtxPtr gpu = MakeCtx(0);
  const ModelIdentity m = TestModel(DType::kF16, RopeStyle::kGptj, 2, 3, 6);
  const uint32_t n = 70;
  const std::string path = WriteSynthetic(dir, "a.kv", m, n, "q4", 5);
  Twin t(m, Layout::kNhd, 16, n, DType::kF16);
  std::vector<int64_t> slots(n);
  for (uint32_t i = 0; i < n; ++i)
    slots[i] = i % 7 == 3 ? -1 : static_cast<int64_t>((i * 13) % (16 * 8));
  t.hd.slot_mapping = t.dd.slot_mapping = slots.data();
  t.hd.n_slots = t.dd.n_slots = n;
  CachePtr hc = OpenCache(cpu.get(), path);
  CachePtr dc = OpenCache(gpu.get(), path);
  ASSERT_EQ(kdn_load(hc.get(), 0, 2, &t.hd, 0, nullptr), KDN_OK) << kdn_last_error();
  ASSERT_EQ(kdn_load(dc.get(), 0, 2, &t.dd, 0, nullptr), KDN_OK) << kdn_last_error();
  ASSERT_EQ(kdn_sync(hc.get()), KDN_OK) << kdn_last_error();
  ASSERT_EQ(kdn_sync(dc.get()), KDN_OK) << kdn_last_error();
  t.ExpectEqual("slots");
}

float AsFloat(DType t, const std::byte* p) {
  if (t == DType::kF32) {
    float f;
    std::memcpy(&f, p, 4);
    return f;
  }
  uint16_t h;
  std::memcpy(&h, p, 2);
  return t == DType::kF16 ? elem::HalfToFloat(h) : elem::Bf16ToFloat(h);
}

// Within one unit in the last place of the dtype (the math is designed to agree exactly).
void ExpectNearUlp(DType t, const std::vector<std::byte>& a, const std::vector<std::byte>& b,
                   const std::string& what) {
  ASSERT_EQ(a.size(), b.size());
  const size_t es = DTypeSize(t);
  const double ulp = t == DType::kF32 ? 1.2e-7 : t == DType::kF16 ? 9.8e-4 : 7.9e-3;
  size_t bad = 0;
  for (size_t i = 0; i < a.size(); i += es) {
    const float x = AsFloat(t, a.data() + i);
    const float y = AsFloat(t, b.data() + i);
    if (std::memcmp(a.data() + i, b.data() + i, es) == 0) continue;
    if (!(std::fabs(x - y) <= ulp * std::max(std::fabs(x), std::fabs(y)))) ++bad;
  }
  EXPECT_EQ(bad, 0u) << what;
}

TEST(CudaBlend, RopeShiftAndBlendAgreeWithCpu) {
  REQUIRE_CUDA_DEVICE();
  TempDir dir("kdn-cuda");
  CtxPtr cpu = MakeCtx(-1);
  CtxPtr gpu = MakeCtx(0);
  for (RopeStyle style : {RopeStyle::kNeox, RopeStyle::kGptj}) {
    for (DType out : {DType::kF16, DType::kBF16, DType::kF32}) {
      SCOPED_TRACE(std::string(RopeStyleName(style)) + " " + std::string(DTypeName(out)));
      ModelIdentity m = TestModel(DType::kF16, style, 2, 4, 64, 32);
      m.rope_theta = 500000.0f;
      const kdn_model_desc desc = ToDesc(m);
      const std::string a = WriteSynthetic(dir, "a.kv", m, 100, "q8", 1, 0);
      const std::string b = WriteSynthetic(dir, "b.kv", m, 150, "lossless", 2, 4000);
      Twin t(m, Layout::kHnd, 16, 260, out);
      const uint32_t offsets[2] = {3, 103};
      CachePtr ha = OpenCache(cpu.get(), a), hb = OpenCache(cpu.get(), b);
      CachePtr da = OpenCache(gpu.get(), a), db = OpenCache(gpu.get(), b);
      kdn_cache* hcs[2] = {ha.get(), hb.get()};
      kdn_cache* dcs[2] = {da.get(), db.get()};
      ASSERT_EQ(kdn_blend_load(hcs, 2, offsets, 77, &desc, 0, 2, &t.hd, nullptr), KDN_OK)
          << kdn_last_error();
      ASSERT_EQ(kdn_blend_load(dcs, 2, offsets, 77, &desc, 0, 2, &t.dd, nullptr), KDN_OK)
          << kdn_last_error();
      for (int i = 0; i < 2; ++i) {
        ASSERT_EQ(kdn_sync(hcs[i]), KDN_OK) << kdn_last_error();
        ASSERT_EQ(kdn_sync(dcs[i]), KDN_OK) << kdn_last_error();
      }
      for (size_t i = 0; i < t.host.size(); ++i)
        ExpectNearUlp(out, t.host[i], t.dev[i]->Read(), "blend");
      // Then a shift of part of the tokens, on both.
      ASSERT_EQ(kdn_rope_shift(cpu.get(), &desc, &t.hd, 0, 2, 10, 200, -12345, nullptr), KDN_OK)
          << kdn_last_error();
      ASSERT_EQ(kdn_rope_shift(gpu.get(), &desc, &t.dd, 0, 2, 10, 200, -12345, nullptr), KDN_OK)
          << kdn_last_error();
      CUDA_OK(cudaDeviceSynchronize());
      for (size_t i = 0; i < t.host.size(); ++i)
        ExpectNearUlp(out, t.host[i], t.dev[i]->Read(), "shift");
    }
  }
}

TEST(CudaRows, DeviationAndScatterAgreeWithCpu) {
  REQUIRE_CUDA_DEVICE();
  TempDir dir("kdn-cuda");
  CtxPtr cpu = MakeCtx(-1);
  CtxPtr gpu = MakeCtx(0);
  const ModelIdentity m = TestModel(DType::kBF16, RopeStyle::kNeox, 2, 4, 64);
  const uint32_t n = 200;
  const std::string path = WriteSynthetic(dir, "a.kv", m, n, "q4", 3);
  Twin t(m, Layout::kNhd, 16, n, DType::kBF16);
  CachePtr hc = OpenCache(cpu.get(), path);
  CachePtr dc = OpenCache(gpu.get(), path);
  ASSERT_EQ(kdn_load(hc.get(), 0, 2, &t.hd, 0, nullptr), KDN_OK);
  ASSERT_EQ(kdn_load(dc.get(), 0, 2, &t.dd, 0, nullptr), KDN_OK);
  ASSERT_EQ(kdn_sync(hc.get()), KDN_OK) << kdn_last_error();
  ASSERT_EQ(kdn_sync(dc.get()), KDN_OK) << kdn_last_error();
  // "Fresh" rows: the reference decode of another cache of the same model.
  const std::string other = WriteSynthetic(dir, "b.kv", m, n, "raw", 4);
  const std::vector<std::byte> fresh = Reference(other, 1, KvKind::kValue, DType::kBF16);
  DeviceBuffer dfresh(fresh);
  std::vector<uint32_t> hi(n), di(n);
  std::vector<float> hdev(n), ddev(n);
  uint32_t hn = 0, dn = 0;
  ASSERT_EQ(kdn_select_deviation(cpu.get(), fresh.data(), &t.hd, 1, KDN_V, 0, n, 0.2f, hi.data(),
                                 &hn, hdev.data(), nullptr),
            KDN_OK)
      << kdn_last_error();
  ASSERT_EQ(kdn_select_deviation(gpu.get(), dfresh.get(), &t.dd, 1, KDN_V, 0, n, 0.2f, di.data(),
                                 &dn, ddev.data(), nullptr),
            KDN_OK)
      << kdn_last_error();
  ASSERT_EQ(hn, 40u);
  ASSERT_EQ(dn, 40u);
  for (uint32_t i = 0; i < n; ++i) EXPECT_NEAR(ddev[i], hdev[i], 1e-6 * hdev[i]) << i;
  hi.resize(hn);
  di.resize(dn);
  EXPECT_EQ(hi, di);
  // Scatter the selected rows back, on both.
  std::vector<std::byte> rows(size_t{hn} * m.channels() * 2);
  for (uint32_t i = 0; i < hn; ++i) {
    std::memcpy(rows.data() + size_t{i} * m.channels() * 2,
                fresh.data() + size_t{hi[i]} * m.channels() * 2, m.channels() * 2);
  }
  DeviceBuffer drows(rows);
  ASSERT_EQ(kdn_scatter_rows(cpu.get(), rows.data(), hi.data(), hn, &t.hd, 1, KDN_V, nullptr),
            KDN_OK);
  ASSERT_EQ(kdn_scatter_rows(gpu.get(), drows.get(), hi.data(), hn, &t.dd, 1, KDN_V, nullptr),
            KDN_OK);
  CUDA_OK(cudaDeviceSynchronize());
  t.ExpectEqual("scatter");
}

TEST(CudaErrors, CorruptBlockHostPointerAndSave) {
  REQUIRE_CUDA_DEVICE();
  TempDir dir("kdn-cuda");
  CtxPtr gpu = MakeCtx(0);
  CtxPtr cpu = MakeCtx(-1);
  const ModelIdentity m = TestModel(DType::kF16, RopeStyle::kNeox, 3, 2, 16);
  const std::string good = WriteSynthetic(dir, "good.kv", m, 50, "raw", 8);
  std::vector<std::byte> bytes = ReadBytes(good);
  const KvHeader h = HeaderOf(good);
  bytes[h.block(2, KvKind::kKey).offset + 3] ^= std::byte{0x40};
  const std::string bad = dir / "bad.kv";
  WriteBytes(bad, bytes.data(), bytes.size());
  Twin t(m, Layout::kContiguous, 1, 50, DType::kF16);
  CachePtr c = OpenCache(gpu.get(), bad);
  ASSERT_EQ(kdn_load(c.get(), 0, 3, &t.dd, 0, nullptr), KDN_OK) << kdn_last_error();
  EXPECT_EQ(kdn_layer_wait(c.get(), 2), KDN_E_CORRUPT);
  EXPECT_NE(std::string(kdn_last_error()).find("layer 2 K block"), std::string::npos)
      << kdn_last_error();
  EXPECT_EQ(kdn_layer_event(c.get(), 2), nullptr);
  EXPECT_EQ(kdn_layer_wait(c.get(), 1), KDN_OK) << kdn_last_error();
  EXPECT_NE(kdn_layer_event(c.get(), 1), nullptr);
  EXPECT_EQ(kdn_sync(c.get()), KDN_E_CORRUPT);
  // Host memory handed to a CUDA context is refused.
  EXPECT_EQ(kdn_load(c.get(), 0, 3, &t.hd, 0, nullptr), KDN_E_INVALID_ARG);
  // kdn_save from device tensors writes the same file as from host tensors.
  CachePtr g = OpenCache(gpu.get(), good);
  ASSERT_EQ(kdn_load(g.get(), 0, 3, &t.dd, 0, nullptr), KDN_OK);
  ASSERT_EQ(kdn_sync(g.get()), KDN_OK) << kdn_last_error();
  const kdn_model_desc desc = ToDesc(m);
  const std::vector<uint32_t> tokens = h.tokens;
  const kdn_save_opts opts{"lossless", 0, 0};
  ASSERT_EQ(
      kdn_save(gpu.get(), &desc, tokens.data(), 50, 0, &t.dd, &opts, (dir / "from_gpu.kv").c_str()),
      KDN_OK)
      << kdn_last_error();
  CachePtr hcache = OpenCache(cpu.get(), good);
  ASSERT_EQ(kdn_load(hcache.get(), 0, 3, &t.hd, 0, nullptr), KDN_OK);
  ASSERT_EQ(kdn_sync(hcache.get()), KDN_OK);
  ASSERT_EQ(
      kdn_save(cpu.get(), &desc, tokens.data(), 50, 0, &t.hd, &opts, (dir / "from_cpu.kv").c_str()),
      KDN_OK)
      << kdn_last_error();
  EXPECT_TRUE(ReadBytes(dir / "from_gpu.kv") == ReadBytes(dir / "from_cpu.kv"));
}

}  // namespace
}  // namespace kdn::test
