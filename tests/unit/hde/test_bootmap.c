/* The boot map (src/dwcp/bootmap.c): which chunk of an ELF64 vmlinux the
 * loader put at a guest-physical address.
 *
 * A hand-built ELF file in a temp dir checks the segment rules (p_offset
 * and p_paddr must agree modulo 4096, empty and non-LOAD headers are
 * skipped, a segment past EOF is clipped and its last chunk zero-padded)
 * page by page against the file's bytes; other files check that only
 * 64-bit little-endian ELF opens; hostile headers, each in an exactly
 * sized heap buffer so ASan sees any read past it, check the parser's
 * bounds. When the guest image (scripts/build-guest-image) exists, its
 * vmlinux is read with a small program-header reader of our own and
 * compared with the map. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "dwcp/bootmap.h"
#include "util/err.h"

#define PG NC_BOOTMAP_PAGE
#define EHDR 64
#define PHDR 56
#define PT_LOAD 1
#define PT_NOTE 4

/* ---- building ELF64 images ------------------------------------------------ */

static void put(uint8_t *p, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}

/* An ELF64 LE executable header at hdr (64 bytes) announcing phnum program
 * headers of phentsize bytes at phoff. */
static void ehdr(uint8_t *hdr, uint64_t phoff, unsigned phentsize, unsigned phnum) {
  memset(hdr, 0, EHDR);
  memcpy(hdr, "\x7f" "ELF\x02\x01\x01", 7);
  put(hdr + 16, 2, 2);     /* ET_EXEC */
  put(hdr + 18, 62, 2);    /* EM_X86_64 */
  put(hdr + 20, 1, 4);     /* EV_CURRENT */
  put(hdr + 24, 0x1000000, 8);
  put(hdr + 32, phoff, 8);
  put(hdr + 52, EHDR, 2);
  put(hdr + 54, phentsize, 2);
  put(hdr + 56, phnum, 2);
}

static void phdr(uint8_t *ph, uint32_t type, uint64_t off, uint64_t paddr, uint64_t filesz,
                 uint64_t memsz) {
  memset(ph, 0, PHDR);
  put(ph, type, 4);
  put(ph + 4, 5, 4);                      /* R+X */
  put(ph + 8, off, 8);
  put(ph + 16, 0xffffffff80000000u + paddr, 8); /* p_vaddr: a kernel's, unused */
  put(ph + 24, paddr, 8);
  put(ph + 32, filesz, 8);
  put(ph + 40, memsz, 8);
  put(ph + 48, PG, 8);
}

/* The test kernel: FILE_SIZE bytes (not a page multiple, so the last chunk
 * is partial), every byte a function of its offset so chunks differ. */
#define FILE_SIZE 0x5800u
#define NPH 7

/* Its program headers, and what the map must keep of them. */
static const struct {
  uint32_t type;
  uint64_t off, paddr, filesz, memsz;
} test_ph[NPH] = {
    {PT_LOAD, 0x1000, 0x100000, 0x1800, 0x1800},   /* kept: 2 pages */
    {PT_LOAD, 0x3234, 0x200234, 0x100, 0x100},     /* kept: unaligned but congruent */
    {PT_LOAD, 0x3000, 0x300800, 0x1000, 0x1000},   /* skipped: 0x000 vs 0x800 mod 4096 */
    {PT_LOAD, 0x4000, 0x400000, 0, 0x3000},        /* skipped: no file bytes (bss) */
    {PT_NOTE, 0x4000, 0x500000, 0x1000, 0x1000},   /* skipped: not PT_LOAD */
    {PT_LOAD, 0x4000, 0x600000, 0x10000, 0x10000}, /* kept, clipped at EOF: 0x1800 bytes */
    {PT_LOAD, 0x10000, 0x700000, 0x1000, 0x1000},  /* skipped: starts past EOF */
};

static const struct nc_bootmap_seg test_want[] = {
    {0x100000, 0x1000, 0x2000},
    {0x200000, 0x3000, 0x1000},
    {0x600000, 0x4000, 0x2000},
};
#define NWANT (sizeof test_want / sizeof test_want[0])

