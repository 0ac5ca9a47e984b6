/* HDE version 2 (src/dwcp/hde.c): frames (pages compressed together, plain
 * token bodies), the previous migration's record (PREV and DELTA_PREV on a
 * return migration, the record file, the held bitmap) and seeding the page
 * cache from boot files (a kernel, a gzip'd newc initramfs). Round trips
 * must rebuild every page exactly; hostile frames and tokens must fail
 * cleanly with the page zeroed. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <xxhash.h>
#include <zlib.h>

#include "hde_test.h"
#include "util/err.h"

#define CAP(slots) ((uint64_t)4096 + (uint64_t)(slots) * (16u + NC_HDE_PAGE))
#define SESSION 42
#define T_PREV 5
#define T_DELTA_PREV 6
#define T_DELTA_BASE 7 /* checked frames: no hash of the page */
#define T_RAW_F 8
#define T_DELTA_F 9
#define T_DELTA_PREV_F 10
#define T_KINDS 16
#define NPAGES 96

/* One leg of a migration: an encoder on `from` and a decoder on `to`,
 * wired as migrate.c does (reserve, summary, record match, set_prev). */
struct leg {
  struct nc_hde_enc *e;
  struct nc_hde_dec *d;
  uint64_t held;
};

static void leg_open(struct leg *l, struct nc_pcache *from, struct nc_pcache *to,
                     const struct nc_hde_rec *src_rec, const struct nc_hde_rec *dst_rec,
                     enum nc_hde_codec codec) {
  memset(l, 0, sizeof *l);
  struct nc_hde_params p = {.codec = codec, .level = 3, .delta_cache_bytes = 1 << 20,
                            .dedup = true};
  assert_int_equal(nc_pcache_reserve(to, SESSION, NPAGES * 4, &p.new_pages_quota), 0);
  uint8_t *sum, *held = NULL;
  size_t sum_len, held_len = 0;
  assert_int_equal(nc_pcache_summary(to, SESSION, &sum, &sum_len), 0);
  if (src_rec && dst_rec) {
    uint8_t a[16], b[16];
    nc_hde_rec_digest(src_rec, a);
    nc_hde_rec_digest(dst_rec, b);
    assert_memory_equal(a, b, 16);
    assert_int_equal(nc_hde_rec_match(dst_rec, sum, &sum_len, &held, &held_len), 0);
    for (size_t i = 0; i < held_len; i++)
      l->held += (uint64_t)__builtin_popcount(held[i]);
  }
  assert_int_equal(nc_hde_enc_new(&p, sum, sum_len, from, &l->e), 0);
  assert_int_equal(nc_hde_enc_set_frames(l->e, true), 0);
  assert_int_equal(nc_hde_dec_new(&p, to, SESSION, &l->d), 0);
  if (held_len) {
    assert_int_equal(nc_hde_enc_set_prev(l->e, src_rec, held, held_len), 0);
    assert_int_equal(nc_hde_dec_set_prev(l->d, dst_rec, held, held_len), 0);
  }
  free(sum);
  free(held);
}

static void leg_close(struct leg *l, struct nc_pcache *to) {
  nc_hde_enc_free(l->e);
  nc_hde_dec_free(l->d);
  nc_pcache_unpin_all(to, SESSION);
}

/* Sends pages[0..n) as migrate.c does: records (u64 key | u16 len |
 * token) in frames of at most ~64 KiB, packed and unpacked; every page
 * must come out exactly. Counts token kinds in kinds[]. */
