/* libFuzzer target for HDE (src/dwcp/hde.c) and the page cache
 * (src/dwcp/pcache.c): everything that reads bytes a peer or the disk
 * controls.
 *
 * The first input byte picks a mode:
 *   0  token stream: records of u8 key | u16 BE length | token, decoded
 *      into an exactly page-sized heap buffer (ASan sees any over-write);
 *      the decoder's cache holds four known pages announced in a summary,
 *      so REF tokens can resolve. Any outcome but a crash is fine.
 *   1  round trip (the encoder may use the known pages as DELTA_BASE
 *      bases; every checked frame's check must agree): the input
 *      scripts page writes, codec switches and
 *      copies; every page is encoded and decoded, and the decoded page must
 *      be the original (abort otherwise). This checks that encoder and
 *      decoder agree on mirror caches and on what may be referenced.
 *   2  summary: the rest of the input is a summary given to the encoder,
 *      which then encodes a few pages.
 *   3  cache file: the rest of the input becomes the cache's data file
 *      (after a valid header when the next byte is odd); the cache must
 *      open it and never hand out a page that does not match its hash.
 *   4  frame (checked or not; ended, then unpacked a second time): the
 *      rest is a DATA frame (v2), unpacked into a buffer of a
 *      size the next byte picks, then its records (as in mode 0) decoded
 *      by a decoder that has a previous-migration record.
 *   5  record file: the rest is a record file (nc_hde_rec_load); a record
 *      that loads is matched against a summary and given to a decoder.
 *   6  seed file: the rest is a boot file to seed the cache from (a plain
 *      file, a newc cpio, or gzip around one).
 * In modes 0 and 4 the decoder holds a record for keys 0..3 naming the
 * four known pages, so PREV and DELTA_PREV tokens can resolve; a decoded
 * PREV must be exactly that page.
 * Build: cmake -DNC_FUZZ=ON with clang (make fuzz); the ordinary test run
 * replays corpus/hde/ (tests/CMakeLists.txt). */
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dwcp/hde.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define SESSION 7
#define SLOTS 16
#define CAP (4096u + SLOTS * (16u + NC_HDE_PAGE))

static char dir[64];
static char file[128];

/* A fresh directory per input, removed after it (libFuzzer may leave
 * without running atexit handlers). */
static void dir_make(void) {
  const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  snprintf(dir, sizeof dir, "%s/nc_fuzz_hde_XXXXXX", base);
  if (!mkdtemp(dir))
    abort();
  snprintf(file, sizeof file, "%s/%s", dir, NC_PCACHE_FILE);
}

static void dir_remove(void) {
  unlink(file);
  rmdir(dir);
}

/* Known page i (0..3): what the destination holds before the session. */
static void seed_page(int i, uint8_t *p) {
  memset(p, 0, NC_HDE_PAGE);
  for (size_t k = 0; k < NC_HDE_PAGE; k += 64 * (size_t)(i + 1))
    p[k] = (uint8_t)(0x11 * (i + 1));
}

struct reader {
  const uint8_t *p;
  size_t n;
};

static int next(struct reader *r) {
  if (r->n == 0)
    return -1;
  r->n--;
  return *r->p++;
}

/* A fresh destination cache holding the seed pages; *sum pinned for
 * SESSION after a reservation of quota pages. */
static struct nc_pcache *dest_open(uint64_t *quota, uint8_t **sum, size_t *sum_len) {
  unlink(file);
  struct nc_pcache *c;
  if (nc_pcache_open(dir, CAP, &c) != 0)
    abort();
  uint8_t p[NC_HDE_PAGE];
  for (int i = 0; i < 4; i++) {
    struct nc_hash128 h;
    seed_page(i, p);
    nc_hde_hash(p, &h);
    if (nc_pcache_put(c, &h, p) != 0)
      abort();
  }
  uint64_t want = *quota;
  if (nc_pcache_reserve(c, SESSION, want, quota) != 0 || *quota != want)
    abort();
  if (nc_pcache_summary(c, SESSION, sum, sum_len) != 0)
    abort();
  return c;
}

