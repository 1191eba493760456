// The S3 origin over libcurl. Requests are signed by curl (CURLOPT_AWS_SIGV4), which signs the
// path and query exactly as written: so keys are percent-encoded here and query parameters are
// encoded, written as k=v (an empty value too) and sorted. The payload is sent as
// UNSIGNED-PAYLOAD (Ceph RGW 16.2 refuses a request without x-amz-content-sha256), always with a
// Content-Length (a chunked upload gets 411). Easy handles are pooled, so connections are reused.
#include <curl/curl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "store/origin/backends.h"
#include "store/origin/credentials.h"
#include "store/origin/s3_xml.h"

namespace kdn::origin {
namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t kMaxTextBody = xml::kMaxInput;
// The largest object one CopyObject can copy (S3's documented limit; RGW has the same).
constexpr uint64_t kMaxCopyBytes = 5ull << 30;

struct Request {
  const char* method = "GET";
  std::string key;  // full key, prefix included; empty: the bucket itself
  std::vector<std::pair<std::string, std::string>> query;
  std::string range;
  std::string content_type;
  std::string copy_source;  // x-amz-copy-source of a CopyObject: "/BUCKET/KEY", encoded
  // Body: a buffer, or `body_len` bytes of `body_fd` from `body_off`.
  std::span<const uint8_t> body;
  int body_fd = -1;
  uint64_t body_off = 0, body_len = 0;
  std::span<uint8_t> sink;  // where a successful GET's bytes go
  // Or where they are handed as they arrive (GetStream), at most `stream_len` of them.
  const Origin::StreamSink* stream = nullptr;
  uint64_t stream_len = 0;
};

struct Response {
  long http = 0;
  std::string text;          // the body of anything but a successful GET (bounded)
  uint64_t got = 0;          // bytes written to the sink
  std::string etag;
  uint64_t content_length = 0;
  uint64_t total_size = 0;   // from Content-Range
  bool has_total = false;
  int64_t last_modified = 0;  // from Last-Modified, in seconds since the epoch; 0: none or bad
};

// One attempt's state, reached from curl's callbacks.
struct Transfer {
  CURL* curl;
  const Request* req;
  Response* resp;
  uint64_t read_pos = 0;
  bool overflow = false;
  bool stream_refused = false;
  int read_errno = 0;
};

size_t OnWrite(char* data, size_t, size_t n, void* arg) {
  auto* t = static_cast<Transfer*>(arg);
  long code = 0;
  curl_easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &code);
  if (code / 100 == 2 && t->req->stream != nullptr) {
    if (t->resp->got + n > t->req->stream_len) {
      t->overflow = true;
      return 0;
    }
    if (!(*t->req->stream)(t->resp->got, {reinterpret_cast<const uint8_t*>(data), n})) {
      t->stream_refused = true;
      return 0;
    }
    t->resp->got += n;
    return n;
  }
  if (code / 100 == 2 && !t->req->sink.empty()) {
    if (t->resp->got + n > t->req->sink.size()) {
      t->overflow = true;
      return 0;
    }
    std::memcpy(t->req->sink.data() + t->resp->got, data, n);
    t->resp->got += n;
    return n;
  }
  if (t->resp->text.size() + n > kMaxTextBody) {
    t->overflow = true;
    return 0;
  }
  t->resp->text.append(data, n);
  return n;
}

size_t OnHeader(char* data, size_t, size_t n, void* arg) {
  auto* t = static_cast<Transfer*>(arg);
  std::string_view line(data, n);
  size_t colon = line.find(':');
  if (colon == std::string_view::npos) return n;
  std::string name(line.substr(0, colon));
  std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
  std::string_view value = line.substr(colon + 1);
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
  while (!value.empty() && (value.back() == '\r' || value.back() == '\n' || value.back() == ' ')) value.remove_suffix(1);
  if (name == "etag") {
    std::string v(value.substr(0, 256));
    if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
    t->resp->etag = v;
  } else if (name == "content-length") {
    t->resp->content_length = std::strtoull(std::string(value.substr(0, 32)).c_str(), nullptr, 10);
  } else if (name == "last-modified") {
    t->resp->last_modified = xml::ParseHttpDate(value);
  } else if (name == "content-range") {
    size_t slash = value.rfind('/');
    if (slash != std::string_view::npos && value.substr(slash + 1) != "*") {
      t->resp->total_size = std::strtoull(std::string(value.substr(slash + 1, 32)).c_str(), nullptr, 10);
      t->resp->has_total = true;
    }
  }
  return n;
}

