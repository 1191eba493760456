// lossless with the rANS stage (lossless:entropy=rans): the byte planes of the lossless codec
// coded with one static frequency table per plane, in independent segments of whole elements
// (about 8 KiB each) whose offsets the block lists, so that a GPU decodes them all at once.
// The decoder is lossless_rans.h, shared with the CUDA kernel; this file parses and checks
// blocks, builds the tables that decoder indexes, and encodes. docs/kv-format.md fixes the bytes.
#include <algorithm>
#include <cmath>
#include <string>

#include "kdn/codec.h"
#include "store/format/codec_internal.h"
#include "store/format/le.h"
#include "store/format/lossless_rans.h"
#include "store/format/rans.h"
#include "store/format/rans_encode.h"

namespace kdn::codec_internal {

namespace {

std::string Num(uint64_t v) {
  return std::to_string(v);
}

// Version 1 stores each plane's table as 256 u16 frequencies; version 2 (what the encoder writes)
// compactly: a mode byte, then for a counted table a bitmap of the byte values that occur and
// their frequencies as one- or two-byte varints, or nothing for the uniform table. Next to blocks
// of tens of KiB, version 1's 512 bytes per plane were several percent of the file.
constexpr uint8_t kVersionFixedTables = 1;
constexpr uint8_t kVersionCompactTables = 2;
constexpr uint64_t kTableBytes = 2ull * rans::kMaxSymbols;  // version 1: 256 u16 per plane
constexpr uint8_t kModeCounted = 0;
constexpr uint8_t kModeUniform = 1;
constexpr uint64_t kBitmapBytes = rans::kMaxSymbols / 8;
constexpr uint32_t kUniformFreq = rans::kProbScale / rans::kMaxSymbols;
// The largest compact table: mode, bitmap, 256 two-byte varints.
constexpr uint64_t kMaxCompactTableBytes = 1 + kBitmapBytes + 2ull * rans::kMaxSymbols;

uint64_t TablesEnd(uint32_t planes) {
  return lrans::kFixedBytes + kTableBytes * planes;
}

// freq - 1 (0..4094) as a varint: 7 bits per byte, low bits first, bit 7 set when a byte follows.
uint64_t VarintBytes(uint32_t freq) {
  return freq - 1 < 0x80 ? 1 : 2;
}

// One plane's compact table from byte `pos` of p (n bytes): the frequencies into freq, pos moved
// past it. The error names what is wrong.
Status ParseCompactTable(const std::byte* p, uint64_t n, uint32_t plane, uint64_t* pos,
                         uint16_t* freq) {
  auto truncated = [&] {
    return Status::Corruption("lossless rANS block: plane " + Num(plane) + " table truncated");
  };
  if (n - *pos < 1) return truncated();
  const uint8_t mode = le::LoadU8(p + *pos);
  *pos += 1;
  if (mode == kModeUniform) {
    for (uint32_t s = 0; s < rans::kMaxSymbols; ++s) freq[s] = kUniformFreq;
    return Status::OK();
  }
  if (mode != kModeCounted) {
    return Status::Corruption("lossless rANS block: plane " + Num(plane) + " table mode " +
                              Num(mode) + " unknown");
  }
  if (n - *pos < kBitmapBytes) return truncated();
  const std::byte* bitmap = p + *pos;
  *pos += kBitmapBytes;
  for (uint32_t s = 0; s < rans::kMaxSymbols; ++s) {
    freq[s] = 0;
    if (((le::LoadU8(bitmap + s / 8) >> (s % 8)) & 1) == 0) continue;
    if (n - *pos < 1) return truncated();
    uint32_t v = le::LoadU8(p + *pos);
    *pos += 1;
    if (v & 0x80) {
      if (n - *pos < 1) return truncated();
      const uint32_t hi = le::LoadU8(p + *pos);
      *pos += 1;
      // Two bytes only for values of 128 and up, and freq - 1 below 4095.
      if (hi == 0 || hi >= 0x80 || (((hi << 7) | (v & 0x7f)) >= rans::kProbScale - 1)) {
        return Status::Corruption("lossless rANS block: plane " + Num(plane) + " frequency of " +
                                  Num(s) + " badly encoded");
      }
      v = (hi << 7) | (v & 0x7f);
    }
    freq[s] = static_cast<uint16_t>(v + 1);
  }
  return Status::OK();
}

uint64_t MaxSegments(uint64_t elements) {
  const uint64_t min_seg = std::min<uint64_t>(elements, lrans::kMinSegElements);
  return (elements + min_seg - 1) / min_seg;
}

// Counts of the 256 byte values -> frequencies summing to kProbScale, each below it (a slot
// holds 12 bits): every counted value at least 1, and a second value when only one occurs.
void NormalizeBytes(const uint64_t* counts, uint16_t* freq) {
  uint64_t total = 0;
  uint32_t distinct = 0, only = 0;
  for (uint32_t s = 0; s < rans::kMaxSymbols; ++s) {
    total += counts[s];
    if (counts[s] != 0) {
      ++distinct;
      only = s;
    }
  }
  int64_t sum = 0;
  for (uint32_t s = 0; s < rans::kMaxSymbols; ++s) {
    freq[s] = 0;
    if (counts[s] == 0) continue;
    const uint64_t f = std::max<uint64_t>(1, counts[s] * rans::kProbScale / total);
    freq[s] = static_cast<uint16_t>(std::min<uint64_t>(f, rans::kProbScale - 1));
    sum += freq[s];
  }
  if (distinct <= 1) {
    freq[(only + 1) % rans::kMaxSymbols] = 1;
    sum += 1;
  }
  int64_t diff = static_cast<int64_t>(rans::kProbScale) - sum;
  while (diff != 0) {
    uint32_t best = 0;
    for (uint32_t s = 1; s < rans::kMaxSymbols; ++s) {
      if (freq[s] > freq[best]) best = s;
    }
    // With two or more symbols present, the largest can always give or take (see above).
    const int64_t d = diff > 0 ? std::min<int64_t>(diff, rans::kProbScale - 1 - freq[best])
                               : -std::min<int64_t>(-diff, freq[best] - 1);
    if (d == 0) break;
    freq[best] = static_cast<uint16_t>(freq[best] + d);
    diff -= d;
  }
}

}  // namespace

uint64_t MaxLosslessRansBytes(const BlockShape& shape) {
  const uint64_t n = shape.elements(), s = DTypeSize(shape.dtype);
  // The larger tables of the two versions; per segment its offset and states; per byte at most
  // one 16-bit word.
  return lrans::kFixedBytes + kMaxCompactTableBytes * s + MaxSegments(n) * (8 + rans::kStateBytes) +
         2 * n * s;
}

Result<std::shared_ptr<const LosslessRansBlock>> LosslessRansBlock::Parse(
    const BlockShape& shape, std::span<const std::byte> encoded) {
  const std::byte* p = encoded.data();
  const uint64_t n = encoded.size();
  const uint32_t planes = static_cast<uint32_t>(DTypeSize(shape.dtype));
  if (n < lrans::kFixedBytes) {
    return Status::Corruption("lossless rANS block is " + Num(n) +
                              " bytes, shorter than its header");
  }
  const uint8_t version = le::LoadU8(p);
  if (version != kVersionFixedTables && version != kVersionCompactTables) {
    return Status::Corruption("lossless rANS block version " + Num(version) +
                              " unknown (have: 1, 2)");
  }
  if (le::LoadU8(p + 1) != planes) {
    return Status::Corruption("lossless rANS block has " + Num(le::LoadU8(p + 1)) +
                              " planes, the dtype " + Num(planes));
  }
  if (le::LoadU16(p + 2) != 0 || le::LoadU32(p + 12) != 0) {
    return Status::Corruption("lossless rANS block: reserved bytes are not zero");
  }
  auto b = std::make_shared<LosslessRansBlock>();
  lrans::PlanesView& v = b->view_;
  v.elements = shape.elements();
  v.planes = planes;
  v.seg_elements = le::LoadU32(p + 4);
  v.n_segments = le::LoadU32(p + 8);
  // The encoder's segments hold at least kMinSegElements (or every element) and are below twice
  // the block: other counts would only size a decoder's work from numbers the file made up.
  if (v.seg_elements < std::min<uint64_t>(v.elements, lrans::kMinSegElements) ||
      v.seg_elements >= 2 * v.elements) {
    return Status::Corruption("lossless rANS block: " + Num(v.seg_elements) +
                              " elements per segment for a block of " + Num(v.elements));
  }
  const uint64_t want = (v.elements + v.seg_elements - 1) / v.seg_elements;
  if (v.n_segments != want) {
    return Status::Corruption("lossless rANS block: " + Num(v.n_segments) + " segments, " +
                              Num(v.elements) + " elements by " + Num(v.seg_elements) + " need " +
                              Num(want));
  }
  b->slots_.resize(uint64_t{planes} * rans::kProbScale);
  uint16_t freq[rans::kMaxSymbols];
  uint64_t tables_end = lrans::kFixedBytes;
  if (version == kVersionFixedTables && n < TablesEnd(planes)) {
    return Status::Corruption("lossless rANS block is " + Num(n) +
                              " bytes, shorter than its tables (" + Num(TablesEnd(planes)) + ")");
  }
  for (uint32_t t = 0; t < planes; ++t) {
    if (version == kVersionFixedTables) {
      for (uint32_t s = 0; s < rans::kMaxSymbols; ++s) {
        freq[s] = le::LoadU16(p + tables_end + 2 * s);
      }
      tables_end += kTableBytes;
    } else {
      KDN_RETURN_IF_ERROR(ParseCompactTable(p, n, t, &tables_end, freq));
    }
    uint32_t sum = 0;
    for (uint32_t s = 0; s < rans::kMaxSymbols; ++s) {
      if (freq[s] >= rans::kProbScale) {
        return Status::Corruption("lossless rANS block: plane " + Num(t) + " frequency " +
                                  Num(freq[s]) + " out of range 0.." + Num(rans::kProbScale - 1));
      }
      sum += freq[s];
    }
    if (sum != rans::kProbScale) {
      return Status::Corruption("lossless rANS block: plane " + Num(t) + " frequencies sum to " +
                                Num(sum) + ", not " + Num(rans::kProbScale));
    }
    rans::BuildDecodeTable(freq, rans::kMaxSymbols, b->slots_.data() + t * rans::kProbScale);
  }
  const uint64_t ends = 8ull * v.n_segments;
  if (n - tables_end < ends) {
    return Status::Corruption("lossless rANS block: segment table truncated");
  }
  const uint64_t area = tables_end + ends;
  const uint64_t area_bytes = n - area;
  b->seg_begin_.resize(uint64_t{v.n_segments} + 1);
  b->seg_begin_[0] = 0;
  for (uint32_t s = 0; s < v.n_segments; ++s) {
    const uint64_t end = le::LoadU64(p + tables_end + 8ull * s);
    const uint64_t begin = b->seg_begin_[s];
    if (end < begin || end - begin < rans::kStateBytes || (end - begin) % 2 != 0 ||
        end > area_bytes) {
      return Status::Corruption("lossless rANS segment " + Num(s) + " bounds [" + Num(begin) +
                                ", " + Num(end) + ") invalid in a " + Num(area_bytes) +
                                "-byte segment area");
    }
    b->seg_begin_[s + 1] = end;
  }
  if (b->seg_begin_[v.n_segments] != area_bytes) {
    return Status::Corruption("lossless rANS block: segments end at " +
                              Num(b->seg_begin_[v.n_segments]) + ", the block at " +
                              Num(area_bytes));
  }
  b->segments_offset_ = area;
  v.slots = b->slots_.data();
  v.segments = reinterpret_cast<const uint8_t*>(p + area);
  v.seg_begin = b->seg_begin_.data();
  return std::shared_ptr<const LosslessRansBlock>(std::move(b));
}

Status LosslessRansBlock::DecodePlanes(std::span<std::byte> planes, uint32_t channels) const {
  const lrans::PlanesView& v = view_;
  if (planes.size() < v.elements * v.planes) {
    return Status::InvalidArgument("lossless rANS: plane buffer too small");
  }
  auto* out = reinterpret_cast<uint8_t*>(planes.data());
  for (uint32_t seg = 0; seg < v.n_segments; ++seg) {
    if (!lrans::DecodePlaneSegment(v, seg, out)) {
      const uint64_t e0 = uint64_t{seg} * v.seg_elements;
      const uint64_t e1 = e0 + lrans::SegmentElements(v, seg);
      return Status::Corruption("lossless rANS segment " + Num(seg) + " (tokens " +
                                Num(e0 / channels) + ".." + Num((e1 - 1) / channels) +
                                "): stream corrupt or truncated");
    }
  }
  return Status::OK();
}

Status EncodeLosslessRans(const BlockShape& shape, std::span<const std::byte> planes_bytes,
                          std::vector<std::byte>* out) {
  const uint64_t n = shape.elements();
  const uint32_t planes = static_cast<uint32_t>(DTypeSize(shape.dtype));
  const auto* planes_in = reinterpret_cast<const uint8_t*>(planes_bytes.data());
  std::vector<uint16_t> freq(uint64_t{planes} * rans::kMaxSymbols);
  std::vector<uint32_t> cum(uint64_t{planes} * (rans::kMaxSymbols + 1), 0);
  std::vector<uint8_t> uniform(planes, 0);
  double bits = 0;
  uint64_t tables_bytes = 0;
  for (uint32_t p = 0; p < planes; ++p) {
    uint64_t counts[rans::kMaxSymbols] = {};
    const uint8_t* plane = planes_in + p * n;
    for (uint64_t e = 0; e < n; ++e) counts[plane[e]]++;
    uint16_t* f = freq.data() + p * rans::kMaxSymbols;
    NormalizeBytes(counts, f);
    // The counted table, or the uniform one where its smaller table outweighs its longer code
    // (planes of nearly uniform bytes, such as low mantissa bytes).
    double counted_bits = 0;
    uint64_t counted_table = 1 + kBitmapBytes;
    for (uint32_t s = 0; s < rans::kMaxSymbols; ++s) {
      if (counts[s] != 0) counted_bits += counts[s] * (rans::kProbBits - std::log2(double(f[s])));
      if (f[s] != 0) counted_table += VarintBytes(f[s]);
    }
    const double uniform_bits = 8.0 * static_cast<double>(n);
    if (uniform_bits + 8.0 < counted_bits + 8.0 * static_cast<double>(counted_table)) {
      uniform[p] = 1;
      for (uint32_t s = 0; s < rans::kMaxSymbols; ++s) f[s] = kUniformFreq;
      bits += uniform_bits;
      tables_bytes += 1;
    } else {
      bits += counted_bits;
      tables_bytes += counted_table;
    }
    uint32_t* c = cum.data() + p * (rans::kMaxSymbols + 1);
    for (uint32_t s = 0; s < rans::kMaxSymbols; ++s) c[s + 1] = c[s] + f[s];
  }
  // Segments of about 8 KiB: a power of two of elements, at least kMinSegElements.
  const double elem_bits = std::max(1.0, bits / static_cast<double>(n));
  uint64_t seg = lrans::kMinSegElements;
  while (seg < n && (seg * 2) * elem_bits <= 8192.0 * 8) seg *= 2;
  seg = std::min(seg, n);
  const uint64_t n_segments = (n + seg - 1) / seg;

  const size_t at = out->size();
  const uint64_t tables_end = lrans::kFixedBytes + tables_bytes;
  out->resize(at + tables_end + 8 * n_segments, std::byte{0});
  std::byte* h = out->data() + at;
  le::Store<uint8_t>(h, kVersionCompactTables);
  le::Store<uint8_t>(h + 1, static_cast<uint8_t>(planes));
  le::Store<uint32_t>(h + 4, static_cast<uint32_t>(seg));
  le::Store<uint32_t>(h + 8, static_cast<uint32_t>(n_segments));
  uint64_t pos = lrans::kFixedBytes;
  for (uint32_t p = 0; p < planes; ++p) {
    if (uniform[p]) {
      le::Store<uint8_t>(h + pos++, kModeUniform);
      continue;
    }
    le::Store<uint8_t>(h + pos++, kModeCounted);
    const uint16_t* f = freq.data() + p * rans::kMaxSymbols;
    std::byte* bitmap = h + pos;
    pos += kBitmapBytes;
    for (uint32_t s = 0; s < rans::kMaxSymbols; ++s) {
      if (f[s] == 0) continue;
      bitmap[s / 8] |= std::byte{static_cast<uint8_t>(1u << (s % 8))};
      const uint32_t v = f[s] - 1u;
      if (v < 0x80) {
        le::Store<uint8_t>(h + pos++, static_cast<uint8_t>(v));
      } else {
        le::Store<uint8_t>(h + pos++, static_cast<uint8_t>(0x80 | (v & 0x7f)));
        le::Store<uint8_t>(h + pos++, static_cast<uint8_t>(v >> 7));
      }
    }
  }
  const size_t ends_at = at + tables_end;
  rans::RansEncoder enc;
  std::vector<rans::RansEncoder::Sym> syms;
  uint64_t area = 0;
  for (uint64_t s = 0; s < n_segments; ++s) {
    const uint64_t e0 = s * seg, e1 = std::min(n, e0 + seg);
    syms.clear();
    for (uint32_t p = 0; p < planes; ++p) {
      const uint8_t* plane = planes_in + p * n;
      const uint16_t* f = freq.data() + p * rans::kMaxSymbols;
      const uint32_t* c = cum.data() + p * (rans::kMaxSymbols + 1);
      for (uint64_t e = e0; e < e1; ++e) syms.push_back({c[plane[e]], f[plane[e]]});
    }
    const size_t before = out->size();
    enc.Encode(syms, out);
    area += out->size() - before;
    le::Store<uint64_t>(out->data() + ends_at + 8 * s, area);
  }
  return Status::OK();
}

}  // namespace kdn::codec_internal
