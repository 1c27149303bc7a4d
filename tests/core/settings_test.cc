#include "core/settings.h"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <vector>

namespace bitsd {
namespace {

TEST(Settings, AppliesKeyValueTextWithCommentsAndSuffixes) {
  Settings s;
  std::string err;
  ASSERT_TRUE(applySettingsText(&s,
                                "# comment\n"
                                "listen = 0.0.0.0:9000\n"
                                "\n"
                                "max-fragment-bytes = 2M   # trailing comment\r\n"
                                "read-buffer-bytes=16K\n"
                                "allow-overwrites = yes\n"
                                "session-timeout = 60\n",
                                "test", &err))
      << err;
  EXPECT_EQ(s.listen, "0.0.0.0:9000");
  EXPECT_EQ(s.maxFragmentBytes, 2u * 1024 * 1024);
  EXPECT_EQ(s.readBufferBytes, 16u * 1024);
  EXPECT_TRUE(s.allowOverwrites);
  EXPECT_EQ(s.sessionTimeoutSeconds, 60u);
}

TEST(Settings, ErrorsNameTheOriginLineAndKey) {
  Settings s;
  std::string err;
  EXPECT_FALSE(applySettingsText(&s, "listen = a:1\nmax-sessions = lots\n", "config file x.conf", &err));
  EXPECT_EQ(err, "config file x.conf:2: invalid value 'lots' for max-sessions: expected a whole number");
  EXPECT_FALSE(applySettingsText(&s, "no-such-key = 1\n", "f", &err));
  EXPECT_EQ(err, "f:1: unknown setting 'no-such-key'");
  EXPECT_FALSE(applySettingsText(&s, "just words\n", "f", &err));
  EXPECT_NE(err.find("expected 'key = value'"), std::string::npos);
  // A key twice in one file is a mistake, not "the last one wins" (as nginx).
  EXPECT_FALSE(applySettingsText(&s, "max-sessions = 10\n# comment\nmax-sessions = 20\n", "config file y.conf", &err));
  EXPECT_EQ(err, "config file y.conf:3: max-sessions is set twice (first on line 1)");
  // Each text on its own: a file may set what the board's defaults set.
  ASSERT_TRUE(applySettingsText(&s, "max-sessions = 10\n", "board", &err)) << err;
  ASSERT_TRUE(applySettingsText(&s, "max-sessions = 20\n", "config", &err)) << err;
  EXPECT_EQ(s.maxSessions, 20u);
  EXPECT_FALSE(applySetting(&s, "fdatasync", "maybe", &err));
  EXPECT_FALSE(applySetting(&s, "max-connections", "99999999999", &err));
}

TEST(Settings, EveryHelpKeyIsAKnownSetting) {
  std::string help = settingsHelp();
  size_t pos = 0;
  int keys = 0;
  while ((pos = help.find("--", pos)) != std::string::npos) {
    size_t end = help.find_first_of(" \n", pos);
    std::string key = help.substr(pos + 2, end - pos - 2);
    bool isBool = false;
    EXPECT_TRUE(isSettingKey(key, &isBool)) << key;
    pos = end;
    ++keys;
  }
  EXPECT_GE(keys, 20);
}

TEST(Settings, ValidationRejectsImpossibleLimits) {
  Settings s;
  std::string err;
  EXPECT_TRUE(validateSettings(s, &err)) << err;
  s.maxConnections = 0;
  EXPECT_FALSE(validateSettings(s, &err));
  EXPECT_EQ(err, "max-connections must be at least 1");
  s = Settings();
  s.maxFragmentBytes = 100;
  EXPECT_FALSE(validateSettings(s, &err));
  s = Settings();
  s.logLevel = "loud";
  EXPECT_FALSE(validateSettings(s, &err));
}

TEST(Settings, ThreadPoolIsOneTo1024AndNeedsARestart) {
  Settings s;
  std::string err;
  ASSERT_TRUE(applySetting(&s, "thread-pool", "16", &err)) << err;
  EXPECT_EQ(s.threadPool, 16u);
  EXPECT_TRUE(validateSettings(s, &err)) << err;
  for (uint32_t bad : {0u, 1025u}) {
    s.threadPool = bad;
    EXPECT_FALSE(validateSettings(s, &err)) << bad;
    EXPECT_EQ(err, "thread-pool must be 1..1024");
  }
  EXPECT_FALSE(applySetting(&s, "thread-pool", "many", &err));
  EXPECT_FALSE(isLiveSetting("thread-pool"));
}

TEST(Settings, SessionQuotaAndIdleTimeout) {
  Settings s;
  EXPECT_EQ(s.maxSessionsPerUser, 50u);  // IIS BITSNumberOfSessionsLimit
  EXPECT_EQ(s.idleSessionTimeoutSeconds, 3600u);
  std::string err;
  ASSERT_TRUE(applySettingsText(&s, "max-sessions-per-user = 5\nidle-session-timeout = 90\n", "t", &err)) << err;
  EXPECT_EQ(s.maxSessionsPerUser, 5u);
  EXPECT_EQ(s.idleSessionTimeoutSeconds, 90u);
  EXPECT_TRUE(validateSettings(s, &err)) << err;
  s.maxSessionsPerUser = 0;  // no limit
  EXPECT_TRUE(validateSettings(s, &err)) << err;
  EXPECT_FALSE(applySetting(&s, "max-sessions-per-user", "many", &err));
  EXPECT_EQ(err, "invalid value 'many' for max-sessions-per-user: expected a whole number");
  s.idleSessionTimeoutSeconds = 0;
  EXPECT_FALSE(validateSettings(s, &err));
  EXPECT_EQ(err, "idle-session-timeout must be at least 1 second");
}

TEST(Settings, HostIdMustBeAHostAndTheFallbackPositive) {
  Settings s;
  std::string err;
  for (const char* good : {"node-1.farm.example", "10.0.0.7", "[fe80::1]", "node1:8080"}) {
    s.hostId = good;
    EXPECT_TRUE(validateSettings(s, &err)) << good << ": " << err;
  }
  // Anything that could break out of the header, or is not a host, is refused with one line.
  for (const char* bad : {"node 1", "node\r\nX-Evil: 1", "http://node1/", "node1/path"}) {
    s.hostId = bad;
    EXPECT_FALSE(validateSettings(s, &err)) << bad;
    EXPECT_NE(err.find("host-id must be"), std::string::npos) << err;
  }
  s.hostId = std::string(201, 'a');
  EXPECT_FALSE(validateSettings(s, &err));
  s.hostId = "node1";
  s.hostIdFallbackTimeoutSeconds = 0;
  EXPECT_FALSE(validateSettings(s, &err));
  EXPECT_EQ(err, "host-id-fallback-timeout must be 1..4294967295 seconds");
}

TEST(Settings, FarmModeIsOffByDefaultAndNeedsAHostId) {
  Settings s;
  std::string err;
  EXPECT_FALSE(farmMode(s));
  EXPECT_EQ(s.farmName, "default");
  EXPECT_EQ(s.farmLeaseSeconds, 10u);
  ASSERT_TRUE(applySettingsText(&s,
                                "farm-etcd = http://10.0.0.1:2379, http://10.0.0.2:2379/\n"
                                "farm-name = site-a.1\nfarm-lease-seconds = 4\n",
                                "t", &err))
      << err;
  EXPECT_TRUE(farmMode(s));
  EXPECT_EQ(farmEtcdEndpoints(s), (std::vector<std::string>{"http://10.0.0.1:2379", "http://10.0.0.2:2379"}));
  EXPECT_FALSE(validateSettings(s, &err));
  EXPECT_EQ(err, "farm-etcd needs host-id: the node's name in the farm");
  s.hostId = "n2";
  EXPECT_TRUE(validateSettings(s, &err)) << err;
  // None of them changes on SIGHUP: a node's place in the farm is fixed while it runs.
  for (const char* key : {"farm-etcd", "farm-etcd-cacert", "farm-etcd-cert", "farm-etcd-key", "farm-name",
                          "farm-peer-url", "farm-lease-seconds"}) {
    EXPECT_FALSE(isLiveSetting(key)) << key;
    bool isBool = true;
    EXPECT_TRUE(isSettingKey(key, &isBool)) << key;
    EXPECT_FALSE(isBool) << key;
    EXPECT_NE(std::string(settingsHelp()).find(std::string("--") + key + " "), std::string::npos) << key;
  }
  Settings next = s;
  next.farmName = "other";
  next.farmLeaseSeconds = 30;
  SettingsDiff d = diffSettings(s, next);
  EXPECT_TRUE(d.live.empty());
  EXPECT_EQ(d.restart.size(), 2u);
  copyLiveSettings(next, &s);
  EXPECT_EQ(s.farmName, "site-a.1");
}

TEST(Settings, FarmValuesAreCheckedWithOneLineEach) {
  Settings base;
  base.hostId = "n1";
  base.farmEtcd = "http://127.0.0.1:2379";
  std::string err;
  ASSERT_TRUE(validateSettings(base, &err)) << err;
  struct Case {
    void (*set)(Settings&);
    const char* error;
  } cases[] = {
      {[](Settings& s) { s.farmEtcd = "127.0.0.1:2379"; },
       "farm-etcd: '127.0.0.1:2379' is not an http:// or https:// URL with a host"},
      {[](Settings& s) { s.farmEtcd = "http://a:1,ftp://b"; },
       "farm-etcd: 'ftp://b' is not an http:// or https:// URL with a host"},
      {[](Settings& s) { s.farmEtcd = "http://"; }, "farm-etcd: 'http:' is not an http:// or https:// URL with a host"},
      {[](Settings& s) { s.farmEtcd = ","; },
       "farm-etcd must name at least one etcd URL (http:// or https://, comma-separated)"},
      {[](Settings& s) { s.farmEtcd = "http://a:1,https://b:2"; },
       "farm-etcd with an https:// URL needs farm-etcd-cacert (the CA that signed etcd's certificate)"},
      {[](Settings& s) { s.farmEtcdCert = "c.pem"; },
       "farm-etcd-cert and farm-etcd-key go together (a client certificate needs both)"},
      {[](Settings& s) { s.farmName = "a/b"; }, "farm-name must be 1..64 of A-Z a-z 0-9 . _ -"},
      {[](Settings& s) { s.farmName = std::string(65, 'a'); }, "farm-name must be 1..64 of A-Z a-z 0-9 . _ -"},
      {[](Settings& s) { s.farmLeaseSeconds = 1; }, "farm-lease-seconds must be 2..3600"},
      {[](Settings& s) { s.farmLeaseSeconds = 3601; }, "farm-lease-seconds must be 2..3600"},
      {[](Settings& s) { s.farmPeerUrl = "node1:8080"; }, "farm-peer-url must be an http:// or https:// URL with a host"},
      {[](Settings& s) { s.farmPeerUrl = "http://n1:80/\r\nX: y"; },
       "farm-peer-url must be an http:// or https:// URL with a host"},
      {[](Settings& s) {
         s.farmEtcd.clear();
         s.farmPeerUrl = "http://n1:8080";
       },
       "farm-etcd-cacert, farm-etcd-cert, farm-etcd-key and farm-peer-url need farm-etcd (farm mode)"},
  };
  for (const Case& c : cases) {
    Settings s = base;
    c.set(s);
    err.clear();
    EXPECT_FALSE(validateSettings(s, &err)) << c.error;
    EXPECT_EQ(err, c.error);
  }
  Settings tls = base;
  tls.farmEtcd = "https://a:2379,https://b:2379";
  tls.farmEtcdCacert = "ca.pem";
  tls.farmEtcdCert = "c.pem";
  tls.farmEtcdKey = "k.pem";
  EXPECT_TRUE(validateSettings(tls, &err)) << err;
  EXPECT_FALSE(applyFlag(&tls, "farm-lease-seconds", "ten", &err));
  EXPECT_EQ(err, "--farm-lease-seconds: expected a whole number, got 'ten'");
}

TEST(Settings, FarmPeerUrlDefaultsToTheListenersSchemeAndPortWithTheHostId) {
  Settings s;
  s.listen = "0.0.0.0:8080";
  s.hostId = "127.0.0.2";
  EXPECT_EQ(farmPeerUrl(s), "http://127.0.0.2:8080");
  EXPECT_EQ(farmPeerUrl(s, 39001), "http://127.0.0.2:39001");  // listen port 0: the port bound
  s.tlsCert = "c.pem";
  s.tlsKey = "k.pem";
  EXPECT_EQ(farmPeerUrl(s), "https://127.0.0.2:8080");
  s.hostId = "node2:8443";  // a host-id with its own port keeps it
  EXPECT_EQ(farmPeerUrl(s), "https://node2:8443");
  s.hostId = "[fe80::2]";
  s.listen = "[::]:8443";
  EXPECT_EQ(farmPeerUrl(s), "https://[fe80::2]:8443");
  s.farmPeerUrl = "http://10.1.1.2:9000";
  EXPECT_EQ(farmPeerUrl(s), "http://10.1.1.2:9000");
}

TEST(Settings, TlsBufferAndRecordSizesAreTheOnesTlsCanUse) {
  Settings s;
  std::string err;
  for (uint32_t good : {512u, 1024u, 2048u, 4096u, 16384u}) {
    s.tlsRecordBytes = good;
    EXPECT_TRUE(validateSettings(s, &err)) << good << ": " << err;
  }
  for (uint32_t bad : {0u, 511u, 8192u, 32768u}) {
    s.tlsRecordBytes = bad;
    EXPECT_FALSE(validateSettings(s, &err)) << bad;
    EXPECT_EQ(err, "tls-record-bytes must be 512, 1K, 2K, 4K or 16K (the sizes TLS can announce)");
  }
  s = Settings();
  s.tlsBufferBytes = 1023;
  EXPECT_FALSE(validateSettings(s, &err));
  EXPECT_EQ(err, "tls-buffer-bytes must be 1K..1M");
  s.tlsBufferBytes = 1024;
  EXPECT_TRUE(validateSettings(s, &err)) << err;
}

TEST(Settings, HeaderBudgetAndMinRate) {
  Settings s;
  std::string err;
  ASSERT_TRUE(applySetting(&s, "header-budget-ms", "1500", &err)) << err;
  ASSERT_TRUE(applySetting(&s, "header-min-rate", "0", &err)) << err;
  EXPECT_EQ(s.headerBudgetMs, 1500u);
  EXPECT_EQ(s.headerMinRate, 0u);
  EXPECT_TRUE(validateSettings(s, &err)) << err;
  EXPECT_FALSE(applySetting(&s, "header-min-rate", "fast", &err));
  EXPECT_EQ(err, "invalid value 'fast' for header-min-rate: expected a whole number");
  s.headerBudgetMs = 0;
  EXPECT_FALSE(validateSettings(s, &err));
  EXPECT_EQ(err, "header-budget-ms must be at least 1");
  s = Settings();
  s.headerMinRate = 1000001;
  EXPECT_FALSE(validateSettings(s, &err));
  EXPECT_EQ(err, "header-min-rate must be 0..1000000 bytes/s");
}

TEST(Settings, WritebackBytesIsOffOrAtLeast64K) {
  Settings s;
  std::string err;
  EXPECT_EQ(s.writebackBytes, 1u << 20);
  ASSERT_TRUE(applySetting(&s, "writeback-bytes", "4M", &err)) << err;
  EXPECT_EQ(s.writebackBytes, 4u << 20);
  EXPECT_TRUE(validateSettings(s, &err)) << err;
  ASSERT_TRUE(applyFlag(&s, "writeback-bytes", "0", &err)) << err;
  EXPECT_EQ(s.writebackBytes, 0u);
  EXPECT_TRUE(validateSettings(s, &err)) << err;
  ASSERT_TRUE(applySetting(&s, "writeback-bytes", "16K", &err)) << err;
  EXPECT_FALSE(validateSettings(s, &err));
  EXPECT_EQ(err, "writeback-bytes must be 0 (off) or at least 64K");
  EXPECT_FALSE(applyFlag(&s, "writeback-bytes", "lots", &err));
  EXPECT_NE(err.find("--writeback-bytes"), std::string::npos) << err;
}

TEST(Settings, AdminListenIsOffByDefaultAndABarePortIsLoopback) {
  Settings s;
  std::string err;
  EXPECT_EQ(adminListenAddress(s), "");
  ASSERT_TRUE(applySetting(&s, "admin-listen", "9090", &err)) << err;
  EXPECT_TRUE(validateSettings(s, &err)) << err;
  EXPECT_EQ(adminListenAddress(s), "127.0.0.1:9090");
  ASSERT_TRUE(applySetting(&s, "admin-listen", "[::1]:9091", &err)) << err;
  EXPECT_TRUE(validateSettings(s, &err)) << err;
  EXPECT_EQ(adminListenAddress(s), "[::1]:9091");
  for (const char* bad : {"0.0.0.0:http", "99999", ":9090", "localhost:"}) {
    s.adminListen = bad;
    EXPECT_FALSE(validateSettings(s, &err)) << bad;
    EXPECT_EQ(err, "admin-listen must be ADDR:PORT or a port number (0..65535)");
  }
  s = Settings();
  s.adminUsers = "alice";
  EXPECT_FALSE(validateSettings(s, &err));
  EXPECT_EQ(err, "admin-users needs users-file (who the users are)");
  s.usersFile = "users";
  s.allowBasicOverHttp = true;
  s.adminUsers = "alice bob";
  EXPECT_TRUE(validateSettings(s, &err)) << err;
  s.adminUsers = "alice b:b";
  EXPECT_FALSE(validateSettings(s, &err));
  EXPECT_EQ(err, "admin-users: 'b:b' is not a user name (1..32 of A-Z a-z 0-9 . _ -)");
}

// With fdatasync off, a thread pool left at the board's value is at most 4 threads; one set in a
// config file or a flag is used as given, and fdatasync on changes nothing.
TEST(Settings, ThreadPoolFollowsFdatasyncUnlessSet) {
  Settings board;
  std::string err;
  ASSERT_TRUE(applySettingsText(&board, "thread-pool = 16\n", "board", &err)) << err;
  board.threadPoolSet = false;  // as parseCommandLine does after the board's text
  EXPECT_EQ(effectiveThreadPool(board), 16u);
  Settings off = board;
  ASSERT_TRUE(applySetting(&off, "fdatasync", "off", &err)) << err;
  EXPECT_EQ(effectiveThreadPool(off), kNoSyncThreadPool);
  Settings set = off;
  ASSERT_TRUE(applySetting(&set, "thread-pool", "16", &err)) << err;
  EXPECT_EQ(effectiveThreadPool(set), 16u);
  Settings small = off;
  ASSERT_TRUE(applySettingsText(&small, "thread-pool = 2\n", "config", &err)) << err;
  EXPECT_EQ(effectiveThreadPool(small), 2u);
  Settings boardSmall;
  ASSERT_TRUE(applySettingsText(&boardSmall, "thread-pool = 2\nfdatasync = off\n", "board", &err)) << err;
  boardSmall.threadPoolSet = false;
  EXPECT_EQ(effectiveThreadPool(boardSmall), 2u);  // never raised
}

// --help gives each key's default as the board sets it, written as a config file would.
TEST(Settings, HelpWithDefaultsGivesEachKeysValue) {
  Settings s;
  std::string err;
  ASSERT_TRUE(applySettingsText(&s, "read-buffer-bytes = 256K\nfdatasync = off\nlisten = 0.0.0.0:80\n", "board", &err));
  std::string help = settingsHelp(s);
  EXPECT_NE(help.find("--read-buffer-bytes V"), std::string::npos);
  EXPECT_NE(help.find("[default: 256K]"), std::string::npos) << help;
  EXPECT_NE(help.find("sync data before each Ack (turn off only for benchmarks) [default: off]"), std::string::npos);
  EXPECT_NE(help.find("[default: 0.0.0.0:80]"), std::string::npos);
  EXPECT_NE(help.find("[default: (empty)]"), std::string::npos);  // host-id
  size_t lines = 0, withDefault = 0;
  for (size_t pos = 0; (pos = help.find("  --", pos)) != std::string::npos; ++pos) ++lines;
  for (size_t pos = 0; (pos = help.find("[default: ", pos)) != std::string::npos; ++pos) ++withDefault;
  EXPECT_EQ(withDefault, lines);
}

// Every option line of --help keeps its name apart from its help, however long the name (a
// 25-character name once ran into its text: "--tls-handshake-timeout-ms Vtime a client...").
TEST(Settings, HelpNeverRunsANameIntoItsText) {
  std::string help = settingsHelp();
  size_t lines = 0;
  for (size_t pos = 0; pos < help.size();) {
    size_t nl = help.find('\n', pos);
    std::string line = help.substr(pos, nl - pos);
    pos = nl == std::string::npos ? help.size() : nl + 1;
    if (line.rfind("  --", 0) != 0) continue;
    ++lines;
    size_t end = line.find(' ', 4);
    if (end != std::string::npos && line.compare(end, 2, " V") == 0) end += 2;  // the value placeholder
    EXPECT_TRUE(end == std::string::npos || end == line.size() || line[end] == ' ') << line;
  }
  EXPECT_GE(lines, 40u);
}


// --- SIGHUP: which settings change live ------------------------------------------------------------

std::vector<std::string> names(const std::vector<const char*>& keys) { return {keys.begin(), keys.end()}; }

TEST(SettingsReload, DiffSortsChangesIntoLiveAndRestart) {
  Settings running;
  running.tlsCert = "a.crt";
  running.tlsKey = "a.key";
  EXPECT_TRUE(diffSettings(running, running).live.empty());
  EXPECT_TRUE(diffSettings(running, running).restart.empty());
  Settings next = running;
  next.maxUploadSizeBytes = 1000;
  next.logLevel = "debug";
  next.headerBudgetMs = 10;
  next.tlsCert = "b.crt";
  next.listen = "0.0.0.0:1";
  next.state = "elsewhere";
  next.requestSlots = 8;
  next.maxConnections = 2;
  next.notifyType = "value";
  SettingsDiff d = diffSettings(running, next);
  EXPECT_EQ(names(d.live), (std::vector<std::string>{"max-upload-size", "log-level", "tls-cert", "header-budget-ms"}));
  EXPECT_EQ(names(d.restart),
            (std::vector<std::string>{"listen", "state", "notify-type", "max-connections", "request-slots"}));
}

TEST(SettingsReload, HttpsOnOrOffAndANewUsersFileNeedARestart) {
  Settings plain;
  Settings tls = plain;
  tls.tlsCert = "c.crt";
  tls.tlsKey = "c.key";
  EXPECT_EQ(names(diffSettings(plain, tls).restart), (std::vector<std::string>{"tls-cert", "tls-key"}));
  EXPECT_EQ(names(diffSettings(tls, plain).restart), (std::vector<std::string>{"tls-cert", "tls-key"}));
  Settings users = plain;
  users.usersFile = "u";
  Settings withLocations = users;
  withLocations.locations = "/a alice";
  EXPECT_EQ(names(diffSettings(users, withLocations).live), (std::vector<std::string>{"locations"}));
  EXPECT_EQ(names(diffSettings(plain, withLocations).restart), (std::vector<std::string>{"users-file", "locations"}));
}

TEST(SettingsReload, CopyLiveTakesOnlyTheLiveSettings) {
  Settings running;
  Settings next;
  next.maxUploadSizeBytes = 1000;
  next.sessionTimeoutSeconds = 7;
  next.bodyTimeoutMs = 5;
  next.listen = "0.0.0.0:1";
  next.readBuffers = 3;
  next.fdatasync = false;
  copyLiveSettings(next, &running);
  EXPECT_EQ(running.maxUploadSizeBytes, 1000u);
  EXPECT_EQ(running.sessionTimeoutSeconds, 7u);
  EXPECT_EQ(running.bodyTimeoutMs, 5u);
  EXPECT_EQ(running.listen, Settings().listen);
  EXPECT_EQ(running.readBuffers, Settings().readBuffers);
  EXPECT_TRUE(running.fdatasync);
  // After the copy, only the restart keys still differ.
  SettingsDiff d = diffSettings(running, next);
  EXPECT_TRUE(d.live.empty());
  EXPECT_EQ(names(d.restart), (std::vector<std::string>{"listen", "fdatasync", "read-buffers"}));
}

TEST(SettingsReload, PoolSizesNeedARestart) {
  for (const char* key : {"listen", "root", "state", "max-connections", "max-sessions", "request-slots", "read-buffers",
                          "read-buffer-bytes", "max-open-files", "max-header-bytes", "journal-max-bytes",
                          "journal-buffer-bytes", "writeback-bytes", "max-notifications", "users-file",
                          "transaction-header"}) {
    EXPECT_FALSE(isLiveSetting(key)) << key;
  }
  for (const char* key : {"max-upload-size", "max-sessions-per-user", "max-fragment-bytes", "session-timeout",
                          "idle-session-timeout", "header-budget-ms", "log-level", "notify-url", "locations"}) {
    EXPECT_TRUE(isLiveSetting(key)) << key;
  }
}

// The README's reload table is reloadTable(), verbatim: the code is the one source.
TEST(SettingsReload, ReadmeCarriesTheReloadTable) {
  std::ifstream f(std::string(BITSD_TEST_DATA_DIR) + "/../../README.md");
  ASSERT_TRUE(f.good());
  std::stringstream text;
  text << f.rdbuf();
  EXPECT_NE(text.str().find(reloadTable()), std::string::npos)
      << "README.md's reload table differs from core/settings.cc; paste this:\n"
      << reloadTable();
}

TEST(SettingsFlags, BadOnOffAndEnumValuesNameTheFlagAndTheValue) {
  Settings s;
  std::string err;
  EXPECT_FALSE(applyFlag(&s, "fdatasync", "maybe", &err));
  EXPECT_EQ(err, "--fdatasync: expected on or off, got 'maybe'");
  EXPECT_FALSE(applyFlag(&s, "log-level", "loud", &err));
  EXPECT_EQ(err, "--log-level: expected debug, info, warn or error, got 'loud'");
  EXPECT_FALSE(applyFlag(&s, "notify-type", "or", &err));
  EXPECT_EQ(err, "--notify-type: expected none, reference or value, got 'or'");
  EXPECT_FALSE(applyFlag(&s, "max-sessions", "many", &err));
  EXPECT_EQ(err, "--max-sessions: expected a whole number, got 'many'");
  EXPECT_TRUE(applyFlag(&s, "log-level", "warn", &err));
  EXPECT_EQ(s.logLevel, "warn");
  EXPECT_TRUE(applyFlag(&s, "fdatasync", "off", &err));
  EXPECT_FALSE(s.fdatasync);
  // The config file says the same, with its origin.
  EXPECT_FALSE(applySettingsText(&s, "digest = sometimes\n", "f", &err));
  EXPECT_EQ(err, "f:1: invalid value 'sometimes' for digest: expected on or off");
}

TEST(Settings, AccessLog) {
  Settings s;
  EXPECT_TRUE(s.accessLog.empty());  // off by default
  EXPECT_EQ(s.accessLogFormat, "text");
  std::string err;
  ASSERT_TRUE(applySettingsText(&s, "access-log = /var/log/bitsd/access.log\naccess-log-format = json\n", "t", &err))
      << err;
  EXPECT_EQ(s.accessLog, "/var/log/bitsd/access.log");
  EXPECT_EQ(s.accessLogFormat, "json");
  EXPECT_TRUE(validateSettings(s, &err)) << err;
  s.accessLogFormat = "xml";
  EXPECT_FALSE(validateSettings(s, &err));
  EXPECT_EQ(err, "access-log-format must be text or json");
}

}  // namespace
}  // namespace bitsd
