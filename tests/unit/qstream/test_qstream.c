/* The QEMU precopy stream codec (src/dwcp/qstream.c). Label unit.
 *
 * The proof is on real streams: tests/data/qstream holds migration streams
 * recorded from QEMU 10.0 and 7.2 with the test guest (record.sh, listed
 * in streams.txt). Each is fed to the parser in random-size chunks (fixed
 * seeds; the head and tail one byte at a time), the OPAQUE and PAGE
 * segments are concatenated, and the result must be the original byte for
 * byte (XXH3-128 of both, plus a positional compare that names the first
 * bad offset). The parser must also have done its job: its page and zero
 * page counts must equal QEMU's own query-migrate counts for that stream,
 * so a parser that passed everything through fails.
 *
 * Then the failure paths on the same data: a corrupted record header, an
 * unknown block, flags this parser does not support, truncations, a bad
 * magic, and hand-built streams for what the recorded ones do not contain
 * (configuration subsections, x-ignore-shared, no footers, HOOK and
 * MULTIFD_FLUSH records, commands, EOF at top level). */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <xxhash.h>
#include <zstd.h>

#include "nc_test.h"

#include "dwcp/qstream.h"
#include "util/err.h"

#define MIB (1024.0 * 1024.0)
#define STREAM_CAP ((size_t)512 << 20) /* a recorded stream is < 100 MiB */

/* ---- recorded streams ------------------------------------------------- */

struct recorded {
  char name[64], base[64], qemu[32];
  uint64_t raw_bytes, normal, duplicate;
  uint8_t *data;
  size_t len;
};

static struct recorded g_streams[16];
static size_t g_nstreams;

static uint8_t *read_all(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f)
    return NULL;
  uint8_t *buf = NULL;
  if (fseek(f, 0, SEEK_END) == 0) {
    long n = ftell(f);
    if (n >= 0 && fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n + 1)) != NULL) {
      if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
      } else {
        *len = (size_t)n;
      }
    }
  }
  fclose(f);
  return buf;
}

/* Decompresses path (a zstd frame, made with --patch-from=prefix when
 * prefix is not NULL) into a malloc'd buffer. */
static uint8_t *unzstd(const char *path, const uint8_t *prefix, size_t prefix_len, size_t *out_len) {
  size_t zlen = 0;
  uint8_t *z = read_all(path, &zlen);
  if (!z)
    return NULL;
  ZSTD_DCtx *d = ZSTD_createDCtx();
  size_t cap = 1 << 20, len = 0;
  uint8_t *out = malloc(cap);
  bool ok = d && out && !ZSTD_isError(ZSTD_DCtx_setParameter(d, ZSTD_d_windowLogMax, 31));
  if (ok && prefix)
    ok = !ZSTD_isError(ZSTD_DCtx_refPrefix(d, prefix, prefix_len));
  ZSTD_inBuffer in = {z, zlen, 0};
  while (ok) {
    if (len == cap) {
      uint8_t *nb = cap < STREAM_CAP ? realloc(out, cap * 2) : NULL;
      if (!nb) {
        ok = false;
        break;
      }
      out = nb;
      cap *= 2;
    }
    ZSTD_outBuffer o = {out, cap, len};
    size_t r = ZSTD_decompressStream(d, &o, &in);
    len = o.pos;
    if (ZSTD_isError(r)) {
      fprintf(stderr, "%s: %s\n", path, ZSTD_getErrorName(r));
      ok = false;
    } else if (r == 0 && in.pos == in.size) {
      break;
    } else if (in.pos == in.size && o.pos < o.size) {
      fprintf(stderr, "%s: truncated zstd frame\n", path);
      ok = false;
    }
  }
  ZSTD_freeDCtx(d);
  free(z);
  if (!ok) {
    free(out);
    return NULL;
  }
  *out_len = len;
  return out;
}

static struct recorded *find_stream(const char *name) {
  for (size_t i = 0; i < g_nstreams; i++)
    if (strcmp(g_streams[i].name, name) == 0)
      return &g_streams[i];
  return NULL;
}

/* A QEMU 10 stream (the first without a base), for the corruption tests. */
static const struct recorded *base_stream(void) {
  for (size_t i = 0; i < g_nstreams; i++)
    if (strcmp(g_streams[i].base, "-") == 0 && strncmp(g_streams[i].qemu, "10.", 3) == 0)
      return &g_streams[i];
  fail_msg("streams.txt lists no QEMU 10 stream without a base");
  return NULL;
}

