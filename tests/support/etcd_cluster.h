// A real etcd cluster for tests (issue 17): 3 members of /usr/bin/etcd (Debian etcd-server) on
// 127.0.0.1, 127.0.0.2 and 127.0.0.3, client and peer ports picked free per cluster, data and logs
// in a temp dir removed afterwards. Members are started in parallel and stopped by PID; waits are
// bounded. Fast elections (heartbeat 50 ms, election timeout 500 ms) keep fault tests short.
//
//   EtcdCluster etcd;
//   if (!EtcdCluster::installed()) GTEST_SKIP() << EtcdCluster::kSkipReason;
//   ASSERT_TRUE(etcd.start()) << etcd.error();
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace bitsd::testing {

class EtcdCluster {
 public:
  static constexpr const char* kBinary = "/usr/bin/etcd";
  static constexpr const char* kSkipReason =
      "etcd is not installed (/usr/bin/etcd; Debian package etcd-server, tools/install-deps installs it)";
  static bool installed();

  explicit EtcdCluster(int members = 3);
  ~EtcdCluster();  // kills every member by PID (SIGKILL), removes the data
  EtcdCluster(const EtcdCluster&) = delete;
  EtcdCluster& operator=(const EtcdCluster&) = delete;

  // Before start(): https on the client ports, member i serving certFiles[i] with keyFiles[i] (peers
  // stay on http).
  void useTls(std::vector<std::string> certFiles, std::vector<std::string> keyFiles);

  // Starts every member at once and waits (at most `waitMs`) until each says healthy.
  bool start(int waitMs = 20000);
  const std::string& error() const { return error_; }

  int size() const { return static_cast<int>(members_.size()); }
  std::vector<std::string> clientUrls() const;
  std::string clientUrl(int i) const;
  pid_t pid(int i) const { return members_[static_cast<size_t>(i)].pid; }
  bool running(int i) const { return members_[static_cast<size_t>(i)].pid > 0; }

  void stop(int i);   // SIGTERM, wait (SIGKILL after 10 s)
  void kill(int i);   // SIGKILL, wait
  bool startMember(int i);  // again, on its data dir: it rejoins (does not wait)
  // The member that leads, as the members see it (-1 if none answers or they disagree).
  int leader() const;
  // Polls until the member answers /health with true (at most waitMs).
  bool waitHealthy(int i, int waitMs) const;
  // Polls until some running member is leader (at most waitMs); returns it or -1.
  int waitLeader(int waitMs) const;
  const std::string& dir() const { return dir_; }

  // A blocking HTTP/1.1 POST (GET when body is null) to a member's client port: the body, or ""
  // on any failure within timeoutMs. Plain http only (with TLS, the health checks use etcdctl).
  std::string request(int i, const char* path, const char* body, int timeoutMs = 1000) const;

 private:
  struct Member {
    std::string ip;
    uint16_t clientPort = 0;
    uint16_t peerPort = 0;
    pid_t pid = -1;
  };
  bool spawn(int i);
  void signalAndWait(int i, int sig);

  std::vector<Member> members_;
  std::vector<std::string> certFiles_, keyFiles_;
  std::string dir_;
  std::string error_;
};

}  // namespace bitsd::testing
