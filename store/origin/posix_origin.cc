// The POSIX-directory origin: object `key` is the file DIR/key, so the layout on a shared
// filesystem is the one on S3. A put writes DIR/.../.kdn-tmp.<name>.<random>, fsyncs it, renames it
// over the key and fsyncs the directory: readers on any node see the old object or the new one,
// and a crash leaves at worst a temporary file (never listed; its name is not a valid key).
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <random>
#include <vector>

#include "store/origin/backends.h"

namespace kdn::origin {
namespace {

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  int release() { int f = fd_; fd_ = -1; return f; }
  void reset(int fd) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_;
};

Status WriteAll(int fd, const uint8_t* p, size_t n, const std::string& what) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return Status::FromErrno(what, errno);
    p += w;
    n -= static_cast<size_t>(w);
  }
  return Status::OK();
}

class PosixOrigin final : public Origin {
 public:
  explicit PosixOrigin(std::string dir) : dir_(std::move(dir)) {}

  std::string Describe() const override { return "file://" + dir_; }

  Status Put(std::string_view key, std::span<const uint8_t> data) override {
    return PutWith(key, [&](int fd, const std::string& what) {
      return WriteAll(fd, data.data(), data.size(), what);
    });
  }

  Status PutFile(std::string_view key, int src, uint64_t size) override {
    return PutWith(key, [&](int fd, const std::string& what) -> Status {
      std::vector<uint8_t> buf(std::min<uint64_t>(size, 1u << 20));
      for (uint64_t off = 0; off < size;) {
        size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), size - off));
        ssize_t n = ::pread(src, buf.data(), want, static_cast<off_t>(off));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return Status::FromErrno(what + ": reading the source", errno);
        if (n == 0) return Status::IOError(what + ": source ended before its size");
        KDN_RETURN_IF_ERROR(WriteAll(fd, buf.data(), static_cast<size_t>(n), what));
        off += static_cast<uint64_t>(n);
      }
      return Status::OK();
    });
  }

  Result<uint64_t> Get(std::string_view key, uint64_t offset, std::span<uint8_t> out) override {
    KDN_RETURN_IF_ERROR(CheckKey(key));
    std::string path = Path(key);
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    if (fd.get() < 0) return Status::FromErrno("origin " + path, errno);
    uint64_t got = 0;
    while (got < out.size()) {
      ssize_t n = ::pread(fd.get(), out.data() + got, out.size() - got,
                          static_cast<off_t>(offset + got));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return Status::FromErrno("origin " + path, errno);
      if (n == 0) break;
      got += static_cast<uint64_t>(n);
    }
    return got;
  }

  // Read in windows of 2 MiB, each handed over as it is read: no buffer of the range's size.
  Result<uint64_t> GetStream(std::string_view key, uint64_t offset, uint64_t len,
                             const StreamSink& sink) override {
    KDN_RETURN_IF_ERROR(CheckKey(key));
    std::string path = Path(key);
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    if (fd.get() < 0) return Status::FromErrno("origin " + path, errno);
    thread_local std::vector<uint8_t> window;
    window.resize(std::min<uint64_t>(len, 2u << 20));
    uint64_t got = 0;
    while (got < len) {
      const size_t want = static_cast<size_t>(std::min<uint64_t>(window.size(), len - got));
      ssize_t n = ::pread(fd.get(), window.data(), want, static_cast<off_t>(offset + got));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return Status::FromErrno("origin " + path, errno);
      if (n == 0) break;
      if (!sink(got, std::span<const uint8_t>(window.data(), static_cast<size_t>(n)))) {
        return Status::IOError("origin " + path + ": the bytes could not be kept");
      }
      got += static_cast<uint64_t>(n);
    }
    return got;
  }

  Result<ObjectInfo> Head(std::string_view key) override {
    KDN_RETURN_IF_ERROR(CheckKey(key));
    std::string path = Path(key);
    struct stat st{};
    if (::lstat(path.c_str(), &st) != 0) return Status::FromErrno("origin " + path, errno);
    if (!S_ISREG(st.st_mode)) return Status::NotFound("origin " + path + ": not an object");
    return Info(std::string(key), st);
  }

  Status Touch(std::string_view key) override {
    KDN_RETURN_IF_ERROR(CheckKey(key));
    std::string path = Path(key);
    struct stat st{};
    if (::lstat(path.c_str(), &st) != 0) return Status::FromErrno("origin " + path, errno);
    if (!S_ISREG(st.st_mode)) return Status::NotFound("origin " + path + ": not an object");
    // UTIME_NOW on both times: the mtime is what List and Head report as the write time.
    const struct timespec now[2] = {{0, UTIME_NOW}, {0, UTIME_NOW}};
    if (::utimensat(AT_FDCWD, path.c_str(), now, AT_SYMLINK_NOFOLLOW) != 0) {
      return Status::FromErrno("origin touch " + path, errno);
    }
    return Status::OK();
  }

  Result<ListPage> List(std::string_view prefix, std::string_view delimiter, std::string_view token,
                        unsigned max_keys) override {
    if (max_keys == 0 || max_keys > 1000) max_keys = 1000;
    // A missing prefix lists nothing, but a missing origin directory (the shared filesystem not
    // mounted) is an error, as a missing bucket is on S3: an edge must not take it for "empty".
    struct stat root{};
    if (::stat(dir_.c_str(), &root) != 0) return Status::IOError("origin " + dir_ + ": " + std::strerror(errno));
    if (!S_ISDIR(root.st_mode)) return Status::IOError("origin " + dir_ + ": not a directory");
    // Walk from the deepest directory the prefix names; S3 prefixes are string prefixes, so
    // "ns/a" also matches "ns/ab/c".
    size_t cut = prefix.rfind('/');
    std::string base = cut == std::string_view::npos ? std::string() : std::string(prefix.substr(0, cut + 1));
    if (!base.empty()) KDN_RETURN_IF_ERROR(CheckKey(base.substr(0, base.size() - 1)));
    std::vector<ObjectInfo> objects;
    std::vector<std::string> prefixes;
    KDN_RETURN_IF_ERROR(Walk(base, prefix, delimiter, &objects, &prefixes, 0));
    // One ordered stream of keys and rolled-up prefixes, as S3 pages them.
    struct Entry {
      std::string key;
      int kind;  // 0 object, 1 prefix
      size_t idx;
    };
    std::vector<Entry> entries;
    for (size_t i = 0; i < objects.size(); ++i) entries.push_back({objects[i].key, 0, i});
    for (size_t i = 0; i < prefixes.size(); ++i) entries.push_back({prefixes[i], 1, i});
    std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) { return a.key < b.key; });
    ListPage page;
    size_t n = 0;
    std::string last;
    for (const Entry& e : entries) {
      if (!token.empty() && e.key <= token) continue;
      if (n == max_keys) {
        page.next_token = last;  // S3's tokens are opaque; here it is the last key returned
        break;
      }
      last = e.key;
      if (e.kind == 0) page.objects.push_back(std::move(objects[e.idx]));
      else page.prefixes.push_back(std::move(prefixes[e.idx]));
      ++n;
    }
    return page;
  }

  Status Delete(std::string_view key) override {
    KDN_RETURN_IF_ERROR(CheckKey(key));
    std::string path = Path(key);
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) return Status::FromErrno("origin " + path, errno);
    // Empty directories are not objects: remove them up to the root, as S3 has none.
    std::string k(key);
    for (size_t slash = k.rfind('/'); slash != std::string::npos; slash = k.rfind('/')) {
      k.resize(slash);
      if (::rmdir(Path(k).c_str()) != 0) break;
    }
    return Status::OK();
  }

 private:
  std::string Path(std::string_view key) const { return dir_ + "/" + std::string(key); }

  static ObjectInfo Info(std::string key, const struct stat& st) {
    char etag[64];
    std::snprintf(etag, sizeof etag, "%llx-%llx", static_cast<unsigned long long>(st.st_size),
                  static_cast<unsigned long long>(st.st_mtim.tv_sec) * 1000000000ull +
                      static_cast<unsigned long long>(st.st_mtim.tv_nsec));
    return ObjectInfo{std::move(key), static_cast<uint64_t>(st.st_size), etag,
                      static_cast<int64_t>(st.st_mtim.tv_sec)};
  }

  // Collects keys under directory key `dir` ("" or ending in '/') that start with `prefix`.
  Status Walk(const std::string& dir, std::string_view prefix, std::string_view delimiter,
              std::vector<ObjectInfo>* objects, std::vector<std::string>* prefixes, int depth) {
    if (depth > 64) return Status::InvalidArgument("origin directory tree deeper than 64 levels");
    std::string path = dir.empty() ? dir_ : Path(dir.substr(0, dir.size() - 1));
    Fd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW));
    if (fd.get() < 0) {
      if (errno == ENOENT || errno == ENOTDIR) return Status::OK();
      return Status::FromErrno("origin " + path, errno);
    }
    DIR* d = ::fdopendir(fd.get());
    if (!d) return Status::FromErrno("origin " + path, errno);
    fd.release();
    struct DirCloser {
      DIR* d;
      ~DirCloser() { ::closedir(d); }
    } closer{d};
    std::vector<std::string> subdirs;
    while (struct dirent* e = ::readdir(d)) {
      std::string_view name = e->d_name;
      if (name == "." || name == ".." || name.starts_with(".kdn-tmp")) continue;
      std::string key = dir + std::string(name);
      struct stat st{};
      if (::fstatat(::dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
        if (errno == ENOENT) continue;  // removed while listing
        return Status::FromErrno("origin " + Path(key), errno);
      }
      if (S_ISDIR(st.st_mode)) {
        std::string sub = key + "/";
        // Only directories that can hold matching keys are entered.
        if (!(sub.starts_with(prefix) || prefix.starts_with(sub))) continue;
        if (delimiter == "/" && sub.size() > prefix.size()) {
          prefixes->push_back(std::move(sub));  // rolled up without reading it
        } else {
          subdirs.push_back(std::move(sub));
        }
      } else if (S_ISREG(st.st_mode) && std::string_view(key).starts_with(prefix)) {
        if (!delimiter.empty()) {
          size_t at = key.find(delimiter, prefix.size());
          if (at != std::string::npos) {
            prefixes->push_back(key.substr(0, at + delimiter.size()));
            continue;
          }
        }
        objects->push_back(Info(std::move(key), st));
      }
    }
    for (const std::string& sub : subdirs) {
      KDN_RETURN_IF_ERROR(Walk(sub, prefix, delimiter, objects, prefixes, depth + 1));
    }
    // A delimiter other than '/' may roll several keys into one prefix.
    std::sort(prefixes->begin(), prefixes->end());
    prefixes->erase(std::unique(prefixes->begin(), prefixes->end()), prefixes->end());
    return Status::OK();
  }

  template <typename Fill>
  Status PutWith(std::string_view key, Fill fill) {
    KDN_RETURN_IF_ERROR(CheckKey(key));
    std::string path = Path(key);
    size_t slash = path.rfind('/');
    std::string parent = path.substr(0, slash), name = path.substr(slash + 1);
    thread_local std::mt19937_64 rng{std::random_device{}()};
    char suffix[24];
    std::snprintf(suffix, sizeof suffix, "%016llx", static_cast<unsigned long long>(rng()));
    std::string tmp = parent + "/.kdn-tmp." + suffix;
    // A concurrent Delete may remove an emptied parent between mkdir and open: try again.
    Fd fd;
    for (int attempt = 0; attempt < 5 && fd.get() < 0; ++attempt) {
      KDN_RETURN_IF_ERROR(MakeParents(std::string(key)));
      fd.reset(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
      if (fd.get() < 0 && errno != ENOENT) break;
    }
    if (fd.get() < 0) return Status::FromErrno("origin " + tmp, errno);
    Status s = fill(fd.get(), "origin " + path);
    if (s.ok() && ::fsync(fd.get()) != 0) s = Status::FromErrno("origin fsync " + tmp, errno);
    if (s.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) s = Status::FromErrno("origin rename to " + path, errno);
    if (!s.ok()) {
      ::unlink(tmp.c_str());
      return s;
    }
    Fd dfd(::open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (dfd.get() < 0 || ::fsync(dfd.get()) != 0) return Status::FromErrno("origin fsync " + parent, errno);
    return Status::OK();
  }

  Status MakeParents(const std::string& key) {
    for (size_t slash = key.find('/'); slash != std::string::npos; slash = key.find('/', slash + 1)) {
      std::string p = Path(key.substr(0, slash));
      if (::mkdir(p.c_str(), 0755) != 0 && errno != EEXIST) return Status::FromErrno("origin mkdir " + p, errno);
    }
    return Status::OK();
  }

  const std::string dir_;
};

}  // namespace

Result<std::unique_ptr<Origin>> OpenPosixOrigin(const std::string& dir, const OriginOptions&) {
  return std::unique_ptr<Origin>(new PosixOrigin(dir));
}

}  // namespace kdn::origin
