/* The persistent page cache (src/dwcp/pcache.c): persistence, hash checks
 * against on-disk damage, the capacity cap, CLOCK eviction, pinning,
 * reservations, the summary format, and concurrent use. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/resource.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "hde_test.h"
#include "util/err.h"

#define HDR 4096u
#define SLOT (16u + NC_HDE_PAGE)
#define CAP(slots) ((uint64_t)HDR + (uint64_t)(slots) * SLOT)

struct fx {
  char dir[64];
  struct nc_pcache *c;
};

static int setup(void **state) {
  struct fx *f = calloc(1, sizeof *f);
  if (!f || tmpdir_make(f->dir) < 0)
    return -1;
  *state = f;
  return 0;
}

static int teardown(void **state) {
  struct fx *f = *state;
  nc_pcache_close(f->c);
  tmpdir_remove(f->dir);
  free(f);
  return 0;
}

static void file_path(const struct fx *f, char *p, size_t n) {
  snprintf(p, n, "%s/%s", f->dir, NC_PCACHE_FILE);
}

/* n distinct random pages and their hashes. */
static uint8_t *make_pages(uint64_t seed, size_t n, struct nc_hash128 *h) {
  struct rng r = {seed};
  uint8_t *p = malloc(n * NC_HDE_PAGE);
  assert_non_null(p);
  for (size_t i = 0; i < n; i++) {
    page_random(&r, p + i * NC_HDE_PAGE);
    nc_hde_hash(p + i * NC_HDE_PAGE, &h[i]);
  }
  return p;
}

static void assert_holds(struct nc_pcache *c, const struct nc_hash128 *h, const uint8_t *want) {
  uint8_t got[NC_HDE_PAGE];
  assert_int_equal(nc_pcache_get(c, h, got), 0);
  assert_memory_equal(got, want, NC_HDE_PAGE);
}

static void assert_absent(struct nc_pcache *c, const struct nc_hash128 *h) {
  uint8_t got[NC_HDE_PAGE];
  memset(got, 0xa5, sizeof got);
  assert_int_equal(nc_pcache_get(c, h, got), -ENOENT);
  for (size_t i = 0; i < sizeof got; i++)
    assert_int_equal(got[i], 0xa5); /* untouched on failure */
}

static void test_persist_reopen(void **state) {
  struct fx *f = *state;
  struct nc_hash128 h[50];
  uint8_t *p = make_pages(1, 50, h);
  assert_int_equal(nc_pcache_open(f->dir, CAP(100), &f->c), 0);
  assert_int_equal(nc_pcache_slots(f->c), 100);
  for (int i = 0; i < 50; i++)
    assert_int_equal(nc_pcache_put(f->c, &h[i], p + i * NC_HDE_PAGE), 0);
  assert_int_equal(nc_pcache_put(f->c, &h[7], p + 7 * NC_HDE_PAGE), 0); /* again: no-op */
  assert_int_equal(nc_pcache_count(f->c), 50);
  nc_pcache_close(f->c);
  f->c = NULL;

  assert_int_equal(nc_pcache_open(f->dir, CAP(100), &f->c), 0);
  assert_int_equal(nc_pcache_count(f->c), 50);
  for (int i = 0; i < 50; i++)
    assert_holds(f->c, &h[i], p + i * NC_HDE_PAGE);

  char path[128];
  file_path(f, path, sizeof path);
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0600);
  free(p);
}

static void test_second_open_busy(void **state) {
  struct fx *f = *state;
  assert_int_equal(nc_pcache_open(f->dir, CAP(4), &f->c), 0);
  struct nc_pcache *c2 = NULL;
  assert_int_equal(nc_pcache_open(f->dir, CAP(4), &c2), -EBUSY);
  assert_null(c2);
  struct nc_pcache *c3 = NULL;
  assert_int_equal(nc_pcache_open(f->dir, HDR + SLOT - 1, &c3), NC_E_INVALID);
}

static void test_put_wrong_hash(void **state) {
  struct fx *f = *state;
  struct nc_hash128 h[2];
  uint8_t *p = make_pages(2, 2, h);
  assert_int_equal(nc_pcache_open(f->dir, CAP(4), &f->c), 0);
  assert_int_equal(nc_pcache_put(f->c, &h[1], p), NC_E_INVALID);
  assert_int_equal(nc_pcache_count(f->c), 0);
  assert_int_equal(nc_pcache_put_pinned(f->c, 0, &h[0], p), NC_E_INVALID);
  free(p);
}

