// BITS upload protocol vocabulary: packet types, header names, HRESULTs, error contexts, the upload
// protocol GUID, and the session id format. Values are copied exactly from
// ../shared/protocol/BITS-UPLOAD.md (§2, §3, §7). Shared by the server, the test client and tools.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace bitsd {

// The only protocol the Windows client offers: "BITS 1.5 Upload Protocol".
inline constexpr std::string_view kUploadProtocolGuid = "{7df0354d-249b-430f-820d-3d2a9bef4931}";

enum class PacketType : uint8_t { Unknown, Ping, CreateSession, Fragment, CloseSession, CancelSession };

// Case-insensitive match of a BITS-Packet-Type value (§1: compare case-insensitively).
PacketType parsePacketType(std::string_view value);
const char* packetTypeName(PacketType type);

namespace hresult {
inline constexpr uint32_t kNone = 0x0;
inline constexpr uint32_t kInvalidArg = 0x80070057;        // E_INVALIDARG
inline constexpr uint32_t kAccessDenied = 0x80070005;      // E_ACCESSDENIED
inline constexpr uint32_t kPathNotFound = 0x80070003;      // ERROR_PATH_NOT_FOUND
inline constexpr uint32_t kDiskFull = 0x80070112;          // ERROR_DISK_FULL
inline constexpr uint32_t kBusy = 0x800700AA;              // ERROR_BUSY
inline constexpr uint32_t kNoSystemResources = 0x800705AA; // ERROR_NO_SYSTEM_RESOURCES
inline constexpr uint32_t kSessionNotFound = 0x8020001F;   // BG_E_SESSION_NOT_FOUND
inline constexpr uint32_t kTooLarge = 0x80200020;          // BG_E_TOO_LARGE
inline constexpr uint32_t kProtocolMismatch = 0x80200022;  // BG_E_CLIENT_SERVER_PROTOCOL_MISMATCH
inline constexpr uint32_t kInsufficientHttp = 0x80200012;  // BG_E_INSUFFICIENT_HTTP_SUPPORT
inline constexpr uint32_t kInternal = 0x8007054F;          // ERROR_INTERNAL_ERROR
inline constexpr uint32_t kRemoteApplication = 0x8020001E; // BG_E_ERROR_CONTEXT_REMOTE_APPLICATION
inline constexpr uint32_t kTimeout = 0x800705B4;           // ERROR_TIMEOUT (application timeout, §10.1)
inline constexpr uint32_t kHttpErrorBase = 0x80190000;     // BG_E_HTTP_ERROR_<status> = base + status
}  // namespace hresult

enum class ErrorContext : uint8_t { None = 0, RemoteFile = 5, RemoteApplication = 7 };

// Header names as the Windows client and IIS spell them.
namespace header {
inline constexpr std::string_view kPacketType = "BITS-Packet-Type";
inline constexpr std::string_view kSupportedProtocols = "BITS-Supported-Protocols";
inline constexpr std::string_view kProtocol = "BITS-Protocol";
inline constexpr std::string_view kSessionId = "BITS-Session-Id";
inline constexpr std::string_view kReceivedContentRange = "BITS-Received-Content-Range";
inline constexpr std::string_view kErrorCode = "BITS-Error-Code";
inline constexpr std::string_view kErrorContext = "BITS-Error-Context";
inline constexpr std::string_view kContentRange = "Content-Range";
inline constexpr std::string_view kContentLength = "Content-Length";
inline constexpr std::string_view kContentName = "Content-Name";
inline constexpr std::string_view kContentEncoding = "Content-Encoding";
inline constexpr std::string_view kExpect = "Expect";
inline constexpr std::string_view kHost = "Host";
inline constexpr std::string_view kReplyUrl = "BITS-Reply-URL";
inline constexpr std::string_view kHostId = "BITS-Host-Id";
inline constexpr std::string_view kHostIdFallbackTimeout = "BITS-Host-Id-Fallback-Timeout";
}  // namespace header

// True when `offered` (one or more braced GUIDs separated by spaces and/or commas, any case) contains
// the upload protocol GUID. Malformed entries are skipped, as unknown protocols are.
bool offersUploadProtocol(std::string_view offered);

// A session id: 16 random bytes, shown as an upper-case braced GUID (IIS style, 38 characters),
// with the version-4 and variant bits set.
struct SessionId {
  std::array<uint8_t, 16> bytes{};
  bool operator==(const SessionId&) const = default;
};
inline constexpr size_t kSessionIdTextBytes = 38;

// Sets the RFC 4122 version/variant bits on 16 random bytes.
SessionId sessionIdFromRandom(std::span<const uint8_t, 16> random);
// Writes exactly kSessionIdTextBytes characters (no terminator).
void formatSessionId(const SessionId& id, char out[kSessionIdTextBytes]);
// Accepts the braced form in any case; false for anything else (then the session is unknown).
bool parseSessionId(std::string_view text, SessionId* out);

// Case-insensitive ASCII equality.
bool equalsIgnoreCase(std::string_view a, std::string_view b);
// Trims spaces and tabs at both ends.
std::string_view trimOws(std::string_view s);

}  // namespace bitsd
