// One file, many GPUs. Tensor-parallel head slicing (kdn_load_heads, kdn_blend_load_heads,
// kdn_tp_heads, kdn_save_heads): every rank of T loads its share of one file's KV heads into its
// own cache, and the union of the ranks' caches is the full load, bit for bit, for every codec, on
// the CPU backend; T ranks save one file. Pipeline stages: a stage that loads its layers reads
// only their blocks' bytes (counted by the kernel: /proc/self/io).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "libkdn_test_util.h"

namespace kdn::test {
namespace {

constexpr uint32_t kTokens = 40;  // more than one K quantization group, a partial last one

struct HeadRange {
  uint32_t begin = 0;
  uint32_t end = 0;
};

HeadRange TpHeads(uint32_t heads, uint32_t rank, uint32_t size) {
  HeadRange r;
  EXPECT_EQ(kdn_tp_heads(heads, rank, size, &r.begin, &r.end), KDN_OK) << kdn_last_error();
  return r;
}

TEST(TpHeads, SplitsHeadsEvenlyAndReplicatesThemPastTheirCount) {
  // 8 KV heads over 4 ranks: two each, in order.
  for (uint32_t r = 0; r < 4; ++r) {
    const HeadRange h = TpHeads(8, r, 4);
    EXPECT_EQ(h.begin, 2 * r);
    EXPECT_EQ(h.end, 2 * r + 2);
  }
  // 8 heads over 16 ranks (GQA): each head on two neighbouring ranks.
  for (uint32_t r = 0; r < 16; ++r) {
    const HeadRange h = TpHeads(8, r, 16);
    EXPECT_EQ(h.begin, r / 2);
    EXPECT_EQ(h.end, r / 2 + 1);
  }
  // An uneven split still covers every head once.
  uint32_t next = 0;
  for (uint32_t r = 0; r < 3; ++r) {
    const HeadRange h = TpHeads(8, r, 3);
    EXPECT_EQ(h.begin, next);
    EXPECT_GT(h.end, h.begin);
    next = h.end;
  }
  EXPECT_EQ(next, 8u);
  uint32_t b = 0, e = 0;
  EXPECT_EQ(kdn_tp_heads(8, 0, 12, &b, &e), KDN_E_INVALID_ARG);  // 12 ranks cannot share 8 heads
  EXPECT_EQ(kdn_tp_heads(8, 4, 4, &b, &e), KDN_E_INVALID_ARG);   // no rank 4 of 4
  EXPECT_EQ(kdn_tp_heads(0, 0, 1, &b, &e), KDN_E_INVALID_ARG);
  EXPECT_EQ(kdn_tp_heads(8, 0, 0, &b, &e), KDN_E_INVALID_ARG);
}

// A contiguous host destination of `heads` KV heads for every layer of `m`.
struct HostCache {
  std::vector<std::vector<std::byte>> k, v;
  std::vector<void*> k_ptr, v_ptr;
  kdn_dest dest{};

