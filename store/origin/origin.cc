// OpenOrigin (URL parsing), key checks and what every backend shares.
#include <sys/stat.h>

#include "kdn/origin.h"
#include "store/origin/backends.h"

namespace kdn::origin {

Status CheckKey(std::string_view key) {
  if (key.empty() || key.size() > 1024) return Status::InvalidArgument("origin key: 1 to 1024 bytes");
  if (key.front() == '/') return Status::InvalidArgument("origin key starts with '/'");
  size_t start = 0;
  while (start <= key.size()) {
    size_t slash = key.find('/', start);
    if (slash == std::string_view::npos) slash = key.size();
    std::string_view part = key.substr(start, slash - start);
    if (part.empty() || part == "." || part == ".." || part.starts_with(".kdn-tmp")) {
      return Status::InvalidArgument("origin key '" + std::string(key) +
                                     "': empty, '.', '..' or .kdn-tmp component");
    }
    start = slash + 1;
  }
  for (char c : key) {
    if (c == '\0') return Status::InvalidArgument("origin key holds a NUL byte");
  }
  return Status::OK();
}

std::string UriEncode(std::string_view s, bool keep_slash) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) {
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '_' || c == '.' || c == '~' || (keep_slash && c == '/')) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

Result<uint64_t> Origin::GetStream(std::string_view key, uint64_t offset, uint64_t len,
                                   const StreamSink& sink) {
  // One buffer per thread, reused: the edge calls this for every piece of a fetch.
  thread_local std::vector<uint8_t> buf;
  if (buf.size() < len) buf.resize(static_cast<size_t>(len));
  KDN_ASSIGN_OR_RETURN(uint64_t got, Get(key, offset, std::span(buf.data(), len)));
  if (got > 0 && !sink(0, std::span<const uint8_t>(buf.data(), got))) {
    return Status::IOError("origin read of " + std::string(key) + ": the bytes could not be kept");
  }
  return got;
}

Result<ListPage> Origin::ListAll(std::string_view prefix, std::string_view delimiter,
                                 size_t max_entries) {
  ListPage all;
  std::string token;
  do {
    KDN_ASSIGN_OR_RETURN(ListPage page, List(prefix, delimiter, token, 1000));
    for (auto& o : page.objects) all.objects.push_back(std::move(o));
    for (auto& p : page.prefixes) all.prefixes.push_back(std::move(p));
    if (all.objects.size() + all.prefixes.size() > max_entries) {
      return Status::InvalidArgument("origin listing of '" + std::string(prefix) + "' exceeds " +
                                     std::to_string(max_entries) + " entries");
    }
    if (!page.next_token.empty() && page.next_token == token) {
      return Status::Corruption("origin listing repeats its continuation token");
    }
    token = std::move(page.next_token);
  } while (!token.empty());
  return all;
}

Result<std::unique_ptr<Origin>> OpenOrigin(const OriginOptions& options) {
  std::string_view url = options.url;
  if (options.part_size < (5u << 20) || options.part_size > (5ull << 30)) {
    return Status::InvalidArgument("origin part size must be 5 MiB to 5 GiB (S3's limits)");
  }
  if (options.parallelism < 1 || options.parallelism > 64) {
    return Status::InvalidArgument("origin parallelism must be 1 to 64");
  }
  if (url.starts_with("file://")) {
    std::string dir(url.substr(7));
    if (dir.empty() || dir[0] != '/') {
      return Status::InvalidArgument("origin URL " + options.url + ": file:// needs an absolute path");
    }
    while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
    struct stat st{};
    if (::stat(dir.c_str(), &st) != 0) return Status::FromErrno("origin directory " + dir, errno);
    if (!S_ISDIR(st.st_mode)) return Status::InvalidArgument("origin " + dir + " is not a directory");
    return OpenPosixOrigin(dir, options);
  }
  if (url.starts_with("s3://")) {
    std::string_view rest = url.substr(5);
    size_t slash = rest.find('/');
    std::string bucket(rest.substr(0, slash));
    std::string prefix(slash == std::string_view::npos ? "" : rest.substr(slash + 1));
    // Bucket names as S3 allows them: 3-63 of a-z 0-9 . - (lower case; no host tricks).
    bool bucket_ok = bucket.size() >= 3 && bucket.size() <= 63;
    for (char c : bucket) {
      bucket_ok = bucket_ok && ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-');
    }
    if (!bucket_ok) return Status::InvalidArgument("origin URL " + options.url + ": bad bucket name");
    while (prefix.starts_with('/')) prefix.erase(0, 1);
    if (!prefix.empty() && prefix.back() != '/') prefix.push_back('/');
    if (!prefix.empty()) KDN_RETURN_IF_ERROR(CheckKey(prefix.substr(0, prefix.size() - 1)));
    return OpenS3Origin(bucket, prefix, options);
  }
  return Status::InvalidArgument("origin URL '" + options.url +
                                 "': expected s3://BUCKET[/PREFIX] or file:///DIR");
}

}  // namespace kdn::origin
