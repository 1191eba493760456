// The crash test's victim: two threads put chunks, release some and commit files in a loop until
// the process is killed (their commits are grouped), reporting each step on a pipe: an intent
// line before an operation, an acknowledgement after it returned success, or "E" when it failed.
//   store_crash_child STORE_DIR BASE_SEED ACK_FD
// Fault injection comes from KDN_FAULT (set by the test).
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "fault/fault_injector.h"
#include "crash_content.h"
#include "kdn/store.h"
#include "store/chunk_id.h"

namespace {

int ack_fd = -1;

void Say(const std::string& line) {
  // One write(2) per line: lines of the two threads never interleave.
  std::string l = line + "\n";
  if (::write(ack_fd, l.data(), l.size()) != static_cast<ssize_t>(l.size())) ::_exit(3);
}

// Any failure the test did not inject ends the process at once (the other thread must not go
// on, and the test must see an exit rather than its own kill).
int Fail(const kdn::Status& s) {
  std::fprintf(stderr, "crash child: %s\n", s.ToString().c_str());
  std::_Exit(2);
}

// With injected I/O failures an operation may fail: it says so and goes on (the test then checks
// that the failed operation left no trace). Without them any failure is a bug.
bool Tolerate(const std::string& intent, const kdn::Status& s) {
  const char* fault = std::getenv("KDN_FAULT");
  if (fault == nullptr || std::string(fault).find("fail_at") == std::string::npos) return false;
  Say("E " + intent);
  std::fprintf(stderr, "crash child: tolerated: %s\n", s.ToString().c_str());
  return true;
}

// One thread's loop. Thread t commits to files t, t+2, t+4, t+6 only, and releases only its own
// puts, so that every intent line names exactly one operation in flight.
int Loop(kdn::Store& store, const std::vector<kdn::Ino>& files, uint64_t base, int t) {
  std::vector<kdn::ChunkId> mine;  // acknowledged puts of this thread, not yet released
  for (uint64_t op = 0;; ++op) {
    const uint64_t seed = (base * 100000 + op) * 2 + static_cast<uint64_t>(t);
    const uint64_t pick = (seed * 0x9e3779b97f4a7c15ull) >> 58;  // 0..63
    const size_t size = kdn::test::CrashSize(seed);
    if (pick < 36) {
      auto bytes = kdn::test::CrashContent(seed, size);
      std::string what = std::to_string(seed) + " " + std::to_string(size) + " " +
                         kdn::store::HashChunk(bytes).ToHex();
      Say("p " + what);
      auto id = store.Put(bytes);
      if (!id.ok() && Tolerate("p " + what, id.status())) continue;
      if (!id.ok()) return Fail(id.status());
      Say("P " + what);
      mine.push_back(*id);
    } else if (pick < 50 && !mine.empty()) {
      const size_t at = seed % mine.size();
      kdn::ChunkId id = mine[at];
      mine.erase(mine.begin() + static_cast<long>(at));
      Say("r " + id.ToHex());
      kdn::Status s = store.Release(id);
      if (!s.ok()) return Fail(s);
      Say("R " + id.ToHex());
    } else {
      const size_t k = 2 * (seed % (files.size() / 2)) + static_cast<size_t>(t);
      std::string what =
          std::to_string(k) + " " + std::to_string(seed) + " " + std::to_string(size);
      std::string staged = store.NewStagingPath();
      FILE* f = std::fopen(staged.c_str(), "wb");
      auto bytes = kdn::test::CrashContent(seed, size);
      if (f == nullptr || std::fwrite(bytes.data(), 1, bytes.size(), f) != bytes.size()) {
        return Fail(kdn::Status::IOError("cannot write " + staged));
      }
      std::fclose(f);
      Say("c " + what);
      auto a = store.CommitFileContent(files[k], staged);
      if (!a.ok() && Tolerate("c " + what, a.status())) {
        ::unlink(staged.c_str());
        continue;
      }
      if (!a.ok()) return Fail(a.status());
      Say("C " + what);
    }
  }
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
  if (const char* fault = std::getenv("KDN_FAULT"); fault != nullptr && *fault != '\0') {
    auto plan = kdn::io::ParseFaultPlan(fault);
    if (!plan.ok()) return Fail(plan.status());
    kdn::io::SetFaultPlan(*plan);
    options.io_wrapper = kdn::io::FaultInjection();
  }
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

  std::thread other([&] { Loop(store, files, base, 1); });
  Loop(store, files, base, 0);  // runs until the process is killed or fails
  other.join();
  return 2;
}
