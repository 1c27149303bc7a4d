// The users file and the Authenticator behind bitsd's Basic authentication (issue 7).
//
// One user per line:  NAME:pbkdf2-sha256:ITERATIONS:SALT:HASH   (SALT and HASH in base64; `#`
// starts a comment). `bitsctl user add NAME` writes such lines. A password is checked by running
// PBKDF2-HMAC-SHA256 (mbedTLS) over it with the user's salt and comparing in constant time; that is
// slow on purpose, so it runs on libuv's thread pool, and a right answer is remembered (keyed by an
// HMAC of the credentials under a random per-process key) so a client that sends the same header on
// every request pays once.
#pragma once

#include <mbedtls/md.h>
#include <uv.h>

#include <array>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/status.h"
#include "core/auth.h"
#include "core/throttle.h"

namespace bitsd::platform {

inline constexpr uint32_t kDefaultPbkdf2Iterations = 100000;

struct UserEntry {
  std::string name;
  uint32_t iterations = 0;
  std::vector<unsigned char> salt;
  std::vector<unsigned char> hash;  // 32 bytes
};

// Parses a users file's text; false with "LINE: reason" in *error.
bool parseUsers(const std::string& text, std::vector<UserEntry>* out, std::string* error);
// PBKDF2-HMAC-SHA256 of `password`; 32 bytes.
std::vector<unsigned char> pbkdf2(const std::string& password, const std::vector<unsigned char>& salt,
                                  uint32_t iterations);
// A users-file line for a new password (a fresh 16-byte salt from the OS).
bool userLine(const std::string& name, const std::string& password, uint32_t iterations, std::string* line,
              std::string* error);

class UvAuthenticator final : public Authenticator {
 public:
  // Loads `path`; false with a one-line reason naming the file.
  Outcome load(uv_loop_t* loop, const std::string& path);
  // SIGHUP: reads the file again. Ids stay stable (a session's owner keeps its id): known names keep
  // theirs, new names get new ones, removed names can no longer sign in. Remembered answers are
  // forgotten, so a changed password takes effect at once. On failure nothing changes.
  bool reload(std::string* error);

  void check(AuthOp& op, std::string_view credentials) override;
  int32_t userId(std::string_view name) const override;
  std::string_view userName(int32_t id) const override;

  uint64_t checksRun() const { return checksRun_; }  // PBKDF2 computations (cache misses)
  uint64_t checksRefused() const { return checksRefused_; }  // throttled: answered 503 unchecked
  // How many checks that are not answered from memory may be outstanding at once (each holds its
  // request's slot); beyond it they are refused (503). Set before the first check.
  void setMaxUnverified(uint32_t n) { maxUnverified_ = n > 0 ? n : 1; }
  // Shutdown: checks waiting for their throttle delay are refused now, and so are new ones that
  // would wait, so that no connection outlives the grace period for a throttle delay.
  void stopWaiting();
  // Closes the loop handle (after the server stopped); run the loop once more to finish.
  void close();

 private:
  struct Work;
  using CacheKey = std::array<unsigned char, 32>;  // HMAC-SHA256 of the credentials
  struct CacheKeyHash {
    size_t operator()(const CacheKey& k) const {  // an HMAC is uniform: its first bytes will do
      size_t h = 0;
      for (size_t i = 0; i < sizeof h; ++i) h = h << 8 | k[i];
      return h;
    }
  };
  static void onWork(uv_work_t* req);
  static void onAfterWork(uv_work_t* req, int status);
  static void onIdle(uv_idle_t* idle);
  static void onTimer(uv_timer_t* timer);
  void finish(Work* w);
  void cacheKey(std::string_view credentials, CacheKey* out) const;

  bool read(const std::string& path, std::vector<UserEntry>* users, std::string* error);

  uv_loop_t* loop_ = nullptr;
  std::string path_;
  std::vector<UserEntry> users_;  // removed users stay, with an empty hash that matches nothing
  UserEntry dummy_;  // checked for unknown names, so that they take as long as known ones
  unsigned char hmacKey_[32] = {};
  // Keyed once at load: each cache key is reset + update + finish, with no allocation (the one-shot
  // mbedtls_md_hmac allocates its context on every call).
  mutable mbedtls_md_context_t hmac_{};  // zeroed: mbedtls_md_free is safe before load()
  bool hmacReady_ = false;
  std::unordered_map<CacheKey, int32_t, CacheKeyHash> cache_;  // HMAC(credentials) -> user id
  // A remembered answer completes on the loop's next turn (never inside check(), never through the
  // thread pool, where it would wait behind file syncs): queued here, run by the idle handle. Both
  // vectors keep their capacity, so the steady state allocates nothing.
  uv_idle_t idle_;
  bool idleOpen_ = false;
  std::vector<Work*> ready_, readyRun_;
  std::vector<Work*> spare_;  // finished work items, reused (as many as checks ever ran at once)
  // PBKDF2 runs on libuv's thread pool, which also does every file write: at most this many at once,
  // so a flood of wrong passwords cannot stall uploads; the rest wait here, in arrival order, each
  // until its throttle delay is over (core/throttle.h) and the pool is free. Waiting costs a
  // Work item and the request's slot (bounded by maxUnverified_), no thread and no read buffer;
  // one timer wakes the queue when the earliest delay ends.
  static constexpr int kMaxParallelChecks = 1;
  int running_ = 0;
  std::vector<Work*> waiting_;
  std::vector<Work*> inFlight_;  // on the pool now (at most kMaxParallelChecks)
  // A check whose credentials are already being checked (running or waiting) follows that one and
  // takes its answer: 8 connections of one client opening at once cost one PBKDF2, not 8 in a row.
  Work* leaderFor(const Work* w) const;
  void start(Work* w);
  void schedule();  // starts what is due, arms the timer for the rest
  void refuse(Work* w, uint32_t retryAfterMs);
  void throttleDone(Work* w, bool checked);
  AuthThrottle throttle_{1};  // sized in load()
  uint32_t maxUnverified_ = 128;
  uint32_t unverified_ = 0;  // checks admitted and not answered (leaders and followers)
  bool stopWaiting_ = false;
  uv_timer_t timer_;
  uint64_t checksRun_ = 0;
  uint64_t checksRefused_ = 0;

 public:
  ~UvAuthenticator();
};

}  // namespace bitsd::platform
