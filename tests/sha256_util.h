// SHA-256 computed in the tests themselves (OpenSSL), to check the store's content ids.
#ifndef KDN_TESTS_SHA256_UTIL_H_
#define KDN_TESTS_SHA256_UTIL_H_

#include <openssl/evp.h>

#include <cstddef>
#include <span>
#include <string>

namespace kdn::test {

inline std::string Sha256Hex(std::span<const std::byte> bytes) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (EVP_Digest(bytes.data(), bytes.size(), md, &n, EVP_sha256(), nullptr) != 1) return "";
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string hex;
  for (unsigned int i = 0; i < n; ++i) {
    hex += kDigits[md[i] >> 4];
    hex += kDigits[md[i] & 15];
  }
  return hex;
}

}  // namespace kdn::test

#endif  // KDN_TESTS_SHA256_UTIL_H_
