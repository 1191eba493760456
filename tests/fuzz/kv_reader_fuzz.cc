// libFuzzer target over everything that reads untrusted `.kv` bytes: ParseKvHeader, KvReader over
// a MemorySource with VerifyAll and DecodeBlock, PreparedBlock and DecodeRows.
//
// Checksums stop most mutations at the header, so each input also runs "resealed": the model
// fingerprint, prefix hashes, block checksums and header checksum are recomputed from whatever
// the mutated bytes say, which lets the fuzzer reach the field, table and codec checks behind them.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kdn/codec.h"
#include "kdn/format.h"
#include "store/format/kv_layout.h"
#include "store/format/le.h"
#include "store/format/limits.h"

namespace {

using namespace kdn;

// Work bounds: decoding is linear in the declared sizes, which a small forged file can make large.
constexpr uint64_t kMaxVerifyBytes = uint64_t{64} << 20;
constexpr uint64_t kMaxDecodeBytes = uint64_t{4} << 20;

void Exercise(std::span<const std::byte> bytes) {
  (void)HasKvMagic(bytes);
  (void)KvHeaderBytes(bytes.first(std::min<size_t>(bytes.size(), kKvFixedHeaderBytes)),
                      bytes.size());
  auto parsed = ParseKvHeader(bytes, bytes.size());
  auto reader = KvReader::Open(MemorySource(bytes));
  if (parsed.ok() != reader.ok()) __builtin_trap();  // the two paths must agree
  if (!reader.ok()) return;
  const KvReader& r = **reader;
  const KvHeader& h = r.header();
  if (h.decoded_bytes() <= kMaxVerifyBytes) (void)r.VerifyAll();
  // A head group's block (the whole layer's K or V in a file of one group).
  const BlockShape shape{h.n_tokens, h.group_channels(), h.model.dtype};
  if (h.decoded_block_bytes(DType::kF32) > kMaxDecodeBytes) return;
  std::vector<std::byte> out(h.decoded_block_bytes(DType::kF32));
  std::vector<std::byte> enc;
  for (uint32_t layer = 0; layer < h.model.n_layers && layer < 4; ++layer) {
    for (KvKind kind : {KvKind::kKey, KvKind::kValue}) {
      const DType dt = static_cast<DType>(1 + (layer + static_cast<uint32_t>(kind)) % 3);
      (void)r.DecodeBlock(layer, kind, dt, out);
      for (uint32_t g = 0; g < h.head_groups && g < 4; ++g) {
        enc.resize(h.block(layer, kind, g).encoded_bytes);
        if (!r.ReadBlock(layer, kind, enc, g).ok()) continue;
        auto prepared = PreparedBlock::Prepare(h.codec, kind, shape, enc);
        if (!prepared.ok()) continue;
        const uint32_t mid = h.n_tokens / 2;
        (void)prepared->DecodeRows(0, mid, DType::kF16, out.data(), shape.channels * 2);
        (void)prepared->DecodeRows(mid, h.n_tokens, DType::kBF16, out.data(), shape.channels * 2);
      }
    }
  }
}

// Recomputes every hash the mutated header implies. False when the header is too broken to say.
bool Reseal(std::vector<std::byte>* f) {
  std::byte* p = f->data();
  const size_t size = f->size();
  if (size < kKvFixedHeaderBytes || !HasKvMagic(*f)) return false;
  const uint64_t header_bytes = le::LoadU64(p + layout::kHeaderBytes);
  if (header_bytes < kKvFixedHeaderBytes || header_bytes > size) return false;
  const uint32_t name_len = le::LoadU8(p + layout::kNameLen);
  const uint32_t n_tokens = le::LoadU32(p + layout::kNTokens);
  const uint32_t chunk = le::LoadU32(p + layout::kChunkTokens);
  const uint32_t n_layers = le::LoadU32(p + layout::kNLayers);
  if (n_tokens < 1 || n_tokens > limits::kMaxTokens || chunk < 1 ||
      chunk > limits::kMaxChunkTokens || n_layers < 1 || n_layers > limits::kMaxLayers) {
    return false;
  }
  const bool windows =
      (le::LoadU8(p + layout::kIdentityFlags) & layout::kIdentityLayerWindows) != 0;
  const uint32_t groups = std::max<uint32_t>(1, le::LoadU16(p + layout::kHeadGroups));
  if (groups > limits::kMaxKvHeads) return false;
  const layout::Sections s =
      layout::ComputeSections(name_len, n_tokens, chunk, n_layers, windows, groups);
  if (s.end > header_bytes) return false;
  ModelIdentity m;
  m.name.assign(reinterpret_cast<const char*>(p + s.name_offset), name_len);
  m.n_layers = n_layers;
  m.n_kv_heads = le::LoadU32(p + layout::kNKvHeads);
  m.head_dim = le::LoadU32(p + layout::kHeadDim);
  m.dtype = static_cast<DType>(le::LoadU8(p + layout::kDType));
  m.rope_style = static_cast<RopeStyle>(le::LoadU8(p + layout::kRopeStyle));
  m.rotary_dim = le::LoadU32(p + layout::kRotaryDim);
  m.rope_theta = le::LoadF32(p + layout::kRopeTheta);
  m.rope_scale = le::LoadF32(p + layout::kRopeScale);
  if (windows) {
    // The windows are part of the fingerprint: mutated windows must reach the checks behind it.
    m.layer_windows.resize(n_layers);
    for (uint32_t l = 0; l < n_layers; ++l) {
      m.layer_windows[l] = le::LoadU32(p + s.windows_offset + 4 * uint64_t{l});
    }
  }
  // MLA identity fields (byte 105, 108..111) are fingerprinted too.
  m.attention = static_cast<AttentionKind>(le::LoadU8(p + layout::kAttention));
  m.kv_lora_rank = le::LoadU32(p + layout::kKvLoraRank);
  const Hash128 fp = m.Fingerprint();
  le::Store<uint64_t>(p + layout::kFingerprint, fp.lo);
  le::Store<uint64_t>(p + layout::kFingerprint + 8, fp.hi);
  std::vector<uint32_t> tokens(n_tokens);
  std::memcpy(tokens.data(), p + s.tokens_offset, 4 * size_t{n_tokens});
  const std::vector<Hash128> chain = PrefixHashes(fp, tokens, chunk);
  for (size_t i = 0; i < chain.size(); ++i) {
    le::Store<uint64_t>(p + s.prefix_offset + 16 * i, chain[i].lo);
    le::Store<uint64_t>(p + s.prefix_offset + 16 * i + 8, chain[i].hi);
  }
  for (size_t i = 0; i < 2 * size_t{n_layers} * groups; ++i) {
    std::byte* e = p + s.table_offset + layout::kBlockEntryBytes * i;
    const uint64_t off = le::LoadU64(e), enc = le::LoadU64(e + 8);
    if (off <= size && enc <= size - off) le::Store<uint64_t>(e + 24, HashBytes64(p + off, enc));
  }
  le::Store<uint64_t>(p + layout::kHeaderChecksum, 0);
  le::Store<uint64_t>(p + layout::kHeaderChecksum, HashBytes64(p, header_bytes));
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<std::byte> bytes(reinterpret_cast<const std::byte*>(data),
                               reinterpret_cast<const std::byte*>(data) + size);
  Exercise(bytes);
  if (Reseal(&bytes)) Exercise(bytes);
  return 0;
}