static int load_streams(void **state) {
  (void)state;
  char path[4096];
  snprintf(path, sizeof path, "%s/streams.txt", NC_QSTREAM_DATA);
  FILE *f = fopen(path, "r");
  if (!f) {
    fprintf(stderr, "%s: %s\n", path, strerror(errno));
    return -1;
  }
  char line[1024];
  while (fgets(line, sizeof line, f) && g_nstreams < 16) {
    struct recorded *r = &g_streams[g_nstreams];
    if (line[0] == '#' || sscanf(line, "%63s %63s %31s %" SCNu64 " %" SCNu64 " %" SCNu64, r->name,
                                 r->base, r->qemu, &r->raw_bytes, &r->normal, &r->duplicate) != 6)
      continue;
    g_nstreams++;
  }
  fclose(f);
  /* Bases first: they have no base themselves (record.sh enforces it). */
  for (int pass = 0; pass < 2; pass++) {
    for (size_t i = 0; i < g_nstreams; i++) {
      struct recorded *r = &g_streams[i];
      bool has_base = strcmp(r->base, "-") != 0;
      if (has_base != (pass == 1))
        continue;
      const struct recorded *b = has_base ? find_stream(r->base) : NULL;
      if (has_base && (!b || !b->data)) {
        fprintf(stderr, "%s: base %s not loaded\n", r->name, r->base);
        return -1;
      }
      snprintf(path, sizeof path, "%s/%s.qstream.zst", NC_QSTREAM_DATA, r->name);
      r->data = unzstd(path, b ? b->data : NULL, b ? b->len : 0, &r->len);
      if (!r->data || r->len != r->raw_bytes) {
        fprintf(stderr, "%s: decompressed %zu bytes, streams.txt says %" PRIu64 "\n", path,
                r->len, r->raw_bytes);
        return -1;
      }
    }
  }
  return g_nstreams >= 3 ? 0 : -1;
}

static int free_streams(void **state) {
  (void)state;
  for (size_t i = 0; i < g_nstreams; i++)
    free(g_streams[i].data);
  return 0;
}

/* ---- the rebuilding sink ---------------------------------------------- */

struct rebuild {
  const uint8_t *want; /* the input, to find the first mismatch */
  size_t want_len;
  XXH3_state_t *hash;
  uint64_t emitted;
  uint64_t first_bad; /* UINT64_MAX: none */
  uint64_t pages, page_errors;
  const struct nc_qs_parser *p;
  int fail_after_pages; /* > 0: the page sink fails with -EIO on that page */
};

static void rebuild_check(struct rebuild *rb, const uint8_t *b, size_t n) {
  if (rb->first_bad == UINT64_MAX) {
    if (rb->emitted + n > rb->want_len) {
      rb->first_bad = rb->want_len;
    } else if (memcmp(rb->want + rb->emitted, b, n) != 0) {
      size_t i = 0;
      while (rb->want[rb->emitted + i] == b[i])
        i++;
      rb->first_bad = rb->emitted + i;
    }
  }
  XXH3_128bits_update(rb->hash, b, n);
  rb->emitted += n;
}

static int rb_opaque(void *data, const uint8_t *b, size_t n) {
  struct rebuild *rb = data;
  if (n == 0)
    rb->page_errors++; /* the contract says n > 0 */
  rebuild_check(rb, b, n);
  return 0;
}

static int rb_page(void *data, uint32_t block, uint64_t offset, const uint8_t page[NC_QS_PAGE_SIZE]) {
  struct rebuild *rb = data;
  if (offset % NC_QS_PAGE_SIZE != 0 || nc_qs_block_name(rb->p, block) == NULL)
    rb->page_errors++;
  rb->pages++;
  if (rb->fail_after_pages > 0 && rb->pages == (uint64_t)rb->fail_after_pages)
    return -EIO;
  rebuild_check(rb, page, NC_QS_PAGE_SIZE);
  return 0;
}

static uint64_t rng_next(uint64_t *s) {
  uint64_t x = *s;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return *s = x;
}

/* A chunk length: mostly up to 64 KiB, often tiny, sometimes exactly one
 * page plus or minus a little (to split records at every position). */
static size_t chunk_len(uint64_t *s) {
  uint64_t r = rng_next(s);
  switch (r % 4) {
  case 0:
    return 1 + (size_t)(r >> 8) % 16;
  case 1:
    return 4096 - 16 + (size_t)(r >> 8) % 40;
  default:
    return 1 + (size_t)(r >> 8) % 65536;
  }
}

struct outcome {
  struct nc_qs_stats st;
  XXH128_hash_t in_hash, out_hash;
  uint64_t emitted, first_bad, page_errors;
  int feed_rc, finish_rc;
  char reason[192];
  char block0[64];
};

/* Feeds buf[0..len) in random chunks (byte by byte for the first head
 * bytes and the last tail bytes), then finishes, and rebuilds. */
