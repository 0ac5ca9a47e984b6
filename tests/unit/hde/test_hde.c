/* The HDE page codec (src/dwcp/hde.c): round trips over synthetic page
 * sequences, encoder and decoder mirror caches in lockstep under eviction,
 * the REF rules (summary, in-session quota), the return-migration cache,
 * and hostile tokens (tampered, truncated, oversized, lying frames). Ends
 * with a throughput measurement that prints, never asserts. */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/resource.h>
#include <stddef.h>
#include <time.h>

#include <cmocka.h>
#include <lz4.h>
#include <zstd.h>

#include "hde_test.h"
#include "util/err.h"

#define HDR 4096u
#define SLOT (16u + NC_HDE_PAGE)
#define CAP(slots) ((uint64_t)HDR + (uint64_t)(slots) * SLOT)
#define SESSION 42

/* A source and a destination, wired as a migration would be. */
struct pair {
  char sdir[64], ddir[64];
  struct nc_pcache *src, *dst;
  struct nc_hde_enc *e;
  struct nc_hde_dec *d;
  struct nc_hde_params p;
  uint8_t tok[NC_HDE_TOKEN_MAX];
  size_t len;
};

/* Destination protocol of hde.h: reserve, summary, then both sides. */
static void pair_open(struct pair *x, const struct nc_hde_params *p, uint64_t dst_slots,
                      uint64_t want_quota, bool src_cache) {
  memset(x, 0, sizeof *x);
  x->p = *p;
  assert_int_equal(tmpdir_make(x->ddir), 0);
  assert_int_equal(nc_pcache_open(x->ddir, CAP(dst_slots), &x->dst), 0);
  assert_int_equal(nc_pcache_reserve(x->dst, SESSION, want_quota, &x->p.new_pages_quota), 0);
  uint8_t *sum;
  size_t sum_len;
  assert_int_equal(nc_pcache_summary(x->dst, SESSION, &sum, &sum_len), 0);
  if (src_cache) {
    assert_int_equal(tmpdir_make(x->sdir), 0);
    assert_int_equal(nc_pcache_open(x->sdir, CAP(4096), &x->src), 0);
  }
  assert_int_equal(nc_hde_enc_new(&x->p, sum, sum_len, x->src, &x->e), 0);
  free(sum);
  assert_int_equal(nc_hde_dec_new(&x->p, x->dst, SESSION, &x->d), 0);
}

static void pair_close(struct pair *x) {
  nc_hde_enc_free(x->e);
  nc_hde_dec_free(x->d);
  nc_pcache_unpin_all(x->dst, SESSION);
  nc_pcache_close(x->dst);
  nc_pcache_close(x->src);
  tmpdir_remove(x->ddir);
  if (x->src)
    tmpdir_remove(x->sdir);
}

/* Encodes and decodes one page; the decoded page must be the original.
 * Returns the token's kind. */
static int rt(struct pair *x, uint64_t key, const uint8_t *page) {
  assert_int_equal(nc_hde_encode(x->e, key, page, x->tok, &x->len), 0);
  assert_true(x->len >= 17 && x->len <= NC_HDE_TOKEN_MAX);
  uint8_t got[NC_HDE_PAGE];
  int rc = nc_hde_decode(x->d, key, x->tok, x->len, got);
  if (rc != 0)
    fail_msg("decode of key %llu (kind %d, %zu bytes): %s", (unsigned long long)key, x->tok[0],
             x->len, nc_strerror(rc));
  assert_memory_equal(got, page, NC_HDE_PAGE);
  return x->tok[0];
}

static void assert_stats_agree(const struct pair *x) {
  struct nc_hde_stats es, ds;
  nc_hde_enc_stats(x->e, &es);
  nc_hde_dec_stats(x->d, &ds);
  assert_int_equal(es.pages, ds.pages);
  assert_int_equal(es.zero, ds.zero);
  assert_int_equal(es.ref, ds.ref);
  assert_int_equal(es.delta, ds.delta);
  assert_int_equal(es.raw, ds.raw);
  assert_int_equal(es.stored, ds.stored);
  assert_int_equal(es.stored_new, ds.stored_new);
  assert_int_equal(es.bytes_out, ds.bytes_in);
  assert_int_equal(es.bytes_in, ds.bytes_out);
}

static const struct {
  enum nc_hde_codec codec;
  int level;
  const char *name;
} codecs[] = {
    {NC_HDE_LZ4, 1, "lz4"},
    {NC_HDE_ZSTD, 1, "zstd-1"},
    {NC_HDE_ZSTD, 3, "zstd-3"},
    {NC_HDE_ZSTD, 19, "zstd-19"},
    {NC_HDE_ZSTD, -5, "zstd--5"},
    {NC_HDE_NONE, 0, "none"},
};
#define NCODECS (sizeof codecs / sizeof codecs[0])

