// kdnfs's filesystem logic: POSIX namespace operations over the chunk store, as plain C++ calls.
//
// The FUSE adapter (fuse_adapter.cc) translates kernel requests into these calls and their results
// into replies; unit tests drive them directly. What the kernel does itself with
// `default_permissions` (mode and owner checks, sticky directories, clearing setuid/setgid bits
// on chown and write) is not repeated here; what it leaves to the filesystem is: owners of new
// nodes (the caller, or the directory's group in a setgid directory, whose subdirectories inherit
// the bit), the control files under /.kdn/, the user.kdn.* attributes, and when content changes.
//
// Content. Committed content is an immutable store chunk. Writes and truncations go to a
// StagedFile per inode (staged_file.h); a close (Flush) by a process that wrote, or an fsync,
// commits it with Store::CommitFileContent, which validates `.kv` content. A refused or failed
// commit fails that close() (EINVAL for an invalid `.kv`, ENOSPC beyond the capacity, checked
// before the bytes are read, ENOMEM when memory runs out), logs why, and drops the staged bytes:
// the name keeps its previous content; a file that had none (a new file) is removed. Staged content
// whose writers are all gone (a truncate(2) without a following close) is committed by CommitIdle;
// the rest at the kernel's last FORGET of the inode and at unmount.
//
// Space and quotas. Staged content holds capacity in the store from the write (or truncate) that
// needs it (Store::ReserveSpace; ENOSPC there, not only at close) until its commit takes it over or
// it is dropped. Quotas count regular files' sizes rounded up to 4 KiB, committed content plus
// what is staged beyond it: a user's files (Options::user_quota_bytes, root exempt) and the files
// named directly in a directory with user.kdn.quota (kdn_xattrs.h). A write, truncate, link or
// rename that would pass one fails with EDQUOT. A chown is not checked; nor are extended
// attributes (they count against the capacity: store.h).
//
// Inode lifetime. The kernel holds references to inodes (lookup counts, FORGET gives them back).
// An inode that loses its last name while the kernel still holds it (an open file, or a cwd) is
// kept open in the store (Store::OpenInode) until the kernel forgets it, so an unlinked file
// stays readable by whoever has it open, as POSIX says.
//
// Every method is thread-safe.
#ifndef KDN_FS_KDNFS_FILESYSTEM_H_
#define KDN_FS_KDNFS_FILESYSTEM_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "base/thread_annotations.h"
#include "fs/edge/origin_reader.h"
#include "fs/edge/uploader.h"
#include "fs/kdnfs/control_files.h"
#include "fs/kdnfs/fs_types.h"
#include "fs/kdnfs/request_outcomes.h"
#include "fs/kdnfs/staged_file.h"
#include "kdn/status.h"
#include "kdn/store.h"

namespace kdn::fs {

// What kdnfs asks of the kernel when names or content change behind its back (eviction, a
// refused commit). The FUSE adapter implements it with fuse_lowlevel_notify_inval_*.
class KernelCache {
 public:
  virtual ~KernelCache() = default;
  // Soon after (queued, so that it can be asked from any request handler without waiting for
  // locks the kernel holds around that request): the kernel forgets the name `name` in `parent`
  // and what it cached of inode `ino` (attributes and pages).
  virtual void ForgetName(Ino parent, const std::string& name, Ino ino) = 0;
  // The kernel forgets the inode's attributes and, with `data`, its cached pages. Returns once
  // done: the next read reaches kdnfs.
  virtual void InvalidateInode(Ino ino, bool data) = 0;
};

// The processes behind FUSE requests, by thread id (what the kernel sends).
class Processes {
 public:
  virtual ~Processes() = default;
  virtual int32_t ThreadGroupOf(int32_t tid) = 0;  // 0 when unknown
  virtual bool Alive(int32_t tid) = 0;
};

// Counters of the filesystem layer (the store keeps its own), shown in /.kdn/stats.
struct FsCounters {
  std::atomic<uint64_t> reads{0};
  std::atomic<uint64_t> read_bytes{0};
  std::atomic<uint64_t> writes{0};
  std::atomic<uint64_t> write_bytes{0};
  std::atomic<uint64_t> commits{0};
  std::atomic<uint64_t> commit_bytes{0};
  std::atomic<uint64_t> refused_kv{0};     // commits refused: invalid `.kv` content
  std::atomic<uint64_t> commit_errors{0};  // commits that failed otherwise (ENOSPC, I/O)
  // Opens of regular files, when FUSE passthrough is on for the connection (passthrough.h).
  std::atomic<bool> passthrough{false};        // the kernel agreed to passthrough
  std::atomic<uint64_t> passthrough_opens{0};  // read by the kernel from a chunk file
  std::atomic<uint64_t> served_opens{0};       // read through kdnfs (cached or direct-io)
  std::atomic<uint64_t> backing_files{0};      // chunk files registered with the kernel now
};

class Filesystem {
 public:
  // The most memory that staged small content holds in all (StagedFile::kMostInMemory each);
  // beyond it, content is staged in files.
  static constexpr uint64_t kStagingMemoryBytes = uint64_t{64} << 20;

