/* Writes the seed corpus of fuzz/fuzz_hde.c into the directory given as
 * argv[1] (make -C build gen_hde_corpus && build/bin/gen_hde_corpus
 * fuzz/corpus/hde). Seeds are real encoder output and real cache files,
 * built with the same fixed setup the fuzz target uses, so the fuzzer
 * starts from inputs that reach deep into the decoder. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hde_test.h"

#define SESSION 7
#define SLOTS 16
#define CAP (4096u + SLOTS * (16u + NC_HDE_PAGE))

static const char *outdir;

static void seed_page(int i, uint8_t *p) { /* as in fuzz_hde.c */
  memset(p, 0, NC_HDE_PAGE);
  for (size_t k = 0; k < NC_HDE_PAGE; k += 64 * (size_t)(i + 1))
    p[k] = (uint8_t)(0x11 * (i + 1));
}

static void emit(const char *name, const uint8_t *buf, size_t len) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", outdir, name);
  FILE *f = fopen(path, "wb");
  if (!f || fwrite(buf, 1, len, f) != len || fclose(f) != 0) {
    perror(path);
    exit(1);
  }
}

struct out {
  uint8_t buf[1 << 16];
  size_t len;
};

static void out_byte(struct out *o, int b) {
  o->buf[o->len++] = (uint8_t)b;
}

/* A mode-0 seed: the tokens a real encoder produces for a scripted run,
 * against a destination set up the way the fuzz target sets it up. */
static void token_seed(const char *name, int params, enum nc_hde_codec codec, int level) {
  char dir[64];
  if (tmpdir_make(dir) < 0)
    exit(1);
  struct nc_pcache *c;
  if (nc_pcache_open(dir, CAP, &c) != 0)
    exit(1);
  uint8_t p[NC_HDE_PAGE];
  for (int i = 0; i < 4; i++) {
    struct nc_hash128 h;
    seed_page(i, p);
    nc_hde_hash(p, &h);
    nc_pcache_put(c, &h, p);
  }
  struct nc_hde_params hp = {.codec = codec,
                             .level = level,
                             .delta_cache_bytes = (uint64_t)(params & 7) * NC_HDE_PAGE,
                             .new_pages_quota = (uint64_t)(params >> 3) & 7,
                             .dedup = true};
  uint64_t g;
  nc_pcache_reserve(c, SESSION, hp.new_pages_quota, &g);
  uint8_t *sum;
  size_t sum_len;
  nc_pcache_summary(c, SESSION, &sum, &sum_len);
  struct nc_hde_enc *e;
  if (nc_hde_enc_new(&hp, sum, sum_len, NULL, &e) != 0)
    exit(1);
  free(sum);

  static struct out o;
  o.len = 0;
  out_byte(&o, 0);
  out_byte(&o, params);
  struct rng r = {(uint64_t)params * 7 + 1};
  static uint8_t cur[4][NC_HDE_PAGE];
  memset(cur, 0, sizeof cur);
  for (int step = 0; step < 10; step++) {
    int key = step % 4;
    switch (step) {
    case 0: /* zero */
      break;
    case 1:
    case 2:
      seed_page(step, cur[key]); /* REF from the summary */
      break;
    case 3:
      page_sparse_write(&r, cur[key], 6); /* RAW */
      break;
    case 4:
      page_random(&r, cur[key]); /* STORED */
      break;
    case 5:
    case 6:
    case 8:
      page_sparse_write(&r, cur[key], 2); /* DELTA when cached */
      break;
    case 7:
      memcpy(cur[key], cur[3], NC_HDE_PAGE); /* in-session REF */
      break;
    default:
      memset(cur[key], 0, NC_HDE_PAGE);
    }
    uint8_t tok[NC_HDE_TOKEN_MAX];
    size_t len;
    nc_hde_encode(e, (uint64_t)key, cur[key], tok, &len);
    out_byte(&o, key);
    out_byte(&o, (int)(len >> 8));
    out_byte(&o, (int)(len & 0xff));
    memcpy(o.buf + o.len, tok, len);
    o.len += len;
  }
  emit(name, o.buf, o.len);
  nc_hde_enc_free(e);
  nc_pcache_close(c);
  tmpdir_remove(dir);
}