static uint8_t byte_at(uint64_t off) {
  uint64_t x = (off + 1) * 0x9e3779b97f4a7c15u;
  return (uint8_t)(x >> 56 ^ x >> 23);
}

/* The file's contents; the caller frees. */
static uint8_t *test_image(void) {
  uint8_t *f = malloc(FILE_SIZE);
  assert_non_null(f);
  for (uint64_t i = 0; i < FILE_SIZE; i++)
    f[i] = byte_at(i);
  ehdr(f, EHDR, PHDR, NPH);
  for (int i = 0; i < NPH; i++)
    phdr(f + EHDR + i * PHDR, test_ph[i].type, test_ph[i].off, test_ph[i].paddr,
         test_ph[i].filesz, test_ph[i].memsz);
  return f;
}

/* ---- temp files ----------------------------------------------------------- */

struct fx {
  char dir[64];
  char path[128];
};

static int setup(void **state) {
  struct fx *f = calloc(1, sizeof *f);
  if (!f)
    return -1;
  const char *base = getenv("TMPDIR");
  snprintf(f->dir, sizeof f->dir, "%s/nc_bootmap_XXXXXX",
           base && strlen(base) < 40 ? base : "/tmp");
  if (!mkdtemp(f->dir)) {
    free(f);
    return -1;
  }
  snprintf(f->path, sizeof f->path, "%s/vmlinux", f->dir);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  struct fx *f = *state;
  unlink(f->path);
  rmdir(f->dir);
  free(f);
  return 0;
}

static void write_file(const char *path, const uint8_t *p, size_t n) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, p, n), (ssize_t)n);
  assert_int_equal(close(fd), 0);
}

/* What the loader put at gpa's page, from the file bytes: the chunk at off,
 * zero-padded past size. */
static void chunk(const uint8_t *file, size_t size, uint64_t off, uint8_t out[PG]) {
  memset(out, 0, PG);
  if (off < size)
    memcpy(out, file + off, size - off < PG ? size - off : PG);
}

static void assert_seg(const struct nc_bootmap_seg *got, const struct nc_bootmap_seg *want,
                       size_t i) {
  if (got->gpa != want->gpa || got->off != want->off || got->size != want->size)
    fail_msg("segment %zu: got gpa 0x%" PRIx64 " off 0x%" PRIx64 " size 0x%" PRIx64
             ", want gpa 0x%" PRIx64 " off 0x%" PRIx64 " size 0x%" PRIx64,
             i, got->gpa, got->off, got->size, want->gpa, want->off, want->size);
}

/* ---- the hand-built kernel ------------------------------------------------ */

static void test_parse_segments(void **state) {
  (void)state;
  uint8_t *f = test_image();
  struct nc_bootmap_seg segs[NC_BOOTMAP_SEGS_MAX];
  size_t n = 99;
  /* Only the headers, as nc_bootmap_open passes them for a big file. */
  size_t hlen = EHDR + NPH * PHDR;
  uint8_t *h = malloc(hlen);
  assert_non_null(h);
  memcpy(h, f, hlen);
  assert_int_equal(nc_bootmap_parse(h, hlen, FILE_SIZE, segs, NC_BOOTMAP_SEGS_MAX, &n), 0);
  assert_int_equal(n, NWANT);
  for (size_t i = 0; i < NWANT; i++)
    assert_seg(&segs[i], &test_want[i], i);

  /* One byte short of the last program header: rejected, not read. */
  assert_int_equal(nc_bootmap_parse(h, hlen - 1, FILE_SIZE, segs, NC_BOOTMAP_SEGS_MAX, &n),
                   NC_E_PROTO);
  assert_int_equal(n, 0);

  /* A smaller cap keeps the first ones and writes nothing past it. */
  struct nc_bootmap_seg small[3];
  memset(small, 0xa5, sizeof small);
  assert_int_equal(nc_bootmap_parse(h, hlen, FILE_SIZE, small, 2, &n), 0);
  assert_int_equal(n, 2);
  assert_seg(&small[0], &test_want[0], 0);
  assert_seg(&small[1], &test_want[1], 1);
  assert_int_equal(small[2].gpa, 0xa5a5a5a5a5a5a5a5u);
  assert_int_equal(nc_bootmap_parse(h, hlen, FILE_SIZE, NULL, 0, &n), 0);
  assert_int_equal(n, 0);
  free(h);
  free(f);
}