/* A record of keys 0..3 -> known pages 0..3, all held: what a decoder
 * gets on a return migration. */
static void give_prev(struct nc_hde_dec *d) {
  struct nc_hde_params p = {.codec = NC_HDE_NONE};
  struct nc_hde_enc *e;
  struct nc_hde_rec *rec;
  uint8_t page[NC_HDE_PAGE], tok[NC_HDE_TOKEN_MAX], held = 0x0f;
  size_t len;
  if (nc_hde_enc_new(&p, NULL, 0, NULL, &e) != 0)
    abort();
  for (int i = 0; i < 4; i++) {
    seed_page(i, page);
    if (nc_hde_encode(e, (uint64_t)i, page, tok, &len) != 0)
      abort();
  }
  if (nc_hde_enc_record(e, &rec) != 0 || nc_hde_dec_set_prev(d, rec, &held, 1) != 0)
    abort();
  nc_hde_rec_free(rec);
  nc_hde_enc_free(e);
}

/* Decodes records of u8 key | u16 BE length | token from r; whatever
 * decodes is the page its token named. */
static void decode_records(struct nc_hde_dec *d, struct reader *r) {
  uint8_t *page = malloc(NC_HDE_PAGE);
  for (;;) {
    int key = next(r), hi = next(r), lo = next(r);
    if (lo < 0)
      break;
    size_t len = (size_t)hi << 8 | (size_t)lo;
    if (len > r->n)
      len = r->n;
    /* An exactly sized copy: reading past the token shows under ASan. */
    uint8_t *tok = malloc(len ? len : 1);
    memcpy(tok, r->p, len);
    r->p += len;
    r->n -= len;
    int rc = nc_hde_decode(d, (uint64_t)(key & 15), tok, len, page);
    if (rc == 0 && len == 1) { /* PREV: the record's page for this key */
      uint8_t want[NC_HDE_PAGE];
      if (tok[0] != 5 || (key & 15) > 3)
        abort();
      seed_page(key & 15, want);
      if (memcmp(want, page, NC_HDE_PAGE) != 0)
        abort();
    } else if (rc == 0 && tok[0] >= 7 && tok[0] <= 10) {
      /* a framed kind, no hash of its own: nc_hde_dec_frame_end checks it */
    } else if (rc == 0) { /* whatever it was, it is a page with the hash it named */
      struct nc_hash128 h;
      nc_hde_hash(page, &h);
      if (len < 17)
        abort();
      uint8_t canon[16];
      for (int i = 0; i < 8; i++) {
        canon[i] = (uint8_t)(h.hi >> (56 - 8 * i));
        canon[8 + i] = (uint8_t)(h.lo >> (56 - 8 * i));
      }
      if (memcmp(canon, tok + 1, 16) != 0)
        abort();
    }
    free(tok);
  }
  free(page);
}

static void mode_tokens(struct reader *r) {
  int b = next(r);
  if (b < 0)
    return;
  struct nc_hde_params p = {.delta_cache_bytes = (uint64_t)(b & 7) * NC_HDE_PAGE,
                            .new_pages_quota = (uint64_t)(b >> 3) & 7,
                            .dedup = true};
  uint8_t *sum;
  size_t sum_len;
  struct nc_pcache *c = dest_open(&p.new_pages_quota, &sum, &sum_len);
  free(sum);
  struct nc_hde_dec *d;
  if (nc_hde_dec_new(&p, c, SESSION, &d) != 0)
    abort();
  give_prev(d);
  decode_records(d, r);
  nc_hde_dec_free(d);
  nc_pcache_unpin_all(c, SESSION);
  nc_pcache_close(c);
}

