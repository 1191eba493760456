// Interleaved rANS: the decoder, written once for the CPU and the GPU (KDN_HD).
//
// Static 12-bit frequency tables (M = 4096), 32-bit states kept in [L, 2^32) with L = 2^16, and
// 16-bit renormalization: a state that falls below L after a symbol reads one little-endian u16
// word, which with M <= 2^16 always brings it back to [L, 2^32) (so at most one read per symbol,
// and the loop has no inner while). kRansLanes states take turns symbol by symbol over one shared
// word stream, which hides the latency of each state's multiply chain on a CPU core and lets one
// GPU thread decode one segment independently of every other.
//
// A segment is [kRansLanes initial states, u32 each][u16 words]. The encoder (rans_encode.h)
// starts every state at L and writes the words in the order the decoder reads them, so a segment
// decoded to its end has read every word and left every state at exactly L: the decoder checks
// both, and every read is bounded by the segment's end, so a corrupt or truncated segment is an
// error (RansDecoder::ok() false), never a read outside the segment.
//
// C++17 on purpose: nvcc compiles this header too.
#ifndef KDN_STORE_FORMAT_RANS_H_
#define KDN_STORE_FORMAT_RANS_H_

#include <stdint.h>

#include "store/format/element_math.h"  // KDN_HD

namespace kdn::rans {

inline constexpr uint32_t kProbBits = 12;
inline constexpr uint32_t kProbScale = 1u << kProbBits;  // frequencies sum to this
inline constexpr uint32_t kLower = 1u << 16;             // L: states live in [L, 2^32)
inline constexpr uint32_t kLanes = 32;                   // interleaved states per segment
inline constexpr uint32_t kStateBytes = 4 * kLanes;      // a segment's header
inline constexpr uint32_t kMaxSymbols = 256;             // alphabet of one table

// One slot of a decode table (kProbScale slots per table): symbol (8 bits), its frequency
// (12 bits, 1..4095) and the slot's distance from the symbol's cumulative start (12 bits).
KDN_HD uint32_t PackSlot(uint32_t sym, uint32_t freq, uint32_t bias) {
  return sym | (freq << 8) | (bias << 20);
}

KDN_HD uint32_t LoadU32Le(const uint8_t* p) {
  return uint32_t{p[0]} | (uint32_t{p[1]} << 8) | (uint32_t{p[2]} << 16) | (uint32_t{p[3]} << 24);
}

// Builds the decode table of `nsym` frequencies (each 0..4095, summing to kProbScale: checked by
// the caller) into `slots` (kProbScale entries).
KDN_HD void BuildDecodeTable(const uint16_t* freq, uint32_t nsym, uint32_t* slots) {
  uint32_t cum = 0;
  for (uint32_t s = 0; s < nsym; ++s) {
    for (uint32_t j = 0; j < freq[s]; ++j) slots[cum + j] = PackSlot(s, freq[s], j);
    cum += freq[s];
  }
}

// Decoder of one segment. Construct, Decode() symbol after symbol, then Finish().
class RansDecoder {
 public:
  KDN_HD RansDecoder(const uint8_t* begin, const uint8_t* end) : p_(begin), end_(end) {
    if (end - begin < static_cast<long>(kStateBytes) || ((end - begin) & 1) != 0) {
      ok_ = false;
      for (uint32_t i = 0; i < kLanes; ++i) x_[i] = kLower;
      return;
    }
    for (uint32_t i = 0; i < kLanes; ++i) {
      x_[i] = LoadU32Le(p_ + 4 * i);
      if (x_[i] < kLower) ok_ = false;
    }
    p_ += kStateBytes;
  }

  // The next symbol under `slots` (a table from BuildDecodeTable).
  KDN_HD uint32_t Decode(const uint32_t* slots) {
    uint32_t x = x_[lane_];
    const uint32_t e = slots[x & (kProbScale - 1)];
    x = ((e >> 8) & 0xfffu) * (x >> kProbBits) + (e >> 20);
    Renorm(x);
    return e & 0xffu;
  }

  // The next symbol under the uniform table of 256 symbols (frequency 16 each): escapes' bytes.
  KDN_HD uint32_t DecodeByte() {
    uint32_t x = x_[lane_];
    const uint32_t slot = x & (kProbScale - 1);
    x = 16u * (x >> kProbBits) + (slot & 15u);
    Renorm(x);
    return slot >> 4;
  }

  // True when no read failed, every word was read and every state is back at L.
  KDN_HD bool Finish() const {
    if (!ok_ || p_ != end_) return false;
    for (uint32_t i = 0; i < kLanes; ++i) {
      if (x_[i] != kLower) return false;
    }
    return true;
  }
  KDN_HD bool ok() const { return ok_; }

 private:
  KDN_HD void Renorm(uint32_t x) {
    if (x < kLower) {
      if (end_ - p_ >= 2) {
        x = (x << 16) | uint32_t{p_[0]} | (uint32_t{p_[1]} << 8);
        p_ += 2;
      } else {
        ok_ = false;  // truncated: keep going on a valid state, the caller reports the error
        x = kLower;
      }
    }
    x_[lane_] = x;
    lane_ = (lane_ + 1) & (kLanes - 1);
  }

  uint32_t x_[kLanes];
  const uint8_t* p_;
  const uint8_t* end_;
  uint32_t lane_ = 0;
  bool ok_ = true;
};

}  // namespace kdn::rans

#endif  // KDN_STORE_FORMAT_RANS_H_