/* Writes len bytes at off into the cache file behind the cache's back. */
static void scribble(const struct fx *f, off_t off, const void *buf, size_t len) {
  char path[128];
  file_path(f, path, sizeof path);
  int fd = open(path, O_WRONLY);
  assert_true(fd >= 0);
  assert_int_equal(pwrite(fd, buf, len, off), (ssize_t)len);
  close(fd);
}

static void test_corrupt_slot_on_disk(void **state) {
  struct fx *f = *state;
  struct nc_hash128 h[10];
  uint8_t *p = make_pages(3, 10, h);
  assert_int_equal(nc_pcache_open(f->dir, CAP(10), &f->c), 0);
  for (int i = 0; i < 10; i++)
    assert_int_equal(nc_pcache_put(f->c, &h[i], p + i * NC_HDE_PAGE), 0);
  nc_pcache_close(f->c);
  f->c = NULL;

  /* An empty cache fills slots in order: page i is in slot i. Damage slot
   * 3's page, slot 5's hash, and tear slot 8 (slot 2's hash over slot 8's
   * old page, as an interrupted overwrite would leave it). */
  uint8_t x = p[3 * NC_HDE_PAGE + 100] ^ 0x40;
  scribble(f, HDR + 3 * SLOT + 16 + 100, &x, 1);
  uint8_t hb = 0x55;
  scribble(f, HDR + 5 * SLOT + 2, &hb, 1);
  uint8_t canon[16];
  char path[128];
  file_path(f, path, sizeof path);
  int fd = open(path, O_RDONLY);
  assert_int_equal(pread(fd, canon, 16, HDR + 2 * SLOT), 16);
  close(fd);
  scribble(f, HDR + 8 * SLOT, canon, 16);

  assert_int_equal(nc_pcache_open(f->dir, CAP(10), &f->c), 0);
  assert_int_equal(nc_pcache_count(f->c), 7);
  assert_absent(f->c, &h[3]);
  assert_absent(f->c, &h[5]);
  assert_absent(f->c, &h[8]);
  for (int i = 0; i < 10; i++)
    if (i != 3 && i != 5 && i != 8)
      assert_holds(f->c, &h[i], p + i * NC_HDE_PAGE);

  /* Damage while open: the read check catches it and drops the entry. */
  uint8_t y = p[6 * NC_HDE_PAGE + 4095] ^ 0x01;
  scribble(f, HDR + 6 * SLOT + 16 + 4095, &y, 1);
  assert_absent(f->c, &h[6]);
  assert_int_equal(nc_pcache_count(f->c), 6);
  assert_absent(f->c, &h[6]);
  /* The lost pages can be stored again, into the freed slots. */
  for (int i = 3; i <= 8; i++)
    assert_int_equal(nc_pcache_put(f->c, &h[i], p + i * NC_HDE_PAGE), 0);
  assert_int_equal(nc_pcache_count(f->c), 10);
  for (int i = 0; i < 10; i++)
    assert_holds(f->c, &h[i], p + i * NC_HDE_PAGE);
  free(p);
}

/* A pinned entry damaged on disk is dropped (never returned) but keeps its
 * pin until the session ends; then its slot is free again. */
static void test_corrupt_pinned_then_unpin(void **state) {
  struct fx *f = *state;
  struct nc_hash128 h[8];
  uint8_t *p = make_pages(13, 8, h);
  assert_int_equal(nc_pcache_open(f->dir, CAP(4), &f->c), 0);
  for (int i = 0; i < 4; i++)
    assert_int_equal(nc_pcache_put(f->c, &h[i], p + i * NC_HDE_PAGE), 0);
  uint8_t *sum;
  size_t len;
  assert_int_equal(nc_pcache_summary(f->c, 1, &sum, &len), 0);
  free(sum);
  uint8_t y = p[2 * NC_HDE_PAGE] ^ 0x80;
  scribble(f, HDR + 2 * SLOT + 16, &y, 1);
  assert_absent(f->c, &h[2]);
  assert_int_equal(nc_pcache_count(f->c), 3);
  /* Still pinned: nothing can be stored. */
  assert_int_equal(nc_pcache_put(f->c, &h[4], p + 4 * NC_HDE_PAGE), -ENOSPC);
  nc_pcache_unpin_all(f->c, 1);
  /* The damaged slot is the free one, used before any eviction. */
  assert_int_equal(nc_pcache_put(f->c, &h[4], p + 4 * NC_HDE_PAGE), 0);
  for (int i = 0; i < 5; i++)
    if (i != 2)
      assert_holds(f->c, &h[i], p + i * NC_HDE_PAGE);
  free(p);
}

