// kdn_bench_origin put|get|touch URL KEY FILE: one PutFile of FILE (or one Get of the whole object
// into memory, or one Touch of it: what an edge does instead of uploading an old chunk again)
// through the origin client; prints `origin_<op>_gbps: X` (FILE's bytes / wall time / 1e9).
// Endpoint and keys from KDN_ORIGIN_ENDPOINT and the AWS_* environment (tests/bench/groups/origin).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "kdn/origin.h"

int main(int argc, char** argv) {
  if (argc != 5 || (std::strcmp(argv[1], "put") != 0 && std::strcmp(argv[1], "get") != 0 &&
                    std::strcmp(argv[1], "touch") != 0)) {
    std::fprintf(stderr, "usage: kdn_bench_origin put|get|touch URL KEY FILE\n");
    return 2;
  }
  kdn::origin::OriginOptions o;
  o.url = argv[2];
  if (const char* ep = std::getenv("KDN_ORIGIN_ENDPOINT")) o.endpoint = ep;
  // For trying other shapes of one call against the defaults the edge uses.
  if (const char* mib = std::getenv("KDN_ORIGIN_PART_MIB")) o.part_size = std::strtoull(mib, nullptr, 10) << 20;
  if (const char* n = std::getenv("KDN_ORIGIN_PARALLELISM")) o.parallelism = static_cast<unsigned>(std::atoi(n));
  auto origin = kdn::origin::OpenOrigin(o);
  if (!origin.ok()) {
    std::fprintf(stderr, "%s\n", origin.status().ToString().c_str());
    return 1;
  }
  std::string key = argv[3];
  int fd = ::open(argv[4], O_RDONLY | O_CLOEXEC);
  struct stat st{};
  if (fd < 0 || ::fstat(fd, &st) != 0) {
    std::perror(argv[4]);
    return 1;
  }
  uint64_t size = static_cast<uint64_t>(st.st_size);
  std::vector<uint8_t> buf;
  if (argv[1][0] == 'g') buf.assign(size + 1, 0);  // pages touched before the clock starts
  auto t0 = std::chrono::steady_clock::now();
  kdn::Status s;
  if (argv[1][0] == 'p') {
    s = (*origin)->PutFile(key, fd, size);
  } else if (argv[1][0] == 't') {
    s = (*origin)->Touch(key);
  } else {
    auto n = (*origin)->Get(key, 0, buf);
    s = n.status();
    if (n.ok() && *n != size) s = kdn::Status::IOError("short object");
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ::close(fd);
  if (!s.ok()) {
    std::fprintf(stderr, "%s\n", s.ToString().c_str());
    return 1;
  }
  std::printf("origin_%s_gbps: %.4f\n", argv[1], static_cast<double>(size) / secs / 1e9);
  return 0;
}
