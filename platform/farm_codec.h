// The farm's records in etcd as JSON (docs/FARMS.md "Key layout"; platform/uv_farm.h), and the
// pieces of etcd's v3 gateway JSON the farm reads and writes (keys and values in base64, int64s as
// strings). Pure functions, unit-tested on their own (tests/platform/farm_codec_test.cc).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/farm.h"

struct cJSON;

namespace bitsd::platform {

std::string farmB64(std::string_view bytes);
// False for anything that is not base64.
bool farmUnB64(std::string_view text, std::string* out);
// An int64 field as etcd's gateway writes it (a string of digits; a number is taken too); 0 when
// absent or malformed.
int64_t farmJsonInt(const cJSON* obj, const char* name);
// The JSON text of `o` (unformatted); frees `o`.
std::string farmPrinted(cJSON* o);

// Values.
std::string farmEncodeNode(std::string_view peerUrl, uint64_t startedUnix);
bool farmDecodeNode(std::string_view json, std::string* peerUrl);
std::string farmEncodeSession(std::string_view node);
bool farmDecodeSession(std::string_view json, std::string* node);
std::string farmEncodeBegan(std::string_view node, std::string_view token, const SessionId& session, uint64_t atUnix);
// `reply`: the reply file's bytes for the inline copy, or null.
std::string farmEncodeEnded(std::string_view node, const FarmEnded& e, const std::string* reply, uint64_t atUnix);
// Fills state, node, token, session and the ended fields (not nodeLive or modRevision). False for
// a value that is not a record (then *out says None).
bool farmDecodeTx(std::string_view json, FarmTxRecord* out);

// One key-value of a range answer ("kvs"), decoded.
struct FarmKv {
  std::string key, value;
  int64_t modRevision = 0;
  int64_t createRevision = 0;
};
// The "kvs" of a range answer (an object with "kvs", e.g. a txn's response_range). False when a
// key or value is not base64.
bool farmDecodeKvs(const cJSON* rangeAnswer, std::vector<FarmKv>* out);

}  // namespace bitsd::platform