size_t OnRead(char* buf, size_t, size_t n, void* arg) {
  auto* t = static_cast<Transfer*>(arg);
  const Request& r = *t->req;
  uint64_t len = r.body_fd >= 0 ? r.body_len : r.body.size();
  size_t want = static_cast<size_t>(std::min<uint64_t>(n, len - t->read_pos));
  if (want == 0) return 0;
  if (r.body_fd >= 0) {
    ssize_t got;
    do {
      got = ::pread(r.body_fd, buf, want, static_cast<off_t>(r.body_off + t->read_pos));
    } while (got < 0 && errno == EINTR);
    if (got <= 0) {
      t->read_errno = got < 0 ? errno : EIO;
      return CURL_READFUNC_ABORT;
    }
    want = static_cast<size_t>(got);
  } else {
    std::memcpy(buf, r.body.data() + t->read_pos, want);
  }
  t->read_pos += want;
  return want;
}

int OnSeek(void* arg, curl_off_t offset, int origin) {
  auto* t = static_cast<Transfer*>(arg);
  if (origin != SEEK_SET || offset < 0) return CURL_SEEKFUNC_CANTSEEK;
  t->read_pos = static_cast<uint64_t>(offset);
  return CURL_SEEKFUNC_OK;
}

// Runs fn(0..n-1) on up to `threads` threads; the first error stops the rest from starting.
Status RunParallel(size_t n, unsigned threads, const std::function<Status(size_t)>& fn) {
  std::atomic<size_t> next{0};
  std::mutex mu;
  Status first;
  auto worker = [&] {
    for (;;) {
      {
        std::lock_guard lock(mu);
        if (!first.ok()) return;
      }
      size_t i = next.fetch_add(1);
      if (i >= n) return;
      Status s = fn(i);
      if (!s.ok()) {
        std::lock_guard lock(mu);
        if (first.ok()) first = s;
      }
    }
  };
  std::vector<std::jthread> pool;
  for (unsigned i = 1; i < std::min<size_t>(threads, n); ++i) pool.emplace_back(worker);
  worker();
  pool.clear();  // joins
  return first;
}

class S3Origin final : public Origin {
 public:
  S3Origin(std::string bucket, std::string prefix, OriginOptions o, Credentials c)
      : bucket_(std::move(bucket)), prefix_(std::move(prefix)), o_(std::move(o)), creds_(std::move(c)) {
    if (o_.region.empty()) {
      const char* r = std::getenv("AWS_REGION");
      if (!r || !*r) r = std::getenv("AWS_DEFAULT_REGION");
      o_.region = r && *r ? r : "us-east-1";
    }
    if (o_.endpoint.empty()) {
      base_ = "https://" + bucket_ + ".s3." + o_.region + ".amazonaws.com";
    } else {
      std::string ep = o_.endpoint;
      while (!ep.empty() && ep.back() == '/') ep.pop_back();
      if (o_.virtual_host) {
        size_t host = ep.find("://") + 3;
        base_ = ep.substr(0, host) + bucket_ + "." + ep.substr(host);
      } else {
        base_ = ep + "/" + bucket_;
      }
    }
    sigv4_ = "aws:amz:" + o_.region + ":s3";
  }

  ~S3Origin() override {
    for (CURL* c : idle_) curl_easy_cleanup(c);
  }

  std::string Describe() const override {
    return "s3://" + bucket_ + "/" + prefix_ + " at " + (o_.endpoint.empty() ? base_ : o_.endpoint);
  }

  Status Put(std::string_view key, std::span<const uint8_t> data) override {
    KDN_RETURN_IF_ERROR(CheckKey(key));
    if (data.size() > o_.multipart_threshold) return PutMultipart(key, data, -1, data.size());
    Request r;
    r.method = "PUT";
    r.key = prefix_ + std::string(key);
    r.body = data;
    return Perform(r).status();
  }

  Status PutFile(std::string_view key, int fd, uint64_t size) override {
    KDN_RETURN_IF_ERROR(CheckKey(key));
    if (size > o_.multipart_threshold) return PutMultipart(key, {}, fd, size);
    Request r;
    r.method = "PUT";
    r.key = prefix_ + std::string(key);
    r.body_fd = fd;
    r.body_len = size;
    return Perform(r).status();
  }