static void run_parser(const uint8_t *buf, size_t len, uint64_t seed, size_t head, size_t tail,
                       struct outcome *o) {
  memset(o, 0, sizeof *o);
  struct rebuild rb = {.want = buf, .want_len = len, .first_bad = UINT64_MAX};
  rb.hash = XXH3_createState();
  assert_non_null(rb.hash);
  XXH3_128bits_reset(rb.hash);
  struct nc_qs_sink sink = {.data = &rb, .opaque = rb_opaque, .page = rb_page};
  struct nc_qs_parser *p = NULL;
  EXPECT_RC(nc_qs_parser_new(&sink, &p), 0);
  rb.p = p;
  uint64_t s = seed | 1;
  size_t off = 0;
  int rc = 0;
  while (off < len && rc == 0) {
    size_t n = (off < head || off >= len - (tail < len ? tail : len)) ? 1 : chunk_len(&s);
    if (n > len - off)
      n = len - off;
    rc = nc_qs_feed(p, buf + off, n);
    off += n;
  }
  o->feed_rc = rc;
  o->finish_rc = rc == 0 ? nc_qs_finish(p) : rc;
  nc_qs_stats(p, &o->st);
  snprintf(o->reason, sizeof o->reason, "%s", nc_qs_passthrough_reason(p));
  const char *b0 = nc_qs_block_name(p, 0);
  snprintf(o->block0, sizeof o->block0, "%s", b0 ? b0 : "(none)");
  o->in_hash = XXH3_128bits(buf, len);
  o->out_hash = XXH3_128bits_digest(rb.hash);
  o->emitted = rb.emitted;
  o->first_bad = rb.first_bad;
  o->page_errors = rb.page_errors;
  if (rb.pages != o->st.pages)
    o->page_errors++;
  nc_qs_parser_free(p);
  XXH3_freeState(rb.hash);
}

static void expect_exact(const struct outcome *o, size_t len) {
  if (o->first_bad != UINT64_MAX)
    fail_msg("rebuilt stream differs from the input at byte %" PRIu64 " of %zu", o->first_bad, len);
  EXPECT_U64(o->emitted, len);
  if (!XXH128_isEqual(o->in_hash, o->out_hash))
    fail_msg("XXH3-128 of the rebuilt stream %016" PRIx64 "%016" PRIx64 " != input's %016" PRIx64
             "%016" PRIx64,
             o->out_hash.high64, o->out_hash.low64, o->in_hash.high64, o->in_hash.low64);
  EXPECT_U64(o->st.opaque_bytes + o->st.pages * NC_QS_PAGE_SIZE, len);
  EXPECT_U64(o->page_errors, 0);
}

/* ---- tests on the recorded streams ------------------------------------ */

static void test_recorded_exact(void **state) {
  (void)state;
  bool saw72 = false, saw10 = false;
  for (size_t i = 0; i < g_nstreams; i++) {
    const struct recorded *r = &g_streams[i];
    struct outcome o;
    run_parser(r->data, r->len, 0x9e3779b97f4a7c15ull + i, 1 << 20, 256 << 10, &o);
    printf("[qstream] %-18s QEMU %-7s %9zu bytes: %6" PRIu64 " pages, %6" PRIu64
           " zero, %9" PRIu64 " opaque bytes, %u RAM sections\n",
           r->name, r->qemu, r->len, o.st.pages, o.st.zero_pages, o.st.opaque_bytes, o.st.passes);
    EXPECT_RC(o.feed_rc, 0);
    EXPECT_RC(o.finish_rc, 0);
    expect_exact(&o, r->len);
    if (o.st.passthrough)
      fail_msg("%s: passthrough: %s", r->name, o.reason);
    EXPECT_U64(o.st.pages, r->normal);
    EXPECT_U64(o.st.zero_pages, r->duplicate);
    EXPECT_TRUE(o.st.pages > 0);
    EXPECT_TRUE(o.st.passes >= 2);
    EXPECT_TRUE(o.st.ram_done);
    EXPECT_TRUE(o.st.eof);
    EXPECT_U64(o.st.bytes_in, r->len);
    EXPECT_STR(o.block0, "pc.ram");
    saw72 |= strncmp(r->qemu, "7.2", 3) == 0;
    saw10 |= strncmp(r->qemu, "10.", 3) == 0;
  }
  EXPECT_TRUE(saw10);
  if (!saw72)
    printf("[qstream] no QEMU 7.2 stream in streams.txt\n");
}

/* One call with the whole stream, and 64 KiB reads like a socket's: the
 * same segments. Prints the parse rate with sinks that do nothing. */
static int null_opaque(void *data, const uint8_t *b, size_t n) {
  (void)b;
  *(uint64_t *)data += n;
  return 0;
}

static int null_page(void *data, uint32_t block, uint64_t offset, const uint8_t page[NC_QS_PAGE_SIZE]) {
  (void)block;
  (void)offset;
  (void)page;
  *(uint64_t *)data += NC_QS_PAGE_SIZE;
  return 0;
}

