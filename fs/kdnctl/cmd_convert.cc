// kdnctl convert: re-encode a .kv file with another codec. Every block is decoded to the model
// dtype first (so lossy input converts too, its values as they decode).
#include <sys/stat.h>

#include <cstdio>
#include <string>
#include <vector>

#include "fs/kdnctl/args.h"
#include "fs/kdnctl/commands.h"
#include "fs/kdnctl/progress.h"
#include "kdn/format.h"

namespace kdnctl {

namespace {

constexpr char kUsage[] =
    "Usage: kdnctl convert --codec C [--head-groups G|auto] IN OUT\n"
    "Re-encodes IN with codec C into OUT: identity, tokens, positions and prefix hashes are\n"
    "kept; every block of IN is verified and decoded to the model dtype, then encoded again.\n"
    "Converting a lossy (q8/q4/q2) file keeps its decoded values, not the original ones.\n\n"
    "  --codec C   raw, lossless, q8, q4, q2; options :gN (group), :lN (zstd level), +zstd\n"
    "  --head-groups G|auto   blocks per layer's K and V, each of n_kv_heads/G heads (default:\n"
    "              IN's; auto: 8 when n_kv_heads is a multiple of 8, else 1)\n";

constexpr OptionSpec kOptions[] = {{"codec", 0, true}, {"head-groups", 0, true}};

bool SameFile(const std::string& a, const std::string& b) {
  struct stat sa, sb;
  return ::stat(a.c_str(), &sa) == 0 && ::stat(b.c_str(), &sb) == 0 && sa.st_dev == sb.st_dev &&
         sa.st_ino == sb.st_ino;
}

}  // namespace

int RunConvert(int argc, char** argv) {
  constexpr const char* kCmd = "convert";
  auto args = ParseArgs(argc, argv, kOptions);
  if (!args.ok()) return UsageError(kCmd, args.status().message());
  if (args->help) {
    std::fputs(kUsage, stdout);
    return kExitOk;
  }
  if (!args->Has("codec")) return UsageError(kCmd, "--codec is required");
  if (args->positional.size() != 2) return UsageError(kCmd, "expected IN and OUT");
  auto codec = kdn::CodecSpec::Parse(*args->Get("codec"));
  if (!codec.ok()) return UsageError(kCmd, codec.status().message());
  const std::string& in = args->positional[0];
  const std::string& out = args->positional[1];
  if (SameFile(in, out)) return UsageError(kCmd, "IN and OUT are the same file");

  auto reader = kdn::KvReader::Open(in);
  if (!reader.ok()) return Fail(kCmd, kExitBadInput, WithPath(in, reader.status()));
  const kdn::KvHeader& h = (*reader)->header();
  auto groups = HeadGroupsOption(*args, h.model, h.head_groups);
  if (!groups.ok()) return UsageError(kCmd, groups.status().message());
  kdn::KvWriter writer(h.model, *codec, h.tokens, h.position_offset, h.chunk_tokens, *groups);
  // An MLA cache has one latent per layer (the K block) and no V.
  std::vector<std::byte> k(h.decoded_block_bytes(h.model.dtype)), v(h.model.mla() ? 0 : k.size());
  Progress progress("kdnctl convert: " + in + ": layers");
  for (uint32_t l = 0; l < h.model.n_layers; ++l) {
    progress.Update(l, h.model.n_layers);
    kdn::Status st = (*reader)->DecodeBlock(l, kdn::KvKind::kKey, h.model.dtype, k);
    if (st.ok() && !h.model.mla()) {
      st = (*reader)->DecodeBlock(l, kdn::KvKind::kValue, h.model.dtype, v);
    }
    if (!st.ok()) return Fail(kCmd, kExitBadInput, WithPath(in, st));
    // The new codec may refuse values (quant needs finite fp16-range values).
    if (kdn::Status enc = writer.AddLayer(k, v); !enc.ok()) {
      return Fail(kCmd, kExitBadInput, WithPath(in, enc));
    }
  }
  progress.Update(h.model.n_layers, h.model.n_layers);
  progress.Finish();
  if (kdn::Status st = writer.Finish(out); !st.ok()) return Fail(kCmd, kExitBadInput, st.message());
  std::printf("%s: %s -> %s\n", out.c_str(), h.codec.Name().c_str(), codec->Name().c_str());
  return kExitOk;
}

}  // namespace kdnctl