  Result<uint64_t> Get(std::string_view key, uint64_t offset, std::span<uint8_t> out) override {
    KDN_RETURN_IF_ERROR(CheckKey(key));
    if (out.empty()) return uint64_t{0};
    std::string full = prefix_ + std::string(key);
    if (out.size() <= o_.part_size) {
      KDN_ASSIGN_OR_RETURN(Response r, GetRange(full, offset, out));
      return r.got;
    }
    // Every range at once, without asking the size first: ranges past the object's end answer 416
    // (0 bytes), a short one marks the end. The bytes read are the contiguous run from `offset`.
    size_t parts = static_cast<size_t>((out.size() + o_.part_size - 1) / o_.part_size);
    std::vector<uint64_t> got(parts, 0);
    KDN_RETURN_IF_ERROR(RunParallel(parts, o_.parallelism, [&](size_t i) -> Status {
      uint64_t a = i * o_.part_size, b = std::min<uint64_t>(out.size(), a + o_.part_size);
      KDN_ASSIGN_OR_RETURN(Response r, GetRange(full, offset + a, out.subspan(a, b - a)));
      got[i] = r.got;
      return Status::OK();
    }));
    uint64_t total = 0;
    size_t i = 0;
    for (; i < parts; ++i) {
      total += got[i];
      if (got[i] < std::min<uint64_t>(out.size() - i * o_.part_size, o_.part_size)) break;
    }
    for (++i; i < parts; ++i) {
      if (got[i] != 0) return Status::IOError("origin " + full + ": object changed size while read");
    }
    return total;
  }

  // One ranged GET whose bytes go to `sink` from curl's receive buffer (no copy here): the caller
  // runs several at once if it wants them.
  Result<uint64_t> GetStream(std::string_view key, uint64_t offset, uint64_t len,
                             const StreamSink& sink) override {
    KDN_RETURN_IF_ERROR(CheckKey(key));
    if (len == 0) return uint64_t{0};
    Request r;
    r.key = prefix_ + std::string(key);
    r.range = "bytes=" + std::to_string(offset) + "-" + std::to_string(offset + len - 1);
    r.stream = &sink;
    r.stream_len = len;
    KDN_ASSIGN_OR_RETURN(Response resp, Perform(r));
    return resp.got;
  }

  Result<ObjectInfo> Head(std::string_view key) override {
    KDN_RETURN_IF_ERROR(CheckKey(key));
    Request r;
    r.method = "HEAD";
    r.key = prefix_ + std::string(key);
    KDN_ASSIGN_OR_RETURN(Response resp, Perform(r));
    return ObjectInfo{std::string(key), resp.content_length, resp.etag, resp.last_modified};
  }

  Result<ListPage> List(std::string_view prefix, std::string_view delimiter, std::string_view token,
                        unsigned max_keys) override {
    if (max_keys == 0 || max_keys > 1000) max_keys = 1000;
    Request r;
    r.query = {{"list-type", "2"}, {"max-keys", std::to_string(max_keys)},
               {"prefix", prefix_ + std::string(prefix)}};
    if (!delimiter.empty()) r.query.emplace_back("delimiter", std::string(delimiter));
    if (!token.empty()) r.query.emplace_back("continuation-token", std::string(token));
    KDN_ASSIGN_OR_RETURN(Response resp, Perform(r));
    KDN_ASSIGN_OR_RETURN(ListPage page, xml::ParseListV2(resp.text));
    for (auto& obj : page.objects) KDN_RETURN_IF_ERROR(StripPrefix(&obj.key));
    for (auto& p : page.prefixes) KDN_RETURN_IF_ERROR(StripPrefix(&p));
    return page;
  }

  Status Touch(std::string_view key) override {
    KDN_RETURN_IF_ERROR(CheckKey(key));
    const std::string full = prefix_ + std::string(key);
    Request head;
    head.method = "HEAD";
    head.key = full;
    KDN_ASSIGN_OR_RETURN(Response size, Perform(head));
    if (size.content_length > kMaxCopyBytes) {
      return Status::Unsupported("origin " + bucket_ + "/" + full +
                                 ": larger than one CopyObject can refresh (5 GiB)");
    }
    // A copy onto itself, done by the server: no byte of the object crosses the network. S3
    // refuses a copy onto itself that changes nothing; REPLACE makes it a new write, with a new
    // LastModified (chunk objects carry no metadata that replacing could lose).
    Request copy;
    copy.method = "PUT";
    copy.key = full;
    copy.copy_source = "/" + bucket_ + "/" + UriEncode(full, true);
    KDN_ASSIGN_OR_RETURN(Response resp, Perform(copy));
    // Like CompleteMultipartUpload, a CopyObject may fail after its 200 has been sent.
    xml::S3Error err;
    if (xml::ParseError(resp.text, &err)) {
      return Status::IOError("origin copy of " + bucket_ + "/" + full + " onto itself: " + err.code +
                             (err.message.empty() ? "" : ": " + err.message));
    }
    return Status::OK();
  }