/* The file cut short behind the cache's back: reads come up short, and
 * the entries are dropped, not returned. */
static void test_file_truncated_while_open(void **state) {
  struct fx *f = *state;
  struct nc_hash128 h[3];
  uint8_t *p = make_pages(14, 3, h);
  assert_int_equal(nc_pcache_open(f->dir, CAP(3), &f->c), 0);
  for (int i = 0; i < 3; i++)
    assert_int_equal(nc_pcache_put(f->c, &h[i], p + i * NC_HDE_PAGE), 0);
  char path[128];
  file_path(f, path, sizeof path);
  assert_int_equal(truncate(path, HDR + SLOT + 1000), 0);
  assert_holds(f->c, &h[0], p);
  assert_absent(f->c, &h[1]);
  assert_absent(f->c, &h[2]);
  assert_int_equal(nc_pcache_count(f->c), 1);
  free(p);
}

static void test_foreign_header_discarded(void **state) {
  struct fx *f = *state;
  char path[128];
  file_path(f, path, sizeof path);
  int fd = open(path, O_WRONLY | O_CREAT, 0644);
  assert_true(fd >= 0);
  uint8_t junk[HDR + SLOT];
  memset(junk, 'x', sizeof junk);
  assert_int_equal(write(fd, junk, sizeof junk), (ssize_t)sizeof junk);
  close(fd);
  assert_int_equal(nc_pcache_open(f->dir, CAP(3), &f->c), 0);
  assert_int_equal(nc_pcache_count(f->c), 0);
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0600);
  assert_int_equal(st.st_size, CAP(3));
}

static void test_cap_respected(void **state) {
  struct fx *f = *state;
  struct nc_hash128 h[100];
  uint8_t *p = make_pages(4, 100, h);
  uint64_t cap = CAP(10) + SLOT - 1; /* not a whole slot more */
  assert_int_equal(nc_pcache_open(f->dir, cap, &f->c), 0);
  assert_int_equal(nc_pcache_slots(f->c), 10);
  for (int i = 0; i < 100; i++) {
    assert_int_equal(nc_pcache_put(f->c, &h[i], p + i * NC_HDE_PAGE), 0);
    assert_true(nc_pcache_count(f->c) <= 10);
  }
  assert_int_equal(nc_pcache_count(f->c), 10);
  int held = 0;
  uint8_t got[NC_HDE_PAGE];
  for (int i = 0; i < 100; i++)
    if (nc_pcache_get(f->c, &h[i], got) == 0) {
      assert_memory_equal(got, p + i * NC_HDE_PAGE, NC_HDE_PAGE);
      held++;
      assert_true(i >= 90); /* FIFO when nothing is hit: the last ten */
    }
  assert_int_equal(held, 10);
  char path[128];
  file_path(f, path, sizeof path);
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  assert_true((uint64_t)st.st_size <= cap);
  nc_pcache_close(f->c);

  /* Reopening smaller keeps what fits and shrinks the file; larger again
   * keeps those. */
  assert_int_equal(nc_pcache_open(f->dir, CAP(4), &f->c), 0);
  assert_int_equal(nc_pcache_count(f->c), 4);
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(st.st_size, CAP(4));
  nc_pcache_close(f->c);
  assert_int_equal(nc_pcache_open(f->dir, CAP(20), &f->c), 0);
  assert_int_equal(nc_pcache_count(f->c), 4);
  free(p);
}

static void test_clock_second_chance(void **state) {
  struct fx *f = *state;
  struct nc_hash128 h[12];
  uint8_t *p = make_pages(5, 12, h);
  assert_int_equal(nc_pcache_open(f->dir, CAP(10), &f->c), 0);
  for (int i = 0; i < 10; i++)
    assert_int_equal(nc_pcache_put(f->c, &h[i], p + i * NC_HDE_PAGE), 0);
  assert_holds(f->c, &h[0], p); /* a hit: survives the next sweep */
  assert_int_equal(nc_pcache_put(f->c, &h[10], p + 10 * NC_HDE_PAGE), 0);
  assert_holds(f->c, &h[0], p);
  assert_absent(f->c, &h[1]); /* the oldest entry that was not hit */
  assert_int_equal(nc_pcache_put(f->c, &h[11], p + 11 * NC_HDE_PAGE), 0);
  assert_absent(f->c, &h[2]);
  assert_holds(f->c, &h[0], p);
  free(p);
}

