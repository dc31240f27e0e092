#pragma once
// A one-file HTTP/1.0 server on 127.0.0.1 for download tests. Serves one body at one path on
// an ephemeral port, or misbehaves as a hostile or broken server would (Mode). Bounded: it stops
// after `max_requests` connections or when destroyed, and a slow body ends after 30 s.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>

namespace nl::test {

class LocalHttpServer {
 public:
  enum class Mode {
    Normal,
    Truncate,      // claims the full Content-Length, sends half
    RedirectLoop,  // 302 to its own URL, forever
    Slow,          // 20 bytes a second
    NoLength,      // no Content-Length: the size is known only while it streams
  };
  LocalHttpServer(std::string path, std::string body, Mode mode = Mode::Normal, int max_requests = 16)
      : path_(std::move(path)), body_(std::move(body)), mode_(mode) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    socklen_t len = sizeof addr;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    ::listen(fd_, 4);
    thread_ = std::thread([this, max_requests] {
      for (int i = 0; i < max_requests && !stop_; ++i) {
        int c = ::accept(fd_, nullptr, nullptr);
        if (c < 0) break;
        serve(c);
        ::close(c);
      }
    });
  }

  ~LocalHttpServer() {
    stop_ = true;
    ::shutdown(fd_, SHUT_RDWR);
    ::close(fd_);
    thread_.join();
  }

  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_) + path_; }

  // A URL on a port where nothing listens.
  static std::string unreachable_url() {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    socklen_t len = sizeof addr;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    int port = ntohs(addr.sin_port);
    ::close(fd);
    return "http://127.0.0.1:" + std::to_string(port) + "/cifar-10-binary.tar.gz";
  }

 private:
  void serve(int c) {
    char buf[4096];
    std::string req;
    while (req.find("\r\n\r\n") == std::string::npos) {
      ssize_t n = ::recv(c, buf, sizeof buf, 0);
      if (n <= 0) return;
      req.append(buf, static_cast<size_t>(n));
    }
    const std::string target = req.substr(4, req.find(' ', 4) - 4);
    std::string resp;
    if (target != path_) {
      resp = "HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n";
    } else if (mode_ == Mode::RedirectLoop) {
      resp = "HTTP/1.0 302 Found\r\nLocation: " + url() + "\r\nContent-Length: 0\r\n\r\n";
    } else if (mode_ == Mode::Slow) {
      const std::string head =
          "HTTP/1.0 200 OK\r\nContent-Length: " + std::to_string(body_.size()) + "\r\n\r\n";
      if (::send(c, head.data(), head.size(), MSG_NOSIGNAL) <= 0) return;
      for (size_t i = 0; i < body_.size() && i < 600 && !stop_; ++i) {
        if (::send(c, body_.data() + i, 1, MSG_NOSIGNAL) <= 0) return;
        ::usleep(50000);
      }
      return;
    } else {
      const size_t sent = mode_ == Mode::Truncate ? body_.size() / 2 : body_.size();
      resp = "HTTP/1.0 200 OK\r\nContent-Type: application/gzip\r\n" +
             (mode_ == Mode::NoLength ? std::string()
                                      : "Content-Length: " + std::to_string(body_.size()) + "\r\n") +
             "\r\n" + body_.substr(0, sent);
    }
    size_t off = 0;
    while (off < resp.size()) {
      ssize_t n = ::send(c, resp.data() + off, resp.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return;
      off += static_cast<size_t>(n);
    }
  }

  std::string path_, body_;
  Mode mode_;
  int fd_ = -1, port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace nl::test
