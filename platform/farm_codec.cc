// Owns the farm's JSON: record values and the gateway's key-value answers (platform/farm_codec.h).
#include "platform/farm_codec.h"

#include <cjson/cJSON.h>
#include <mbedtls/base64.h>

#include <cstdlib>
#include <cstring>

#include "core/notify.h"
#include "core/protocol.h"

namespace bitsd::platform {

std::string farmPrinted(cJSON* o) {
  std::string s;
  if (char* p = cJSON_PrintUnformatted(o)) {
    s = p;
    cJSON_free(p);
  }
  cJSON_Delete(o);
  return s;
}

namespace {

std::string sessionText(const SessionId& id) {
  char t[kSessionIdTextBytes];
  formatSessionId(id, t);
  return std::string(t, kSessionIdTextBytes);
}

std::string str(const cJSON* o, const char* name) {
  const cJSON* v = cJSON_GetObjectItemCaseSensitive(o, name);
  return cJSON_IsString(v) ? std::string(v->valuestring) : std::string();
}

// A non-negative integer field written as a JSON number; false when present and not one.
bool num(const cJSON* o, const char* name, uint64_t max, uint64_t* out) {
  const cJSON* v = cJSON_GetObjectItemCaseSensitive(o, name);
  if (v == nullptr) {
    *out = 0;
    return true;
  }
  if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > static_cast<double>(max)) return false;
  *out = static_cast<uint64_t>(v->valuedouble);
  return true;
}

cJSON* parseObject(std::string_view json) {
  cJSON* o = cJSON_ParseWithLength(json.data(), json.size());
  if (o != nullptr && !cJSON_IsObject(o)) {
    cJSON_Delete(o);
    return nullptr;
  }
  return o;
}

}  // namespace

std::string farmB64(std::string_view bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3), '\0');
  out.resize(base64Encode(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), out.data()));
  return out;
}

bool farmUnB64(std::string_view text, std::string* out) {
  size_t n = 0;
  out->assign(text.size() / 4 * 3 + 3, '\0');
  if (mbedtls_base64_decode(reinterpret_cast<unsigned char*>(out->data()), out->size(), &n,
                            reinterpret_cast<const unsigned char*>(text.data()), text.size()) != 0) {
    out->clear();
    return false;
  }
  out->resize(n);
  return true;
}

int64_t farmJsonInt(const cJSON* obj, const char* name) {
  const cJSON* v = cJSON_GetObjectItemCaseSensitive(obj, name);
  if (cJSON_IsNumber(v)) return static_cast<int64_t>(v->valuedouble);
  if (!cJSON_IsString(v) || v->valuestring[0] == '\0') return 0;
  char* end = nullptr;
  long long x = std::strtoll(v->valuestring, &end, 10);
  return *end == '\0' ? static_cast<int64_t>(x) : 0;
}

std::string farmEncodeNode(std::string_view peerUrl, uint64_t startedUnix) {
  cJSON* o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "peer", std::string(peerUrl).c_str());
  cJSON_AddNumberToObject(o, "started", static_cast<double>(startedUnix));
  return farmPrinted(o);
}

bool farmDecodeNode(std::string_view json, std::string* peerUrl) {
  cJSON* o = parseObject(json);
  if (o == nullptr) return false;
  *peerUrl = str(o, "peer");
  cJSON_Delete(o);
  return true;
}

std::string farmEncodeSession(std::string_view node) {
  cJSON* o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "node", std::string(node).c_str());
  return farmPrinted(o);
}

bool farmDecodeSession(std::string_view json, std::string* node) {
  cJSON* o = parseObject(json);
  if (o == nullptr) return false;
  *node = str(o, "node");
  cJSON_Delete(o);
  return !node->empty();
}

std::string farmEncodeBegan(std::string_view node, std::string_view token, const SessionId& session, uint64_t atUnix) {
  cJSON* o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "state", "began");
  cJSON_AddStringToObject(o, "node", std::string(node).c_str());
  cJSON_AddStringToObject(o, "token", std::string(token).c_str());
  cJSON_AddStringToObject(o, "session", sessionText(session).c_str());
  cJSON_AddNumberToObject(o, "at", static_cast<double>(atUnix));
  return farmPrinted(o);
}