/* Parses a summary; returns the count and checks the format. */
static uint64_t summary_check(const uint8_t *buf, size_t len) {
  assert_true(len >= 9);
  assert_int_equal(buf[0], 1);
  uint64_t n = 0;
  for (int i = 0; i < 8; i++)
    n = n << 8 | buf[1 + i];
  assert_int_equal(len, 9 + 16 * n);
  for (uint64_t i = 1; i < n; i++)
    assert_true(memcmp(buf + 9 + (i - 1) * 16, buf + 9 + i * 16, 16) < 0);
  return n;
}

static bool summary_has(const uint8_t *buf, size_t len, const struct nc_hash128 *h) {
  uint8_t canon[16];
  for (int b = 0; b < 8; b++) {
    canon[b] = (uint8_t)(h->hi >> (56 - 8 * b));
    canon[8 + b] = (uint8_t)(h->lo >> (56 - 8 * b));
  }
  for (size_t off = 9; off + 16 <= len; off += 16)
    if (memcmp(buf + off, canon, 16) == 0)
      return true;
  return false;
}

static void test_pinned_never_evicted(void **state) {
  struct fx *f = *state;
  struct nc_hash128 h[60];
  uint8_t *p = make_pages(6, 60, h);
  assert_int_equal(nc_pcache_open(f->dir, CAP(10), &f->c), 0);
  for (int i = 0; i < 5; i++)
    assert_int_equal(nc_pcache_put(f->c, &h[i], p + i * NC_HDE_PAGE), 0);
  uint8_t *sum;
  size_t len;
  assert_int_equal(nc_pcache_summary(f->c, 1, &sum, &len), 0);
  assert_int_equal(summary_check(sum, len), 5);
  for (int i = 0; i < 5; i++)
    assert_true(summary_has(sum, len, &h[i]));
  free(sum);
  /* Flood with unpinned pages: only the five unpinned slots turn over. */
  for (int i = 5; i < 60; i++)
    assert_int_equal(nc_pcache_put(f->c, &h[i], p + i * NC_HDE_PAGE), 0);
  for (int i = 0; i < 5; i++)
    assert_holds(f->c, &h[i], p + i * NC_HDE_PAGE);
  assert_int_equal(nc_pcache_count(f->c), 10);

  /* Everything pinned: an unpinned put has nowhere to go. */
  assert_int_equal(nc_pcache_summary(f->c, 2, &sum, &len), 0);
  assert_int_equal(summary_check(sum, len), 10);
  free(sum);
  assert_int_equal(nc_pcache_put(f->c, &h[0], p), 0); /* present: fine */
  nc_pcache_unpin_all(f->c, 1);
  struct nc_hash128 hx[1];
  uint8_t *px = make_pages(66, 1, hx);
  assert_int_equal(nc_pcache_put(f->c, &hx[0], px), -ENOSPC);
  nc_pcache_unpin_all(f->c, 2);
  nc_pcache_unpin_all(f->c, 12345); /* unknown: no-op */
  assert_int_equal(nc_pcache_put(f->c, &hx[0], px), 0);
  assert_holds(f->c, &hx[0], px);
  free(px);
  free(p);
}

/* The accounting behind the decoder's quota: a reservation taken before
 * the summary survives the summary, other sessions and a flood of
 * unpinned puts. */
