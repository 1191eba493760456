// Deterministic synthetic KV caches that look like real ones to a codec: per-channel offsets and
// scales (K with a few outlier channels, as RoPE'd keys have), smooth variation along tokens, and
// noise. Only integer hashing and + - * / on floats are used (no libm), and the library is built
// with -ffp-contract=off, so the bytes are the same on every machine.
#include "kdn/synthetic.h"

#include <string>
#include <vector>

#include "kdn/codec.h"
#include "store/format/guard_alloc.h"
#include "store/format/limits.h"
#include "store/format/scratch.h"

namespace kdn {

namespace {

inline uint64_t Mix(uint64_t x) {  // splitmix64 finalizer
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Uniform in [0, 1) from 24 bits.
inline float Unit(uint64_t bits) {
  return static_cast<float>(bits & 0xffffff) * (1.0f / 16777216.0f);
}

// A smooth periodic wave in [-1, 1] of a phase in [0, 1): two parabolas, like a sine.
inline float Wave(uint32_t phase) {
  const float x = static_cast<float>(phase >> 8) * (1.0f / 16777216.0f);
  return x < 0.5f ? 16.0f * x * (0.5f - x) : -16.0f * (x - 0.5f) * (1.0f - x);
}

struct ChannelShape {
  float offset, scale;
  uint32_t freq, phase;  // fractions of a cycle (2^32 = one cycle) per token, and at token 0
};

void FillTensor(const ModelIdentity& model, uint32_t n_tokens, uint32_t layer, uint64_t seed,
                KvKind kind, float* row, std::span<std::byte> out) {
  const uint32_t channels = model.channels();
  const uint64_t base = Mix(seed ^ Mix((uint64_t{layer} << 8) | static_cast<uint64_t>(kind)));
  const bool key = kind == KvKind::kKey;
  std::vector<ChannelShape> ch(channels);
  for (uint32_t c = 0; c < channels; ++c) {
    const uint64_t h1 = Mix(base + 3 * uint64_t{c});
    const uint64_t h2 = Mix(base + 3 * uint64_t{c} + 1);
    const uint64_t h3 = Mix(base + 3 * uint64_t{c} + 2);
    ChannelShape& s = ch[c];
    s.offset = (Unit(h1) - 0.5f) * (key ? 0.6f : 0.2f);
    s.scale = 0.25f + Unit(h1 >> 24);
    if (key && Unit(h3) < 0.04f) {  // outlier channel
      s.scale *= 8.0f;
      s.offset *= 4.0f;
    }
    // Low dims of a head rotate fast, high dims slowly (as RoPE frequencies do).
    const uint32_t d = c % model.head_dim;
    s.freq = static_cast<uint32_t>((uint64_t{1} << 30) / (1 + d * d / 2)) ^
             static_cast<uint32_t>(h2 & 0xff);
    s.phase = static_cast<uint32_t>(h2 >> 32);
  }
  const float smooth = key ? 0.8f : 0.35f;
  const float noise = key ? 0.25f : 0.6f;
  const size_t row_bytes = size_t{channels} * DTypeSize(model.dtype);
  for (uint32_t t = 0; t < n_tokens; ++t) {
    const uint64_t tb = Mix(base ^ (uint64_t{t} << 20) ^ 0x5bd1e995ull);
    for (uint32_t c = 0; c < channels; ++c) {
      const ChannelShape& s = ch[c];
      const uint64_t r = Mix(tb + c);
      const float n = Unit(r) + Unit(r >> 24) - 1.0f;  // triangular in (-1, 1)
      const float w = Wave(s.phase + s.freq * t);
      row[c] = s.offset + s.scale * (smooth * w + noise * n);
    }
    ConvertDType(DType::kF32, row, model.dtype, out.data() + row_bytes * t, channels);
  }
}

}  // namespace

std::vector<uint32_t> SynthesizeTokens(uint32_t n, uint64_t seed, uint32_t vocab) {
  std::vector<uint32_t> tokens(n);
  const uint32_t span = vocab > 3 ? vocab - 3 : 1;
  const uint64_t base = Mix(seed ^ 0x746f6b656e73ull);  // "tokens"
  for (uint32_t i = 0; i < n; ++i) tokens[i] = 3 + static_cast<uint32_t>(Mix(base + i) % span);
  return tokens;
}

Status SynthesizeLayerKv(const ModelIdentity& model, uint32_t n_tokens, uint32_t layer,
                         uint64_t seed, std::span<std::byte> k, std::span<std::byte> v) {
  return GuardAlloc("synthesize", [&]() -> Status {
    KDN_RETURN_IF_ERROR(model.Validate());
    if (n_tokens < 1 || n_tokens > limits::kMaxTokens) {
      return Status::InvalidArgument("synthesize: tokens " + std::to_string(n_tokens) +
                                     " out of range 1.." + std::to_string(limits::kMaxTokens));
    }
    if (layer >= model.n_layers) {
      return Status::InvalidArgument("synthesize: layer " + std::to_string(layer) + " of " +
                                     std::to_string(model.n_layers));
    }
    const uint64_t bytes = uint64_t{n_tokens} * model.channels() * DTypeSize(model.dtype);
    if (k.size() != bytes || v.size() != (model.mla() ? 0 : bytes)) {
      return Status::InvalidArgument("synthesize: K/V buffers are " + std::to_string(k.size()) +
                                     "/" + std::to_string(v.size()) + " bytes, the layer needs " +
                                     std::to_string(bytes));
    }
    KDN_ASSIGN_OR_RETURN(std::span<std::byte> tile,
                         scratch::Get(scratch::Slot::kTile, 4 * size_t{model.channels()}));
    float* row = reinterpret_cast<float*>(tile.data());
    FillTensor(model, n_tokens, layer, seed, KvKind::kKey, row, k);
    if (!model.mla()) FillTensor(model, n_tokens, layer, seed, KvKind::kValue, row, v);
    return Status::OK();
  });
}

Result<std::vector<std::byte>> SynthesizeKvFile(const ModelIdentity& model, uint32_t n_tokens,
                                                const CodecSpec& codec, uint64_t seed,
                                                uint32_t position_offset, uint32_t head_groups) {
  return GuardAlloc("synthesize", [&]() -> Result<std::vector<std::byte>> {
    KDN_RETURN_IF_ERROR(model.Validate());
    if (n_tokens < 1 || n_tokens > limits::kMaxTokens) {
      return Status::InvalidArgument("synthesize: tokens " + std::to_string(n_tokens) +
                                     " out of range 1.." + std::to_string(limits::kMaxTokens));
    }
    KvWriter writer(model, codec, SynthesizeTokens(n_tokens, seed), position_offset,
                    kDefaultChunkTokens, head_groups);
    const size_t bytes = size_t{n_tokens} * model.channels() * DTypeSize(model.dtype);
    std::vector<std::byte> k(bytes), v(model.mla() ? 0 : bytes);
    for (uint32_t layer = 0; layer < model.n_layers; ++layer) {
      KDN_RETURN_IF_ERROR(SynthesizeLayerKv(model, n_tokens, layer, seed, k, v));
      KDN_RETURN_IF_ERROR(writer.AddLayer(k, v));
    }
    return writer.FinishToMemory();
  });
}

}  // namespace kdn
