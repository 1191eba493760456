// A small RAII layer over SQLite: connections, cached prepared statements and write transactions.
#ifndef KDN_STORE_SQLITE_DB_H_
#define KDN_STORE_SQLITE_DB_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>

#include "kdn/status.h"
#include "store/chunk_id.h"

struct sqlite3;
struct sqlite3_stmt;

namespace kdn::store {

class Db;

// A prepared statement borrowed from its connection's cache; reset (bindings cleared) when it
// goes out of scope, so the next user finds it fresh.
class Stmt {
 public:
  Stmt(Db* db, sqlite3_stmt* stmt, bool cached) : db_(db), stmt_(stmt), cached_(cached) {}
  ~Stmt();
  Stmt(Stmt&& other) noexcept;
  Stmt& operator=(Stmt&&) = delete;
  Stmt(const Stmt&) = delete;

  template <typename T>
  requires std::is_integral_v<T> Stmt& Bind(int idx, T value) {
    return BindInt(idx, static_cast<int64_t>(value));
  }
  Stmt& BindInt(int idx, int64_t value);
  Stmt& BindText(int idx, std::string_view text);
  Stmt& BindBlob(int idx, std::span<const std::byte> blob);
  Stmt& BindId(int idx, const Hash128& id);  // as its 16-byte key
  Stmt& BindId(int idx, const ChunkId& id);  // as its 32 bytes
  Stmt& BindNull(int idx);

  // Steps once: true when a row is available, false when done.
  Result<bool> Step();
  // Steps to completion (statements without rows), then resets for the next bindings.
  Status Run();
  // Makes the statement ready to run again (bindings stay until rebound).
  void Reset();

  int64_t Int(int col) const;
  uint64_t U64(int col) const { return static_cast<uint64_t>(Int(col)); }
  bool IsNull(int col) const;
  std::string Text(int col) const;
  std::span<const std::byte> Blob(int col) const;  // valid until the next Step or reset
  Hash128 Id(int col) const;                       // zero for NULL or a malformed key
  ChunkId Chunk(int col) const;                    // zero for NULL or a malformed key

 private:
  Db* db_;
  sqlite3_stmt* stmt_;
  bool cached_;
  int bind_rc_ = 0;  // first binding error, reported by Step
};

class Db {
 public:
  enum class Mode { kReadWriteCreate, kReadWrite, kReadOnly };
  static Result<std::unique_ptr<Db>> Open(const std::string& path, Mode mode);
  ~Db();
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;

  // Runs one or more statements that return no rows.
  Status Exec(const std::string& sql);
  // A statement for `sql`, which must be a string with static storage (the cache key is its
  // address). Nested use of the same statement gets a private copy.
  Result<Stmt> Prepare(const char* sql);
  int64_t LastInsertRowid() const;
  int Changes() const;
  sqlite3* handle() const { return db_; }
  // A Status for SQLite result code `rc`, with the connection's message.
  Status Error(int rc, std::string_view what) const;

 private:
  friend class Stmt;
  explicit Db(sqlite3* db) : db_(db) {}
  void Return(sqlite3_stmt* stmt);
  sqlite3* db_;
  struct Cached {
    sqlite3_stmt* stmt;
    bool in_use;
  };
  std::unordered_map<const char*, Cached> cache_;
  std::unordered_map<sqlite3_stmt*, const char*> key_of_;
};

// BEGIN IMMEDIATE; rolled back on destruction unless Commit succeeded.
class WriteTxn {
 public:
  static Result<WriteTxn> Begin(Db& db);
  WriteTxn(WriteTxn&& other) noexcept : db_(other.db_) { other.db_ = nullptr; }
  WriteTxn& operator=(WriteTxn&&) = delete;
  ~WriteTxn();
  Status Commit();

 private:
  explicit WriteTxn(Db* db) : db_(db) {}
  Db* db_;
};

// A consistent snapshot for several reads on a reader connection.
class ReadTxn {
 public:
  static Result<ReadTxn> Begin(Db& db);
  ReadTxn(ReadTxn&& other) noexcept : db_(other.db_) { other.db_ = nullptr; }
  ReadTxn& operator=(ReadTxn&&) = delete;
  ~ReadTxn();

 private:
  explicit ReadTxn(Db* db) : db_(db) {}
  Db* db_;
};

}  // namespace kdn::store

#endif  // KDN_STORE_SQLITE_DB_H_
