// The origin: the shared object store behind every KDN edge node (issue 13; docs/origin.md).
//
// One small interface over two backends, so that the edge logic in kdnfs never knows which it has:
//   - S3 (AWS S3, Ceph RGW, MinIO, R2 ...) over libcurl with SigV4: `s3://BUCKET/PREFIX` plus an
//     endpoint (`http://127.0.0.1:7480`; none means AWS's virtual-host endpoint for the region);
//   - a POSIX directory on a shared filesystem (NFS, CephFS, Lustre): `file:///shared/dir`.
// Keys are relative to the URL's prefix ("chunks/<hex>", "ns/<path>"). Objects are written whole and
// never modified in place: a put replaces the object atomically (readers see old or new bytes, never
// a mix); concurrent puts of one key: the last one the origin orders wins.
//
// Every call is bounded in time: S3 calls retry transient failures (5xx, timeouts, refused
// connections) with exponential backoff and jitter, within `max_attempts` and `retry_budget_ms`, and
// then fail with an IOError that names the object and the last cause. Auth failures are
// PermissionDenied, a missing object NotFound. An Origin is safe to use from many threads at once.
#ifndef KDN_ORIGIN_H_
#define KDN_ORIGIN_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kdn/status.h"

namespace kdn::origin {

struct OriginOptions {
  std::string url;       // s3://BUCKET[/PREFIX] or file:///DIR
  std::string endpoint;  // S3: http(s)://HOST[:PORT]; empty: https://BUCKET.s3.REGION.amazonaws.com
  std::string region;    // S3 signing region; empty: $AWS_REGION, $AWS_DEFAULT_REGION, us-east-1
  bool virtual_host = false;  // S3: BUCKET.host/key instead of host/BUCKET/key (forced with no endpoint)
  // Credentials; empty: $AWS_ACCESS_KEY_ID/$AWS_SECRET_ACCESS_KEY/$AWS_SESSION_TOKEN, else the
  // credentials file ($AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials, profile $AWS_PROFILE or
  // `default`), which must not be readable by group or others.
  std::string access_key, secret_key, session_token;
  std::string credentials_file, profile;

  uint64_t part_size = 16ull << 20;             // multipart part and parallel-GET range size
  uint64_t multipart_threshold = 64ull << 20;   // puts from a file above this size use multipart
  unsigned parallelism = 8;                     // concurrent parts/ranges of one call
  long connect_timeout_ms = 3000;
  long low_speed_bytes = 1024;                  // a transfer slower than this for
  long low_speed_seconds = 10;                  // this long is a timeout
  long request_timeout_ms = 0;                  // whole-request cap (0: only the low-speed limit)
  unsigned max_attempts = 5;                    // tries of one request, first included
  long retry_budget_ms = 20000;                 // no new try starts after this much time
  long backoff_base_ms = 100;                   // first backoff; doubles, with full jitter
  long backoff_max_ms = 2000;
  bool verify_tls = true;
};

struct ObjectInfo {
  std::string key;   // relative to the origin's prefix
  uint64_t size = 0;
  std::string etag;  // S3: the server's ETag (without quotes); POSIX: size and mtime in hex
  // When the object was written or last touched (Origin::Touch), in seconds since the epoch, by the
  // origin's clock (S3: LastModified of a listing, Last-Modified of a HEAD; POSIX: the file's
  // mtime, by the writer's clock); 0 when unknown (the server did not say, or said nonsense).
  int64_t mtime_s = 0;
};

struct ListPage {
  std::vector<ObjectInfo> objects;    // in key order
  std::vector<std::string> prefixes;  // "directories" under a delimiter, each ending in it
  std::string next_token;             // empty when this was the last page
};

class Origin {
 public:
  virtual ~Origin() = default;
  Origin() = default;
  Origin(const Origin&) = delete;
  Origin& operator=(const Origin&) = delete;

  // Writes `data` as the whole object `key`.
  virtual Status Put(std::string_view key, std::span<const uint8_t> data) = 0;
  // Writes `size` bytes of `fd` from offset 0 (read with pread; the fd's offset is untouched); above
  // multipart_threshold the S3 backend uploads parts of part_size in parallel and aborts the upload
  // on any failure.
  virtual Status PutFile(std::string_view key, int fd, uint64_t size) = 0;
  // Reads up to out.size() bytes at `offset`; returns how many (fewer only at the object's end, 0
  // when offset is at or past it). Large reads are split into parallel ranged requests.
  virtual Result<uint64_t> Get(std::string_view key, uint64_t offset, std::span<uint8_t> out) = 0;
  // Bytes [offset, offset + len) of `key` handed to `sink` in order as they arrive, in pieces of
  // any size, each with its position relative to `offset`: the caller keeps no buffer of `len`
  // bytes and copies nothing (the S3 backend hands over curl's receive buffer; kdnfs writes it
  // straight to the staging file). A retried attempt hands the bytes again from position 0, so
  // the sink must accept bytes it has had before (a write at their position does). A sink that
  // returns false ends the read with an error. Returns how many bytes arrived (fewer only at the
  // object's end). The default reads them with Get into a buffer and hands that over.
  using StreamSink = std::function<bool(uint64_t at, std::span<const uint8_t> bytes)>;
  virtual Result<uint64_t> GetStream(std::string_view key, uint64_t offset, uint64_t len,
                                     const StreamSink& sink);
  virtual Result<ObjectInfo> Head(std::string_view key) = 0;
  // One page of keys starting with `prefix`, in order; with a delimiter, keys that have it after
  // the prefix are rolled up into `prefixes`. `token` is a previous page's next_token.
  virtual Result<ListPage> List(std::string_view prefix, std::string_view delimiter,
                                std::string_view token, unsigned max_keys = 1000) = 0;
  // Removes `key`; removing a key that does not exist is OK (as in S3).
  virtual Status Delete(std::string_view key) = 0;
  // Makes the write time of the existing object `key` now (mtime_s), keeping its bytes, without
  // sending them: this is how an edge tells the collector of unnamed chunks that it is about to
  // name an old chunk (docs/origin.md, "Garbage"). S3: a CopyObject of the object onto itself
  // (x-amz-metadata-directive: REPLACE); POSIX: utimensat to now. NotFound when `key` is not
  // there; Unsupported when the backend cannot do it in place for this object (S3: over 5 GiB,
  // CopyObject's limit): the caller then puts the object again.
  virtual Status Touch(std::string_view key) = 0;

  // Every page of List, concatenated (bounded by `max_entries`, else InvalidArgument).
  Result<ListPage> ListAll(std::string_view prefix, std::string_view delimiter,
                           size_t max_entries = 10'000'000);
  // What the origin is, for log lines: "s3://bucket/prefix at http://127.0.0.1:7480".
  virtual std::string Describe() const = 0;
};

// Opens the origin named by options.url. Checks the URL, the credentials (S3) or the directory
// (POSIX); contacts nothing.
Result<std::unique_ptr<Origin>> OpenOrigin(const OriginOptions& options);

// A key is 1..1024 bytes, no NUL, no leading '/', no empty, "." or ".." path component, and no
// component starting with ".kdn-tmp" (the POSIX backend's temporary files).
Status CheckKey(std::string_view key);

}  // namespace kdn::origin

#endif  // KDN_ORIGIN_H_
