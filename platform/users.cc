// Owns the users file and Basic authentication's PBKDF2 checks off the loop, with the throttle
// (platform/users.h).
#include "platform/users.h"

#include <mbedtls/base64.h>
#include <mbedtls/md.h>
#include <mbedtls/pkcs5.h>
#include <sys/random.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

namespace bitsd::platform {

namespace {

constexpr size_t kMaxCacheEntries = 256;
constexpr size_t kMaxCredentialBytes = 512;

bool fromBase64(const std::string& text, std::vector<unsigned char>* out) {
  size_t n = 0;
  out->assign(text.size(), 0);
  if (mbedtls_base64_decode(out->data(), out->size(), &n, reinterpret_cast<const unsigned char*>(text.data()),
                            text.size()) != 0) {
    return false;
  }
  out->resize(n);
  return true;
}

std::string toBase64(const std::vector<unsigned char>& bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
  size_t n = 0;
  mbedtls_base64_encode(reinterpret_cast<unsigned char*>(out.data()), out.size(), &n, bytes.data(), bytes.size());
  out.resize(n);
  return out;
}

bool sameBytes(const std::vector<unsigned char>& a, const std::vector<unsigned char>& b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

}  // namespace

std::vector<unsigned char> pbkdf2(const std::string& password, const std::vector<unsigned char>& salt,
                                  uint32_t iterations) {
  std::vector<unsigned char> out(32);
  mbedtls_md_context_t md;
  mbedtls_md_init(&md);
  if (mbedtls_md_setup(&md, mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), 1) != 0 ||
      mbedtls_pkcs5_pbkdf2_hmac(&md, reinterpret_cast<const unsigned char*>(password.data()), password.size(),
                                salt.data(), salt.size(), iterations, static_cast<uint32_t>(out.size()),
                                out.data()) != 0) {
    out.clear();
  }
  mbedtls_md_free(&md);
  return out;
}

bool parseUsers(const std::string& text, std::vector<UserEntry>* out, std::string* error) {
  out->clear();
  int lineNo = 0;
  for (size_t pos = 0; pos < text.size();) {
    size_t nl = text.find('\n', pos);
    std::string line = text.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
    pos = nl == std::string::npos ? text.size() : nl + 1;
    ++lineNo;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line[0] == '#') continue;
    std::vector<std::string> f;
    size_t start = 0;
    for (size_t c; (c = line.find(':', start)) != std::string::npos; start = c + 1) f.push_back(line.substr(start, c - start));
    f.push_back(line.substr(start));
    auto bad = [&](const std::string& why) {
      *error = std::to_string(lineNo) + ": " + why;
      return false;
    };
    if (f.size() != 5) return bad("expected NAME:pbkdf2-sha256:ITERATIONS:SALT:HASH");
    UserEntry u;
    u.name = f[0];
    if (!validUserName(u.name)) return bad("'" + u.name + "' is not a user name (1..32 of A-Z a-z 0-9 . _ -)");
    if (f[1] != "pbkdf2-sha256") return bad("unknown scheme '" + f[1] + "' (only pbkdf2-sha256)");
    char* end = nullptr;
    unsigned long it = std::strtoul(f[2].c_str(), &end, 10);
    if (f[2].empty() || *end != '\0' || it < 1000 || it > 100000000) return bad("iterations must be 1000..100000000");
    u.iterations = static_cast<uint32_t>(it);
    if (!fromBase64(f[3], &u.salt) || u.salt.size() < 8) return bad("salt is not base64 of at least 8 bytes");
    if (!fromBase64(f[4], &u.hash) || u.hash.size() != 32) return bad("hash is not base64 of 32 bytes");
    for (const UserEntry& other : *out) {
      if (other.name == u.name) return bad("user '" + u.name + "' appears twice");
    }
    out->push_back(std::move(u));
  }
  return true;
}

bool userLine(const std::string& name, const std::string& password, uint32_t iterations, std::string* line,
              std::string* error) {
  if (!validUserName(name)) {
    *error = "'" + name + "' is not a user name (1..32 of A-Z a-z 0-9 . _ -)";
    return false;
  }
  if (password.empty() || password.size() > 256 || password.find_first_of("\r\n") != std::string::npos) {
    *error = "the password must be 1..256 characters on one line";
    return false;
  }
  std::vector<unsigned char> salt(16);
  if (::getrandom(salt.data(), salt.size(), 0) != static_cast<ssize_t>(salt.size())) {
    *error = "no randomness from the OS for the salt";
    return false;
  }
  std::vector<unsigned char> hash = pbkdf2(password, salt, iterations);
  if (hash.empty()) {
    *error = "PBKDF2 failed";
    return false;
  }
  *line = name + ":pbkdf2-sha256:" + std::to_string(iterations) + ":" + toBase64(salt) + ":" + toBase64(hash);
  return true;
}

