// Little-endian loads and stores for the `.kv` byte layout.
//
// The format is little-endian on disk. Every supported host (x86-64, AArch64) is little-endian too,
// so these are plain unaligned copies; the static_assert keeps a big-endian port from silently
// writing foreign bytes.
#ifndef KDN_STORE_FORMAT_LE_H_
#define KDN_STORE_FORMAT_LE_H_

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace kdn::le {

static_assert(std::endian::native == std::endian::little,
              "the .kv codecs assume a little-endian host");

template <typename T>
inline T Load(const std::byte* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

template <typename T>
inline void Store(std::byte* p, T v) {
  std::memcpy(p, &v, sizeof v);
}

inline uint8_t LoadU8(const std::byte* p) {
  return static_cast<uint8_t>(*p);
}
inline uint16_t LoadU16(const std::byte* p) {
  return Load<uint16_t>(p);
}
inline uint32_t LoadU32(const std::byte* p) {
  return Load<uint32_t>(p);
}
inline uint64_t LoadU64(const std::byte* p) {
  return Load<uint64_t>(p);
}
inline float LoadF32(const std::byte* p) {
  return Load<float>(p);
}

}  // namespace kdn::le

#endif  // KDN_STORE_FORMAT_LE_H_