static void roundtrip_seeds(void) {
  static const uint8_t a[] = {1, 4 | 3 << 3 | 1 << 6, /* lz4, 4 pages, quota 3 */
                              0x08, 0, 1,             /* key 0: noise */
                              0x28, 0, 10,            /* key 0: one word */
                              0x11, 0, 0,             /* key 1: copy of key 0 */
                              0x1a, 1, 0,             /* key 2: seed page 1 */
                              0x20, 2, 3,             /* zstd level 3 */
                              0x30, 1, 200,           /* key 0: one word */
                              0x03, 0, 0,             /* key 3: zero */
                              0x09, 7, 7,             /* key 1: noise */
                              0x39, 3, 3};
  emit("roundtrip_lz4", a, sizeof a);
  static const uint8_t b[] = {1, 1 | 7 << 3 | 2 << 6, /* zstd, 1 page, quota 7 */
                              0x08, 0, 1, 0x09, 0, 2, 0x0a, 0, 3, 0x30, 0, 4,
                              0x31, 0, 5, 0x32, 0, 6, 0x20, 0, 0xfb, 0x30, 0, 7,
                              0x12, 0, 0, 0x13, 1, 0, 0x00, 0, 0, 0x30, 0, 8};
  emit("roundtrip_zstd", b, sizeof b);
  static const uint8_t c[] = {1, 0, 0x18, 3, 0, 0x19, 3, 0, 0x30, 0, 1, 0x31, 0, 1};
  emit("roundtrip_none", c, sizeof c);
}

static void summary_seeds(void) {
  char dir[64];
  if (tmpdir_make(dir) < 0)
    exit(1);
  struct nc_pcache *c;
  nc_pcache_open(dir, CAP, &c);
  uint8_t p[NC_HDE_PAGE];
  for (int i = 0; i < 4; i++) {
    struct nc_hash128 h;
    seed_page(i, p);
    nc_hde_hash(p, &h);
    nc_pcache_put(c, &h, p);
  }
  uint8_t *sum;
  size_t sum_len;
  nc_pcache_summary(c, SESSION, &sum, &sum_len);
  static uint8_t o[1 + 9 + 16 * 4];
  o[0] = 2;
  memcpy(o + 1, sum, sum_len);
  emit("summary_valid", o, 1 + sum_len);
  memcpy(o + 1 + 9, sum + 9 + 16, 16); /* unsorted */
  emit("summary_unsorted", o, 1 + sum_len);
  emit("summary_short", o, 1 + 12);
  free(sum);

  /* Cache files: slots as pcache.c writes them, one of them torn. */
  static uint8_t f[2 + 5 * (16 + NC_HDE_PAGE)];
  f[0] = 3;
  f[1] = 1; /* prefix a valid header */
  for (int i = 0; i < 5; i++) {
    uint8_t *s = f + 2 + (size_t)i * (16 + NC_HDE_PAGE);
    struct nc_hash128 h;
    seed_page(i % 4, s + 16);
    nc_hde_hash(s + 16, &h);
    for (int b = 0; b < 8; b++) {
      s[b] = (uint8_t)(h.hi >> (56 - 8 * b));
      s[8 + b] = (uint8_t)(h.lo >> (56 - 8 * b));
    }
  }
  f[2 + 2 * (16 + NC_HDE_PAGE) + 100] ^= 1; /* slot 2 damaged */
  emit("cache_file", f, sizeof f);
  emit("cache_file_partial", f, 2 + 16 + 2000);
  nc_pcache_unpin_all(c, SESSION);
  nc_pcache_close(c);
  tmpdir_remove(dir);
}

/* Version 2 seeds: a DATA frame of records with PREV, DELTA_PREV and
 * plain RAW tokens (mode 4, each codec), a record file (mode 5), boot
 * files to seed from (mode 6), and a round trip through frames (mode 1). */