/* Program headers larger than Elf64_Phdr (e_phentsize 64, and 312, whose
 * low byte alone would read as 56): the extra bytes are skipped, not read
 * as the next header. */
static void test_parse_wide_phentsize(void **state) {
  (void)state;
  const unsigned ents[] = {64, 256 + PHDR};
  for (size_t e = 0; e < sizeof ents / sizeof ents[0]; e++) {
    const unsigned ent = ents[e];
    size_t hlen = EHDR + NPH * ent;
    uint8_t *h = calloc(1, hlen);
    assert_non_null(h);
    ehdr(h, EHDR, ent, NPH);
    for (int i = 0; i < NPH; i++) {
      phdr(h + EHDR + i * ent, test_ph[i].type, test_ph[i].off, test_ph[i].paddr,
           test_ph[i].filesz, test_ph[i].memsz);
      memset(h + EHDR + i * ent + PHDR, 0x01, ent - PHDR);
    }
    struct nc_bootmap_seg segs[NC_BOOTMAP_SEGS_MAX];
    size_t n;
    assert_int_equal(nc_bootmap_parse(h, hlen, FILE_SIZE, segs, NC_BOOTMAP_SEGS_MAX, &n), 0);
    assert_int_equal(n, NWANT);
    for (size_t i = 0; i < NWANT; i++)
      assert_seg(&segs[i], &test_want[i], i);
    free(h);
  }
}

static void test_open_and_pages(void **state) {
  struct fx *fx = *state;
  uint8_t *f = test_image();
  write_file(fx->path, f, FILE_SIZE);
  struct nc_bootmap *b = NULL;
  assert_int_equal(nc_bootmap_open(fx->path, &b), 0);
  assert_non_null(b);
  assert_int_equal(nc_bootmap_count(b), NWANT);

  uint8_t got[PG], want[PG];
  int pages = 0;
  for (size_t s = 0; s < NWANT; s++) {
    const struct nc_bootmap_seg *w = &test_want[s];
    for (uint64_t d = 0; d < w->size; d += PG) {
      /* Any address in the page names the page. */
      const uint64_t in_page[] = {0, 1, 0x234, PG - 1};
      chunk(f, FILE_SIZE, w->off + d, want);
      for (size_t k = 0; k < sizeof in_page / sizeof in_page[0]; k++) {
        memset(got, 0xa5, sizeof got);
        uint64_t gpa = w->gpa + d + in_page[k];
        int rc = nc_bootmap_page(b, gpa, got);
        if (rc != 0)
          fail_msg("gpa 0x%" PRIx64 ": rc %d, want 0", gpa, rc);
        assert_memory_equal(got, want, PG);
      }
      pages++;
    }
  }
  assert_int_equal(pages, 5);

  /* The clipped segment's last chunk: 0x800 file bytes, then zeros. */
  assert_int_equal(nc_bootmap_page(b, 0x601000, got), 0);
  assert_memory_equal(got, f + 0x5000, 0x800);
  for (size_t i = 0x800; i < PG; i++)
    if (got[i] != 0)
      fail_msg("byte %zu past EOF is 0x%02x, want 0", i, got[i]);

  /* Nothing outside the kept segments, including the skipped ones. */
  const uint64_t outside[] = {0,        0xff000,  0xfffff,  0x102000, 0x1fffff, 0x201000,
                              0x300000, 0x300800, 0x400000, 0x500000, 0x602000, 0x700000,
                              0x1000000, UINT64_MAX, UINT64_MAX - PG};
  for (size_t i = 0; i < sizeof outside / sizeof outside[0]; i++) {
    int rc = nc_bootmap_page(b, outside[i], got);
    if (rc != -ENOENT)
      fail_msg("gpa 0x%" PRIx64 ": rc %d, want -ENOENT (%d)", outside[i], rc, -ENOENT);
  }

  assert_int_equal(nc_bootmap_page(NULL, 0x100000, got), -EINVAL);
  assert_int_equal(nc_bootmap_page(b, 0x100000, NULL), -EINVAL);
  nc_bootmap_free(b);
  nc_bootmap_free(NULL);
  assert_int_equal(nc_bootmap_count(NULL), 0);
  free(f);
}

