// Every call of the origin interface, against the POSIX-directory backend (Posix/*) and against a
// real Ceph RGW started by scripts/origin-rgw (S3/*, the origin_rgw CTest fixture).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <thread>
#include <filesystem>
#include <map>
#include <random>
#include <set>

#include <gtest/gtest.h>

#include "kdn/origin.h"
#include "origin_test_util.h"

namespace kdn::origin {
namespace {

std::vector<uint8_t> Bytes(size_t n, uint64_t seed) {
  std::vector<uint8_t> v(n);
  std::mt19937_64 rng(seed);
  for (size_t i = 0; i < n; i += 8) {
    uint64_t x = rng();
    std::memcpy(v.data() + i, &x, std::min<size_t>(8, n - i));
  }
  return v;
}

class OriginConformance : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string unique = std::string(info->name()) + "-" + std::to_string(::getpid());
    std::replace(unique.begin(), unique.end(), '/', '-');
    if (GetParam() == "posix") {
      dir_ = std::filesystem::temp_directory_path() / ("kdn-origin-" + unique);
      std::filesystem::create_directories(dir_);
      options_.url = "file://" + dir_.string();
    } else {
      auto env = testing::RgwEnv();
      if (env["KDN_ORIGIN_ENDPOINT"].empty()) {
        if (testing::InCi()) FAIL() << "CI=true: no RGW (the origin_rgw fixture did not start one)";
        GTEST_SKIP() << "no RGW: run `ctest -L origin` (its fixture starts scripts/origin-rgw)";
      }
      options_.url = "s3://" + env["KDN_ORIGIN_BUCKET"] + "/" + unique;
      options_.endpoint = env["KDN_ORIGIN_ENDPOINT"];
      options_.access_key = env["AWS_ACCESS_KEY_ID"];
      options_.secret_key = env["AWS_SECRET_ACCESS_KEY"];
      options_.region = env["AWS_REGION"];
    }
    options_.part_size = 5 << 20;
    options_.multipart_threshold = 5 << 20;
    Open();
  }
  void TearDown() override {
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }
  void Open() {
    auto o = OpenOrigin(options_);
    ASSERT_TRUE(o.ok()) << o.status().ToString();
    origin_ = std::move(*o);
  }

  std::vector<uint8_t> GetAll(const std::string& key, size_t cap) {
    std::vector<uint8_t> out(cap);
    auto n = origin_->Get(key, 0, out);
    EXPECT_TRUE(n.ok()) << n.status().ToString();
    out.resize(n.ok() ? *n : 0);
    return out;
  }

  OriginOptions options_;
  std::filesystem::path dir_;
  std::unique_ptr<Origin> origin_;
};

