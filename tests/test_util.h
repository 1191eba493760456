// Helpers shared by every test group.
#ifndef KDN_TESTS_TEST_UTIL_H_
#define KDN_TESTS_TEST_UTIL_H_

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <string_view>
#include <system_error>

namespace kdn::test {

// True under CI (CI=true): there, a test that the machine can run must not skip.
inline bool UnderCI() {
  const char* ci = std::getenv("CI");
  return ci != nullptr && std::string_view(ci) == "true";
}

// Path of the real test model: $KDN_TEST_MODEL, else ../shared/models/stories260K.bin beside the
// source tree. Empty when neither exists.
inline std::string TestModelPath() {
  if (const char* p = std::getenv("KDN_TEST_MODEL"); p && std::filesystem::exists(p)) return p;
  if (std::filesystem::exists(KDN_TEST_MODEL_DEFAULT)) return KDN_TEST_MODEL_DEFAULT;
  return {};
}

// A fresh directory under $TMPDIR (or /tmp), removed with everything in it on destruction.
class TempDir {
 public:
  explicit TempDir(std::string_view tag = "kdn") {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/" + std::string(tag) + ".XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) ADD_FAILURE() << "mkdtemp failed for " << tmpl;
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::string str() const { return path_.string(); }
  std::string operator/(std::string_view name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

// Deterministic generator for test data; the seed comes from the test so failures reproduce.
inline std::mt19937_64 Rng(uint64_t seed) { return std::mt19937_64(seed); }

}  // namespace kdn::test

// Skips the current test with a reason when `cond` is false, unless under CI, where a skip of
// something the machine should be able to run is a failure.
#define KDN_REQUIRE_OR_SKIP(cond, why)                                          \
  do {                                                                          \
    if (!(cond)) {                                                              \
      if (::kdn::test::UnderCI()) FAIL() << "required under CI=true: " << why;  \
      GTEST_SKIP() << "skipped: " << why;                                       \
    }                                                                           \
  } while (0)

#endif  // KDN_TESTS_TEST_UTIL_H_
