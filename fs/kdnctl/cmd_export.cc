// kdnctl export: one decoded K or V tensor as raw little-endian bytes.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "fs/kdnctl/args.h"
#include "fs/kdnctl/commands.h"
#include "kdn/codec.h"
#include "kdn/format.h"
#include "store/format/file_io.h"

namespace kdnctl {

namespace {

constexpr char kUsage[] =
    "Usage: kdnctl export --layer L --kv k|v [--dtype T] [--heads A:B] FILE -o OUT\n"
    "Decodes the K or V block of layer L of FILE (checksum verified) and writes it to OUT as\n"
    "raw little-endian values, [tokens][kv_heads][head_dim], with no header. OUT '-' is stdout.\n\n"
    "  --layer L           0-based layer\n"
    "  --kv k|v            keys or values\n"
    "  --dtype fp16|bf16|fp32   element type to write (default: the model's)\n"
    "  --heads A:B         only KV heads [A, B) (a tensor-parallel rank's share):\n"
    "                      [tokens][B - A][head_dim]\n"
    "  -o, --output OUT    where to write\n";

constexpr OptionSpec kOptions[] = {
    {"layer", 0, true}, {"kv", 0, true}, {"dtype", 0, true}, {"heads", 0, true},
    {"output", 'o', true}};

struct HeadRange {
  uint32_t begin = 0;
  uint32_t end = 0;
};

// "A:B" with A < B <= n_kv_heads.
kdn::Result<HeadRange> ParseHeads(const std::string& text, uint32_t n_kv_heads) {
  const size_t colon = text.find(':');
  if (colon == std::string::npos) {
    return kdn::Status::InvalidArgument("--heads '" + text + "': expected A:B");
  }
  KDN_ASSIGN_OR_RETURN(uint32_t begin, ParseU32(text.substr(0, colon), "heads"));
  KDN_ASSIGN_OR_RETURN(uint32_t end, ParseU32(text.substr(colon + 1), "heads"));
  if (begin >= end || end > n_kv_heads) {
    return kdn::Status::InvalidArgument("--heads " + text + ": not a non-empty range within the " +
                                        std::to_string(n_kv_heads) + " KV heads");
  }
  return HeadRange{begin, end};
}

// Heads [heads.begin, heads.end) of one (layer, K/V): only the blocks of the head groups that hold
// them are read (a grouped file), and only the slice is decoded where the codec allows.
kdn::Status DecodeHeads(const kdn::KvReader& reader, uint32_t layer, kdn::KvKind kind,
                        kdn::DType dtype, HeadRange heads, std::vector<std::byte>* out) {
  const kdn::KvHeader& h = reader.header();
  const uint32_t per_group = h.heads_per_group();
  const size_t head_bytes = size_t{h.model.head_dim} * kdn::DTypeSize(dtype);
  const size_t row_bytes = size_t{heads.end - heads.begin} * head_bytes;
  out->resize(row_bytes * h.n_tokens);
  const kdn::BlockShape shape{h.n_tokens, h.group_channels(), h.model.dtype};
  for (uint32_t g = h.first_group(heads.begin); g < h.end_group(heads.end); ++g) {
    std::vector<std::byte> encoded(h.block(layer, kind, g).encoded_bytes);
    KDN_RETURN_IF_ERROR(reader.ReadBlock(layer, kind, encoded, g));
    KDN_ASSIGN_OR_RETURN(kdn::PreparedBlock block,
                         kdn::PreparedBlock::Prepare(h.codec, kind, shape, encoded));
    // The heads this group shares with the range, in the group's channels and in the output row.
    const uint32_t h0 = std::max(heads.begin, g * per_group);
    const uint32_t h1 = std::min(heads.end, (g + 1) * per_group);
    KDN_RETURN_IF_ERROR(
        block.DecodeRowChannels(0, h.n_tokens, (h0 - g * per_group) * h.model.head_dim,
                                (h1 - g * per_group) * h.model.head_dim, dtype,
                                out->data() + (h0 - heads.begin) * head_bytes, row_bytes));
  }
  return kdn::Status::OK();
}

kdn::Status WriteOut(const std::string& path, const std::vector<std::byte>& bytes) {
  if (path == "-") return kdn::WriteFull(STDOUT_FILENO, bytes, "standard output");
  kdn::UniqueFd fd = kdn::OpenFd(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (!fd.valid()) return kdn::Status::FromErrno("create " + path, errno);
  kdn::Status st = kdn::WriteFull(fd.get(), bytes, path);
  kdn::Status closed = fd.Close(path);
  return st.ok() ? closed : st;
}

}  // namespace

int RunExport(int argc, char** argv) {
  constexpr const char* kCmd = "export";
  auto args = ParseArgs(argc, argv, kOptions);
  if (!args.ok()) return UsageError(kCmd, args.status().message());
  if (args->help) {
    std::fputs(kUsage, stdout);
    return kExitOk;
  }
  const Args& a = *args;
  for (const char* need : {"layer", "kv", "output"}) {
    if (!a.Has(need)) return UsageError(kCmd, std::string("--") + need + " is required");
  }
  if (a.positional.size() != 1) return UsageError(kCmd, "expected one FILE");
  auto layer = ParseU32(*a.Get("layer"), "layer");
  if (!layer.ok()) return UsageError(kCmd, layer.status().message());
  const std::string& kv = a.values.at("kv");
  if (kv != "k" && kv != "v" && kv != "K" && kv != "V") {
    return UsageError(kCmd, "--kv must be k or v, not '" + kv + "'");
  }
  const kdn::KvKind kind = (kv == "k" || kv == "K") ? kdn::KvKind::kKey : kdn::KvKind::kValue;
  const std::string& path = a.positional[0];
  auto reader = kdn::KvReader::Open(path);
  if (!reader.ok()) return Fail(kCmd, kExitBadInput, WithPath(path, reader.status()));
  const kdn::KvHeader& h = (*reader)->header();
  kdn::DType dtype = h.model.dtype;
  if (auto d = a.Get("dtype")) {
    auto parsed = kdn::ParseDType(*d);
    if (!parsed.ok()) return UsageError(kCmd, parsed.status().message());
    dtype = *parsed;
  }
  if (*layer >= h.model.n_layers) {
    return UsageError(kCmd, "--layer " + std::to_string(*layer) + ": " + path + " has " +
                                std::to_string(h.model.n_layers) + " layers");
  }
  std::vector<std::byte> out;
  if (auto text = a.Get("heads")) {
    auto heads = ParseHeads(*text, h.model.n_kv_heads);
    if (!heads.ok()) return UsageError(kCmd, heads.status().message());
    if (kdn::Status st = DecodeHeads(**reader, *layer, kind, dtype, *heads, &out); !st.ok()) {
      return Fail(kCmd, kExitBadInput, WithPath(path, st));
    }
  } else {
    out.resize(h.decoded_block_bytes(dtype));
    if (kdn::Status st = (*reader)->DecodeBlock(*layer, kind, dtype, out); !st.ok()) {
      return Fail(kCmd, kExitBadInput, WithPath(path, st));
    }
  }
  if (kdn::Status st = WriteOut(*a.Get("output"), out); !st.ok()) {
    return Fail(kCmd, kExitBadInput, st.message());
  }
  return kExitOk;
}

}  // namespace kdnctl
