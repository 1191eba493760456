// Crash safety: a child process puts, releases and commits in a loop and is SIGKILLed at random
// moments, with fault injection holding writes in a volatile cache until they are synced (so a
// kill loses exactly the unsynced ones), cutting power at an exact write, or failing writes.
// After each kill: the store opens, fsck is clean, every chunk and file whose operation returned
// success is intact byte for byte, and nothing partial is visible.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <sstream>

#include "crash_content.h"
#include "store/chunk_id.h"
#include "store_test_util.h"

extern char** environ;

namespace kdn {
namespace {

struct ChunkModel {
  uint64_t seed = 0;
  size_t size = 0;
  int64_t refs = 0;  // certain references
  int put_intent = 0;
  int release_intent = 0;
};

struct Content {
  bool set = false;  // false: empty
  uint64_t seed = 0;
  size_t size = 0;
  bool operator==(const Content&) const = default;
};

struct FileModel {
  Content now;
  bool pending = false;
  Content next;
};

struct Model {
  std::map<std::string, ChunkModel> chunks;  // by id hex
  std::map<int, FileModel> files;
};

ChunkId ParseId(const std::string& hex) {
  auto id = ChunkId::FromHex(hex);
  EXPECT_TRUE(id.ok()) << hex;
  return id.ok() ? *id : ChunkId{};
}

std::string ChildPath() {
  return (std::filesystem::read_symlink("/proc/self/exe").parent_path() / "store_crash_child")
      .string();
}

// Runs the child until it dies or `kill_after` passes (then SIGKILL). Returns how it ended and
// fills `lines` with everything it reported.
struct ChildEnd {
  bool killed = false;
  int exit_code = -1;
};

ChildEnd RunChild(const std::string& dir, uint64_t seed, const std::string& fault,
                  std::chrono::milliseconds kill_after, std::vector<std::string>* lines) {
  int fds[2];
  EXPECT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], 3);
  std::string child = ChildPath();
  std::string seed_text = std::to_string(seed);
  std::vector<char*> argv = {child.data(), const_cast<char*>(dir.c_str()), seed_text.data(),
                             const_cast<char*>("3"), nullptr};
  std::vector<std::string> env_store;
  for (char** e = environ; *e != nullptr; ++e) {
    if (std::string_view(*e).rfind("KDN_FAULT=", 0) != 0) env_store.emplace_back(*e);
  }
  if (!fault.empty()) env_store.push_back("KDN_FAULT=" + fault);
  std::vector<char*> envp;
  for (auto& e : env_store) envp.push_back(e.data());
  envp.push_back(nullptr);
  pid_t pid = -1;
  int rc = ::posix_spawn(&pid, child.c_str(), &actions, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  ::close(fds[1]);
  EXPECT_EQ(rc, 0) << "spawning " << child;
  std::string buffer;
  auto deadline = std::chrono::steady_clock::now() + kill_after;
  bool sent_kill = false;
  char chunk[4096];
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    deadline - std::chrono::steady_clock::now())
                    .count();
    if (left <= 0 && !sent_kill) {
      ::kill(pid, SIGKILL);
      sent_kill = true;
    }
    pollfd p{fds[0], POLLIN, 0};
    ::poll(&p, 1, sent_kill ? 1000 : static_cast<int>(std::max<int64_t>(left, 1)));
    if (p.revents & (POLLIN | POLLHUP)) {
      ssize_t n = ::read(fds[0], chunk, sizeof(chunk));
      if (n > 0) {
        buffer.append(chunk, static_cast<size_t>(n));
        continue;
      }
      if (n == 0) break;  // every writer is gone: the child is dead
    }
  }
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  std::istringstream in(buffer);
  for (std::string line; std::getline(in, line);) lines->push_back(line);
  ChildEnd end;
  end.killed = WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
  end.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return end;
}

void Apply(const std::vector<std::string>& lines, Model* m) {
  std::string last_intent;
  for (const std::string& line : lines) {
    std::istringstream in(line);
    std::string tag;
    in >> tag;
    if (tag == "p" || tag == "P") {
      uint64_t seed;
      size_t size;
      std::string hex;
      in >> seed >> size >> hex;
      ChunkModel& c = m->chunks[hex];
      c.seed = seed;
      c.size = size;
      if (tag == "p") {
        c.put_intent = 1;
      } else {
        c.put_intent = 0;
        ++c.refs;
      }
    } else if (tag == "r" || tag == "R") {
      std::string hex;
      in >> hex;
      ChunkModel& c = m->chunks[hex];
      if (tag == "r") {
        c.release_intent = 1;
      } else {
        c.release_intent = 0;
        --c.refs;
      }
    } else if (tag == "c" || tag == "C") {
      int k;
      Content content{true, 0, 0};
      in >> k >> content.seed >> content.size;
      FileModel& f = m->files[k];
      if (tag == "c") {
        f.pending = true;
        f.next = content;
      } else {
        f.pending = false;
        f.now = content;
      }
    }
    if (tag == "E") {
      // The operation failed: it must have left no trace.
      std::string what;
      in >> what;
      if (what == "p") {
        uint64_t seed;
        size_t size;
        std::string hex;
        in >> seed >> size >> hex;
        m->chunks[hex].put_intent = 0;
      } else if (what == "c") {
        int k;
        in >> k;
        m->files[k].pending = false;
      }
    }
  }
}