static void test_reserve_then_summary(void **state) {
  struct fx *f = *state;
  struct nc_hash128 h[40];
  uint8_t *p = make_pages(7, 40, h);
  assert_int_equal(nc_pcache_open(f->dir, CAP(10), &f->c), 0);
  for (int i = 0; i < 10; i++)
    assert_int_equal(nc_pcache_put(f->c, &h[i], p + i * NC_HDE_PAGE), 0);
  uint64_t g = 99;
  assert_int_equal(nc_pcache_reserve(f->c, 0, 1, &g), NC_E_INVALID);
  assert_int_equal(nc_pcache_reserve(f->c, 2, 4, &g), 0); /* B */
  assert_int_equal(g, 4);
  assert_int_equal(nc_pcache_reserved(f->c, 2), 4);

  uint8_t *sum;
  size_t len;
  assert_int_equal(nc_pcache_summary(f->c, 1, &sum, &len), 0); /* A */
  assert_int_equal(summary_check(sum, len), 6);
  for (int i = 4; i < 10; i++) /* the newest six */
    assert_true(summary_has(sum, len, &h[i]));
  free(sum);
  assert_int_equal(nc_pcache_reserve(f->c, 3, 1, &g), 0); /* C: nothing left */
  assert_int_equal(g, 0);
  assert_int_equal(nc_pcache_reserved(f->c, 2), 4);
  assert_int_equal(nc_pcache_reserved(f->c, 1), 0);

  /* B fills its reservation with new pages, then has no more room. */
  for (int i = 10; i < 14; i++)
    assert_int_equal(nc_pcache_put_pinned(f->c, 2, &h[i], p + i * NC_HDE_PAGE), 0);
  assert_int_equal(nc_pcache_reserved(f->c, 2), 0);
  assert_int_equal(nc_pcache_put_pinned(f->c, 2, &h[14], p + 14 * NC_HDE_PAGE), -ENOSPC);
  assert_int_equal(nc_pcache_put(f->c, &h[14], p + 14 * NC_HDE_PAGE), -ENOSPC);
  /* Pinning something A already pins costs nothing. */
  assert_int_equal(nc_pcache_put_pinned(f->c, 2, &h[9], p + 9 * NC_HDE_PAGE), 0);

  nc_pcache_unpin_all(f->c, 1);
  for (int i = 14; i < 40; i++)
    assert_int_equal(nc_pcache_put(f->c, &h[i], p + i * NC_HDE_PAGE), 0);
  for (int i = 10; i < 14; i++)
    assert_holds(f->c, &h[i], p + i * NC_HDE_PAGE);
  assert_holds(f->c, &h[9], p + 9 * NC_HDE_PAGE);
  nc_pcache_unpin_all(f->c, 2);
  nc_pcache_unpin_all(f->c, 3);
  assert_int_equal(nc_pcache_reserve(f->c, 4, 100, &g), 0);
  assert_int_equal(g, 10); /* everything is claimable again */
  nc_pcache_unpin_all(f->c, 4);
  free(p);
}

/* The destination's own sequence: one session reserves, then takes the
 * summary; the summary's pins must not eat the reservation. */
static void test_reserve_and_summary_same_session(void **state) {
  struct fx *f = *state;
  struct nc_hash128 h[12];
  uint8_t *p = make_pages(10, 12, h);
  assert_int_equal(nc_pcache_open(f->dir, CAP(10), &f->c), 0);
  for (int i = 0; i < 6; i++)
    assert_int_equal(nc_pcache_put(f->c, &h[i], p + i * NC_HDE_PAGE), 0);
  uint64_t g;
  assert_int_equal(nc_pcache_reserve(f->c, 1, 3, &g), 0);
  assert_int_equal(g, 3);
  uint8_t *sum;
  size_t len;
  assert_int_equal(nc_pcache_summary(f->c, 1, &sum, &len), 0);
  assert_int_equal(summary_check(sum, len), 6);
  free(sum);
  assert_int_equal(nc_pcache_reserved(f->c, 1), 3);
  /* 6 pinned + 3 reserved: one slot left for anyone. */
  assert_int_equal(nc_pcache_reserve(f->c, 2, 5, &g), 0);
  assert_int_equal(g, 1);
  for (int i = 6; i < 9; i++)
    assert_int_equal(nc_pcache_put_pinned(f->c, 1, &h[i], p + i * NC_HDE_PAGE), 0);
  assert_int_equal(nc_pcache_reserved(f->c, 1), 0);
  assert_int_equal(nc_pcache_put_pinned(f->c, 2, &h[9], p + 9 * NC_HDE_PAGE), 0);
  assert_int_equal(nc_pcache_put_pinned(f->c, 1, &h[10], p + 10 * NC_HDE_PAGE), -ENOSPC);
  nc_pcache_unpin_all(f->c, 1);
  nc_pcache_unpin_all(f->c, 2);
  free(p);
}

/* Reserving after the summary: a full cache has nothing left to promise,
 * which is why hde.h asks for reserve first. */
static void test_summary_then_reserve(void **state) {
  struct fx *f = *state;
  struct nc_hash128 h[4];
  uint8_t *p = make_pages(8, 4, h);
  assert_int_equal(nc_pcache_open(f->dir, CAP(4), &f->c), 0);
  for (int i = 0; i < 4; i++)
    assert_int_equal(nc_pcache_put(f->c, &h[i], p + i * NC_HDE_PAGE), 0);
  uint8_t *sum;
  size_t len;
  assert_int_equal(nc_pcache_summary(f->c, 1, &sum, &len), 0);
  free(sum);
  uint64_t g = 9;
  assert_int_equal(nc_pcache_reserve(f->c, 1, 2, &g), 0);
  assert_int_equal(g, 0);
  nc_pcache_unpin_all(f->c, 1);
  free(p);
}

