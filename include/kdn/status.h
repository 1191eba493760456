// Status and Result<T>: how every C++ layer of KDN reports errors.
//
// Errors are values. A function that can fail returns Status (or Result<T> when it also produces a
// value); nothing throws across a layer. A Status carries a code that callers branch on, a message
// for humans that says what and where ("layer 3 V block: checksum mismatch"), and, for errors that
// come from the operating system, the errno so that kdnfs can answer the kernel with it.
//
// One dialect for every layer: an errno becomes a Status through Status::FromErrno (or
// CodeFromErrno) only, so that ENOENT is kNotFound whether the store, kdnfs or the engine library
// saw it, and IsNotFound() means the same everywhere.
#ifndef KDN_STATUS_H_
#define KDN_STATUS_H_

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace kdn {

enum class Code : uint8_t {
  kOk = 0,
  kInvalidArgument,  // the caller asked for something malformed
  kNotFound,
  kAlreadyExists,
  kCorruption,       // bytes at rest fail a structure or checksum check
  kIOError,          // the OS refused or failed an operation (errno says which)
  kNoSpace,          // capacity limit or full disk
  kUnsupported,      // a valid request this build or file version cannot serve
  kModelMismatch,    // KV computed by another model than the one asked for
  kBusy,             // a resource is held by someone else (store lock)
  kPermissionDenied,
  kInternal,         // a broken invariant of our own
  kNoMemory,         // an allocation failed (ENOMEM)
  kDevice,           // an accelerator (CUDA) call failed; the message has the device's error
};

// The code of an errno. The one mapping from errno to Code, used by Status::FromErrno.
inline Code CodeFromErrno(int err) {
  switch (err) {
    case 0: return Code::kInternal;  // "failed with no error": a bug of the caller
    case ENOENT: return Code::kNotFound;
    case EEXIST: return Code::kAlreadyExists;
    case ENOSPC:
    case EDQUOT: return Code::kNoSpace;
    case EACCES:
    case EPERM: return Code::kPermissionDenied;
    case ENOMEM: return Code::kNoMemory;
    case EBUSY: return Code::kBusy;
    case EINVAL: return Code::kInvalidArgument;
    case ENOTSUP: return Code::kUnsupported;  // == EOPNOTSUPP on Linux
    default: return Code::kIOError;
  }
}

inline std::string_view CodeName(Code code) {
  switch (code) {
    case Code::kOk: return "OK";
    case Code::kInvalidArgument: return "Invalid argument";
    case Code::kNotFound: return "Not found";
    case Code::kAlreadyExists: return "Already exists";
    case Code::kCorruption: return "Corruption";
    case Code::kIOError: return "I/O error";
    case Code::kNoSpace: return "No space";
    case Code::kUnsupported: return "Unsupported";
    case Code::kModelMismatch: return "Model mismatch";
    case Code::kBusy: return "Busy";
    case Code::kPermissionDenied: return "Permission denied";
    case Code::kInternal: return "Internal error";
    case Code::kNoMemory: return "Out of memory";
    case Code::kDevice: return "Device error";
  }
  return "Unknown";
}

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK

  static Status OK() { return Status(); }
  static Status InvalidArgument(std::string msg) { return {Code::kInvalidArgument, std::move(msg)}; }
  static Status NotFound(std::string msg) { return {Code::kNotFound, std::move(msg), ENOENT}; }
  static Status AlreadyExists(std::string msg) { return {Code::kAlreadyExists, std::move(msg), EEXIST}; }
  static Status Corruption(std::string msg) { return {Code::kCorruption, std::move(msg), EIO}; }
  // An I/O failure with no errno of its own (a short read, a bad checksum of the device's).
  // Errors that come with an errno are made by FromErrno, which picks their code.
  static Status IOError(std::string msg, int err = EIO) { return {Code::kIOError, std::move(msg), err}; }
  static Status NoSpace(std::string msg) { return {Code::kNoSpace, std::move(msg), ENOSPC}; }
  static Status Unsupported(std::string msg) { return {Code::kUnsupported, std::move(msg), ENOTSUP}; }
  static Status ModelMismatch(std::string msg) { return {Code::kModelMismatch, std::move(msg)}; }
  static Status Busy(std::string msg) { return {Code::kBusy, std::move(msg), EBUSY}; }
  static Status PermissionDenied(std::string msg) {
    return {Code::kPermissionDenied, std::move(msg), EACCES};
  }
  static Status Internal(std::string msg) { return {Code::kInternal, std::move(msg)}; }
  static Status NoMemory(std::string msg) { return {Code::kNoMemory, std::move(msg), ENOMEM}; }
  // A failed accelerator call. Its errno (for kdnfs, which never sees one) is EIO.
  static Status Device(std::string msg) { return {Code::kDevice, std::move(msg), EIO}; }
  // An error from errno, with the message "what: strerror(err)", its code from CodeFromErrno
  // (ENOENT NotFound, ENOSPC NoSpace, ENOMEM NoMemory...), the errno kept for sys_errno().
  static Status FromErrno(std::string_view what, int err) {
    std::string msg = std::string(what) + ": " + std::strerror(err);
    return {CodeFromErrno(err), std::move(msg), err};
  }

  bool ok() const { return rep_ == nullptr; }
  Code code() const { return rep_ ? rep_->code : Code::kOk; }
  const std::string& message() const {
    static const std::string kEmpty;
    return rep_ ? rep_->message : kEmpty;
  }
  // errno to report for this error: the one recorded, else EINVAL for invalid arguments and model
  // mismatches, EIO otherwise; 0 when OK.
  int sys_errno() const {
    if (!rep_) return 0;
    if (rep_->err != 0) return rep_->err;
    return (rep_->code == Code::kInvalidArgument || rep_->code == Code::kModelMismatch) ? EINVAL
                                                                                        : EIO;
  }
  // "Corruption: layer 3 V block: checksum mismatch"
  std::string ToString() const {
    if (!rep_) return "OK";
    return std::string(CodeName(rep_->code)) + ": " + rep_->message;
  }

  // Prefix the message with context: Status::Corruption("bad").WithContext("a.kv") -> "a.kv: bad".
  Status WithContext(std::string_view context) const {
    if (!rep_) return *this;
    return Status(rep_->code, std::string(context) + ": " + rep_->message, rep_->err);
  }

  bool IsNotFound() const { return code() == Code::kNotFound; }
  bool IsCorruption() const { return code() == Code::kCorruption; }
  bool IsNoSpace() const { return code() == Code::kNoSpace; }
  bool IsNoMemory() const { return code() == Code::kNoMemory; }

 private:
  Status(Code code, std::string msg, int err = 0)
      : rep_(std::make_shared<const Rep>(Rep{code, std::move(msg), err})) {}
  struct Rep {
    Code code;
    std::string message;
    int err;
  };
  // Shared and immutable: copying a Status is cheap, and OK is a null pointer (no allocation).
  std::shared_ptr<const Rep> rep_;
};

