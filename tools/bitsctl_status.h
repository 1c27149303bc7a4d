// bitsctl status [--admin URL] [-u USER:PASS]: the live sessions from a running bitsd's /status.json.
#pragma once

#include <string>
#include <vector>

// `args` starts with "status". Returns the exit code.
int statusCommand(const std::vector<std::string>& args);
