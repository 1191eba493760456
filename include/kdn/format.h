// The `.kv` file, version 1: one precomputed KV cache of one model over one token sequence.
//
// A `.kv` file is self-describing and portable: a copied file is complete on its own. It holds the
// model identity (so KV never lands in the wrong model), the token ids and the position they were
// computed at, a chained prefix hash per `chunk_tokens` tokens (a prefix lookup is a path lookup),
// the codec, and one encoded block per (layer, K/V), each on a 4 KiB boundary, each with its own
// checksum, each decodable on its own. The byte layout is specified in docs/kv-format.md.
//
// Decoded layout of one block: [tokens][kv_heads][head_dim] in the model's dtype (or a dtype the
// caller asks for), keys after RoPE at positions position_offset .. position_offset + tokens - 1.
//
// This header and codec.h are the format library (libkdn_format). It depends on zstd and xxhash
// only, never on SQLite, liburing or FUSE, so that an engine links only what it needs.
#ifndef KDN_FORMAT_H_
#define KDN_FORMAT_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kdn/status.h"

namespace kdn {

inline constexpr uint32_t kKvVersion = 1;
inline constexpr uint32_t kKvBlockAlign = 4096;          // every block starts on this boundary
inline constexpr uint32_t kDefaultChunkTokens = 256;     // prefix hash granularity
// The first bytes of every `.kv` file. kdnfs validates any file that starts with them.
inline constexpr std::string_view kKvMagic{"\x89KDNKV\r\n", 8};

// Element type of KV as the model computes it (and as decoders may write it).
enum class DType : uint8_t { kF16 = 1, kBF16 = 2, kF32 = 3 };
size_t DTypeSize(DType t);
std::string_view DTypeName(DType t);            // "fp16", "bf16", "fp32"
Result<DType> ParseDType(std::string_view name);  // accepts the names above (and f16/f32/float16...)

// What a layer caches per token. kMha: K and V per KV head (MHA, GQA, MQA). kMla: DeepSeek-style
// multi-head latent attention, one vector per token: the compressed latent (kv_lora_rank values)
// followed by the RoPE-rotated decoupled key (rope_dim values); see ModelIdentity.
enum class AttentionKind : uint8_t { kMha = 0, kMla = 1 };

enum class RopeStyle : uint8_t {
  kNone = 0,  // no rotary embedding (keys are position-free)
  kNeox = 1,  // rotate pairs (i, i + rotary_dim/2): GPT-NeoX, Llama (HF), Mistral
  kGptj = 2,  // rotate adjacent pairs (2i, 2i+1): GPT-J, llama2.c, Meta's original Llama
};
std::string_view RopeStyleName(RopeStyle s);    // "none", "neox", "gptj"
Result<RopeStyle> ParseRopeStyle(std::string_view name);

// 128-bit hash (xxh3-128), used for model fingerprints, prefix chain hashes and chunk ids.
struct Hash128 {
  uint64_t lo = 0;
  uint64_t hi = 0;
  std::string ToHex() const;                       // 32 lowercase hex digits, hi first
  static Result<Hash128> FromHex(std::string_view hex);
  bool IsZero() const { return lo == 0 && hi == 0; }
  friend bool operator==(const Hash128&, const Hash128&) = default;
};
Hash128 HashBytes128(const void* data, size_t size);  // xxh3-128, seed 0
uint64_t HashBytes64(const void* data, size_t size);  // xxh3-64, seed 0 (block and header checksums)

// What KV depends on. Two models with the same identity produce interchangeable KV.
struct ModelIdentity {
  std::string name;          // e.g. "llama3-8b"; at most 255 bytes
  uint32_t n_layers = 0;
  uint32_t n_heads = 0;      // query heads (informational: KV shape does not depend on it)
  uint32_t n_kv_heads = 0;
  uint32_t head_dim = 0;
  DType dtype = DType::kF16;
  RopeStyle rope_style = RopeStyle::kNeox;
  uint32_t rotary_dim = 0;   // leading dims of each head that are rotated; 0 means head_dim
  float rope_theta = 10000.0f;
  float rope_scale = 1.0f;   // linear position scaling (position / scale); 1 = none
  // Sliding-window attention (Mistral, Gemma 2's alternate layers): empty when every layer
  // attends to all tokens; otherwise one entry per layer, 0 for a full-attention layer, w > 0 for
  // a layer that attends to its last w tokens only. At least one entry is non-zero (an all-zero
  // list is written as no list, so that one attention layout has one identity).
  std::vector<uint32_t> layer_windows;
  // MLA (attention == kMla): the cached vector is stated in the fields above as one KV head of
  // head_dim = kv_lora_rank + rope_dim values, rotary_dim = rope_dim; the rotation applies to the
  // trailing rope_dim channels (the latent's [0, kv_lora_rank) are never rotated). kv_lora_rank
  // is 0 otherwise.
  AttentionKind attention = AttentionKind::kMha;
  uint32_t kv_lora_rank = 0;

