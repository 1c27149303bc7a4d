// Opening a directory below a trusted base directory without following any symlink, so that a
// directory inside the upload root swapped for a symlink cannot send a commit elsewhere (issue 20,
// hole 3). Blocking calls: run them on the thread pool (UvStorage) or at start-up (recovery).
#pragma once

#include <string_view>

namespace bitsd::platform {

enum class BeneathMode {
  Auto,  // openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS) where the kernel has it, else Walk
  Walk,  // openat(O_NOFOLLOW | O_DIRECTORY), one component at a time (forced by tests)
};

// Opens `base` (an absolute path, symlink-free: resolved with realpath at start-up) and then `dir`
// below it ("a/b"; "" for the base itself), read-only, following no symlink anywhere: not in the
// base's own path, not in `dir`. Returns the directory's descriptor (O_CLOEXEC), or -errno:
//   ENOENT / ENOTDIR  a component is missing, or is not a directory (a file in the way)
//   ELOOP             a component is a symlink
//   EINVAL            `dir` has an empty, "." or ".." segment (the URL decoder never makes one)
//   anything else     as open(2) reports it (EACCES, EMFILE, ...)
int openDirBeneath(const char* base, std::string_view dir, BeneathMode mode = BeneathMode::Auto);

// The commit of a finished upload (UvStorage::commitBeneath runs it on the thread pool): opens the
// destination's parent below `base` as openDirBeneath does, then links `from` (an absolute path) to
// the final name through that descriptor, or with `replace` renames it there, and fsyncs the
// directory. linkat without AT_SYMLINK_FOLLOW and renameat never follow a symlink at the new name:
// an existing symlink there is EEXIST for the link, and replaced itself (not its target) by the
// rename. `below` ("a/b/x.bin") is NUL-terminated. Returns 0 or an errno: *dirOpened false means the
// parent could not be opened (openDirBeneath's errno), true that the link or rename failed (EEXIST,
// EISDIR, ENOENT, ...). *syncErr is the directory fsync's errno after a commit that worked (or 0);
// a null syncErr skips the fsync (bitsd with fdatasync off).
//
// With `moved` (not null) and without `replace`, the commit first tries one renameat2 with
// RENAME_NOREPLACE: the same never-replace guarantee as the link, and `from` is gone at once (one
// directory operation, and no unlink for the caller to make). File systems that cannot (EINVAL)
// and kernels without renameat2 (ENOSYS) get the link. *moved says whether `from` is gone: true
// after any rename that worked, false after a link (the caller removes `from`).
int commitBelow(const char* from, const char* base, const char* below, bool replace, bool* dirOpened, int* syncErr,
                BeneathMode mode = BeneathMode::Auto, bool* moved = nullptr);

// Splits a path below a base into its parent directory ("a/b") and final name ("x.bin").
inline void splitBelow(std::string_view below, std::string_view* parent, std::string_view* name) {
  size_t slash = below.rfind('/');
  *parent = slash == std::string_view::npos ? std::string_view() : below.substr(0, slash);
  *name = slash == std::string_view::npos ? below : below.substr(slash + 1);
}

}  // namespace bitsd::platform
