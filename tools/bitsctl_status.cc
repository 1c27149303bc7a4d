// bitsctl status: reads /status.json from a running bitsd's admin listener (--admin-listen) and prints
// the live sessions as a table. Plain HTTP/1.1 GET over a blocking socket with a 10 s limit.
#include "tools/bitsctl_status.h"

#include "tools/client/progress_line.h"

#include <mbedtls/base64.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

namespace {

int statusFail(const std::string& msg) {
  std::fprintf(stderr, "bitsctl status: %s\n", msg.c_str());
  return 2;
}

// A tiny reader for the JSON bitsd writes: objects, arrays, strings, numbers, null. Values are kept
// as text (strings unescaped); nested objects are flattened into rows by the caller.
struct Json {
  const std::string& s;
  size_t i = 0;
  bool ok = true;
  void ws() {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\n' || s[i] == '\r' || s[i] == '\t')) ++i;
  }
  bool eat(char c) {
    ws();
    if (i < s.size() && s[i] == c) {
      ++i;
      return true;
    }
    return false;
  }
  std::string str() {
    std::string out;
    if (!eat('"')) {
      ok = false;
      return out;
    }
    while (i < s.size() && s[i] != '"') {
      char c = s[i++];
      if (c == '\\' && i < s.size()) {
        char e = s[i++];
        if (e == 'u' && i + 4 <= s.size()) {
          unsigned v = static_cast<unsigned>(std::strtoul(s.substr(i, 4).c_str(), nullptr, 16));
          i += 4;
          out += v < 0x80 ? static_cast<char>(v) : '?';
        } else {
          out += e == 'n' ? '\n' : e == 't' ? '\t' : e;
        }
      } else {
        out += c;
      }
    }
    if (!eat('"')) ok = false;
    return out;
  }
  std::string scalar() {
    ws();
    if (i < s.size() && s[i] == '"') return str();
    size_t b = i;
    while (i < s.size() && s[i] != ',' && s[i] != '}' && s[i] != ']' && s[i] != ' ' && s[i] != '\n') ++i;
    if (b == i) ok = false;
    return s.substr(b, i - b);
  }
  // An object of scalars (or nested objects/arrays, handled by `onValue`).
  std::map<std::string, std::string> flat() {
    std::map<std::string, std::string> m;
    if (!eat('{')) {
      ok = false;
      return m;
    }
    if (eat('}')) return m;
    do {
      std::string k = str();
      if (!eat(':')) ok = false;
      if (!ok) return m;
      m[k] = scalar();
    } while (ok && eat(','));
    if (!eat('}')) ok = false;
    return m;
  }
};

std::string human(uint64_t n) { return bitsd::client::humanBytes(static_cast<double>(n)); }

uint64_t num(const std::map<std::string, std::string>& m, const char* k) {
  auto it = m.find(k);
  return it == m.end() ? 0 : std::strtoull(it->second.c_str(), nullptr, 10);
}

}  // namespace

