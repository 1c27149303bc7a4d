// Replays a fuzz corpus as a plain test (no libFuzzer needed): every file in the given directories,
// plus the empty input, goes through LLVMFuzzerTestOneInput. A crash or abort fails the test.
#include <dirent.h>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

int main(int argc, char** argv) {
  int runs = 0;
  LLVMFuzzerTestOneInput(nullptr, 0);
  ++runs;
  for (int i = 1; i < argc; ++i) {
    DIR* d = opendir(argv[i]);
    if (d == nullptr) {
      std::fprintf(stderr, "cannot open corpus directory %s\n", argv[i]);
      return 1;
    }
    std::vector<std::string> names;
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] != '.') names.push_back(std::string(argv[i]) + "/" + e->d_name);
    }
    closedir(d);
    for (const std::string& n : names) {
      std::ifstream f(n, std::ios::binary);
      std::stringstream ss;
      ss << f.rdbuf();
      std::string bytes = ss.str();
      LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
      ++runs;
    }
  }
  if (runs < 2) {
    std::fprintf(stderr, "corpus is empty\n");
    return 1;
  }
  std::printf("%d passed, 0 failed\n", runs);
  return 0;
}