// One check on the thread pool. `password` is wiped after use.
struct UvAuthenticator::Work {
  uv_work_t req;
  UvAuthenticator* self = nullptr;
  AuthOp* op = nullptr;
  int32_t user = -1;        // the claimed user (-1: unknown name, checked against the dummy)
  bool cached = false;      // a remembered right answer: nothing to compute
  std::string password;     // keeps its capacity between uses (wiped after each)
  CacheKey key{};
  bool hasKey = false;
  bool ok = false;
  Work* followers = nullptr;  // checks of the same credentials waiting for this one's answer
  Work* nextFollower = nullptr;
  // Throttling: the keys this attempt is charged to, while it is admitted.
  ThrottleKey keys[AuthThrottle::kMaxKeys];
  int slots[AuthThrottle::kMaxKeys] = {};
  size_t nkeys = 0;
  bool admitted = false;
  uint32_t retryAfterMs = 0;  // refused unchecked
};

bool UvAuthenticator::read(const std::string& path, std::vector<UserEntry>* users, std::string* error) {
  // stdio, not iostreams: a static build would otherwise carry the whole iostream and locale
  // machinery for this one read.
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) {
    *error = "users-file " + path + ": cannot read it: " + std::strerror(errno);
    return false;
  }
  std::string text;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
  bool readError = std::ferror(f) != 0;
  std::fclose(f);
  if (readError) {
    *error = "users-file " + path + ": cannot read it";
    return false;
  }
  std::string why;
  if (!parseUsers(text, users, &why)) {
    *error = "users-file " + path + ":" + why;
    return false;
  }
  if (users->empty()) {
    *error = "users-file " + path + " has no users (add one with: bitsctl user add NAME --users-file " + path + ")";
    return false;
  }
  return true;
}

bool UvAuthenticator::reload(std::string* error) {
  if (path_.empty()) {
    *error = "no users-file";
    return false;
  }
  std::vector<UserEntry> fresh;
  if (!read(path_, &fresh, error)) return false;
  std::vector<bool> seen(users_.size(), false);
  for (UserEntry& u : fresh) {
    int32_t id = userId(u.name);
    if (id >= 0) {
      seen[static_cast<size_t>(id)] = true;
      users_[static_cast<size_t>(id)] = std::move(u);
    } else {
      users_.push_back(std::move(u));
      seen.push_back(true);
    }
  }
  for (size_t i = 0; i < seen.size(); ++i) {
    if (!seen[i]) users_[i].hash.clear();  // removed: no password matches an empty hash
  }
  cache_.clear();
  for (const UserEntry& u : users_) dummy_.iterations = std::max(dummy_.iterations, u.iterations);
  return true;
}

Outcome UvAuthenticator::load(uv_loop_t* loop, const std::string& path) {
  std::string error;
  loop_ = loop;
  path_ = path;
  if (!read(path, &users_, &error)) return Outcome::fail(Code::Io, error);
  if (::getrandom(hmacKey_, sizeof hmacKey_, 0) != static_cast<ssize_t>(sizeof hmacKey_)) {
    error = "no randomness from the OS";
    return Outcome::fail(Code::Io, error);
  }
  dummy_.iterations = kDefaultPbkdf2Iterations;
  for (const UserEntry& u : users_) dummy_.iterations = std::max(dummy_.iterations, u.iterations);
  dummy_.salt.assign(16, 0x5a);
  dummy_.hash.assign(32, 0);
  mbedtls_md_init(&hmac_);
  hmacReady_ = mbedtls_md_setup(&hmac_, mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), 1) == 0 &&
               mbedtls_md_hmac_starts(&hmac_, hmacKey_, sizeof hmacKey_) == 0;
  if (!hmacReady_) {
    error = "HMAC-SHA256 unavailable in mbedTLS";
    return Outcome::fail(Code::Io, error);
  }
  uv_idle_init(loop, &idle_);
  idle_.data = this;
  uv_timer_init(loop, &timer_);
  timer_.data = this;
  idleOpen_ = true;
  // One address or user may fill at most a quarter of the unverified share (2..8 attempts), so a
  // single attacker leaves room for others' first sign-in even on a small board.
  ThrottlePolicy policy;
  policy.maxPendingPerKey = std::min<uint32_t>(8, std::max<uint32_t>(2, maxUnverified_ / 4));
  throttle_ = AuthThrottle(std::max<size_t>(256, 2 * size_t{maxUnverified_} + 16), policy);
  waiting_.reserve(maxUnverified_);
  ready_.reserve(16);
  readyRun_.reserve(16);
  return Outcome::ok();
}