static void test_roundtrip_mixed(void **state) {
  (void)state;
  for (size_t c = 0; c < NCODECS; c++) {
    struct nc_hde_params p = {.codec = codecs[c].codec,
                              .level = codecs[c].level,
                              .delta_cache_bytes = 256 * NC_HDE_PAGE,
                              .dedup = true};
    struct pair x;
    pair_open(&x, &p, 512, 256, false);
    bool compressing = codecs[c].codec != NC_HDE_NONE;
    struct rng r = {c + 1};
    static uint8_t pages[128][NC_HDE_PAGE];
    uint8_t zero[NC_HDE_PAGE] = {0};

    assert_int_equal(rt(&x, 0, zero), T_ZERO);
    assert_int_equal(x.len, 17);
    for (int k = 0; k < 64; k++) { /* the guest's compressible pattern */
      memset(pages[k], 0, NC_HDE_PAGE);
      page_sparse_write(&r, pages[k], 4);
      int kind = rt(&x, (uint64_t)k, pages[k]);
      assert_int_equal(kind, compressing ? T_RAW : T_STORED);
      if (compressing && x.len >= 128)
        fail_msg("%s: sparse page took %zu bytes", codecs[c].name, x.len);
    }
    for (int k = 64; k < 80; k++) { /* random: nothing to gain */
      page_random(&r, pages[k]);
      assert_int_equal(rt(&x, (uint64_t)k, pages[k]), T_STORED);
      assert_int_equal(x.len, 17 + NC_HDE_PAGE);
    }
    /* Content seen before under another key: a reference. */
    for (int k = 0; k < 80; k += 7) {
      assert_int_equal(rt(&x, 1000 + (uint64_t)k, pages[k]), T_REF);
      assert_int_equal(x.len, 17);
    }
    /* Re-sent with a few words changed: the delta is tiny. */
    for (int k = 64; k < 80; k++) {
      page_sparse_write(&r, pages[k], 4);
      int kind = rt(&x, (uint64_t)k, pages[k]);
      assert_int_equal(kind, compressing ? T_DELTA : T_STORED);
      if (compressing && x.len >= 128)
        fail_msg("%s: 4-word change took %zu bytes", codecs[c].name, x.len);
    }
    /* Sparse pages dirtied again: RAW or DELTA, whichever is smaller. */
    for (int k = 0; k < 64; k++) {
      page_sparse_write(&r, pages[k], 2);
      int kind = rt(&x, (uint64_t)k, pages[k]);
      assert_true(compressing ? kind == T_RAW || kind == T_DELTA : kind == T_STORED);
    }
    /* A page becomes zero, then content again: no stale base is used. */
    assert_int_equal(rt(&x, 70, zero), T_ZERO);
    page_sparse_write(&r, pages[70], 1);
    assert_int_not_equal(rt(&x, 70, pages[70]), T_DELTA);
    /* Codec switched at every page, mid-stream. */
    for (int i = 0; i < 120; i++) {
      nc_hde_enc_set_codec(x.e, codecs[i % NCODECS].codec, codecs[i % NCODECS].level);
      int k = 64 + i % 16;
      page_sparse_write(&r, pages[k], 8);
      rt(&x, (uint64_t)k, pages[k]);
    }
    assert_stats_agree(&x);
    struct nc_hde_stats st;
    nc_hde_enc_stats(x.e, &st);
    assert_int_equal(st.zero, 2);
    assert_int_equal(st.ref, 12);
    pair_close(&x);
  }
}

/* Both mirror caches must hold the same entries at every step, or a DELTA
 * decodes against the wrong base and the hash check fails. A long random
 * sequence over more keys than the cache holds exercises eviction. */
static void lockstep(enum nc_hde_codec codec, uint64_t cache_pages, uint64_t cache_extra,
                     int keys, int steps, uint64_t seed) {
  struct nc_hde_params p = {.codec = codec,
                            .level = 1,
                            .delta_cache_bytes = cache_pages * NC_HDE_PAGE + cache_extra,
                            .dedup = true};
  struct pair x;
  pair_open(&x, &p, 64, 16, false);
  struct rng r = {seed};
  uint8_t(*cur)[NC_HDE_PAGE] = calloc((size_t)keys, NC_HDE_PAGE);
  assert_non_null(cur);
  for (int i = 0; i < steps; i++) {
    int k = (int)(rnd(&r) % (uint64_t)keys);
    unsigned a = (unsigned)(rnd(&r) % 100);
    if (a < 8)
      memset(cur[k], 0, NC_HDE_PAGE);
    else if (a < 25)
      page_random(&r, cur[k]);
    else if (a < 30 && k > 0)
      memcpy(cur[k], cur[k - 1], NC_HDE_PAGE);
    else
      page_sparse_write(&r, cur[k], 1 + (unsigned)(rnd(&r) % 6));
    rt(&x, (uint64_t)k << 48 | (uint64_t)k, cur[k]);
  }
  assert_stats_agree(&x);
  struct nc_hde_stats st;
  nc_hde_enc_stats(x.e, &st);
  if (cache_pages > 0)
    assert_true(st.delta > (uint64_t)steps / 10);
  else
    assert_int_equal(st.delta, 0);
  free(cur);
  pair_close(&x);
}

static void test_mirror_lockstep_eviction(void **state) {
  (void)state;
  lockstep(NC_HDE_LZ4, 3, 100, 8, 20000, 11); /* 3 pages for 8 keys */
  lockstep(NC_HDE_LZ4, 1, 0, 3, 5000, 12);
  lockstep(NC_HDE_ZSTD, 5, 4095, 13, 4000, 13);
  lockstep(NC_HDE_LZ4, 64, 0, 200, 10000, 14);
  lockstep(NC_HDE_LZ4, 0, 4095, 4, 1000, 15); /* under one page: no DELTA */
}

/* The test above can fail: decoders whose cache differs from the
 * encoder's get caught (an error), never hand out a wrong page. */
static void test_mirror_divergence_detected(void **state) {
  (void)state;
  struct nc_hde_params pe = {.codec = NC_HDE_LZ4, .delta_cache_bytes = 8 * NC_HDE_PAGE};
  struct nc_hde_params pd = pe;
  pd.delta_cache_bytes = 3 * NC_HDE_PAGE;
  struct nc_hde_enc *e;
  struct nc_hde_dec *d;
  assert_int_equal(nc_hde_enc_new(&pe, NULL, 0, NULL, &e), 0);
  assert_int_equal(nc_hde_dec_new(&pd, NULL, 0, &d), 0);
  struct rng r = {21};
  uint8_t cur[8][NC_HDE_PAGE] = {{0}}, tok[NC_HDE_TOKEN_MAX], got[NC_HDE_PAGE];
  int failed = 0;
  for (int i = 0; i < 2000 && !failed; i++) {
    int k = (int)(rnd(&r) % 8);
    if (i < 8)
      page_random(&r, cur[k]);
    else
      page_sparse_write(&r, cur[k], 3);
    size_t len;
    assert_int_equal(nc_hde_encode(e, (uint64_t)k, cur[k], tok, &len), 0);
    int rc = nc_hde_decode(d, (uint64_t)k, tok, len, got);
    if (rc == 0)
      assert_memory_equal(got, cur[k], NC_HDE_PAGE);
    else
      failed = rc;
  }
  assert_true(failed == NC_E_PROTO || failed == NC_E_INVALID);
  nc_hde_enc_free(e);
  nc_hde_dec_free(d);
}

