// Helpers for the origin tests: the RGW that the origin_rgw fixture started, a scratch directory,
// and a tiny scripted HTTP server for fault injection.
#ifndef KDN_TESTS_ORIGIN_TEST_UTIL_H_
#define KDN_TESTS_ORIGIN_TEST_UTIL_H_

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <vector>

namespace kdn::origin::testing {

// Reads the export lines that scripts/origin-rgw wrote into DIR/s3.env (KDN_TEST_RGW_DIR).
inline std::map<std::string, std::string> RgwEnv() {
  std::map<std::string, std::string> env;
  const char* dir = std::getenv("KDN_TEST_RGW_DIR");
  std::ifstream in(std::string(dir ? dir : KDN_TEST_RGW_DIR_DEFAULT) + "/s3.env");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("export ", 0) != 0) continue;
    size_t eq = line.find('=');
    if (eq != std::string::npos) env[line.substr(7, eq - 7)] = line.substr(eq + 1);
  }
  return env;
}

inline bool InCi() {
  const char* ci = std::getenv("CI");
  return ci && std::string(ci) == "true";
}

// Answers each connection with the next scripted response (then the last one again), one
// request per connection ("Connection: close"), and counts requests.
class ScriptedHttpServer {
 public:
  explicit ScriptedHttpServer(std::vector<std::string> responses) : responses_(std::move(responses)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int one = 1;
    ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
    ::listen(fd_, 16);
    socklen_t len = sizeof a;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { Serve(); });
  }
  ~ScriptedHttpServer() {
    stop_ = true;
    ::shutdown(fd_, SHUT_RDWR);
    ::close(fd_);
    thread_.join();
  }
  int port() const { return port_; }
  int requests() const { return requests_.load(); }
  std::string last_request() {
    std::lock_guard l(mu_);
    return last_;
  }

  static std::string Reply(int code, const std::string& body, const std::string& extra = "") {
    return "HTTP/1.1 " + std::to_string(code) + " X\r\nContent-Length: " + std::to_string(body.size()) +
           "\r\nConnection: close\r\n" + extra + "\r\n" + body;
  }

 private:
  void Serve() {
    while (!stop_) {
      int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) return;
      std::string req;
      char buf[4096];
      size_t body_needed = std::string::npos;
      for (;;) {
        ssize_t n = ::recv(c, buf, sizeof buf, 0);
        if (n <= 0) break;
        req.append(buf, static_cast<size_t>(n));
        size_t hdr_end = req.find("\r\n\r\n");
        if (hdr_end == std::string::npos) continue;
        if (body_needed == std::string::npos) {
          body_needed = 0;
          size_t cl = req.find("Content-Length: ");
          if (cl != std::string::npos && cl < hdr_end) body_needed = std::stoul(req.substr(cl + 16));
        }
        if (req.size() >= hdr_end + 4 + body_needed) break;
      }
      int i = requests_.fetch_add(1);
      {
        std::lock_guard l(mu_);
        last_ = req;
      }
      const std::string& r = responses_[std::min<size_t>(i, responses_.size() - 1)];
      ssize_t sent = ::send(c, r.data(), r.size(), MSG_NOSIGNAL);
      (void)sent;
      ::close(c);
    }
  }

  std::vector<std::string> responses_;
  int fd_ = -1, port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> requests_{0};
  std::mutex mu_;
  std::string last_;
  std::thread thread_;
};

}  // namespace kdn::origin::testing

#endif  // KDN_TESTS_ORIGIN_TEST_UTIL_H_
