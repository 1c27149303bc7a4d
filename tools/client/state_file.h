// bitsclient's state file (FILE.bitsjob): what a job persists so that `bitsclient resume` and
// `bitsclient cancel` can carry it on after bitsclient was killed. Written atomically (a temporary
// file, fsync, rename) after every event that moves the job; key=value lines, version=1.
#pragma once

#include <string>

#include "tools/client/job.h"
#include "tools/client/options.h"

namespace bitsd::client {

bool writeState(const Options& o, const Job& job, std::string* error);

void readState(const std::string& path, Options* o);

}  // namespace bitsd::client