  Status Delete(std::string_view key) override {
    KDN_RETURN_IF_ERROR(CheckKey(key));
    Request r;
    r.method = "DELETE";
    r.key = prefix_ + std::string(key);
    auto resp = Perform(r);
    if (!resp.ok() && resp.status().IsNotFound()) return Status::OK();
    return resp.status();
  }

 private:
  Status StripPrefix(std::string* key) const {
    if (!std::string_view(*key).starts_with(prefix_)) {
      return Status::Corruption("origin listed '" + *key + "' outside its prefix " + prefix_);
    }
    key->erase(0, prefix_.size());
    return Status::OK();
  }

  Result<Response> GetRange(const std::string& full, uint64_t off, std::span<uint8_t> out) {
    Request r;
    r.key = full;
    r.range = "bytes=" + std::to_string(off) + "-" + std::to_string(off + out.size() - 1);
    r.sink = out;
    return Perform(r);
  }

  // CreateMultipartUpload, parts in parallel, Complete; any failure aborts the upload so that no
  // parts are left billed and invisible on the origin.
  Status PutMultipart(std::string_view key, std::span<const uint8_t> data, int fd, uint64_t size) {
    std::string full = prefix_ + std::string(key);
    uint64_t part = o_.part_size;
    if ((size + part - 1) / part > 10000) part = ((size + 9999) / 10000 + (1 << 20) - 1) & ~uint64_t{(1 << 20) - 1};
    size_t parts = static_cast<size_t>((size + part - 1) / part);
    Request init;
    init.method = "POST";
    init.key = full;
    init.query = {{"uploads", ""}};
    KDN_ASSIGN_OR_RETURN(Response ir, Perform(init));
    KDN_ASSIGN_OR_RETURN(std::string upload_id, xml::ParseInitiateMultipart(ir.text));
    std::vector<std::string> etags(parts);
    Status s = RunParallel(parts, o_.parallelism, [&](size_t i) -> Status {
      uint64_t a = i * part, len = std::min(size, a + part) - a;
      Request pr;
      pr.method = "PUT";
      pr.key = full;
      pr.query = {{"partNumber", std::to_string(i + 1)}, {"uploadId", upload_id}};
      if (fd >= 0) {
        pr.body_fd = fd;
        pr.body_off = a;
        pr.body_len = len;
      } else {
        pr.body = data.subspan(a, len);
      }
      KDN_ASSIGN_OR_RETURN(Response resp, Perform(pr));
      if (resp.etag.empty()) return Status::IOError("origin " + full + ": part " + std::to_string(i + 1) + " has no ETag");
      etags[i] = resp.etag;
      return Status::OK();
    });
    if (s.ok()) {
      std::string body = "<CompleteMultipartUpload>";
      for (size_t i = 0; i < parts; ++i) {
        body += "<Part><PartNumber>" + std::to_string(i + 1) + "</PartNumber><ETag>\"" +
                xml::Escape(etags[i]) + "\"</ETag></Part>";
      }
      body += "</CompleteMultipartUpload>";
      Request done;
      done.method = "POST";
      done.key = full;
      done.query = {{"uploadId", upload_id}};
      done.content_type = "application/xml";
      done.body = std::span(reinterpret_cast<const uint8_t*>(body.data()), body.size());
      auto resp = Perform(done);
      s = resp.ok() ? xml::ParseCompleteMultipart(resp->text) : resp.status();
    }
    if (!s.ok()) {
      Request abort;
      abort.method = "DELETE";
      abort.key = full;
      abort.query = {{"uploadId", upload_id}};
      (void)Perform(abort);  // best effort: the error that matters is s
      return s.WithContext("multipart upload of " + full + " (aborted)");
    }
    return Status::OK();
  }