  bool mla() const { return attention == AttentionKind::kMla; }
  // First rotated channel of each head: kv_lora_rank for MLA, 0 otherwise.
  uint32_t rotary_begin() const { return mla() ? kv_lora_rank : 0; }

  // The window of `layer` (0: full attention).
  uint32_t layer_window(uint32_t layer) const {
    return layer < layer_windows.size() ? layer_windows[layer] : 0;
  }
  uint32_t channels() const { return n_kv_heads * head_dim; }  // values per token per K or V
  uint32_t effective_rotary_dim() const { return rotary_dim ? rotary_dim : head_dim; }
  // xxh3-128 over name and every field above except n_heads (layer_windows included when not
  // empty, attention and kv_lora_rank for MLA). Identical identity <=> identical fingerprint (up to hash collisions).
  Hash128 Fingerprint() const;
  // OK when the shape is sane (non-zero, bounded, rotary_dim <= head_dim and even, layer_windows
  // empty or n_layers entries of at most 2^24, not all zero; MLA: one KV head, 1 <= kv_lora_rank <
  // head_dim, rotary_dim == head_dim - kv_lora_rank; kv_lora_rank 0 otherwise).
  Status Validate() const;
  // First differing field, e.g. "n_kv_heads: cache has 8, model has 4"; OK when all match.
  Status Compare(const ModelIdentity& expected) const;
};

// Shapes of well-known models, for synthetic caches and tests: "tiny" (stories260K: 5 layers,
// 8 heads, 4 KV heads, head_dim 8, fp32, gptj), "llama3-8b", "llama3-70b", "mistral-7b",
// "gemma2-9b" (42 layers, the even ones sliding-window layers of 4096 tokens), "deepseek-v3"
// (MLA: 61 layers, latent 512 + rope 64; shape only: its YaRN scaling is not recorded).
Result<ModelIdentity> ModelPreset(std::string_view preset);
std::vector<std::string_view> ModelPresetNames();

enum class CodecId : uint8_t {
  kRaw = 0,       // model dtype bytes as they are
  kLossless = 1,  // byte planes (exponent plane apart) + zstd; bit-exact
  kQuant = 2,     // KIVI-style: K per channel over groups of tokens, V per token over groups of channels
  kTc = 3,        // transform coding: un-rotated keys, mean, Hadamard, uniform steps, interleaved rANS
};

inline constexpr uint8_t kTcMinQuality = 1;  // tc:q=1 coarsest ..
inline constexpr uint8_t kTcMaxQuality = 14;  // .. tc:q=14 finest
inline constexpr uint8_t kTcDefaultQuality = 4;

struct CodecSpec {
  CodecId id = CodecId::kRaw;
  uint8_t bits = 0;            // kQuant: 8, 4 or 2; kTc: the quality kTcMinQuality..kTcMaxQuality
  uint16_t group_size = 32;    // kQuant: tokens per K group, channels per V group
  bool zstd = false;           // kQuant: zstd stage over the codes
  bool rans = false;           // kLossless: the byte planes entropy-coded with interleaved rANS in
                               // independent segments (GPUs decode them) instead of zstd
  int8_t zstd_level = 3;       // encode-time only; decoders do not need it
  uint8_t tc_transform = 1;    // kTc, encode-time only: 0 identity, 1 Hadamard per head (the block
                               // says which it used)