static void leg_send(struct leg *l, uint8_t (*pages)[NC_HDE_PAGE], int n, int kinds[T_KINDS]) {
  static uint8_t plain[80 * 1024], frame[90 * 1024], back[80 * 1024];
  size_t pl = 0;
  for (int i = 0; i <= n; i++) {
    if (i < n) {
      size_t tl;
      assert_int_equal(nc_hde_encode(l->e, (uint64_t)i << 12, pages[i], plain + pl + 10, &tl), 0);
      kinds[plain[pl + 10]]++;
      for (int b = 0; b < 8; b++)
        plain[pl + b] = (uint8_t)(((uint64_t)i << 12) >> (56 - 8 * b));
      plain[pl + 8] = (uint8_t)(tl >> 8);
      plain[pl + 9] = (uint8_t)tl;
      pl += 10 + tl;
    }
    if (pl > 0 && (i == n || pl > 60 * 1024)) {
      size_t fl, bl;
      assert_true(nc_hde_frame_bound(pl) <= sizeof frame);
      assert_int_equal(nc_hde_frame_pack(l->e, plain, pl, frame, sizeof frame, &fl), 0);
      assert_int_equal(nc_hde_frame_unpack(l->d, frame, fl, back, sizeof back, &bl), 0);
      assert_int_equal(bl, pl);
      for (size_t o = 0; o < bl;) {
        uint64_t key = 0;
        for (int b = 0; b < 8; b++)
          key = key << 8 | back[o + b];
        size_t tl = (size_t)back[o + 8] << 8 | back[o + 9];
        uint8_t got[NC_HDE_PAGE];
        int rc = nc_hde_decode(l->d, key, back + o + 10, tl, got);
        if (rc)
          fail_msg("key %llu kind %d: %s", (unsigned long long)key, back[o + 10], nc_strerror(rc));
        assert_memory_equal(got, pages[key >> 12], NC_HDE_PAGE);
        o += 10 + tl;
      }
      assert_int_equal(nc_hde_dec_frame_end(l->d), 0);
      pl = 0;
    }
  }
}

static void fill(uint8_t (*pages)[NC_HDE_PAGE], struct rng *r) {
  for (int i = 0; i < NPAGES; i++) {
    memset(pages[i], 0, NC_HDE_PAGE);
    if (i % 8 == 7)
      continue; /* zero */
    if (i % 3 == 0)
      page_random(r, pages[i]);
    else
      page_sparse_write(r, pages[i], 40); /* compressible */
  }
  memcpy(pages[5], pages[4], NC_HDE_PAGE); /* an in-stream duplicate */
}

/* A -> B, then B -> A after the guest changed some pages on B: unchanged
 * pages go as PREV, a few rewritten words as DELTA_PREV, new content as
 * RAW; the records agree and survive a save and load. */
static void test_return_with_record(void **state) {
  (void)state;
  static uint8_t pages[NPAGES][NC_HDE_PAGE];
  struct rng r = {0x5eed};
  char da[64], db[64], fa[128], fb[128];
  struct nc_pcache *a, *b;
  assert_int_equal(tmpdir_make(da), 0);
  assert_int_equal(tmpdir_make(db), 0);
  assert_int_equal(nc_pcache_open(da, CAP(1024), &a), 0);
  assert_int_equal(nc_pcache_open(db, CAP(1024), &b), 0);
  snprintf(fa, sizeof fa, "%s/a.rec", da);
  snprintf(fb, sizeof fb, "%s/b.rec", db);

  fill(pages, &r);
  struct leg l;
  int kinds[T_KINDS] = {0};
  leg_open(&l, a, b, NULL, NULL, NC_HDE_ZSTD);
  leg_send(&l, pages, NPAGES, kinds);
  assert_int_equal(kinds[T_PREV] + kinds[T_DELTA_PREV_F], 0);
  assert_true(kinds[T_REF] >= 1); /* the duplicate */
  struct nc_hde_rec *ra, *rb;
  assert_int_equal(nc_hde_enc_record(l.e, &ra), 0);
  assert_int_equal(nc_hde_dec_record(l.d, &rb), 0);
  leg_close(&l, b);
  assert_int_equal(nc_hde_rec_count(ra), NPAGES - NPAGES / 8);
  assert_int_equal(nc_hde_rec_save(ra, fa), 0);
  assert_int_equal(nc_hde_rec_save(rb, fb), 0);
  nc_hde_rec_free(ra);
  nc_hde_rec_free(rb);
  assert_int_equal(nc_hde_rec_load(fa, &ra), 0);
  assert_int_equal(nc_hde_rec_load(fb, &rb), 0);

  /* On B the guest rewrites a few words of some pages, replaces others. */
  int sparse = 0, fresh = 0;
  for (int i = 0; i < NPAGES; i++) {
    if (i % 8 == 7)
      continue;
    if (i % 4 == 1) {
      page_sparse_write(&r, pages[i], 4);
      sparse++;
    } else if (i % 16 == 2) {
      page_random(&r, pages[i]);
      fresh++;
    }
  }
  memset(kinds, 0, sizeof kinds);
  leg_open(&l, b, a, rb, ra, NC_HDE_ZSTD);
  assert_int_equal(l.held, NPAGES - NPAGES / 8); /* every entry, duplicates included */
  leg_send(&l, pages, NPAGES, kinds);
  assert_int_equal(kinds[T_DELTA_PREV_F], sparse);
  assert_int_equal(kinds[T_RAW_F], fresh);
  assert_int_equal(kinds[T_PREV], NPAGES - NPAGES / 8 - sparse - fresh);
  struct nc_hde_stats es, ds;
  nc_hde_enc_stats(l.e, &es);
  nc_hde_dec_stats(l.d, &ds);
  assert_int_equal(es.prev, ds.prev);
  assert_int_equal(es.delta_prev, ds.delta_prev);
  assert_int_equal(es.stored_new, ds.stored_new);
  struct nc_hde_rec *ra2, *rb2;
  assert_int_equal(nc_hde_enc_record(l.e, &rb2), 0);
  assert_int_equal(nc_hde_dec_record(l.d, &ra2), 0);
  uint8_t x[16], y[16];
  nc_hde_rec_digest(ra2, x);
  nc_hde_rec_digest(rb2, y);
  assert_memory_equal(x, y, 16);
  leg_close(&l, a);
  nc_hde_rec_free(ra);
  nc_hde_rec_free(rb);
  nc_hde_rec_free(ra2);
  nc_hde_rec_free(rb2);
  nc_pcache_close(a);
  nc_pcache_close(b);
  unlink(fa);
  unlink(fb);
  tmpdir_remove(da);
  tmpdir_remove(db);
}