static uint64_t xs(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

static int base_known(void *arg, uint64_t key, uint8_t page[NC_HDE_PAGE]) {
  (void)arg;
  seed_page((int)(key & 3), page);
  return 0;
}

static void mode_roundtrip(struct reader *r) {
  int b = next(r);
  if (b < 0)
    return;
  struct nc_hde_params p = {.codec = (enum nc_hde_codec)((b >> 6) % 3),
                            .level = 1,
                            .delta_cache_bytes = (uint64_t)(b & 7) * NC_HDE_PAGE,
                            .new_pages_quota = (uint64_t)(b >> 3) & 7,
                            .dedup = true};
  uint8_t *sum;
  size_t sum_len;
  struct nc_pcache *c = dest_open(&p.new_pages_quota, &sum, &sum_len);
  struct nc_hde_enc *e;
  struct nc_hde_dec *d;
  if (nc_hde_enc_new(&p, sum, sum_len, NULL, &e) != 0 || nc_hde_dec_new(&p, c, SESSION, &d) != 0)
    abort();
  free(sum);
  nc_hde_enc_set_base_fn(e, base_known, NULL); /* DELTA_BASE against a known page */
  static uint8_t cur[8][NC_HDE_PAGE];
  memset(cur, 0, sizeof cur);
  uint8_t *tok = malloc(NC_HDE_TOKEN_MAX), *page = malloc(NC_HDE_PAGE);
  uint8_t *fr = malloc(nc_hde_frame_bound(NC_HDE_TOKEN_MAX)), *back = malloc(NC_HDE_TOKEN_MAX);
  bool frames = false;
  int op;
  while ((op = next(r)) >= 0) {
    int key = op & 7, act = op >> 3, a = next(r), b2 = next(r);
    if (b2 < 0)
      break;
    uint8_t *pg = cur[key];
    switch (act) {
    case 0:
      memset(pg, 0, NC_HDE_PAGE);
      break;
    case 1: { /* a page of noise */
      uint64_t s = (uint64_t)(a << 8 | b2) + 1;
      for (size_t i = 0; i < NC_HDE_PAGE; i += 8) {
        uint64_t v = xs(&s);
        memcpy(pg + i, &v, 8);
      }
      break;
    }
    case 2:
      memcpy(pg, cur[a & 7], NC_HDE_PAGE);
      break;
    case 3:
      seed_page(a & 3, pg);
      break;
    case 4: {
      static const enum nc_hde_codec cs[] = {NC_HDE_NONE, NC_HDE_LZ4, NC_HDE_ZSTD};
      /* Levels -7..9: the slow high levels add nothing to coverage. */
      nc_hde_enc_set_codec(e, cs[a % 3], b2 % 17 - 7);
      frames = (b2 >> 4) & 1;
      nc_hde_enc_set_frames(e, frames);
      continue; /* no page this time */
    }
    default: { /* the guest's pattern: one word rewritten */
      size_t w = ((size_t)a << 8 | (size_t)b2) % (NC_HDE_PAGE / 8);
      uint64_t v = (uint64_t)op * 0x9e3779b97f4a7c15u ^ (uint64_t)a;
      memcpy(pg + w * 8, &v, 8);
    }
    }
    size_t len;
    if (nc_hde_encode(e, (uint64_t)key, pg, tok, &len) != 0 || len > NC_HDE_TOKEN_MAX)
      abort();
    if (frames) { /* through a frame and back */
      size_t fl, bl;
      if (nc_hde_frame_pack(e, tok, len, fr, nc_hde_frame_bound(NC_HDE_TOKEN_MAX), &fl) != 0 ||
          nc_hde_frame_unpack(d, fr, fl, back, NC_HDE_TOKEN_MAX, &bl) != 0 || bl != len ||
          memcmp(back, tok, len) != 0)
        abort();
    }
    if (nc_hde_decode(d, (uint64_t)key, tok, len, page) != 0)
      abort(); /* the encoder produced something its peer cannot decode */
    if (frames && nc_hde_dec_frame_end(d) != 0)
      abort(); /* the page came back, so the frame's check must agree */
    if (memcmp(page, pg, NC_HDE_PAGE) != 0)
      abort();
  }
  free(tok);
  free(page);
  free(fr);
  free(back);
  nc_hde_enc_free(e);
  nc_hde_dec_free(d);
  nc_pcache_unpin_all(c, SESSION);
  nc_pcache_close(c);
}

static void mode_summary(struct reader *r) {
  struct nc_hde_params p = {.codec = NC_HDE_LZ4, .dedup = true};
  uint8_t *s = malloc(r->n ? r->n : 1); /* exact size for ASan */
  memcpy(s, r->p, r->n);
  struct nc_hde_enc *e;
  if (nc_hde_enc_new(&p, s, r->n, NULL, &e) == 0) {
    uint8_t page[NC_HDE_PAGE], tok[NC_HDE_TOKEN_MAX];
    for (int i = 0; i < 4; i++) {
      size_t len;
      seed_page(i, page);
      if (nc_hde_encode(e, (uint64_t)i, page, tok, &len) != 0)
        abort();
    }
    nc_hde_enc_free(e);
  }
  free(s);
}

static void mode_cache_file(struct reader *r) {
  int b = next(r);
  if (b < 0)
    return;
  unlink(file);
  int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0)
    abort();
  if (b & 1) { /* a valid header (pcache.c) so the slots are scanned */
    uint8_t hdr[4096] = {'N', 'C', 'P', 'C', 'A', 'C', 'H', 'E', 0, 0, 0, 1,
                         0,   0,   0x10, 0x10, 0, 0, 0x10, 0,  0, 0, 0, 1};
    if (write(fd, hdr, sizeof hdr) != (ssize_t)sizeof hdr)
      abort();
  }
  if (r->n && write(fd, r->p, r->n) != (ssize_t)r->n)
    abort();
  close(fd);
  struct nc_pcache *c;
  if (nc_pcache_open(dir, CAP, &c) != 0)
    return;
  uint8_t *sum, page[NC_HDE_PAGE];
  size_t sum_len;
  if (nc_pcache_summary(c, SESSION, &sum, &sum_len) != 0)
    abort();
  for (size_t off = 9; off + 16 <= sum_len; off += 16) {
    struct nc_hash128 h = {0, 0}, got;
    for (int i = 0; i < 8; i++) {
      h.hi = h.hi << 8 | sum[off + (size_t)i];
      h.lo = h.lo << 8 | sum[off + 8 + (size_t)i];
    }
    if (nc_pcache_get(c, &h, page) == 0) {
      nc_hde_hash(page, &got);
      if (got.lo != h.lo || got.hi != h.hi)
        abort(); /* the one thing the cache must never do */
    }
  }
  free(sum);
  nc_pcache_unpin_all(c, SESSION);
  seed_page(0, page);
  struct nc_hash128 h;
  nc_hde_hash(page, &h);
  (void)nc_pcache_put(c, &h, page);
  nc_pcache_close(c);
}

