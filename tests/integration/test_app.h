// A server application for the hand-off tests: a real HTTP server on 127.0.0.1 (port 0) in a thread
// of the test process, that counts every POST bitsd sends it and answers as the test configures.
// It reads what a real application would: the body (by value) or the file named in
// BITS-Request-DataFile-Name (by reference), and it writes the reply body or the reply file.
// Every wait is bounded; the destructor stops the thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace bitsd::testing {

class TestApp {
 public:
  struct Seen {
    std::string target;                          // request-target of the POST
    std::map<std::string, std::string> headers;  // names lower-cased
    std::string content;                         // the upload: the body, or the referenced file
    std::string header(const std::string& lower) const {
      auto it = headers.find(lower);
      return it == headers.end() ? std::string() : it->second;
    }
  };
  enum class Mode {
    Answer,        // status + reply as configured
    NoLength,      // 200 with the reply as a body without Content-Length, then close (read to EOF)
    Garbage,       // a line that is not HTTP, then close
    CloseAtOnce,   // close without answering
    Hold,          // keep the request until release() (or the test ends): a slow application
  };
  struct Behaviour {
    Mode mode = Mode::Answer;
    int status = 200;
    std::string reply;          // by value: the response body; by reference: written to the reply file
    bool writeReplyFile = true; // by reference: write `reply` to BITS-Response-DataFile-Name
    bool copyToDestination = false;
    std::string staticUrl;
  };

  TestApp();
  ~TestApp();
  int port() const { return port_; }
  std::string url(const std::string& path = "/app") const;

  void set(const Behaviour& b);
  // POSTs seen so far (in order).
  std::vector<Seen> seen() const;
  size_t count() const;
  // Number of POSTs that carried BITS-Transaction-Id == txid.
  size_t countFor(const std::string& txid) const;
  // Waits until at least `n` POSTs have arrived (bounded); false on timeout.
  bool waitForPosts(size_t n, int timeoutMs = 10000) const;
  // Hold mode: answers every held request now (with the current behaviour's status and reply).
  void release();

 private:
  void run();
  void serve(int fd);

  int listenFd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::vector<std::thread> workers_;
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  Behaviour behaviour_;
  std::vector<Seen> seen_;
  bool released_ = false;
};

}  // namespace bitsd::testing