/* MiB/s on one core, best of 5 runs (one run is a few ms). */
static double parse_rate(const uint8_t *buf, size_t len, size_t chunk, struct nc_qs_stats *st) {
  double best = 0;
  for (int run = 0; run < 5; run++) {
    uint64_t seen = 0;
    struct nc_qs_sink sink = {.data = &seen, .opaque = null_opaque, .page = null_page};
    struct nc_qs_parser *p = NULL;
    EXPECT_RC(nc_qs_parser_new(&sink, &p), 0);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (size_t off = 0; off < len; off += chunk)
      EXPECT_RC(nc_qs_feed(p, buf + off, len - off < chunk ? len - off : chunk), 0);
    EXPECT_RC(nc_qs_finish(p), 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    nc_qs_stats(p, st);
    nc_qs_parser_free(p);
    EXPECT_U64(seen, len);
    double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    if (s > 0 && (double)len / MIB / s > best)
      best = (double)len / MIB / s;
  }
  return best;
}

static void test_recorded_throughput(void **state) {
  (void)state;
  for (size_t i = 0; i < g_nstreams; i++) {
    const struct recorded *r = &g_streams[i];
    struct nc_qs_stats whole, socket, odd;
    double a = parse_rate(r->data, r->len, r->len, &whole);
    double b = parse_rate(r->data, r->len, 64 << 10, &socket);
    double c = parse_rate(r->data, r->len, 4093, &odd); /* most pages straddle reads */
    printf("[qstream] %-18s parse rate, MiB/s: %7.0f in one call, %7.0f in 64 KiB reads, "
           "%6.0f in 4093-byte reads (%.1f M records/s)\n",
           r->name, a, b, c, (double)(odd.pages + odd.zero_pages) * c * MIB / (double)r->len / 1e6);
    EXPECT_U64(whole.pages, r->normal);
    EXPECT_U64(socket.pages, r->normal);
    EXPECT_U64(odd.pages, r->normal);
    EXPECT_TRUE(whole.eof && socket.eof && odd.eof);
    EXPECT_TRUE(!whole.passthrough && !socket.passthrough && !odd.passthrough);
  }
}

/* Where the n-th page payload (0-based) starts in a stream. */
struct locate {
  uint64_t pos, want, found_at;
};

static int loc_opaque(void *data, const uint8_t *b, size_t n) {
  (void)b;
  ((struct locate *)data)->pos += n;
  return 0;
}

static int loc_page(void *data, uint32_t block, uint64_t offset, const uint8_t page[NC_QS_PAGE_SIZE]) {
  (void)block;
  (void)offset;
  (void)page;
  struct locate *l = data;
  if (l->want-- == 0)
    l->found_at = l->pos;
  l->pos += NC_QS_PAGE_SIZE;
  return 0;
}

static uint64_t page_payload_at(const uint8_t *buf, size_t len, uint64_t nth) {
  struct locate l = {.want = nth, .found_at = UINT64_MAX};
  struct nc_qs_sink sink = {.data = &l, .opaque = loc_opaque, .page = loc_page};
  struct nc_qs_parser *p = NULL;
  EXPECT_RC(nc_qs_parser_new(&sink, &p), 0);
  EXPECT_RC(nc_qs_feed(p, buf, len), 0);
  nc_qs_parser_free(p);
  if (l.found_at == UINT64_MAX)
    fail_msg("stream has no page %" PRIu64, nth);
  return l.found_at;
}

static void put_be64(uint8_t *b, uint64_t v) {
  for (int i = 7; i >= 0; i--, v >>= 8)
    b[i] = (uint8_t)v;
}

static uint64_t get_be64(const uint8_t *b) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++)
    v = v << 8 | b[i];
  return v;
}

static uint8_t *copy_of(const struct recorded *r) {
  uint8_t *c = malloc(r->len);
  assert_non_null(c);
  memcpy(c, r->data, r->len);
  return c;
}

/* Page n of the stream: the record header before its payload, made to
 * say `flags` at `offset`. The header must be a CONTINUE one (8 bytes). */
static void corrupt_record(const struct recorded *r, uint64_t nth, uint64_t offset, uint64_t flags,
                           const char *want_reason) {
  uint8_t *c = copy_of(r);
  uint64_t at = page_payload_at(c, r->len, nth);
  uint64_t hdr = get_be64(c + at - 8);
  if ((hdr & 0xfff) != 0x28)
    fail_msg("page %" PRIu64 " header is 0x%" PRIx64 ", want a CONTINUE|PAGE one", nth, hdr);
  put_be64(c + at - 8, offset | flags);
  struct outcome o;
  run_parser(c, r->len, 77, 4096, 4096, &o);
  EXPECT_RC(o.feed_rc, 0);
  EXPECT_RC(o.finish_rc, 0);
  expect_exact(&o, r->len);
  EXPECT_TRUE(o.st.passthrough);
  EXPECT_CONTAINS(o.reason, want_reason);
  EXPECT_U64(o.st.pages, nth); /* every page before the bad record was found */
  EXPECT_TRUE(!o.st.eof && !o.st.ram_done);
  free(c);
}

static void test_corrupt_offset_beyond_block(void **state) {
  (void)state;
  const struct recorded *r = base_stream();
  corrupt_record(r, 1000, 0x40000000, 0x28, "beyond block \"pc.ram\"");
}

static void test_corrupt_flags(void **state) {
  (void)state;
  const struct recorded *r = base_stream();
  corrupt_record(r, 1200, 0x1000, 0x40, "XBZRLE");
  corrupt_record(r, 1200, 0x1000, 0x100, "compressed page");
  corrupt_record(r, 1200, 0x1000, 0x0a, "flags 0x00a");
  corrupt_record(r, 1200, 0x1000, 0x01, "flags 0x001");
}

/* The first record naming a block (the "pc.ram" after the table's),
 * renamed to a block of the same length that the table does not have. */