static void mode_frame(struct reader *r) {
  int b = next(r);
  if (b < 0)
    return;
  struct nc_hde_params p = {.delta_cache_bytes = 4 * NC_HDE_PAGE, .dedup = true};
  uint64_t quota = 0;
  uint8_t *sum;
  size_t sum_len;
  struct nc_pcache *c = dest_open(&quota, &sum, &sum_len);
  free(sum);
  struct nc_hde_dec *d;
  if (nc_hde_dec_new(&p, c, SESSION, &d) != 0)
    abort();
  give_prev(d);
  size_t cap = (size_t)b * 257 + 1;
  uint8_t *in = malloc(r->n ? r->n : 1), *plain = malloc(cap); /* exact sizes for ASan */
  memcpy(in, r->p, r->n);
  size_t n = 0;
  int rc = nc_hde_frame_unpack(d, in, r->n, plain, cap, &n);
  if (rc == 0) {
    if (n == 0 || n > cap)
      abort();
    struct reader rr = {plain, n};
    decode_records(d, &rr);
    (void)nc_hde_dec_frame_end(d); /* any outcome; then a new frame may come */
    if (nc_hde_frame_unpack(d, in, r->n, plain, cap, &n) != 0)
      abort(); /* the same frame again: ending the first must allow it */
  } else if (n != 0) {
    abort();
  }
  free(in);
  free(plain);
  nc_hde_dec_free(d);
  nc_pcache_unpin_all(c, SESSION);
  nc_pcache_close(c);
}