static void test_empty_summary(void **state) {
  struct fx *f = *state;
  assert_int_equal(nc_pcache_open(f->dir, CAP(4), &f->c), 0);
  uint8_t *sum = NULL;
  size_t len = 0;
  assert_int_equal(nc_pcache_summary(f->c, 0, &sum, &len), NC_E_INVALID);
  assert_int_equal(nc_pcache_summary(f->c, 1, &sum, &len), 0);
  assert_int_equal(summary_check(sum, len), 0);
  free(sum);
  nc_pcache_unpin_all(f->c, 1);
}

/* Writes past `limit` bytes of any file fail (EFBIG), or come up short
 * when a write straddles it: a disk that fills up under the cache. */
static struct rlimit fsize_saved;
static void fsize_limit(rlim_t limit) {
  signal(SIGXFSZ, SIG_IGN);
  assert_int_equal(getrlimit(RLIMIT_FSIZE, &fsize_saved), 0);
  struct rlimit l = {limit, fsize_saved.rlim_max};
  assert_int_equal(setrlimit(RLIMIT_FSIZE, &l), 0);
}
static void fsize_restore(void) {
  assert_int_equal(setrlimit(RLIMIT_FSIZE, &fsize_saved), 0);
}

static void test_write_failure(void **state) {
  struct fx *f = *state;
  struct nc_hash128 h[6];
  uint8_t *p = make_pages(11, 6, h);
  assert_int_equal(nc_pcache_open(f->dir, CAP(6), &f->c), 0);
  fsize_limit(HDR + 2 * SLOT + 100); /* slots 0, 1 fine; slot 2 torn; 3+ fail */
  assert_int_equal(nc_pcache_put(f->c, &h[0], p), 0);
  assert_int_equal(nc_pcache_put(f->c, &h[1], p + NC_HDE_PAGE), 0);
  assert_int_equal(nc_pcache_put(f->c, &h[2], p + 2 * NC_HDE_PAGE), -EIO); /* short */
  assert_int_equal(nc_pcache_count(f->c), 2);
  assert_absent(f->c, &h[2]);
  uint64_t g;
  assert_int_equal(nc_pcache_reserve(f->c, 1, 1, &g), 0);
  assert_int_equal(g, 1);
  int rc = nc_pcache_put_pinned(f->c, 1, &h[3], p + 3 * NC_HDE_PAGE);
  assert_true(rc == -EIO || rc == -EFBIG);
  assert_int_equal(nc_pcache_reserved(f->c, 1), 1); /* not consumed */
  fsize_restore();
  /* The failed slots went back to the free list: the cache goes on. */
  for (int i = 2; i < 6; i++)
    assert_int_equal(nc_pcache_put_pinned(f->c, 1, &h[i], p + i * NC_HDE_PAGE), 0);
  for (int i = 0; i < 6; i++)
    assert_holds(f->c, &h[i], p + i * NC_HDE_PAGE);
  nc_pcache_unpin_all(f->c, 1);
  nc_pcache_close(f->c);
  f->c = NULL;
  assert_int_equal(nc_pcache_open(f->dir, CAP(6), &f->c), 0);
  assert_int_equal(nc_pcache_count(f->c), 6);
  free(p);
}

/* Write-behind: pages are readable at once (a get of a pending page writes
 * the batch first), survive close and reopen, and eviction keeps working
 * across batch boundaries (more pages than slots, more than one batch). */