void UvAuthenticator::close() {
  if (!idleOpen_) return;
  idleOpen_ = false;
  uv_close(reinterpret_cast<uv_handle_t*>(&idle_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), nullptr);
}

void UvAuthenticator::stopWaiting() {
  stopWaiting_ = true;
  if (idleOpen_) schedule();
}

void UvAuthenticator::cacheKey(std::string_view credentials, CacheKey* out) const {
  mbedtls_md_hmac_reset(&hmac_);
  mbedtls_md_hmac_update(&hmac_, reinterpret_cast<const unsigned char*>(credentials.data()), credentials.size());
  mbedtls_md_hmac_finish(&hmac_, out->data());
}

UvAuthenticator::~UvAuthenticator() {
  for (Work* w : spare_) delete w;
  mbedtls_md_free(&hmac_);
}

void UvAuthenticator::check(AuthOp& op, std::string_view credentials) {
  Work* w;
  if (!spare_.empty()) {
    w = spare_.back();
    spare_.pop_back();
    w->user = -1;
    w->cached = false;
    w->ok = false;
    w->password.clear();
    w->hasKey = false;
    w->followers = w->nextFollower = nullptr;
    w->nkeys = 0;
    w->admitted = false;
    w->retryAfterMs = 0;
  } else {
    w = new Work();
  }
  w->self = this;
  w->op = &op;
  w->req.data = w;
  if (credentials.size() <= kMaxCredentialBytes) {
    cacheKey(credentials, &w->key);
    w->hasKey = true;
    auto hit = cache_.find(w->key);
    if (hit != cache_.end()) {
      w->cached = true;
      w->user = hit->second;
      w->ok = true;
    } else {
      unsigned char plain[kMaxCredentialBytes];
      size_t n = 0;
      if (mbedtls_base64_decode(plain, sizeof plain, &n, reinterpret_cast<const unsigned char*>(credentials.data()),
                                credentials.size()) == 0) {
        std::string_view up(reinterpret_cast<char*>(plain), n);
        size_t colon = up.find(':');
        if (colon != std::string_view::npos) {
          w->user = userId(up.substr(0, colon));
          w->password.assign(up.data() + colon + 1, up.size() - colon - 1);
        }
      }
      std::memset(plain, 0, sizeof plain);
    }
  }
  // The completion never runs inside this call. A remembered answer completes on the loop's next
  // turn, whatever waits for a PBKDF2; so does a refusal. A PBKDF2 waits for its throttle delay,
  // then goes to the thread pool, one at a time.
  if (w->cached) {
    if (ready_.empty() && idleOpen_) uv_idle_start(&idle_, onIdle);
    ready_.push_back(w);
    return;
  }
  // Unverified: charged to the client's address, and to the user when the name is a known one
  // (invented names make no entries).
  if (unverified_ >= maxUnverified_) return refuse(w, 1000);
  if (op.clientLen == 4 || op.clientLen == 16) w->keys[w->nkeys++] = ThrottleKey::address(op.client, op.clientLen);
  if (w->user >= 0) w->keys[w->nkeys++] = ThrottleKey::user(w->user);
  uint32_t retryAfterMs = 0;
  if (!throttle_.admit(w->keys, w->nkeys, uv_now(loop_), w->slots, &retryAfterMs)) {
    w->nkeys = 0;
    return refuse(w, retryAfterMs);
  }
  w->admitted = true;
  ++unverified_;
  op.slow = true;
  if (Work* leader = leaderFor(w); leader != nullptr) {
    w->nextFollower = leader->followers;
    leader->followers = w;
    return;
  }
  waiting_.push_back(w);
  schedule();
}

void UvAuthenticator::refuse(Work* w, uint32_t retryAfterMs) {
  w->ok = false;
  w->retryAfterMs = retryAfterMs;
  ++checksRefused_;
  if (ready_.empty() && idleOpen_) uv_idle_start(&idle_, onIdle);
  ready_.push_back(w);
}

void UvAuthenticator::throttleDone(Work* w, bool checked) {
  if (!w->admitted) return;
  w->admitted = false;
  throttle_.finished(w->slots, w->nkeys, checked, w->ok, uv_now(loop_));
  --unverified_;
}