  struct Options {
    // How long the kernel may cache names, attributes and absent names. Every change goes
    // through this daemon (eviction is announced with KernelCache), so these can be long.
    double entry_timeout = 86400.0;
    double attr_timeout = 86400.0;
    double negative_timeout = 86400.0;
    // CommitIdle commits staged content untouched this long whose writers have all exited.
    std::chrono::milliseconds idle_commit{1000};
    // -o user_quota: the most bytes the regular files of one user (other than root) may hold,
    // sizes rounded up to 4 KiB; 0: no limit. See Quotas below.
    uint64_t user_quota_bytes = 0;
    // The origin this node is an edge of (docs/origin.md); null: a standalone store. With one,
    // every committed content, unlink and rename is also an outbox note that the uploader
    // (fs/edge/uploader.h) publishes, and fsync waits for the upload.
    std::shared_ptr<origin::Origin> origin;
    edge::UploaderOptions upload;
    // For reads (listings, fetches on a miss): the same origin, with shorter timeouts and fewer
    // retries so that a miss fails quickly when it is down. Null: `origin`.
    std::shared_ptr<origin::Origin> read_origin;
    // A read miss fails (EIO) when no byte of its fetch arrived for this long.
    std::chrono::milliseconds origin_read_timeout{5000};
    // A read miss's fetch: ranged GETs of this size, by this many threads (all fetches share them).
    uint64_t origin_piece_bytes = 8ull << 20;
    unsigned origin_fetch_threads = 4;
    // How long a directory's listing from the origin is believed (edge/origin_reader.h). With
    // an origin, the kernel's entry, attribute and absence caches are capped at it too: names
    // change behind this node's back.
    std::chrono::milliseconds origin_ttl{1000};
  };

  // Opens (or creates) the store in `store_dir`; `store_options.on_evict` is kdnfs's own.
  static Result<std::unique_ptr<Filesystem>> Open(const std::string& store_dir,
                                                  StoreOptions store_options, Options options);
  // Commits whatever is still staged, then closes the store.
  ~Filesystem();
  Filesystem(const Filesystem&) = delete;
  Filesystem& operator=(const Filesystem&) = delete;

  // Both optional; set before the first request. Without Processes, /proc is asked.
  void SetKernelCache(KernelCache* cache) { kernel_cache_ = cache; }
  void SetProcesses(Processes* processes);
  // Optional; set before the first request. Called on the request's thread before a close or
  // fsync waits for staged content (its lock, the disk, the kernel): the FUSE loop answers a
  // close with nothing staged on its receiving thread, and must hand receiving off first.
  void SetBlockingHook(void (*hook)()) { blocking_hook_ = hook; }

  Store& store() { return *store_; }
  const FsCounters& counters() const { return counters_; }
  FsCounters& counters() { return counters_; }
  // Where the FUSE adapter reports every request's outcome (shown in /.kdn/stats); logs to
  // `store_options.info_log`.
  RequestOutcomes& requests() { return *requests_; }