  std::string Url(const Request& r) const {
    std::string url = base_ + "/" + UriEncode(r.key, true);
    if (!r.query.empty()) {
      std::vector<std::string> parts;
      for (const auto& [k, v] : r.query) parts.push_back(UriEncode(k, false) + "=" + UriEncode(v, false));
      std::sort(parts.begin(), parts.end());
      for (size_t i = 0; i < parts.size(); ++i) url += (i == 0 ? "?" : "&") + parts[i];
    }
    return url;
  }

  CURL* Acquire() {
    {
      std::lock_guard lock(mu_);
      if (!idle_.empty()) {
        CURL* c = idle_.back();
        idle_.pop_back();
        return c;
      }
    }
    return curl_easy_init();
  }
  void Release(CURL* c) {
    std::lock_guard lock(mu_);
    if (idle_.size() < 64) {
      idle_.push_back(c);
      return;
    }
    curl_easy_cleanup(c);
  }

  static bool Transient(CURLcode rc) {
    switch (rc) {
      case CURLE_COULDNT_CONNECT:
      case CURLE_COULDNT_RESOLVE_HOST:
      case CURLE_OPERATION_TIMEDOUT:
      case CURLE_SEND_ERROR:
      case CURLE_RECV_ERROR:
      case CURLE_GOT_NOTHING:
      case CURLE_PARTIAL_FILE:
      case CURLE_HTTP2:
      case CURLE_HTTP2_STREAM: return true;
      default: return false;
    }
  }
  static bool Transient(long http) { return http == 429 || http == 500 || http == 502 || http == 503 || http == 504; }

