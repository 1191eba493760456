#include "store/origin/credentials.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

namespace kdn::origin {
namespace {

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

}  // namespace

Result<Credentials> ReadCredentialsFile(const std::string& path, const std::string& profile) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) return Status::FromErrno("credentials file " + path, errno);
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st{};
  if (::fstat(fd, &st) != 0) return Status::FromErrno("credentials file " + path, errno);
  if (!S_ISREG(st.st_mode)) return Status::InvalidArgument("credentials file " + path + ": not a file");
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return Status::PermissionDenied("credentials file " + path + " has mode " + mode +
                                    ": group or others may read the secret; chmod 600 it");
  }
  if (st.st_size > 65536) return Status::InvalidArgument("credentials file " + path + ": over 64 KiB");
  std::string text(static_cast<size_t>(st.st_size), '\0');
  size_t got = 0;
  while (got < text.size()) {
    ssize_t n = ::pread(fd, text.data() + got, text.size() - got, static_cast<off_t>(got));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::FromErrno("credentials file " + path, errno);
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  text.resize(got);

  Credentials c;
  bool in_profile = false, found = false;
  std::string_view rest = text;
  while (!rest.empty()) {
    size_t nl = rest.find('\n');
    std::string_view line = Trim(rest.substr(0, nl));
    rest = nl == std::string_view::npos ? std::string_view() : rest.substr(nl + 1);
    if (line.empty() || line[0] == '#' || line[0] == ';') continue;
    if (line.front() == '[' && line.back() == ']') {
      std::string_view name = Trim(line.substr(1, line.size() - 2));
      if (name.starts_with("profile ")) name = Trim(name.substr(8));
      in_profile = name == profile;
      found = found || in_profile;
      continue;
    }
    if (!in_profile) continue;
    size_t eq = line.find('=');
    if (eq == std::string_view::npos) continue;
    std::string_view k = Trim(line.substr(0, eq)), v = Trim(line.substr(eq + 1));
    if (k == "aws_access_key_id") c.access_key = v;
    else if (k == "aws_secret_access_key") c.secret_key = v;
    else if (k == "aws_session_token") c.session_token = v;
  }
  if (!found) return Status::NotFound("credentials file " + path + ": no profile [" + profile + "]");
  if (c.access_key.empty() || c.secret_key.empty()) {
    return Status::InvalidArgument("credentials file " + path + ": profile [" + profile +
                                   "] lacks aws_access_key_id or aws_secret_access_key");
  }
  return c;
}

Result<Credentials> FindCredentials(const OriginOptions& o) {
  if (!o.access_key.empty() || !o.secret_key.empty()) {
    if (o.access_key.empty() || o.secret_key.empty()) {
      return Status::InvalidArgument("S3 credentials: an access key needs its secret key");
    }
    return Credentials{o.access_key, o.secret_key, o.session_token};
  }
  std::string profile = !o.profile.empty() ? o.profile : Env("AWS_PROFILE");
  if (profile.empty()) profile = "default";
  // An explicit file or profile wins over the environment's keys.
  if (o.credentials_file.empty() && o.profile.empty()) {
    std::string ak = Env("AWS_ACCESS_KEY_ID"), sk = Env("AWS_SECRET_ACCESS_KEY");
    if (!ak.empty() && !sk.empty()) return Credentials{ak, sk, Env("AWS_SESSION_TOKEN")};
  }
  std::string path = o.credentials_file;
  if (path.empty()) path = Env("AWS_SHARED_CREDENTIALS_FILE");
  if (path.empty() && !Env("HOME").empty()) path = Env("HOME") + "/.aws/credentials";
  if (path.empty()) {
    return Status::InvalidArgument(
        "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or a credentials file");
  }
  auto c = ReadCredentialsFile(path, profile);
  if (!c.ok() && c.status().IsNotFound() && o.credentials_file.empty()) {
    return Status::InvalidArgument("no S3 credentials: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY unset and " +
                                   c.status().message());
  }
  return c;
}

}  // namespace kdn::origin