  HostCache(const ModelIdentity& m, uint32_t heads, kdn_dtype dtype) {
    const size_t bytes = size_t{kTokens} * heads * m.head_dim * ElemBytes(dtype);
    for (uint32_t l = 0; l < m.n_layers; ++l) {
      k.push_back(Guarded(bytes));
      v.push_back(Guarded(bytes));
    }
    for (uint32_t l = 0; l < m.n_layers; ++l) {
      k_ptr.push_back(k[l].data());
      v_ptr.push_back(v[l].data());
    }
    EXPECT_EQ(kdn_dest_contiguous(&dest, dtype, m.n_layers, k_ptr.data(), v_ptr.data(), heads,
                                  m.head_dim, kTokens),
              KDN_OK)
        << kdn_last_error();
  }
  // Token t, head h of layer l's K or V.
  const std::byte* at(uint32_t l, KvKind kind, uint32_t t, uint32_t h, uint32_t heads,
                      size_t head_bytes) const {
    const auto& buf = kind == KvKind::kKey ? k[l] : v[l];
    return buf.data() + (size_t{t} * heads + h) * head_bytes;
  }
};

// Every rank's slice against the full load's heads; counts how many ranks hold each head.
void ExpectRanksMatchFull(const ModelIdentity& m, const HostCache& full,
                          const std::vector<HostCache>& ranks, const std::vector<HeadRange>& heads,
                          kdn_dtype dtype) {
  const size_t head_bytes = size_t{m.head_dim} * ElemBytes(dtype);
  std::vector<uint32_t> holders(m.n_kv_heads, 0);
  for (size_t r = 0; r < ranks.size(); ++r) {
    const uint32_t n = heads[r].end - heads[r].begin;
    for (uint32_t h = heads[r].begin; h < heads[r].end; ++h) ++holders[h];
    for (uint32_t l = 0; l < m.n_layers; ++l) {
      for (KvKind kind : {KvKind::kKey, KvKind::kValue}) {
        for (uint32_t t = 0; t < kTokens; ++t) {
          for (uint32_t h = heads[r].begin; h < heads[r].end; ++h) {
            ASSERT_EQ(std::memcmp(ranks[r].at(l, kind, t, h - heads[r].begin, n, head_bytes),
                                  full.at(l, kind, t, h, m.n_kv_heads, head_bytes), head_bytes),
                      0)
                << "rank " << r << " layer " << l << (kind == KvKind::kKey ? " K" : " V")
                << " token " << t << " head " << h;
          }
        }
      }
    }
  }
  for (uint32_t h = 0; h < m.n_kv_heads; ++h) EXPECT_GE(holders[h], 1u) << "head " << h;
}

// preset, codec, dest dtype, head groups of the file
using SliceParam = std::tuple<std::string, std::string, kdn_dtype, uint32_t>;

class HeadSlices : public ::testing::TestWithParam<SliceParam> {};

TEST_P(HeadSlices, UnionOfRanksIsTheFullLoadBitForBit) {
  const auto& [preset, codec, dtype, groups] = GetParam();
  Result<ModelIdentity> m = ModelPreset(preset);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  TempDir dir("kdn-tp");
  const std::string path = WriteSynthetic(dir, "a.kv", *m, kTokens, codec, 7, 0, groups);
  ASSERT_EQ(HeaderOf(path).head_groups, groups);
  CtxPtr ctx = MakeCtx();
  CachePtr cache = OpenCache(ctx.get(), path);
  ASSERT_NE(cache, nullptr);

  HostCache full(*m, m->n_kv_heads, dtype);
  ASSERT_EQ(kdn_load(cache.get(), 0, m->n_layers, &full.dest, 0, nullptr), KDN_OK)
      << kdn_last_error();
  ASSERT_EQ(kdn_sync(cache.get()), KDN_OK) << kdn_last_error();

  // 1, 2, 4, 8 ranks, and twice as many ranks as KV heads (every head on two ranks).
  for (uint32_t tp : {1u, 2u, 4u, 8u, 2 * m->n_kv_heads}) {
    SCOPED_TRACE("tp " + std::to_string(tp));
    std::vector<HeadRange> heads;
    std::vector<HostCache> ranks;
    ranks.reserve(tp);
    for (uint32_t r = 0; r < tp; ++r) {
      heads.push_back(TpHeads(m->n_kv_heads, r, tp));
      ranks.emplace_back(*m, heads[r].end - heads[r].begin, dtype);
      ASSERT_EQ(kdn_load_heads(cache.get(), 0, m->n_layers, heads[r].begin, heads[r].end,
                               &ranks[r].dest, 0, nullptr),
                KDN_OK)
          << kdn_last_error();
    }
    ASSERT_EQ(kdn_sync(cache.get()), KDN_OK) << kdn_last_error();
    ExpectRanksMatchFull(*m, full, ranks, heads, dtype);
  }
}

INSTANTIATE_TEST_SUITE_P(AllCodecs, HeadSlices,
                         ::testing::Combine(::testing::Values("llama3-70b", "mistral-7b"),
                                            ::testing::Values("raw", "lossless",
                                                              "lossless:entropy=rans", "q8",
                                                              "q4+zstd", "q2:g64", "tc"),
                                            ::testing::Values(KDN_F16), ::testing::Values(1u, 8u)));
// Groups of several heads: a rank's range may cover part of a group, or several groups.
INSTANTIATE_TEST_SUITE_P(GroupsOfSeveralHeads, HeadSlices,
                         ::testing::Combine(::testing::Values("llama3-70b"),
                                            ::testing::Values("raw", "lossless", "q4", "tc"),
                                            ::testing::Values(KDN_F16), ::testing::Values(2u, 4u)));
// Another destination dtype: the slice is converted as it is decoded.
INSTANTIATE_TEST_SUITE_P(ToF32, HeadSlices,
                         ::testing::Combine(::testing::Values("mistral-7b"),
                                            ::testing::Values("raw", "lossless", "q4", "tc"),
                                            ::testing::Values(KDN_F32), ::testing::Values(1u, 8u)));

// Where grouping changes no value (raw and lossless store values as they are; q8/q4 quantize K per
// channel and V per 32 channels, which never straddle a group of 128-channel heads), a grouped
// file loads to exactly what the file of one group loads to, whole or by rank.
TEST(HeadGroups, GroupedFileLoadsToTheUngroupedValues) {
  Result<ModelIdentity> m = ModelPreset("llama3-70b");
  ASSERT_TRUE(m.ok());
  m->n_layers = 6;
  for (const char* codec : {"raw", "lossless", "lossless:entropy=rans", "q8", "q4+zstd"}) {
    SCOPED_TRACE(codec);
    TempDir dir("kdn-tp");
    const std::string one = WriteSynthetic(dir, "one.kv", *m, kTokens, codec, 5, 0, 1);
    const std::string eight = WriteSynthetic(dir, "eight.kv", *m, kTokens, codec, 5, 0, 8);
    CtxPtr ctx = MakeCtx();
    CachePtr a = OpenCache(ctx.get(), one);
    CachePtr b = OpenCache(ctx.get(), eight);
    ASSERT_NE(a, nullptr);
    ASSERT_NE(b, nullptr);
    HostCache fa(*m, m->n_kv_heads, KDN_F16), fb(*m, m->n_kv_heads, KDN_F16);
    ASSERT_EQ(kdn_load(a.get(), 0, m->n_layers, &fa.dest, 0, nullptr), KDN_OK) << kdn_last_error();
    ASSERT_EQ(kdn_load(b.get(), 0, m->n_layers, &fb.dest, 0, nullptr), KDN_OK) << kdn_last_error();
    ASSERT_EQ(kdn_sync(a.get()), KDN_OK) << kdn_last_error();
    ASSERT_EQ(kdn_sync(b.get()), KDN_OK) << kdn_last_error();
    for (uint32_t l = 0; l < m->n_layers; ++l) {
      EXPECT_TRUE(fa.k[l] == fb.k[l]) << "layer " << l << " K";
      EXPECT_TRUE(fa.v[l] == fb.v[l]) << "layer " << l << " V";
      // The format library's whole-layer decode of the grouped file agrees too.
      EXPECT_TRUE(Reference(eight, l, KvKind::kKey, DType::kF16) == fa.k[l]) << "layer " << l;
      EXPECT_TRUE(Reference(eight, l, KvKind::kValue, DType::kF16) == fa.v[l]) << "layer " << l;
    }
  }
}

// A paged HND destination (heads apart in memory) holds the rank's heads like a contiguous one.
TEST(HeadSlicesPaged, HndRankEqualsContiguousRank) {
  Result<ModelIdentity> m = ModelPreset("mistral-7b");
  ASSERT_TRUE(m.ok());
  TempDir dir("kdn-tp");
  const std::string path = WriteSynthetic(dir, "a.kv", *m, kTokens, "lossless", 3);
  CtxPtr ctx = MakeCtx();
  CachePtr cache = OpenCache(ctx.get(), path);
  ASSERT_NE(cache, nullptr);
  const HeadRange heads = TpHeads(m->n_kv_heads, 1, 4);
  const uint32_t n = heads.end - heads.begin;
  HostCache flat(*m, n, KDN_F16);
  ASSERT_EQ(kdn_load_heads(cache.get(), 0, m->n_layers, heads.begin, heads.end, &flat.dest, 0,
                           nullptr),
            KDN_OK)
      << kdn_last_error();

  constexpr uint32_t kBlock = 16;
  const uint32_t n_blocks = (kTokens + kBlock - 1) / kBlock;
  const size_t elems = size_t{n_blocks} * kBlock * n * m->head_dim;
  std::vector<std::vector<std::byte>> k(m->n_layers, Guarded(elems * 2));
  std::vector<std::vector<std::byte>> v(m->n_layers, Guarded(elems * 2));
  std::vector<void*> kp, vp;
  for (uint32_t l = 0; l < m->n_layers; ++l) {
    kp.push_back(k[l].data());
    vp.push_back(v[l].data());
  }
  std::vector<int32_t> table(n_blocks);
  for (uint32_t b = 0; b < n_blocks; ++b) table[b] = static_cast<int32_t>(n_blocks - 1 - b);
  kdn_dest paged{};
  ASSERT_EQ(kdn_dest_paged(&paged, KDN_F16, m->n_layers, kp.data(), vp.data(), n, m->head_dim,
                           kBlock, 1, table.data(), n_blocks),
            KDN_OK);
  ASSERT_EQ(kdn_load_heads(cache.get(), 0, m->n_layers, heads.begin, heads.end, &paged, 0,
                           nullptr),
            KDN_OK)
      << kdn_last_error();
  ASSERT_EQ(kdn_sync(cache.get()), KDN_OK) << kdn_last_error();
  const size_t head_bytes = size_t{m->head_dim} * 2;
  for (uint32_t l = 0; l < m->n_layers; ++l) {
    for (uint32_t t = 0; t < kTokens; ++t) {
      for (uint32_t h = 0; h < n; ++h) {
        const int64_t off = LayoutOffset(Layout::kHnd, n, m->head_dim, kBlock,
                                         table[t / kBlock], t % kBlock, h, 0);
        ASSERT_EQ(std::memcmp(k[l].data() + off * 2, flat.at(l, KvKind::kKey, t, h, n, head_bytes),
                              head_bytes),
                  0)
            << "layer " << l << " token " << t << " head " << h;
        ASSERT_EQ(std::memcmp(v[l].data() + off * 2,
                              flat.at(l, KvKind::kValue, t, h, n, head_bytes), head_bytes),
                  0);
      }
    }
  }
}

// A blend of two caches per rank: the keys are re-rotated per head, so a rank's blend equals its
// heads of the full blend.
TEST(HeadSlicesBlend, RankBlendIsItsHeadsOfTheFullBlend) {
  Result<ModelIdentity> m = ModelPreset("mistral-7b");
  ASSERT_TRUE(m.ok());
  constexpr uint32_t kHalf = kTokens / 2;
  // The second cache in one head group, then in 8 (its keys re-rotated group by group): raw
  // values, so both blends must be the same bits.
  std::vector<std::vector<std::byte>> first_k;
  for (uint32_t b_groups : {1u, 8u}) {
    SCOPED_TRACE("b.kv in " + std::to_string(b_groups) + " head groups");
    TempDir dir("kdn-tp");
    const std::string a = WriteSynthetic(dir, "a.kv", *m, kHalf, "q4", 1);
    const std::string b = WriteSynthetic(dir, "b.kv", *m, kHalf, "raw", 2, 100, b_groups);
    CtxPtr ctx = MakeCtx();
    CachePtr ca = OpenCache(ctx.get(), a);
    CachePtr cb = OpenCache(ctx.get(), b);
    ASSERT_NE(ca, nullptr);
    ASSERT_NE(cb, nullptr);
    kdn_cache* caches[2] = {ca.get(), cb.get()};
    const uint32_t offsets[2] = {0, kHalf};
    const kdn_model_desc desc = ToDesc(*m);

    HostCache full(*m, m->n_kv_heads, KDN_F16);
    ASSERT_EQ(kdn_blend_load(caches, 2, offsets, 5, &desc, 0, m->n_layers, &full.dest, nullptr),
              KDN_OK)
        << kdn_last_error();
    constexpr uint32_t kTp = 4;
    std::vector<HeadRange> heads;
    std::vector<HostCache> ranks;
    ranks.reserve(kTp);
    for (uint32_t r = 0; r < kTp; ++r) {
      heads.push_back(TpHeads(m->n_kv_heads, r, kTp));
      ranks.emplace_back(*m, heads[r].end - heads[r].begin, KDN_F16);
      ASSERT_EQ(kdn_blend_load_heads(caches, 2, offsets, 5, &desc, 0, m->n_layers, heads[r].begin,
                                     heads[r].end, &ranks[r].dest, nullptr),
                KDN_OK)
          << kdn_last_error();
    }
    ASSERT_EQ(kdn_sync(ca.get()), KDN_OK) << kdn_last_error();
    ASSERT_EQ(kdn_sync(cb.get()), KDN_OK) << kdn_last_error();
    ExpectRanksMatchFull(*m, full, ranks, heads, KDN_F16);
    if (first_k.empty()) {
      first_k = full.k;
    } else {
      for (uint32_t l = 0; l < m->n_layers; ++l) EXPECT_TRUE(full.k[l] == first_k[l]) << l;
    }
  }
}

// Tensors of every layer of `m` over kTokens tokens, whole and cut into ranks' shares.
struct SaveSource {
  std::vector<std::vector<std::byte>> k, v;  // [tokens][all heads][head_dim] per layer
  std::vector<uint32_t> tokens;

