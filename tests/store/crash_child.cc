// The crash test's victim: puts chunks, releases some and commits files in a loop until it is
// killed, reporting each step on a pipe: an intent line before an operation, an acknowledgement
// after it returned success.
//   store_crash_child STORE_DIR BASE_SEED ACK_FD
// Fault injection comes from KDN_FAULT (set by the test).
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "crash_content.h"
#include "kdn/store.h"
#include "store/chunk_id.h"

namespace {

int ack_fd = -1;

void Say(const std::string& line) {
  std::string l = line + "\n";
  if (::write(ack_fd, l.data(), l.size()) != static_cast<ssize_t>(l.size())) ::_exit(3);
}

int Fail(const kdn::Status& s) {
  std::fprintf(stderr, "crash child: %s\n", s.ToString().c_str());
  return 2;
}

// With injected I/O failures an operation may fail: it says so and goes on (the test then checks
// that the failed operation left no trace). Without them any failure is a bug.
bool Tolerate(const kdn::Status& s) {
  const char* fault = std::getenv("KDN_FAULT");
  if (fault == nullptr || std::string(fault).find("fail_at") == std::string::npos) return false;
  Say("E " + s.ToString());
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: store_crash_child STORE_DIR BASE_SEED ACK_FD\n");
    return 2;
  }
  const std::string dir = argv[1];
  const uint64_t base = std::strtoull(argv[2], nullptr, 10);
  ack_fd = std::atoi(argv[3]);
  kdn::StoreOptions options;
  options.segment_bytes = 2u << 20;  // small segments: chunks span them, segments get created
  auto opened = kdn::Store::Open(dir, options);
  if (!opened.ok()) return Fail(opened.status());
  kdn::Store& store = **opened;
  Say("O");

  std::vector<kdn::Ino> files;
  for (int k = 0; k < 8; ++k) {
    std::string name = "f" + std::to_string(k);
    auto f = store.Lookup(kdn::kRootIno, name);
    if (!f.ok()) {
      kdn::NewNode n;
      n.mode = S_IFREG | 0644;
      f = store.MakeNode(kdn::kRootIno, name, n);
    }
    if (!f.ok()) return Fail(f.status());
    files.push_back(f->ino);
  }

  std::vector<kdn::ChunkId> mine;  // acknowledged puts of this life, not yet released
  for (uint64_t op = 0;; ++op) {
    const uint64_t seed = base * 100000 + op;
    const uint64_t pick = (seed * 0x9e3779b97f4a7c15ull) >> 58;  // 0..63
    const size_t size = kdn::test::CrashSize(seed);
    if (pick < 36) {
      auto bytes = kdn::test::CrashContent(seed, size);
      std::string what = std::to_string(seed) + " " + std::to_string(size) + " " +
                         kdn::store::IdHex(kdn::store::HashChunk(bytes));
      Say("p " + what);
      auto id = store.Put(bytes);
      if (!id.ok() && Tolerate(id.status())) continue;
      if (!id.ok()) return Fail(id.status());
      Say("P " + what);
      mine.push_back(*id);
    } else if (pick < 50 && !mine.empty()) {
      kdn::ChunkId id = mine[seed % mine.size()];
      mine.erase(mine.begin() + static_cast<long>(seed % mine.size()));
      Say("r " + kdn::store::IdHex(id));
      kdn::Status s = store.Release(id);
      if (!s.ok()) return Fail(s);
      Say("R " + kdn::store::IdHex(id));
    } else {
      const size_t k = seed % files.size();
      std::string what =
          std::to_string(k) + " " + std::to_string(seed) + " " + std::to_string(size);
      std::string staged = store.NewStagingPath();
      FILE* f = std::fopen(staged.c_str(), "wb");
      auto bytes = kdn::test::CrashContent(seed, size);
      if (f == nullptr || std::fwrite(bytes.data(), 1, bytes.size(), f) != bytes.size()) return 2;
      std::fclose(f);
      Say("c " + what);
      auto a = store.CommitFileContent(files[k], staged);
      if (!a.ok() && Tolerate(a.status())) {
        ::unlink(staged.c_str());
        continue;
      }
      if (!a.ok()) return Fail(a.status());
      Say("C " + what);
    }
  }
}
