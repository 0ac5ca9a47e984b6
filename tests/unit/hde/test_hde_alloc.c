/* Allocation failures: a whole session (cache open, reserve, summary,
 * encoder, decoder, pages through both) is run again and again with the
 * Nth allocation failing, for every N until a run sees no failure. Every
 * run must end cleanly: each call succeeds or returns -ENOMEM, whatever
 * the decoder accepts is the page that was encoded, and nothing leaks
 * (allocations are counted here, since this binary replaces malloc).
 *
 * Replacing malloc does not mix with AddressSanitizer, which replaces it
 * too: under ASan the test is skipped (the plain build runs it). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "hde_test.h"
#include "util/err.h"

#if defined(__SANITIZE_ADDRESS__)
#define NC_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define NC_TEST_ASAN 1
#endif
#endif

#ifndef NC_TEST_ASAN
extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t n, size_t m);
extern void *__libc_realloc(void *p, size_t n);
extern void __libc_free(void *p);

static long fail_at = -1; /* allocation number that fails; -1: none */
static long seen;         /* allocations since arming */
static long live;         /* outstanding allocations */

static bool should_fail(void) {
  if (fail_at < 0)
    return false;
  return seen++ == fail_at;
}

void *malloc(size_t n) {
  if (should_fail())
    return NULL;
  void *p = __libc_malloc(n);
  if (p)
    live++;
  return p;
}

void *calloc(size_t n, size_t m) {
  if (should_fail())
    return NULL;
  void *p = __libc_calloc(n, m);
  if (p)
    live++;
  return p;
}

void *realloc(void *old, size_t n) {
  if (should_fail())
    return NULL;
  void *p = __libc_realloc(old, n);
  if (p && !old)
    live++;
  return p;
}

void free(void *p) {
  if (p)
    live--;
  __libc_free(p);
}
#endif

#ifndef NC_TEST_ASAN
#define CAP(slots) (4096u + (uint64_t)(slots) * (16u + NC_HDE_PAGE))

/* One session. Returns 0, or the first error (which must be -ENOMEM). */
static int session(const char *dir, int *pages_ok) {
  struct nc_pcache *c = NULL;
  struct nc_hde_enc *e = NULL;
  struct nc_hde_dec *d = NULL;
  uint8_t *sum = NULL;
  size_t sum_len = 0;
  uint8_t page[NC_HDE_PAGE], got[NC_HDE_PAGE], tok[NC_HDE_TOKEN_MAX];
  struct rng r = {5};
  int rc = nc_pcache_open(dir, CAP(64), &c);
  if (rc < 0)
    goto out;
  for (int i = 0; i < 4; i++) {
    struct nc_hash128 h;
    page_random(&r, page);
    nc_hde_hash(page, &h);
    if ((rc = nc_pcache_put(c, &h, page)) < 0)
      goto out;
  }
  struct nc_hde_params p = {.codec = NC_HDE_ZSTD,
                            .level = 1,
                            .delta_cache_bytes = 8 * NC_HDE_PAGE,
                            .dedup = true};
  if ((rc = nc_pcache_reserve(c, 1, 40, &p.new_pages_quota)) < 0)
    goto out;
  if ((rc = nc_pcache_summary(c, 1, &sum, &sum_len)) < 0)
    goto out;
  if ((rc = nc_hde_enc_new(&p, sum, sum_len, NULL, &e)) < 0)
    goto out;
  if ((rc = nc_hde_dec_new(&p, c, 1, &d)) < 0)
    goto out;
  static uint8_t cur[12][NC_HDE_PAGE];
  memset(cur, 0, sizeof cur);
  for (int i = 0; i < 120; i++) {
    int k = i % 12;
    if (i == 60)
      nc_hde_enc_set_codec(e, NC_HDE_LZ4, 1);
    if (i % 5 == 0)
      page_random(&r, cur[k]);
    else if (i % 7 == 0)
      memcpy(cur[k], cur[(k + 1) % 12], NC_HDE_PAGE);
    else
      page_sparse_write(&r, cur[k], 3);
    size_t len;
    if ((rc = nc_hde_encode(e, (uint64_t)k, cur[k], tok, &len)) < 0)
      goto out;
    if ((rc = nc_hde_decode(d, (uint64_t)k, tok, len, got)) < 0)
      goto out; /* the session ends here; the migration would abort */
    if (memcmp(got, cur[k], NC_HDE_PAGE) != 0) {
      rc = NC_E_INVALID; /* must never happen */
      goto out;
    }
    (*pages_ok)++;
  }
out:
  free(sum);
  nc_hde_enc_free(e);
  nc_hde_dec_free(d);
  nc_pcache_unpin_all(c, 1);
  nc_pcache_close(c);
  return rc;
}
#endif

static void test_every_allocation_fails_once(void **state) {
  (void)state;
#ifdef NC_TEST_ASAN
  skip();
#else
  char dir[64];
  assert_int_equal(tmpdir_make(dir), 0);
  int runs = 0, failed_cleanly = 0, ok_pages;
  for (long n = 0;; n++) {
    char f[128];
    snprintf(f, sizeof f, "%s/%s", dir, NC_PCACHE_FILE);
    unlink(f);
    long live_before = live;
    ok_pages = 0;
    seen = 0;
    fail_at = n;
    int rc = session(dir, &ok_pages);
    bool injected = seen > n;
    fail_at = -1;
    if (rc != 0 && rc != -ENOMEM)
      fail_msg("allocation %ld failing: %s after %d pages", n, nc_strerror(rc), ok_pages);
    if (live != live_before)
      fail_msg("allocation %ld failing: %ld allocations leaked", n, live - live_before);
    runs++;
    if (rc != 0)
      failed_cleanly++;
    if (!injected) {
      assert_int_equal(rc, 0);
      assert_int_equal(ok_pages, 120);
      break;
    }
  }
  printf("  %d runs, %d ended with -ENOMEM, the others degraded and completed\n", runs,
         failed_cleanly);
  assert_true(runs > 10);
  tmpdir_remove(dir);
#endif
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_every_allocation_fails_once),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
