// libFuzzer target for the origin's S3 XML reader: every answer an S3 server (or whoever sits at
// its address) sends goes through it, so no input may crash it or make it allocate without bound.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "store/origin/s3_xml.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  using namespace kdn::origin;
  (void)xml::Parse(in);
  (void)xml::ParseListV2(in);
  (void)xml::ParseInitiateMultipart(in);
  (void)xml::ParseCompleteMultipart(in);
  (void)xml::ParseIsoTime(in);
  (void)xml::ParseHttpDate(in);  // a HEAD's Last-Modified header, also from the server
  xml::S3Error e;
  (void)xml::ParseError(in, &e);
  return 0;
}
