// ModelIdentity: the canonical identity record, its fingerprint, validation and comparison.
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "kdn/format.h"
#include "store/format/limits.h"
#include "store/format/text.h"

namespace kdn {

namespace {

template <typename T>
void Append(std::vector<unsigned char>* out, T v) {
  const auto* p = reinterpret_cast<const unsigned char*>(&v);
  out->insert(out->end(), p, p + sizeof v);  // little-endian host (le.h)
}

}  // namespace

Hash128 ModelIdentity::Fingerprint() const {
  // name_len u8, name, n_layers u32, n_kv_heads u32, head_dim u32, dtype u8, rope_style u8,
  // rotary_dim u32 (0 replaced by head_dim), rope_theta f32, rope_scale f32.
  std::vector<unsigned char> rec;
  const size_t name_len = std::min<size_t>(name.size(), limits::kMaxNameBytes);
  rec.reserve(1 + name_len + 26);
  rec.push_back(static_cast<unsigned char>(name_len));
  rec.insert(rec.end(), name.begin(), name.begin() + static_cast<std::ptrdiff_t>(name_len));
  Append(&rec, n_layers);
  Append(&rec, n_kv_heads);
  Append(&rec, head_dim);
  Append(&rec, static_cast<uint8_t>(dtype));
  Append(&rec, static_cast<uint8_t>(rope_style));
  Append(&rec, effective_rotary_dim());
  Append(&rec, rope_theta);
  Append(&rec, rope_scale);
  // Appended only when there are windows, so that every identity without them keeps the
  // fingerprint (and the prefix hashes) it always had; the tag byte keeps the two record shapes
  // apart.
  if (!layer_windows.empty()) {
    Append(&rec, uint8_t{1});  // tag: layer windows
    for (uint32_t w : layer_windows) Append(&rec, w);
  }
  if (mla()) {
    Append(&rec, uint8_t{2});  // tag: MLA
    Append(&rec, kv_lora_rank);
  }
  return HashBytes128(rec.data(), rec.size());
}

Status ModelIdentity::Validate() const {
  auto bad = [](std::string msg) { return Status::InvalidArgument("model identity: " + msg); };
  if (name.empty() || name.size() > limits::kMaxNameBytes) {
    return bad("name must be 1.." + std::to_string(limits::kMaxNameBytes) + " bytes, got " +
               std::to_string(name.size()));
  }
  if (name.find('\0') != std::string::npos) return bad("name contains a NUL byte");
  if (!text::IsValidUtf8(name)) return bad("name is not valid UTF-8");
  auto range = [&](const char* field, uint32_t v, uint32_t lo, uint32_t hi) -> Status {
    if (v < lo || v > hi) {
      return bad(std::string(field) + " " + std::to_string(v) + " out of range " +
                 std::to_string(lo) + ".." + std::to_string(hi));
    }
    return Status::OK();
  };
  KDN_RETURN_IF_ERROR(range("n_layers", n_layers, 1, limits::kMaxLayers));
  KDN_RETURN_IF_ERROR(range("n_heads", n_heads, 1, limits::kMaxHeads));
  KDN_RETURN_IF_ERROR(range("n_kv_heads", n_kv_heads, 1, limits::kMaxKvHeads));
  KDN_RETURN_IF_ERROR(range("head_dim", head_dim, limits::kMinHeadDim, limits::kMaxHeadDim));
  if (head_dim % 2 != 0) return bad("head_dim " + std::to_string(head_dim) + " is odd");
  if (rotary_dim > head_dim || rotary_dim % 2 != 0) {
    return bad("rotary_dim " + std::to_string(rotary_dim) + " must be even and <= head_dim " +
               std::to_string(head_dim));
  }
  if (DTypeSize(dtype) == 0)
    return bad("dtype " + std::to_string(static_cast<int>(dtype)) + " unknown");
  if (RopeStyleName(rope_style) == "invalid") {
    return bad("rope style " + std::to_string(static_cast<int>(rope_style)) + " unknown");
  }
  if (!std::isfinite(rope_theta) || !(rope_theta > 0.0f)) {
    return bad("rope_theta " + text::FormatFloat(rope_theta) + " must be finite and > 0");
  }
  if (!std::isfinite(rope_scale) || !(rope_scale > 0.0f)) {
    return bad("rope_scale " + text::FormatFloat(rope_scale) + " must be finite and > 0");
  }
  if (!layer_windows.empty()) {
    if (layer_windows.size() != n_layers) {
      return bad("layer_windows has " + std::to_string(layer_windows.size()) +
                 " entries, n_layers is " + std::to_string(n_layers));
    }
    bool any = false;
    for (size_t l = 0; l < layer_windows.size(); ++l) {
      if (layer_windows[l] > limits::kMaxTokens) {
        return bad("layer " + std::to_string(l) + " window " + std::to_string(layer_windows[l]) +
                   " out of range 0.." + std::to_string(limits::kMaxTokens));
      }
      any = any || layer_windows[l] != 0;
    }
    if (!any) return bad("layer_windows are all 0 (full attention is written as no list)");
  }
  if (attention != AttentionKind::kMha && attention != AttentionKind::kMla) {
    return bad("attention " + std::to_string(static_cast<int>(attention)) + " unknown");
  }
  if (!mla()) {
    if (kv_lora_rank != 0) {
      return bad("kv_lora_rank " + std::to_string(kv_lora_rank) +
                 " must be 0 unless attention is MLA");
    }
  } else {
    if (n_kv_heads != 1) {
      return bad("MLA caches one latent vector per token: n_kv_heads must be 1, not " +
                 std::to_string(n_kv_heads));
    }
    if (kv_lora_rank < 1 || kv_lora_rank >= head_dim) {
      return bad("MLA kv_lora_rank " + std::to_string(kv_lora_rank) + " must be 1..head_dim - 1 (" +
                 std::to_string(head_dim - 1) + ")");
    }
    if (rotary_dim != head_dim - kv_lora_rank) {
      return bad("MLA rotary_dim " + std::to_string(rotary_dim) + " must be head_dim " +
                 std::to_string(head_dim) + " - kv_lora_rank " + std::to_string(kv_lora_rank));
    }
  }
  return Status::OK();
}

Status ModelIdentity::Compare(const ModelIdentity& expected) const {
  auto differ = [](const char* field, const std::string& cache, const std::string& model) {
    return Status::ModelMismatch(std::string(field) + ": cache has " + cache + ", model has " +
                                 model);
  };
  auto num = [](uint32_t v) { return std::to_string(v); };
  if (name != expected.name) return differ("name", "'" + name + "'", "'" + expected.name + "'");
  if (n_layers != expected.n_layers)
    return differ("n_layers", num(n_layers), num(expected.n_layers));
  if (n_kv_heads != expected.n_kv_heads) {
    return differ("n_kv_heads", num(n_kv_heads), num(expected.n_kv_heads));
  }
  if (head_dim != expected.head_dim)
    return differ("head_dim", num(head_dim), num(expected.head_dim));
  if (dtype != expected.dtype) {
    return differ("dtype", std::string(DTypeName(dtype)), std::string(DTypeName(expected.dtype)));
  }
  if (rope_style != expected.rope_style) {
    return differ("rope_style", std::string(RopeStyleName(rope_style)),
                  std::string(RopeStyleName(expected.rope_style)));
  }
  if (effective_rotary_dim() != expected.effective_rotary_dim()) {
    return differ("rotary_dim", num(effective_rotary_dim()), num(expected.effective_rotary_dim()));
  }
  // Bit comparison, as the fingerprint does: -0 != +0 there too.
  auto bits = [](float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    return u;
  };
  if (bits(rope_theta) != bits(expected.rope_theta)) {
    return differ("rope_theta", text::FormatFloat(rope_theta),
                  text::FormatFloat(expected.rope_theta));
  }
  if (bits(rope_scale) != bits(expected.rope_scale)) {
    return differ("rope_scale", text::FormatFloat(rope_scale),
                  text::FormatFloat(expected.rope_scale));
  }
  if (attention != expected.attention) {
    return differ("attention", mla() ? "MLA" : "K/V", expected.mla() ? "MLA" : "K/V");
  }
  if (kv_lora_rank != expected.kv_lora_rank) {
    return differ("kv_lora_rank", num(kv_lora_rank), num(expected.kv_lora_rank));
  }
  for (uint32_t l = 0; l < n_layers; ++l) {
    if (layer_window(l) != expected.layer_window(l)) {
      return differ(("layer " + std::to_string(l) + " window").c_str(), num(layer_window(l)),
                    num(expected.layer_window(l)));
    }
  }
  return Status::OK();
}

}  // namespace kdn