static void test_corrupt_block_name(void **state) {
  (void)state;
  const struct recorded *r = base_stream();
  uint8_t *c = copy_of(r);
  uint8_t *table = memmem(c, 4096, "\x06pc.ram", 7);
  assert_non_null(table);
  uint8_t *first = memmem(table + 7, r->len - (size_t)(table + 7 - c), "\x06pc.ram", 7);
  assert_non_null(first);
  first[6] = 'x';
  struct outcome o;
  run_parser(c, r->len, 5, 1 << 16, 0, &o);
  expect_exact(&o, r->len);
  EXPECT_TRUE(o.st.passthrough);
  EXPECT_CONTAINS(o.reason, "\"pc.rax\", not in the block table");
  EXPECT_U64(o.st.pages + o.st.zero_pages, 0);
  free(c);
}

static void test_truncated(void **state) {
  (void)state;
  for (size_t i = 0; i < g_nstreams && i < 2; i++) {
    const struct recorded *r = &g_streams[i];
    uint64_t page = page_payload_at(r->data, r->len, 500);
    size_t cuts[] = {0,        3,        8,          9,        30,       60,   page - 5, page,
                     page + 1, page + 4095, page + 4096, page + 4100, r->len / 2, r->len - 5000,
                     r->len - 1};
    for (size_t k = 0; k < sizeof cuts / sizeof cuts[0]; k++) {
      struct outcome o;
      run_parser(r->data, cuts[k], 11 + k, 64, 64, &o);
      EXPECT_RC(o.feed_rc, 0);
      EXPECT_RC(o.finish_rc, 0);
      expect_exact(&o, cuts[k]);
      if (o.st.passthrough)
        fail_msg("%s cut at %zu: passthrough: %s", r->name, cuts[k], o.reason);
      EXPECT_TRUE(!o.st.eof);
      if (cuts[k] == page + 4096)
        EXPECT_U64(o.st.pages, 501);
      if (cuts[k] == page + 4095)
        EXPECT_U64(o.st.pages, 500); /* the partial page went out as opaque */
    }
  }
}

/* ---- hand-built streams ----------------------------------------------- */

struct sbuf {
  uint8_t b[1 << 16];
  size_t n;
};

static void put8(struct sbuf *s, uint8_t v) { s->b[s->n++] = v; }
static void put16(struct sbuf *s, uint16_t v) {
  put8(s, (uint8_t)(v >> 8));
  put8(s, (uint8_t)v);
}
static void put32(struct sbuf *s, uint32_t v) {
  put16(s, (uint16_t)(v >> 16));
  put16(s, (uint16_t)v);
}
static void put64(struct sbuf *s, uint64_t v) {
  put32(s, (uint32_t)(v >> 32));
  put32(s, (uint32_t)v);
}
static void putstr8(struct sbuf *s, const char *str) {
  put8(s, (uint8_t)strlen(str));
  memcpy(s->b + s->n, str, strlen(str));
  s->n += strlen(str);
}
static void putpage(struct sbuf *s, uint8_t fill) {
  memset(s->b + s->n, fill, NC_QS_PAGE_SIZE);
  s->n += NC_QS_PAGE_SIZE;
}

enum { NO_FOOTER = 1, IGNORE_SHARED = 2, SUBSECTIONS = 4, EXTRA_RECORDS = 8 };

static void footer(struct sbuf *s, int opts, uint32_t id) {
  if (!(opts & NO_FOOTER)) {
    put8(s, 0x7e);
    put32(s, id);
  }
}

/* QEVM, configuration, RAM START with a two-block table ("pc.ram" 64 KiB,
 * "pc.rom" 8 KiB), PART with pages, END, a device section, EOF,
 * VMDESCRIPTION. */
