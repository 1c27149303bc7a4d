// bitsctl: the admin tool for bitsd's state directory. Everything it knows about the journal comes
// from core/journal_format (replayJournal, encodeSnapshot): there is no second copy of the format.
//
//   bitsctl sessions        --state DIR   the sessions the journal holds, one per line
//   bitsctl journal dump    --state DIR   every record, then where and why replay stopped
//   bitsctl journal verify  --state DIR   exit 0: clean; 1: a torn or stale tail; 2: unreadable/foreign
//   bitsctl journal compact --state DIR   rewrite the journal with only live state (bitsd must be stopped)
//   bitsctl gen-cert --cn NAME [--cert F] [--key F] [--days N] [--force]
//                                         a self-signed ECDSA key and certificate for https
//   bitsctl user add|del|list [NAME] [--users-file F] [--iterations N] [--password-stdin] [--replace]
//                                         the users file of Basic authentication (PBKDF2-SHA256)
//   bitsctl [COMMAND] --help              help on stdout, exit 0
#include <fcntl.h>
#include <grp.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "core/journal_format.h"
#include "core/journal_model.h"
#include "platform/cli.h"
#include "platform/users.h"
#include "tools/bitsctl_status.h"
#include "tools/gencert.h"

namespace {

using namespace bitsd;

const char kUsage[] =
    "usage: bitsctl sessions --state DIR\n"
    "       bitsctl journal dump|verify|compact --state DIR\n"
    "       bitsctl status [--admin URL] [-u USER:PASS]\n"
    "       bitsctl gen-cert --cn NAME [--cert FILE] [--key FILE] [--days N] [--force]\n"
    "       bitsctl user add NAME [--users-file FILE] [--iterations N] [--password-stdin] [--replace]\n"
    "       bitsctl user del NAME [--users-file FILE]\n"
    "       bitsctl user list [--users-file FILE]\n"
    "       bitsctl [COMMAND] --help\n";

// A usage mistake: the synopsis on stderr, exit 2. `--help` prints it on stdout instead (helpText).
int usage() {
  std::fputs(kUsage, stderr);
  return 2;
}

// `bitsctl COMMAND... --help`: what that command does and its options (the synopsis when the
// command is unknown or absent).
const char* helpText(const std::vector<std::string>& words) {
  auto is = [&](const char* a, const char* b = nullptr) {
    return !words.empty() && words[0] == a && (b == nullptr || (words.size() > 1 && words[1] == b));
  };
  if (is("sessions"))
    return "usage: bitsctl sessions --state DIR\n"
           "The sessions bitsd's journal (DIR/journal) holds, one per line: id, state, bytes, last activity, path.\n"
           "Reads the journal only; safe while bitsd runs.\n";
  if (is("journal", "dump"))
    return "usage: bitsctl journal dump --state DIR\n"
           "Every record of DIR/journal, then where replay stopped and why.\n";
  if (is("journal", "verify"))
    return "usage: bitsctl journal verify --state DIR\n"
           "Checks DIR/journal. Exit 0: clean; 1: a torn or stale tail (bitsd cuts it at start-up);\n"
           "2: unreadable, foreign or corrupt.\n";
  if (is("journal", "compact"))
    return "usage: bitsctl journal compact --state DIR\n"
           "Rewrites DIR/journal with only the live state. Refused while bitsd runs (it holds the lock).\n";
  if (is("journal"))
    return "usage: bitsctl journal dump|verify|compact --state DIR\n"
           "  dump     every record, and where replay stopped\n"
           "  verify   exit 0 clean, 1 torn tail, 2 foreign or corrupt\n"
           "  compact  rewrite with only the live state (bitsd must be stopped)\n";
  if (is("status"))
    return "usage: bitsctl status [--admin URL] [-u USER:PASS]\n"
           "The live sessions of a running bitsd, read from its admin listener's /status.json\n"
           "(--admin-listen; URL defaults to http://127.0.0.1:9090). -u: Basic credentials when bitsd\n"
           "has a users file.\n";
  if (is("gen-cert"))
    return "usage: bitsctl gen-cert --cn NAME [--cert FILE] [--key FILE] [--days N] [--force]\n"
           "A self-signed ECDSA P-256 key and certificate for bitsd's https (tls-cert, tls-key).\n"
           "  --cn NAME     the host name or address clients use (also the subjectAltName)\n"
           "  --cert FILE   certificate to write (default bitsd.crt)\n"
           "  --key FILE    private key to write, mode 0600 (default bitsd.key)\n"
           "  --days N      validity in days (default 3650)\n"
           "  --force       replace existing files\n";
  if (is("user", "add"))
    return "usage: bitsctl user add NAME [--users-file FILE] [--iterations N] [--password-stdin] [--replace]\n"
           "Adds NAME to the users file of Basic authentication (salted PBKDF2-SHA256). The password is\n"
           "asked twice on a terminal, else read from one line of stdin.\n"
           "  --users-file FILE  default ./users; a new file gets mode 0640 and, when a group\n"
           "                     'bitsd' exists, that group (bitsd reads it as user bitsd);\n"
           "                     a rewritten file keeps its mode and group\n"
           "  --iterations N     PBKDF2 iterations, 1000..100000000 (default 100000)\n"
           "  --password-stdin   read the password from stdin even on a terminal\n"
           "  --replace          NAME exists: replace its password. Without it, a terminal is asked\n"
           "                     to confirm and anything else is refused (exit 2)\n"
           "bitsd reads the file again on SIGHUP.\n";
  if (is("user", "del"))
    return "usage: bitsctl user del NAME [--users-file FILE]\n"
           "Removes NAME from the users file (default ./users); bitsd forgets it on SIGHUP.\n";
  if (is("user", "list"))
    return "usage: bitsctl user list [--users-file FILE]\n"
           "The users in the users file (default ./users) and their PBKDF2 iteration counts.\n";
  if (is("user"))
    return "usage: bitsctl user add|del|list [NAME] [--users-file FILE]\n"
           "The users file of Basic authentication; `bitsctl user add --help` for the options.\n";
  return kUsage;
}

[[noreturn]] void fail(const std::string& msg) {
  std::fprintf(stderr, "bitsctl: %s\n", msg.c_str());
  std::exit(2);
}

std::vector<uint8_t> readJournal(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("cannot open " + path + ": " + std::strerror(errno));
  std::vector<uint8_t> out;
  uint8_t buf[65536];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) out.insert(out.end(), buf, buf + n);
  ::close(fd);
  return out;
}