/* Frames for every codec, including the stored fallback for random data. */
static void test_frames_codecs(void **state) {
  (void)state;
  static uint8_t pages[NPAGES][NC_HDE_PAGE];
  const enum nc_hde_codec cs[] = {NC_HDE_LZ4, NC_HDE_ZSTD, NC_HDE_NONE};
  for (size_t c = 0; c < 3; c++) {
    struct rng r = {7 + c};
    char d[64];
    struct nc_pcache *pc;
    assert_int_equal(tmpdir_make(d), 0);
    assert_int_equal(nc_pcache_open(d, CAP(1024), &pc), 0);
    fill(pages, &r);
    struct leg l;
    int kinds[T_KINDS] = {0};
    leg_open(&l, NULL, pc, NULL, NULL, cs[c]);
    leg_send(&l, pages, NPAGES, kinds);
    /* again, each page changed a little: in-session deltas */
    for (int i = 0; i < NPAGES; i++)
      if (i % 8 != 7)
        page_sparse_write(&r, pages[i], 2);
    leg_send(&l, pages, NPAGES, kinds);
    if (cs[c] != NC_HDE_NONE)
      assert_true(kinds[T_DELTA_F] > NPAGES / 2);
    struct nc_hde_stats es;
    nc_hde_enc_stats(l.e, &es);
    if (cs[c] != NC_HDE_NONE)
      assert_true(es.frame_bytes_out < es.frame_bytes_in / 2);
    leg_close(&l, pc);
    nc_pcache_close(pc);
    tmpdir_remove(d);
  }
}

static void expect_unpack(struct nc_hde_dec *d, const uint8_t *f, size_t n, size_t cap, int want) {
  static uint8_t out[70000];
  size_t ol = 1;
  int rc = nc_hde_frame_unpack(d, f, n, out, cap, &ol);
  if (rc != want)
    fail_msg("unpack of %zu bytes (codec %d): got %d (%s), want %d", n, n ? f[0] : -1, rc,
             nc_strerror(rc), want);
  if (rc)
    assert_int_equal(ol, 0);
}