int statusCommand(const std::vector<std::string>& args) {
  std::string url = "http://127.0.0.1:9090", creds;
  for (size_t i = 1; i < args.size(); ++i) {
    if ((args[i] == "--admin" || args[i] == "-a") && i + 1 < args.size()) {
      url = args[++i];
    } else if ((args[i] == "-u" || args[i] == "--user") && i + 1 < args.size()) {
      creds = args[++i];
    } else if (args[i] == "--help" || args[i] == "-h") {
      std::printf(
          "usage: bitsctl status [--admin URL] [-u USER:PASS]\n"
          "Prints the live sessions of a running bitsd, read from /status.json on its admin listener\n"
          "(bitsd --admin-listen). URL defaults to http://127.0.0.1:9090; a bare port means 127.0.0.1.\n"
          "-u gives Basic credentials (needed when bitsd has a users-file).\n");
      return 0;
    } else {
      return statusFail("unknown argument '" + args[i] + "' (see bitsctl status --help)");
    }
  }
  std::string hostPort = url;
  if (hostPort.rfind("http://", 0) == 0) hostPort = hostPort.substr(7);
  if (hostPort.rfind("https://", 0) == 0) return statusFail("the admin listener speaks plain http");
  size_t slash = hostPort.find('/');
  if (slash != std::string::npos) hostPort = hostPort.substr(0, slash);
  std::string host = "127.0.0.1", port = hostPort;
  size_t colon = hostPort.rfind(':');
  if (colon != std::string::npos) {
    host = hostPort.substr(0, colon);
    port = hostPort.substr(colon + 1);
  }
  if (host.size() >= 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* ai = nullptr;
  if (getaddrinfo(host.c_str(), port.c_str(), &hints, &ai) != 0 || ai == nullptr) {
    return statusFail("cannot resolve " + hostPort);
  }
  int fd = ::socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int rc = fd < 0 ? -1 : ::connect(fd, ai->ai_addr, ai->ai_addrlen);
  freeaddrinfo(ai);
  if (rc != 0) {
    if (fd >= 0) ::close(fd);
    return statusFail("cannot connect to " + hostPort + ": " + std::strerror(errno) +
                      " (is bitsd running with --admin-listen?)");
  }
  std::string req = "GET /status.json HTTP/1.1\r\nHost: " + hostPort + "\r\nConnection: close\r\n";
  if (!creds.empty()) {
    unsigned char b64[512];
    size_t n = 0;
    if (mbedtls_base64_encode(b64, sizeof b64, &n, reinterpret_cast<const unsigned char*>(creds.data()),
                              creds.size()) != 0) {
      ::close(fd);
      return statusFail("credentials too long");
    }
    req += "Authorization: Basic " + std::string(reinterpret_cast<char*>(b64), n) + "\r\n";
  }
  req += "\r\n";
  if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) {
    ::close(fd);
    return statusFail("cannot send the request");
  }
  std::string resp;
  char buf[16384];
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 10000) <= 0) {
      ::close(fd);
      return statusFail("no answer within 10 s");
    }
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) break;
    resp.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  size_t end = resp.find("\r\n\r\n");
  if (resp.rfind("HTTP/1.", 0) != 0 || end == std::string::npos) return statusFail("not an HTTP answer");
  int status = std::atoi(resp.c_str() + 9);
  if (status == 401) return statusFail("401: credentials needed or refused (use -u USER:PASS)");
  if (status != 200) return statusFail("HTTP " + std::to_string(status) + " from " + hostPort);
  std::string body = resp.substr(end + 4);
  Json j{body};
  std::map<std::string, std::string> server;
  std::vector<std::map<std::string, std::string>> rows;
  if (j.eat('{')) {
    do {
      std::string k = j.str();
      if (!j.eat(':')) break;
      if (k == "server") {
        server = j.flat();
      } else if (k == "sessions") {
        if (!j.eat('[')) break;
        if (!j.eat(']')) {
          do rows.push_back(j.flat());
          while (j.ok && j.eat(','));
          j.eat(']');
        }
      } else {
        j.scalar();
      }
    } while (j.ok && j.eat(','));
  } else {
    j.ok = false;
  }
  if (!j.ok) return statusFail("malformed /status.json");
  std::printf("sessions open %" PRIu64 ", uploads committed %" PRIu64 ", received %s, connections %" PRIu64
              ", up %" PRIu64 " s\n",
              num(server, "sessions_open"), num(server, "uploads_committed"), human(num(server, "bytes_received")).c_str(),
              num(server, "connections_active"), num(server, "uptime_seconds"));
  if (rows.empty()) {
    std::printf("no live sessions\n");
    return 0;
  }
  std::printf("%-10s %-16s %-15s %6s %21s %11s %7s  %s\n", "STATE", "USER", "CLIENT", "DONE", "BYTES", "RATE", "AGE",
              "PATH");
  for (auto& r : rows) {
    uint64_t have = num(r, "bytes_acked");
    bool known = r["total_bytes"] != "null";
    uint64_t total = num(r, "total_bytes");
    char done[16] = "?";
    if (known) std::snprintf(done, sizeof done, "%" PRIu64 "%%", total > 0 ? have * 100 / total : 100);
    std::string bytes = human(have) + " / " + (known ? human(total) : std::string("?"));
    std::string rate = human(num(r, "rate_bytes_per_second")) + "/s";
    std::printf("%-10s %-16s %-15s %6s %21s %11s %6" PRIu64 "s  %s\n", r["state"].c_str(),
                r["user"].empty() ? "-" : r["user"].c_str(), r["client"].empty() ? "-" : r["client"].c_str(), done,
                bytes.c_str(), rate.c_str(), num(r, "age_seconds"), r["path"].c_str());
  }
  return 0;
}