/* The map reads on demand: a file that shrinks after open gives zeros or
 * -EIO for the lost chunks, never a crash or stale bytes past EOF. */
static void test_file_truncated_after_open(void **state) {
  struct fx *fx = *state;
  uint8_t *f = test_image();
  write_file(fx->path, f, FILE_SIZE);
  struct nc_bootmap *b;
  assert_int_equal(nc_bootmap_open(fx->path, &b), 0);
  assert_int_equal(truncate(fx->path, 0x4400), 0);
  uint8_t got[PG], want[PG];
  assert_int_equal(nc_bootmap_page(b, 0x600000, got), 0);
  chunk(f, 0x4400, 0x4000, want);
  assert_memory_equal(got, want, PG);
  int rc = nc_bootmap_page(b, 0x601000, got);
  if (rc != -EIO)
    fail_msg("chunk past the new EOF: rc %d, want -EIO (%d)", rc, -EIO);
  nc_bootmap_free(b);
  free(f);
}

/* ---- files that are not an ELF64 LE kernel -------------------------------- */

static void assert_open_fails(const char *path, int want) {
  struct nc_bootmap *b = (struct nc_bootmap *)(uintptr_t)1;
  int rc = nc_bootmap_open(path, &b);
  if (rc != want)
    fail_msg("%s: rc %d (%s), want %d (%s)", path, rc, nc_strerror(rc), want, nc_strerror(want));
  assert_null(b);
}

static void test_open_rejects(void **state) {
  struct fx *fx = *state;
  uint8_t *f = test_image();

  static const char text[] = "#!/bin/sh\necho this is not a kernel\n";
  write_file(fx->path, (const uint8_t *)text, sizeof text - 1);
  assert_open_fails(fx->path, NC_E_PROTO);

  write_file(fx->path, f, 0); /* empty */
  assert_open_fails(fx->path, NC_E_PROTO);

  write_file(fx->path, f, EHDR - 1); /* a header cut short */
  assert_open_fails(fx->path, NC_E_PROTO);

  f[4] = 1; /* ELFCLASS32 */
  write_file(fx->path, f, FILE_SIZE);
  assert_open_fails(fx->path, NC_E_PROTO);
  f[4] = 2;

  f[5] = 2; /* ELFDATA2MSB */
  write_file(fx->path, f, FILE_SIZE);
  assert_open_fails(fx->path, NC_E_PROTO);
  f[5] = 1;

  f[6] = 0; /* EI_VERSION */
  write_file(fx->path, f, FILE_SIZE);
  assert_open_fails(fx->path, NC_E_PROTO);
  f[6] = 1;

  /* A valid ELF64 whose segments are all unusable has no map. */
  uint8_t g[EHDR + 2 * PHDR];
  ehdr(g, EHDR, PHDR, 2);
  phdr(g + EHDR, PT_LOAD, 0x1000, 0x100800, 0x1000, 0x1000);
  phdr(g + EHDR + PHDR, PT_NOTE, 0x40, 0x40, 0x10, 0x10);
  write_file(fx->path, g, sizeof g);
  assert_open_fails(fx->path, NC_E_PROTO);

  /* The good image still opens after all that (the fixture is sound). */
  write_file(fx->path, f, FILE_SIZE);
  struct nc_bootmap *b;
  assert_int_equal(nc_bootmap_open(fx->path, &b), 0);
  nc_bootmap_free(b);

  unlink(fx->path);
  assert_open_fails(fx->path, -ENOENT);
  assert_open_fails(fx->dir, NC_E_PROTO); /* a directory */
  assert_int_equal(nc_bootmap_open(NULL, &b), -EINVAL);
  assert_int_equal(nc_bootmap_open(fx->dir, NULL), -EINVAL);
  free(f);
}