static void test_ref_from_summary(void **state) {
  (void)state;
  char dir[64];
  assert_int_equal(tmpdir_make(dir), 0);
  struct nc_pcache *dst;
  assert_int_equal(nc_pcache_open(dir, CAP(100), &dst), 0);
  struct rng r = {31};
  static uint8_t pages[50][NC_HDE_PAGE];
  for (int i = 0; i < 50; i++) {
    page_random(&r, pages[i]);
    struct nc_hash128 h;
    nc_hde_hash(pages[i], &h);
    assert_int_equal(nc_pcache_put(dst, &h, pages[i]), 0);
  }
  uint64_t quota;
  assert_int_equal(nc_pcache_reserve(dst, SESSION, 5, &quota), 0);
  assert_int_equal(quota, 5);
  uint8_t *sum;
  size_t sum_len;
  assert_int_equal(nc_pcache_summary(dst, SESSION, &sum, &sum_len), 0);
  assert_int_equal(sum_len, 9 + 50 * 16);
  assert_int_equal(nc_pcache_reserved(dst, SESSION), 5); /* intact */
  /* Everything else the destination holds may be evicted meanwhile; what
   * the summary lists may not. */
  for (int i = 0; i < 300; i++) {
    uint8_t q[NC_HDE_PAGE];
    page_random(&r, q);
    struct nc_hash128 h;
    nc_hde_hash(q, &h);
    assert_int_equal(nc_pcache_put(dst, &h, q), 0);
  }

  for (int dedup = 1; dedup >= 0; dedup--) {
    struct nc_hde_params p = {
        .codec = NC_HDE_ZSTD, .level = 3, .dedup = dedup, .new_pages_quota = dedup ? quota : 0};
    struct nc_hde_enc *e;
    struct nc_hde_dec *d;
    assert_int_equal(nc_hde_enc_new(&p, sum, sum_len, NULL, &e), 0);
    assert_int_equal(nc_hde_dec_new(&p, dst, SESSION, &d), 0);
    for (int i = 0; i < 50; i++) {
      uint8_t tok[NC_HDE_TOKEN_MAX], got[NC_HDE_PAGE];
      size_t len;
      assert_int_equal(nc_hde_encode(e, (uint64_t)i * 3, pages[i], tok, &len), 0);
      assert_int_equal(tok[0], dedup ? T_REF : T_STORED);
      assert_int_equal(nc_hde_decode(d, (uint64_t)i * 3, tok, len, got), 0);
      assert_memory_equal(got, pages[i], NC_HDE_PAGE);
    }
    struct nc_hde_stats st;
    nc_hde_enc_stats(e, &st);
    assert_int_equal(st.ref, dedup ? 50 : 0);
    assert_int_equal(st.bytes_out, dedup ? 50 * 17 : 50 * (17 + NC_HDE_PAGE));
    /* New pages on top of a summary: the quota still holds. */
    static uint8_t fresh[7][NC_HDE_PAGE];
    for (int pass = 0; pass < 2 && dedup; pass++)
      for (int i = 0; i < 7; i++) {
        uint8_t tok[NC_HDE_TOKEN_MAX], got[NC_HDE_PAGE];
        size_t len;
        if (pass == 0)
          page_random(&r, fresh[i]);
        assert_int_equal(nc_hde_encode(e, 500 + (uint64_t)(i + 7 * pass), fresh[i], tok, &len), 0);
        assert_int_equal(tok[0], pass == 1 && i < 5 ? T_REF : T_STORED);
        assert_int_equal(nc_hde_decode(d, 500 + (uint64_t)(i + 7 * pass), tok, len, got), 0);
        assert_memory_equal(got, fresh[i], NC_HDE_PAGE);
      }
    nc_hde_enc_free(e);
    nc_hde_dec_free(d);
  }
  free(sum);
  nc_pcache_unpin_all(dst, SESSION);
  nc_pcache_close(dst);
  tmpdir_remove(dir);
}

/* In-session repeats: only the first new_pages_quota distinct new pages
 * may be referenced, because only those are stored by the decoder. */
static void test_ref_in_session_quota(void **state) {
  (void)state;
  struct nc_hde_params p = {.codec = NC_HDE_LZ4, .delta_cache_bytes = 0, .dedup = true};
  struct pair x;
  pair_open(&x, &p, 64, 3, false);
  assert_int_equal(x.p.new_pages_quota, 3);
  struct rng r = {41};
  static uint8_t pages[5][NC_HDE_PAGE];
  uint8_t zero[NC_HDE_PAGE] = {0};
  rt(&x, 99, zero); /* zero pages never count */
  for (int i = 0; i < 5; i++) {
    page_random(&r, pages[i]);
    assert_int_equal(rt(&x, (uint64_t)i, pages[i]), T_STORED);
    if (i == 0) /* the same content again: still one of the three */
      assert_int_equal(rt(&x, 50, pages[0]), T_REF);
  }
  assert_int_equal(nc_pcache_count(x.dst), 3);
  for (int i = 0; i < 5; i++) {
    int kind = rt(&x, 10 + (uint64_t)i, pages[i]);
    assert_int_equal(kind, i < 3 ? T_REF : T_STORED);
  }
  assert_stats_agree(&x);
  struct nc_hde_stats st;
  nc_hde_enc_stats(x.e, &st);
  assert_int_equal(st.ref, 4);
  assert_int_equal(st.stored_new, 3);

  /* What a REF beyond the quota would do: the decoder cannot resolve it. */
  uint8_t tok[NC_HDE_TOKEN_MAX], got[NC_HDE_PAGE];
  size_t len;
  struct nc_hde_enc *e2;
  struct nc_hde_params p2 = p;
  p2.new_pages_quota = 5; /* an encoder that believes in a larger quota */
  assert_int_equal(nc_hde_enc_new(&p2, NULL, 0, NULL, &e2), 0);
  for (int i = 0; i < 5; i++)
    assert_int_equal(nc_hde_encode(e2, 200 + (uint64_t)i, pages[i], tok, &len), 0);
  assert_int_equal(nc_hde_encode(e2, 300, pages[4], tok, &len), 0);
  assert_int_equal(tok[0], T_REF);
  assert_int_equal(nc_hde_decode(x.d, 300, tok, len, got), -ENOENT);
  nc_hde_enc_free(e2);

  /* The quota pages are pinned: a flood of other pages does not evict
   * them while the session lasts. */
  for (int i = 0; i < 200; i++) {
    uint8_t q[NC_HDE_PAGE];
    page_random(&r, q);
    struct nc_hash128 h;
    nc_hde_hash(q, &h);
    assert_int_equal(nc_pcache_put(x.dst, &h, q), 0);
  }
  for (int i = 0; i < 3; i++)
    assert_int_equal(rt(&x, 20 + (uint64_t)i, pages[i]), T_REF);
  pair_close(&x);
}

