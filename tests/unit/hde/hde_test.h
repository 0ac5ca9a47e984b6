/* Helpers shared by the HDE and page cache suites: a seeded PRNG, page
 * patterns, and throwaway cache directories. */
#ifndef NC_TEST_HDE_TEST_H
#define NC_TEST_HDE_TEST_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dwcp/hde.h"

/* Token kinds, from the layout at the top of src/dwcp/hde.c. */
enum { T_ZERO = 0, T_REF = 1, T_DELTA = 2, T_RAW = 3, T_STORED = 4 };

struct rng {
  uint64_t s;
};

static inline uint64_t rnd(struct rng *r) { /* xorshift64* */
  r->s ^= r->s >> 12;
  r->s ^= r->s << 25;
  r->s ^= r->s >> 27;
  return r->s * UINT64_C(2685821657736338717);
}

static inline void page_random(struct rng *r, uint8_t *p) {
  for (size_t i = 0; i < NC_HDE_PAGE; i += 8) {
    uint64_t v = rnd(r);
    memcpy(p + i, &v, 8);
  }
}

/* The guest workload's compressible pattern (guest/workload.c): a few
 * 64-bit words rewritten in an otherwise unchanged page. */
static inline void page_sparse_write(struct rng *r, uint8_t *p, unsigned words) {
  for (unsigned k = 0; k < words; k++) {
    uint64_t v = rnd(r) | 1;
    size_t w = rnd(r) % (NC_HDE_PAGE / 8);
    memcpy(p + w * 8, &v, 8);
  }
}

/* A fresh directory under TMPDIR (or /tmp); dir must hold 64 bytes. */
static inline int tmpdir_make(char dir[64]) {
  const char *base = getenv("TMPDIR");
  snprintf(dir, 64, "%s/nc_hde_XXXXXX", base && strlen(base) < 40 ? base : "/tmp");
  return mkdtemp(dir) ? 0 : -1;
}

static inline void tmpdir_remove(const char *dir) {
  char p[128];
  snprintf(p, sizeof p, "%s/%s", dir, NC_PCACHE_FILE);
  unlink(p);
  rmdir(dir);
}

#endif