/* ---- hostile headers for the pure parser ---------------------------------- */

/* Parses a copy of h[0..len) in an exactly sized heap buffer. */
static int parse_exact(const uint8_t *h, size_t len, uint64_t file_size,
                       struct nc_bootmap_seg *segs, size_t *n) {
  uint8_t *c = malloc(len ? len : 1);
  assert_non_null(c);
  memcpy(c, h, len);
  int rc = nc_bootmap_parse(c, len, file_size, segs, NC_BOOTMAP_SEGS_MAX, n);
  free(c);
  return rc;
}

/* parse_exact must say NC_E_PROTO and no segments; line is the caller's. */
static void want_proto_at(const uint8_t *h, size_t len, uint64_t file_size, int line) {
  struct nc_bootmap_seg segs[NC_BOOTMAP_SEGS_MAX];
  size_t n = 99;
  int rc = parse_exact(h, len, file_size, segs, &n);
  if (rc != NC_E_PROTO || n != 0)
    fail_msg("line %d: rc %d n %zu, want NC_E_PROTO (%d) and 0", line, rc, n, NC_E_PROTO);
}
#define want_proto(h, len, file_size) want_proto_at((h), (len), (file_size), __LINE__)

/* Whatever parse returns must be a sane map of a file_size-byte file. */
static void assert_sane(int rc, const struct nc_bootmap_seg *s, size_t n, uint64_t file_size) {
  if (rc != 0 && rc != NC_E_PROTO)
    fail_msg("rc %d, want 0 or NC_E_PROTO", rc);
  if (rc != 0) {
    assert_int_equal(n, 0);
    return;
  }
  assert_true(n <= NC_BOOTMAP_SEGS_MAX);
  uint64_t end = (file_size + PG - 1) / PG * PG; /* callers never pass sizes that overflow here */
  for (size_t i = 0; i < n; i++) {
    if (s[i].gpa % PG || s[i].off % PG || s[i].size % PG || s[i].size == 0 || s[i].off > end ||
        s[i].size > end - s[i].off)
      fail_msg("segment %zu: gpa 0x%" PRIx64 " off 0x%" PRIx64 " size 0x%" PRIx64
               " in a file of 0x%" PRIx64 " bytes",
               i, s[i].gpa, s[i].off, s[i].size, file_size);
  }
}