  // ---- names
  // A found name counts one kernel reference to its inode (given back by Forget). A missing name
  // is an Entry with attr.ino == 0, or kNotFound where the kernel must not cache the absence.
  Result<Entry> Lookup(const Caller& caller, Ino parent, std::string_view name);
  void Forget(Ino ino, uint64_t count);
  Result<Attr> GetAttr(Ino ino);
  Result<Attr> SetAttr(const Caller& caller, Ino ino, const SetAttrRequest& request);
  // mknod: regular files, fifos, sockets, devices. `mode` holds type and permission bits, after
  // the umask.
  Result<Entry> MakeNode(const Caller& caller, Ino parent, std::string_view name, uint32_t mode,
                         uint64_t rdev);
  Result<Entry> MakeDir(const Caller& caller, Ino parent, std::string_view name, uint32_t mode);
  Result<Entry> MakeSymlink(const Caller& caller, Ino parent, std::string_view name,
                            std::string_view target);
  // open(O_CREAT): a new regular file, or (without O_EXCL) the existing one, truncated with
  // O_TRUNC.
  Result<Entry> Create(const Caller& caller, Ino parent, std::string_view name, uint32_t mode,
                       int open_flags);
  Result<Entry> Link(const Caller& caller, Ino ino, Ino new_parent, std::string_view new_name);
  Result<std::string> ReadLink(Ino ino);
  Status Unlink(const Caller& caller, Ino parent, std::string_view name);
  Status Rmdir(const Caller& caller, Ino parent, std::string_view name);
  Status Rename(const Caller& caller, Ino parent, std::string_view name, Ino new_parent,
                std::string_view new_name, uint32_t flags);

  // Called for each entry with its name, attributes and the cookie that resumes after it; returns
  // false when the reply is full (the entry is then not taken). With `plus`, each entry taken
  // other than "." and ".." counts a kernel reference (READDIRPLUS).
  using DirFiller =
      std::function<bool(std::string_view name, const Entry& entry, uint64_t next_cookie)>;
  Status ReadDir(Ino dir, uint64_t cookie, bool plus, size_t max_entries, const DirFiller& fill);

  // ---- content
  // What a READ sees of a file whose new content is being written (issue 12, item 5):
  // kLatest is the writer's view (its own bytes, staged or not); kCommitted is everyone else's,
  // the last committed content until the new one commits (a `.kv` refused at close never shows).
  enum class ReadView { kLatest, kCommitted };
  Result<size_t> Read(Ino ino, uint64_t offset, std::span<std::byte> out,
                      ReadView view = ReadView::kLatest);
  Result<size_t> Write(const Caller& caller, Ino ino, uint64_t offset,
                       std::span<const std::byte> data);
  // close(): commits the staged content when `caller` (its thread or its process) wrote it.
  Status Flush(const Caller& caller, Ino ino);
  // Whether `ino` has staged content: a Flush of it may commit (wait for the disk).
  bool HasStaged(Ino ino) { return StagedOf(ino) != nullptr; }
  // Whether a write of `ino` ending at `end` is the first write of a file this daemon just
  // created (nothing changed it since), small enough to be staged in memory: it then asks the
  // store nothing but the space and quotas it takes, and never waits for the disk (the FUSE
  // loop answers it on its receiving thread). A hint: should it be wrong, the write still works.
  bool FirstWriteStaysInMemory(Ino ino, uint64_t end);
  // Whether an origin tier is attached: lookups may then list, and attributes fetch, over the
  // network.
  bool HasOrigin() const { return reader_ != nullptr || uploader_ != nullptr; }
  // The committed content of `ino` when a reader may be served straight from its chunk file:
  // a regular file, not a control file, not empty, nothing staged. Otherwise nullopt.
  std::optional<CommittedContent> CommittedForRead(Ino ino);
  // fsync(), fdatasync() and fsync of a directory: commits the staged content, whoever wrote it,
  // then makes every change that returned before it durable against power loss (Store::Sync).
  Status Fsync(const Caller& caller, Ino ino);
  // Commits staged content left without writers (see Options::idle_commit). Called periodically.
  void CommitIdle();
  // Commits everything staged (unmount).
  void CommitAll();
  size_t staged_count();

  // ---- the rest
  Result<StoreUsage> StatFs();
  // XATTR_CREATE / XATTR_REPLACE in `flags`.
  Result<std::string> GetXattr(const Caller& caller, Ino ino, std::string_view name);
  Status SetXattr(const Caller& caller, Ino ino, std::string_view name, std::string_view value,
                  int flags);
  Result<std::vector<std::string>> ListXattr(const Caller& caller, Ino ino);
  Status RemoveXattr(const Caller& caller, Ino ino, std::string_view name);

  // The text of /.kdn/stats.
  std::string StatsText();
  // The text of /.kdn/metrics (metrics.h).
  std::string MetricsText();

