// tc codec: transform coding of one block with interleaved rANS. The encoder un-rotates keys
// (RoPE from the model identity), removes each channel's mean, applies a Hadamard transform per
// head, quantizes every coefficient with a uniform step (finer in shallow layers, coarser or finer
// with the quality q), and entropy-codes the integers with static per-block frequency tables in
// independent segments. The decoder is tc_math.h, shared with the CUDA kernels; this file parses
// and checks blocks and builds the tables that decoder indexes. docs/kv-format.md, "tc", fixes
// the bytes.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <mutex>
#include <string>

#include "kdn/codec.h"
#include "store/format/codec_internal.h"
#include "store/format/le.h"
#include "store/format/limits.h"
#include "store/format/rans.h"
#include "store/format/rans_encode.h"
#include "store/format/scratch.h"
#include "store/format/simd.h"
#include "store/format/tc_math.h"

namespace kdn {

BlockContext BlockContext::For(const ModelIdentity& model, uint32_t position_offset,
                               uint32_t layer) {
  BlockContext c;
  c.layer = layer;
  c.n_layers = model.n_layers;
  c.head_dim = model.head_dim;
  c.rope_style = model.rope_style;
  c.rotary_dim = model.effective_rotary_dim();
  c.rope_theta = model.rope_theta;
  c.rope_scale = model.rope_scale;
  c.position_offset = position_offset;
  return c;
}

namespace codec_internal {

namespace {

std::string Num(uint64_t v) {
  return std::to_string(v);
}

uint64_t AlignUp(uint64_t v, uint64_t a) {
  return (v + a - 1) / a * a;
}

// Fixed part of a tc block (docs/kv-format.md, "tc").
namespace off {
constexpr size_t kVersion = 0;
constexpr size_t kTransform = 1;
constexpr size_t kRotate = 2;      // rope style applied at decode: 0 none, 1 neox, 2 gptj
constexpr size_t kReserved0 = 3;
constexpr size_t kHeadDim = 4;
constexpr size_t kRotaryDim = 8;
constexpr size_t kTheta = 12;
constexpr size_t kScale = 16;
constexpr size_t kPosition = 20;
constexpr size_t kSegTokens = 24;
constexpr size_t kNSegments = 28;
constexpr size_t kNTables = 32;
constexpr size_t kReserved1 = 36;
}  // namespace off
constexpr uint8_t kVersion = 1;

// Where the variable parts of a block of this shape start.
struct Layout {
  uint64_t mean = 0, step = 0, table_of = 0, tables = 0;
};
Layout BaseLayout(uint32_t channels) {
  Layout l;
  l.mean = TcBlock::kFixedBytes;
  l.step = l.mean + 4ull * channels;
  l.table_of = l.step + 4ull * channels;
  l.tables = AlignUp(l.table_of + channels, 4);
  return l;
}

bool IsPow2(uint32_t v) {
  return v != 0 && (v & (v - 1)) == 0;
}

}  // namespace

uint64_t MaxTcBlockBytes(const BlockShape& shape) {
  const Layout l = BaseLayout(shape.channels);
  const uint64_t tables = tc::kMaxTables * AlignUp(2 + 2 * rans::kMaxSymbols, 4);
  const uint64_t t = shape.tokens;
  // Per segment (at most one per token): its offset and states; per value at most three symbols
  // (escape + two bytes), each at most one 16-bit word.
  return l.tables + tables + 8 * (t + 1) + t * (rans::kStateBytes + 2) + 6 * shape.elements();
}

std::shared_ptr<const std::vector<float>> RopeTable(uint32_t rotary_dim, float theta, float scale,
                                                    uint32_t position_offset, uint32_t tokens) {
  struct Key {
    uint32_t rotary_dim;
    float theta, scale;
    uint32_t position_offset, tokens;
    bool operator==(const Key&) const = default;
  };
  static std::mutex mu;
  static std::vector<std::pair<Key, std::shared_ptr<const std::vector<float>>>> cache;
  const Key key{rotary_dim, theta, scale, position_offset, tokens};
  {
    std::lock_guard<std::mutex> lock(mu);
    for (const auto& [k, v] : cache) {
      if (k == key) return v;
    }
  }
  const uint32_t pairs = rotary_dim / 2;
  auto table = std::make_shared<std::vector<float>>(uint64_t{tokens} * pairs * 2);
  std::vector<double> inv_freq(pairs);
  for (uint32_t i = 0; i < pairs; ++i) {
    inv_freq[i] = std::pow(static_cast<double>(theta), -2.0 * i / rotary_dim);
  }
  for (uint32_t t = 0; t < tokens; ++t) {
    const double pos = (static_cast<double>(position_offset) + t) / static_cast<double>(scale);
    float* row = table->data() + uint64_t{t} * pairs * 2;
    for (uint32_t i = 0; i < pairs; ++i) {
      const double a = pos * inv_freq[i];
      row[2 * i] = static_cast<float>(std::cos(a));
      row[2 * i + 1] = static_cast<float>(std::sin(a));
    }
  }
  std::lock_guard<std::mutex> lock(mu);
  if (cache.size() >= 8) cache.erase(cache.begin());
  cache.emplace_back(key, table);
  return table;
}

// ---------------------------------------------------------------------------------------------
// Parsing and decoding.

Result<std::shared_ptr<const TcBlock>> TcBlock::Parse(const BlockShape& shape,
                                                      std::span<const std::byte> payload) {
  const uint32_t C = shape.channels;
  const std::byte* p = payload.data();
  const uint64_t n = payload.size();
  const Layout l = BaseLayout(C);
  if (n < l.tables) {
    return Status::Corruption("tc block is " + Num(n) + " bytes, shorter than its tables (" +
                              Num(l.tables) + ")");
  }
  if (le::LoadU8(p + off::kVersion) != kVersion) {
    return Status::Corruption("tc block version " + Num(le::LoadU8(p + off::kVersion)) +
                              " unknown (have: 1)");
  }
  auto b = std::make_shared<TcBlock>();
  tc::TcView& v = b->view_;
  v.tokens = shape.tokens;
  v.channels = C;
  v.transform = le::LoadU8(p + off::kTransform);
  const uint32_t rotate = le::LoadU8(p + off::kRotate);
  v.head_dim = le::LoadU32(p + off::kHeadDim);
  const uint32_t rotary = le::LoadU32(p + off::kRotaryDim);
  const float theta = le::Load<float>(p + off::kTheta);
  const float scale = le::Load<float>(p + off::kScale);
  const uint32_t position = le::LoadU32(p + off::kPosition);
  v.seg_tokens = le::LoadU32(p + off::kSegTokens);
  v.n_segments = le::LoadU32(p + off::kNSegments);
  b->n_tables_ = le::LoadU32(p + off::kNTables);
  if (le::LoadU8(p + off::kReserved0) != 0 || le::LoadU32(p + off::kReserved1) != 0) {
    return Status::Corruption("tc block: reserved bytes are not zero");
  }
  if (v.transform > tc::kTransformHadamard) {
    return Status::Corruption("tc block: transform " + Num(v.transform) + " unknown");
  }
  if (v.head_dim < 1 || v.head_dim > tc::kMaxHeadDim || C % v.head_dim != 0) {
    return Status::Corruption("tc block: head_dim " + Num(v.head_dim) + " does not divide " +
                              Num(C) + " channels (or is out of range 1.." +
                              Num(tc::kMaxHeadDim) + ")");
  }
  if (v.transform == tc::kTransformHadamard && !IsPow2(v.head_dim)) {
    return Status::Corruption("tc block: Hadamard transform needs a power-of-two head_dim, not " +
                              Num(v.head_dim));
  }
  if (rotate > 2) return Status::Corruption("tc block: rope style " + Num(rotate) + " unknown");
  if (rotate != 0) {
    if (rotary < 2 || rotary > v.head_dim || rotary % 2 != 0) {
      return Status::Corruption("tc block: rotary_dim " + Num(rotary) + " invalid for head_dim " +
                                Num(v.head_dim));
    }
    if (!std::isfinite(theta) || !(theta > 0) || !std::isfinite(scale) || !(scale > 0)) {
      return Status::Corruption("tc block: rope theta/scale not finite and positive");
    }
    v.rope_style = rotate;
    v.rotary_dim = rotary;
  } else if (rotary != 0 || le::LoadU32(p + off::kTheta) != 0 ||
             le::LoadU32(p + off::kScale) != 0 || position != 0) {
    return Status::Corruption("tc block: rope fields must be zero without rotation");
  }
  if (v.seg_tokens < 1) return Status::Corruption("tc block: seg_tokens 0");
  // The encoder's segments are the power of two at or above the tokens at most: a larger count
  // would only make a decoder size its buffers from a number the file made up.
  if (uint64_t{v.seg_tokens} >= 2 * uint64_t{shape.tokens}) {
    return Status::Corruption("tc block: seg_tokens " + Num(v.seg_tokens) + " for " +
                              Num(shape.tokens) + " tokens");
  }
  const uint64_t want_segs = (uint64_t{shape.tokens} + v.seg_tokens - 1) / v.seg_tokens;
  if (v.n_segments != want_segs) {
    return Status::Corruption("tc block: " + Num(v.n_segments) + " segments, " +
                              Num(shape.tokens) + " tokens by " + Num(v.seg_tokens) + " need " +
                              Num(want_segs));
  }
  if (b->n_tables_ < 1 || b->n_tables_ > tc::kMaxTables) {
    return Status::Corruption("tc block: " + Num(b->n_tables_) + " tables (have: 1.." +
                              Num(tc::kMaxTables) + ")");
  }
  b->mean_.resize(C);
  b->step_.resize(C);
  b->table_of_.resize(C);
  std::memcpy(b->mean_.data(), p + l.mean, 4ull * C);
  std::memcpy(b->step_.data(), p + l.step, 4ull * C);
  std::memcpy(b->table_of_.data(), p + l.table_of, C);
  for (uint32_t c = 0; c < C; ++c) {
    if (b->table_of_[c] >= b->n_tables_) {
      return Status::Corruption("tc block: channel " + Num(c) + " names table " +
                                Num(b->table_of_[c]) + " of " + Num(b->n_tables_));
    }
  }
  for (uint64_t i = l.table_of + C; i < l.tables; ++i) {
    if (p[i] != std::byte{0}) return Status::Corruption("tc block: padding is not zero");
  }
  // Frequency tables.
  uint64_t pos = l.tables;
  b->slots_.resize(uint64_t{b->n_tables_} * rans::kProbScale);
  b->escape_.resize(b->n_tables_);
  uint16_t freq[rans::kMaxSymbols];
  for (uint32_t t = 0; t < b->n_tables_; ++t) {
    if (n - pos < 2) return Status::Corruption("tc block: table " + Num(t) + " truncated");
    const uint32_t nsym = le::LoadU16(p + pos);
    if (nsym < 2 || nsym > rans::kMaxSymbols) {
      return Status::Corruption("tc block: table " + Num(t) + " has " + Num(nsym) +
                                " symbols (have: 2.." + Num(rans::kMaxSymbols) + ")");
    }
    const uint64_t bytes = AlignUp(2 + 2ull * nsym, 4);
    if (n - pos < bytes) return Status::Corruption("tc block: table " + Num(t) + " truncated");
    uint32_t sum = 0;
    for (uint32_t s = 0; s < nsym; ++s) {
      freq[s] = le::LoadU16(p + pos + 2 + 2 * s);
      if (freq[s] >= rans::kProbScale) {
        return Status::Corruption("tc block: table " + Num(t) + " frequency " + Num(freq[s]) +
                                  " out of range 0.." + Num(rans::kProbScale - 1));
      }
      sum += freq[s];
    }
    if (sum != rans::kProbScale) {
      return Status::Corruption("tc block: table " + Num(t) + " frequencies sum to " + Num(sum) +
                                ", not " + Num(rans::kProbScale));
    }
    if (freq[nsym - 1] == 0) {
      return Status::Corruption("tc block: table " + Num(t) + " escape symbol has frequency 0");
    }
    for (uint64_t i = pos + 2 + 2ull * nsym; i < pos + bytes; ++i) {
      if (p[i] != std::byte{0}) return Status::Corruption("tc block: padding is not zero");
    }
    rans::BuildDecodeTable(freq, nsym, b->slots_.data() + uint64_t{t} * rans::kProbScale);
    b->escape_[t] = nsym - 1;
    pos += bytes;
  }
  // Segment offsets: [n_segments] end offsets, increasing, each segment even-sized and holding at
  // least its states, the last ending exactly at the block's end.
  const uint64_t ends = 8ull * v.n_segments;
  if (n - pos < ends) return Status::Corruption("tc block: segment table truncated");
  const uint64_t area = pos + ends;
  const uint64_t area_bytes = n - area;
  b->seg_begin_.resize(uint64_t{v.n_segments} + 1);
  b->seg_begin_[0] = 0;
  for (uint32_t s = 0; s < v.n_segments; ++s) {
    const uint64_t end = le::LoadU64(p + pos + 8ull * s);
    const uint64_t begin = b->seg_begin_[s];
    if (end < begin || end - begin < rans::kStateBytes || (end - begin) % 2 != 0 ||
        end > area_bytes) {
      return Status::Corruption("tc block: segment " + Num(s) + " (tokens " +
                                Num(uint64_t{s} * v.seg_tokens) + "..) bounds [" + Num(begin) +
                                ", " + Num(end) + ") invalid in a " + Num(area_bytes) +
                                "-byte segment area");
    }
    b->seg_begin_[s + 1] = end;
  }
  if (b->seg_begin_[v.n_segments] != area_bytes) {
    return Status::Corruption("tc block: segments end at " + Num(b->seg_begin_[v.n_segments]) +
                              ", the block at " + Num(area_bytes));
  }
  b->segments_offset_ = area;
  b->channel_slot_base_.resize(C);
  b->channel_escape_.resize(C);
  for (uint32_t c = 0; c < C; ++c) {
    b->channel_slot_base_[c] = uint32_t{b->table_of_[c]} * rans::kProbScale;
    b->channel_escape_[c] = b->escape_[b->table_of_[c]];
  }
  if (v.rotary_dim != 0) {
    b->rope_cs_ = RopeTable(v.rotary_dim, theta, scale, position, shape.tokens);
    v.rope_cs = b->rope_cs_->data();
  }
  v.mean = b->mean_.data();
  v.step = b->step_.data();
  v.table_of = b->table_of_.data();
  v.slots = b->slots_.data();
  v.escape = b->escape_.data();
  v.segments = reinterpret_cast<const uint8_t*>(p + area);
  v.seg_begin = b->seg_begin_.data();
  return std::shared_ptr<const TcBlock>(std::move(b));
}

std::span<const float> TcBlock::rope_cs() const {
  if (!rope_cs_) return {};
  return *rope_cs_;
}

namespace {
Status SegmentError(uint32_t seg, const tc::TcView& v) {
  const uint64_t t0 = uint64_t{seg} * v.seg_tokens;
  return Status::Corruption("tc segment " + Num(seg) + " (tokens " + Num(t0) + ".." +
                            Num(t0 + tc::SegmentTokens(v, seg) - 1) +
                            "): rANS stream corrupt or truncated");
}
}  // namespace

Status TcBlock::DecodeRows(uint32_t t_begin, uint32_t t_end, DType out_dtype, std::byte* out,
                           size_t row_stride_bytes) const {
  const tc::TcView& v = view_;
  if (t_begin >= t_end) return Status::OK();
  // tc_math.h's decoder, or a vector kernel with the same bits (simd.h).
  const simd::Kernels& k = simd::ActiveKernels();
  const simd::TcChannels ch{channel_slot_base_.data(), channel_escape_.data()};
  // A segment decodes at most min(seg_tokens, tokens) rows; room for two (a pair kernel).
  const uint64_t seg_values = uint64_t{std::min(v.seg_tokens, v.tokens)} * v.channels;
  KDN_ASSIGN_OR_RETURN(std::span<std::byte> qbuf,
                       scratch::Get(scratch::Slot::kCodes, 2 * seg_values * sizeof(int16_t)));
  int16_t* q = reinterpret_cast<int16_t*>(qbuf.data());
  // Rows are rebuilt straight into the output dtype where the ISA can (tc_reconstruct_store), else
  // in binary32 (in place when that is the output), then converted with the SIMD kernels (round to
  // nearest even, the same bits as tc::StoreFloats, which the device uses).
  KDN_ASSIGN_OR_RETURN(std::span<std::byte> rowbuf,
                       scratch::Get(scratch::Slot::kParams, uint64_t{v.channels} * 4));
  float* x = reinterpret_cast<float*>(rowbuf.data());
  auto rebuild = [&](uint32_t seg, const int16_t* qs) {
    const uint32_t s0 = seg * v.seg_tokens;
    const uint32_t r0 = std::max(s0, t_begin), r1 = std::min(s0 + tc::SegmentTokens(v, seg), t_end);
    for (uint32_t t = r0; t < r1; ++t) {
      const int16_t* qrow = qs + uint64_t{t - s0} * v.channels;
      std::byte* dst = out + uint64_t{t - t_begin} * row_stride_bytes;
      if (k.tc_reconstruct_store != nullptr) {
        k.tc_reconstruct_store(v, qrow, t, out_dtype, dst);
        continue;
      }
      if (out_dtype == DType::kF32 && reinterpret_cast<uintptr_t>(dst) % alignof(float) == 0) {
        k.tc_reconstruct_row(v, qrow, t, reinterpret_cast<float*>(dst));
        continue;
      }
      k.tc_reconstruct_row(v, qrow, t, x);
      ConvertDType(DType::kF32, x, out_dtype, dst, v.channels);
    }
  };
  uint32_t seg = t_begin / v.seg_tokens;
  while (seg < v.n_segments && seg * v.seg_tokens < t_end) {
    if (k.tc_decode_segment_pair != nullptr && seg + 1 < v.n_segments &&
        (seg + 1) * v.seg_tokens < t_end) {
      bool ok[2];
      k.tc_decode_segment_pair(v, ch, seg, q, q + seg_values, ok);
      if (!ok[0]) return SegmentError(seg, v);
      if (!ok[1]) return SegmentError(seg + 1, v);
      rebuild(seg, q);
      rebuild(seg + 1, q + seg_values);
      seg += 2;
      continue;
    }
    if (!k.tc_decode_segment(v, ch, seg, q)) return SegmentError(seg, v);
    rebuild(seg, q);
    ++seg;
  }
  return Status::OK();
}

Status TcBlock::CheckStreams() const {
  const tc::TcView& v = view_;
  const simd::Kernels& k = simd::ActiveKernels();
  const simd::TcChannels ch{channel_slot_base_.data(), channel_escape_.data()};
  const uint64_t seg_values = uint64_t{std::min(v.seg_tokens, v.tokens)} * v.channels;
  KDN_ASSIGN_OR_RETURN(std::span<std::byte> qbuf,
                       scratch::Get(scratch::Slot::kCodes, 2 * seg_values * sizeof(int16_t)));
  int16_t* q = reinterpret_cast<int16_t*>(qbuf.data());
  uint32_t seg = 0;
  // Pairs where the ISA decodes two at once (as DecodeRows), the first bad segment named.
  for (; k.tc_decode_segment_pair != nullptr && seg + 1 < v.n_segments; seg += 2) {
    bool ok[2];
    k.tc_decode_segment_pair(v, ch, seg, q, q + seg_values, ok);
    if (!ok[0]) return SegmentError(seg, v);
    if (!ok[1]) return SegmentError(seg + 1, v);
  }
  for (; seg < v.n_segments; ++seg) {
    if (!k.tc_decode_segment(v, ch, seg, q)) return SegmentError(seg, v);
  }
  return Status::OK();
}

// ---------------------------------------------------------------------------------------------
// Encoding.

namespace {

// Step (in the units of the values) relative to the block's RMS deviation from the channel means,
// per quality: each step of q divides it by sqrt(2) (about half a bit more per value).
double RelativeStep(uint32_t q) {
  return std::exp2((2.0 - static_cast<double>(q)) / 2.0);
}

// Shallow layers feed every later one, so their errors cost most: finer steps there.
double LayerFactor(uint32_t layer, uint32_t n_layers) {
  (void)n_layers;
  if (layer == 0) return 0.5;
  if (layer == 1) return 0.71;
  return 1.0;
}

uint32_t Zigzag(int32_t v) {
  return (static_cast<uint32_t>(v) << 1) ^ static_cast<uint32_t>(v >> 31);
}

// Counts -> frequencies summing to kProbScale, every counted symbol (and the escape, the last)
// at least 1.
void NormalizeFreqs(const std::vector<uint64_t>& counts, std::vector<uint16_t>* freq) {
  const size_t nsym = counts.size();
  uint64_t total = 0;
  for (uint64_t c : counts) total += c;
  freq->assign(nsym, 0);
  int64_t sum = 0;
  for (size_t s = 0; s < nsym; ++s) {
    const bool need = counts[s] > 0 || s == nsym - 1;
    if (!need) continue;
    uint64_t f = total ? counts[s] * rans::kProbScale / total : 0;
    if (f < 1) f = 1;
    (*freq)[s] = static_cast<uint16_t>(std::min<uint64_t>(f, rans::kProbScale - 1));
    sum += (*freq)[s];
  }
  int64_t diff = static_cast<int64_t>(rans::kProbScale) - sum;
  while (diff != 0) {
    // Give to (or take from) the most frequent symbol that can take it.
    size_t best = 0;
    for (size_t s = 1; s < nsym; ++s) {
      if ((*freq)[s] > (*freq)[best]) best = s;
    }
    if (diff > 0) {
      const int64_t room = static_cast<int64_t>(rans::kProbScale - 1) - (*freq)[best];
      const int64_t d = std::min(diff, room);
      (*freq)[best] = static_cast<uint16_t>((*freq)[best] + d);
      diff -= d;
      if (d == 0) break;  // cannot happen: nsym >= 2 and sum < kProbScale
    } else {
      const int64_t d = std::min<int64_t>(-diff, (*freq)[best] - 1);
      (*freq)[best] = static_cast<uint16_t>((*freq)[best] - d);
      diff += d;
      if (d == 0) break;
    }
  }
}

}  // namespace

Status EncodeTcBlock(const CodecSpec& codec, KvKind kind, const BlockShape& shape,
                     const BlockContext& ctx, std::span<const std::byte> src,
                     std::vector<std::byte>* out) {
  const uint32_t T = shape.tokens, C = shape.channels;
  // Heads: the model's, else the largest power of two (<= 128) dividing the channels.
  uint32_t head_dim = ctx.head_dim;
  if (head_dim == 0 || head_dim > tc::kMaxHeadDim || C % head_dim != 0) {
    head_dim = 1;
    while (head_dim < 128 && C % (head_dim * 2) == 0) head_dim *= 2;
  }
  const uint32_t heads = C / head_dim;
  const uint32_t transform =
      codec.tc_transform == 1 && IsPow2(head_dim) ? tc::kTransformHadamard : tc::kTransformIdentity;
  uint32_t rotate = 0, rotary = 0;
  if (kind == KvKind::kKey && ctx.rope_style != RopeStyle::kNone && ctx.head_dim == head_dim) {
    rotary = ctx.rotary_dim ? ctx.rotary_dim : head_dim;
    if (rotary >= 2 && rotary <= head_dim && rotary % 2 == 0 && std::isfinite(ctx.rope_theta) &&
        ctx.rope_theta > 0 && std::isfinite(ctx.rope_scale) && ctx.rope_scale > 0) {
      rotate = static_cast<uint32_t>(ctx.rope_style);
    } else {
      rotary = 0;
    }
  }

  // Values as floats, keys un-rotated.
  std::vector<float> x(shape.elements());
  ConvertDType(shape.dtype, src.data(), DType::kF32, x.data(), x.size());
  for (float f : x) {
    if (!std::isfinite(f)) return Status::InvalidArgument("tc encoder: a value is not finite");
  }
  if (rotate != 0) {
    auto cs = RopeTable(rotary, ctx.rope_theta, ctx.rope_scale, ctx.position_offset, T);
    const uint32_t pairs = rotary / 2;
    for (uint32_t t = 0; t < T; ++t) {
      const float* row_cs = cs->data() + uint64_t{t} * pairs * 2;
      for (uint32_t h = 0; h < heads; ++h) {
        float* v = x.data() + uint64_t{t} * C + uint64_t{h} * head_dim;
        for (uint32_t i = 0; i < pairs; ++i) {
          const uint32_t a = rotate == 2 ? 2 * i : i;
          const uint32_t b = rotate == 2 ? 2 * i + 1 : i + pairs;
          const double c = row_cs[2 * i], s = row_cs[2 * i + 1];
          const double xa = v[a], xb = v[b];
          v[a] = static_cast<float>(xa * c + xb * s);
          v[b] = static_cast<float>(-xa * s + xb * c);
        }
      }
    }
  }
  // Channel means, removed.
  std::vector<float> mean(C);
  {
    std::vector<double> acc(C, 0.0);
    for (uint32_t t = 0; t < T; ++t) {
      for (uint32_t c = 0; c < C; ++c) acc[c] += x[uint64_t{t} * C + c];
    }
    for (uint32_t c = 0; c < C; ++c) mean[c] = static_cast<float>(acc[c] / T);
  }
  double sq = 0;
  for (uint32_t t = 0; t < T; ++t) {
    for (uint32_t c = 0; c < C; ++c) {
      float& v = x[uint64_t{t} * C + c];
      v = v - mean[c];
      sq += static_cast<double>(v) * v;
    }
  }
  const double rms = std::sqrt(sq / static_cast<double>(shape.elements()));
  // Transform: y = H x / head_dim (exact scaling by a power of two), so that x = H y.
  if (transform == tc::kTransformHadamard) {
    const float inv = 1.0f / static_cast<float>(head_dim);
    for (uint64_t r = 0; r < uint64_t{T} * heads; ++r) {
      float* v = x.data() + r * head_dim;
      tc::Hadamard(v, head_dim);
      for (uint32_t d = 0; d < head_dim; ++d) v[d] *= inv;
    }
  }
  // One step per block: RMS error of x is about step_x / sqrt(12); the Hadamard coefficients
  // carry it divided by sqrt(head_dim).
  double step_x = rms * RelativeStep(codec.bits) * LayerFactor(ctx.layer, ctx.n_layers);
  if (!(step_x > 0) || !std::isfinite(step_x)) step_x = 1.0;  // constant block: all zeros
  const double step_y =
      transform == tc::kTransformHadamard ? step_x / std::sqrt(double(head_dim)) : step_x;
  const float step = static_cast<float>(step_y);
  std::vector<float> steps(C, step);
  std::vector<int16_t> q(shape.elements());
  const double inv_step = 1.0 / static_cast<double>(step);
  for (uint64_t i = 0; i < q.size(); ++i) {
    const double r = std::nearbyint(x[i] * inv_step);
    q[i] = static_cast<int16_t>(std::clamp(r, -32767.0, 32767.0));
  }
  x.clear();
  x.shrink_to_fit();

  // Tables: channels grouped by the magnitude of their coefficients.
  std::vector<double> mag(C, 0.0);
  for (uint64_t i = 0; i < q.size(); ++i) mag[i % C] += std::abs(q[i]);
  std::vector<uint8_t> cls(C);
  uint32_t used_mask = 0;
  for (uint32_t c = 0; c < C; ++c) {
    const double m = mag[c] / T;
    const int k = static_cast<int>(std::floor(2.0 * std::log2(1.0 + 2.0 * m)));
    cls[c] = static_cast<uint8_t>(std::clamp(k, 0, static_cast<int>(tc::kMaxTables) - 1));
    used_mask |= 1u << cls[c];
  }
  uint8_t remap[tc::kMaxTables];
  uint32_t n_tables = 0;
  for (uint32_t k = 0; k < tc::kMaxTables; ++k) {
    if (used_mask & (1u << k)) remap[k] = static_cast<uint8_t>(n_tables++);
  }
  std::vector<uint8_t> table_of(C);
  for (uint32_t c = 0; c < C; ++c) table_of[c] = remap[cls[c]];
  std::vector<uint32_t> max_z(n_tables, 0);
  for (uint64_t i = 0; i < q.size(); ++i) {
    const uint32_t t = table_of[i % C];
    max_z[t] = std::max(max_z[t], Zigzag(q[i]));
  }
  std::vector<uint32_t> nsym(n_tables);
  std::vector<std::vector<uint64_t>> counts(n_tables);
  for (uint32_t t = 0; t < n_tables; ++t) {
    nsym[t] = std::min<uint32_t>(max_z[t] + 1, rans::kMaxSymbols - 1) + 1;
    counts[t].assign(nsym[t], 0);
  }
  for (uint64_t i = 0; i < q.size(); ++i) {
    const uint32_t t = table_of[i % C];
    const uint32_t z = Zigzag(q[i]);
    counts[t][std::min(z, nsym[t] - 1)]++;
  }
  std::vector<std::vector<uint16_t>> freq(n_tables);
  std::vector<std::vector<uint32_t>> cum(n_tables);
  double bits = 0;
  for (uint32_t t = 0; t < n_tables; ++t) {
    NormalizeFreqs(counts[t], &freq[t]);
    cum[t].assign(nsym[t] + 1, 0);
    for (uint32_t s = 0; s < nsym[t]; ++s) {
      cum[t][s + 1] = cum[t][s] + freq[t][s];
      if (counts[t][s]) bits += counts[t][s] * (rans::kProbBits - std::log2(double(freq[t][s])));
    }
  }
  // Segments of about 8 KiB: a power of two of tokens, so that power-of-two tiles align.
  const double row_bits = std::max(1.0, bits / T);
  uint32_t seg_tokens = 1;
  while (seg_tokens < T && (seg_tokens * 2) * row_bits <= 8192.0 * 8) seg_tokens *= 2;
  const uint32_t n_segments = (T + seg_tokens - 1) / seg_tokens;

  // Header and tables.
  const Layout l = BaseLayout(C);
  const size_t at = out->size();
  out->resize(at + l.tables);
  std::byte* p = out->data() + at;
  std::memset(p, 0, l.tables);
  le::Store<uint8_t>(p + off::kVersion, kVersion);
  le::Store<uint8_t>(p + off::kTransform, static_cast<uint8_t>(transform));
  le::Store<uint8_t>(p + off::kRotate, static_cast<uint8_t>(rotate));
  le::Store<uint32_t>(p + off::kHeadDim, head_dim);
  if (rotate != 0) {
    le::Store<uint32_t>(p + off::kRotaryDim, rotary);
    le::Store<float>(p + off::kTheta, ctx.rope_theta);
    le::Store<float>(p + off::kScale, ctx.rope_scale);
    le::Store<uint32_t>(p + off::kPosition, ctx.position_offset);
  }
  le::Store<uint32_t>(p + off::kSegTokens, seg_tokens);
  le::Store<uint32_t>(p + off::kNSegments, n_segments);
  le::Store<uint32_t>(p + off::kNTables, n_tables);
  std::memcpy(p + l.mean, mean.data(), 4ull * C);
  std::memcpy(p + l.step, steps.data(), 4ull * C);
  std::memcpy(p + l.table_of, table_of.data(), C);
  for (uint32_t t = 0; t < n_tables; ++t) {
    const size_t bytes = AlignUp(2 + 2ull * nsym[t], 4);
    const size_t pos = out->size();
    out->resize(pos + bytes, std::byte{0});
    le::Store<uint16_t>(out->data() + pos, static_cast<uint16_t>(nsym[t]));
    for (uint32_t s = 0; s < nsym[t]; ++s) {
      le::Store<uint16_t>(out->data() + pos + 2 + 2 * s, freq[t][s]);
    }
  }
  const size_t ends_at = out->size();
  out->resize(ends_at + 8ull * n_segments, std::byte{0});

  // Segments.
  rans::RansEncoder enc;
  std::vector<rans::RansEncoder::Sym> syms;
  uint64_t area = 0;
  for (uint32_t seg = 0; seg < n_segments; ++seg) {
    const uint32_t t0 = seg * seg_tokens, t1 = std::min(T, t0 + seg_tokens);
    syms.clear();
    for (uint64_t i = uint64_t{t0} * C; i < uint64_t{t1} * C; ++i) {
      const uint32_t t = table_of[i % C];
      const uint32_t z = Zigzag(q[i]);
      const uint32_t esc = nsym[t] - 1;
      if (z < esc) {
        syms.push_back({cum[t][z], freq[t][z]});
      } else {
        syms.push_back({cum[t][esc], freq[t][esc]});
        syms.push_back({16 * (z & 0xffu), 16});
        syms.push_back({16 * (z >> 8), 16});
      }
    }
    const size_t before = out->size();
    enc.Encode(syms, out);
    area += out->size() - before;
    le::Store<uint64_t>(out->data() + ends_at + 8ull * seg, area);
  }
  return Status::OK();
}

}  // namespace codec_internal

}  // namespace kdn
