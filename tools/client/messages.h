// What bitsclient says when the server refuses something: one sentence a person understands, plus
// the status and BITS-Error-Code, e.g. "the file exists and the server does not allow overwrites
// (403, 0x80070005)". Every refusal message of bitsclient comes from the table in messages.cc, so
// the wording lives in one place (docs/CLIENT.md lists it).
//
// The sentence is chosen from what the answer tells (status, BITS-Error-Code, BITS-Error-Context),
// the packet it answered, and what the client knows itself (whether it sent credentials): bitsd
// answers 403 0x80070005 at Create-Session both for "the file exists and allow-overwrites is off"
// and for "this user may not upload here"; without credentials only the first can be the reason.
#pragma once

#include <string>

#include "tools/client/job.h"

namespace bitsd::client {

// The sentence alone ("the file exists and the server does not allow overwrites").
std::string refusalSentence(const Response& r, Kind packet, bool credentialsGiven);
// The codes: "(403, 0x80070005)", or "(411)" without a BITS-Error-Code.
std::string refusalCodes(const Response& r);
// The sentence and the codes: "the file exists ... (403, 0x80070005)".
std::string refusalMessage(const Response& r, Kind packet, bool credentialsGiven);

}  // namespace bitsd::client
