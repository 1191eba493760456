// kdnctl inspect: a .kv file's header, per-layer table and compression, as text or JSON. Reads the
// header only (verify reads the blocks).
#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <string>
#include <vector>

#include "fs/kdnctl/args.h"
#include "fs/kdnctl/commands.h"
#include "kdn/format.h"

namespace kdnctl {

namespace {

constexpr char kUsage[] =
    "Usage: kdnctl inspect [--json] FILE\n"
    "Prints the header of a .kv file (model identity and fingerprint, tokens, codec), its\n"
    "per-layer block table (offsets, sizes, checksums), the compression ratio and the bits per\n"
    "value. The header is validated; block contents are not read (see 'kdnctl verify').\n\n"
    "  --json   one JSON object instead of text\n";

constexpr OptionSpec kOptions[] = {{"json", 0, false}};

std::string Hex(uint64_t v) {
  char b[17];
  std::snprintf(b, sizeof b, "%016" PRIx64, v);
  return b;
}

std::string JsonString(std::string_view s) {
  std::string out = "\"";
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += ch;
    } else if (c < 0x20) {
      char b[8];
      std::snprintf(b, sizeof b, "\\u%04x", c);
      out += b;
    } else {
      out += ch;  // valid UTF-8: the reader checked the name
    }
  }
  return out + "\"";
}

std::string Float(float f) {
  char b[32];
  std::snprintf(b, sizeof b, "%.9g", static_cast<double>(f));
  return b;
}

// The model's MLA fields and layer windows as JSON members (each with its leading comma), or
// nothing for a K/V model without sliding-window layers.
std::string JsonIdentityExtras(const kdn::ModelIdentity& m) {
  std::string out;
  if (m.mla()) out += ", \"attention\": \"mla\", \"kv_lora_rank\": " + std::to_string(m.kv_lora_rank);
  if (m.layer_windows.empty()) return out;
  out += ", \"layer_windows\": [";
  for (size_t l = 0; l < m.layer_windows.size(); ++l) {
    out += (l ? ", " : "") + std::to_string(m.layer_windows[l]);
  }
  return out + "]";
}

// "4096 on layers 0 2 4", one group per distinct window; empty without sliding-window layers.
std::string TextWindows(const kdn::ModelIdentity& m) {
  std::string out;
  std::vector<uint32_t> seen;
  for (uint32_t w : m.layer_windows) {
    if (w == 0 || std::find(seen.begin(), seen.end(), w) != seen.end()) continue;
    seen.push_back(w);
    out += (out.empty() ? "" : "; ") + std::to_string(w) + " tokens on layers";
    for (size_t l = 0; l < m.layer_windows.size(); ++l) {
      if (m.layer_windows[l] == w) out += " " + std::to_string(l);
    }
  }
  return out;
}

void PrintJson(const std::string& path, const kdn::KvHeader& h) {
  const kdn::ModelIdentity& m = h.model;
  // Every decoded value (an MLA cache has one latent per layer, not K and V).
  const double values = double(h.decoded_bytes()) / double(kdn::DTypeSize(m.dtype));
  std::printf("{\n");
  std::printf("  \"file\": %s,\n", JsonString(path).c_str());
  std::printf("  \"version\": %u,\n", h.version);
  std::printf("  \"file_bytes\": %" PRIu64 ",\n  \"header_bytes\": %" PRIu64 ",\n", h.file_bytes,
              h.header_bytes);
  std::printf(
      "  \"model\": {\"name\": %s, \"n_layers\": %u, \"n_heads\": %u, \"n_kv_heads\": %u, "
      "\"head_dim\": %u, \"dtype\": \"%s\", \"rope_style\": \"%s\", \"rotary_dim\": %u, "
      "\"rope_theta\": %s, \"rope_scale\": %s%s},\n",
      JsonString(m.name).c_str(), m.n_layers, m.n_heads, m.n_kv_heads, m.head_dim,
      std::string(kdn::DTypeName(m.dtype)).c_str(),
      std::string(kdn::RopeStyleName(m.rope_style)).c_str(), m.effective_rotary_dim(),
      Float(m.rope_theta).c_str(), Float(m.rope_scale).c_str(), JsonIdentityExtras(m).c_str());
  std::printf("  \"fingerprint\": \"%s\",\n", h.fingerprint.ToHex().c_str());
  std::printf("  \"n_tokens\": %u,\n  \"position_offset\": %u,\n  \"chunk_tokens\": %u,\n",
              h.n_tokens, h.position_offset, h.chunk_tokens);
  std::printf("  \"prefix_hashes\": [");
  for (size_t i = 0; i < h.prefix_hashes.size(); ++i) {
    std::printf("%s\"%s\"", i ? ", " : "", h.prefix_hashes[i].ToHex().c_str());
  }
  std::printf("],\n");
  std::printf("  \"codec\": {\"name\": \"%s\", \"bits\": %u, \"group_size\": %u, \"zstd\": %s},\n",
              h.codec.Name().c_str(), h.codec.id == kdn::CodecId::kQuant ? h.codec.bits : 0,
              h.codec.id == kdn::CodecId::kQuant ? h.codec.group_size : 0,
              (h.codec.id == kdn::CodecId::kLossless && !h.codec.rans) || h.codec.zstd ? "true" : "false");
  std::printf("  \"decoded_bytes\": %" PRIu64 ",\n  \"encoded_bytes\": %" PRIu64 ",\n",
              h.decoded_bytes(), h.encoded_bytes());
  std::printf("  \"ratio\": %.4f,\n  \"bits_per_value\": %.4f,\n",
              double(h.decoded_bytes()) / double(h.encoded_bytes()),
              8.0 * h.encoded_bytes() / values);
  std::printf("  \"head_groups\": %u,\n", h.head_groups);
  std::printf("  \"blocks\": [\n");
  for (size_t i = 0; i < h.blocks.size(); ++i) {
    const kdn::BlockEntry& b = h.blocks[i];
    const size_t slot = i / h.head_groups;
    std::printf("    {\"layer\": %zu, \"kind\": \"%c\", \"head_group\": %zu, \"offset\": %" PRIu64
                ", \"encoded_bytes\": %" PRIu64 ", \"decoded_bytes\": %" PRIu64
                ", \"checksum\": \"%s\"}%s\n",
                slot / 2, slot % 2 ? 'V' : 'K', i % h.head_groups, b.offset, b.encoded_bytes,
                b.decoded_bytes, Hex(b.checksum).c_str(), i + 1 < h.blocks.size() ? "," : "");
  }
  std::printf("  ]\n}\n");
}

