// Input for the check-layers test: a core/ file reaching for libuv and POSIX. The build's layer
// check must reject it.
#include <uv.h>
#include <unistd.h>
#include <cstdint>
#include "platform/system.h"
