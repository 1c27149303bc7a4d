// core/admin: the metrics text, the session rows of /status.json, and the rate estimator.
#include "core/admin.h"

#include <gtest/gtest.h>

#include <string>

namespace bitsd {
namespace {

TEST(Admin, MetricsTextHasHelpTypeAndTheRequestTable) {
  uint64_t requests[kPacketKinds][kStatusKinds] = {};
  requests[static_cast<int>(PacketType::Fragment)][statusIndex(200)] = 7;
  requests[static_cast<int>(PacketType::Unknown)][statusIndex(599)] = 1;
  SyncHistogram h;
  h.observe(80);       // <= 100 us
  h.observe(3000);     // <= 5 ms
  h.observe(9000000);  // above every bound
  MetricsSnapshot m;
  m.requests = requests;
  m.syncs = &h;
  m.bytesReceived = 12345;
  m.forwarded = 41;
  m.readAheadBytes = 65536;
  m.forwardFailures = 2;
  char buf[32768];
  AdminWriter w(buf, sizeof buf);
  ASSERT_TRUE(formatMetrics(m, w));
  std::string t(w.data(), w.size());
  EXPECT_NE(t.find("# TYPE bitsd_requests_total counter\n"), std::string::npos);
  EXPECT_NE(t.find("bitsd_requests_total{packet=\"Fragment\",status=\"200\"} 7\n"), std::string::npos);
  EXPECT_NE(t.find("bitsd_requests_total{packet=\"none\",status=\"other\"} 1\n"), std::string::npos);
  EXPECT_NE(t.find("bitsd_received_bytes_total 12345\n"), std::string::npos);
  EXPECT_NE(t.find("bitsd_forwarded_requests_total 41\n"), std::string::npos);
  EXPECT_NE(t.find("bitsd_read_ahead_bytes_total 65536\n"), std::string::npos);
  EXPECT_NE(t.find("bitsd_forward_failures_total 2\n"), std::string::npos);
  EXPECT_NE(t.find("bitsd_fsync_seconds_bucket{le=\"0.0001\"} 1\n"), std::string::npos);
  EXPECT_NE(t.find("bitsd_fsync_seconds_bucket{le=\"0.0050\"} 2\n"), std::string::npos);
  EXPECT_NE(t.find("bitsd_fsync_seconds_bucket{le=\"5.0000\"} 2\n"), std::string::npos);
  EXPECT_NE(t.find("bitsd_fsync_seconds_bucket{le=\"+Inf\"} 3\n"), std::string::npos);
  EXPECT_NE(t.find("bitsd_fsync_seconds_sum 9.003080\n"), std::string::npos);
  EXPECT_NE(t.find("bitsd_fsync_seconds_count 3\n"), std::string::npos);
  // A buffer too small says so instead of sending half a text.
  AdminWriter small(buf, 100);
  EXPECT_FALSE(formatMetrics(m, small));
}

TEST(Admin, SessionRowEscapesItsPathAndShowsProgress) {
  Session s;
  s.state = SessionState::Open;
  s.totalKnown = true;
  s.totalBytes = 100;
  s.haveBytes = 37;
  s.createdMs = 1000;
  s.lastActivityMs = 4000;
  s.client.family = 4;
  s.client.bytes[0] = 192, s.client.bytes[1] = 0, s.client.bytes[2] = 2, s.client.bytes[3] = 7;
  char buf[1024];
  AdminWriter w(buf, sizeof buf);
  ASSERT_TRUE(formatSessionJson(s, "a\"b\\c<d\x01", "alice", 11000, w));
  std::string t(w.data(), w.size());
  EXPECT_NE(t.find("\"path\":\"a\\u0022b\\u005cc\\u003cd\\u0001\""), std::string::npos) << t;
  EXPECT_NE(t.find("\"user\":\"alice\",\"client\":\"192.0.2.7\",\"state\":\"open\""), std::string::npos) << t;
  EXPECT_NE(t.find("\"bytes_acked\":37,\"total_bytes\":100"), std::string::npos) << t;
  EXPECT_NE(t.find("\"age_seconds\":10,\"idle_seconds\":7}"), std::string::npos) << t;
  // A row that does not fit leaves the writer as it was.
  AdminWriter tiny(buf, 40);
  tiny.put("[");
  EXPECT_FALSE(formatSessionJson(s, "p", "", 0, tiny));
  EXPECT_TRUE(tiny.ok());
  EXPECT_EQ(tiny.size(), 1u);
}

TEST(Admin, RateFollowsTheAckedBytesAndDecaysWhenIdle) {
  Session s;
  // 1 MB acked every second for a minute: the estimate converges on 1 MB/s.
  for (uint64_t t = 1; t <= 60; ++t) noteRate(s, 1000000, t * 1000);
  EXPECT_NEAR(currentRate(s, 60000), 1e6, 1e4);
  // Ten seconds with nothing acked: shown as a third of it (tau / (tau + 10 s)).
  EXPECT_NEAR(currentRate(s, 70000), 1e6 / 3, 1e4);
}

TEST(Admin, ShortAnswersAreWholeHeadsWithTheirExtraHeaderAndBody) {
  char out[512];
  std::string a(out, formatAdminAnswer(out, sizeof out, 503, "Retry-After", "5", "too many password checks\n", false));
  EXPECT_EQ(a,
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 25\r\n"
            "Retry-After: 5\r\nConnection: close\r\n\r\ntoo many password checks\n");
  // HEAD: the same head, the body's length, no body.
  std::string h(out, formatAdminAnswer(out, sizeof out, 404, "", "", "not found\n", true));
  EXPECT_EQ(h, "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 10\r\n"
               "Connection: close\r\n\r\n");
  // A body that does not fit is left out; the head stays whole.
  char small[120];
  std::string t(small, formatAdminAnswer(small, sizeof small, 431, "", "", std::string(200, 'x'), false));
  EXPECT_EQ(t.rfind("HTTP/1.1 431 Request Header Fields Too Large\r\n", 0), 0u);
  EXPECT_EQ(t.substr(t.size() - 4), "\r\n\r\n");
}

}  // namespace
}  // namespace bitsd