// A value or the Status that says why there is none.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT(google-explicit-constructor)
  Result(Status status) : v_(std::move(status)) {  // NOLINT(google-explicit-constructor)
    if (std::get<Status>(v_).ok()) v_ = Status::Internal("Result built from an OK Status");
  }

  bool ok() const { return std::holds_alternative<T>(v_); }
  Status status() const { return ok() ? Status::OK() : std::get<Status>(v_); }

  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace kdn

#define KDN_CONCAT_INNER_(a, b) a##b
#define KDN_CONCAT_(a, b) KDN_CONCAT_INNER_(a, b)

// Return the Status of `expr` from the enclosing function when it is not OK.
#define KDN_RETURN_IF_ERROR(expr)               \
  do {                                          \
    ::kdn::Status kdn_status_ = (expr);         \
    if (!kdn_status_.ok()) return kdn_status_;  \
  } while (0)

// `KDN_ASSIGN_OR_RETURN(auto x, F());` declares x from a Result, or returns its Status.
#define KDN_ASSIGN_OR_RETURN(lhs, expr) \
  KDN_ASSIGN_OR_RETURN_IMPL_(KDN_CONCAT_(kdn_result_, __LINE__), lhs, expr)
#define KDN_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                               \
  if (!tmp.ok()) return tmp.status();              \
  lhs = std::move(tmp).value()

#endif  // KDN_STATUS_H_