static void build_stream(struct sbuf *s, int opts) {
  s->n = 0;
  put32(s, 0x5145564d);
  put32(s, 3);
  put8(s, 0x07);
  put32(s, 4);
  memcpy(s->b + s->n, "test", 4);
  s->n += 4;
  if (opts & SUBSECTIONS) {
    put8(s, 0x05);
    putstr8(s, "configuration/target-page-bits");
    put32(s, 1);
    put32(s, 12);
    put8(s, 0x05);
    putstr8(s, "configuration/uuid");
    put32(s, 1);
    for (int i = 0; i < 16; i++)
      put8(s, (uint8_t)(0xa0 + i));
  }
  if (opts & IGNORE_SHARED) {
    put8(s, 0x05);
    putstr8(s, "configuration/capabilities");
    put32(s, 1);
    put32(s, 1);
    putstr8(s, "x-ignore-shared");
  }
  if (opts & EXTRA_RECORDS) {
    put8(s, 0x08); /* MIG_CMD_PING, 4 bytes */
    put16(s, 2);
    put16(s, 4);
    put32(s, 42);
  }
  put8(s, 0x01);
  put32(s, 2);
  putstr8(s, "ram");
  put32(s, 0);
  put32(s, 4);
  put64(s, 0x12000 | 0x04);
  putstr8(s, "pc.ram");
  put64(s, 0x10000);
  if (opts & IGNORE_SHARED)
    put64(s, 0);
  putstr8(s, "pc.rom");
  put64(s, 0x2000);
  if (opts & IGNORE_SHARED)
    put64(s, 0xfffc0000);
  if (opts & EXTRA_RECORDS)
    put64(s, 0x80); /* HOOK */
  put64(s, 0x10);
  footer(s, opts, 2);

  put8(s, 0x02);
  put32(s, 2);
  put64(s, 0x0000 | 0x08);
  putstr8(s, "pc.ram");
  putpage(s, 0x11);
  put64(s, 0x1000 | 0x28);
  putpage(s, 0x22);
  put64(s, 0x2000 | 0x22);
  put8(s, 0);
  put64(s, 0x1000 | 0x02);
  putstr8(s, "pc.rom");
  put8(s, 0);
  if (opts & EXTRA_RECORDS)
    put64(s, 0x200); /* MULTIFD_FLUSH */
  put64(s, 0x10);
  footer(s, opts, 2);

  if (opts & EXTRA_RECORDS) {
    put8(s, 0x08); /* MIG_CMD_SWITCHOVER_START */
    put16(s, 11);
    put16(s, 0);
  }
  put8(s, 0x03);
  put32(s, 2);
  put64(s, 0x0000 | 0x08);
  putstr8(s, "pc.rom");
  putpage(s, 0x33);
  put64(s, 0xf000 | 0x08);
  putstr8(s, "pc.ram");
  putpage(s, 0x44);
  put64(s, 0x10);
  footer(s, opts, 2);

  put8(s, 0x04); /* a device section: passes through */
  put32(s, 3);
  putstr8(s, "timer");
  put32(s, 0);
  put32(s, 2);
  put64(s, 0x0006000000057b22ull); /* looks like the trailer; is not at the end */
  footer(s, opts, 3);
  put8(s, 0x00);
  const char *json = "{\"page_size\": 4096, \"devices\": []}";
  put8(s, 0x06);
  put32(s, (uint32_t)strlen(json));
  memcpy(s->b + s->n, json, strlen(json));
  s->n += strlen(json);
}

static void expect_good(const struct sbuf *s, uint64_t pages) {
  /* every split point at one byte, then random chunks under several seeds */
  for (uint64_t seed = 1; seed < 6; seed++) {
    struct outcome o;
    run_parser(s->b, s->n, seed, seed == 1 ? s->n : 0, 0, &o);
    EXPECT_RC(o.feed_rc, 0);
    EXPECT_RC(o.finish_rc, 0);
    expect_exact(&o, s->n);
    if (o.st.passthrough)
      fail_msg("passthrough: %s", o.reason);
    EXPECT_U64(o.st.pages, pages);
    EXPECT_U64(o.st.zero_pages, 2);
    EXPECT_U64(o.st.passes, 3);
    EXPECT_TRUE(o.st.ram_done && o.st.eof);
  }
}

static void test_synthetic_variants(void **state) {
  (void)state;
  static struct sbuf s;
  int variants[] = {0, NO_FOOTER, IGNORE_SHARED, SUBSECTIONS, EXTRA_RECORDS,
                    NO_FOOTER | IGNORE_SHARED | SUBSECTIONS | EXTRA_RECORDS};
  for (size_t i = 0; i < sizeof variants / sizeof variants[0]; i++) {
    build_stream(&s, variants[i]);
    expect_good(&s, 4);
  }
}

/* Pages land where they belong, named by block. */
struct where {
  uint32_t block[8];
  uint64_t offset[8];
  uint8_t first[8];
  int n;
};

static int wh_opaque(void *data, const uint8_t *b, size_t n) {
  (void)data;
  (void)b;
  (void)n;
  return 0;
}

static int wh_page(void *data, uint32_t block, uint64_t offset, const uint8_t page[NC_QS_PAGE_SIZE]) {
  struct where *w = data;
  if (w->n < 8) {
    w->block[w->n] = block;
    w->offset[w->n] = offset;
    w->first[w->n] = page[0];
    w->n++;
  }
  return 0;
}

static void test_synthetic_pages(void **state) {
  (void)state;
  static struct sbuf s;
  build_stream(&s, 0);
  struct where w = {0};
  struct nc_qs_sink sink = {.data = &w, .opaque = wh_opaque, .page = wh_page};
  struct nc_qs_parser *p = NULL;
  EXPECT_RC(nc_qs_parser_new(&sink, &p), 0);
  EXPECT_RC(nc_qs_feed(p, s.b, s.n), 0);
  EXPECT_RC(nc_qs_finish(p), 0);
  EXPECT_I64(w.n, 4);
  uint32_t blocks[] = {0, 0, 1, 0};
  uint64_t offsets[] = {0, 0x1000, 0, 0xf000};
  uint8_t fills[] = {0x11, 0x22, 0x33, 0x44};
  for (int i = 0; i < 4; i++) {
    EXPECT_U64(w.block[i], blocks[i]);
    EXPECT_U64(w.offset[i], offsets[i]);
    EXPECT_U64(w.first[i], fills[i]);
  }
  EXPECT_STR(nc_qs_block_name(p, 0), "pc.ram");
  EXPECT_STR(nc_qs_block_name(p, 1), "pc.rom");
  EXPECT_TRUE(nc_qs_block_name(p, 2) == NULL);
  EXPECT_STR(nc_qs_passthrough_reason(p), "");
  EXPECT_RC(nc_qs_feed(p, s.b, 1), NC_E_INVALID); /* after finish */
  nc_qs_parser_free(p);
}

