// bitsclient's state file (FILE.bitsjob): what a job persists so that `bitsclient resume` and
// `bitsclient cancel` can carry it on after bitsclient was killed. Written atomically (a temporary
// file, fsync, rename) after every event that moves the job; key=value lines, version=1.
#pragma once

#include <string>

#include "tools/client/job.h"
#include "tools/client/options.h"

namespace bitsd::client {

// Writes the job's state to o.statePath (o.statePath + ".tmp", fsync, rename). False, with *error a
// sentence, when it cannot (then the job goes on, but cannot be resumed if bitsclient dies).
bool writeState(const Options& o, const Job& job, std::string* error);

// Reads a state file into *o (file, size, url, session, offset, fragment, host-id, fallback,
// reply-out, headers; o->statePath = path). False, with *error a sentence naming the file (and the
// line), for a file that cannot be read, is not ours, is of another version, or was cut short.
bool readState(const std::string& path, Options* o, std::string* error);

}  // namespace bitsd::client
