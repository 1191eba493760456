// The origin client without a real origin: URL and key checks, credentials, the S3 XML reader, and
// the S3 backend's retries and errors against a scripted local HTTP server.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "kdn/origin.h"
#include "origin_test_util.h"
#include "store/origin/backends.h"
#include "store/origin/credentials.h"
#include "store/origin/s3_xml.h"

namespace kdn::origin {
namespace {

using testing::ScriptedHttpServer;

OriginOptions Local(int port) {
  OriginOptions o;
  o.url = "s3://bucket/pre";
  o.endpoint = "http://127.0.0.1:" + std::to_string(port);
  o.access_key = "AK";
  o.secret_key = "SK";
  o.backoff_base_ms = 10;
  o.backoff_max_ms = 50;
  o.connect_timeout_ms = 1000;
  return o;
}

TEST(OriginUrl, ParsesAndRefuses) {
  OriginOptions o;
  o.access_key = "a";
  o.secret_key = "b";
  for (std::string bad : {"http://x", "s3://", "s3://UPPER/x", "s3://ab", "s3://b_ad/x", "file://rel",
                          "s3://bucket/../x", "file:///nonexistent-kdn-dir"}) {
    o.url = bad;
    auto r = OpenOrigin(o);
    EXPECT_FALSE(r.ok()) << bad;
  }
  o.url = "s3://my-bucket/some/prefix";
  o.endpoint = "ftp://x";
  EXPECT_EQ(OpenOrigin(o).status().code(), Code::kInvalidArgument);
  o.endpoint = "http://127.0.0.1:1";
  auto r = OpenOrigin(o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ((*r)->Describe(), "s3://my-bucket/some/prefix/ at http://127.0.0.1:1");
  o.url = "file:///tmp/";
  r = OpenOrigin(o);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ((*r)->Describe(), "file:///tmp");
  o.part_size = 1 << 20;
  EXPECT_EQ(OpenOrigin(o).status().code(), Code::kInvalidArgument);
}

TEST(OriginUrl, UriEncodeKeepsOnlyUnreserved) {
  EXPECT_EQ(UriEncode("a b/c+d~e_f.g-h", true), "a%20b/c%2Bd~e_f.g-h");
  EXPECT_EQ(UriEncode("a/b=c&\xc3\xa9", false), "a%2Fb%3Dc%26%C3%A9");
}

class CredentialsFile : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = std::filesystem::temp_directory_path() / ("kdn-creds-" + std::to_string(::getpid()));
    std::ofstream(path_) << "# comment\n[default]\naws_access_key_id = AKDEF\naws_secret_access_key=SKDEF\n"
                            "\n[profile other]\naws_access_key_id=AKO\naws_secret_access_key = SKO\n"
                            "aws_session_token = TOK\n";
  }
  void TearDown() override { std::filesystem::remove(path_); }
  std::string path_;
};

TEST_F(CredentialsFile, ReadsProfiles) {
  ::chmod(path_.c_str(), 0600);
  auto c = ReadCredentialsFile(path_, "default");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->access_key, "AKDEF");
  EXPECT_EQ(c->secret_key, "SKDEF");
  c = ReadCredentialsFile(path_, "other");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->session_token, "TOK");
  EXPECT_TRUE(ReadCredentialsFile(path_, "missing").status().IsNotFound());
}

TEST_F(CredentialsFile, GroupOrWorldReadableIsRefused) {
  ::chmod(path_.c_str(), 0644);
  auto c = ReadCredentialsFile(path_, "default");
  ASSERT_EQ(c.status().code(), Code::kPermissionDenied);
  EXPECT_NE(c.status().message().find("mode 0644"), std::string::npos) << c.status().message();
  EXPECT_NE(c.status().message().find("chmod 600"), std::string::npos);
  ::chmod(path_.c_str(), 0640);
  EXPECT_EQ(ReadCredentialsFile(path_, "default").status().code(), Code::kPermissionDenied);
  // And through OpenOrigin, which is how kdnfs meets it.
  OriginOptions o;
  o.url = "s3://bucket";
  o.endpoint = "http://127.0.0.1:1";
  o.credentials_file = path_;
  EXPECT_EQ(OpenOrigin(o).status().code(), Code::kPermissionDenied);
  ::chmod(path_.c_str(), 0600);
  EXPECT_TRUE(OpenOrigin(o).ok());
}