static void test_parse_hostile(void **state) {
  (void)state;
  /* Room for the header and NC_BOOTMAP_SEGS_MAX + 1 program headers. */
  enum { H = EHDR + (NC_BOOTMAP_SEGS_MAX + 1) * PHDR };
  uint8_t h[H];
  struct nc_bootmap_seg segs[NC_BOOTMAP_SEGS_MAX];
  size_t n;
  const uint64_t fs = 0x100000;

  /* A good one first: one PT_LOAD. */
  ehdr(h, EHDR, PHDR, 1);
  phdr(h + EHDR, PT_LOAD, 0x1000, 0x1000000, 0x2000, 0x2000);
  assert_int_equal(parse_exact(h, EHDR + PHDR, fs, segs, &n), 0);
  assert_int_equal(n, 1);

  want_proto(h, 0, fs);
  want_proto(h, EHDR - 1, fs);
  want_proto(h, EHDR + PHDR - 1, fs); /* program header cut short */

  /* e_phoff past len, at len (no room), near UINT64_MAX (wraps). */
  const uint64_t phoffs[] = {EHDR + PHDR + 1, EHDR + PHDR, 1u << 20, UINT64_MAX,
                             UINT64_MAX - PHDR + 1, UINT64_MAX - EHDR, (uint64_t)1 << 63};
  for (size_t i = 0; i < sizeof phoffs / sizeof phoffs[0]; i++) {
    put(h + 32, phoffs[i], 8);
    want_proto(h, EHDR + PHDR, fs);
  }
  put(h + 32, EHDR, 8);

  /* e_phentsize 0 (a division), below Elf64_Phdr's 56, and huge with
   * e_phnum huge: phnum * phentsize is far past len. */
  const unsigned ents[] = {0, 1, 32, PHDR - 1};
  for (size_t i = 0; i < sizeof ents / sizeof ents[0]; i++) {
    put(h + 54, ents[i], 2);
    want_proto(h, EHDR + PHDR, fs);
  }
  put(h + 54, 0xffff, 2);
  put(h + 56, 0xffff, 2);
  want_proto(h, H, fs);
  put(h + 54, PHDR, 2);
  want_proto(h, H, fs); /* 0xffff headers of 56 bytes */
  put(h + 56, 0, 2);
  want_proto(h, H, fs); /* none at all */
  put(h + 56, 1, 2);
  assert_int_equal(parse_exact(h, EHDR + PHDR, fs, segs, &n), 0);

  /* Program headers overlapping the ELF header (e_phoff 0): a sane map or
   * a clean error, never a read past len. */
  put(h + 32, 0, 8);
  assert_sane(parse_exact(h, EHDR + PHDR, fs, segs, &n), segs, n, fs);
  put(h + 32, EHDR, 8);

  /* NC_BOOTMAP_SEGS_MAX PT_LOAD headers are fine, one more is not, even
   * when the extra one would be skipped. */
  ehdr(h, EHDR, PHDR, NC_BOOTMAP_SEGS_MAX);
  for (unsigned i = 0; i <= NC_BOOTMAP_SEGS_MAX; i++)
    phdr(h + EHDR + i * PHDR, PT_LOAD, (uint64_t)i * PG, 0x1000000 + (uint64_t)i * PG, PG, PG);
  assert_int_equal(parse_exact(h, EHDR + NC_BOOTMAP_SEGS_MAX * PHDR, fs, segs, &n), 0);
  assert_int_equal(n, NC_BOOTMAP_SEGS_MAX);
  assert_sane(0, segs, n, fs);
  put(h + 56, NC_BOOTMAP_SEGS_MAX + 1, 2);
  phdr(h + EHDR + NC_BOOTMAP_SEGS_MAX * PHDR, PT_LOAD, 0, 0x800, 0, 0);
  want_proto(h, H, fs);
  /* ... while other header types do not count. */
  put(h + EHDR + NC_BOOTMAP_SEGS_MAX * PHDR, PT_NOTE, 4);
  assert_int_equal(parse_exact(h, H, fs, segs, &n), 0);
  assert_int_equal(n, NC_BOOTMAP_SEGS_MAX);

  /* File sizes near UINT64_MAX: rounding up to a page must not wrap, and
   * segments with offsets and sizes up there stay inside the file. */
  ehdr(h, EHDR, PHDR, 3);
  phdr(h + EHDR, PT_LOAD, 0x1000, 0x1000000, UINT64_MAX, UINT64_MAX);
  phdr(h + EHDR + PHDR, PT_LOAD, UINT64_MAX - 0x1fff, 0x2000000, 0x3000, 0x3000);
  phdr(h + EHDR + 2 * PHDR, PT_LOAD, UINT64_MAX - 0xfff, 0x3000000 - 0x1000, UINT64_MAX,
       UINT64_MAX);
  const uint64_t sizes[] = {UINT64_MAX, UINT64_MAX - 1, UINT64_MAX - PG + 2,
                            UINT64_MAX - PG + 1, UINT64_MAX - 2 * PG + 1, 0, 1,
                            (uint64_t)INT64_MAX};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    n = 99;
    int rc = parse_exact(h, EHDR + 3 * PHDR, sizes[i], segs, &n);
    if (sizes[i] > UINT64_MAX - (PG - 1)) {
      /* No page-rounded size fits in 64 bits: nothing can be mapped. */
      if (rc == 0 && n != 0)
        fail_msg("file size 0x%" PRIx64 ": %zu segments", sizes[i], n);
      continue;
    }
    assert_sane(rc, segs, n, sizes[i]);
  }
  /* The largest page-multiple size: the first segment runs to the end. */
  assert_int_equal(parse_exact(h, EHDR + 3 * PHDR, UINT64_MAX - PG + 1, segs, &n), 0);
  assert_true(n >= 1);
  assert_int_equal(segs[0].off, 0x1000);
  assert_int_equal(segs[0].size, UINT64_MAX - PG + 1 - 0x1000);

  assert_int_equal(nc_bootmap_parse(NULL, H, fs, segs, 1, &n), -EINVAL);
  assert_int_equal(nc_bootmap_parse(h, H, fs, segs, 1, NULL), -EINVAL);
  assert_int_equal(nc_bootmap_parse(h, H, fs, NULL, 1, &n), -EINVAL);
}