static void test_frames_hostile(void **state) {
  (void)state;
  struct nc_hde_params p = {.codec = NC_HDE_ZSTD, .level = 3};
  struct nc_hde_enc *e;
  struct nc_hde_dec *d;
  assert_int_equal(nc_hde_enc_new(&p, NULL, 0, NULL, &e), 0);
  assert_int_equal(nc_hde_dec_new(&p, NULL, 0, &d), 0);
  static uint8_t plain[65536], f[70000];
  memset(plain, 'a', sizeof plain);
  size_t fl;
  assert_int_equal(nc_hde_frame_pack(e, plain, sizeof plain, f, sizeof f, &fl), 0);
  assert_int_equal(f[0], 2);
  expect_unpack(d, f, fl, sizeof plain, 0);
  expect_unpack(d, f, fl, sizeof plain - 1, NC_E_TOOBIG); /* over the cap */
  expect_unpack(d, f, fl - 1, sizeof plain, NC_E_PROTO);  /* truncated */
  expect_unpack(d, f, 4, sizeof plain, NC_E_PROTO);       /* no header */
  f[fl] = 0;
  expect_unpack(d, f, fl + 1, sizeof plain, NC_E_PROTO); /* trailing byte */
  f[1] = 0, f[2] = 0, f[3] = 0xff, f[4] = 0xff; /* plain length lies: 65535 */
  expect_unpack(d, f, fl, sizeof plain, NC_E_PROTO);
  f[1] = 0, f[2] = 1, f[3] = 0, f[4] = 0;
  f[0] = 9; /* codec */
  expect_unpack(d, f, fl, sizeof plain, NC_E_PROTO);
  f[0] = 1; /* a zstd body read as lz4 */
  expect_unpack(d, f, fl, sizeof plain, NC_E_PROTO);
  f[0] = 0; /* stored with the wrong length */
  expect_unpack(d, f, fl, sizeof plain, NC_E_PROTO);
  memset(f, 0, 5); /* plain length 0 */
  expect_unpack(d, f, 5, sizeof plain, NC_E_PROTO);
  /* Random bytes do not compress: the stored fallback. */
  struct rng r = {3};
  for (size_t i = 0; i < sizeof plain; i += 8) {
    uint64_t v = rnd(&r);
    memcpy(plain + i, &v, 8);
  }
  assert_int_equal(nc_hde_frame_pack(e, plain, sizeof plain, f, sizeof f, &fl), 0);
  assert_int_equal(f[0], 0);
  assert_int_equal(fl, sizeof plain + NC_HDE_FRAME_HDR);
  expect_unpack(d, f, fl, sizeof plain, 0);
  assert_int_equal(nc_hde_frame_pack(e, plain, 0, f, sizeof f, &fl), -EINVAL);
  assert_int_equal(nc_hde_frame_pack(e, plain, sizeof plain, f, 100, &fl), -EINVAL);
  nc_hde_enc_free(e);
  nc_hde_dec_free(d);
}