TEST(S3Xml, ParsesListing) {
  std::string body =
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      "<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>b</Name>"
      "<IsTruncated>true</IsTruncated><NextContinuationToken>tok&amp;1</NextContinuationToken>"
      "<Contents><Key>p/a&lt;b&#x20;&#233;</Key><Size>42</Size><ETag>&quot;abc&quot;</ETag>"
      "<LastModified>2026-12-06T11:24:22.000Z</LastModified></Contents>"
      "<Contents><Key>p/c</Key><Size>0</Size><LastModified>yesterday</LastModified></Contents>"
      "<CommonPrefixes><Prefix>p/d/</Prefix></CommonPrefixes></ListBucketResult>";
  auto page = xml::ParseListV2(body);
  ASSERT_TRUE(page.ok()) << page.status().ToString();
  ASSERT_EQ(page->objects.size(), 2u);
  EXPECT_EQ(page->objects[0].key, "p/a<b \xc3\xa9");
  EXPECT_EQ(page->objects[0].size, 42u);
  EXPECT_EQ(page->objects[0].etag, "abc");
  EXPECT_EQ(page->objects[0].mtime_s, 1796556262);  // date -u -d 2026-12-06T11:24:22Z +%s
  EXPECT_EQ(page->objects[1].mtime_s, 0);           // not S3's format: unknown, never guessed
  EXPECT_EQ(page->prefixes, std::vector<std::string>{"p/d/"});
  EXPECT_EQ(page->next_token, "tok&1");
}

// A HEAD's Last-Modified (RFC 9110's IMF-fixdate), as RGW and AWS write it.
TEST(S3Xml, ParsesHttpDates) {
  EXPECT_EQ(xml::ParseHttpDate("Sun, 06 Dec 2026 11:24:22 GMT"), 1796556262);  // as the listing's
  EXPECT_EQ(xml::ParseHttpDate("Thu, 01 Jan 1970 00:00:01 GMT"), 1);
  EXPECT_EQ(xml::ParseHttpDate("Tue, 29 Feb 2028 23:59:59 GMT"), 1835481599);  // date -u -d ... +%s
  for (const char* bad : {"", "Sun, 06 Dec 2026 11:24:22", "Sun, 06 Dex 2026 11:24:22 GMT",
                          "Sun, 6 Dec 2026 11:24:22 GMT ", "Sun, 06 Dec 2026 24:00:00 GMT",
                          "Sun, 00 Dec 2026 11:24:22 GMT", "Sun, 06 Dec 1969 11:24:22 GMT",
                          "Sun, 06 Dec 2026 11:24:22 UTC", "Sun, -6 Dec 2026 11:24:22 GMT",
                          "Sun, 06 Dec +026 11:24:22 GMT", "2026-12-06T11:24:22.000Z"}) {
    EXPECT_EQ(xml::ParseHttpDate(bad), 0) << bad;
  }
  EXPECT_EQ(xml::ParseIsoTime("2026-12-06T11:24:22.000Z"), 1796556262);
  EXPECT_EQ(xml::ParseIsoTime("2026-13-06T11:24:22.000Z"), 0);
}

TEST(S3Xml, RefusesMalformedAndHostile) {
  for (std::string bad : {"", "text", "<a>", "<a></b>", "<a><b></a></b>", "<a>&bogus;</a>", "<a>&#0;</a>",
                          "<a>&#x110000;</a>", "<!DOCTYPE a [<!ENTITY x \"y\">]><a>&x;</a>", "<a/><b/>",
                          "<a></a>junk", "<a x=\"1></a>", "<ListBucketResult><Contents><Key>k</Key>"
                          "<Size>-1</Size></Contents></ListBucketResult>"}) {
    EXPECT_FALSE(xml::ParseListV2(bad).ok()) << bad;
  }
  std::string deep;
  for (int i = 0; i < 100; ++i) deep += "<a>";
  EXPECT_FALSE(xml::Parse(deep).ok());
  EXPECT_FALSE(xml::Parse(std::string(xml::kMaxInput + 1, ' ')).ok());
  std::string many = "<r>";
  for (size_t i = 0; i < xml::kMaxNodes; ++i) many += "<x/>";
  many += "</r>";
  EXPECT_FALSE(xml::Parse(many).ok());
  EXPECT_FALSE(xml::ParseListV2("<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>").ok());
}

TEST(S3Xml, ErrorsAndMultipart) {
  xml::S3Error e;
  ASSERT_TRUE(xml::ParseError("<Error><Code>NoSuchKey</Code><Message>gone</Message></Error>", &e));
  EXPECT_EQ(e.code, "NoSuchKey");
  EXPECT_EQ(e.message, "gone");
  EXPECT_FALSE(xml::ParseError("<Other/>", &e));
  auto id = xml::ParseInitiateMultipart(
      "<InitiateMultipartUploadResult><Bucket>b</Bucket><UploadId>2~xyz</UploadId></InitiateMultipartUploadResult>");
  ASSERT_TRUE(id.ok());
  EXPECT_EQ(*id, "2~xyz");
  EXPECT_FALSE(xml::ParseInitiateMultipart("<InitiateMultipartUploadResult/>").ok());
  EXPECT_TRUE(xml::ParseCompleteMultipart("<CompleteMultipartUploadResult><ETag>x</ETag></CompleteMultipartUploadResult>").ok());
  // S3 may answer 200 and put the failure in the body.
  auto s = xml::ParseCompleteMultipart("<Error><Code>InternalError</Code></Error>");
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("InternalError"), std::string::npos);
}