void UvAuthenticator::schedule() {
  uint64_t now = uv_now(loop_);
  uint64_t next = AuthThrottle::kBlocked;
  for (size_t i = 0; i < waiting_.size();) {
    Work* w = waiting_[i];
    uint64_t due = throttle_.dueAt(w->slots, w->nkeys);
    if (due <= now && running_ < kMaxParallelChecks) {
      waiting_.erase(waiting_.begin() + static_cast<std::ptrdiff_t>(i));
      throttle_.started(w->slots, w->nkeys);
      start(w);
      continue;
    }
    if (stopWaiting_ && due > now) {  // shutting down: no more throttle waits
      waiting_.erase(waiting_.begin() + static_cast<std::ptrdiff_t>(i));
      throttleDone(w, false);
      refuse(w, 1000);
      continue;
    }
    if (due > now && due < next) next = due;
    ++i;
  }
  if (!idleOpen_) return;
  if (next != AuthThrottle::kBlocked) {
    uv_timer_start(&timer_, onTimer, next - now, 0);
  } else {
    uv_timer_stop(&timer_);
  }
}

void UvAuthenticator::onTimer(uv_timer_t* timer) { static_cast<UvAuthenticator*>(timer->data)->schedule(); }

UvAuthenticator::Work* UvAuthenticator::leaderFor(const Work* w) const {
  if (!w->hasKey) return nullptr;
  for (Work* o : inFlight_) {
    if (o->key == w->key) return o;
  }
  for (Work* o : waiting_) {
    if (o->key == w->key) return o;
  }
  return nullptr;
}

void UvAuthenticator::onIdle(uv_idle_t* idle) {
  UvAuthenticator* self = static_cast<UvAuthenticator*>(idle->data);
  uv_idle_stop(idle);
  // Completions may check again (the next request on a connection): they queue into ready_ anew.
  self->readyRun_.swap(self->ready_);
  for (Work* w : self->readyRun_) self->finish(w);
  self->readyRun_.clear();
}

void UvAuthenticator::start(Work* w) {
  ++running_;
  inFlight_.push_back(w);
  uv_queue_work(loop_, &w->req, onWork, onAfterWork);
}

void UvAuthenticator::onWork(uv_work_t* req) {
  Work* w = static_cast<Work*>(req->data);
  const UserEntry& u = w->user >= 0 ? w->self->users_[static_cast<size_t>(w->user)] : w->self->dummy_;
  std::vector<unsigned char> h = pbkdf2(w->password, u.salt, u.iterations);
  w->ok = w->user >= 0 && !h.empty() && sameBytes(h, u.hash);
  std::fill(w->password.begin(), w->password.end(), '\0');
}

void UvAuthenticator::onAfterWork(uv_work_t* req, int) {
  Work* w = static_cast<Work*>(req->data);
  UvAuthenticator* self = w->self;
  ++self->checksRun_;
  --self->running_;
  for (size_t i = 0; i < self->inFlight_.size(); ++i) {
    if (self->inFlight_[i] == w) {
      self->inFlight_[i] = self->inFlight_.back();
      self->inFlight_.pop_back();
      break;
    }
  }
  if (w->ok && w->hasKey) {
    if (self->cache_.size() >= kMaxCacheEntries) self->cache_.clear();
    self->cache_[w->key] = w->user;
  }
  self->throttleDone(w, true);
  self->finish(w);
  self->schedule();
}

void UvAuthenticator::finish(Work* w) {
  // Followers first take the answer (their callbacks may start new checks, which must not find
  // this finished one as a leader: it is neither in flight nor waiting any more).
  for (Work* f = w->followers; f != nullptr;) {
    Work* next = f->nextFollower;
    f->ok = w->ok;
    f->user = w->user;
    f->retryAfterMs = w->retryAfterMs;
    f->followers = f->nextFollower = nullptr;
    throttleDone(f, false);
    AuthOp* fop = f->op;
    fop->user = f->ok ? f->user : -1;
    fop->retryAfterMs = f->ok ? 0 : f->retryAfterMs;
    std::fill(f->password.begin(), f->password.end(), '\0');
    spare_.push_back(f);
    fop->callback->onAuthDone(*fop);
    f = next;
  }
  w->followers = nullptr;
  throttleDone(w, false);  // (a check that ran was released with its outcome already)
  AuthOp* op = w->op;
  op->user = w->ok ? w->user : -1;
  op->retryAfterMs = w->ok ? 0 : w->retryAfterMs;
  std::fill(w->password.begin(), w->password.end(), '\0');
  spare_.push_back(w);  // steady state: no allocation per request
  op->callback->onAuthDone(*op);
}

int32_t UvAuthenticator::userId(std::string_view name) const {
  for (size_t i = 0; i < users_.size(); ++i) {
    if (users_[i].name == name) return static_cast<int32_t>(i);
  }
  return -1;
}

std::string_view UvAuthenticator::userName(int32_t id) const {
  return id >= 0 && static_cast<size_t>(id) < users_.size() ? std::string_view(users_[static_cast<size_t>(id)].name)
                                                            : std::string_view();
}

}  // namespace bitsd::platform