/* A quota must be backed by a reservation, and a full, pinned cache
 * grants none: then the encoder must not reference repeats at all. */
static void test_quota_needs_reservation(void **state) {
  (void)state;
  char dir[64];
  assert_int_equal(tmpdir_make(dir), 0);
  struct nc_pcache *dst;
  assert_int_equal(nc_pcache_open(dir, CAP(4), &dst), 0);
  struct nc_hde_params p = {.codec = NC_HDE_LZ4, .dedup = true, .new_pages_quota = 2};
  struct nc_hde_dec *d = NULL;
  assert_int_equal(nc_hde_dec_new(&p, NULL, SESSION, &d), NC_E_INVALID);
  assert_int_equal(nc_hde_dec_new(&p, dst, SESSION, &d), NC_E_INVALID);
  uint64_t g;
  assert_int_equal(nc_pcache_reserve(dst, SESSION, 1, &g), 0);
  assert_int_equal(nc_hde_dec_new(&p, dst, SESSION, &d), NC_E_INVALID);
  assert_int_equal(nc_pcache_reserve(dst, SESSION, 1, &g), 0);
  assert_int_equal(nc_hde_dec_new(&p, dst, SESSION, &d), 0);
  nc_hde_dec_free(d);
  nc_pcache_unpin_all(dst, SESSION);

  /* Fill and pin everything for another session. */
  struct rng r = {51};
  uint8_t q[NC_HDE_PAGE];
  for (int i = 0; i < 4; i++) {
    page_random(&r, q);
    struct nc_hash128 h;
    nc_hde_hash(q, &h);
    assert_int_equal(nc_pcache_put(dst, &h, q), 0);
  }
  uint8_t *sum;
  size_t sum_len;
  assert_int_equal(nc_pcache_summary(dst, 7, &sum, &sum_len), 0);
  free(sum);
  assert_int_equal(nc_pcache_reserve(dst, SESSION, 100, &g), 0);
  assert_int_equal(g, 0);
  p.new_pages_quota = g;
  struct nc_hde_enc *e;
  assert_int_equal(nc_hde_enc_new(&p, NULL, 0, NULL, &e), 0);
  assert_int_equal(nc_hde_dec_new(&p, dst, SESSION, &d), 0);
  uint8_t tok[NC_HDE_TOKEN_MAX], got[NC_HDE_PAGE];
  size_t len;
  page_random(&r, q);
  for (int i = 0; i < 3; i++) {
    assert_int_equal(nc_hde_encode(e, (uint64_t)i, q, tok, &len), 0);
    assert_int_equal(tok[0], T_STORED);
    assert_int_equal(nc_hde_decode(d, (uint64_t)i, tok, len, got), 0);
  }
  nc_hde_enc_free(e);
  nc_hde_dec_free(d);
  nc_pcache_unpin_all(dst, SESSION);
  nc_pcache_unpin_all(dst, 7);
  nc_pcache_close(dst);
  tmpdir_remove(dir);
}

/* The decoder cannot store a quota page (the disk is full): decode fails
 * and changes nothing, so the same token decodes once the disk has room.
 * Never a half-done state where the ledger counts a page the cache lacks. */
static void test_decoder_store_failure(void **state) {
  (void)state;
  struct nc_hde_params p = {.codec = NC_HDE_LZ4, .delta_cache_bytes = 4 * NC_HDE_PAGE,
                            .dedup = true};
  struct pair x;
  pair_open(&x, &p, 8, 2, false);
  struct rng r = {111};
  uint8_t pg[NC_HDE_PAGE], got[NC_HDE_PAGE];
  page_random(&r, pg);
  assert_int_equal(nc_hde_encode(x.e, 1, pg, x.tok, &x.len), 0);
  signal(SIGXFSZ, SIG_IGN);
  struct rlimit saved, l;
  assert_int_equal(getrlimit(RLIMIT_FSIZE, &saved), 0);
  l = saved;
  l.rlim_cur = HDR; /* no slot can be written */
  assert_int_equal(setrlimit(RLIMIT_FSIZE, &l), 0);
  int rc = nc_hde_decode(x.d, 1, x.tok, x.len, got);
  assert_int_equal(setrlimit(RLIMIT_FSIZE, &saved), 0);
  assert_true(rc == -EFBIG || rc == -EIO);
  assert_int_equal(nc_pcache_count(x.dst), 0);
  assert_int_equal(nc_hde_decode(x.d, 1, x.tok, x.len, got), 0);
  assert_memory_equal(got, pg, NC_HDE_PAGE);
  assert_int_equal(nc_pcache_count(x.dst), 1);
  assert_int_equal(rt(&x, 2, pg), T_REF);
  page_sparse_write(&r, pg, 2);
  assert_int_equal(rt(&x, 1, pg), T_DELTA); /* the mirror moved exactly once */
  assert_stats_agree(&x);
  pair_close(&x);
}

/* A -> B stores every page in A's cache; B -> A then references them all
 * from A's summary. */