static void test_write_behind(void **state) {
  struct fx *f = *state;
  enum { N = 150, SLOTS = 100 };
  struct nc_hash128 h[N];
  uint8_t *p = make_pages(21, N, h);
  assert_int_equal(nc_pcache_open(f->dir, CAP(SLOTS), &f->c), 0);
  assert_int_equal(nc_pcache_set_write_behind(f->c, true), 0);
  for (int i = 0; i < 70; i++)
    assert_int_equal(nc_pcache_put(f->c, &h[i], p + (size_t)i * NC_HDE_PAGE), 0);
  assert_holds(f->c, &h[69], p + 69 * NC_HDE_PAGE); /* pending until this get */
  assert_holds(f->c, &h[3], p + 3 * NC_HDE_PAGE);
  for (int i = 70; i < N; i++) /* evicts the oldest 50 */
    assert_int_equal(nc_pcache_put(f->c, &h[i], p + (size_t)i * NC_HDE_PAGE), 0);
  assert_int_equal(nc_pcache_count(f->c), SLOTS);
  assert_holds(f->c, &h[N - 1], p + (size_t)(N - 1) * NC_HDE_PAGE);
  nc_pcache_close(f->c); /* writes the last batch */
  f->c = NULL;
  assert_int_equal(nc_pcache_open(f->dir, CAP(SLOTS), &f->c), 0);
  assert_int_equal(nc_pcache_count(f->c), SLOTS);
  int held = 0;
  for (int i = 0; i < N; i++) {
    uint8_t got[NC_HDE_PAGE];
    if (nc_pcache_get(f->c, &h[i], got) == 0) {
      assert_memory_equal(got, p + (size_t)i * NC_HDE_PAGE, NC_HDE_PAGE);
      held++;
    }
  }
  assert_int_equal(held, SLOTS);
  free(p);
}

/* A batch whose write fails: its entries are dropped (a get says -ENOENT,
 * never returns bytes that are not in the file), the pinned one too, and
 * the cache goes on once the disk has room again. */
static void test_write_behind_failure(void **state) {
  struct fx *f = *state;
  struct nc_hash128 h[6];
  uint8_t *p = make_pages(22, 6, h);
  assert_int_equal(nc_pcache_open(f->dir, CAP(8), &f->c), 0);
  assert_int_equal(nc_pcache_set_write_behind(f->c, true), 0);
  assert_int_equal(nc_pcache_put(f->c, &h[0], p), 0);
  assert_int_equal(nc_pcache_flush(f->c), 0);
  uint64_t g;
  assert_int_equal(nc_pcache_reserve(f->c, 1, 2, &g), 0);
  assert_int_equal(g, 2);
  fsize_limit(HDR + 1 * SLOT + 100); /* slot 0 is in the file; the rest fails */
  assert_int_equal(nc_pcache_put(f->c, &h[1], p + NC_HDE_PAGE), 0);
  assert_int_equal(nc_pcache_put_pinned(f->c, 1, &h[2], p + 2 * NC_HDE_PAGE), 0);
  assert_int_equal(nc_pcache_count(f->c), 3);
  int rc = nc_pcache_flush(f->c);
  assert_true(rc == -EIO || rc == -EFBIG);
  assert_int_equal(nc_pcache_count(f->c), 1);
  assert_absent(f->c, &h[1]);
  assert_absent(f->c, &h[2]);
  assert_holds(f->c, &h[0], p);
  fsize_restore();
  for (int i = 1; i < 6; i++) /* 6 free slots: slot 2 stays pinned */
    assert_int_equal(nc_pcache_put(f->c, &h[i], p + (size_t)i * NC_HDE_PAGE), 0);
  for (int i = 0; i < 6; i++)
    assert_holds(f->c, &h[i], p + (size_t)i * NC_HDE_PAGE);
  nc_pcache_unpin_all(f->c, 1);
  nc_pcache_close(f->c);
  f->c = NULL;
  assert_int_equal(nc_pcache_open(f->dir, CAP(8), &f->c), 0);
  assert_int_equal(nc_pcache_count(f->c), 6);
  free(p);
}

/* A write torn by a crash, then a reopen: the torn slot is gone, the rest
 * is intact. */
static void test_torn_write_reopen(void **state) {
  struct fx *f = *state;
  struct nc_hash128 h[3];
  uint8_t *p = make_pages(12, 3, h);
  assert_int_equal(nc_pcache_open(f->dir, CAP(3), &f->c), 0);
  assert_int_equal(nc_pcache_put(f->c, &h[0], p), 0);
  assert_int_equal(nc_pcache_put(f->c, &h[1], p + NC_HDE_PAGE), 0);
  nc_pcache_close(f->c);
  f->c = NULL;
  /* Slot 1 overwritten with h[2] and cut half-way: the new hash over a
   * page half new, half old. */
  uint8_t half[16 + 2048];
  for (int b = 0; b < 8; b++) {
    half[b] = (uint8_t)(h[2].hi >> (56 - 8 * b));
    half[8 + b] = (uint8_t)(h[2].lo >> (56 - 8 * b));
  }
  memcpy(half + 16, p + 2 * NC_HDE_PAGE, 2048);
  scribble(f, HDR + SLOT, half, sizeof half);
  assert_int_equal(nc_pcache_open(f->dir, CAP(3), &f->c), 0);
  assert_int_equal(nc_pcache_count(f->c), 1);
  assert_holds(f->c, &h[0], p);
  assert_absent(f->c, &h[1]);
  assert_absent(f->c, &h[2]);
  free(p);
}

