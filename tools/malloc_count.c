// An LD_PRELOAD allocation counter for benchmarks (tools/bench-rebuild.sh). Counts every malloc,
// calloc and realloc of the process (all threads), forwarding to glibc's __libc_* functions, and
// writes the total to the file named by $MALLOC_COUNT_FILE when the process exits normally.
// Built by the script with the system C compiler; never linked into bitsd.
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

extern void* __libc_malloc(size_t);
extern void* __libc_calloc(size_t, size_t);
extern void* __libc_realloc(void*, size_t);

static atomic_ulong count;

void* malloc(size_t n) {
  atomic_fetch_add_explicit(&count, 1, memory_order_relaxed);
  return __libc_malloc(n);
}
void* calloc(size_t n, size_t m) {
  atomic_fetch_add_explicit(&count, 1, memory_order_relaxed);
  return __libc_calloc(n, m);
}
void* realloc(void* p, size_t n) {
  atomic_fetch_add_explicit(&count, 1, memory_order_relaxed);
  return __libc_realloc(p, n);
}

__attribute__((destructor)) static void report(void) {
  const char* path = getenv("MALLOC_COUNT_FILE");
  if (path == NULL) return;
  FILE* f = fopen(path, "w");
  if (f == NULL) return;
  fprintf(f, "%lu\n", atomic_load(&count));
  fclose(f);
}