  // "raw", "lossless", "q8", "q4", "q2", with options: "q4+zstd", "q4:g64", "q2:g128+zstd",
  // "lossless:l9" (zstd level), "lossless:entropy=rans", "tc" (= "tc:q=4"), "tc:q=2", "tc:q=6:t=id" (no transform).
  static Result<CodecSpec> Parse(std::string_view text);
  std::string Name() const;     // canonical text that Parse accepts back
  bool lossy() const { return id == CodecId::kQuant || id == CodecId::kTc; }
  Status Validate() const;
};

enum class KvKind : uint8_t { kKey = 0, kValue = 1 };

// Where one encoded block lives in the file and how to check it.
struct BlockEntry {
  uint64_t offset = 0;         // from the start of the file; a multiple of kKvBlockAlign
  uint64_t encoded_bytes = 0;
  uint64_t decoded_bytes = 0;  // in the model dtype: tokens * channels * DTypeSize(model dtype)
  uint64_t checksum = 0;       // xxh3-64 of the encoded bytes
};

// Everything in a `.kv` header, parsed and validated.
struct KvHeader {
  uint32_t version = kKvVersion;
  ModelIdentity model;
  Hash128 fingerprint;            // as stored; equals model.Fingerprint() in a valid file
  uint32_t n_tokens = 0;
  uint32_t position_offset = 0;   // position of token 0 when the KV was computed
  uint32_t chunk_tokens = kDefaultChunkTokens;
  CodecSpec codec;
  std::vector<uint32_t> tokens;         // n_tokens ids
  std::vector<Hash128> prefix_hashes;   // ceil(n_tokens / chunk_tokens) chained hashes
  // Head groups G (docs/kv-format.md, "Head groups"): each (layer, K/V) is stored as G blocks,
  // block g holding KV heads [g * n_kv_heads / G, (g + 1) * n_kv_heads / G), so that a
  // tensor-parallel rank reads only the groups its heads are in. 1 (the layout before groups
  // existed): one block holds all heads. G divides n_kv_heads; MLA caches have one group.
  uint32_t head_groups = 1;
  std::vector<BlockEntry> blocks;  // 2 * n_layers * G, index (2 * layer + kind) * G + group
  uint64_t header_bytes = 0;      // bytes the header occupies (before padding to the first block)
  uint64_t file_bytes = 0;        // total size of a complete file

  // False for the V slot of an MLA cache: its one latent block per layer is in the K slot, the V
  // slot is an empty entry (docs/kv-format.md, "MLA caches").
  bool has_block(uint32_t, KvKind kind) const { return kind == KvKind::kKey || !model.mla(); }
  static size_t BlockIndex(uint32_t layer, KvKind kind, uint32_t group, uint32_t groups) {
    return (2 * size_t{layer} + static_cast<uint32_t>(kind)) * groups + group;
  }
  const BlockEntry& block(uint32_t layer, KvKind kind, uint32_t group = 0) const {
    return blocks[BlockIndex(layer, kind, group, head_groups)];
  }
  uint32_t heads_per_group() const { return model.n_kv_heads / head_groups; }
  // Values per token in one group's block.
  uint32_t group_channels() const { return heads_per_group() * model.head_dim; }
  // The groups holding KV heads [head_begin, head_end): [first, last).
  uint32_t first_group(uint32_t head_begin) const { return head_begin / heads_per_group(); }
  uint32_t end_group(uint32_t head_end) const {
    return (head_end + heads_per_group() - 1) / heads_per_group();
  }
  // The first token a load of `layer` takes: 0 for a full-attention layer, n_tokens - window for
  // a sliding-window layer whose window is shorter than the file (its earlier tokens are outside
  // every later token's window, so a load leaves them out).
  uint32_t window_begin(uint32_t layer) const {
    const uint32_t w = model.layer_window(layer);
    return w != 0 && w < n_tokens ? n_tokens - w : 0;
  }
  // Bytes of one decoded block when written as `dtype`.
  // (MLA: the K slot's; the V slot has none.)
  uint64_t decoded_block_bytes(DType dtype) const {
    return uint64_t{n_tokens} * model.channels() * DTypeSize(dtype);
  }
  // Bytes of one head group's decoded block in the model dtype (decoded_block_bytes when G = 1).
  uint64_t group_block_bytes() const {
    return uint64_t{n_tokens} * group_channels() * DTypeSize(model.dtype);
  }
  uint64_t decoded_bytes() const;  // all blocks, model dtype
  uint64_t encoded_bytes() const;  // all blocks
};

// OK when a file of `model` may have `head_groups` head groups: 1, or a divisor of n_kv_heads of at
// least 2 (each group holds the same number of whole heads); an MLA cache has one KV head, so one
// group. The message says why not.
Status CheckHeadGroups(const ModelIdentity& model, uint32_t head_groups);
// The head groups a writer uses when asked for the default: 8 when n_kv_heads is a multiple of 8
// (tensor parallelism inside one 8-GPU node splits heads in up to 8 ranks: each reads 1/8 of a
// file), else 1. See docs/kv-format.md, "Head groups", for what grouping costs.
uint32_t DefaultHeadGroups(const ModelIdentity& model);

// Chained prefix hashes: h_i = xxh3_128(h_{i-1} || fingerprint || tokens of chunk i as u32 LE),
// h_{-1} = 0. The last chunk may be partial.
std::vector<Hash128> PrefixHashes(const Hash128& fingerprint, std::span<const uint32_t> tokens,
                                  uint32_t chunk_tokens);

// Header parsing in two steps, so that a reader fetches exactly what it needs: the fixed part
// (first kKvFixedHeaderBytes bytes) says how long the whole header is.
inline constexpr size_t kKvFixedHeaderBytes = 128;
// True when `prefix` starts with kKvMagic (any length check beyond that is ParseKvHeader's job).
bool HasKvMagic(std::span<const std::byte> prefix);
// From at least kKvFixedHeaderBytes bytes: the header's total length, checked against `file_size`.
Result<uint64_t> KvHeaderBytes(std::span<const std::byte> fixed, uint64_t file_size);
// From the whole header: every field, bound and checksum validated against `file_size`.
Result<KvHeader> ParseKvHeader(std::span<const std::byte> header, uint64_t file_size);

// Random-access source of file bytes: a file descriptor, a memory buffer, a store chunk.
class ByteSource {
 public:
  virtual ~ByteSource() = default;
  virtual uint64_t size() const = 0;
  // Reads exactly out.size() bytes at `offset` or fails (a short read is an error).
  virtual Status ReadAt(uint64_t offset, std::span<std::byte> out) const = 0;
};
Result<std::unique_ptr<ByteSource>> OpenFileSource(const std::string& path);
std::unique_ptr<ByteSource> MemorySource(std::span<const std::byte> bytes);  // does not copy

// Reads a `.kv` file: the header at open, then any block on demand, checksum verified every time.
class KvReader {
 public:
  static Result<std::unique_ptr<KvReader>> Open(const std::string& path);
  static Result<std::unique_ptr<KvReader>> Open(std::unique_ptr<ByteSource> source);