// Checks the reopened store against the model and resolves the in-flight operations.
void Verify(Store& store, Model* m) {
  for (auto& [hex, c] : m->chunks) {
    const ChunkId cid = ParseId(hex);
    auto info = store.StatChunk(cid);
    const int64_t actual = info.ok() ? info->refs : 0;
    if (!info.ok()) {
      ASSERT_TRUE(info.status().IsNotFound()) << info.status().ToString();
    }
    EXPECT_GE(actual, c.refs - c.release_intent) << hex << " lost a reference";
    EXPECT_LE(actual, c.refs + c.put_intent) << hex << " gained a reference";
    if (c.refs - c.release_intent > 0) {
      std::vector<std::byte> out(c.size);
      auto n = store.Get(cid, 0, out);
      ASSERT_TRUE(n.ok()) << hex << ": " << n.status().ToString();
      EXPECT_EQ(*n, c.size);
      EXPECT_TRUE(out == test::CrashContent(c.seed, c.size)) << hex << ": wrong bytes";
    }
    c.refs = actual;
    c.put_intent = c.release_intent = 0;
  }
  for (auto& [k, f] : m->files) {
    auto attr = store.Lookup(kRootIno, "f" + std::to_string(k));
    Content seen;
    if (attr.ok() && attr->size > 0) {
      std::vector<std::byte> out(attr->size);
      auto n = store.Get(attr->chunk, 0, out);
      ASSERT_TRUE(n.ok()) << "f" << k << ": " << n.status().ToString();
      bool matched = false;
      for (const Content& c : {f.now, f.next}) {
        if (c.set && c.size == attr->size && out == test::CrashContent(c.seed, c.size)) {
          seen = c;
          matched = true;
        }
      }
      ASSERT_TRUE(matched) << "f" << k << " holds content nobody committed";
    }
    EXPECT_TRUE(seen == f.now || (f.pending && seen == f.next))
        << "f" << k << " lost its committed content";
    f.now = seen;
    f.pending = false;
  }
}

TEST(CrashTest, SurvivesRandomKillsWithLostUnsyncedWrites) {
  test::TempDir dir("kdn-crash");
  const std::string store_dir = dir / "store";
  Model model;
  auto rng = test::Rng(20240601);
  int kills = 0, rounds = 0;
  size_t acked = 0;
  const auto started = std::chrono::steady_clock::now();
  for (uint64_t round = 1; round <= 64; ++round) {
    std::string fault;
    switch (round % 4) {
      case 0:
        break;  // a plain kill: what was written reached the disk
      case 1:
        fault = "volatile";
        break;
      case 2:
        fault = "volatile,kill_at_write=" + std::to_string(1 + rng() % 80);
        break;
      case 3:
        fault = "volatile,fail_op=write,fail_errno=" + std::string(rng() % 2 ? "EIO" : "ENOSPC") +
                ",fail_at=" + std::to_string(1 + rng() % 40);
        break;
    }
    std::vector<std::string> lines;
    ChildEnd end =
        RunChild(store_dir, round, fault, std::chrono::milliseconds(20 + rng() % 230), &lines);
    ASSERT_TRUE(end.killed) << "round " << round << " (" << fault << "): child exited with "
                            << end.exit_code << " instead of being killed";
    ++kills;
    ++rounds;
    for (const std::string& l : lines)
      acked += !l.empty() && (l[0] == 'P' || l[0] == 'R' || l[0] == 'C');
    Apply(lines, &model);
    auto store = test::OpenStore(store_dir, StoreOptions{});
    ASSERT_NE(store, nullptr) << "round " << round;
    {
      SCOPED_TRACE("round " + std::to_string(round) + " fault '" + fault + "'");
      test::ExpectClean(*store);
      Verify(*store, &model);
      if (HasFatalFailure() || HasNonfatalFailure()) return;
    }
    // Keep the store small: drop some references ourselves (these are certain).
    for (auto& [hex, c] : model.chunks) {
      if (c.refs > 0 && rng() % 2 == 0) {
        ASSERT_TRUE(store->Release(ParseId(hex)).ok());
        --c.refs;
      }
    }
  }
  EXPECT_GE(kills, 50);
  EXPECT_GE(acked, 100u) << "the child hardly got anything done between kills";
  std::printf(
      "crash test: %d kills in %d rounds, %zu acknowledged operations, %zu chunks "
      "tracked, %.1f s\n",
      kills, rounds, acked, model.chunks.size(),
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
}

}  // namespace
}  // namespace kdn