/* PREV and DELTA_PREV the decoder cannot resolve fail cleanly. */
static void test_prev_hostile(void **state) {
  (void)state;
  char dir[64];
  struct nc_pcache *c;
  assert_int_equal(tmpdir_make(dir), 0);
  assert_int_equal(nc_pcache_open(dir, CAP(64), &c), 0);
  struct nc_hde_params p = {.codec = NC_HDE_ZSTD, .level = 1, .dedup = true};
  struct nc_hde_dec *d;
  uint8_t page[NC_HDE_PAGE], got[NC_HDE_PAGE], tok[NC_HDE_TOKEN_MAX];
  assert_int_equal(nc_hde_dec_new(&p, c, SESSION, &d), 0);
  uint8_t prev = T_PREV;
  memset(got, 0x55, sizeof got);
  assert_int_equal(nc_hde_decode(d, 0, &prev, 1, got), NC_E_PROTO); /* no record */
  for (size_t i = 0; i < sizeof got; i++)
    assert_int_equal(got[i], 0);
  /* A record (from a leg that ran) whose entry the cache no longer has. */
  struct nc_hde_enc *e;
  assert_int_equal(nc_hde_enc_new(&p, NULL, 0, NULL, &e), 0);
  memset(page, 0x11, sizeof page);
  size_t tl;
  assert_int_equal(nc_hde_encode(e, 0, page, tok, &tl), 0);
  struct nc_hde_rec *rec;
  assert_int_equal(nc_hde_enc_record(e, &rec), 0);
  uint8_t held = 1;
  assert_int_equal(nc_hde_dec_set_prev(d, rec, &held, 0), NC_E_PROTO); /* wrong length */
  assert_int_equal(nc_hde_dec_set_prev(d, rec, &held, 1), 0);
  assert_int_equal(nc_hde_decode(d, 0, &prev, 1, got), -ENOENT); /* not cached */
  assert_int_equal(nc_hde_decode(d, 4096, &prev, 1, got), NC_E_PROTO); /* other key */
  assert_int_equal(nc_hde_decode(d, 0, &prev, 2, got), NC_E_PROTO);    /* length */
  struct nc_hash128 h;
  nc_hde_hash(page, &h);
  assert_int_equal(nc_pcache_put(c, &h, page), 0);
  assert_int_equal(nc_hde_decode(d, 0, &prev, 1, got), 0);
  assert_memory_equal(got, page, sizeof page);
  /* DELTA_PREV whose result does not match its hash. */
  uint8_t dt[20 + NC_HDE_PAGE] = {T_DELTA_PREV};
  memcpy(dt + 1, tok + 1, 16); /* page's hash: but the XOR below changes it */
  dt[17] = 0;
  dt[18] = 0x10;
  dt[19] = 0;
  dt[20 + 100] = 1;
  assert_int_equal(nc_hde_decode(d, 0, dt, sizeof dt, got), NC_E_INVALID);
  dt[20 + 100] = 0; /* XOR of zero: the base itself, which matches */
  assert_int_equal(nc_hde_decode(d, 0, dt, sizeof dt, got), 0);
  assert_memory_equal(got, page, sizeof page);
  dt[18] = 0x0f; /* plain body must be 4096 */
  assert_int_equal(nc_hde_decode(d, 0, dt, sizeof dt - 1, got), NC_E_PROTO);
  nc_hde_rec_free(rec);
  nc_hde_enc_free(e);
  nc_hde_dec_free(d);
  nc_pcache_unpin_all(c, SESSION);
  nc_pcache_close(c);
  tmpdir_remove(dir);
}

static void test_record_file(void **state) {
  (void)state;
  char dir[64], f[128];
  assert_int_equal(tmpdir_make(dir), 0);
  snprintf(f, sizeof f, "%s/x.rec", dir);
  struct nc_hde_rec *r;
  assert_int_equal(nc_hde_rec_load(f, &r), -ENOENT);
  struct nc_hde_params p = {.codec = NC_HDE_LZ4};
  struct nc_hde_enc *e;
  assert_int_equal(nc_hde_enc_new(&p, NULL, 0, NULL, &e), 0);
  uint8_t page[NC_HDE_PAGE] = {0}, tok[NC_HDE_TOKEN_MAX];
  size_t tl;
  for (int i = 0; i < 10; i++) {
    page[0] = (uint8_t)(i + 1);
    assert_int_equal(nc_hde_encode(e, (uint64_t)(9 - i) << 12, page, tok, &tl), 0);
  }
  memset(page, 0, sizeof page);
  assert_int_equal(nc_hde_encode(e, 3 << 12, page, tok, &tl), 0); /* zero: leaves */
  assert_int_equal(nc_hde_enc_record(e, &r), 0);
  assert_int_equal(nc_hde_rec_count(r), 9);
  assert_int_equal(nc_hde_rec_save(r, f), 0);
  struct nc_hde_rec *r2;
  assert_int_equal(nc_hde_rec_load(f, &r2), 0);
  uint8_t a[16], b[16];
  nc_hde_rec_digest(r, a);
  nc_hde_rec_digest(r2, b);
  assert_memory_equal(a, b, 16);
  nc_hde_rec_free(r2);
  /* Every single-byte change and every truncation is refused. */
  FILE *fp = fopen(f, "rb");
  uint8_t buf[512];
  size_t n = fread(buf, 1, sizeof buf, fp);
  fclose(fp);
  assert_int_equal(n, 20 + 9 * 24 + 16);
  for (size_t i = 0; i <= n; i++) {
    uint8_t m[512];
    memcpy(m, buf, n);
    size_t len = n;
    if (i < n)
      m[i] ^= 0x40;
    else
      len--;
    fp = fopen(f, "wb");
    fwrite(m, 1, len, fp);
    fclose(fp);
    r2 = NULL;
    int rc = nc_hde_rec_load(f, &r2);
    if (rc == 0)
      fail_msg("a record damaged at byte %zu loaded", i);
    assert_null(r2);
  }
  unlink(f);
  nc_hde_rec_free(r);
  nc_hde_enc_free(e);
  tmpdir_remove(dir);
}

