#include <cstring>

#include "store/kv_content.h"

namespace kdn::store {

bool StartsWithKvMagic(std::span<const std::byte> head) {
  return head.size() >= kKvMagic.size() &&
         std::memcmp(head.data(), kKvMagic.data(), kKvMagic.size()) == 0;
}

}  // namespace kdn::store
