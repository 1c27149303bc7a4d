// Authentication and authorisation (issue 7). Who someone is comes from the platform through the
// Authenticator port (Basic credentials checked against a users file of salted PBKDF2 hashes, on
// the thread pool); what they may do is decided here: which URL prefixes a user may upload to
// (locations), and that a session belongs to the user who created it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace bitsd {

inline constexpr size_t kMaxUserNameBytes = 32;
// The owner of a restored session whose user no longer exists: matches no one.
inline constexpr int32_t kNobody = -2;

class AuthOp;

class AuthCallback {
 public:
  virtual void onAuthDone(AuthOp& op) = 0;

 protected:
  ~AuthCallback() = default;
};

// One credentials check in flight, owned by the caller.
class AuthOp {
 public:
  AuthCallback* callback = nullptr;
  bool busy = false;
  // In: the client's address (4 bytes IPv4, 16 IPv6; clientLen 0: unknown). Failed checks are
  // charged to it (core/throttle.h).
  uint8_t client[16] = {};
  uint8_t clientLen = 0;
  // Outcome: the user's id (>= 0) when the credentials are right, else -1.
  int32_t user = -1;
  // With user -1: not checked at all, because too many checks for this address or user failed or
  // are waiting; the client may try again after this long (503 with Retry-After).
  uint32_t retryAfterMs = 0;
  // Set by check() before it returns: the answer waits for a password check (the credentials are
  // not among the remembered right ones), which may take seconds when throttled.
  bool slow = false;
  alignas(16) unsigned char impl[64];  // scratch for the platform
};

// Checks credentials; completes later through op.callback (never inside the call).
class Authenticator {
 public:
  virtual ~Authenticator() = default;
  // `credentials`: what follows "Basic " in the Authorization header (base64 of user:password).
  virtual void check(AuthOp& op, std::string_view credentials) = 0;
  // Ids are stable while the process runs; the journal keeps names.
  virtual int32_t userId(std::string_view name) const = 0;
  virtual std::string_view userName(int32_t id) const = 0;
};

// Where users may upload: "PREFIX[=DIR] USER...; PREFIX[=DIR] USER..." (a USER of `*` is any
// authenticated user). A path's longest matching prefix decides; a path no prefix matches is
// refused, unless no locations are configured at all (then every authenticated user may upload
// anywhere). Uploads under PREFIX go to DIR when it is given (URL /PREFIX/a/b -> DIR/a/b), else
// below the upload root as every other upload (root/PREFIX/a/b).
struct Location {
  std::string prefix;  // root-relative, no leading '/', ends with '/' unless empty (the whole root)
  std::string dir;     // absolute, no trailing '/'; empty: under the root. The platform resolves it.
  std::vector<std::string> users;
  bool anyone = false;
};
// False with a one-line reason for a malformed spec.
bool parseLocations(std::string_view spec, std::vector<Location>* out, std::string* error);
// The location whose prefix is the longest match for a root-relative path, or nullptr.
const Location* locationFor(const std::vector<Location>& locations, std::string_view relPath);
bool mayUpload(const std::vector<Location>& locations, std::string_view user, std::string_view relPath);
// The same, with the path's location already looked up (`matched` = locationFor(locations, path)).
bool mayUploadAt(const std::vector<Location>& locations, const Location* matched, std::string_view user);

// A user name as the users file and the journal keep it: 1..32 of [A-Za-z0-9._-].
bool validUserName(std::string_view name);

}  // namespace bitsd
