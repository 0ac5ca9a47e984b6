/* Helpers shared by the util, vm, api and boot unit tests.
 *
 * cmocka 1.1 prints integers in hex and strings without context; these
 * assertions print both values in a form a person can read, and name error
 * codes through nc_strerror. Every helper is static inline so each test
 * executable stays self-contained. */
#ifndef NC_TESTS_UNIT_NC_TEST_H
#define NC_TESTS_UNIT_NC_TEST_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "util/clock.h"
#include "util/err.h"

#define EXPECT_I64(got, want)                                                                 \
  do {                                                                                        \
    long long got_ = (long long)(got), want_ = (long long)(want);                             \
    if (got_ != want_)                                                                        \
      fail_msg("%s is %lld, want %s = %lld", #got, got_, #want, want_);                       \
  } while (0)

#define EXPECT_U64(got, want)                                                                 \
  do {                                                                                        \
    unsigned long long got_ = (unsigned long long)(got), want_ = (unsigned long long)(want); \
    if (got_ != want_)                                                                        \
      fail_msg("%s is %llu, want %s = %llu", #got, got_, #want, want_);                       \
  } while (0)

#define EXPECT_RC(got, want)                                                                  \
  do {                                                                                        \
    int got_ = (got), want_ = (want);                                                         \
    if (got_ != want_)                                                                        \
      fail_msg("%s returned %d (%s), want %d (%s)", #got, got_, nc_strerror(got_), want_,    \
               nc_strerror(want_));                                                           \
  } while (0)

#define EXPECT_STR(got, want)                                                                 \
  do {                                                                                        \
    const char *got_ = (got), *want_ = (want);                                                \
    if (!got_ || strcmp(got_, want_) != 0)                                                    \
      fail_msg("%s is \"%s\", want \"%s\"", #got, got_ ? got_ : "(null)", want_);             \
  } while (0)

#define EXPECT_CONTAINS(hay, needle)                                                          \
  do {                                                                                        \
    const char *hay_ = (hay), *needle_ = (needle);                                            \
    if (!hay_ || !strstr(hay_, needle_))                                                      \
      fail_msg("%s = \"%s\" does not contain \"%s\"", #hay, hay_ ? hay_ : "(null)", needle_); \
  } while (0)

#define EXPECT_NOT_CONTAINS(hay, needle)                                                      \
  do {                                                                                        \
    const char *hay_ = (hay), *needle_ = (needle);                                            \
    if (hay_ && strstr(hay_, needle_))                                                        \
      fail_msg("%s = \"%s\" contains \"%s\"", #hay, hay_, needle_);                           \
  } while (0)

#define EXPECT_TRUE(cond)                                                                     \
  do {                                                                                        \
    if (!(cond))                                                                              \
      fail_msg("expected %s", #cond);                                                         \
  } while (0)

static inline int64_t nct_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline void nct_sleep_ms(int64_t ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* A fresh directory under $TMPDIR (or /tmp). out must hold 128 bytes. */
static inline int nct_mkdtemp(char *out, size_t len, const char *tag) {
  const char *base = getenv("TMPDIR");
  snprintf(out, len, "%s/nc-%s-XXXXXX", base && *base ? base : "/tmp", tag);
  return mkdtemp(out) ? 0 : -errno;
}

static inline int nct__rm(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  remove(path);
  return 0;
}

/* rm -r of a directory the test created itself. */
static inline void nct_rmtree(const char *dir) {
  if (dir && dir[0])
    nftw(dir, nct__rm, 16, FTW_DEPTH | FTW_PHYS);
}

/* Writes text to path (creating it); 0 or -errno. */
static inline int nct_write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  if (!f)
    return -errno;
  fputs(text, f);
  return fclose(f) == 0 ? 0 : -errno;
}

/* Reads a whole file into a malloc'd NUL-terminated string, or NULL. */
static inline char *nct_read_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f)
    return NULL;
  size_t cap = 4096, len = 0;
  char *buf = malloc(cap);
  size_t n;
  while (buf && (n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
    len += n;
    if (cap - len <= 1) {
      char *nb = realloc(buf, cap * 2);
      if (!nb) {
        free(buf);
        buf = NULL;
        break;
      }
      buf = nb;
      cap *= 2;
    }
  }
  fclose(f);
  if (buf)
    buf[len] = '\0';
  return buf;
}

/* A deterministic nc_rand: a counter run through splitmix64, so operation
 * ids differ but every run sees the same ones. */
struct nct_rand {
  struct nc_rand r;
  uint64_t state;
};

static inline void nct__rand_fill(struct nc_rand *r, void *buf, size_t len) {
  struct nct_rand *t = r->data;
  unsigned char *p = buf;
  while (len > 0) {
    uint64_t z = (t->state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    for (int i = 0; i < 8 && len > 0; i++, len--)
      *p++ = (unsigned char)(z >> (8 * i));
  }
}

static inline void nct_rand_init(struct nct_rand *t, uint64_t seed) {
  t->r.version = 1;
  t->r.data = t;
  t->r.fill = nct__rand_fill;
  t->state = seed;
}

#endif