std::string idText(const SessionId& id) {
  char t[kSessionIdTextBytes];
  formatSessionId(id, t);
  return std::string(t, kSessionIdTextBytes);
}

std::string timeText(uint64_t wall) {
  if (wall == 0) return "-";
  std::time_t t = static_cast<std::time_t>(wall);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

ReplayResult replayOrFail(const std::string& path, const std::vector<uint8_t>& bytes, ReplaySink* sink) {
  ReplayResult r = replayJournal(bytes, sink);
  if (r.status != ReplayStatus::Ok) fail(path + ": " + replayStatusText(r.status));
  return r;
}

struct Dumper : ReplaySink {
  void onRecord(const JournalRecord& r, uint64_t seq, uint64_t offset) override {
    std::printf("%8" PRIu64 " seq %-6" PRIu64 " %-14s", offset, seq, recordTypeName(r.type));
    switch (r.type) {
      case RecordType::SessionCreated:
        std::printf(" %s %s path=%.*s", idText(r.id).c_str(), timeText(r.wallSeconds).c_str(),
                    static_cast<int>(r.path.size()), r.path.data());
        break;
      case RecordType::Progress:
        std::printf(" %s %s have=%" PRIu64 " total=%" PRIu64, idText(r.id).c_str(), timeText(r.wallSeconds).c_str(),
                    r.haveBytes, r.totalBytes);
        break;
      case RecordType::Committed: {
        std::printf(" %s %s size=%" PRIu64 " sha256=", idText(r.id).c_str(), timeText(r.wallSeconds).c_str(),
                    r.totalBytes);
        for (uint8_t b : r.sha256) std::printf("%02x", b);
        break;
      }
      case RecordType::Closed:
        std::printf(" %s %s%s", idText(r.id).c_str(), timeText(r.wallSeconds).c_str(), r.cancelled ? " cancelled" : "");
        break;
      case RecordType::Forget: std::printf(" %s", idText(r.id).c_str()); break;
      case RecordType::SessionOwner:
        std::printf(" %s owner=%.*s", idText(r.id).c_str(), static_cast<int>(r.owner.size()), r.owner.data());
        break;
      case RecordType::Delivered:
        std::printf(" txid=%.*s %s", static_cast<int>(r.txid.size()), r.txid.data(), timeText(r.wallSeconds).c_str());
        break;
      case RecordType::DeliveryBegan:
        std::printf(" %s %s txid=%.*s", idText(r.id).c_str(), timeText(r.wallSeconds).c_str(),
                    static_cast<int>(r.txid.size()), r.txid.data());
        break;
      case RecordType::DeliveryEnded:
        std::printf(" %s %s txid=%.*s status=%u error=0x%08X reply=%s bytes=%" PRIu64 "%s%s%.*s",
                    idText(r.id).c_str(), timeText(r.wallSeconds).c_str(), static_cast<int>(r.txid.size()),
                    r.txid.data(), r.status, r.hresult, idText(r.replySession).c_str(), r.replyBytes,
                    (r.flags & kDeliveryCopied) ? " copied" : "", r.url.empty() ? "" : " static=",
                    static_cast<int>(r.url.size()), r.url.data());
        break;
      case RecordType::Pad: break;
    }
    std::printf("\n");
  }
};

int sessions(const std::string& state) {
  std::string path = state + "/journal";
  std::vector<uint8_t> bytes = readJournal(path);
  JournalState st;
  replayOrFail(path, bytes, &st);
  std::printf("%-38s %-9s %21s  %-20s %s\n", "SESSION", "STATE", "HAVE/TOTAL", "LAST ACTIVITY", "PATH");
  for (const auto& [id, s] : st.sessions) {
    const char* label = s.closed      ? (s.cancelled ? "cancelled" : "closed")
                        : s.handedOff ? "delivered"
                        : s.committed ? "complete"
                                      : "open";
    std::string progress = std::to_string(s.haveBytes) + "/" + (s.totalKnown ? std::to_string(s.totalBytes) : "?");
    std::printf("%s %-9s %21s  %-20s %s\n", idText(id).c_str(), label, progress.c_str(),
                timeText(s.wallSeconds).c_str(), s.path.c_str());
  }
  size_t ended = 0;
  for (const auto& [txid, d] : st.delivered) ended += d.ended ? 1 : 0;
  std::printf("%zu session(s), %zu delivered transaction id(s), %zu delivery(ies) begun and not ended\n",
              st.sessions.size(), ended, st.delivered.size() - ended);
  return 0;
}

int dump(const std::string& state) {
  std::string path = state + "/journal";
  std::vector<uint8_t> bytes = readJournal(path);
  Dumper d;
  ReplayResult r = replayOrFail(path, bytes, &d);
  std::printf("header: version %u, salt 0x%08x, first seq %" PRIu64 "\n", r.header.version, r.header.salt,
              r.header.firstSeq);
  std::printf("%" PRIu64 " record(s), valid up to byte %" PRIu64 " of %zu; stopped: %s\n", r.records, r.validEnd,
              bytes.size(), r.stopReason);
  return 0;
}

int verify(const std::string& state) {
  std::string path = state + "/journal";
  std::vector<uint8_t> bytes = readJournal(path);
  ReplayResult r = replayOrFail(path, bytes, nullptr);
  if (r.tailBytes > 0) {
    std::printf("%s: %" PRIu64 " valid record(s); %" PRIu64 " byte(s) after offset %" PRIu64
                " are not a valid record (%s): a torn or stale tail, which bitsd cuts at start-up\n",
                path.c_str(), r.records, r.tailBytes, r.validEnd, r.stopReason);
    return 1;
  }
  std::printf("%s: ok, %" PRIu64 " record(s), %zu bytes\n", path.c_str(), r.records, bytes.size());
  return 0;
}

int compact(const std::string& state) {
  std::string path = state + "/journal";
  int lock = ::open((state + "/lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock < 0 || ::flock(lock, LOCK_EX | LOCK_NB) != 0) fail("the state directory is in use (is bitsd running?)");
  std::vector<uint8_t> bytes = readJournal(path);
  JournalState st;
  replayOrFail(path, bytes, &st);
  uint32_t salt = 0;
  if (::getrandom(&salt, sizeof salt, 0) != sizeof salt) fail("cannot get random bytes");
  JournalHeader h;
  h.salt = salt;
  std::vector<uint8_t> out(kJournalBlockBytes, 0);
  encodeJournalHeader(h, out.data());
  uint64_t seq = 1, offset = kJournalBlockBytes;
  encodeSnapshot(st, salt, &seq, &offset, &out);
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail("cannot create " + tmp + ": " + std::strerror(errno));
  size_t done = 0;
  while (done < out.size()) {
    ssize_t n = ::write(fd, out.data() + done, out.size() - done);
    if (n <= 0) fail("cannot write " + tmp + ": " + std::strerror(errno));
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) fail("cannot sync " + tmp + ": " + std::strerror(errno));
  if (::rename(tmp.c_str(), path.c_str()) != 0) fail("cannot rename " + tmp + ": " + std::strerror(errno));
  int dir = ::open(state.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
  std::printf("%s: %zu -> %zu bytes (%zu session(s), %zu transaction id(s))\n", path.c_str(), bytes.size(),
              out.size(), st.sessions.size(), st.delivered.size());
  return 0;
}

}  // namespace

int genCertCommand(const std::vector<std::string>& args) {
  bitsd::tools::GenCertOptions o;
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= args.size()) fail(a + " needs a value");
      return args[++i];
    };
    if (a == "--cn") {
      o.cn = value();
    } else if (a == "--cert") {
      o.certPath = value();
    } else if (a == "--key") {
      o.keyPath = value();
    } else if (a == "--days") {
      std::string v = value();
      char* end = nullptr;
      unsigned long d = std::strtoul(v.c_str(), &end, 10);
      if (end == v.c_str() || *end != '\0' || d > 100000) fail("invalid value '" + v + "' for --days");
      o.days = static_cast<unsigned>(d);
    } else if (a == "--force") {
      o.force = true;
    } else {
      fail("unknown option " + a + " for gen-cert");
    }
  }
  if (o.cn.empty()) fail("gen-cert needs --cn NAME (the host name or address clients use)");
  std::string error;
  if (!bitsd::tools::genCert(o, &error)) fail(error);
  std::printf("wrote %s (certificate, CN=%s, %u days) and %s (private key, mode 0600)\n", o.certPath.c_str(),
              o.cn.c_str(), o.days, o.keyPath.c_str());
  return 0;
}

