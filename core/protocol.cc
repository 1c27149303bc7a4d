// Owns the BITS vocabulary: packet types, the upload protocol GUID, session ids, header text helpers
// (core/protocol.h).
#include "core/protocol.h"

namespace bitsd {

namespace {
char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }
int hexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  c = lower(c);
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}
// Byte positions of the 32 hex digits inside "{xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}".
constexpr int kHexPos[32] = {1,  2,  3,  4,  5,  6,  7,  8,  10, 11, 12, 13, 15, 16, 17, 18,
                             20, 21, 22, 23, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36};
}  // namespace

bool equalsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

std::string_view trimOws(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

PacketType parsePacketType(std::string_view value) {
  value = trimOws(value);
  if (equalsIgnoreCase(value, "Ping")) return PacketType::Ping;
  if (equalsIgnoreCase(value, "Create-Session")) return PacketType::CreateSession;
  if (equalsIgnoreCase(value, "Fragment")) return PacketType::Fragment;
  if (equalsIgnoreCase(value, "Close-Session")) return PacketType::CloseSession;
  if (equalsIgnoreCase(value, "Cancel-Session")) return PacketType::CancelSession;
  return PacketType::Unknown;
}

const char* packetTypeName(PacketType type) {
  switch (type) {
    case PacketType::Ping: return "Ping";
    case PacketType::CreateSession: return "Create-Session";
    case PacketType::Fragment: return "Fragment";
    case PacketType::CloseSession: return "Close-Session";
    case PacketType::CancelSession: return "Cancel-Session";
    case PacketType::Unknown: break;
  }
  return "Unknown";
}

bool offersUploadProtocol(std::string_view offered) {
  size_t i = 0;
  while (i < offered.size()) {
    while (i < offered.size() && (offered[i] == ' ' || offered[i] == ',' || offered[i] == '\t')) ++i;
    size_t start = i;
    while (i < offered.size() && offered[i] != ' ' && offered[i] != ',' && offered[i] != '\t') ++i;
    if (i > start && equalsIgnoreCase(offered.substr(start, i - start), kUploadProtocolGuid)) return true;
  }
  return false;
}

SessionId sessionIdFromRandom(std::span<const uint8_t, 16> random) {
  SessionId id;
  for (size_t i = 0; i < 16; ++i) id.bytes[i] = random[i];
  id.bytes[6] = static_cast<uint8_t>((id.bytes[6] & 0x0F) | 0x40);  // version 4
  id.bytes[8] = static_cast<uint8_t>((id.bytes[8] & 0x3F) | 0x80);  // RFC 4122 variant
  return id;
}

void formatSessionId(const SessionId& id, char out[kSessionIdTextBytes]) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  for (size_t i = 0; i < kSessionIdTextBytes; ++i) out[i] = '-';
  out[0] = '{';
  out[37] = '}';
  for (int n = 0; n < 16; ++n) {
    out[kHexPos[2 * n]] = kHex[id.bytes[n] >> 4];
    out[kHexPos[2 * n + 1]] = kHex[id.bytes[n] & 0xF];
  }
}

bool parseSessionId(std::string_view text, SessionId* out) {
  text = trimOws(text);
  if (text.size() != kSessionIdTextBytes || text[0] != '{' || text[37] != '}' || text[9] != '-' ||
      text[14] != '-' || text[19] != '-' || text[24] != '-') {
    return false;
  }
  for (int n = 0; n < 16; ++n) {
    int hi = hexValue(text[kHexPos[2 * n]]);
    int lo = hexValue(text[kHexPos[2 * n + 1]]);
    if (hi < 0 || lo < 0) return false;
    out->bytes[n] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return true;
}

}  // namespace bitsd