 private:
  struct InodeState {
    uint64_t nlookup = 0;  // kernel references
    bool held = false;     // kept open in the store: unlinked while the kernel held it
    std::shared_ptr<StagedFile> staged;
    // The committed content as last read from the store, so that a READ needs no database
    // query. `generation` counts the changes kdnfs made or heard of: a reader only caches what
    // it read if none happened meanwhile.
    bool content_known = false;
    ChunkId chunk;
    uint64_t size = 0;
    uint64_t generation = 0;
    // A regular file this daemon just made (Create): its attributes as the store made them and
    // the directory it was made in, so that its first write stages it without asking the store
    // for either. Valid while changes_ is still `changes`; taken by the first Stage.
    struct Created {
      InodeAttr attr;
      Ino parent = 0;
      uint64_t changes = 0;
    };
    std::optional<Created> created;
  };
  // A staged file locked exclusively.
  struct StagedLock {
    std::shared_ptr<StagedFile> file;
    std::unique_lock<std::shared_mutex> lock;
  };

  explicit Filesystem(Options options);
  void OnEvicted(const std::vector<EvictedName>& names);

  Entry MakeEntry(const InodeAttr& attr) const;
  // With `epoch_before` (content_epoch_ read before `attr` was read from the store), the size is
  // made fresh with Freshen; without, the inode is new and can have nothing staged.
  Result<Entry> CountedEntry(Result<InodeAttr> attr,
                             std::optional<uint64_t> epoch_before = std::nullopt);
  void CountLookup(Ino ino);
  // Keeps `ino` open in the store if the kernel holds it and it may lose its last name.
  void HoldIfReferenced(Ino ino);
  Result<NewNode> NewNodeFor(const Caller& caller, Ino parent, uint32_t mode);
  // The staged size and times over `attr`; false when nothing is staged, or the staged file was
  // just retired (its commit is in progress).
  bool OverlayStaged(InodeAttr& attr);
  // `attr` was read from the store after content_epoch_ was `epoch_before`. A commit may have
  // published newer content meanwhile, and retired the staged file that had it: then `attr` is
  // older than what an observer may already have seen, and a kernel that took it would move the
  // size back (and append at a stale end). Reads the store again until its answer is known to be
  // at least as new as anything staged or committed before the answer is returned.
  void Freshen(InodeAttr& attr, uint64_t epoch_before);
  std::shared_ptr<StagedFile> StagedOf(Ino ino);
  // The inode's staged file, created (with at most `keep` bytes of the committed content copied)
  // when there is none.
  Result<StagedLock> Stage(Ino ino, uint64_t keep = UINT64_MAX);
  void NoteWriter(StagedFile& file, const Caller& caller);
  // Capacity and quota for staged content that now reaches `end` bytes (file locked
  // exclusively): ENOSPC or EDQUOT when it cannot be had, and nothing is reserved then.
  Status ReserveFor(StagedFile& file, uint64_t end);
  Status Grow(StagedFile& file, uint64_t bytes, bool evict);
  // Waits until a held inode is given back (Forget) or `deadline`; false when none is held or
  // none was given back in time. See ReserveFor.
  bool WaitForHeldRelease(std::chrono::steady_clock::time_point deadline);
  // EDQUOT when `bytes` more of `basis`'s owner or of its quota directories would pass a quota.
  Status CheckQuotas(const StagedFile::QuotaBasis& basis, uint64_t bytes);
  // Net bytes staged beyond committed content, over the staged files `counts` selects.
  int64_t StagedBeyondCommitted(const std::function<bool(const StagedFile::QuotaBasis&)>& counts);
  // EDQUOT when `bytes` more named in `dir` would pass its user.kdn.quota.
  Status CheckSetQuota(Ino dir, uint64_t quota, uint64_t bytes);
  // The user.kdn.quota of `dir` (0: none), cached.
  Result<uint64_t> SetQuotaOf(Ino dir);
  // `parent`: the only directory that names the file, when known (a file just created).
  Result<StagedFile::QuotaBasis> QuotaBasisOf(const InodeAttr& attr, Ino parent = 0);
  // Counts a change that may alter a file's attributes or names (SetAttr, Link, Rename, Unlink)
  // when it goes out of scope, so that InodeState::Created taken before it is not used.
  class AttrChange {
   public:
    explicit AttrChange(std::atomic<uint64_t>& changes) : changes_(changes) {}
    ~AttrChange() { changes_.fetch_add(1); }
    AttrChange(const AttrChange&) = delete;
    AttrChange& operator=(const AttrChange&) = delete;