  const KvHeader& header() const { return header_; }
  // The encoded bytes of one block (head group `group` of a grouped file), checksum verified.
  // `out` must hold encoded_bytes.
  Status ReadBlock(uint32_t layer, KvKind kind, std::span<std::byte> out, uint32_t group = 0) const;
  // Read, verify and decode the (layer, K/V) into `out` ([tokens][kv_heads][head_dim] of `dtype`,
  // decoded_block_bytes(dtype) bytes): every head group's block, each into its heads' channels.
  Status DecodeBlock(uint32_t layer, KvKind kind, DType dtype, std::span<std::byte> out) const;
  // Every block read, checksummed and decoded; the first failure names its layer and block.
  // (VerifyKv is this after the header checks of Open.)
  Status VerifyAll() const;

 private:
  KvReader(std::unique_ptr<ByteSource> source, KvHeader header)
      : source_(std::move(source)), header_(std::move(header)) {}
  std::unique_ptr<ByteSource> source_;
  KvHeader header_;
};

// The one complete check of a `.kv` file: what `kdnctl verify` runs, what the store runs before it
// publishes `.kv` content, and what fsck runs. The header (every field, bound and checksum, and its
// file size against source.size()), then every block streamed in fixed windows: its checksum, its
// zstd stage decoded to exactly the size the layout gives it (one frame that declares that size,
// nothing after it), quantization padding and the padding between blocks zero. Memory stays
// bounded whatever sizes the header claims: nothing is allocated from a header field before the
// field is checked against the bytes there are, and blocks are never held whole. An allocation
// that fails is kNoSpace, never an exception. Returns the parsed header.
Result<KvHeader> VerifyKv(const ByteSource& source);

// Builds a `.kv` file. Layers are added in order, each as K and V tensors in the model dtype,
// [tokens][kv_heads][head_dim] (MLA: the latent [tokens][kv_lora_rank + rope_dim] as K, V empty);
// Finish writes the complete file (header, then aligned blocks).
class KvWriter {
 public:
  // `head_groups`: KvHeader::head_groups (1, or a divisor of n_kv_heads of at least 2; MLA: 1).
  KvWriter(ModelIdentity model, CodecSpec codec, std::vector<uint32_t> tokens,
           uint32_t position_offset = 0, uint32_t chunk_tokens = kDefaultChunkTokens,
           uint32_t head_groups = 1);
  ~KvWriter();
  KvWriter(const KvWriter&) = delete;
  KvWriter& operator=(const KvWriter&) = delete;

  // Encodes one layer. `k` and `v` each hold tokens * channels elements of the model dtype.
  Status AddLayer(std::span<const std::byte> k, std::span<const std::byte> v);
  // Writes the whole file to `path` (created or truncated; written sequentially, fsynced when
  // `sync`). Fails unless every layer was added.
  Status Finish(const std::string& path, bool sync = false);
  // The whole file as bytes.
  Result<std::vector<std::byte>> FinishToMemory();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kdn

#endif  // KDN_FORMAT_H_
