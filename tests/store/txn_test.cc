// The transaction layer on its own (store/txn.h): a store::TxnLog with no chunk store and no
// namespace, only the TxnHooks a test registers. What it guarantees through that interface: the
// files of deleted chunks go only once their transaction is durable (at once without durability,
// where nothing is synced); a change that fails leaves nothing, and concurrent changes grouped
// with it stand; a chunk whose data cannot be synced is never installed, and every later change is
// refused until the log is opened again; changes with lock_opens run with the opens lock held.
#include <gtest/gtest.h>

#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "store/chunk_store.h"  // PreparedChunk: the layer only hands it to the hooks
#include "store/txn.h"
#include "test_util.h"

namespace kdn::store {
namespace {

constexpr uint32_t kNever = 3600 * 1000;  // no background log sync during a test

// What the hooks were asked to do.
struct Calls {
  std::mutex mu;
  std::vector<std::vector<ChunkId>> removed;  // one entry per remove_files call
  std::vector<bool> rechecked;                // whether that call was given the writer
  int synced = 0;
  int installed = 0;
  int applied = 0;
  Status sync_result;  // what sync_data answers
};

TxnHooks HooksFor(Calls& calls, TxnLog& log) {
  TxnHooks hooks;
  hooks.sync_data = [&calls, &log](PreparedChunk&) {
    std::lock_guard lock(calls.mu);
    ++calls.synced;
    // As the chunk store does: bytes that may be lost make every later change fail.
    if (!calls.sync_result.ok()) log.SetBackgroundError(calls.sync_result);
    return calls.sync_result;
  };
  hooks.install = [&calls](const std::vector<PreparedChunk*>& chunks,
                           std::vector<Status>* results) {
    std::lock_guard lock(calls.mu);
    calls.installed += static_cast<int>(chunks.size());
    for (Status& s : *results) s = Status::OK();
  };
  hooks.settle = [](Db&, const std::vector<const TxnEffects*>& committed,
                    const std::vector<PreparedChunk*>&) {
    std::vector<ChunkId> doomed;
    for (const TxnEffects* fx : committed) {
      doomed.insert(doomed.end(), fx->deleted_chunks.begin(), fx->deleted_chunks.end());
    }
    return doomed;
  };
  hooks.remove_files = [&calls](const std::vector<ChunkId>& chunks, Db* recheck) {
    std::lock_guard lock(calls.mu);
    calls.removed.push_back(chunks);
    calls.rechecked.push_back(recheck != nullptr);
  };
  hooks.ride_along_due = [] { return false; };
  hooks.ride_along = [](Db&) { return Status::OK(); };
  hooks.apply = [&calls](TxnEffects&) {
    std::lock_guard lock(calls.mu);
    ++calls.applied;
  };
  return hooks;
}

TxnLog::Options OptionsFor(const test::TempDir& dir, bool sync_full, std::mutex* opens = nullptr) {
  TxnLog::Options o;
  o.dir = dir.str();
  o.sync_full = sync_full;
  o.log_sync_interval_ms = kNever;
  o.opens_mu = opens;
  return o;
}

// Opens `log` on `options` with hooks that record into `calls` (`create`: a new database).
Status OpenRecorded(TxnLog& log, Calls& calls, const TxnLog::Options& options, bool create = true) {
  log.SetHooks(HooksFor(calls, log));
  return log.Open(options, create);
}

Status CreateTable(TxnLog& log) {
  return log.Write(
      false, [](Db& db, TxnEffects&) { return db.Exec("CREATE TABLE t (x INTEGER PRIMARY KEY)"); });
}

Status Insert(TxnLog& log, int x, bool fail_after = false) {
  return log.Write(false, [x, fail_after](Db& db, TxnEffects&) -> Status {
    KDN_ASSIGN_OR_RETURN(Stmt q, db.Prepare("INSERT INTO t (x) VALUES (?)"));
    q.BindInt(1, x);
    KDN_RETURN_IF_ERROR(q.Run());
    return fail_after ? Status::InvalidArgument("refused after the insert") : Status::OK();
  });
}

int64_t Rows(TxnLog& log) {
  std::lock_guard lock(log.mu());
  auto q = log.writer().Prepare("SELECT count(*) FROM t");
  EXPECT_TRUE(q.ok()) << q.status().ToString();
  if (!q.ok()) return -1;
  auto row = q->Step();
  EXPECT_TRUE(row.ok() && *row);
  return q->Int(0);
}

ChunkId SomeChunk() {
  auto id = ChunkId::FromHex(std::string(64, 'a'));
  EXPECT_TRUE(id.ok());
  return id.ok() ? *id : ChunkId{};
}

TEST(TxnLog, ADeletedChunksFilesGoOnlyOnceTheTransactionIsDurable) {
  test::TempDir dir("kdn-txn");
  TxnLog log;
  Calls calls;
  ASSERT_TRUE(OpenRecorded(log, calls, OptionsFor(dir, true)).ok());
  const ChunkId id = SomeChunk();
  ASSERT_TRUE(log.Write(false,
                        [&](Db&, TxnEffects& fx) {
                          fx.deleted_chunks.push_back(id);
                          return Status::OK();
                        })
                  .ok());
  EXPECT_EQ(calls.applied, 1);
  EXPECT_TRUE(calls.removed.empty()) << "removed before the deletion was durable";
  EXPECT_EQ(log.unsynced(), 1u);

  ASSERT_TRUE(log.SyncAll().ok());
  EXPECT_EQ(log.unsynced(), 0u);
  EXPECT_EQ(log.log_syncs(), 1u);
  ASSERT_EQ(calls.removed.size(), 1u);
  EXPECT_EQ(calls.removed[0], std::vector<ChunkId>{id});
  // Stored again since? Only the chunk store can say: it is given the writer to look.
  EXPECT_TRUE(calls.rechecked[0]);
}

TEST(TxnLog, WithoutDurabilityTheFilesGoAtCommit) {
  test::TempDir dir("kdn-txn");
  TxnLog log;
  Calls calls;
  ASSERT_TRUE(OpenRecorded(log, calls, OptionsFor(dir, false)).ok());
  const ChunkId id = SomeChunk();
  ASSERT_TRUE(log.Write(false,
                        [&](Db&, TxnEffects& fx) {
                          fx.deleted_chunks.push_back(id);
                          return Status::OK();
                        })
                  .ok());
  ASSERT_EQ(calls.removed.size(), 1u);
  EXPECT_EQ(calls.removed[0], std::vector<ChunkId>{id});
  EXPECT_FALSE(calls.rechecked[0]);
}

TEST(TxnLog, AFailedChangeLeavesNothingAndConcurrentChangesStand) {
  test::TempDir dir("kdn-txn");
  TxnLog log;
  Calls calls;
  ASSERT_TRUE(OpenRecorded(log, calls, OptionsFor(dir, true)).ok());
  ASSERT_TRUE(CreateTable(log).ok());

  // Alone in its transaction: rolled back whole.
  Status refused = Insert(log, 1, true);
  EXPECT_EQ(refused.code(), Code::kInvalidArgument) << refused.ToString();
  EXPECT_EQ(Rows(log), 0);
  EXPECT_EQ(calls.applied, 1);  // the table's creation only

  // Grouped with others (in savepoints of one transaction): only the failing ones are undone.
  constexpr int kThreads = 8, kEach = 40;
  std::vector<std::thread> threads;
  std::vector<int> ok(kThreads, 0);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        const int x = 100 + t * kEach + i;
        const bool fail = x % 7 == 0;
        Status s = Insert(log, x, fail);
        EXPECT_EQ(s.ok(), !fail) << s.ToString();
        ok[t] += s.ok() ? 1 : 0;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  int committed = 0;
  for (int n : ok) committed += n;
  EXPECT_EQ(Rows(log), committed);
  EXPECT_EQ(calls.applied, 1 + committed);
  EXPECT_TRUE(log.BackgroundError().ok()) << log.BackgroundError().ToString();
}

TEST(TxnLog, AChunkThatCannotBeSyncedIsNeverInstalledAndWritesStopUntilReopened) {
  test::TempDir dir("kdn-txn");
  Calls calls;
  {
    TxnLog log;
    ASSERT_TRUE(OpenRecorded(log, calls, OptionsFor(dir, true)).ok());
    ASSERT_TRUE(CreateTable(log).ok());
    calls.sync_result = Status::IOError("the disk lost the chunk's pages");
    PreparedChunk chunk;
    bool ran = false;
    Status s = log.Write(
        false,
        [&](Db&, TxnEffects&) {
          ran = true;
          return Status::OK();
        },
        &chunk);
    EXPECT_EQ(s.code(), Code::kIOError) << s.ToString();
    EXPECT_FALSE(ran) << "a change ran although its chunk's data was not durable";
    EXPECT_EQ(calls.synced, 1);
    EXPECT_EQ(calls.installed, 0);
    // Sticky: a change without a chunk is refused too.
    Status later = Insert(log, 1);
    EXPECT_FALSE(later.ok());
    EXPECT_NE(later.ToString().find("reopened"), std::string::npos) << later.ToString();
    EXPECT_EQ(Rows(log), 0);
  }
  calls.sync_result = Status::OK();
  TxnLog reopened;
  ASSERT_TRUE(OpenRecorded(reopened, calls, OptionsFor(dir, true), false).ok());
  EXPECT_TRUE(Insert(reopened, 1).ok());
  EXPECT_EQ(Rows(reopened), 1);
}

TEST(TxnLog, ChangesWithLockOpensRunWithTheOpensLockHeld) {
  test::TempDir dir("kdn-txn");
  std::mutex opens;
  TxnLog log;
  Calls calls;
  ASSERT_TRUE(OpenRecorded(log, calls, OptionsFor(dir, true, &opens)).ok());
  auto held_elsewhere = [&] {
    return std::async(std::launch::async,
                      [&] {
                        if (!opens.try_lock()) return true;
                        opens.unlock();
                        return false;
                      })
        .get();
  };
  bool held_with = false, held_without = true;
  ASSERT_TRUE(log.Write(true,
                        [&](Db&, TxnEffects&) {
                          held_with = held_elsewhere();
                          return Status::OK();
                        })
                  .ok());
  ASSERT_TRUE(log.Write(false,
                        [&](Db&, TxnEffects&) {
                          held_without = held_elsewhere();
                          return Status::OK();
                        })
                  .ok());
  EXPECT_TRUE(held_with);
  EXPECT_FALSE(held_without);
}

}  // namespace
}  // namespace kdn::store