/* Replaces the bytes `from` (first occurrence after `after`) with `to`. */
static void patch(struct sbuf *s, size_t after, const void *from, const void *to, size_t n) {
  for (size_t i = after; i + n <= s->n; i++) {
    if (memcmp(s->b + i, from, n) == 0) {
      memcpy(s->b + i, to, n);
      return;
    }
  }
  fail_msg("pattern not found");
}

static void expect_passthrough(const struct sbuf *s, const char *reason, uint64_t pages) {
  for (uint64_t seed = 1; seed < 4; seed++) {
    struct outcome o;
    run_parser(s->b, s->n, seed, seed == 1 ? s->n : 0, 0, &o);
    EXPECT_RC(o.feed_rc, 0);
    EXPECT_RC(o.finish_rc, 0);
    expect_exact(&o, s->n);
    EXPECT_TRUE(o.st.passthrough);
    EXPECT_CONTAINS(o.reason, reason);
    EXPECT_U64(o.st.pages, pages);
    EXPECT_TRUE(!o.st.eof);
  }
}

static void test_synthetic_passthrough(void **state) {
  (void)state;
  static struct sbuf s;

  build_stream(&s, 0); /* a second "pc.ram" in the table */
  patch(&s, 0, "\x06pc.rom\x00\x00\x00\x00\x00\x00\x20", "\x06pc.ram\x00\x00\x00\x00\x00\x00\x20", 14);
  expect_passthrough(&s, "listed twice", 0);

  build_stream(&s, 0); /* table sizes that overshoot the total */
  patch(&s, 0, "\x00\x00\x00\x00\x00\x00\x20\x00", "\x00\x00\x00\x00\x00\x00\x30\x00", 8);
  expect_passthrough(&s, "does not fit the table", 0);

  build_stream(&s, 0); /* a postcopy page size after the block size */
  {
    static struct sbuf t;
    /* header, configuration, START, MEM_SIZE, "pc.ram", its size */
    size_t cut = 8 + 9 + 17 + 8 + 7 + 8;
    memcpy(t.b, s.b, cut);
    t.n = cut;
    put64(&t, 0x200000);
    memcpy(t.b + t.n, s.b + cut, s.n - cut);
    t.n += s.n - cut;
    expect_passthrough(&t, "empty name", 0);
  }

  build_stream(&s, 0); /* CONTINUE on the first page record */
  patch(&s, 0, "\x00\x00\x00\x00\x00\x00\x00\x08\x06pc.ram", "\x00\x00\x00\x00\x00\x00\x00\x28\x06pc.ram", 15);
  expect_passthrough(&s, "before any was named", 0);

  build_stream(&s, 0); /* a footer naming another section */
  patch(&s, 0, "\x10\x7e\x00\x00\x00\x02", "\x10\x7e\x00\x00\x00\x05", 6);
  expect_passthrough(&s, "footer of section 5", 0);

  build_stream(&s, 0); /* a PART of a section that is not RAM */
  patch(&s, 0, "\x02\x00\x00\x00\x02", "\x02\x00\x00\x00\x09", 5);
  expect_passthrough(&s, "PART of section 9", 0);

  build_stream(&s, 0); /* another iterable section */
  patch(&s, 0, "\x03ram", "\x03" "bla", 4);
  expect_passthrough(&s, "iterable section \"bla\"", 0);

  build_stream(&s, 0); /* RAM section version */
  patch(&s, 0, "ram\x00\x00\x00\x00\x00\x00\x00\x04", "ram\x00\x00\x00\x00\x00\x00\x00\x05", 11);
  expect_passthrough(&s, "RAM section version 5", 0);

  build_stream(&s, 0); /* a device section before RAM END */
  patch(&s, 0, "\x03\x00\x00\x00\x02", "\x04\x00\x00\x00\x02", 5);
  expect_passthrough(&s, "cannot be sized", 2);

  build_stream(&s, SUBSECTIONS); /* unknown configuration subsection */
  patch(&s, 0, "configuration/uuid", "configuration/uuix", 18);
  expect_passthrough(&s, "unknown configuration subsection", 0);

  build_stream(&s, SUBSECTIONS); /* 64 KiB target pages */
  patch(&s, 0, "\x00\x00\x00\x0c", "\x00\x00\x00\x10", 4);
  expect_passthrough(&s, "target page bits 16", 0);

  build_stream(&s, IGNORE_SHARED); /* mapped-ram (QEMU 9+, file: only) */
  patch(&s, 0, "\x0fx-ignore-shared", "\x0fmapped-ram-xxxx", 16);
  expect_passthrough(&s, "changes the RAM format", 0);

  build_stream(&s, EXTRA_RECORDS); /* MIG_CMD_PACKAGED (postcopy) */
  patch(&s, 0, "\x08\x00\x02\x00\x04", "\x08\x00\x07\x00\x04", 5);
  expect_passthrough(&s, "packaged", 0);

  build_stream(&s, 0); /* unknown record type */
  patch(&s, 0, "\x02\x00\x00\x00\x02", "\x09\x00\x00\x00\x02", 5);
  expect_passthrough(&s, "record type 0x09", 0);

  build_stream(&s, 0); /* file version 2 */
  s.b[7] = 2;
  expect_passthrough(&s, "stream version 2", 0);

  build_stream(&s, 0); /* a block table in a PART */
  patch(&s, 0x20, "\x00\x00\x00\x00\x00\x00\x00\x08\x06pc.ram", "\x00\x00\x00\x00\x00\x00\x00\x04\x06pc.ram", 15);
  expect_passthrough(&s, "outside the first RAM section", 0);
}