/* A newc entry. */
static size_t cpio_add(uint8_t *out, const char *name, unsigned mode, const uint8_t *data,
                       size_t len) {
  size_t nl = strlen(name) + 1, o;
  char hdr[256];
  snprintf(hdr, sizeof hdr, "070701%08X%08X%08X%08X%08X%08X%08zX%08X%08X%08X%08X%08zX%08X", 1u,
           mode, 0u, 0u, 1u, 0u, len, 0u, 0u, 0u, 0u, nl, 0u);
  memcpy(out, hdr, 110);
  memcpy(out + 110, name, nl);
  o = (110 + nl + 3) & ~(size_t)3;
  memset(out + 110 + nl, 0, o - 110 - nl);
  if (len)
    memcpy(out + o, data, len);
  size_t end = (o + len + 3) & ~(size_t)3;
  memset(out + o + len, 0, end - o - len);
  return end;
}

static void test_seed_initramfs(void **state) {
  (void)state;
  char dir[64], f[128];
  assert_int_equal(tmpdir_make(dir), 0);
  snprintf(f, sizeof f, "%s/initrd.gz", dir);
  struct rng r = {11};
  static uint8_t a[3 * NC_HDE_PAGE + 100], cpio[64 * 1024], gz[80 * 1024];
  for (size_t i = 0; i + 8 <= sizeof a; i += 8) {
    uint64_t v = rnd(&r);
    memcpy(a + i, &v, 8);
  }
  size_t n = cpio_add(cpio, "bin", 040755, NULL, 0);
  n += cpio_add(cpio + n, "bin/a", 0100755, a, sizeof a);
  n += cpio_add(cpio + n, "TRAILER!!!", 0, NULL, 0);
  z_stream z = {0};
  assert_int_equal(deflateInit2(&z, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
  z.next_in = cpio;
  z.avail_in = (uInt)n;
  z.next_out = gz;
  z.avail_out = sizeof gz;
  assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
  size_t gl = z.total_out;
  deflateEnd(&z);
  FILE *fp = fopen(f, "wb");
  fwrite(gz, 1, gl, fp);
  fclose(fp);
  struct nc_pcache *c;
  assert_int_equal(nc_pcache_open(dir, CAP(64), &c), 0);
  uint64_t added;
  assert_int_equal(nc_hde_seed_file(c, f, 2, &added), 0); /* the cap */
  assert_int_equal(added, 2);
  assert_int_equal(nc_hde_seed_file(c, f, 100, &added), 0);
  assert_int_equal(added, 2); /* the rest: 4 pages in all */
  assert_int_equal(nc_pcache_count(c), 4);
  uint8_t page[NC_HDE_PAGE], got[NC_HDE_PAGE];
  for (size_t off = 0; off < sizeof a; off += NC_HDE_PAGE) { /* tail zero-padded */
    memset(page, 0, sizeof page);
    memcpy(page, a + off, sizeof a - off < NC_HDE_PAGE ? sizeof a - off : NC_HDE_PAGE);
    struct nc_hash128 h;
    nc_hde_hash(page, &h);
    assert_int_equal(nc_pcache_get(c, &h, got), 0);
  }
  /* A plain file: its own chunks. */
  fp = fopen(f, "wb");
  fwrite(a, 1, 2 * NC_HDE_PAGE, fp);
  fclose(fp);
  assert_int_equal(nc_hde_seed_file(c, f, 100, &added), 0);
  assert_int_equal(added, 0); /* the same two pages */
  /* Garbage gzip: an error or nothing, never a crash. */
  gz[20] ^= 0xff;
  fp = fopen(f, "wb");
  fwrite(gz, 1, gl / 2, fp);
  fclose(fp);
  (void)nc_hde_seed_file(c, f, 100, &added);
  assert_int_equal(nc_hde_seed_file(c, "/nonexistent/x", 100, &added), -ENOENT);
  unlink(f);
  nc_pcache_close(c);
  tmpdir_remove(dir);
}

/* DELTA_BASE: a page that differs in a few bytes from a chunk of the boot
 * file the destination seeded travels as a delta against it; a base the
 * destination does not hold, or one no closer than nothing, is not used;
 * a token naming a base the cache lacks, or with a damaged body, fails. */
struct bases {
  uint8_t (*pages)[NC_HDE_PAGE];
  int calls;
};

static int base_of(void *arg, uint64_t key, uint8_t page[NC_HDE_PAGE]) {
  struct bases *b = arg;
  b->calls++;
  if ((key >> 12) >= NPAGES)
    return -ENOENT;
  memcpy(page, b->pages[key >> 12], NC_HDE_PAGE);
  return 0;
}

/* Decodes one token in a checked frame built by hand (hde.c's layout:
 * stored, flag 0x80, the check over key and want's hash), then ends the
 * frame: the decode's error, else the check's. */
static int framed_decode(struct nc_hde_dec *d, uint64_t key, const uint8_t *tok, size_t tl,
                         const uint8_t want[NC_HDE_PAGE], uint8_t got[NC_HDE_PAGE]) {
  static uint8_t frame[5 + 16 + 10 + NC_HDE_TOKEN_MAX], plain[10 + NC_HDE_TOKEN_MAX];
  uint8_t rec[24];
  struct nc_hash128 h;
  nc_hde_hash(want, &h);
  XXH128_canonical_t c;
  XXH128_canonicalFromHash(&c, (XXH128_hash_t){.low64 = h.lo, .high64 = h.hi});
  for (int i = 0; i < 8; i++)
    rec[i] = (uint8_t)(key >> (56 - 8 * i));
  memcpy(rec + 8, c.digest, 16);
  XXH128_hash_t chk = XXH3_128bits(rec, sizeof rec);
  XXH128_canonicalFromHash(&c, chk);
  size_t pl = 10 + tl;
  frame[0] = 0x80;
  for (int i = 0; i < 4; i++)
    frame[1 + i] = (uint8_t)(pl >> (24 - 8 * i));
  memcpy(frame + 5, c.digest, 16);
  memcpy(frame + 21, rec, 8);
  frame[29] = (uint8_t)(tl >> 8);
  frame[30] = (uint8_t)tl;
  memcpy(frame + 31, tok, tl);
  size_t n;
  assert_int_equal(nc_hde_frame_unpack(d, frame, 21 + pl, plain, sizeof plain, &n), 0);
  assert_int_equal(n, pl);
  int rc = nc_hde_decode(d, key, plain + 10, tl, got);
  int end = nc_hde_dec_frame_end(d);
  return rc ? rc : end;
}

static void test_delta_base(void **state) {
  (void)state;
  static uint8_t file[NPAGES][NC_HDE_PAGE], guest[NPAGES][NC_HDE_PAGE];
  struct rng r = {0x5eedba5e};
  for (int i = 0; i < NPAGES; i++) {
    page_random(&r, file[i]);
    memcpy(guest[i], file[i], NC_HDE_PAGE);
    for (int k = 0; k < 12; k++) /* the kernel patched a few bytes */
      guest[i][rnd(&r) % NC_HDE_PAGE] ^= (uint8_t)(rnd(&r) | 1);
  }
  page_random(&r, guest[NPAGES - 1]); /* rewritten entirely: no use */
  char da[64], db[64];
  assert_int_equal(tmpdir_make(da), 0);
  assert_int_equal(tmpdir_make(db), 0);
  struct nc_pcache *a, *b;
  assert_int_equal(nc_pcache_open(da, CAP(NPAGES * 8), &a), 0);
  assert_int_equal(nc_pcache_open(db, CAP(NPAGES * 8), &b), 0);
  /* The destination seeded every chunk but the first. */
  for (int i = 1; i < NPAGES; i++) {
    struct nc_hash128 h;
    nc_hde_hash(file[i], &h);
    assert_int_equal(nc_pcache_put(b, &h, file[i]), 0);
  }
  struct bases bs = {file, 0};
  struct leg l;
  int kinds[T_KINDS] = {0};
  leg_open(&l, a, b, NULL, NULL, NC_HDE_ZSTD);
  nc_hde_enc_set_base_fn(l.e, base_of, &bs);
  leg_send(&l, guest, NPAGES, kinds);
  assert_int_equal(kinds[T_DELTA_BASE], NPAGES - 2);
  assert_int_equal(kinds[T_RAW_F], 2); /* page 0: base not held; the last: not closer */
  struct nc_hde_stats st;
  nc_hde_dec_stats(l.d, &st);
  assert_int_equal(st.delta_base, NPAGES - 2);
  /* Sent again in the same session: the mirror's version is the base. */
  int calls = bs.calls;
  memset(kinds, 0, sizeof kinds);
  leg_send(&l, guest, NPAGES, kinds);
  assert_int_equal(kinds[T_DELTA_BASE], 0);
  assert_int_equal(bs.calls, calls);

  /* Hostile tokens, against a fresh decoder on the same cache, in frames
   * built by hand with the check the good page would have. */
  uint8_t tok[NC_HDE_TOKEN_MAX], got[NC_HDE_PAGE];
  size_t tl;
  leg_close(&l, b);
  leg_open(&l, a, b, NULL, NULL, NC_HDE_ZSTD);
  nc_hde_enc_set_base_fn(l.e, base_of, &bs);
  guest[3][7] ^= 0x11; /* not stored by the first session */
  assert_int_equal(nc_hde_encode(l.e, 3 << 12, guest[3], tok, &tl), 0);
  assert_int_equal(tok[0], T_DELTA_BASE);
  assert_int_equal(tl, 17 + NC_HDE_PAGE);
  uint8_t bad[NC_HDE_TOKEN_MAX];
  assert_int_equal(nc_hde_decode(l.d, 3 << 12, tok, tl, got), NC_E_PROTO); /* unframed */
  memcpy(bad, tok, tl);
  bad[1] ^= 1; /* a base nobody holds */
  assert_int_equal(framed_decode(l.d, 3 << 12, bad, tl, guest[3], got), -ENOENT);
  memcpy(bad, tok, tl);
  bad[17 + 100] ^= 0x40; /* a damaged delta: caught by the frame's check */
  assert_int_equal(framed_decode(l.d, 3 << 12, bad, tl, guest[3], got), NC_E_INVALID);
  assert_int_equal(framed_decode(l.d, 3 << 12, tok, tl - 1, guest[3], got), NC_E_PROTO);
  assert_int_equal(framed_decode(l.d, 3 << 12, tok, 16, guest[3], got), NC_E_PROTO);
  assert_int_equal(framed_decode(l.d, 3 << 12, tok, tl, guest[3], got), 0);
  assert_memory_equal(got, guest[3], NC_HDE_PAGE);
  /* A RAW_F whose bytes were swapped for another page's. */
  bad[0] = T_RAW_F;
  memcpy(bad + 1, guest[9], NC_HDE_PAGE);
  assert_int_equal(framed_decode(l.d, 9 << 12, bad, 1 + NC_HDE_PAGE, guest[8], got),
                   NC_E_INVALID);
  leg_close(&l, b);

  /* Without dedup nothing may be referenced, bases included. */
  struct nc_hde_params p = {.codec = NC_HDE_ZSTD, .level = 3, .delta_cache_bytes = 1 << 20};
  struct nc_hde_enc *e;
  assert_int_equal(nc_hde_enc_new(&p, NULL, 0, NULL, &e), 0);
  assert_int_equal(nc_hde_enc_set_frames(e, true), 0);
  nc_hde_enc_set_base_fn(e, base_of, &bs);
  calls = bs.calls;
  assert_int_equal(nc_hde_encode(e, 3 << 12, guest[3], tok, &tl), 0);
  assert_int_equal(tok[0], T_RAW_F);
  assert_int_equal(bs.calls, calls);
  nc_hde_enc_free(e);
  nc_pcache_close(a);
  nc_pcache_close(b);
  tmpdir_remove(da);
  tmpdir_remove(db);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_return_with_record), cmocka_unit_test(test_frames_codecs),
      cmocka_unit_test(test_frames_hostile),     cmocka_unit_test(test_prev_hostile),
      cmocka_unit_test(test_record_file),        cmocka_unit_test(test_seed_initramfs),
      cmocka_unit_test(test_delta_base),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
