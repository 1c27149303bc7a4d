// libFuzzer target for the directory-descriptor commit (platform/beneath.h, issue 20 hole 3). Each
// input builds, in a fresh temporary directory, an upload root ("root"), a directory beside it
// ("outside", with a few entries of its own) and a finished upload ("src/partial"), then lays out
// fuzzer-chosen directories, files and symlinks below root (symlinks inside root, to outside, to
// absolute paths, dangling, to themselves, "..", "." and "/"). It then opens a fuzzer-chosen
// directory below root with openDirBeneath in both modes (openat2 where the kernel has it, and the
// O_NOFOLLOW walk), and commits the upload to a fuzzer-chosen name there with commitBelow, the
// function UvStorage's commit runs (link, or rename when `replace`). Invariants (abort on violation):
//   - both modes give the same answer, and it is the one an lstat of each component predicts: the
//     directory itself (same inode), or ENOENT / ENOTDIR / ELOOP / EINVAL / ENAMETOOLONG;
//   - a commit that succeeds leaves, under root, exactly what was there plus the upload at that path,
//     reached with no symlink on the way, holding the upload's bytes (and a link leaves the source);
//   - a commit that fails is EEXIST (link onto an existing name) or EISDIR (rename onto a directory)
//     or the open's errno, and changes nothing under root;
//   - nothing outside root (the outside directory, symlink targets) is ever changed.
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "platform/beneath.h"

namespace {

using bitsd::platform::BeneathMode;

void require(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_beneath invariant broken: %s\n", what);
    std::abort();
  }
}

struct Input {
  const uint8_t* p;
  size_t n;
  uint8_t byte() {
    if (n == 0) return 0;
    --n;
    return *p++;
  }
};

const char* const kNames[] = {"a", "b", "c", "x.bin"};

std::string pickPath(Input& in) {
  uint8_t b = in.byte();
  int depth = 1 + (b & 3) % 3;
  std::string path;
  for (int i = 0; i < depth; ++i) {
    if (i > 0) path += '/';
    path += kNames[(b >> (2 + 2 * i)) & 3];
  }
  return path;
}

std::string slurp(const std::string& path) {
  std::string out;
  int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return "<unreadable>";
  char buf[256];
  ssize_t r;
  while ((r = ::read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(r));
  ::close(fd);
  return out;
}

// Everything below `dir`, without following symlinks: path -> kind and contents or link target.
void listing(const std::string& dir, const std::string& rel, std::map<std::string, std::string>* out) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return;
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d)) {
    if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) names.push_back(e->d_name);
  }
  ::closedir(d);
  for (const std::string& n : names) {
    std::string full = dir + "/" + n;
    std::string r = rel.empty() ? n : rel + "/" + n;
    struct stat st;
    if (::lstat(full.c_str(), &st) != 0) continue;
    if (S_ISLNK(st.st_mode)) {
      char target[PATH_MAX];
      ssize_t len = ::readlink(full.c_str(), target, sizeof target);
      (*out)[r] = "l:" + std::string(target, len > 0 ? static_cast<size_t>(len) : 0);
    } else if (S_ISDIR(st.st_mode)) {
      (*out)[r] = "d";
      listing(full, r, out);
    } else {
      (*out)[r] = "f:" + slurp(full);
    }
  }
}

int removeOne(const char* path, const struct stat*, int, struct FTW*) {
  ::remove(path);
  return 0;
}