static void test_return_migration(void **state) {
  (void)state;
  struct nc_hde_params p = {.codec = NC_HDE_ZSTD, .level = 1, .dedup = true};
  struct pair ab;
  pair_open(&ab, &p, 16, 0, true);
  struct rng r = {61};
  static uint8_t pages[100][NC_HDE_PAGE];
  for (int i = 0; i < 100; i++) {
    if (i % 2)
      page_random(&r, pages[i]);
    else
      page_sparse_write(&r, pages[i], 5);
    rt(&ab, (uint64_t)i, pages[i]);
  }
  assert_int_equal(nc_pcache_count(ab.src), 100);
  struct nc_hde_stats st;
  nc_hde_enc_stats(ab.e, &st);
  assert_int_equal(st.local_put_errors, 0);

  /* Back to A: A is the destination now. */
  uint8_t *sum;
  size_t sum_len;
  assert_int_equal(nc_pcache_summary(ab.src, 77, &sum, &sum_len), 0);
  struct nc_hde_enc *e;
  struct nc_hde_dec *d;
  assert_int_equal(nc_hde_enc_new(&p, sum, sum_len, ab.dst, &e), 0);
  free(sum);
  assert_int_equal(nc_hde_dec_new(&p, ab.src, 77, &d), 0);
  for (int i = 0; i < 100; i++) {
    uint8_t tok[NC_HDE_TOKEN_MAX], got[NC_HDE_PAGE];
    size_t len;
    assert_int_equal(nc_hde_encode(e, (uint64_t)i, pages[i], tok, &len), 0);
    assert_int_equal(tok[0], T_REF);
    assert_int_equal(nc_hde_decode(d, (uint64_t)i, tok, len, got), 0);
    assert_memory_equal(got, pages[i], NC_HDE_PAGE);
  }
  nc_hde_enc_stats(e, &st);
  printf("  return migration: %llu pages in %llu bytes (%.2f%% of RAM)\n",
         (unsigned long long)st.pages, (unsigned long long)st.bytes_out,
         100.0 * (double)st.bytes_out / (double)st.bytes_in);
  /* The source's cache (B) is smaller than what went through it: puts
   * evicted, none failed. */
  assert_int_equal(st.local_put_errors, 0);
  assert_true(nc_pcache_count(ab.dst) <= 16);
  nc_hde_enc_free(e);

  /* A local cache with every slot pinned: the pages still go out, the
   * failed puts are counted. */
  assert_int_equal(nc_pcache_summary(ab.dst, 88, &sum, &sum_len), 0);
  free(sum);
  assert_int_equal(nc_hde_enc_new(&p, NULL, 0, ab.dst, &e), 0);
  uint8_t tok[NC_HDE_TOKEN_MAX], fresh[NC_HDE_PAGE];
  size_t len;
  page_random(&r, fresh);
  assert_int_equal(nc_hde_encode(e, 0, fresh, tok, &len), 0);
  assert_int_equal(tok[0], T_STORED);
  nc_hde_enc_stats(e, &st);
  assert_int_equal(st.local_put_errors, 1);
  nc_hde_enc_free(e);
  nc_pcache_unpin_all(ab.dst, 88);
  nc_hde_dec_free(d);
  nc_pcache_unpin_all(ab.src, 77);
  pair_close(&ab);
}

/* ---- hostile tokens --------------------------------------------------- */

struct hostile {
  struct pair x;
  uint8_t base[NC_HDE_PAGE]; /* key 1's content in both mirrors */
};

static void hostile_open(struct hostile *h) {
  struct nc_hde_params p = {.codec = NC_HDE_LZ4,
                            .delta_cache_bytes = 16 * NC_HDE_PAGE,
                            .dedup = true};
  pair_open(&h->x, &p, 16, 4, false);
  struct rng r = {71};
  page_random(&r, h->base);
  rt(&h->x, 1, h->base);
}

static void expect_decode(struct hostile *h, uint64_t key, const uint8_t *tok, size_t len,
                          int want) {
  uint8_t got[NC_HDE_PAGE];
  memset(got, 0x5a, sizeof got);
  int rc = nc_hde_decode(h->x.d, key, tok, len, got);
  if (rc != want)
    fail_msg("decode kind %d len %zu: got %d (%s), want %d (%s)", len ? tok[0] : -1, len, rc,
             nc_strerror(rc), want, nc_strerror(want));
  if (rc != 0)
    for (size_t i = 0; i < NC_HDE_PAGE; i++)
      assert_int_equal(got[i], 0); /* zeroed on failure */
}

/* A token from parts: kind, the hash of `page`, codec, body. */
static size_t craft(uint8_t *tok, int kind, const uint8_t *page, int codec, const void *body,
                    size_t n) {
  struct nc_hash128 h;
  nc_hde_hash(page, &h);
  tok[0] = (uint8_t)kind;
  for (int b = 0; b < 8; b++) {
    tok[1 + b] = (uint8_t)(h.hi >> (56 - 8 * b));
    tok[9 + b] = (uint8_t)(h.lo >> (56 - 8 * b));
  }
  tok[17] = (uint8_t)codec;
  tok[18] = (uint8_t)(n >> 8);
  tok[19] = (uint8_t)n;
  memcpy(tok + 20, body, n);
  return 20 + n;
}

/* Every truncation and every one-byte extension of a valid token is
 * rejected, and the decoder still decodes the original afterwards. */
static void truncations(struct hostile *h, uint64_t key, const uint8_t *tok, size_t len,
                        const uint8_t *want) {
  uint8_t buf[NC_HDE_TOKEN_MAX + 1];
  for (size_t n = 0; n < len; n++)
    expect_decode(h, key, tok, n, NC_E_PROTO);
  memcpy(buf, tok, len);
  buf[len] = 0;
  expect_decode(h, key, buf, len + 1, NC_E_PROTO);
  uint8_t got[NC_HDE_PAGE];
  assert_int_equal(nc_hde_decode(h->x.d, key, tok, len, got), 0);
  assert_memory_equal(got, want, NC_HDE_PAGE);
}

