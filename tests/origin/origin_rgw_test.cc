// What only a real RGW can show: its auth errors, and an origin that goes away and comes back.
#include <chrono>
#include <cstdlib>

#include <gtest/gtest.h>

#include "kdn/origin.h"
#include "origin_test_util.h"

namespace kdn::origin {
namespace {

class Rgw : public ::testing::Test {
 protected:
  void SetUp() override {
    env_ = testing::RgwEnv();
    if (env_["KDN_ORIGIN_ENDPOINT"].empty()) {
      if (testing::InCi()) FAIL() << "CI=true: no RGW (the origin_rgw fixture did not start one)";
      GTEST_SKIP() << "no RGW: run `ctest -L origin` (its fixture starts scripts/origin-rgw)";
    }
    o_.url = "s3://" + env_["KDN_ORIGIN_BUCKET"] + "/rgw-test";
    o_.endpoint = env_["KDN_ORIGIN_ENDPOINT"];
    o_.access_key = env_["AWS_ACCESS_KEY_ID"];
    o_.secret_key = env_["AWS_SECRET_ACCESS_KEY"];
    o_.region = env_["AWS_REGION"];
  }
  std::map<std::string, std::string> env_;
  OriginOptions o_;
};

TEST_F(Rgw, WrongSecretIsAClearAuthError) {
  o_.secret_key = "not-the-secret";
  auto o = OpenOrigin(o_);
  ASSERT_TRUE(o.ok());
  auto s = (*o)->Put("x", std::span<const uint8_t>());
  EXPECT_EQ(s.code(), Code::kPermissionDenied) << s.ToString();
  EXPECT_NE(s.message().find("SignatureDoesNotMatch"), std::string::npos) << s.message();
}

TEST_F(Rgw, UnknownKeyIsAClearAuthError) {
  o_.access_key = "NOSUCHKEY";
  auto o = OpenOrigin(o_);
  ASSERT_TRUE(o.ok());
  auto h = (*o)->Head("x");  // a HEAD answer has no body: the code alone says it
  EXPECT_EQ(h.status().code(), Code::kPermissionDenied) << h.status().ToString();
  auto l = (*o)->List("", "/", "");
  EXPECT_EQ(l.status().code(), Code::kPermissionDenied);
  EXPECT_NE(l.status().message().find("InvalidAccessKeyId"), std::string::npos) << l.status().message();
}

TEST_F(Rgw, MissingBucketIsNotFound) {
  o_.url = "s3://no-such-bucket-kdn/x";
  auto o = OpenOrigin(o_);
  ASSERT_TRUE(o.ok());
  auto l = (*o)->List("", "", "");
  EXPECT_TRUE(l.status().IsNotFound()) << l.status().ToString();
  EXPECT_NE(l.status().message().find("NoSuchBucket"), std::string::npos) << l.status().message();
}

// Stops the shared RGW (CTest runs this test alone: RESOURCE_LOCK origin_rgw) and starts it again.
TEST_F(Rgw, StoppedOriginFailsInBoundedTimeThenRecovers) {
  o_.retry_budget_ms = 3000;
  o_.max_attempts = 50;
  o_.connect_timeout_ms = 1000;
  auto o = OpenOrigin(o_);
  ASSERT_TRUE(o.ok());
  std::vector<uint8_t> data(1000, 7);
  ASSERT_TRUE((*o)->Put("survives", data).ok());

  const char* dir = std::getenv("KDN_TEST_RGW_DIR");
  std::string rgw = std::string(KDN_SOURCE_DIR) + "/scripts/origin-rgw";
  std::string d = dir ? dir : KDN_TEST_RGW_DIR_DEFAULT;
  ASSERT_EQ(std::system((rgw + " stop " + d).c_str()), 0);
  auto t0 = std::chrono::steady_clock::now();
  std::vector<uint8_t> buf(1000);
  auto n = (*o)->Get("survives", 0, buf);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  int restart = std::system((rgw + " start " + d + " >/dev/null").c_str());
  ASSERT_FALSE(n.ok());
  EXPECT_EQ(n.status().code(), Code::kIOError);
  EXPECT_NE(n.status().message().find("gave up"), std::string::npos) << n.status().message();
  EXPECT_NE(n.status().message().find("survives"), std::string::npos) << n.status().message();
  // Bounded by the retry budget plus one connect timeout; 60 s is far beyond either, and far
  // below "hangs".
  EXPECT_LT(ms, 60'000);
  ASSERT_EQ(restart, 0);
  n = (*o)->Get("survives", 0, buf);
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(buf, data);
}

}  // namespace
}  // namespace kdn::origin
