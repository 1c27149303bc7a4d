// `bitsclient bench URL [options]`: N uploads at once over N connections, optionally with faults
// (connections cut mid-fragment, stalled requests, the server killed and restarted), then key=value
// figures. It runs bitsclient's own driver (tools/client/driver.h); bitsbench (tools/bench/bitsbench.cc)
// measures the server's storage path without a network.
#pragma once

namespace bitsd::client {

// argv as bitsclient's main got it (argv[1] == "bench"). Returns the exit code.
int runBench(int argc, char** argv);

}  // namespace bitsd::client