static void test_truncated_and_oversized(void **state) {
  (void)state;
  struct hostile h;
  hostile_open(&h);
  struct pair *x = &h.x;
  struct rng r = {81};
  uint8_t page[NC_HDE_PAGE] = {0}, tok[NC_HDE_TOKEN_MAX];
  size_t len;

  /* One of each kind, from the encoder. */
  assert_int_equal(nc_hde_encode(x->e, 2, page, tok, &len), 0); /* ZERO */
  truncations(&h, 2, tok, len, page);
  page_sparse_write(&r, page, 4);
  assert_int_equal(nc_hde_encode(x->e, 3, page, tok, &len), 0); /* RAW */
  assert_int_equal(tok[0], T_RAW);
  truncations(&h, 3, tok, len, page);
  nc_hde_enc_set_codec(x->e, NC_HDE_ZSTD, 3);
  page_sparse_write(&r, page, 4);
  assert_int_equal(nc_hde_encode(x->e, 4, page, tok, &len), 0); /* RAW zstd */
  assert_int_equal(tok[17], 2);
  truncations(&h, 4, tok, len, page);
  assert_int_equal(nc_hde_encode(x->e, 5, page, tok, &len), 0); /* REF */
  assert_int_equal(tok[0], T_REF);
  truncations(&h, 5, tok, len, page);
  uint8_t next[NC_HDE_PAGE];
  memcpy(next, h.base, sizeof next);
  page_sparse_write(&r, next, 2);
  assert_int_equal(nc_hde_encode(x->e, 1, next, tok, &len), 0); /* DELTA */
  assert_int_equal(tok[0], T_DELTA);
  truncations(&h, 1, tok, len, next); /* the base is key 1's new content now */
  page_random(&r, page);
  assert_int_equal(nc_hde_encode(x->e, 6, page, tok, &len), 0); /* STORED */
  assert_int_equal(tok[0], T_STORED);
  truncations(&h, 6, tok, len, page);

  /* Lengths and codecs the format does not allow. */
  uint8_t body[NC_HDE_PAGE + 16] = {0};
  expect_decode(&h, 7, tok, craft(tok, 5, page, 1, body, 1), NC_E_PROTO);   /* kind */
  expect_decode(&h, 7, tok, craft(tok, 255, page, 1, body, 1), NC_E_PROTO); /* kind */
  memset(page, 0, sizeof page);
  page_sparse_write(&r, page, 7);
  int n = LZ4_compress_default((const char *)page, (char *)body, NC_HDE_PAGE, sizeof body);
  assert_true(n > 0);
  expect_decode(&h, 7, tok, craft(tok, T_RAW, page, 1, body, (size_t)n), 0); /* sanity */
  expect_decode(&h, 7, tok, craft(tok, T_RAW, page, 0, body, (size_t)n), NC_E_PROTO);
  expect_decode(&h, 7, tok, craft(tok, T_RAW, page, 3, body, (size_t)n), NC_E_PROTO);
  expect_decode(&h, 7, tok, craft(tok, T_RAW, page, 1, body, 0), NC_E_PROTO); /* n = 0 */
  expect_decode(&h, 7, tok, craft(tok, T_RAW, page, 1, body, NC_HDE_PAGE), NC_E_PROTO);
  expect_decode(&h, 7, tok, craft(tok, T_RAW, page, 1, body, NC_HDE_PAGE + 12), NC_E_PROTO);
  /* DELTA for a key with no previous version. */
  expect_decode(&h, 999, tok, craft(tok, T_DELTA, page, 1, body, (size_t)n), NC_E_PROTO);

  /* LZ4 bodies that decompress to more, or fewer, than a page. */
  static uint8_t big[2 * NC_HDE_PAGE];
  memset(big, 'a', sizeof big);
  n = LZ4_compress_default((const char *)big, (char *)body, sizeof big, sizeof body);
  expect_decode(&h, 7, tok, craft(tok, T_RAW, big, 1, body, (size_t)n), NC_E_PROTO);
  n = LZ4_compress_default((const char *)big, (char *)body, 100, sizeof body);
  expect_decode(&h, 7, tok, craft(tok, T_RAW, big, 1, body, (size_t)n), NC_E_PROTO);
  memset(body, 0xff, 64); /* garbage */
  expect_decode(&h, 7, tok, craft(tok, T_RAW, big, 1, body, 64), NC_E_PROTO);

  /* zstd frames (magic stripped, as on the wire) that lie about or
   * exceed the page. */
  uint8_t z[3 * NC_HDE_PAGE];
  size_t zn = ZSTD_compress(z, sizeof z, big, sizeof big, 1); /* 8192 bytes */
  assert_false(ZSTD_isError(zn));
  expect_decode(&h, 7, tok, craft(tok, T_RAW, big, 2, z + 4, zn - 4), NC_E_PROTO);
  zn = ZSTD_compress(z, sizeof z, big, 2048, 1);
  expect_decode(&h, 7, tok, craft(tok, T_RAW, big, 2, z + 4, zn - 4), NC_E_PROTO);
  /* Two 2048-byte frames back to back: right total, not one frame. */
  size_t zn2 = ZSTD_compress(z + zn, sizeof z - zn, big, 2048, 1);
  expect_decode(&h, 7, tok, craft(tok, T_RAW, big, 2, z + 4, zn + zn2 - 4), NC_E_PROTO);
  /* A page frame followed by junk. */
  zn = ZSTD_compress(z, sizeof z, page, NC_HDE_PAGE, 1);
  expect_decode(&h, 7, tok, craft(tok, T_RAW, page, 2, z + 4, zn - 4), 0); /* sanity */
  memcpy(z + zn, "junk", 4);
  expect_decode(&h, 7, tok, craft(tok, T_RAW, page, 2, z + 4, zn), NC_E_PROTO);
  /* No declared content size (streaming style). */
  ZSTD_CCtx *cc = ZSTD_createCCtx();
  ZSTD_CCtx_setParameter(cc, ZSTD_c_contentSizeFlag, 0);
  zn = ZSTD_compress2(cc, z, sizeof z, big, NC_HDE_PAGE);
  ZSTD_freeCCtx(cc);
  assert_false(ZSTD_isError(zn));
  expect_decode(&h, 7, tok, craft(tok, T_RAW, big, 2, z + 4, zn - 4), NC_E_PROTO);
  /* A frame that declares 4096 bytes, with its data cut short. */
  zn = ZSTD_compress(z, sizeof z, page, NC_HDE_PAGE, 1);
  expect_decode(&h, 7, tok, craft(tok, T_RAW, page, 2, z + 4, zn - 5), NC_E_PROTO);

  /* Valid encodings of the wrong page: the hash check catches them. */
  uint8_t other[NC_HDE_PAGE];
  page_random(&r, other);
  n = LZ4_compress_default((const char *)big, (char *)body, NC_HDE_PAGE, sizeof body);
  expect_decode(&h, 7, tok, craft(tok, T_RAW, other, 1, body, (size_t)n), NC_E_INVALID);
  craft(tok, T_STORED, other, 0, body, 0);
  memcpy(tok + 17, big, NC_HDE_PAGE);
  expect_decode(&h, 7, tok, 17 + NC_HDE_PAGE, NC_E_INVALID);
  craft(tok, T_ZERO, other, 0, body, 0);
  expect_decode(&h, 7, tok, 17, NC_E_INVALID); /* ZERO naming a nonzero page */
  craft(tok, T_REF, other, 0, body, 0);
  expect_decode(&h, 7, tok, 17, -ENOENT); /* never stored there */

  /* Decoding failures changed nothing: the stream goes on. */
  memcpy(page, next, sizeof page);
  page_sparse_write(&r, page, 2);
  assert_int_equal(rt(x, 1, page), T_DELTA);
  pair_close(x);
}