   private:
    std::atomic<uint64_t>& changes_;
  };
  Status SetQuota(const Caller& caller, Ino ino, const std::string* value, XattrSetMode mode);
  // A link or rename that names `ino` in `dir` anew: EDQUOT when that passes dir's quota.
  Status CheckNewName(Ino ino, Ino dir);
  bool IsWriter(const StagedFile& file, const Caller& caller);
  // Commits (or, on failure, drops) the staged file held in `staged`, which is retired either way.
  Status Commit(Ino ino, StagedLock staged, const char* why);
  // After a staged file was retired: forgets it, gives its store handle back.
  void Unstage(Ino ino, const std::shared_ptr<StagedFile>& file);
  // The committed content of `ino` changed (or may have): forget what was cached of it.
  void ContentChanged(Ino ino);
  Status CheckWritableDir(Ino parent, std::string_view name);
  // The path of `name` in `parent` for an outbox note; empty (no note) without an origin or when
  // the path cannot be had.
  std::string NotePath(Ino parent, std::string_view name);
  // The outbox note for changed metadata of `ino` (mode, owner, mtime, user xattrs): empty
  // without an origin, for anything but a regular file, or while content is staged (its commit
  // publishes everything).
  std::string MetadataNoteFor(Ino ino);

  const Options options_;
  // Before everything that may hold a staged file (they give their memory and slots back here).
  StagingMemory staging_memory_{kStagingMemoryBytes};
  std::unique_ptr<FirstContentSlots> first_content_slots_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<ControlFiles> control_;
  std::atomic<KernelCache*> kernel_cache_{nullptr};
  void (*blocking_hook_)() = nullptr;
  std::unique_ptr<Processes> own_processes_;
  Processes* processes_ = nullptr;
  FsCounters counters_;
  std::unique_ptr<RequestOutcomes> requests_;
  // After store_: stopped before the store closes. Null without an origin.
  std::unique_ptr<edge::Uploader> uploader_;
  std::unique_ptr<edge::OriginReader> reader_;
  // A placeholder of an origin object (edge/origin_reader.h) shows that object's size and times.
  void OverlayRemote(InodeAttr& attr);
  // Before content is staged from the committed one: a placeholder's content is fetched first.
  Status FetchBeforeStaging(Ino ino);

  // Counts every change of committed content (a commit, a refusal, an eviction), bumped under mu_
  // together with the end of the inode's staged file: see Freshen.
  std::atomic<uint64_t> content_epoch_{0};
  // Counts the changes of attributes and names (AttrChange).
  std::atomic<uint64_t> changes_{0};
  // The directory NewNodeFor last read, valid while changes_ is still `changes`.
  struct KnownDir {
    InodeAttr attr;
    uint64_t changes = 0;
  };
  Mutex last_dir_mu_;
  std::optional<KnownDir> last_dir_ KDN_GUARDED_BY(last_dir_mu_);
  // Guards inodes_. Never held while waiting for a StagedFile's mutex (Stage locks a new staged
  // file under it before anyone else can see that file), so a holder of a staged file's mutex may
  // take it (Commit does, to remove a refused new file).
  Mutex mu_;
  std::unordered_map<Ino, InodeState> inodes_ KDN_GUARDED_BY(mu_);
  // Inodes with `held` set, and how many were given back so far: a deleted file's space returns
  // at the kernel's FORGET, which may come after the user's next write (ReserveFor waits for it).
  size_t held_inodes_ KDN_GUARDED_BY(mu_) = 0;
  uint64_t held_releases_ KDN_GUARDED_BY(mu_) = 0;
  std::condition_variable_any held_released_;
  // user.kdn.quota of the directories asked about so far (0: none), set through SetQuota only, so
  // that staging a file costs one query for its parents rather than one more per parent.
  Mutex quota_mu_;
  std::unordered_map<Ino, uint64_t> set_quotas_ KDN_GUARDED_BY(quota_mu_);
};

}  // namespace kdn::fs

#endif  // KDN_FS_KDNFS_FILESYSTEM_H_
