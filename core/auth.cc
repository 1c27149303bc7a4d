// Owns Basic authentication's header parsing and the locations a user may upload to (core/auth.h).
#include "core/auth.h"

namespace bitsd {

bool validUserName(std::string_view name) {
  if (name.empty() || name.size() > kMaxUserNameBytes) return false;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == '-';
    if (!ok) return false;
  }
  return true;
}

namespace {
std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}
}  // namespace

bool parseLocations(std::string_view spec, std::vector<Location>* out, std::string* error) {
  out->clear();
  while (!trim(spec).empty()) {
    size_t semi = spec.find(';');
    std::string_view entry = trim(spec.substr(0, semi));
    spec = semi == std::string_view::npos ? std::string_view() : spec.substr(semi + 1);
    if (entry.empty()) continue;
    Location loc;
    size_t sp = entry.find_first_of(" \t");
    std::string_view prefix = entry.substr(0, sp);
    size_t eq = prefix.find('=');
    if (eq != std::string_view::npos) {
      std::string_view dir = prefix.substr(eq + 1);
      prefix = prefix.substr(0, eq);
      while (dir.size() > 1 && dir.back() == '/') dir.remove_suffix(1);
      if (dir.empty() || dir.front() != '/' || dir == "/" || dir.find('\\') != std::string_view::npos) {
        *error = "locations: the directory of " + std::string(prefix) + " must be an absolute path other than / (got '" +
                 std::string(dir) + "')";
        return false;
      }
      loc.dir = std::string(dir);
    }
    if (prefix.empty() || prefix.front() != '/' || prefix.find("..") != std::string_view::npos ||
        prefix.find('\\') != std::string_view::npos || prefix.find('%') != std::string_view::npos) {
      *error = "locations: '" + std::string(prefix) + "' is not a URL path prefix (it starts with '/', no '..', '%' or '\\')";
      return false;
    }
    prefix.remove_prefix(1);
    loc.prefix = std::string(prefix);
    if (!loc.prefix.empty() && loc.prefix.back() != '/') loc.prefix += '/';
    std::string_view users = sp == std::string_view::npos ? std::string_view() : entry.substr(sp);
    while (!trim(users).empty()) {
      users = trim(users);
      size_t end = users.find_first_of(" \t");
      std::string_view u = users.substr(0, end);
      users = end == std::string_view::npos ? std::string_view() : users.substr(end);
      if (u == "*") {
        loc.anyone = true;
      } else if (validUserName(u)) {
        loc.users.emplace_back(u);
      } else {
        *error = "locations: '" + std::string(u) + "' is not a user name (1..32 of A-Z a-z 0-9 . _ -, or *)";
        return false;
      }
    }
    if (!loc.anyone && loc.users.empty()) {
      *error = "locations: /" + loc.prefix + " lists no users (name them, or * for any user)";
      return false;
    }
    out->push_back(std::move(loc));
  }
  return true;
}

const Location* locationFor(const std::vector<Location>& locations, std::string_view relPath) {
  const Location* best = nullptr;
  for (const Location& l : locations) {
    bool matches = relPath.substr(0, l.prefix.size()) == l.prefix;
    if (matches && (best == nullptr || l.prefix.size() > best->prefix.size())) best = &l;
  }
  return best;
}

bool mayUploadAt(const std::vector<Location>& locations, const Location* matched, std::string_view user) {
  if (locations.empty()) return true;
  if (matched == nullptr) return false;
  if (matched->anyone) return true;
  for (const std::string& u : matched->users) {
    if (u == user) return true;
  }
  return false;
}

bool mayUpload(const std::vector<Location>& locations, std::string_view user, std::string_view relPath) {
  return mayUploadAt(locations, locationFor(locations, relPath), user);
}

}  // namespace bitsd