void PrintText(const std::string& path, const kdn::KvHeader& h) {
  const kdn::ModelIdentity& m = h.model;
  // Every decoded value (an MLA cache has one latent per layer, not K and V).
  const double values = double(h.decoded_bytes()) / double(kdn::DTypeSize(m.dtype));
  std::printf("file:          %s (%" PRIu64 " bytes, .kv version %u, header %" PRIu64 " bytes)\n",
              path.c_str(), h.file_bytes, h.version, h.header_bytes);
  std::printf("model:         %s: %u layers, %u heads, %u KV heads, head_dim %u, %s\n",
              m.name.c_str(), m.n_layers, m.n_heads, m.n_kv_heads, m.head_dim,
              std::string(kdn::DTypeName(m.dtype)).c_str());
  std::printf("rope:          %s, rotary_dim %u, theta %s, scale %s\n",
              std::string(kdn::RopeStyleName(m.rope_style)).c_str(), m.effective_rotary_dim(),
              Float(m.rope_theta).c_str(), Float(m.rope_scale).c_str());
  if (!m.layer_windows.empty()) std::printf("window:        %s\n", TextWindows(m).c_str());
  if (m.mla()) {
    std::printf("attention:     MLA, latent %u + rope %u per token and layer (the K blocks; no V)\n",
                m.kv_lora_rank, m.head_dim - m.kv_lora_rank);
  }
  std::printf("fingerprint:   %s\n", h.fingerprint.ToHex().c_str());
  std::printf("tokens:        %u at position %u\n", h.n_tokens, h.position_offset);
  std::printf("prefix hashes: %zu (one per %u tokens), last %s\n", h.prefix_hashes.size(),
              h.chunk_tokens,
              h.prefix_hashes.empty() ? "-" : h.prefix_hashes.back().ToHex().c_str());
  std::printf("codec:         %s\n", h.codec.Name().c_str());
  if (h.head_groups > 1) {
    std::printf("head groups:   %u of %u KV heads each (one block per layer, K/V and group)\n",
                h.head_groups, h.heads_per_group());
  }
  std::printf("size:          %" PRIu64 " bytes decoded, %" PRIu64
              " encoded: ratio %.3f, %.3f bits per value\n",
              h.decoded_bytes(), h.encoded_bytes(),
              double(h.decoded_bytes()) / double(h.encoded_bytes()),
              8.0 * h.encoded_bytes() / values);
  std::printf("\n%5s %4s %5s %14s %14s %14s %7s  %s\n", "layer", "kind", "group", "offset",
              "encoded", "decoded", "ratio", "xxh3-64");
  for (size_t i = 0; i < h.blocks.size(); ++i) {
    const kdn::BlockEntry& b = h.blocks[i];
    const size_t slot = i / h.head_groups;
    if (!h.has_block(static_cast<uint32_t>(slot / 2), static_cast<kdn::KvKind>(slot % 2))) continue;
    std::printf("%5zu %4c %5zu %14" PRIu64 " %14" PRIu64 " %14" PRIu64 " %7.3f  %s\n", slot / 2,
                slot % 2 ? 'V' : 'K', i % h.head_groups, b.offset, b.encoded_bytes, b.decoded_bytes,
                double(b.decoded_bytes) / double(b.encoded_bytes), Hex(b.checksum).c_str());
  }
}

}  // namespace

int RunInspect(int argc, char** argv) {
  constexpr const char* kCmd = "inspect";
  auto args = ParseArgs(argc, argv, kOptions);
  if (!args.ok()) return UsageError(kCmd, args.status().message());
  if (args->help) {
    std::fputs(kUsage, stdout);
    return kExitOk;
  }
  if (args->positional.size() != 1) return UsageError(kCmd, "expected one FILE");
  const std::string& path = args->positional[0];
  auto reader = kdn::KvReader::Open(path);
  if (!reader.ok()) return Fail(kCmd, kExitBadInput, WithPath(path, reader.status()));
  if (args->flags.count("json")) {
    PrintJson(path, (*reader)->header());
  } else {
    PrintText(path, (*reader)->header());
  }
  return kExitOk;
}

}  // namespace kdnctl
