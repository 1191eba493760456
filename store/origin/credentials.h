// S3 credentials as every S3 tool finds them: explicit, the AWS_* environment, or an AWS-format
// credentials file. The file holds a secret, so one that group or others may read is refused (as
// ssh refuses a private key), with a message that says how to fix it.
#ifndef KDN_STORE_ORIGIN_CREDENTIALS_H_
#define KDN_STORE_ORIGIN_CREDENTIALS_H_

#include <string>

#include "kdn/origin.h"
#include "kdn/status.h"

namespace kdn::origin {

struct Credentials {
  std::string access_key, secret_key, session_token;
};

Result<Credentials> FindCredentials(const OriginOptions& options);
// Reads `profile` from the credentials file at `path` (mode checked; at most 64 KiB).
Result<Credentials> ReadCredentialsFile(const std::string& path, const std::string& profile);

}  // namespace kdn::origin

#endif  // KDN_STORE_ORIGIN_CREDENTIALS_H_
