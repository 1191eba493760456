// Shapes of well-known models, for synthetic caches, benchmarks and tests.
#include <string>

#include "kdn/format.h"

namespace kdn {

namespace {

struct Preset {
  std::string_view key;
  std::string_view name;
  uint32_t n_layers, n_heads, n_kv_heads, head_dim;
  DType dtype;
  RopeStyle rope;
  float theta;
  // Sliding-window layers: every `window_every`-th layer starting at layer 0 attends to its last
  // `window` tokens (0: none).
  uint32_t window = 0;
  uint32_t window_every = 0;
  // MLA: the latent's width (head_dim is kv_lora_rank + the rope part, rotary_dim the rope part).
  uint32_t kv_lora_rank = 0;
};

// "tiny" is the test model (stories260K, a llama2.c checkpoint: GPT-J style rotation, fp32).
constexpr Preset kPresets[] = {
    {"tiny", "stories260K", 5, 8, 4, 8, DType::kF32, RopeStyle::kGptj, 10000.0f},
    {"llama3-8b", "llama3-8b", 32, 32, 8, 128, DType::kBF16, RopeStyle::kNeox, 500000.0f},
    {"llama3-70b", "llama3-70b", 80, 64, 8, 128, DType::kBF16, RopeStyle::kNeox, 500000.0f},
    {"mistral-7b", "mistral-7b", 32, 32, 8, 128, DType::kBF16, RopeStyle::kNeox, 1000000.0f},
    // Gemma 2: local (sliding-window, 4096 tokens) and global attention alternate, the even
    // layers local.
    {"gemma2-9b", "gemma2-9b", 42, 16, 8, 256, DType::kBF16, RopeStyle::kNeox, 10000.0f, 4096, 2},
    // DeepSeek-V3: MLA, latent 512 + decoupled RoPE key 64 (rotated in adjacent pairs).
    {"deepseek-v3", "deepseek-v3", 61, 128, 1, 576, DType::kBF16, RopeStyle::kGptj, 10000.0f, 0, 0,
     512},
};

}  // namespace

Result<ModelIdentity> ModelPreset(std::string_view preset) {
  for (const Preset& p : kPresets) {
    if (preset == p.key || preset == p.name) {
      ModelIdentity m;
      m.name = std::string(p.name);
      m.n_layers = p.n_layers;
      m.n_heads = p.n_heads;
      m.n_kv_heads = p.n_kv_heads;
      m.head_dim = p.head_dim;
      m.dtype = p.dtype;
      m.rope_style = p.rope;
      m.rotary_dim = 0;
      m.rope_theta = p.theta;
      m.rope_scale = 1.0f;
      if (p.kv_lora_rank != 0) {
        m.attention = AttentionKind::kMla;
        m.kv_lora_rank = p.kv_lora_rank;
        m.rotary_dim = p.head_dim - p.kv_lora_rank;
      }
      if (p.window != 0) {
        m.layer_windows.assign(p.n_layers, 0);
        for (uint32_t l = 0; l < p.n_layers; l += p.window_every) m.layer_windows[l] = p.window;
      }
      return m;
    }
  }
  std::string have;
  for (const Preset& p : kPresets) have += (have.empty() ? "" : ", ") + std::string(p.key);
  return Status::InvalidArgument("unknown model preset '" + std::string(preset) +
                                 "' (have: " + have + ")");
}

std::vector<std::string_view> ModelPresetNames() {
  std::vector<std::string_view> names;
  for (const Preset& p : kPresets) names.push_back(p.key);
  return names;
}

}  // namespace kdn