TEST_P(OriginConformance, PutGetHeadRanges) {
  auto data = Bytes(100'000, 1);
  ASSERT_TRUE(origin_->Put("chunks/abc", data).ok());
  EXPECT_EQ(GetAll("chunks/abc", 200'000), data);  // a larger buffer gets the object's size

  std::vector<uint8_t> part(5000);
  auto n = origin_->Get("chunks/abc", 12345, part);
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(*n, 5000u);
  EXPECT_TRUE(std::equal(part.begin(), part.end(), data.begin() + 12345));

  n = origin_->Get("chunks/abc", 99'000, part);  // runs past the end
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 1000u);
  EXPECT_TRUE(std::equal(part.begin(), part.begin() + 1000, data.begin() + 99'000));
  n = origin_->Get("chunks/abc", 100'000, part);  // at the end
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(*n, 0u);

  auto h = origin_->Head("chunks/abc");
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_EQ(h->size, data.size());
  EXPECT_FALSE(h->etag.empty());

  // Objects are replaced whole.
  auto other = Bytes(777, 2);
  ASSERT_TRUE(origin_->Put("chunks/abc", other).ok());
  EXPECT_EQ(GetAll("chunks/abc", 200'000), other);
  auto h2 = origin_->Head("chunks/abc");
  ASSERT_TRUE(h2.ok());
  EXPECT_EQ(h2->size, 777u);

  ASSERT_TRUE(origin_->Put("empty", std::span<const uint8_t>()).ok());
  auto he = origin_->Head("empty");
  ASSERT_TRUE(he.ok()) << he.status().ToString();
  EXPECT_EQ(he->size, 0u);
}

// GetStream hands a range over in order, each piece with its position, without a buffer of the
// range's size; it stops at the object's end, and a sink that refuses the bytes fails the read.
TEST_P(OriginConformance, GetStreamHandsTheRangeInOrder) {
  auto data = Bytes(3'000'000, 7);
  ASSERT_TRUE(origin_->Put("chunks/streamed", data).ok());
  std::vector<uint8_t> got;
  auto sink = [&](uint64_t at, std::span<const uint8_t> bytes) {
    if (at != got.size()) return false;  // in order, no gap, no repeat in a clean read
    got.insert(got.end(), bytes.begin(), bytes.end());
    return true;
  };
  auto n = origin_->GetStream("chunks/streamed", 123'457, 2'500'000, sink);
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(*n, 2'500'000u);
  ASSERT_EQ(got.size(), 2'500'000u);
  EXPECT_TRUE(std::equal(got.begin(), got.end(), data.begin() + 123'457));

  got.clear();
  n = origin_->GetStream("chunks/streamed", 2'999'000, 5000, sink);  // runs past the end
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(*n, 1000u);
  EXPECT_TRUE(std::equal(got.begin(), got.end(), data.begin() + 2'999'000));

  auto refused = origin_->GetStream("chunks/streamed", 0, 1000,
                                    [](uint64_t, std::span<const uint8_t>) { return false; });
  EXPECT_FALSE(refused.ok());
  EXPECT_TRUE(origin_->GetStream("chunks/none", 0, 10, sink).status().IsNotFound());
}

TEST_P(OriginConformance, MissingObjectsAreNotFound) {
  std::vector<uint8_t> buf(10);
  EXPECT_TRUE(origin_->Get("nope", 0, buf).status().IsNotFound());
  EXPECT_TRUE(origin_->Head("nope").status().IsNotFound());
  EXPECT_TRUE(origin_->Delete("nope").ok());  // as S3: deleting nothing succeeds
}

TEST_P(OriginConformance, DeleteRemoves) {
  auto data = Bytes(10, 3);
  ASSERT_TRUE(origin_->Put("ns/dir/file", data).ok());
  ASSERT_TRUE(origin_->Delete("ns/dir/file").ok());
  EXPECT_TRUE(origin_->Head("ns/dir/file").status().IsNotFound());
  auto all = origin_->ListAll("ns/", "/");
  ASSERT_TRUE(all.ok());
  EXPECT_TRUE(all->objects.empty());
  EXPECT_TRUE(all->prefixes.empty());  // no empty "directory" left behind
}

TEST_P(OriginConformance, MultipartFromFileAndBufferAndParallelGet) {
  // 13 MiB + 7 bytes: three parts of 5 MiB, the last one short.
  auto data = Bytes((13 << 20) + 7, 4);
  std::string path = std::filesystem::temp_directory_path() / ("kdn-origin-src-" + std::to_string(::getpid()));
  {
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::write(fd, data.data(), data.size()), static_cast<ssize_t>(data.size()));
    ASSERT_TRUE(origin_->PutFile("chunks/big", fd, data.size()).ok());
    ::close(fd);
    ::unlink(path.c_str());
  }
  auto h = origin_->Head("chunks/big");
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_EQ(h->size, data.size());
  EXPECT_EQ(GetAll("chunks/big", 20 << 20), data);  // ranged GETs in parallel

  std::vector<uint8_t> mid(11 << 20);
  auto n = origin_->Get("chunks/big", 1 << 20, mid);
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  ASSERT_EQ(*n, mid.size());
  EXPECT_TRUE(std::equal(mid.begin(), mid.end(), data.begin() + (1 << 20)));

  auto data2 = Bytes((11 << 20), 5);
  auto s = origin_->Put("chunks/big2", data2);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(GetAll("chunks/big2", 12 << 20), data2);
}

TEST_P(OriginConformance, ListPaginatesAndRollsUpDirectories) {
  std::set<std::string> want;
  auto one = Bytes(3, 6);
  for (int i = 0; i < 23; ++i) {
    std::string k = "list/f" + std::to_string(100 + i);
    ASSERT_TRUE(origin_->Put(k, one).ok());
    want.insert(k);
  }
  ASSERT_TRUE(origin_->Put("list/sub/a", one).ok());
  ASSERT_TRUE(origin_->Put("list/sub/deeper/b", one).ok());
  ASSERT_TRUE(origin_->Put("listx", one).ok());
  ASSERT_TRUE(origin_->Put("other/z", one).ok());

  // Pages of 7: every key exactly once, in order.
  std::vector<std::string> got, got_prefixes;
  std::string token;
  int pages = 0;
  do {
    auto page = origin_->List("list/", "/", token, 7);
    ASSERT_TRUE(page.ok()) << page.status().ToString();
    for (auto& o : page->objects) got.push_back(o.key);
    for (auto& p : page->prefixes) got_prefixes.push_back(p);
    token = page->next_token;
    ASSERT_LT(++pages, 10);
  } while (!token.empty());
  EXPECT_GE(pages, 4);
  EXPECT_TRUE(std::is_sorted(got.begin(), got.end()));
  EXPECT_EQ(std::set<std::string>(got.begin(), got.end()), want);
  EXPECT_EQ(got.size(), want.size());
  EXPECT_EQ(got_prefixes, std::vector<std::string>{"list/sub/"});

  // Without a delimiter: every key under the prefix, at any depth; prefixes are string prefixes.
  auto all = origin_->ListAll("list", "");
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->objects.size(), 23u + 3u);
  EXPECT_TRUE(all->prefixes.empty());
  // Each object's write time (what the collector of unnamed chunks ages them by): just now, give
  // or take the clocks of the machines involved.
  const int64_t now_s = static_cast<int64_t>(std::time(nullptr));
  for (auto& o : all->objects) {
    EXPECT_EQ(o.size, 3u);
    EXPECT_LE(std::abs(o.mtime_s - now_s), 300) << o.key << " written at " << o.mtime_s;
  }
  auto top = origin_->ListAll("", "/");
  ASSERT_TRUE(top.ok());
  EXPECT_EQ(top->prefixes, (std::vector<std::string>{"list/", "other/"}));
  ASSERT_EQ(top->objects.size(), 1u);
  EXPECT_EQ(top->objects[0].key, "listx");
}

// More keys than one S3 page holds (1000): ListAll follows the continuation token.
TEST_P(OriginConformance, ListAllPastOneThousandKeys) {
  auto one = Bytes(1, 9);
  // From 8 threads at once: an Origin is shared by every thread of a node.
  std::atomic<int> next{0}, failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i; (i = next++) < 1003;) {
        char k[32];
        std::snprintf(k, sizeof k, "many/%04d", i);
        if (!origin_->Put(k, one).ok()) ++failed;
      }
    });
  }
  for (auto& t : threads) t.join();
  ASSERT_EQ(failed.load(), 0);
  auto all = origin_->ListAll("many/", "/");
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  ASSERT_EQ(all->objects.size(), 1003u);
  for (int i = 0; i < 1003; ++i) {
    char k[32];
    std::snprintf(k, sizeof k, "many/%04d", i);
    EXPECT_EQ(all->objects[static_cast<size_t>(i)].key, k);
  }
  auto first = origin_->List("many/", "", "");
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->objects.size(), 1000u);
  EXPECT_FALSE(first->next_token.empty());
}

TEST_P(OriginConformance, KeysThatNeedPercentEncoding) {
  const std::vector<std::string> keys = {"enc/a b+c", "enc/%41&x=y?z#w", "enc/caf\xc3\xa9~!*'()",
                                         "enc/semi;colon:comma,at@dollar$"};
  for (size_t i = 0; i < keys.size(); ++i) {
    auto data = Bytes(100 + i, 7 + i);
    auto s = origin_->Put(keys[i], data);
    ASSERT_TRUE(s.ok()) << keys[i] << ": " << s.ToString();
    EXPECT_EQ(GetAll(keys[i], 1000), data) << keys[i];
  }
  auto all = origin_->ListAll("enc/", "/");
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  std::set<std::string> got;
  for (auto& o : all->objects) got.insert(o.key);
  EXPECT_EQ(got, std::set<std::string>(keys.begin(), keys.end()));
  // A listing whose prefix needs encoding, too.
  auto one = origin_->ListAll("enc/a b", "");
  ASSERT_TRUE(one.ok()) << one.status().ToString();
  ASSERT_EQ(one->objects.size(), 1u);
  EXPECT_EQ(one->objects[0].key, "enc/a b+c");
}

// Touch makes an object's write time now, keeping its bytes: how an edge keeps an old chunk it is
// about to name from the collector of unnamed chunks. HEAD and List both tell the new time.
TEST_P(OriginConformance, TouchRenewsTheWriteTimeAndKeepsTheBytes) {
  auto small = Bytes(70'000, 11), big = Bytes((11 << 20) + 3, 12);  // big: a multipart object
  ASSERT_TRUE(origin_->Put("chunks/small", small).ok());
  ASSERT_TRUE(origin_->Put("chunks/big", big).ok());
  const int64_t written_s = static_cast<int64_t>(std::time(nullptr));
  std::map<std::string, int64_t> before;
  for (const std::string key : {"chunks/small", "chunks/big"}) {
    if (GetParam() == "posix") {
      // Two hours ago, as the collector would find a chunk that lost its name long since.
      const struct timespec old[2] = {{written_s - 7200, 0}, {written_s - 7200, 0}};
      ASSERT_EQ(::utimensat(AT_FDCWD, (dir_ / key).c_str(), old, 0), 0) << std::strerror(errno);
    }
    auto h = origin_->Head(key);
    ASSERT_TRUE(h.ok()) << h.status().ToString();
    EXPECT_GT(h->mtime_s, 0) << key << ": a HEAD tells the write time";
    before[key] = h->mtime_s;
  }
  if (GetParam() == "posix") {
    EXPECT_EQ(before["chunks/small"], written_s - 7200);
  } else {
    EXPECT_LE(std::abs(before["chunks/small"] - written_s), 300);  // the RGW's clock is this one
    // S3's times are in whole seconds: past the next one, a new write time shows.
    std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  }
  for (const std::string key : {"chunks/small", "chunks/big"}) {
    Status s = origin_->Touch(key);
    ASSERT_TRUE(s.ok()) << key << ": " << s.ToString();
    auto h = origin_->Head(key);
    ASSERT_TRUE(h.ok()) << h.status().ToString();
    EXPECT_GT(h->mtime_s, before[key]) << key;
    EXPECT_LE(std::abs(h->mtime_s - static_cast<int64_t>(std::time(nullptr))), 300) << key;
    EXPECT_EQ(h->size, key == "chunks/big" ? big.size() : small.size());
  }
  EXPECT_EQ(GetAll("chunks/small", 100'000), small);
  EXPECT_EQ(GetAll("chunks/big", 12 << 20), big);
  auto listed = origin_->ListAll("chunks/", "");
  ASSERT_TRUE(listed.ok()) << listed.status().ToString();
  ASSERT_EQ(listed->objects.size(), 2u);
  for (const auto& o : listed->objects) EXPECT_GT(o.mtime_s, before[o.key]) << o.key;
  EXPECT_TRUE(origin_->Touch("chunks/none").IsNotFound());
  EXPECT_EQ(origin_->Touch("../up").code(), Code::kInvalidArgument);
}

TEST_P(OriginConformance, BadKeysAreRefused) {
  auto one = Bytes(1, 8);
  for (const std::string& k : std::vector<std::string>{"", "/abs", "a//b", "../up", "a/./b", "a/..", "x/.kdn-tmp.1", std::string(1025, 'k')}) {
    EXPECT_EQ(origin_->Put(k, one).code(), Code::kInvalidArgument) << k;
  }
}

INSTANTIATE_TEST_SUITE_P(Posix, OriginConformance, ::testing::Values("posix"));
INSTANTIATE_TEST_SUITE_P(S3, OriginConformance, ::testing::Values("s3"));

}  // namespace
}  // namespace kdn::origin