/* Random bytes after a valid ELF64 identification: whatever the header
 * says, the result is sane (a cheap, deterministic cousin of the fuzzer,
 * fuzz/fuzz_bootmap.c). */
static uint64_t xorshift(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

static void test_parse_random(void **state) {
  (void)state;
  uint64_t s = 0x2545f4914f6cdd1du;
  struct nc_bootmap_seg segs[NC_BOOTMAP_SEGS_MAX];
  size_t kept_total = 0;
  for (int round = 0; round < 20000; round++) {
    size_t len = EHDR + (size_t)(xorshift(&s) % (20 * PHDR));
    uint8_t *h = malloc(len);
    assert_non_null(h);
    for (size_t i = 0; i < len; i++)
      h[i] = (uint8_t)xorshift(&s);
    uint64_t file_size = xorshift(&s) % 4 == 0 ? UINT64_MAX - xorshift(&s) % 3 * PG - xorshift(&s) % 4
                                               : xorshift(&s) % (1u << 24);
    uint64_t phoff = EHDR + xorshift(&s) % 64, ent = PHDR + xorshift(&s) % 3 * 8;
    unsigned num = 1 + (unsigned)(xorshift(&s) % 20);
    ehdr(h, phoff, (unsigned)ent, num);
    /* Mostly PT_LOAD, mostly page-congruent, offsets mostly in the file. */
    for (uint64_t i = 0; i < num && phoff + (i + 1) * ent <= len; i++) {
      uint8_t *ph = h + phoff + i * ent;
      uint64_t off = xorshift(&s) % 2 ? xorshift(&s) % (file_size / 2 + 1) : xorshift(&s);
      uint64_t paddr = xorshift(&s);
      if (xorshift(&s) % 4)
        paddr = (paddr & ~(uint64_t)(PG - 1)) | (off & (PG - 1));
      if (xorshift(&s) % 4)
        put(ph, PT_LOAD, 4);
      put(ph + 8, off, 8);
      put(ph + 24, paddr, 8);
      if (xorshift(&s) % 2)
        put(ph + 32, xorshift(&s) % (1u << 20), 8);
    }
    size_t n = 99;
    int rc = nc_bootmap_parse(h, len, file_size, segs, NC_BOOTMAP_SEGS_MAX, &n);
    if (file_size > UINT64_MAX - (PG - 1)) {
      if (rc == 0 && n != 0)
        fail_msg("file size 0x%" PRIx64 ": %zu segments", file_size, n);
    } else {
      assert_sane(rc, segs, n, file_size);
      kept_total += n;
    }
    free(h);
  }
  assert_true(kept_total > 1000); /* the generator does reach the interesting paths */
}

/* ---- the real guest kernel ------------------------------------------------ */

#ifndef NC_TEST_GUEST_DIR
#define NC_TEST_GUEST_DIR "build/guest"
#endif

static uint64_t get(const uint8_t *p, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; i--)
    v = v << 8 | p[i];
  return v;
}

static void pread_chunk(int fd, uint64_t file_size, uint64_t off, uint8_t out[PG]) {
  memset(out, 0, PG);
  if (off >= file_size)
    return;
  size_t want = file_size - off < PG ? (size_t)(file_size - off) : PG;
  assert_int_equal(pread(fd, out, want, (off_t)off), (ssize_t)want);
}