  Result<Response> Perform(const Request& r) {
    std::string url = Url(r);
    std::string what = "origin " + std::string(r.method) + " " + bucket_ + "/" + r.key;
    CURL* c = Acquire();
    if (!c) return Status::Internal("curl_easy_init failed");
    struct Giver {
      S3Origin* self;
      CURL* c;
      ~Giver() { self->Release(c); }
    } giver{this, c};
    auto start = Clock::now();
    thread_local std::mt19937_64 rng{std::random_device{}()};
    std::string last;
    unsigned attempt = 0;
    for (;;) {
      ++attempt;
      Response resp;
      Transfer t{c, &r, &resp};
      char errbuf[CURL_ERROR_SIZE] = {0};
      CURLcode rc = Attempt(c, r, url, &t, errbuf);
      bool retry = false;
      if (rc != CURLE_OK) {
        if (t.overflow) return Status::IOError(what + ": the answer is larger than asked for");
        if (t.stream_refused) return Status::IOError(what + ": the bytes could not be kept");
        if (t.read_errno) return Status::FromErrno(what + ": reading the body", t.read_errno);
        last = std::string(curl_easy_strerror(rc)) + (errbuf[0] ? std::string(" (") + errbuf + ")" : "");
        retry = Transient(rc);
        if (!retry) return Status::IOError(what + ": " + last);
      } else {
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &resp.http);
        if (resp.http / 100 == 2 || (resp.http == 416 && !r.range.empty())) return resp;
        xml::S3Error err;
        bool has_err = xml::ParseError(resp.text, &err);
        std::string detail = "HTTP " + std::to_string(resp.http) +
                             (has_err ? " " + err.code + (err.message.empty() ? "" : ": " + err.message) : "");
        if (resp.http == 403 || resp.http == 401) {
          return Status::PermissionDenied(what + ": access denied by the origin (" + detail +
                                          "); check the S3 credentials and the bucket's policy");
        }
        if (resp.http == 404) return Status::NotFound(what + ": " + detail);
        if (!Transient(resp.http)) return Status::IOError(what + ": " + detail);
        last = detail;
        retry = true;
      }
      auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
      long cap = std::min<long>(o_.backoff_max_ms, o_.backoff_base_ms << std::min(attempt - 1, 20u));
      long sleep_ms = std::uniform_int_distribution<long>(cap / 2, cap)(rng);
      if (attempt >= o_.max_attempts || elapsed + sleep_ms >= o_.retry_budget_ms) {
        return Status::IOError(what + ": " + last + "; gave up after " + std::to_string(attempt) +
                               " tries in " + std::to_string(elapsed) + " ms");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(sleep_ms));
    }
  }

  CURLcode Attempt(CURL* c, const Request& r, const std::string& url, Transfer* t, char* errbuf) {
    curl_easy_reset(c);  // keeps the connection cache
    curl_easy_setopt(c, CURLOPT_URL, url.c_str());
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_AWS_SIGV4, sigv4_.c_str());
    curl_easy_setopt(c, CURLOPT_USERNAME, creds_.access_key.c_str());
    curl_easy_setopt(c, CURLOPT_PASSWORD, creds_.secret_key.c_str());
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, o_.connect_timeout_ms);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, o_.low_speed_bytes);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, o_.low_speed_seconds);
    if (o_.request_timeout_ms > 0) curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, o_.request_timeout_ms);
    curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, o_.verify_tls ? 1L : 0L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, o_.verify_tls ? 2L : 0L);
    // Larger receive buffer than the 16 KiB default: fewer callbacks and copies per GET (the
    // curl tool uses 100 KiB and more).
    curl_easy_setopt(c, CURLOPT_BUFFERSIZE, 512L << 10);
    // The same on the way out: curl's 64 KiB default meant a read callback (a pread of the file)
    // and a send per 64 KiB of every part.
    curl_easy_setopt(c, CURLOPT_UPLOAD_BUFFERSIZE, 1L << 20);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, OnWrite);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, t);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, OnHeader);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, t);
    struct curl_slist* h = nullptr;
    // No "Expect:" override: curl 7.88 puts an emptied header into the signed headers it does not
    // send, and RGW answers SignatureDoesNotMatch (measured); 100-continue costs one round trip.
    h = curl_slist_append(h, "x-amz-content-sha256: UNSIGNED-PAYLOAD");
    std::string range, token, ctype, copy;
    if (!r.range.empty()) h = curl_slist_append(h, (range = "Range: " + r.range).c_str());
    if (!creds_.session_token.empty()) {
      h = curl_slist_append(h, (token = "x-amz-security-token: " + creds_.session_token).c_str());
    }
    if (!r.content_type.empty()) h = curl_slist_append(h, (ctype = "Content-Type: " + r.content_type).c_str());
    if (!r.copy_source.empty()) {
      h = curl_slist_append(h, (copy = "x-amz-copy-source: " + r.copy_source).c_str());
      h = curl_slist_append(h, "x-amz-metadata-directive: REPLACE");
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    std::string_view m = r.method;
    uint64_t len = r.body_fd >= 0 ? r.body_len : r.body.size();
    if (m == "PUT") {
      curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
      curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(len));
      curl_easy_setopt(c, CURLOPT_READFUNCTION, OnRead);
      curl_easy_setopt(c, CURLOPT_READDATA, t);
      curl_easy_setopt(c, CURLOPT_SEEKFUNCTION, OnSeek);
      curl_easy_setopt(c, CURLOPT_SEEKDATA, t);
    } else if (m == "POST") {
      curl_easy_setopt(c, CURLOPT_POST, 1L);
      curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(len));
      curl_easy_setopt(c, CURLOPT_READFUNCTION, OnRead);
      curl_easy_setopt(c, CURLOPT_READDATA, t);
      curl_easy_setopt(c, CURLOPT_SEEKFUNCTION, OnSeek);
      curl_easy_setopt(c, CURLOPT_SEEKDATA, t);
    } else if (m == "HEAD") {
      curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    } else if (m == "DELETE") {
      curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, "DELETE");
    }
    CURLcode rc = curl_easy_perform(c);
    curl_slist_free_all(h);
    return rc;
  }

  const std::string bucket_, prefix_;
  OriginOptions o_;
  const Credentials creds_;
  std::string base_, sigv4_;
  std::mutex mu_;
  std::vector<CURL*> idle_;
};

}  // namespace

Result<std::unique_ptr<Origin>> OpenS3Origin(const std::string& bucket, const std::string& prefix,
                                             const OriginOptions& options) {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  if (!options.endpoint.empty() && !options.endpoint.starts_with("http://") &&
      !options.endpoint.starts_with("https://")) {
    return Status::InvalidArgument("origin endpoint '" + options.endpoint + "': expected http(s)://HOST[:PORT]");
  }
  if (options.endpoint.find_first_of("?#@ ", 0) != std::string::npos) {
    return Status::InvalidArgument("origin endpoint '" + options.endpoint + "': no user, query or fragment");
  }
  KDN_ASSIGN_OR_RETURN(Credentials creds, FindCredentials(options));
  return std::unique_ptr<Origin>(new S3Origin(bucket, prefix, options, std::move(creds)));
}

}  // namespace kdn::origin