TEST(S3Retry, A503IsRetriedThenSucceeds) {
  ScriptedHttpServer server({ScriptedHttpServer::Reply(503, "<Error><Code>SlowDown</Code></Error>"),
                             ScriptedHttpServer::Reply(503, ""),
                             ScriptedHttpServer::Reply(200, "hello", "ETag: \"e1\"\r\n")});
  auto o = OpenOrigin(Local(server.port()));
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  std::vector<uint8_t> buf(5);
  auto n = (*o)->Get("k", 0, buf);
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(*n, 5u);
  EXPECT_EQ(std::string(buf.begin(), buf.end()), "hello");
  EXPECT_EQ(server.requests(), 3);
  // What the server saw: a path-style, percent-encoded, signed request with the payload header.
  std::string req = server.last_request();
  EXPECT_NE(req.find("GET /bucket/pre/k HTTP/1.1"), std::string::npos) << req;
  EXPECT_NE(req.find("x-amz-content-sha256: UNSIGNED-PAYLOAD"), std::string::npos) << req;
  EXPECT_NE(req.find("Authorization: AWS4-HMAC-SHA256 Credential=AK/"), std::string::npos) << req;
  EXPECT_NE(req.find("Range: bytes=0-4"), std::string::npos) << req;
}

// HEAD reads the write time; Touch is a server-side copy of the object onto itself, signed with
// its copy headers, that sends no bytes of the object; an <Error> inside the copy's 200 is a
// failure; an object CopyObject cannot copy is Unsupported (the caller puts it again).
TEST(S3Touch, HeadTellsTheAgeAndTouchCopiesOntoItself) {
  const std::string head = "HTTP/1.1 200 X\r\nContent-Length: 10\r\nConnection: close\r\n"
                           "Last-Modified: Sun, 06 Dec 2026 11:24:22 GMT\r\nETag: \"e\"\r\n\r\n";
  {
    ScriptedHttpServer server({head});
    auto o = OpenOrigin(Local(server.port()));
    ASSERT_TRUE(o.ok()) << o.status().ToString();
    auto info = (*o)->Head("chunks/a b");
    ASSERT_TRUE(info.ok()) << info.status().ToString();
    EXPECT_EQ(info->size, 10u);
    EXPECT_EQ(info->mtime_s, 1796556262);
  }
  {
    ScriptedHttpServer server(
        {head, ScriptedHttpServer::Reply(200, "<CopyObjectResult><ETag>\"e\"</ETag>"
                                              "</CopyObjectResult>")});
    auto o = OpenOrigin(Local(server.port()));
    ASSERT_TRUE(o.ok());
    Status s = (*o)->Touch("chunks/a b");
    ASSERT_TRUE(s.ok()) << s.ToString();
    EXPECT_EQ(server.requests(), 2);
    std::string req = server.last_request();
    EXPECT_NE(req.find("PUT /bucket/pre/chunks/a%20b HTTP/1.1"), std::string::npos) << req;
    EXPECT_NE(req.find("x-amz-copy-source: /bucket/pre/chunks/a%20b\r\n"), std::string::npos) << req;
    EXPECT_NE(req.find("x-amz-metadata-directive: REPLACE\r\n"), std::string::npos) << req;
    EXPECT_NE(req.find("Content-Length: 0\r\n"), std::string::npos) << req;
    // curl signs the copy headers: a proxy cannot point the copy at another object.
    size_t signed_at = req.find("SignedHeaders=");
    ASSERT_NE(signed_at, std::string::npos) << req;
    std::string signed_headers = req.substr(signed_at, req.find(',', signed_at) - signed_at);
    EXPECT_NE(signed_headers.find("x-amz-copy-source"), std::string::npos) << signed_headers;
    EXPECT_NE(signed_headers.find("x-amz-metadata-directive"), std::string::npos) << signed_headers;
  }
  {
    ScriptedHttpServer server({head, ScriptedHttpServer::Reply(200, "<Error><Code>InternalError"
                                                                    "</Code></Error>")});
    auto o = OpenOrigin(Local(server.port()));
    ASSERT_TRUE(o.ok());
    Status s = (*o)->Touch("chunks/a");
    EXPECT_EQ(s.code(), Code::kIOError) << s.ToString();
    EXPECT_NE(s.message().find("InternalError"), std::string::npos) << s.ToString();
  }
  {
    ScriptedHttpServer server({"HTTP/1.1 200 X\r\nContent-Length: 6000000000\r\n"
                               "Connection: close\r\n\r\n"});
    auto o = OpenOrigin(Local(server.port()));
    ASSERT_TRUE(o.ok());
    EXPECT_EQ((*o)->Touch("chunks/huge").code(), Code::kUnsupported);
    EXPECT_EQ(server.requests(), 1);  // no copy tried
  }
  {
    ScriptedHttpServer server({ScriptedHttpServer::Reply(404, "")});
    auto o = OpenOrigin(Local(server.port()));
    ASSERT_TRUE(o.ok());
    EXPECT_TRUE((*o)->Touch("chunks/gone").IsNotFound());
  }
}

