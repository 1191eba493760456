// Interleaved rANS: the encoder of rans.h's segments (host only).
//
// Symbols are given in the order the decoder reads them, each as its cumulative start and
// frequency under its table. rANS is last-in first-out, so the encoder runs over them backwards,
// lane (i mod kLanes) for symbol i as in the decoder, collects the renormalization words, and
// writes them reversed after the final states: exactly the order the decoder reads.
#ifndef KDN_STORE_FORMAT_RANS_ENCODE_H_
#define KDN_STORE_FORMAT_RANS_ENCODE_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "store/format/le.h"
#include "store/format/rans.h"

namespace kdn::rans {

class RansEncoder {
 public:
  struct Sym {
    uint32_t start;  // cumulative frequency of the symbols before it
    uint32_t freq;   // 1..kProbScale - 1
  };

  // Appends one segment ([states][words]) coding `syms` to `out`.
  void Encode(const std::vector<Sym>& syms, std::vector<std::byte>* out) {
    uint32_t x[kLanes];
    for (uint32_t i = 0; i < kLanes; ++i) x[i] = kLower;
    words_.clear();
    for (size_t i = syms.size(); i-- > 0;) {
      uint32_t& s = x[i % kLanes];
      const uint32_t f = syms[i].freq;
      // The largest state that, after coding, stays below 2^32: ((L >> kProbBits) << 16) * f.
      const uint64_t x_max = (uint64_t{kLower >> kProbBits} << 16) * f;
      if (s >= x_max) {
        words_.push_back(static_cast<uint16_t>(s & 0xffffu));
        s >>= 16;
      }
      s = ((s / f) << kProbBits) + (s % f) + syms[i].start;
    }
    const size_t at = out->size();
    out->resize(at + kStateBytes + 2 * words_.size());
    std::byte* p = out->data() + at;
    for (uint32_t i = 0; i < kLanes; ++i) le::Store<uint32_t>(p + 4 * i, x[i]);
    p += kStateBytes;
    for (size_t i = 0; i < words_.size(); ++i) {
      le::Store<uint16_t>(p + 2 * i, words_[words_.size() - 1 - i]);
    }
  }

 private:
  std::vector<uint16_t> words_;
};

}  // namespace kdn::rans

#endif  // KDN_STORE_FORMAT_RANS_ENCODE_H_