struct thr {
  struct nc_pcache *c;
  const uint8_t *pages;
  const struct nc_hash128 *h;
  uint64_t seed;
  int bad, hits;
};

static void *worker(void *arg) {
  struct thr *t = arg;
  struct rng r = {t->seed};
  uint8_t got[NC_HDE_PAGE];
  for (int i = 0; i < 3000; i++) {
    unsigned k = (unsigned)(rnd(&r) % 64);
    switch (rnd(&r) % 4) {
    case 0: { /* -ENOSPC is fair: the other sessions may pin every slot */
      int rc = nc_pcache_put(t->c, &t->h[k], t->pages + k * NC_HDE_PAGE);
      if (rc != 0 && rc != -ENOSPC)
        t->bad++;
      break;
    }
    case 1:
      if (nc_pcache_put_pinned(t->c, t->seed, &t->h[k], t->pages + k * NC_HDE_PAGE) != 0 &&
          nc_pcache_reserved(t->c, t->seed) > 0)
        t->bad++;
      break;
    default: {
      int rc = nc_pcache_get(t->c, &t->h[k], got);
      if (rc == 0) {
        t->hits++;
        if (memcmp(got, t->pages + k * NC_HDE_PAGE, NC_HDE_PAGE) != 0)
          t->bad++;
      } else if (rc != -ENOENT) {
        t->bad++;
      }
    }
    }
    if (i % 500 == 499)
      nc_pcache_unpin_all(t->c, t->seed);
  }
  nc_pcache_unpin_all(t->c, t->seed);
  return NULL;
}

static void test_threads(void **state) {
  struct fx *f = *state;
  struct nc_hash128 h[64];
  uint8_t *p = make_pages(9, 64, h);
  assert_int_equal(nc_pcache_open(f->dir, CAP(32), &f->c), 0);
  pthread_t tid[4];
  struct thr t[4];
  for (int i = 0; i < 4; i++) {
    t[i] = (struct thr){.c = f->c, .pages = p, .h = h, .seed = (uint64_t)i + 1};
    assert_int_equal(pthread_create(&tid[i], NULL, worker, &t[i]), 0);
  }
  int hits = 0;
  for (int i = 0; i < 4; i++) {
    pthread_join(tid[i], NULL);
    assert_int_equal(t[i].bad, 0);
    hits += t[i].hits;
  }
  assert_true(hits > 0);
  assert_true(nc_pcache_count(f->c) <= 32);
  uint64_t g;
  assert_int_equal(nc_pcache_reserve(f->c, 99, 1000, &g), 0);
  assert_int_equal(g, 32); /* no pin or reservation leaked */
  free(p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_persist_reopen, setup, teardown),
      cmocka_unit_test_setup_teardown(test_second_open_busy, setup, teardown),
      cmocka_unit_test_setup_teardown(test_put_wrong_hash, setup, teardown),
      cmocka_unit_test_setup_teardown(test_corrupt_slot_on_disk, setup, teardown),
      cmocka_unit_test_setup_teardown(test_corrupt_pinned_then_unpin, setup, teardown),
      cmocka_unit_test_setup_teardown(test_file_truncated_while_open, setup, teardown),
      cmocka_unit_test_setup_teardown(test_foreign_header_discarded, setup, teardown),
      cmocka_unit_test_setup_teardown(test_cap_respected, setup, teardown),
      cmocka_unit_test_setup_teardown(test_clock_second_chance, setup, teardown),
      cmocka_unit_test_setup_teardown(test_pinned_never_evicted, setup, teardown),
      cmocka_unit_test_setup_teardown(test_reserve_then_summary, setup, teardown),
      cmocka_unit_test_setup_teardown(test_reserve_and_summary_same_session, setup, teardown),
      cmocka_unit_test_setup_teardown(test_summary_then_reserve, setup, teardown),
      cmocka_unit_test_setup_teardown(test_empty_summary, setup, teardown),
      cmocka_unit_test_setup_teardown(test_write_failure, setup, teardown),
      cmocka_unit_test_setup_teardown(test_torn_write_reopen, setup, teardown),
      cmocka_unit_test_setup_teardown(test_write_behind, setup, teardown),
      cmocka_unit_test_setup_teardown(test_write_behind_failure, setup, teardown),
      cmocka_unit_test_setup_teardown(test_threads, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
