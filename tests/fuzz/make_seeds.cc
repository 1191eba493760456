// Writes the seed corpus of the `.kv` fuzz targets: small synthetic files of every codec and
// dtype, and truncations of them at every section boundary.
//   kdn_fuzz_seeds SEED_DIR [MORE_DIRS_TO_CREATE...]
#include <sys/stat.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "kdn/format.h"
#include "kdn/synthetic.h"
#include "store/format/kv_layout.h"

namespace {

bool Write(const std::string& path, const std::vector<std::byte>& bytes, size_t n) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(n));
  return static_cast<bool>(out);
}

}  // namespace

int main(int argc, char** argv) {
  using namespace kdn;
  if (argc < 2) {
    std::fprintf(stderr, "usage: kdn_fuzz_seeds SEED_DIR [MORE_DIRS_TO_CREATE...]\n");
    return 2;
  }
  for (int i = 1; i < argc; ++i) ::mkdir(argv[i], 0755);
  const std::string dir = argv[1];
  int written = 0;
  const char* codecs[] = {"raw",        "lossless",   "lossless:entropy=rans", "q8",
                          "q4",         "q2:g4",      "q4+zstd",               "q8:g3+zstd",
                          "tc:q=2",     "tc:q=9:t=id"};
  const DType dtypes[] = {DType::kF16, DType::kBF16, DType::kF32};
  for (const char* codec_name : codecs) {
    for (DType dt : dtypes) {
      for (uint32_t tokens : {1u, 5u, 40u}) {
        ModelIdentity m;
        m.name = "fz";
        m.n_layers = tokens == 5 ? 2 : 1;
        m.n_heads = 2;
        m.n_kv_heads = tokens == 40 ? 2 : 1;
        m.head_dim = 8;
        m.dtype = dt;
        // Sliding-window layers in the 5-token files: their header has the layer windows
        // section (identity flag bit 0); a window shorter than the file on layer 1.
        if (tokens == 5) m.layer_windows = {0, 3};
        auto codec = CodecSpec::Parse(codec_name);
        auto file = SynthesizeKvFile(m, tokens, *codec, tokens);
        if (!codec.ok() || !file.ok()) {
          std::fprintf(stderr, "kdn_fuzz_seeds: %s\n", file.status().ToString().c_str());
          return 1;
        }
        std::string base = dir + "/" + codec_name + "-" + std::string(DTypeName(dt)) + "-t" +
                           std::to_string(tokens);
        for (char& c : base) c = (c == ':' || c == '+' || c == '=') ? '_' : c;
        if (!Write(base + ".kv", *file, file->size())) return 1;
        ++written;
        // Truncations at the section boundaries and inside the first block.
        if (dt != DType::kF16) continue;
        auto h = ParseKvHeader(*file, file->size());
        if (!h.ok()) return 1;
        const auto s = layout::ComputeSections(2, tokens, kDefaultChunkTokens, m.n_layers,
                                               !m.layer_windows.empty());
        for (uint64_t cut : {uint64_t{64}, s.tokens_offset, s.prefix_offset, s.table_offset,
                             s.windows_offset, s.end,
                             h->blocks[0].offset + h->blocks[0].encoded_bytes / 2}) {
          if (!Write(base + "-cut" + std::to_string(cut) + ".kv", *file, cut)) return 1;
          ++written;
        }
      }
    }
  }
  // MLA caches (one latent block per layer in the K slot, V slots empty), every codec that
  // applies, and their header cut at each section boundary.
  for (const char* codec_name : {"raw", "lossless", "q8", "q4+zstd", "q2:g4"}) {
    ModelIdentity m;
    m.name = "fz";
    m.n_layers = 2;
    m.n_heads = 4;
    m.n_kv_heads = 1;
    m.head_dim = 12;
    m.dtype = DType::kBF16;
    m.rope_style = RopeStyle::kGptj;
    m.attention = AttentionKind::kMla;
    m.kv_lora_rank = 8;
    m.rotary_dim = 4;
    auto codec = CodecSpec::Parse(codec_name);
    auto file = SynthesizeKvFile(m, 6, *codec, 6);
    if (!codec.ok() || !file.ok()) {
      std::fprintf(stderr, "kdn_fuzz_seeds: %s\n", file.status().ToString().c_str());
      return 1;
    }
    std::string base = dir + "/mla-" + codec_name;
    for (char& c : base) c = (c == ':' || c == '+' || c == '=') ? '_' : c;
    if (!Write(base + ".kv", *file, file->size())) return 1;
    ++written;
    const auto s = layout::ComputeSections(2, 6, kDefaultChunkTokens, m.n_layers);
    for (uint64_t cut : {uint64_t{110}, s.table_offset, s.end}) {
      if (!Write(base + "-cut" + std::to_string(cut) + ".kv", *file, cut)) return 1;
      ++written;
    }
  }
  // Head groups (one block per layer, K/V and group of heads): every codec, 2 and 4 groups of 4
  // KV heads, and the file cut at the table and inside a group's block.
  for (const char* codec_name :
       {"raw", "lossless", "lossless:entropy=rans", "q8", "q4+zstd", "q2:g4", "tc:q=2"}) {
    for (uint32_t groups : {2u, 4u}) {
      ModelIdentity m;
      m.name = "fz";
      m.n_layers = 2;
      m.n_heads = 4;
      m.n_kv_heads = 4;
      m.head_dim = 8;
      m.dtype = DType::kF16;
      auto codec = CodecSpec::Parse(codec_name);
      auto file = SynthesizeKvFile(m, 9, *codec, 9, 0, groups);
      if (!codec.ok() || !file.ok()) {
        std::fprintf(stderr, "kdn_fuzz_seeds: %s\n", file.status().ToString().c_str());
        return 1;
      }
      std::string base = dir + "/groups" + std::to_string(groups) + "-" + codec_name;
      for (char& c : base) c = (c == ':' || c == '+' || c == '=') ? '_' : c;
      if (!Write(base + ".kv", *file, file->size())) return 1;
      ++written;
      auto h = ParseKvHeader(*file, file->size());
      if (!h.ok()) return 1;
      const auto s = layout::ComputeSections(2, 9, kDefaultChunkTokens, m.n_layers, false, groups);
      const BlockEntry& b = h->block(1, KvKind::kValue, groups - 1);
      for (uint64_t cut : {s.table_offset, s.end, b.offset + b.encoded_bytes / 2}) {
        if (!Write(base + "-cut" + std::to_string(cut) + ".kv", *file, cut)) return 1;
        ++written;
      }
    }
  }
  std::printf("kdn_fuzz_seeds: %d seeds in %s\n", written, dir.c_str());
  return 0;
}
