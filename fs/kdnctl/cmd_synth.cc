// kdnctl synth: a deterministic synthetic cache, for sizes and speeds (not model quality).
#include <cstdio>
#include <string>
#include <vector>

#include "fs/kdnctl/args.h"
#include "fs/kdnctl/commands.h"
#include "kdn/format.h"
#include "kdn/synthetic.h"

namespace kdnctl {

namespace {

constexpr char kUsage[] =
    "Usage: kdnctl synth (--model PRESET | --layers L --kv-heads H --head-dim D --dtype T)\n"
    "                    [--heads N] [--rope neox|gptj|none] [--theta X] [--name NAME]\n"
    "                    --tokens N --codec C [--seed S] [--position P] [--chunk-tokens K]\n"
    "                    [--head-groups G|auto] -o FILE\n"
    "Writes a deterministic synthetic .kv cache: the same arguments give the same bytes on\n"
    "every machine. The values look like KV to a codec (per-channel offsets and scales, K\n"
    "outlier channels, smooth variation along tokens, noise); use it for sizes and speeds.\n\n"
    "  --model PRESET     tiny (stories260K's shape), llama3-8b, llama3-70b, mistral-7b,\n"
    "                     gemma2-9b (sliding-window layers: 4096 tokens, even layers),\n"
    "                     deepseek-v3 (MLA: 61 layers, latent 512 + rope 64);\n"
    "                     the shape options below override single fields of a preset\n"
    "  --layers L, --kv-heads H, --head-dim D, --dtype fp16|bf16|fp32\n"
    "                     the shape without a preset (all four needed)\n"
    "  --heads N          query heads (default: the KV heads)\n"
    "  --rope STYLE       neox (default), gptj or none;  --theta X  RoPE base (default 10000)\n"
    "  --name NAME        model name recorded in the file (default: the preset's, or 'synthetic')\n"
    "  --tokens N         number of tokens (1..16777216)\n"
    "  --codec C          raw, lossless, q8, q4, q2; options :gN (group), :lN (zstd level), +zstd\n"
    "  --seed S           generator seed (default 1)\n"
    "  --position P       position of the first token (default 0)\n"
    "  --chunk-tokens K   tokens per prefix hash (default 256)\n"
    "  --head-groups G    store each layer's K and V as G blocks of n_kv_heads/G heads, so that a\n"
    "                     tensor-parallel rank reads only its heads' blocks (default 1; auto: 8\n"
    "                     when n_kv_heads is a multiple of 8, else 1)\n"
    "  -o, --output FILE  where to write\n";

constexpr OptionSpec kOptions[] = {
    {"model", 0, true},       {"layers", 0, true},       {"kv-heads", 0, true},
    {"head-dim", 0, true},    {"dtype", 0, true},        {"heads", 0, true},
    {"rope", 0, true},        {"theta", 0, true},        {"name", 0, true},
    {"tokens", 0, true},      {"codec", 0, true},        {"seed", 0, true},
    {"position", 0, true},    {"chunk-tokens", 0, true}, {"output", 'o', true},
    {"head-groups", 0, true},
};

kdn::Result<kdn::ModelIdentity> ModelFromArgs(const Args& a) {
  kdn::ModelIdentity m;
  if (auto preset = a.Get("model")) {
    KDN_ASSIGN_OR_RETURN(m, kdn::ModelPreset(*preset));
  } else {
    for (const char* need : {"layers", "kv-heads", "head-dim", "dtype"}) {
      if (!a.Has(need)) {
        return kdn::Status::InvalidArgument(std::string("--") + need +
                                            " is required without --model");
      }
    }
    m.name = "synthetic";
    m.rope_style = kdn::RopeStyle::kNeox;
    m.rope_theta = 10000.0f;
  }
  if (auto v = a.Get("layers")) {
    KDN_ASSIGN_OR_RETURN(m.n_layers, ParseU32(*v, "layers"));
    if (!m.layer_windows.empty() && m.n_layers != m.layer_windows.size()) {
      // A preset's sliding-window pattern (e.g. every other layer) carried on to the new count.
      std::vector<uint32_t> windows(m.n_layers);
      for (uint32_t l = 0; l < m.n_layers; ++l) {
        windows[l] = m.layer_windows[l % m.layer_windows.size()];
      }
      m.layer_windows = std::move(windows);
      bool any = false;
      for (uint32_t w : m.layer_windows) any = any || w != 0;
      if (!any) m.layer_windows.clear();
    }
  }
  if (auto v = a.Get("kv-heads")) {
    KDN_ASSIGN_OR_RETURN(m.n_kv_heads, ParseU32(*v, "kv-heads"));
    if (!a.Has("model")) m.n_heads = m.n_kv_heads;
  }
  if (auto v = a.Get("head-dim")) {
    KDN_ASSIGN_OR_RETURN(m.head_dim, ParseU32(*v, "head-dim"));
  }
  if (auto v = a.Get("dtype")) {
    KDN_ASSIGN_OR_RETURN(m.dtype, kdn::ParseDType(*v));
  }
  if (auto v = a.Get("heads")) {
    KDN_ASSIGN_OR_RETURN(m.n_heads, ParseU32(*v, "heads"));
  }
  if (auto v = a.Get("rope")) {
    KDN_ASSIGN_OR_RETURN(m.rope_style, kdn::ParseRopeStyle(*v));
  }
  if (auto v = a.Get("theta")) {
    KDN_ASSIGN_OR_RETURN(m.rope_theta, ParseFloat(*v, "theta"));
  }
  if (auto v = a.Get("name")) m.name = *v;
  KDN_RETURN_IF_ERROR(m.Validate());
  return m;
}

}  // namespace

int RunSynth(int argc, char** argv) {
  constexpr const char* kCmd = "synth";
  auto args = ParseArgs(argc, argv, kOptions);
  if (!args.ok()) return UsageError(kCmd, args.status().message());
  if (args->help) {
    std::fputs(kUsage, stdout);
    return kExitOk;
  }
  const Args& a = *args;
  if (!a.positional.empty())
    return UsageError(kCmd, "unexpected argument '" + a.positional[0] + "'");
  for (const char* need : {"tokens", "codec", "output"}) {
    if (!a.Has(need)) return UsageError(kCmd, std::string("--") + need + " is required");
  }
  auto model = ModelFromArgs(a);
  if (!model.ok()) return UsageError(kCmd, model.status().message());
  auto codec = kdn::CodecSpec::Parse(*a.Get("codec"));
  if (!codec.ok()) return UsageError(kCmd, codec.status().message());
  auto tokens = ParseU32(*a.Get("tokens"), "tokens");
  if (!tokens.ok()) return UsageError(kCmd, tokens.status().message());
  uint64_t seed = 1;
  uint32_t position = 0, chunk = kdn::kDefaultChunkTokens;
  if (auto v = a.Get("seed")) {
    auto s = ParseU64(*v, "seed");
    if (!s.ok()) return UsageError(kCmd, s.status().message());
    seed = *s;
  }
  if (auto v = a.Get("position")) {
    auto p = ParseU32(*v, "position");
    if (!p.ok()) return UsageError(kCmd, p.status().message());
    position = *p;
  }
  if (auto v = a.Get("chunk-tokens")) {
    auto c = ParseU32(*v, "chunk-tokens");
    if (!c.ok()) return UsageError(kCmd, c.status().message());
    chunk = *c;
  }
  if (*tokens < 1 || *tokens > (1u << 24)) {
    return UsageError(kCmd, "--tokens " + std::to_string(*tokens) + " out of range 1..16777216");
  }
  if (chunk < 1 || chunk > (1u << 20)) {
    return UsageError(kCmd, "--chunk-tokens " + std::to_string(chunk) + " out of range 1..1048576");
  }
  const std::string out = *a.Get("output");
  auto groups = HeadGroupsOption(a, *model, 1);
  if (!groups.ok()) return UsageError(kCmd, groups.status().message());

  // Layer by layer: the writer keeps only encoded blocks.
  kdn::KvWriter writer(*model, *codec, kdn::SynthesizeTokens(*tokens, seed), position, chunk,
                       *groups);
  const size_t bytes = size_t{*tokens} * model->channels() * kdn::DTypeSize(model->dtype);
  std::vector<std::byte> k, v;
  try {
    k.resize(bytes);
    v.resize(model->mla() ? 0 : bytes);  // an MLA cache has its latent (as K) and no V
  } catch (const std::bad_alloc&) {
    return Fail(kCmd, kExitBadInput,
                "cannot allocate " + std::to_string(2 * bytes) + " bytes for a layer");
  }
  for (uint32_t l = 0; l < model->n_layers; ++l) {
    kdn::Status st = kdn::SynthesizeLayerKv(*model, *tokens, l, seed, k, v);
    if (st.ok()) st = writer.AddLayer(k, v);
    if (!st.ok()) return Fail(kCmd, kExitBadInput, st.message());
  }
  if (kdn::Status st = writer.Finish(out); !st.ok()) return Fail(kCmd, kExitBadInput, st.message());
  std::printf("%s: %s, %u layers, %u tokens, %s\n", out.c_str(), model->name.c_str(),
              model->n_layers, *tokens, codec->Name().c_str());
  return kExitOk;
}

}  // namespace kdnctl