std::string farmEncodeEnded(std::string_view node, const FarmEnded& e, const std::string* reply, uint64_t atUnix) {
  cJSON* o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "state", "ended");
  cJSON_AddStringToObject(o, "node", std::string(node).c_str());
  cJSON_AddStringToObject(o, "session", sessionText(e.session).c_str());
  cJSON_AddNumberToObject(o, "status", e.status);
  cJSON_AddNumberToObject(o, "hresult", e.hresult);
  cJSON_AddNumberToObject(o, "flags", e.flags);
  cJSON_AddNumberToObject(o, "replyBytes", static_cast<double>(e.replyBytes));
  cJSON_AddStringToObject(o, "replySession", sessionText(e.replySession).c_str());
  cJSON_AddStringToObject(o, "staticUrl", std::string(e.staticUrl).c_str());
  if (reply != nullptr) cJSON_AddStringToObject(o, "reply", farmB64(*reply).c_str());
  cJSON_AddNumberToObject(o, "at", static_cast<double>(atUnix));
  return farmPrinted(o);
}

bool farmDecodeTx(std::string_view json, FarmTxRecord* out) {
  *out = FarmTxRecord{};
  cJSON* o = parseObject(json);
  if (o == nullptr) return false;
  FarmTxRecord r;
  std::string state = str(o, "state");
  r.node = str(o, "node");
  bool ok = !r.node.empty() && parseSessionId(str(o, "session"), &r.session);
  if (state == "began") {
    r.state = FarmTxRecord::State::Began;
    r.token = str(o, "token");
    ok = ok && !r.token.empty();
  } else if (state == "ended") {
    r.state = FarmTxRecord::State::Ended;
    uint64_t status = 0, hresult = 0, flags = 0;
    ok = ok && num(o, "status", 999, &status) && num(o, "hresult", 0xffffffffu, &hresult) &&
         num(o, "flags", 0xff, &flags) && num(o, "replyBytes", uint64_t{1} << 53, &r.replyBytes);
    r.status = static_cast<uint16_t>(status);
    r.hresult = static_cast<uint32_t>(hresult);
    r.flags = static_cast<uint8_t>(flags);
    std::string rs = str(o, "replySession");
    if (!rs.empty()) ok = ok && parseSessionId(rs, &r.replySession);
    r.staticUrl = str(o, "staticUrl");
    const cJSON* reply = cJSON_GetObjectItemCaseSensitive(o, "reply");
    if (cJSON_IsString(reply)) {
      ok = ok && farmUnB64(reply->valuestring, &r.reply) && r.reply.size() <= kFarmInlineReplyBytes &&
           r.reply.size() == r.replyBytes;
      r.replyInline = true;
    }
  } else {
    ok = false;
  }
  cJSON_Delete(o);
  if (!ok) return false;
  *out = std::move(r);
  return true;
}

bool farmDecodeKvs(const cJSON* rangeAnswer, std::vector<FarmKv>* out) {
  out->clear();
  const cJSON* kvs = cJSON_GetObjectItemCaseSensitive(rangeAnswer, "kvs");
  if (kvs == nullptr) return true;
  if (!cJSON_IsArray(kvs)) return false;
  const cJSON* kv = nullptr;
  cJSON_ArrayForEach(kv, kvs) {
    FarmKv x;
    const cJSON* k = cJSON_GetObjectItemCaseSensitive(kv, "key");
    const cJSON* v = cJSON_GetObjectItemCaseSensitive(kv, "value");
    if (!cJSON_IsString(k) || !farmUnB64(k->valuestring, &x.key)) return false;
    if (v != nullptr && (!cJSON_IsString(v) || !farmUnB64(v->valuestring, &x.value))) return false;
    x.modRevision = farmJsonInt(kv, "mod_revision");
    x.createRevision = farmJsonInt(kv, "create_revision");
    out->push_back(std::move(x));
  }
  return true;
}

}  // namespace bitsd::platform
