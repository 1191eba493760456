// libFuzzer target for the namespace object reader (fs/edge/ns_object.cc), files' objects and
// directories' markers: every edge node reads
// what any other node (or whoever can write to the origin) put under ns/, so no input may crash
// it, and whatever it accepts must encode back to the very same bytes (one spelling per object).
#include <sys/stat.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "fs/edge/ns_object.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  auto object = kdn::edge::DecodeNsObject(in);
  if (object.ok() && kdn::edge::EncodeNsObject(*object) != in) std::abort();
  // A directory's marker is read from the same untrusted place, with the same reader.
  auto marker = kdn::edge::DecodeDirMarker(in);
  if (marker.ok()) {
    if (kdn::edge::EncodeDirMarker(marker->mode, marker->uid, marker->gid, marker->mtime_ns,
                                   marker->ctime_ns) != in) {
      std::abort();
    }
    if (object.ok() || !S_ISDIR(marker->mode) || !marker->chunk.IsZero()) std::abort();
  }
  return 0;
}