// Reads a password: from the terminal without echo (twice), or one line of stdin.
std::string readPassword(const std::string& name, bool fromStdin) {
  std::string pw;
  if (fromStdin || !::isatty(0)) {
    if (!std::getline(std::cin, pw)) fail("no password on stdin");
    if (!pw.empty() && pw.back() == '\r') pw.pop_back();
    return pw;
  }
  termios old{};
  ::tcgetattr(0, &old);
  termios quiet = old;
  quiet.c_lflag &= static_cast<tcflag_t>(~ECHO);
  std::string again;
  std::fprintf(stderr, "password for %s: ", name.c_str());
  ::tcsetattr(0, TCSANOW, &quiet);
  std::getline(std::cin, pw);
  std::fprintf(stderr, "\nagain: ");
  std::getline(std::cin, again);
  ::tcsetattr(0, TCSANOW, &old);
  std::fprintf(stderr, "\n");
  if (pw != again) fail("the passwords differ; nothing changed");
  return pw;
}

int userCommand(const std::vector<std::string>& args) {
  std::string usersFile = "users", name, verb = args.size() > 1 ? args[1] : "";
  uint32_t iterations = bitsd::platform::kDefaultPbkdf2Iterations;
  bool fromStdin = false, replace = false;
  for (size_t i = 2; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= args.size()) fail(a + " needs a value");
      return args[++i];
    };
    if (a == "--users-file") {
      usersFile = value();
    } else if (a == "--iterations") {
      std::string v = value();
      char* end = nullptr;
      unsigned long n = std::strtoul(v.c_str(), &end, 10);
      if (end == v.c_str() || *end != '\0' || n < 1000 || n > 100000000) fail("--iterations must be 1000..100000000");
      iterations = static_cast<uint32_t>(n);
    } else if (a == "--password-stdin") {
      fromStdin = true;
    } else if (a == "--replace") {
      replace = true;
    } else if (a.rfind("--", 0) == 0) {
      fail("unknown option " + a + " for user");
    } else if (name.empty()) {
      name = a;
    } else {
      fail("unexpected argument " + a);
    }
  }
  std::string text;
  struct stat old {};
  bool hadFile = ::stat(usersFile.c_str(), &old) == 0;
  {
    std::ifstream f(usersFile, std::ios::binary);
    if (f) {
      std::stringstream ss;
      ss << f.rdbuf();
      text = ss.str();
    } else if (verb != "add") {
      fail("cannot read " + usersFile + ": " + std::strerror(errno));
    }
  }
  std::vector<bitsd::platform::UserEntry> users;
  std::string why;
  if (!bitsd::platform::parseUsers(text, &users, &why)) fail(usersFile + ":" + why);
  if (verb == "list") {
    for (const auto& u : users) std::printf("%s (pbkdf2-sha256, %u iterations)\n", u.name.c_str(), u.iterations);
    return 0;
  }
  if (verb != "add" && verb != "del") fail("user needs add, del or list");
  if (name.empty()) fail("user " + verb + " needs a NAME");
  bool exists = false;
  for (const auto& u : users) exists = exists || u.name == name;
  std::string line;
  if (verb == "add") {
    if (!bitsd::validUserName(name)) fail("'" + name + "' is not a user name (1..32 of A-Z a-z 0-9 . _ -)");
    if (exists && !replace) {
      // Say so before asking for a password: a typo in NAME must not silently reset someone.
      if (fromStdin || !::isatty(0) || !::isatty(2)) {
        fail("user " + name + " exists in " + usersFile + ": add --replace to change the password (nothing changed)");
      }
      std::fprintf(stderr, "user %s exists in %s: replace the password? [y/N] ", name.c_str(), usersFile.c_str());
      std::string answer;
      std::getline(std::cin, answer);
      if (answer != "y" && answer != "Y" && answer != "yes") fail("nothing changed");
    }
    std::string pw = readPassword(name, fromStdin);
    if (!bitsd::platform::userLine(name, pw, iterations, &line, &why)) fail(why);
    std::fill(pw.begin(), pw.end(), '\0');
  } else if (!exists) {
    fail("no user " + name + " in " + usersFile);
  }
  // Rewrite the file: every other line as it was, this user's line replaced, added or removed.
  std::istringstream in(text);
  std::string out, l;
  bool placed = false;
  while (std::getline(in, l)) {
    std::string lineName = l.substr(0, l.find(':'));
    if (!l.empty() && l[0] != '#' && lineName == name) {
      if (verb == "add" && !placed) out += line + "\n";
      placed = true;
      continue;
    }
    out += l + "\n";
  }
  if (verb == "add" && !placed) out += line + "\n";
  // bitsd runs as user bitsd (the package's unit) and must read the file; only its owner writes it.
  // A new file: 0640, group bitsd when that group exists (as the .deb's postinst sets it). A
  // rewritten file keeps its mode, owner and group.
  std::string tmp = usersFile + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  bool ok = fd >= 0;
  if (ok && hadFile) {
    if (::fchown(fd, old.st_uid, old.st_gid) != 0) (void)::fchown(fd, static_cast<uid_t>(-1), old.st_gid);
    ok = ::fchmod(fd, old.st_mode & 07777) == 0;
  } else if (ok) {
    if (const group* g = ::getgrnam("bitsd")) (void)::fchown(fd, static_cast<uid_t>(-1), g->gr_gid);
    ok = ::fchmod(fd, 0640) == 0;
  }
  if (!ok || ::write(fd, out.data(), out.size()) != static_cast<ssize_t>(out.size()) || ::fsync(fd) != 0 ||
      ::close(fd) != 0 || ::rename(tmp.c_str(), usersFile.c_str()) != 0) {
    fail("cannot write " + usersFile + ": " + std::strerror(errno));
  }
  std::printf("%s %s in %s\n", verb == "add" ? (exists ? "changed the password of" : "added") : "removed", name.c_str(),
              usersFile.c_str());
  return 0;
}

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.size() == 1 && args[0] == "--version") {
    std::fputs(bitsd::platform::versionText("bitsctl").c_str(), stdout);
    return 0;
  }
  // `--help` anywhere: help on stdout for the command named before it, exit 0.
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--help" || args[i] == "-h") {
      std::vector<std::string> words;
      for (size_t j = 0; j < i && args[j].rfind("-", 0) != 0; ++j) words.push_back(args[j]);
      std::fputs(helpText(words), stdout);
      return 0;
    }
  }
  if (!args.empty() && args[0] == "gen-cert") return genCertCommand(args);
  if (!args.empty() && args[0] == "user") return userCommand(args);
  if (!args.empty() && args[0] == "status") return statusCommand(args);
  std::string state;
  std::vector<std::string> words;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--state" && i + 1 < args.size()) {
      state = args[++i];
    } else if (args[i].rfind("--state=", 0) == 0) {
      state = args[i].substr(8);
    } else if (args[i].rfind("--", 0) == 0) {
      fail("unknown option " + args[i]);
    } else {
      words.push_back(args[i]);
    }
  }
  if (words.empty()) return usage();
  // The command first: a mistyped one is named as such, not as a missing --state.
  const bool known = words == std::vector<std::string>{"sessions"} ||
                     (words.size() == 2 && words[0] == "journal" &&
                      (words[1] == "dump" || words[1] == "verify" || words[1] == "compact"));
  if (!known) fail("unknown command '" + words[0] + (words.size() > 1 ? " " + words[1] : "") + "' (see --help)");
  if (state.empty()) fail("--state DIR is required");
  if (words[0] == "sessions") return sessions(state);
  if (words[1] == "dump") return dump(state);
  if (words[1] == "verify") return verify(state);
  return compact(state);
}