TEST(S3Retry, PersistentFailureGivesUpWithinTheBudget) {
  ScriptedHttpServer server({ScriptedHttpServer::Reply(500, "<Error><Code>InternalError</Code></Error>")});
  auto opts = Local(server.port());
  opts.max_attempts = 4;
  auto o = OpenOrigin(opts);
  ASSERT_TRUE(o.ok());
  auto h = (*o)->Head("k");
  ASSERT_FALSE(h.ok());
  EXPECT_EQ(h.status().code(), Code::kIOError);
  EXPECT_NE(h.status().message().find("gave up after 4 tries"), std::string::npos) << h.status().message();
  EXPECT_EQ(server.requests(), 4);
}

TEST(S3Retry, NoServerFailsInBoundedTimeWithAClearError) {
  int port;
  {
    ScriptedHttpServer probe({ScriptedHttpServer::Reply(200, "")});
    port = probe.port();
  }  // closed: connections are refused now
  auto opts = Local(port);
  opts.retry_budget_ms = 1500;
  opts.max_attempts = 100;
  auto o = OpenOrigin(opts);
  ASSERT_TRUE(o.ok());
  auto s = (*o)->Put("k", std::span<const uint8_t>());
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), Code::kIOError);
  EXPECT_NE(s.message().find("connect"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("gave up"), std::string::npos) << s.message();
}

TEST(S3Errors, AuthFailureIsPermissionDeniedAndNotRetried) {
  ScriptedHttpServer server({ScriptedHttpServer::Reply(
      403, "<Error><Code>SignatureDoesNotMatch</Code><Message>bad sig</Message></Error>")});
  auto o = OpenOrigin(Local(server.port()));
  ASSERT_TRUE(o.ok());
  auto s = (*o)->Delete("k");
  EXPECT_EQ(s.code(), Code::kPermissionDenied);
  EXPECT_NE(s.message().find("SignatureDoesNotMatch"), std::string::npos) << s.message();
  EXPECT_EQ(server.requests(), 1);
}

TEST(S3Errors, ListQueryIsEncodedAndSorted) {
  ScriptedHttpServer server({ScriptedHttpServer::Reply(
      200, "<ListBucketResult><IsTruncated>false</IsTruncated><Contents><Key>pre/x y</Key><Size>1</Size>"
           "</Contents></ListBucketResult>")});
  auto o = OpenOrigin(Local(server.port()));
  ASSERT_TRUE(o.ok());
  auto page = (*o)->List("x y", "/", "t=1", 10);
  ASSERT_TRUE(page.ok()) << page.status().ToString();
  ASSERT_EQ(page->objects.size(), 1u);
  EXPECT_EQ(page->objects[0].key, "x y");
  std::string req = server.last_request();
  EXPECT_NE(req.find("GET /bucket/?continuation-token=t%3D1&delimiter=%2F&list-type=2&max-keys=10&prefix=pre%2Fx%20y "),
            std::string::npos)
      << req;
}

TEST(S3Errors, AnAnswerLargerThanAskedIsRefused) {
  ScriptedHttpServer server({ScriptedHttpServer::Reply(200, "0123456789")});
  auto o = OpenOrigin(Local(server.port()));
  ASSERT_TRUE(o.ok());
  std::vector<uint8_t> buf(4);
  auto n = (*o)->Get("k", 0, buf);
  EXPECT_FALSE(n.ok());
}

TEST(S3Errors, VirtualHostUrls) {
  ScriptedHttpServer server({ScriptedHttpServer::Reply(200, "", "ETag: \"e\"\r\n")});
  auto opts = Local(server.port());
  opts.endpoint = "http://localhost:" + std::to_string(server.port());
  opts.virtual_host = true;
  auto o = OpenOrigin(opts);
  ASSERT_TRUE(o.ok());
  // bucket.localhost resolves to loopback (RFC 6761; curl knows it).
  auto h = (*o)->Head("k");
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  std::string req = server.last_request();
  EXPECT_NE(req.find("HEAD /pre/k HTTP/1.1"), std::string::npos) << req;
  EXPECT_NE(req.find("Host: bucket.localhost:"), std::string::npos) << req;
}

}  // namespace
}  // namespace kdn::origin