static void write_file(const char *path, const uint8_t *p, size_t n) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0)
    abort();
  if (n && write(fd, p, n) != (ssize_t)n)
    abort();
  close(fd);
}

static void mode_record(struct reader *r) {
  char path[160];
  snprintf(path, sizeof path, "%s/x.rec", dir);
  write_file(path, r->p, r->n);
  struct nc_hde_rec *rec = NULL;
  int rc = nc_hde_rec_load(path, &rec);
  unlink(path);
  if (rc != 0) {
    if (rec)
      abort();
    return;
  }
  uint64_t quota = 0;
  uint8_t *sum, *held;
  size_t sum_len, held_len;
  struct nc_pcache *c = dest_open(&quota, &sum, &sum_len);
  if (nc_hde_rec_match(rec, sum, &sum_len, &held, &held_len) != 0)
    abort();
  struct nc_hde_params p = {.dedup = true};
  struct nc_hde_dec *d;
  struct nc_hde_enc *e;
  if (nc_hde_dec_new(&p, c, SESSION, &d) != 0 || nc_hde_enc_new(&p, sum, sum_len, NULL, &e) != 0)
    abort();
  if (nc_hde_dec_set_prev(d, rec, held, held_len) != 0 ||
      nc_hde_enc_set_prev(e, rec, held, held_len) != 0)
    abort();
  /* The known pages, as a source would send them: all must come back. */
  uint8_t page[NC_HDE_PAGE], got[NC_HDE_PAGE], tok[NC_HDE_TOKEN_MAX];
  for (int i = 0; i < 4; i++) {
    size_t len;
    seed_page(i, page);
    if (nc_hde_encode(e, (uint64_t)i, page, tok, &len) != 0 ||
        nc_hde_decode(d, (uint64_t)i, tok, len, got) != 0 || memcmp(got, page, NC_HDE_PAGE) != 0)
      abort();
  }
  free(sum);
  free(held);
  nc_hde_enc_free(e);
  nc_hde_dec_free(d);
  nc_hde_rec_free(rec);
  nc_pcache_unpin_all(c, SESSION);
  nc_pcache_close(c);
}

static void mode_seed(struct reader *r) {
  char path[160];
  snprintf(path, sizeof path, "%s/boot", dir);
  write_file(path, r->p, r->n);
  uint64_t quota = 0, added = 0;
  uint8_t *sum;
  size_t sum_len;
  struct nc_pcache *c = dest_open(&quota, &sum, &sum_len);
  free(sum);
  nc_pcache_unpin_all(c, SESSION);
  (void)nc_hde_seed_file(c, path, SLOTS / 2, &added);
  if (added > SLOTS / 2)
    abort();
  unlink(path);
  nc_pcache_close(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  dir_make();
  struct reader r = {data, size};
  int mode = next(&r);
  switch (mode < 0 ? -1 : mode % 8) {
  case 0:
    mode_tokens(&r);
    break;
  case 1:
    mode_roundtrip(&r);
    break;
  case 2:
    mode_summary(&r);
    break;
  case 3:
    mode_cache_file(&r);
    break;
  case 4:
    mode_frame(&r);
    break;
  case 5:
    mode_record(&r);
    break;
  case 6:
    mode_seed(&r);
    break;
  default:
    break;
  }
  dir_remove();
  return 0;
}