/* Flip every bit... of every byte, one at a time: the decoder reports an
 * error or rebuilds exactly the original page, never anything else. */
static void test_tampered_tokens(void **state) {
  (void)state;
  struct hostile h;
  hostile_open(&h);
  struct pair *x = &h.x;
  struct rng r = {91};
  static uint8_t toks[8][NC_HDE_TOKEN_MAX], want[8][NC_HDE_PAGE];
  size_t lens[8];
  int nt = 0, harmless = 0, total_errors = 0;
  uint8_t page[NC_HDE_PAGE] = {0};
  struct {
    enum nc_hde_codec codec;
    int level;
    int kind; /* expected */
  } plan[] = {{NC_HDE_LZ4, 1, T_RAW},    {NC_HDE_ZSTD, 3, T_RAW},   {NC_HDE_LZ4, 1, T_DELTA},
              {NC_HDE_ZSTD, 1, T_DELTA}, {NC_HDE_LZ4, 1, T_STORED}, {NC_HDE_LZ4, 1, T_REF},
              {NC_HDE_LZ4, 1, T_ZERO}};
  for (size_t i = 0; i < sizeof plan / sizeof plan[0]; i++) {
    nc_hde_enc_set_codec(x->e, plan[i].codec, plan[i].level);
    uint64_t key = 100 + i;
    switch (plan[i].kind) {
    case T_RAW:
      memset(page, 0, sizeof page);
      page_sparse_write(&r, page, 16);
      break;
    case T_DELTA: /* key 1 holds h.base, then its successors */
      key = 1;
      memcpy(page, nt ? want[nt - 1] : h.base, sizeof page);
      if (plan[i - 1].kind != T_DELTA)
        memcpy(page, h.base, sizeof page);
      page_sparse_write(&r, page, 3);
      break;
    case T_STORED:
      page_random(&r, page);
      break;
    case T_REF:
      memcpy(page, want[0], sizeof page); /* stored: within the quota */
      break;
    default:
      memset(page, 0, sizeof page);
    }
    memcpy(want[nt], page, sizeof page);
    assert_int_equal(nc_hde_encode(x->e, key, page, toks[nt], &lens[nt]), 0);
    assert_int_equal(toks[nt][0], plan[i].kind);
    /* Tamper before decoding: for DELTA the decoder still holds the
     * previous version, as it would on the wire. */
    uint8_t t[NC_HDE_TOKEN_MAX], got[NC_HDE_PAGE];
    int errors = 0;
    bool decoded = false;
    for (size_t pos = 0; pos < lens[nt]; pos++) {
      for (int bit = 0; bit < 8; bit += (lens[nt] > 1000 ? 7 : 1)) {
        memcpy(t, toks[nt], lens[nt]);
        t[pos] ^= (uint8_t)(1u << bit);
        int rc = nc_hde_decode(x->d, key, t, lens[nt], got);
        if (rc == 0) {
          /* A flip the codec ignores (say, a match offset moved to
           * other zeros): the same page, so the decoder is now where
           * the original token would have put it. */
          assert_memory_equal(got, want[nt], NC_HDE_PAGE);
          decoded = true;
          harmless++;
        } else {
          errors++;
        }
      }
    }
    assert_true(errors > 0);
    total_errors += errors;
    if (!decoded) {
      assert_int_equal(nc_hde_decode(x->d, key, toks[nt], lens[nt], got), 0);
      assert_memory_equal(got, want[nt], NC_HDE_PAGE);
    }
    nt++;
  }
  printf("  %d tampered tokens rejected, %d rebuilt the original page\n", total_errors, harmless);
  pair_close(x);
}

static void test_summary_malformed(void **state) {
  (void)state;
  struct nc_hde_params p = {.codec = NC_HDE_LZ4, .dedup = true};
  struct nc_hde_enc *e = NULL;
  uint8_t s[9 + 3 * 16];
  memset(s, 0, sizeof s);
  s[0] = 1;
  s[8] = 3;
  for (int i = 0; i < 3; i++)
    s[9 + 16 * i + 15] = (uint8_t)(i + 1); /* ascending */
  assert_int_equal(nc_hde_enc_new(&p, s, sizeof s, NULL, &e), 0);
  nc_hde_enc_free(e);
  assert_int_equal(nc_hde_enc_new(&p, s, 9, NULL, &e), NC_E_PROTO);  /* count > entries */
  assert_int_equal(nc_hde_enc_new(&p, s, 8, NULL, &e), NC_E_PROTO);  /* short */
  assert_int_equal(nc_hde_enc_new(&p, s, sizeof s - 1, NULL, &e), NC_E_PROTO);
  s[0] = 2;
  assert_int_equal(nc_hde_enc_new(&p, s, sizeof s, NULL, &e), NC_E_PROTO); /* version */
  s[0] = 1;
  s[9 + 16 + 15] = 1; /* duplicate of the first */
  assert_int_equal(nc_hde_enc_new(&p, s, sizeof s, NULL, &e), NC_E_PROTO);
  s[9 + 16 + 15] = 0; /* descending */
  assert_int_equal(nc_hde_enc_new(&p, s, sizeof s, NULL, &e), NC_E_PROTO);
  s[1] = 0x80; /* a count that would overflow 16 * count */
  assert_int_equal(nc_hde_enc_new(&p, s, sizeof s, NULL, &e), NC_E_PROTO);
  assert_null(e);
  p.dedup = false; /* not used, not parsed */
  assert_int_equal(nc_hde_enc_new(&p, s, sizeof s, NULL, &e), 0);
  nc_hde_enc_free(e);
}

