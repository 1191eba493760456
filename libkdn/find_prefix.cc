#include "libkdn/find_prefix.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "libkdn/model_desc.h"
#include "store/format/set_prefix.h"

namespace kdn::libkdn {
namespace {

constexpr long kFuseSuperMagic = 0x65735546;

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

class DirHandle {
 public:
  explicit DirHandle(DIR* d) : d_(d) {}
  ~DirHandle() {
    if (d_ != nullptr) ::closedir(d_);
  }
  DirHandle(const DirHandle&) = delete;
  DirHandle& operator=(const DirHandle&) = delete;
  DIR* get() const { return d_; }

 private:
  DIR* d_;
};

Status ReadFull(int fd, uint64_t offset, std::span<std::byte> out) {
  size_t done = 0;
  while (done < out.size()) {
    ssize_t n =
        ::pread(fd, out.data() + done, out.size() - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::FromErrno("reading a candidate's header", errno);
    if (n == 0) return Status::Corruption("candidate shorter than its header");
    done += static_cast<size_t>(n);
  }
  return Status::OK();
}

// What is asked: the model, the prompt, and the prompt's prefix lengths at the hash boundaries
// (longest last) with their chained hashes.
struct Query {
  const ModelIdentity* model = nullptr;
  std::span<const uint32_t> tokens;
  uint32_t chunk_tokens = 0;
  std::vector<Hash128> chain;  // chain[i] covers lengths[i] tokens
  std::vector<uint32_t> lengths;
  std::vector<uint32_t> trusted;  // uids
};

// The longest prompt prefix the open file `fd` holds, checked on the file itself (see the top of
// find_prefix.h); 0 when it holds none or must not be used.
uint32_t PrefixHeld(const Query& q, int fd) {
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) return 0;
  if (std::find(q.trusted.begin(), q.trusted.end(), st.st_uid) == q.trusted.end()) return 0;
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  std::byte fixed[kKvFixedHeaderBytes];
  if (size < sizeof fixed || !ReadFull(fd, 0, fixed).ok()) return 0;
  auto header_bytes = KvHeaderBytes(fixed, size);
  if (!header_bytes.ok() || *header_bytes > kMaxPrefixHeaderBytes) return 0;
  std::vector<std::byte> bytes(*header_bytes);
  if (!ReadFull(fd, 0, bytes).ok()) return 0;
  auto h = ParseKvHeader(bytes, size);
  if (!h.ok() || !CompareModel(h->model, *q.model).ok() || h->position_offset != 0 ||
      h->chunk_tokens != q.chunk_tokens) {
    return 0;
  }
  const uint32_t n_file = h->n_tokens;
  for (size_t i = q.lengths.size(); i-- > 0;) {
    const uint32_t m = q.lengths[i];
    // A length the file's own chain ends a link at: a full chunk, or the whole file.
    if (m > n_file || (m % q.chunk_tokens != 0 && m != n_file)) continue;
    if (std::equal(q.tokens.begin(), q.tokens.begin() + m, h->tokens.begin())) return m;
  }
  return 0;
}

bool OnKdnfs(const std::string& set_dir) {
  struct statfs sf;
  if (::statfs(set_dir.c_str(), &sf) != 0 || sf.f_type != kFuseSuperMagic) return false;
  struct stat st;
  const std::string vdir = set_dir + "/" + std::string(kSetPrefixDirName);
  return ::lstat(vdir.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::vector<uint32_t> ListedTrust(const std::string& set_dir) {
  char buf[kMaxTrustBytes + 1];
  ssize_t n = ::getxattr(set_dir.c_str(), std::string(kTrustXattr).c_str(), buf, sizeof buf);
  if (n <= 0) return {};
  auto uids = ParseTrustList(std::string_view(buf, static_cast<size_t>(n)));
  return uids.ok() ? *uids : std::vector<uint32_t>{};
}

Result<PrefixFound> FindOnKdnfs(const std::string& set_dir, const Query& q) {
  const std::string vdir = set_dir + "/" + std::string(kSetPrefixDirName) + "/";
  for (size_t i = q.chain.size(); i-- > 0;) {
    const std::string vpath = vdir + q.chain[i].ToHex();
    Fd fd(::open(vpath.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd.get() < 0) continue;  // no file of the set holds this prefix
    const uint32_t m = PrefixHeld(q, fd.get());
    if (m == 0) continue;
    // The link is "../<name>"; the name is what the engine keeps.
    char target[4096];
    ssize_t n = ::readlink(vpath.c_str(), target, sizeof target - 1);
    if (n <= 3 || std::memcmp(target, "../", 3) != 0) continue;
    std::string name(target + 3, static_cast<size_t>(n) - 3);
    if (name.find('/') != std::string::npos || name == "." || name == "..") continue;
    return PrefixFound{set_dir + "/" + name, m};
  }
  return Status::NotFound("no cached prefix of the prompt in " + set_dir);
}

Result<PrefixFound> ScanDirectory(const std::string& set_dir, const Query& q) {
  DirHandle dir(::opendir(set_dir.c_str()));
  if (dir.get() == nullptr) return Status::FromErrno("opening " + set_dir, errno);
  PrefixFound best;
  while (dirent* e = ::readdir(dir.get())) {
    std::string_view name = e->d_name;
    if (!name.ends_with(".kv") || name.size() <= 3) continue;
    // O_NOFOLLOW: a symlink in the set is not a file of the set. O_NONBLOCK: a fifo named x.kv
    // must not hang the engine (fstat then refuses it).
    Fd fd(::openat(::dirfd(dir.get()), e->d_name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK));
    if (fd.get() < 0) continue;
    const uint32_t m = PrefixHeld(q, fd.get());
    // Longest first; among equals the first name in byte order, so the answer is stable.
    if (m > best.n_tokens ||
        (m != 0 && m == best.n_tokens && set_dir + "/" + std::string(name) < best.path)) {
      best = PrefixFound{set_dir + "/" + std::string(name), m};
    }
  }
  if (best.n_tokens == 0) return Status::NotFound("no cached prefix of the prompt in " + set_dir);
  return best;
}

}  // namespace

Result<PrefixFound> FindPrefix(const std::string& set_dir, const ModelIdentity& model,
                               std::span<const uint32_t> tokens, uint32_t chunk_tokens) {
  if (chunk_tokens == 0) return Status::InvalidArgument("chunk_tokens is 0");
  struct stat st;
  if (::stat(set_dir.c_str(), &st) != 0) return Status::FromErrno(set_dir, errno);
  if (!S_ISDIR(st.st_mode)) return Status::InvalidArgument(set_dir + " is not a directory");
  Query q;
  q.model = &model;
  q.tokens = tokens;
  q.chunk_tokens = chunk_tokens;
  q.chain = PrefixHashes(model.Fingerprint(), tokens, chunk_tokens);
  for (size_t i = 0; i < q.chain.size(); ++i) {
    q.lengths.push_back(
        static_cast<uint32_t>(std::min<uint64_t>(uint64_t{i + 1} * chunk_tokens, tokens.size())));
  }
  const bool kdnfs = OnKdnfs(set_dir);
  q.trusted = TrustedOwners(st.st_uid, kdnfs ? ListedTrust(set_dir) : std::vector<uint32_t>{});
  return kdnfs ? FindOnKdnfs(set_dir, q) : ScanDirectory(set_dir, q);
}

}  // namespace kdn::libkdn