// What an lstat of each component of `dir` below `root` says openDirBeneath must answer: 0 (a
// directory reached through directories only), or the errno.
int predict(const std::string& root, const std::string& dir, struct stat* found) {
  if (::lstat(root.c_str(), found) != 0) return errno;
  if (dir.empty()) return 0;
  std::vector<std::string> segs;
  size_t start = 0;
  while (true) {
    size_t slash = dir.find('/', start);
    std::string seg = dir.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
    if (seg.empty() || seg == "." || seg == "..") return EINVAL;
    segs.push_back(seg);
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  std::string path = root;
  for (const std::string& s : segs) {
    if (s.size() > NAME_MAX) return ENAMETOOLONG;
    path += "/" + s;
    if (::lstat(path.c_str(), found) != 0) return errno;
    if (S_ISLNK(found->st_mode)) return ELOOP;
    if (!S_ISDIR(found->st_mode)) return ENOTDIR;
  }
  return 0;
}

std::string gTmp;  // per process: a directory under which each input gets its own

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (gTmp.empty()) {
    const char* env = std::getenv("TMPDIR");
    std::string tmpl = std::string(env != nullptr && *env != '\0' ? env : "/tmp") + "/fuzz_beneath.XXXXXX";
    require(::mkdtemp(tmpl.data()) != nullptr, "mkdtemp");
    char real[PATH_MAX];
    require(::realpath(tmpl.c_str(), real) != nullptr, "realpath");
    gTmp = real;
    std::atexit([] { ::nftw(gTmp.c_str(), removeOne, 16, FTW_DEPTH | FTW_PHYS); });
  }
  Input in{data, size};
  const std::string top = gTmp + "/t";
  ::nftw(top.c_str(), removeOne, 16, FTW_DEPTH | FTW_PHYS);
  require(::mkdir(top.c_str(), 0755) == 0, "mkdir top");
  const std::string root = top + "/root";
  const std::string outside = top + "/outside";
  const std::string src = top + "/src/partial";
  require(::mkdir(root.c_str(), 0755) == 0 && ::mkdir(outside.c_str(), 0755) == 0 &&
              ::mkdir((top + "/src").c_str(), 0755) == 0 && ::mkdir((outside + "/a").c_str(), 0755) == 0 &&
              ::mkdir((outside + "/a/b").c_str(), 0755) == 0,
          "mkdir layout");
  auto writeFile = [](const std::string& path, const std::string& bytes) {
    int fd = ::open(path.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
    if (fd < 0) return;
    require(::write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size()), "write");
    ::close(fd);
  };
  writeFile(outside + "/x.bin", "outside");
  writeFile(outside + "/a/x.bin", "outside a");

  uint8_t flags = in.byte();
  const bool replace = (flags & 1) != 0;
  std::string payload = "upload " + std::to_string(flags);
  writeFile(src, payload);

  // The layout below root.
  int entries = in.byte() % 13;
  for (int i = 0; i < entries; ++i) {
    uint8_t kind = in.byte();
    std::string rel = pickPath(in);
    std::string path = root + "/" + rel;
    switch (kind % 4) {
      case 0:
      case 1: ::mkdir(path.c_str(), 0755); break;
      case 2: writeFile(path, "file " + rel); break;
      case 3: {
        const std::string targets[] = {"a", "../outside", outside, "missing", path, "..", ".", root + "/a", "/",
                                       outside + "/a", "../../..", top + "/src", "a/b", "../../outside/a"};
        ::symlink(targets[in.byte() % (sizeof targets / sizeof targets[0])].c_str(), path.c_str());
        break;
      }
    }
  }

  // The directory to open: segments, some of them ones the URL decoder never makes.
  std::string dir;
  int segs = in.byte() % 5;
  for (int i = 0; i < segs; ++i) {
    uint8_t b = in.byte();
    if (i > 0) dir += '/';
    if (b < 200) {
      dir += kNames[b % 4];
    } else {
      const char* odd[] = {".", "..", "", "a/", "/a"};
      dir += b < 250 ? odd[b % 5] : std::string(NAME_MAX + 1, 'n');
    }
  }
  const char* leaves[] = {"a", "b", "c", "x.bin", "new.bin"};
  std::string leaf = leaves[in.byte() % 5];

  std::map<std::string, std::string> outsideBefore, rootBefore;
  listing(top, "", &outsideBefore);
  for (auto it = outsideBefore.begin(); it != outsideBefore.end();) {
    it = it->first == "root" || it->first.rfind("root/", 0) == 0 || it->first.rfind("src", 0) == 0
             ? outsideBefore.erase(it)
             : std::next(it);
  }
  listing(root, "", &rootBefore);

  // Opening: both modes agree with each other and with the lstat prediction.
  struct stat want;
  int predicted = predict(root, dir, &want);
  for (BeneathMode mode : {BeneathMode::Auto, BeneathMode::Walk}) {
    int fd = bitsd::platform::openDirBeneath(root.c_str(), dir, mode);
    if (fd >= 0) {
      struct stat got;
      require(::fstat(fd, &got) == 0 && S_ISDIR(got.st_mode), "opened something that is not a directory");
      require(predicted == 0, "opened a directory an lstat walk cannot reach");
      require(got.st_dev == want.st_dev && got.st_ino == want.st_ino, "opened another directory");
      ::close(fd);
    } else {
      require(-fd == predicted, "an open errno other than the lstat walk predicts");
    }
  }

  // The commit, as UvStorage makes it.
  std::string below = dir.empty() ? leaf : dir + "/" + leaf;
  struct stat atLeaf;
  bool leafExisted = predicted == 0 && ::lstat((root + "/" + below).c_str(), &atLeaf) == 0;
  BeneathMode mode = (flags & 2) != 0 ? BeneathMode::Walk : BeneathMode::Auto;
  bool dirOpened = false;
  int syncErr = -1;
  int err = bitsd::platform::commitBelow(src.c_str(), root.c_str(), below.c_str(), replace, &dirOpened, &syncErr, mode);
  std::map<std::string, std::string> rootAfter, outsideAfter;
  listing(root, "", &rootAfter);
  if (err == 0) {
    require(predicted == 0 && dirOpened && syncErr == 0, "committed into a directory that cannot be opened");
    require(replace || !leafExisted, "a link replaced an existing name");
    if (leafExisted) require(!S_ISDIR(atLeaf.st_mode), "a rename replaced a directory");
    // Reached from root through directories only, and the upload's bytes.
    struct stat st;
    require(predict(root, dir, &st) == 0, "the committed file's directory is not reached without symlinks");
    require(::lstat((root + "/" + below).c_str(), &st) == 0 && S_ISREG(st.st_mode), "the committed file is not a file");
    require(slurp(root + "/" + below) == payload, "the committed file does not hold the upload");
    require(replace == (::access(src.c_str(), F_OK) != 0), "the source after a link/rename");
    std::map<std::string, std::string> expected = rootBefore;
    if (leafExisted && S_ISLNK(atLeaf.st_mode)) expected.erase(below);
    expected[below] = "f:" + payload;
    require(rootAfter == expected, "the commit changed more under root than its own file");
  } else {
    if (!dirOpened) {
      require(err == predicted, "a commit's open errno other than predicted");
    } else {
      require(predicted == 0, "a commit opened a directory that cannot be reached");
      require(err == EEXIST || err == EISDIR, "an undocumented commit errno");
      require(leafExisted, "a commit failed onto a free name");
      if (err == EEXIST) require(!replace, "EEXIST from a rename");
      if (err == EISDIR) require(replace && S_ISDIR(atLeaf.st_mode), "EISDIR onto something not a directory");
    }
    require(rootAfter == rootBefore, "a failed commit changed something under root");
    require(slurp(src) == payload, "a failed commit lost the source");
  }
  listing(top, "", &outsideAfter);
  for (auto it = outsideAfter.begin(); it != outsideAfter.end();) {
    it = it->first == "root" || it->first.rfind("root/", 0) == 0 || it->first.rfind("src", 0) == 0
             ? outsideAfter.erase(it)
             : std::next(it);
  }
  require(outsideAfter == outsideBefore, "something outside root changed");
  ::nftw(top.c_str(), removeOne, 16, FTW_DEPTH | FTW_PHYS);
  return 0;
}