  explicit SaveSource(const ModelIdentity& m) {
    const size_t bytes = size_t{kTokens} * m.channels() * DTypeSize(m.dtype);
    for (uint32_t l = 0; l < m.n_layers; ++l) {
      k.emplace_back(bytes);
      v.emplace_back(bytes);
      EXPECT_TRUE(SynthesizeLayerKv(m, kTokens, l, 11, k.back(), v.back()).ok());
    }
    tokens = SynthesizeTokens(kTokens, 11);
  }
};

// One rank's own cache: its heads copied out of the whole tensors.
struct RankSource {
  std::vector<std::vector<std::byte>> k, v;
  std::vector<void*> kp, vp;
  kdn_dest dest{};
  RankSource(const ModelIdentity& m, const SaveSource& src, HeadRange heads) {
    const uint32_t n = heads.end - heads.begin;
    const size_t head_bytes = size_t{m.head_dim} * DTypeSize(m.dtype);
    for (uint32_t l = 0; l < m.n_layers; ++l) {
      k.emplace_back(size_t{kTokens} * n * head_bytes);
      v.emplace_back(size_t{kTokens} * n * head_bytes);
      for (uint32_t t = 0; t < kTokens; ++t) {
        const size_t from = (size_t{t} * m.n_kv_heads + heads.begin) * head_bytes;
        std::memcpy(k[l].data() + t * n * head_bytes, src.k[l].data() + from, n * head_bytes);
        std::memcpy(v[l].data() + t * n * head_bytes, src.v[l].data() + from, n * head_bytes);
      }
    }
    for (uint32_t l = 0; l < m.n_layers; ++l) {
      kp.push_back(k[l].data());
      vp.push_back(v[l].data());
    }
    EXPECT_EQ(kdn_dest_contiguous(&dest, static_cast<kdn_dtype>(m.dtype), m.n_layers, kp.data(),
                                  vp.data(), n, m.head_dim, kTokens),
              KDN_OK);
  }
};

std::vector<std::string> Names(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    names.push_back(e.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

// The file one rank saves with every head.
std::string SaveWhole(kdn_ctx* ctx, const ModelIdentity& m, const SaveSource& src,
                      const kdn_save_opts& opts, const std::string& path) {
  RankSource all(m, src, HeadRange{0, m.n_kv_heads});
  const kdn_model_desc desc = ToDesc(m);
  EXPECT_EQ(kdn_save(ctx, &desc, src.tokens.data(), kTokens, 3, &all.dest, &opts, path.c_str()),
            KDN_OK)
      << kdn_last_error();
  return path;
}

class SaveByRanks : public ::testing::TestWithParam<const char*> {};

TEST_P(SaveByRanks, FourRanksWriteTheFileOneRankWrites) {
  Result<ModelIdentity> m = ModelPreset("mistral-7b");
  ASSERT_TRUE(m.ok());
  const SaveSource src(*m);
  TempDir one_dir("kdn-tp"), dir("kdn-tp");
  CtxPtr ctx = MakeCtx();
  const kdn_save_opts opts{GetParam(), 16, 0};
  const std::string whole = SaveWhole(ctx.get(), *m, src, opts, one_dir / "a.kv");
  const std::string path = dir / "a.kv";
  const kdn_model_desc desc = ToDesc(*m);
  // Ranks out of order; the file appears with the last one, not before.
  const uint32_t order[4] = {2, 0, 3, 1};
  for (int i = 0; i < 4; ++i) {
    const HeadRange heads = TpHeads(m->n_kv_heads, order[i], 4);
    RankSource rank(*m, src, heads);
    int wrote = -1;
    ASSERT_EQ(kdn_save_heads(ctx.get(), &desc, src.tokens.data(), kTokens, 3, heads.begin,
                             heads.end, &rank.dest, &opts, path.c_str(), &wrote),
              KDN_OK)
        << kdn_last_error();
    EXPECT_EQ(wrote, i == 3 ? 1 : 0) << "rank " << order[i];
    EXPECT_EQ(std::filesystem::exists(path), i == 3) << "after rank " << order[i];
  }
  EXPECT_EQ(Names(dir.str()), std::vector<std::string>{"a.kv"}) << "parts left behind";
  EXPECT_TRUE(ReadBytes(path) == ReadBytes(whole)) << "4 ranks' file differs from 1 rank's";
}

INSTANTIATE_TEST_SUITE_P(Codecs, SaveByRanks, ::testing::Values("raw", "lossless", "q4+zstd", "tc"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& ch : n) {
                             if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           }
                           return n;
                         });

// kdn_save_heads_ex with head groups: the ranks' file is the grouped file one kdn_save_ex writes,
// byte for byte; a NULL layout means the default (8 groups for 8 KV heads).
TEST(SaveByRanksGrouped, FourRanksWriteTheGroupedFileOneRankWrites) {
  Result<ModelIdentity> m = ModelPreset("mistral-7b");
  ASSERT_TRUE(m.ok());
  m->n_layers = 6;
  const SaveSource src(*m);
  const kdn_model_desc desc = ToDesc(*m);
  CtxPtr ctx = MakeCtx();
  for (const char* codec : {"raw", "lossless", "q4+zstd", "tc"}) {
    for (uint32_t groups : {0u, 2u, 8u}) {
      SCOPED_TRACE(std::string(codec) + ", head_groups " + std::to_string(groups));
      const kdn_save_opts opts{codec, 16, 0};
      const kdn_save_layout layout{sizeof(kdn_save_layout), groups};
      // 0 is the default, passed both ways: as the field and as a NULL layout.
      const kdn_save_layout* lp = groups == 0 ? nullptr : &layout;
      TempDir one_dir("kdn-tp"), dir("kdn-tp");
      const std::string whole = one_dir / "a.kv";
      RankSource all(*m, src, HeadRange{0, m->n_kv_heads});
      ASSERT_EQ(kdn_save_ex(ctx.get(), &desc, src.tokens.data(), kTokens, 3, &all.dest, &opts, lp,
                            whole.c_str()),
                KDN_OK)
          << kdn_last_error();
      EXPECT_EQ(HeaderOf(whole).head_groups, groups == 0 ? 8u : groups);
      const std::string path = dir / "a.kv";
      const uint32_t order[4] = {1, 3, 0, 2};
      for (int i = 0; i < 4; ++i) {
        const HeadRange heads = TpHeads(m->n_kv_heads, order[i], 4);
        RankSource rank(*m, src, heads);
        int wrote = -1;
        ASSERT_EQ(kdn_save_heads_ex(ctx.get(), &desc, src.tokens.data(), kTokens, 3, heads.begin,
                                    heads.end, &rank.dest, &opts, &layout, path.c_str(), &wrote),
                  KDN_OK)
            << kdn_last_error();
        EXPECT_EQ(wrote, i == 3 ? 1 : 0) << "rank " << order[i];
      }
      EXPECT_EQ(Names(dir.str()), std::vector<std::string>{"a.kv"}) << "parts left behind";
      EXPECT_TRUE(ReadBytes(path) == ReadBytes(whole)) << "4 ranks' file differs from 1 rank's";
      EXPECT_TRUE(VerifyKv(**OpenFileSource(path)).ok());
    }
  }
  // kdn_save writes one group, as it always did; a layout with a count that does not divide the
  // KV heads, or a struct_size too small for its first field, is refused.
  TempDir dir("kdn-tp");
  RankSource all(*m, src, HeadRange{0, m->n_kv_heads});
  const kdn_save_opts opts{"raw", 0, 0};
  const std::string plain = dir / "plain.kv";
  ASSERT_EQ(
      kdn_save(ctx.get(), &desc, src.tokens.data(), kTokens, 3, &all.dest, &opts, plain.c_str()),
      KDN_OK);
  EXPECT_EQ(HeaderOf(plain).head_groups, 1u);
  const std::string bad = dir / "bad.kv";
  kdn_save_layout three{sizeof(kdn_save_layout), 3};
  EXPECT_EQ(kdn_save_ex(ctx.get(), &desc, src.tokens.data(), kTokens, 3, &all.dest, &opts, &three,
                        bad.c_str()),
            KDN_E_INVALID_ARG);
  EXPECT_NE(std::string(kdn_last_error()).find("must divide n_kv_heads 8"), std::string::npos)
      << kdn_last_error();
  kdn_save_layout small{4, 8};
  EXPECT_EQ(kdn_save_ex(ctx.get(), &desc, src.tokens.data(), kTokens, 3, &all.dest, &opts, &small,
                        bad.c_str()),
            KDN_E_INVALID_ARG);
  EXPECT_FALSE(std::filesystem::exists(bad));
}

TEST(SaveByRanksConcurrent, EightRanksAtOnceWriteTheOneFile) {
  Result<ModelIdentity> m = ModelPreset("llama3-70b");
  ASSERT_TRUE(m.ok());
  m->n_layers = 4;  // the head shape is what matters here; fewer layers keep the test short
  const SaveSource src(*m);
  TempDir one_dir("kdn-tp"), dir("kdn-tp");
  CtxPtr ctx = MakeCtx();
  const kdn_save_opts opts{"q4", 0, 0};
  const std::string whole = SaveWhole(ctx.get(), *m, src, opts, one_dir / "a.kv");
  const std::string path = dir / "a.kv";
  const kdn_model_desc desc = ToDesc(*m);
  // A part a different save left at this path (other tokens) is neither used nor removed.
  {
    SaveSource other(*m);
    other.tokens[0] ^= 1;
    RankSource stale(*m, other, HeadRange{0, 4});
    int wrote = -1;
    ASSERT_EQ(kdn_save_heads(ctx.get(), &desc, other.tokens.data(), kTokens, 3, 0, 4, &stale.dest,
                             &opts, path.c_str(), &wrote),
              KDN_OK)
        << kdn_last_error();
    EXPECT_EQ(wrote, 0);
  }
  // Names that only look like parts: not parsed as head ranges, never opened as parts, left alone.
  const std::vector<std::string> junk = {".a.kv.kdn-heads.+0-8", ".a.kv.kdn-heads.0-8x",
                                         ".a.kv.kdn-heads.4294967296-8", ".a.kv.kdn-heads.-1-8",
                                         ".a.kv.kdn-heads. 0-8", ".a.kv.kdn-heads.0-9",
                                         ".a.kv.kdn-heads.00-8"};
  for (const std::string& name : junk) WriteBytes(dir / name, "x", 1);
  std::vector<std::unique_ptr<RankSource>> ranks;
  std::vector<HeadRange> heads;
  for (uint32_t r = 0; r < 8; ++r) {
    heads.push_back(TpHeads(m->n_kv_heads, r, 8));
    ranks.push_back(std::make_unique<RankSource>(*m, src, heads[r]));
  }
  std::vector<int> wrote(8, -1);
  std::vector<kdn_status> rc(8, KDN_E_INTERNAL);
  std::vector<std::thread> threads;
  for (uint32_t r = 0; r < 8; ++r) {
    threads.emplace_back([&, r] {
      rc[r] = kdn_save_heads(ctx.get(), &desc, src.tokens.data(), kTokens, 3, heads[r].begin,
                             heads[r].end, &ranks[r]->dest, &opts, path.c_str(), &wrote[r]);
    });
  }
  for (std::thread& t : threads) t.join();
  int writers = 0;
  for (uint32_t r = 0; r < 8; ++r) {
    EXPECT_EQ(rc[r], KDN_OK) << "rank " << r;
    writers += wrote[r];
  }
  EXPECT_GE(writers, 1);
  EXPECT_TRUE(ReadBytes(path) == ReadBytes(whole));
  std::vector<std::string> left = junk;
  left.push_back(".a.kv.kdn-heads.0-4");
  left.push_back("a.kv");
  std::sort(left.begin(), left.end());
  EXPECT_EQ(Names(dir.str()), left);
}

// Bytes this process has read through read(2)/pread(2) so far, as the kernel counts them.
uint64_t BytesReadByProcess() {
  std::ifstream io("/proc/self/io");
  std::string key;
  uint64_t value = 0;
  while (io >> key >> value) {
    if (key == "rchar:") return value;
  }
  ADD_FAILURE() << "no rchar in /proc/self/io";
  return 0;
}

TEST(PipelineStages, AStageReadsOnlyItsLayersBlocks) {
  Result<ModelIdentity> m = ModelPreset("mistral-7b");
  ASSERT_TRUE(m.ok());
  TempDir dir("kdn-pp");
  const std::string path = WriteSynthetic(dir, "a.kv", *m, 600, "q4+zstd", 5);
  const KvHeader h = HeaderOf(path);
  CtxPtr ctx = MakeCtx();
  CachePtr cache = OpenCache(ctx.get(), path);  // the header is read here, before counting
  ASSERT_NE(cache, nullptr);
  constexpr uint32_t kStages = 4;
  const uint32_t per_stage = m->n_layers / kStages;
  uint64_t all_blocks = 0;
  for (const BlockEntry& b : h.blocks) all_blocks += (b.encoded_bytes + 4095) / 4096 * 4096;
  for (uint32_t s = 0; s < kStages; ++s) {
    const uint32_t first = s * per_stage, last = first + per_stage;
    // The stage's cache holds its layers only: the other layers' entries are NULL.
    const size_t bytes = size_t{600} * m->channels() * 2;
    std::vector<std::vector<std::byte>> k(m->n_layers), v(m->n_layers);
    std::vector<void*> kp(m->n_layers, nullptr), vp(m->n_layers, nullptr);
    for (uint32_t l = first; l < last; ++l) {
      k[l].resize(bytes);
      v[l].resize(bytes);
      kp[l] = k[l].data();
      vp[l] = v[l].data();
    }
    kdn_dest d{};
    ASSERT_EQ(kdn_dest_contiguous(&d, KDN_F16, m->n_layers, kp.data(), vp.data(), m->n_kv_heads,
                                  m->head_dim, 600),
              KDN_OK);
    uint64_t expected = 0;
    for (uint32_t l = first; l < last; ++l) {
      for (KvKind kind : {KvKind::kKey, KvKind::kValue}) {
        expected += (h.block(l, kind).encoded_bytes + 4095) / 4096 * 4096;
      }
    }
    const uint64_t before = BytesReadByProcess();
    ASSERT_EQ(kdn_load(cache.get(), first, last, &d, 0, nullptr), KDN_OK) << kdn_last_error();
    ASSERT_EQ(kdn_sync(cache.get()), KDN_OK) << kdn_last_error();
    const uint64_t read = BytesReadByProcess() - before;
    // The count includes reading /proc/self/io itself once (about 110 bytes): nothing else.
    EXPECT_GE(read, expected) << "stage " << s << " of layers [" << first << ", " << last << ")";
    EXPECT_LE(read, expected + 256) << "stage " << s << " of layers [" << first << ", " << last
                                    << ")";
    EXPECT_LT(read, all_blocks / kStages + all_blocks / 20) << "stage " << s;
    for (uint32_t l = first; l < last; ++l) {
      EXPECT_TRUE(k[l] == Reference(path, l, KvKind::kKey, DType::kF16)) << "layer " << l;
      EXPECT_TRUE(v[l] == Reference(path, l, KvKind::kValue, DType::kF16)) << "layer " << l;
    }
  }
}

// One tensor-parallel rank of 8 on a file of 8 head groups reads its group's blocks and nothing
// else (the kernel's count): an eighth of the blocks' bytes, whatever the codec.
TEST(HeadGroups, OneRankOfEightReadsOnlyItsGroupsBlocks) {
  Result<ModelIdentity> m = ModelPreset("mistral-7b");
  ASSERT_TRUE(m.ok());
  constexpr uint32_t kN = 600;
  for (const char* codec : {"raw", "lossless", "q4+zstd", "q2", "tc"}) {
    SCOPED_TRACE(codec);
    TempDir dir("kdn-tp");
    const std::string path = WriteSynthetic(dir, "a.kv", *m, kN, codec, 5, 0, 8);
    const KvHeader h = HeaderOf(path);
    ASSERT_EQ(h.head_groups, 8u);
    CtxPtr ctx = MakeCtx();
    CachePtr cache = OpenCache(ctx.get(), path);  // the header is read here, before counting
    ASSERT_NE(cache, nullptr);
    uint64_t all_blocks = 0;
    for (const BlockEntry& b : h.blocks) all_blocks += (b.encoded_bytes + 4095) / 4096 * 4096;
    for (uint32_t r : {0u, 5u, 7u}) {
      const HeadRange heads = TpHeads(m->n_kv_heads, r, 8);
      const size_t bytes = size_t{kN} * m->head_dim * 2;
      std::vector<std::vector<std::byte>> k(m->n_layers, std::vector<std::byte>(bytes));
      std::vector<std::vector<std::byte>> v(m->n_layers, std::vector<std::byte>(bytes));
      std::vector<void*> kp, vp;
      for (uint32_t l = 0; l < m->n_layers; ++l) {
        kp.push_back(k[l].data());
        vp.push_back(v[l].data());
      }
      kdn_dest d{};
      ASSERT_EQ(
          kdn_dest_contiguous(&d, KDN_F16, m->n_layers, kp.data(), vp.data(), 1, m->head_dim, kN),
          KDN_OK);
      uint64_t expected = 0;
      for (uint32_t l = 0; l < m->n_layers; ++l) {
        for (KvKind kind : {KvKind::kKey, KvKind::kValue}) {
          expected += (h.block(l, kind, r).encoded_bytes + 4095) / 4096 * 4096;
        }
      }
      const uint64_t before = BytesReadByProcess();
      ASSERT_EQ(kdn_load_heads(cache.get(), 0, m->n_layers, heads.begin, heads.end, &d, 0, nullptr),
                KDN_OK)
          << kdn_last_error();
      ASSERT_EQ(kdn_sync(cache.get()), KDN_OK) << kdn_last_error();
      const uint64_t read = BytesReadByProcess() - before;
      // The count includes reading /proc/self/io itself once (about 110 bytes): nothing else.
      EXPECT_GE(read, expected) << "rank " << r;
      EXPECT_LE(read, expected + 256) << "rank " << r;
      EXPECT_LE(read, all_blocks / 8 + all_blocks / 20) << "rank " << r;
      // And the rank's head is that head of the whole layer.
      for (uint32_t l = 0; l < m->n_layers; l += 7) {
        const std::vector<std::byte> ref = Reference(path, l, KvKind::kValue, DType::kF16);
        for (uint32_t t = 0; t < kN; t += 13) {
          ASSERT_EQ(std::memcmp(v[l].data() + size_t{t} * m->head_dim * 2,
                                ref.data() + (size_t{t} * m->n_kv_heads + r) * m->head_dim * 2,
                                size_t{m->head_dim} * 2),
                    0)
              << "rank " << r << " layer " << l << " token " << t;
        }
      }
    }
  }
}

// A corrupt head group's block fails the loads that read it, naming the layer, K/V and group;
// ranks whose heads are in other groups never read it and load.
TEST(HeadGroups, CorruptGroupBlockFailsOnlyTheRanksThatReadIt) {
  Result<ModelIdentity> m = ModelPreset("mistral-7b");
  ASSERT_TRUE(m.ok());
  m->n_layers = 4;
  TempDir dir("kdn-tp");
  const std::string path = WriteSynthetic(dir, "a.kv", *m, kTokens, "q4", 3, 0, 4);
  const KvHeader h = HeaderOf(path);
  std::vector<std::byte> bytes = ReadBytes(path);
  const BlockEntry& b = h.block(2, KvKind::kValue, 1);  // heads 2..3
  bytes[b.offset + b.encoded_bytes - 1] ^= std::byte{0x40};
  WriteBytes(path, bytes.data(), bytes.size());
  CtxPtr ctx = MakeCtx();
  CachePtr cache = OpenCache(ctx.get(), path);
  ASSERT_NE(cache, nullptr);
  for (uint32_t r = 0; r < 4; ++r) {
    const HeadRange heads = TpHeads(m->n_kv_heads, r, 4);
    HostCache rank(*m, heads.end - heads.begin, KDN_F16);
    kdn_status rc =
        kdn_load_heads(cache.get(), 0, m->n_layers, heads.begin, heads.end, &rank.dest, 0, nullptr);
    if (rc == KDN_OK) rc = kdn_sync(cache.get());
    if (r == 1) {
      EXPECT_EQ(rc, KDN_E_CORRUPT);
      EXPECT_NE(std::string(kdn_last_error())
                    .find("layer 2 V block, head group 1 (heads 2..3): checksum mismatch"),
                std::string::npos)
          << kdn_last_error();
    } else {
      EXPECT_EQ(rc, KDN_OK) << "rank " << r << ": " << kdn_last_error();
    }
  }
  HostCache full(*m, m->n_kv_heads, KDN_F16);
  kdn_status rc = kdn_load(cache.get(), 0, m->n_layers, &full.dest, 0, nullptr);
  if (rc == KDN_OK) rc = kdn_sync(cache.get());
  EXPECT_EQ(rc, KDN_E_CORRUPT);
}

TEST(HeadSlicesArgs, RangeAndDestinationAreChecked) {
  const ModelIdentity m = TestModel(DType::kF16, RopeStyle::kNeox, 2, 4, 16);
  TempDir dir("kdn-tp");
  const std::string path = WriteSynthetic(dir, "a.kv", m, kTokens, "raw", 1);
  CtxPtr ctx = MakeCtx();
  CachePtr cache = OpenCache(ctx.get(), path);
  ASSERT_NE(cache, nullptr);
  HostCache two(m, 2, KDN_F16);
  EXPECT_EQ(kdn_load_heads(cache.get(), 0, 2, 2, 2, &two.dest, 0, nullptr), KDN_E_INVALID_ARG);
  EXPECT_EQ(kdn_load_heads(cache.get(), 0, 2, 3, 5, &two.dest, 0, nullptr), KDN_E_INVALID_ARG);
  // The destination must have as many heads as the range.
  EXPECT_EQ(kdn_load_heads(cache.get(), 0, 2, 0, 3, &two.dest, 0, nullptr), KDN_E_INVALID_ARG);
  EXPECT_EQ(kdn_load_heads(cache.get(), 0, 2, 2, 4, &two.dest, 0, nullptr), KDN_OK)
      << kdn_last_error();
  EXPECT_EQ(kdn_sync(cache.get()), KDN_OK);
  // A whole-cache destination does not fit a slice either.
  HostCache four(m, 4, KDN_F16);
  EXPECT_EQ(kdn_load_heads(cache.get(), 0, 2, 2, 4, &four.dest, 0, nullptr), KDN_E_INVALID_ARG);
}

}  // namespace
}  // namespace kdn::test