static void v2_seeds(void) {
  struct nc_hde_params hp = {.codec = NC_HDE_ZSTD, .level = 1, .dedup = true};
  struct nc_hde_enc *e0, *e;
  struct nc_hde_rec *rec;
  uint8_t p[NC_HDE_PAGE], tok[NC_HDE_TOKEN_MAX], held = 0x0f;
  size_t len;
  if (nc_hde_enc_new(&hp, NULL, 0, NULL, &e0) != 0)
    exit(1);
  for (int i = 0; i < 4; i++) { /* the fuzz target's record: key i -> seed page i */
    seed_page(i, p);
    nc_hde_encode(e0, (uint64_t)i, p, tok, &len);
  }
  if (nc_hde_enc_record(e0, &rec) != 0)
    exit(1);
  char dir[64], path[128];
  if (tmpdir_make(dir) < 0)
    exit(1);
  struct nc_pcache *c;
  nc_pcache_open(dir, CAP, &c);
  for (int i = 0; i < 4; i++) {
    struct nc_hash128 h;
    seed_page(i, p);
    nc_hde_hash(p, &h);
    nc_pcache_put(c, &h, p);
  }
  const enum nc_hde_codec cs[] = {NC_HDE_ZSTD, NC_HDE_LZ4, NC_HDE_NONE};
  const char *names[] = {"frame_zstd", "frame_lz4", "frame_stored"};
  for (int k = 0; k < 3; k++) {
    hp.codec = cs[k] == NC_HDE_NONE ? NC_HDE_ZSTD : cs[k];
    if (nc_hde_enc_new(&hp, NULL, 0, c, &e) != 0 || nc_hde_enc_set_frames(e, true) != 0 ||
        nc_hde_enc_set_prev(e, rec, &held, 1) != 0)
      exit(1);
    static struct out pl;
    pl.len = 0;
    struct rng r = {5};
    for (int step = 0; step < 6; step++) {
      int key = step % 4;
      seed_page(key, p);
      if (step == 1 || step == 5)
        page_sparse_write(&r, p, 2); /* DELTA_PREV, then DELTA */
      if (step == 2)
        page_random(&r, p); /* RAW, plain */
      nc_hde_encode(e, (uint64_t)key, p, tok, &len);
      out_byte(&pl, key);
      out_byte(&pl, (int)(len >> 8));
      out_byte(&pl, (int)(len & 0xff));
      memcpy(pl.buf + pl.len, tok, len);
      pl.len += len;
    }
    nc_hde_enc_set_codec(e, cs[k], 1);
    static uint8_t fr[2 + (1 << 17)];
    fr[0] = 4;
    fr[1] = 255; /* cap 65536 */
    size_t fl;
    if (nc_hde_frame_pack(e, pl.buf, pl.len, fr + 2, sizeof fr - 2, &fl) != 0)
      exit(1);
    emit(names[k], fr, 2 + fl);
    nc_hde_enc_free(e);
  }
  snprintf(path, sizeof path, "%s/x.rec", dir);
  if (nc_hde_rec_save(rec, path) != 0)
    exit(1);
  static uint8_t rf[1 + 4096];
  FILE *f = fopen(path, "rb");
  size_t n = fread(rf + 1, 1, sizeof rf - 1, f);
  fclose(f);
  unlink(path);
  rf[0] = 5;
  emit("record", rf, 1 + n);
  rf[1 + 30] ^= 1;
  emit("record_damaged", rf, 1 + n);

  /* A newc cpio with one two-page file and the trailer. */
  static uint8_t cp[1 + 16384];
  size_t o = 1;
  cp[0] = 6;
  const char *names2[] = {"a", "TRAILER!!!"};
  for (int i = 0; i < 2; i++) {
    size_t fs = i == 0 ? 5000 : 0, nl = strlen(names2[i]) + 1;
    char hdr[256];
    snprintf(hdr, sizeof hdr, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X", 1u,
             i == 0 ? 0100644u : 0u, 0u, 0u, 1u, 0u, (unsigned)fs, 0u, 0u, 0u, 0u, (unsigned)nl,
             0u);
    memcpy(cp + o, hdr, 110);
    memcpy(cp + o + 110, names2[i], nl);
    size_t d = (110 + nl + 3) & ~(size_t)3;
    for (size_t b = 0; b < fs; b++)
      cp[o + d + b] = (uint8_t)(b * 7 + 1);
    o += (d + fs + 3) & ~(size_t)3;
  }
  emit("seed_cpio", cp, o);
  memcpy(cp + 1, "\x1f\x8b", 2); /* gzip magic over a non-gzip body */
  emit("seed_gzip_bad", cp, o);
  emit("seed_plain", cp + 100, 1 + 8192 - 100 > o ? o - 100 : 8192);
  static const uint8_t rt[] = {1, 4 | 3 << 3 | 2 << 6, 0x20, 2, 0x1a, /* zstd-2, frames */
                               0x08, 0, 1, 0x28, 0, 10, 0x11, 0, 0, 0x1a, 1, 0,
                               0x20, 1, 0x11,                       /* lz4, frames */
                               0x30, 1, 200, 0x03, 0, 0, 0x09, 7, 7};
  emit("roundtrip_frames", rt, sizeof rt);
  nc_hde_rec_free(rec);
  nc_hde_enc_free(e0);
  nc_pcache_close(c);
  tmpdir_remove(dir);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s <corpus dir>\n", argv[0]);
    return 2;
  }
  outdir = argv[1];
  token_seed("tokens_lz4", 4 | 3 << 3, NC_HDE_LZ4, 1);
  token_seed("tokens_zstd", 2 | 5 << 3, NC_HDE_ZSTD, 3);
  token_seed("tokens_none", 0, NC_HDE_NONE, 0);
  token_seed("tokens_zstd19", 7 | 7 << 3, NC_HDE_ZSTD, 19);
  roundtrip_seeds();
  summary_seeds();
  v2_seeds();
  static const uint8_t empty_tokens[] = {0, 0x3f, 1, 0, 17, 0};
  emit("tokens_truncated", empty_tokens, sizeof empty_tokens);
  return 0;
}
