// Small text helpers for messages and names: float formatting and UTF-8 validation.
#ifndef KDN_STORE_FORMAT_TEXT_H_
#define KDN_STORE_FORMAT_TEXT_H_

#include <cstdint>
#include <string>
#include <string_view>

namespace kdn::text {

// Shortest form that reads back to the same float ("10000", "0.5", "inf", "nan").
std::string FormatFloat(float f);
// "0x" followed by 16 hex digits.
std::string Hex64(uint64_t v);
// True when `s` is well-formed UTF-8 (no overlongs, no surrogates, nothing above U+10FFFF).
bool IsValidUtf8(std::string_view s);

}  // namespace kdn::text

#endif  // KDN_STORE_FORMAT_TEXT_H_