/* The guest's vmlinux (scripts/build-guest-image; NC_GUEST_DIR overrides):
 * its program headers, read here independently of bootmap.c, must give
 * the same chunks as the map, and the kernel's entry page (guest-physical
 * 0x1000000 on x86-64) must be the file's bytes at the first PT_LOAD's
 * p_offset. */
static void test_real_vmlinux(void **state) {
  (void)state;
  const char *gd = getenv("NC_GUEST_DIR");
  char path[512];
  snprintf(path, sizeof path, "%s/vmlinux", gd ? gd : NC_TEST_GUEST_DIR);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    print_message("skipped: no guest kernel at %s (make guest builds one)\n", path);
    skip();
  }
  struct stat st;
  assert_int_equal(fstat(fd, &st), 0);
  uint64_t fsz = (uint64_t)st.st_size;
  uint8_t eh[EHDR];
  assert_int_equal(pread(fd, eh, EHDR, 0), EHDR);
  if (memcmp(eh, "\x7f" "ELF\x02\x01", 6) != 0) {
    close(fd);
    print_message("skipped: %s is not an ELF64 LE file (a bzImage?)\n", path);
    skip();
  }
  uint64_t phoff = get(eh + 32, 8), ent = get(eh + 54, 2), num = get(eh + 56, 2);
  assert_true(ent >= PHDR && num > 0 && num < 64 && phoff < fsz);

  struct nc_bootmap *b;
  int rc = nc_bootmap_open(path, &b);
  if (rc != 0)
    fail_msg("%s: nc_bootmap_open: %d (%s)", path, rc, nc_strerror(rc));

  uint8_t got[PG], want[PG], ph[PHDR];
  size_t usable = 0, checked = 0;
  int first_load = 1;
  for (uint64_t i = 0; i < num; i++) {
    assert_int_equal(pread(fd, ph, PHDR, (off_t)(phoff + i * ent)), PHDR);
    uint64_t type = get(ph, 4), off = get(ph + 8, 8), paddr = get(ph + 24, 8),
             filesz = get(ph + 32, 8);
    if (type != PT_LOAD)
      continue;
    if (first_load) {
      first_load = 0;
      /* The brief's check: what sits at the kernel's load address. */
      if (paddr != 0x1000000)
        print_message("note: first PT_LOAD at 0x%" PRIx64 ", not 0x1000000\n", paddr);
      assert_int_equal(off % PG, paddr % PG);
      assert_int_equal(nc_bootmap_page(b, paddr, got), 0);
      pread_chunk(fd, fsz, off - off % PG, want);
      assert_memory_equal(got, want, PG);
    }
    if (filesz == 0 || off % PG != paddr % PG || off >= fsz)
      continue;
    usable++;
    if (filesz > fsz - off)
      filesz = fsz - off;
    /* First, a middle and the last page of each segment. */
    uint64_t start = off - off % PG, pages = (off % PG + filesz + PG - 1) / PG;
    const uint64_t idx[] = {0, pages / 2, pages - 1};
    for (size_t k = 0; k < 3; k++) {
      uint64_t gpa = paddr - paddr % PG + idx[k] * PG;
      rc = nc_bootmap_page(b, gpa + 17, got);
      if (rc != 0)
        fail_msg("gpa 0x%" PRIx64 ": rc %d", gpa, rc);
      pread_chunk(fd, fsz, start + idx[k] * PG, want);
      assert_memory_equal(got, want, PG);
      checked++;
    }
  }
  assert_int_equal(nc_bootmap_count(b), usable);
  assert_true(checked > 0);
  print_message("%s: %zu segments, %zu chunks compared\n", path, usable, checked);
  nc_bootmap_free(b);
  close(fd);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_parse_segments),
      cmocka_unit_test(test_parse_wide_phentsize),
      cmocka_unit_test_setup_teardown(test_open_and_pages, setup, teardown),
      cmocka_unit_test_setup_teardown(test_file_truncated_after_open, setup, teardown),
      cmocka_unit_test_setup_teardown(test_open_rejects, setup, teardown),
      cmocka_unit_test(test_parse_hostile),
      cmocka_unit_test(test_parse_random),
      cmocka_unit_test(test_real_vmlinux),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