/* EOF at top level (no device sections), with and without VMDESCRIPTION,
 * and bytes after the end. */
static void test_synthetic_eof(void **state) {
  (void)state;
  static struct sbuf s;
  struct outcome o;
  s.n = 0;
  put32(&s, 0x5145564d);
  put32(&s, 3);
  put8(&s, 0x00);
  run_parser(s.b, s.n, 3, s.n, 0, &o);
  expect_exact(&o, s.n);
  EXPECT_TRUE(o.st.eof && !o.st.passthrough);
  put8(&s, 0x06);
  put32(&s, 2);
  put16(&s, 0x7b7d);
  run_parser(s.b, s.n, 3, s.n, 0, &o);
  expect_exact(&o, s.n);
  EXPECT_TRUE(o.st.eof && !o.st.passthrough);
  run_parser(s.b, s.n - 1, 3, s.n, 0, &o); /* cut inside the description */
  expect_exact(&o, s.n - 1);
  EXPECT_TRUE(!o.st.eof && !o.st.passthrough);
  put8(&s, 0x00);
  run_parser(s.b, s.n, 3, s.n, 0, &o);
  expect_exact(&o, s.n);
  EXPECT_TRUE(!o.st.eof && o.st.passthrough);
  EXPECT_CONTAINS(o.reason, "after the end");
}

static void test_bad_magic(void **state) {
  (void)state;
  static const uint8_t junk[] = "GET / HTTP/1.1\r\n\r\n";
  struct outcome o;
  run_parser(junk, sizeof junk - 1, 1, 100, 0, &o);
  EXPECT_RC(o.feed_rc, NC_E_PROTO);
  EXPECT_U64(o.emitted, 0);
  run_parser(junk, 3, 1, 100, 0, &o); /* too short to tell, and not QEVM */
  EXPECT_RC(o.finish_rc, NC_E_PROTO);
  EXPECT_U64(o.emitted, 0);
  run_parser((const uint8_t *)"QEV", 3, 1, 100, 0, &o); /* a truncated header */
  EXPECT_RC(o.finish_rc, 0);
  expect_exact(&o, 3);
}

/* A sink's error stops the parser, comes back from nc_qs_feed, and
 * sticks. */
static void test_sink_error(void **state) {
  (void)state;
  static struct sbuf s;
  build_stream(&s, 0);
  struct rebuild rb = {.want = s.b, .want_len = s.n, .first_bad = UINT64_MAX, .fail_after_pages = 2};
  rb.hash = XXH3_createState();
  XXH3_128bits_reset(rb.hash);
  struct nc_qs_sink sink = {.data = &rb, .opaque = rb_opaque, .page = rb_page};
  struct nc_qs_parser *p = NULL;
  EXPECT_RC(nc_qs_parser_new(&sink, &p), 0);
  rb.p = p;
  EXPECT_RC(nc_qs_feed(p, s.b, s.n), -EIO);
  EXPECT_RC(nc_qs_feed(p, s.b, 1), -EIO);
  EXPECT_RC(nc_qs_finish(p), -EIO);
  EXPECT_U64(rb.pages, 2);
  EXPECT_U64(rb.first_bad, UINT64_MAX); /* what went out before was right */
  nc_qs_parser_free(p);
  XXH3_freeState(rb.hash);

  struct nc_qs_sink bad = {.data = NULL, .opaque = NULL, .page = rb_page};
  EXPECT_RC(nc_qs_parser_new(&bad, &p), -EINVAL);
  nc_qs_parser_free(NULL);
}

int main(void) {
  const struct CMUnitTest recorded[] = {
      cmocka_unit_test(test_recorded_exact),
      cmocka_unit_test(test_recorded_throughput),
      cmocka_unit_test(test_corrupt_offset_beyond_block),
      cmocka_unit_test(test_corrupt_flags),
      cmocka_unit_test(test_corrupt_block_name),
      cmocka_unit_test(test_truncated),
  };
  const struct CMUnitTest synthetic[] = {
      cmocka_unit_test(test_synthetic_variants),
      cmocka_unit_test(test_synthetic_pages),
      cmocka_unit_test(test_synthetic_passthrough),
      cmocka_unit_test(test_synthetic_eof),
      cmocka_unit_test(test_bad_magic),
      cmocka_unit_test(test_sink_error),
  };
  int failed = cmocka_run_group_tests_name("qstream synthetic", synthetic, NULL, NULL);
  failed += cmocka_run_group_tests_name("qstream recorded", recorded, load_streams, free_streams);
  return failed ? 1 : 0;
}