static void test_params(void **state) {
  (void)state;
  struct nc_hde_params p = {.codec = NC_HDE_LZ4};
  struct nc_hde_enc *e = NULL;
  struct nc_hde_dec *d = NULL;
  assert_int_equal(nc_hde_enc_new(NULL, NULL, 0, NULL, &e), -EINVAL);
  p.codec = (enum nc_hde_codec)7;
  assert_int_equal(nc_hde_enc_new(&p, NULL, 0, NULL, &e), NC_E_INVALID);
  p.codec = NC_HDE_ZSTD;
  p.delta_cache_bytes = NC_HDE_DELTA_CACHE_MAX + 1;
  assert_int_equal(nc_hde_enc_new(&p, NULL, 0, NULL, &e), NC_E_TOOBIG);
  assert_int_equal(nc_hde_dec_new(&p, NULL, 0, &d), NC_E_TOOBIG);
  assert_null(e);
  assert_null(d);
  p.delta_cache_bytes = 0;
  p.level = 1000; /* clamped */
  assert_int_equal(nc_hde_enc_new(&p, NULL, 0, NULL, &e), 0);
  uint8_t page[NC_HDE_PAGE] = {1}, tok[NC_HDE_TOKEN_MAX];
  size_t len;
  assert_int_equal(nc_hde_encode(e, 0, NULL, tok, &len), -EINVAL);
  assert_int_equal(nc_hde_encode(e, 0, page, NULL, &len), -EINVAL);
  nc_hde_enc_set_codec(e, (enum nc_hde_codec)9, 3); /* unknown: NONE */
  assert_int_equal(nc_hde_encode(e, 0, page, tok, &len), 0);
  assert_int_equal(tok[0], T_STORED);
  nc_hde_enc_set_codec(e, NC_HDE_LZ4, -3);
  assert_int_equal(nc_hde_encode(e, 0, page, tok, &len), 0);
  assert_int_equal(tok[0], T_RAW);
  struct nc_hde_stats st;
  nc_hde_enc_stats(e, &st);
  assert_int_equal(st.pages, 2);
  nc_hde_enc_free(e);
  nc_hde_enc_free(NULL);
  nc_hde_dec_free(NULL);
  nc_hde_enc_stats(NULL, &st);
  assert_int_equal(st.pages, 0);

  /* A decoder with no cache resolves no reference. */
  assert_int_equal(nc_hde_dec_new(&p, NULL, 0, &d), 0);
  uint8_t got[NC_HDE_PAGE];
  memset(tok, 0, 17);
  tok[0] = T_REF;
  assert_int_equal(nc_hde_decode(d, 0, tok, 17, got), -ENOENT);
  assert_int_equal(nc_hde_decode(d, 0, NULL, 17, got), NC_E_PROTO);
  assert_int_equal(nc_hde_decode(d, 0, tok, 17, NULL), -EINVAL);
  nc_hde_dec_stats(d, &st);
  assert_int_equal(st.pages, 0);
  nc_hde_dec_free(d);
}

/* ---- throughput: printed, not asserted -------------------------------- */

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_throughput(void **state) {
  (void)state;
  enum { KEYS = 1024, PASSES = 3 }; /* 4 MiB, sent three times */
  uint8_t *mem = malloc((size_t)KEYS * NC_HDE_PAGE);
  uint8_t *dec = malloc(NC_HDE_PAGE);
  assert_non_null(mem);
  const char *pattern[] = {"compressible", "random"};
  printf("  %-8s %-12s %-6s %10s %10s %8s   (1 core; pass 1 fresh, later passes re-sent "
         "with 4 words changed, DELTA eligible)\n",
         "codec", "pages", "pass", "enc MiB/s", "dec MiB/s", "out/in");
  for (int pat = 0; pat < 2; pat++) {
    for (size_t c = 0; c < NCODECS; c++) {
      if (codecs[c].level == 19 || codecs[c].level == -5)
        continue;
      struct nc_hde_params p = {.codec = codecs[c].codec,
                                .level = codecs[c].level,
                                .delta_cache_bytes = (uint64_t)KEYS * NC_HDE_PAGE,
                                .dedup = false};
      struct nc_hde_enc *e;
      struct nc_hde_dec *d;
      assert_int_equal(nc_hde_enc_new(&p, NULL, 0, NULL, &e), 0);
      assert_int_equal(nc_hde_dec_new(&p, NULL, 0, &d), 0);
      struct rng r = {101};
      for (int k = 0; k < KEYS; k++) {
        uint8_t *pg = mem + (size_t)k * NC_HDE_PAGE;
        memset(pg, 0, NC_HDE_PAGE);
        if (pat == 0)
          page_sparse_write(&r, pg, 4);
        else
          page_random(&r, pg);
      }
      uint8_t *toks = malloc((size_t)KEYS * NC_HDE_TOKEN_MAX);
      size_t *lens = malloc(KEYS * sizeof *lens);
      assert_non_null(toks);
      for (int pass = 0; pass < PASSES; pass++) {
        if (pass > 0)
          for (int k = 0; k < KEYS; k++)
            page_sparse_write(&r, mem + (size_t)k * NC_HDE_PAGE, 4);
        uint64_t out = 0;
        double t0 = now_s();
        for (int k = 0; k < KEYS; k++) {
          assert_int_equal(nc_hde_encode(e, (uint64_t)k, mem + (size_t)k * NC_HDE_PAGE,
                                         toks + (size_t)k * NC_HDE_TOKEN_MAX, &lens[k]),
                           0);
          out += lens[k];
        }
        double t1 = now_s();
        for (int k = 0; k < KEYS; k++)
          assert_int_equal(nc_hde_decode(d, (uint64_t)k, toks + (size_t)k * NC_HDE_TOKEN_MAX,
                                         lens[k], dec),
                           0);
        double t2 = now_s();
        double mib = (double)KEYS * NC_HDE_PAGE / (1 << 20);
        if (pass < 2)
          printf("  %-8s %-12s %-6d %10.0f %10.0f %8.4f\n", codecs[c].name, pattern[pat], pass + 1,
                 mib / (t1 - t0), mib / (t2 - t1), (double)out / ((double)KEYS * NC_HDE_PAGE));
      }
      free(toks);
      free(lens);
      nc_hde_enc_free(e);
      nc_hde_dec_free(d);
    }
  }
  free(mem);
  free(dec);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_roundtrip_mixed),
      cmocka_unit_test(test_mirror_lockstep_eviction),
      cmocka_unit_test(test_mirror_divergence_detected),
      cmocka_unit_test(test_ref_from_summary),
      cmocka_unit_test(test_ref_in_session_quota),
      cmocka_unit_test(test_quota_needs_reservation),
      cmocka_unit_test(test_decoder_store_failure),
      cmocka_unit_test(test_return_migration),
      cmocka_unit_test(test_truncated_and_oversized),
      cmocka_unit_test(test_tampered_tokens),
      cmocka_unit_test(test_summary_malformed),
      cmocka_unit_test(test_params),
      cmocka_unit_test(test_throughput),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
