// A small XML reader for S3 responses (ListObjectsV2, errors, multipart). S3 answers are flat and
// tiny, so this reads elements, text and the five entities plus numeric references, and nothing
// else: no DTD (a DOCTYPE is refused, so no entity expansion), no namespaces beyond ignoring them.
// Everything is bounded: input size, depth, element count, name and text length; a response that
// exceeds a bound or is malformed is a Corruption, never a crash or an unbounded allocation.
#ifndef KDN_STORE_ORIGIN_S3_XML_H_
#define KDN_STORE_ORIGIN_S3_XML_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "kdn/origin.h"
#include "kdn/status.h"

namespace kdn::origin::xml {

inline constexpr size_t kMaxInput = 8u << 20;  // a 1000-key listing is ~0.4 MB
inline constexpr size_t kMaxDepth = 16;
inline constexpr size_t kMaxNodes = 100'000;
inline constexpr size_t kMaxName = 256;

struct Node {
  std::string name;   // local name (any "ns:" prefix dropped)
  std::string text;   // concatenated character data directly inside this element
  std::vector<uint32_t> children;  // indexes into Document::nodes
};

struct Document {
  std::vector<Node> nodes;  // nodes[0] is the root element
  // The first direct child of `parent` named `name`, or nullptr.
  const Node* Child(const Node& parent, std::string_view name) const;
};

Result<Document> Parse(std::string_view input);

// The S3 answers KDN reads.
struct S3Error {
  std::string code, message;
};
// An <Error> document (also found in a 200 answer to CompleteMultipartUpload); false when the
// body is not one.
bool ParseError(std::string_view body, S3Error* out);
// ListBucketResult (v2); keys are returned as the server wrote them (the caller strips its prefix).
Result<ListPage> ParseListV2(std::string_view body);
Result<std::string> ParseInitiateMultipart(std::string_view body);  // the UploadId
Status ParseCompleteMultipart(std::string_view body);  // OK, or the error inside a 200

// S3's two ways of writing a time, in seconds since the epoch (UTC); 0 for anything malformed or
// before 1970 (that object's age is then unknown, never guessed):
int64_t ParseIsoTime(std::string_view s);   // a listing's LastModified: "2026-12-06T11:24:22.000Z"
int64_t ParseHttpDate(std::string_view s);  // a HEAD's Last-Modified: "Sun, 06 Dec 2026 11:24:22 GMT"

// Escapes &, <, >, " and ' for element text.
std::string Escape(std::string_view text);

}  // namespace kdn::origin::xml

#endif  // KDN_STORE_ORIGIN_S3_XML_H_
