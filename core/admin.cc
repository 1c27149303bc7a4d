// Owns the admin listener's content: Prometheus metrics text, the status JSON, the upload-rate
// estimate and its short answers (core/admin.h).
#include "core/admin.h"

#include "core/http_head.h"

#include <cstring>

namespace bitsd {

void AdminWriter::put(std::string_view s) {
  if (!ok_ || s.empty()) return;  // an empty view may have a null data(): no memcpy from it
  if (s.size() > cap_ - len_) {
    ok_ = false;
    return;
  }
  std::memcpy(buf_ + len_, s.data(), s.size());
  len_ += s.size();
}

void AdminWriter::putU64(uint64_t v) {
  char tmp[24];
  size_t n = 0;
  do {
    tmp[sizeof tmp - 1 - n++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0);
  put(std::string_view(tmp + sizeof tmp - n, n));
}

void AdminWriter::putDouble(double v, int decimals) {
  if (!(v >= 0)) v = 0;                    // NaN and negatives cannot happen; never print them
  if (v > 1e18) v = 1e18;
  uint64_t scale = 1;
  for (int i = 0; i < decimals; ++i) scale *= 10;
  auto fixed = static_cast<uint64_t>(v * static_cast<double>(scale) + 0.5);
  putU64(fixed / scale);
  if (decimals == 0) return;
  put(".");
  uint64_t frac = fixed % scale;
  for (uint64_t d = scale / 10; d > 0; d /= 10) {
    char c = static_cast<char>('0' + frac / d % 10);
    put(std::string_view(&c, 1));
  }
}

void AdminWriter::putJsonString(std::string_view s) {
  put("\"");
  static const char kHex[] = "0123456789abcdef";
  size_t start = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    // Quotes, backslashes, controls, and '<' (so a path can never close a <script> in a page that
    // embeds this JSON).
    if (c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != 0x7f) continue;
    put(s.substr(start, i - start));
    char esc[6] = {'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 15]};
    put(std::string_view(esc, 6));
    start = i + 1;
  }
  put(s.substr(start));
  put("\"");
}

int statusIndex(int status) {
  for (int i = 0; i < kStatusKinds - 1; ++i) {
    if (kCountedStatuses[i] == status) return i;
  }
  return kStatusKinds - 1;
}

const char* packetLabel(int packetIndex) {
  auto type = static_cast<PacketType>(packetIndex);
  return type == PacketType::Unknown ? "none" : packetTypeName(type);
}

void noteRate(Session& s, uint64_t ackedBytes, uint64_t nowMs) {
  double dt = nowMs > s.rateAtMs ? static_cast<double>(nowMs - s.rateAtMs) : 0.0;
  if (s.rateAtMs == 0) dt = kRateTauMs;  // first fragment: no history to average with
  s.rateBps = (s.rateBps * kRateTauMs + static_cast<double>(ackedBytes) * 1000.0) / (kRateTauMs + dt);
  s.rateAtMs = nowMs;
}

double currentRate(const Session& s, uint64_t nowMs) {
  if (s.rateAtMs == 0 || nowMs <= s.rateAtMs) return s.rateBps;
  return s.rateBps * kRateTauMs / (kRateTauMs + static_cast<double>(nowMs - s.rateAtMs));
}

namespace {

struct Line {
  AdminWriter& w;
  void head(const char* name, const char* type, const char* help) {
    w.put("# HELP ");
    w.put(name);
    w.put(" ");
    w.put(help);
    w.put("\n# TYPE ");
    w.put(name);
    w.put(" ");
    w.put(type);
    w.put("\n");
  }
  void value(const char* name, uint64_t v, std::string_view labels = {}) {
    w.put(name);
    if (!labels.empty()) {
      w.put("{");
      w.put(labels);
      w.put("}");
    }
    w.put(" ");
    w.putU64(v);
    w.put("\n");
  }
  void metric(const char* name, const char* type, const char* help, uint64_t v) {
    head(name, type, help);
    value(name, v);
  }
};

}  // namespace

bool formatMetrics(const MetricsSnapshot& m, AdminWriter& w) {
  Line l{w};
  l.head("bitsd_requests_total", "counter", "Requests answered, by BITS packet type and HTTP status.");
  if (m.requests != nullptr) {
    for (int p = 0; p < kPacketKinds; ++p) {
      for (int s = 0; s < kStatusKinds; ++s) {
        if (m.requests[p][s] == 0) continue;
        w.put("bitsd_requests_total{packet=\"");
        w.put(packetLabel(p));
        w.put("\",status=\"");
        if (s == kStatusKinds - 1) {
          w.put("other");
        } else {
          w.putU64(kCountedStatuses[s]);
        }
        w.put("\"} ");
        w.putU64(m.requests[p][s]);
        w.put("\n");
      }
    }
  }
  l.metric("bitsd_received_bytes_total", "counter", "Fragment body bytes received.", m.bytesReceived);
  l.metric("bitsd_written_bytes_total", "counter", "Upload bytes written to in-progress files.", m.bytesWritten);
  l.metric("bitsd_sessions_open", "gauge", "Upload sessions open or complete (not yet closed).", m.sessionsOpen);
  l.metric("bitsd_sessions_held", "gauge", "Session table entries in use (open sessions and tombstones).",
           m.sessionsHeld);
  l.metric("bitsd_sessions_capacity", "gauge", "Session table size (max-sessions).", m.sessionsCapacity);
  l.metric("bitsd_sessions_created_total", "counter", "Sessions created.", m.sessionsCreated);
  l.metric("bitsd_sessions_expired_total", "counter", "Sessions expired by the session timeouts.", m.sessionsExpired);
  l.metric("bitsd_sessions_evicted_total", "counter", "Open sessions expired early to make room (table full).",
           m.sessionsEvicted);
  l.metric("bitsd_uploads_committed_total", "counter", "Uploads committed to their destination (or handed off).",
           m.uploadsCommitted);
  l.metric("bitsd_handoffs_total", "counter", "Hand-offs to the server application started (POSTs).",
           m.handoffsStarted);
  l.head("bitsd_handoff_outcomes_total", "counter",
         "Hand-off outcomes: delivered (answer journaled), replayed (answered from an earlier delivery), "
         "refused (503: max-notifications busy), failed (unreachable, timed out, bad answer).");
  l.value("bitsd_handoff_outcomes_total", m.handoffsDelivered, "outcome=\"delivered\"");
  l.value("bitsd_handoff_outcomes_total", m.handoffsReplayed, "outcome=\"replayed\"");
  l.value("bitsd_handoff_outcomes_total", m.handoffsRefused, "outcome=\"refused\"");
  l.value("bitsd_handoff_outcomes_total", m.handoffsFailed, "outcome=\"failed\"");
  l.metric("bitsd_journal_bytes", "gauge", "Size of the journal file.", m.journalBytes);
  l.metric("bitsd_journal_compactions_total", "counter", "Journal compactions.", m.journalCompactions);
  l.metric("bitsd_journal_flushes_total", "counter", "Journal group commits (each one fdatasync).", m.journalFlushes);
  l.metric("bitsd_journal_failures_total", "counter", "Journal writes or syncs that failed.", m.journalFailures);
  l.metric("bitsd_journal_full_refusals_total", "counter", "Requests answered 503 because the journal was full.",
           m.journalRefusals);
  l.metric("bitsd_disk_full_total", "counter", "Writes refused because the disk was full.", m.diskFull);
  l.metric("bitsd_quota_refusals_total", "counter", "Create-Sessions refused by max-sessions-per-user.",
           m.quotaRefusals);
  l.metric("bitsd_takeovers_total", "counter", "Sessions taken from a stalled connection by a newer request.",
           m.takeovers);
  if (m.syncs != nullptr) {
    const SyncHistogram& h = *m.syncs;
    l.head("bitsd_fsync_seconds", "histogram",
           "Latency of the file syncs bitsd waits for (fdatasync of data and journal, directory fsync).");
    uint64_t cum = 0;
    for (int i = 0; i < SyncHistogram::kBuckets; ++i) {
      cum += h.counts[i];
      w.put("bitsd_fsync_seconds_bucket{le=\"");
      w.putDouble(static_cast<double>(SyncHistogram::kBoundsUs[i]) / 1e6, 4);
      w.put("\"} ");
      w.putU64(cum);
      w.put("\n");
    }
    l.value("bitsd_fsync_seconds_bucket", h.count, "le=\"+Inf\"");
    w.put("bitsd_fsync_seconds_sum ");
    w.putDouble(static_cast<double>(h.sumUs) / 1e6, 6);
    w.put("\n");
    l.value("bitsd_fsync_seconds_count", h.count);
  }
  l.metric("bitsd_connections_active", "gauge", "Open client connections.", m.connectionsActive);
  l.metric("bitsd_connections_accepted_total", "counter", "Client connections accepted.", m.connectionsAccepted);
  l.metric("bitsd_connections_refused_total", "counter", "Connections answered 503 beyond max-connections.",
           m.connectionsRefused);
  l.metric("bitsd_connection_timeouts_total", "counter", "Connections closed by a timeout.", m.connectionTimeouts);
  l.metric("bitsd_protocol_errors_total", "counter", "Requests the parser refused (400, 405, 414, 431, 505).",
           m.protocolErrors);
  l.metric("bitsd_request_slots_used", "gauge", "Request slots in use.", m.slotsUsed);
  l.metric("bitsd_request_slots", "gauge", "Request slots (request-slots).", m.slotsTotal);
  l.metric("bitsd_read_buffers_used", "gauge", "Read buffers in use.", m.buffersUsed);
  l.metric("bitsd_read_buffers", "gauge", "Read buffers (read-buffers).", m.buffersTotal);
  l.metric("bitsd_read_ahead_bytes_total", "counter",
           "Body bytes read into a second buffer while the write before them ran.", m.readAheadBytes);
  l.metric("bitsd_open_files", "gauge", "In-progress files open.", m.openFiles);
  l.metric("bitsd_open_files_max", "gauge", "In-progress files kept open at most (max-open-files).", m.openFilesMax);
  l.metric("bitsd_tls_handshakes_total", "counter", "TLS handshakes completed.", m.tlsHandshakes);
  l.metric("bitsd_tls_handshake_failures_total", "counter", "TLS handshakes that failed or timed out.",
           m.tlsFailures);
  l.metric("bitsd_forwarded_requests_total", "counter",
           "Farm mode: requests forwarded to the node that owns their session.", m.forwarded);
  l.metric("bitsd_forward_failures_total", "counter",
           "Farm mode: forwarded requests whose owner could not be reached or broke off.", m.forwardFailures);
  l.metric("bitsd_farm_live", "gauge", "Farm mode: 1 while this node holds a lease etcd confirmed, else 0.",
           m.farmLive);
  l.metric("bitsd_farm_claims_total", "counter", "Farm mode: transaction ids claimed in etcd before a POST.",
           m.farmClaims);
  l.metric("bitsd_farm_replays_total", "counter",
           "Farm mode: final fragments answered from an ended record in etcd (no POST).", m.farmReplays);
  l.metric("bitsd_farm_takeovers_total", "counter",
           "Farm mode: hand-offs taken over from a node that lost its lease (each is a repeat POST).",
           m.farmTakeovers);
  l.metric("bitsd_farm_unavailable_total", "counter",
           "Farm mode: requests answered 503 because etcd could not be asked or the lease was gone.",
           m.farmUnavailable);
  l.metric("bitsd_uptime_seconds", "gauge", "Seconds since bitsd started.", m.uptimeSeconds);
  return w.ok();
}

const char* sessionStateLabel(const Session& s) {
  switch (s.state) {
    case SessionState::Open: return s.busy ? "receiving" : "open";
    case SessionState::Complete: return "complete";
    case SessionState::Closed: return "closed";
    case SessionState::Free: break;
  }
  return "free";
}

bool sessionIsLive(const Session& s) { return s.state == SessionState::Open || s.state == SessionState::Complete; }

size_t formatClientAddress(const ClientAddress& a, char* out, size_t cap) {
  AdminWriter w(out, cap);
  if (a.family == 4) {
    for (int i = 0; i < 4; ++i) {
      if (i > 0) w.put(".");
      w.putU64(a.bytes[i]);
    }
  } else if (a.family == 6) {
    static const char kHex[] = "0123456789abcdef";
    for (int i = 0; i < 16; i += 2) {
      if (i > 0) w.put(":");
      unsigned v = static_cast<unsigned>(a.bytes[i]) << 8 | a.bytes[i + 1];
      char t[4];
      size_t n = 0;
      for (int sh = 12; sh >= 0; sh -= 4) {
        unsigned d = v >> sh & 15;
        if (n == 0 && d == 0 && sh > 0) continue;
        t[n++] = kHex[d];
      }
      w.put(std::string_view(t, n));
    }
  }
  return w.ok() ? w.size() : 0;
}

bool formatSessionJson(const Session& s, std::string_view path, std::string_view user, uint64_t nowMs,
                       AdminWriter& w) {
  size_t mark = w.size();
  char id[kSessionIdTextBytes];
  formatSessionId(s.id, id);
  char client[48];
  size_t clientLen = formatClientAddress(s.client, client, sizeof client);
  w.put("{\"id\":");
  w.putJsonString(std::string_view(id, sizeof id));
  w.put(",\"path\":");
  w.putJsonString(path);
  w.put(",\"user\":");
  w.putJsonString(user);
  w.put(",\"client\":");
  w.putJsonString(std::string_view(client, clientLen));
  w.put(",\"state\":\"");
  w.put(sessionStateLabel(s));
  w.put("\",\"bytes_acked\":");
  w.putU64(s.haveBytes);
  w.put(",\"total_bytes\":");
  if (s.totalKnown) {
    w.putU64(s.totalBytes);
  } else {
    w.put("null");
  }
  w.put(",\"rate_bytes_per_second\":");
  w.putU64(static_cast<uint64_t>(currentRate(s, nowMs)));
  w.put(",\"age_seconds\":");
  w.putU64(nowMs > s.createdMs ? (nowMs - s.createdMs) / 1000 : 0);
  w.put(",\"idle_seconds\":");
  w.putU64(nowMs > s.lastActivityMs ? (nowMs - s.lastActivityMs) / 1000 : 0);
  w.put("}");
  if (!w.ok()) {
    w.rollback(mark);
    return false;
  }
  return true;
}

}  // namespace bitsd

namespace bitsd {

std::string_view statusPageHtml() {
  // Kept small (a few KiB): inline style and script, no external assets, plain DOM calls.
  static constexpr char kPage[] = R"HTML(<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>bitsd status</title>
<style>
body{font:14px system-ui,sans-serif;margin:1.2em;color:#222;background:#fafafa}
h1{font-size:1.3em;margin:0 0 .6em}
#totals{display:flex;flex-wrap:wrap;gap:.5em;margin-bottom:1em}
#totals div{background:#fff;border:1px solid #ddd;border-radius:4px;padding:.35em .7em}
#totals b{display:block;font-size:1.2em}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{text-align:left;padding:.35em .5em;border-bottom:1px solid #eee;white-space:nowrap}
td.path{white-space:normal;word-break:break-all}
progress{width:9em;vertical-align:middle}
.muted{color:#888}#err{color:#b00}
</style></head><body>
<h1>bitsd <span class="muted" id="when"></span></h1>
<div id="totals"></div><div id="err"></div>
<table><thead><tr><th>Path</th><th>User</th><th>Client</th><th>Progress</th><th>Rate</th><th>Age</th><th>State</th></tr></thead>
<tbody id="rows"><tr><td colspan="7" class="muted">loading&hellip;</td></tr></tbody></table>
<script>
"use strict";
function size(n){var u=["B","KiB","MiB","GiB","TiB"],i=0;while(n>=1024&&i<4){n/=1024;i++}return(i?n.toFixed(1):n)+" "+u[i]}
function dur(s){if(s<60)return s+" s";if(s<3600)return Math.floor(s/60)+" min";return Math.floor(s/3600)+" h "+Math.floor(s%3600/60)+" min"}
function el(tag,text,cls){var e=document.createElement(tag);if(text!==undefined)e.textContent=text;if(cls)e.className=cls;return e}
function render(d){
  var t=document.getElementById("totals"),s=d.server;t.textContent="";
  [["sessions open",s.sessions_open],["uploads committed",s.uploads_committed],["received",size(s.bytes_received)],
   ["connections",s.connections_active],["requests",s.requests],["up",dur(s.uptime_seconds)]].forEach(function(p){
    var b=el("div",p[0]);b.insertBefore(el("b",String(p[1])),b.firstChild);t.appendChild(b)});
  var tb=document.getElementById("rows");tb.textContent="";
  if(!d.sessions.length){var r0=tb.insertRow();var c0=el("td","no live sessions","muted");c0.colSpan=7;r0.appendChild(c0)}
  d.sessions.forEach(function(x){
    var r=tb.insertRow();r.id="s"+x.id;
    r.appendChild(el("td",x.path,"path"));r.appendChild(el("td",x.user||"-"));r.appendChild(el("td",x.client||"-"));
    var c=el("td"),pct=x.total_bytes?Math.floor(x.bytes_acked*100/x.total_bytes):0,p=el("progress");
    p.max=100;p.value=pct;c.appendChild(p);
    c.appendChild(el("span"," "+(x.total_bytes===null?size(x.bytes_acked):pct+"% of "+size(x.total_bytes))));
    r.appendChild(c);r.appendChild(el("td",size(x.rate_bytes_per_second)+"/s"));
    r.appendChild(el("td",dur(x.age_seconds)));r.appendChild(el("td",x.state))});
  document.getElementById("when").textContent=new Date().toLocaleTimeString();
}
function tick(){fetch("/status.json",{cache:"no-store"}).then(function(r){if(!r.ok)throw new Error("HTTP "+r.status);return r.json()})
  .then(function(d){document.getElementById("err").textContent="";render(d)})
  .catch(function(e){document.getElementById("err").textContent="cannot read /status.json: "+e.message})
  .finally(function(){setTimeout(tick,1500)})}
tick();
</script></body></html>
)HTML";
  return std::string_view(kPage, sizeof kPage - 1);
}

size_t formatAdminAnswer(char* out, size_t cap, int status, std::string_view extraName,
                         std::string_view extraValue, std::string_view body, bool headOnly) {
  HeadWriter w(out, cap);
  w.statusLine(status).header("Content-Type", "text/plain; charset=utf-8").headerNumber("Content-Length", body.size());
  if (!extraName.empty()) w.header(extraName, extraValue);
  size_t n = w.header("Connection", "close").end();
  if (headOnly || body.size() > cap - n) return n;
  std::memcpy(out + n, body.data(), body.size());
  return n + body.size();
}

}  // namespace bitsd
