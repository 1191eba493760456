// The two backends behind kdn/origin.h, opened by OpenOrigin once it has parsed the URL.
#ifndef KDN_STORE_ORIGIN_BACKENDS_H_
#define KDN_STORE_ORIGIN_BACKENDS_H_

#include <memory>
#include <string>

#include "kdn/origin.h"

namespace kdn::origin {

// `dir` is absolute and exists.
Result<std::unique_ptr<Origin>> OpenPosixOrigin(const std::string& dir, const OriginOptions& options);
// `prefix` is empty or ends in '/'.
Result<std::unique_ptr<Origin>> OpenS3Origin(const std::string& bucket, const std::string& prefix,
                                             const OriginOptions& options);

// RFC 3986 percent-encoding of everything but A-Z a-z 0-9 - _ . ~ (and '/' when keep_slash), as
// SigV4 wants it: curl signs the path and query exactly as they are written in the URL.
std::string UriEncode(std::string_view s, bool keep_slash);

}  // namespace kdn::origin

#endif  // KDN_STORE_ORIGIN_BACKENDS_H_
