/* libFuzzer target for the boot map's parser (nc_bootmap_parse in
 * src/dwcp/bootmap.c), which reads the ELF and program headers of a kernel
 * file the operator names.
 *
 * Input: u64 LE file size | header bytes (the file's first bytes, as
 * nc_bootmap_open reads them). The header bytes are copied into an exactly
 * sized buffer so ASan sees any read past them. Whatever the parser
 * accepts must be a usable map: every segment has a page-aligned gpa and
 * offset, a size that is a positive multiple of the page, and lies inside
 * the file rounded up to a page. A smaller cap must give the same first
 * segments. A violation prints the values and aborts.
 * Build: cmake -DNC_FUZZ=ON with clang (make fuzz); the ordinary test run
 * replays corpus/bootmap/ (tests/CMakeLists.txt). */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dwcp/bootmap.h"
#include "util/err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define PG ((uint64_t)NC_BOOTMAP_PAGE)

static void fail(const char *what, size_t i, const struct nc_bootmap_seg *s, uint64_t file_size) {
  fprintf(stderr,
          "fuzz_bootmap: %s: segment %zu gpa 0x%" PRIx64 " off 0x%" PRIx64 " size 0x%" PRIx64
          ", file size 0x%" PRIx64 "\n",
          what, i, s->gpa, s->off, s->size, file_size);
  abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 8)
    return 0;
  uint64_t file_size = 0;
  for (int i = 7; i >= 0; i--)
    file_size = file_size << 8 | data[i];
  size_t len = size - 8;
  uint8_t *hdr = malloc(len ? len : 1);
  if (!hdr)
    abort();
  memcpy(hdr, data + 8, len);

  struct nc_bootmap_seg segs[NC_BOOTMAP_SEGS_MAX + 1];
  memset(segs, 0xa5, sizeof segs);
  size_t n = 12345;
  int rc = nc_bootmap_parse(hdr, len, file_size, segs, NC_BOOTMAP_SEGS_MAX, &n);
  if (rc != 0 && rc != NC_E_PROTO) {
    fprintf(stderr, "fuzz_bootmap: rc %d, want 0 or NC_E_PROTO (%d)\n", rc, NC_E_PROTO);
    abort();
  }
  if ((rc != 0 && n != 0) || n > NC_BOOTMAP_SEGS_MAX) {
    fprintf(stderr, "fuzz_bootmap: rc %d with n %zu\n", rc, n);
    abort();
  }
  /* The file rounded up to a page; a size that does not round in 64 bits
   * can hold no segment. */
  uint64_t end = file_size > UINT64_MAX - (PG - 1) ? 0 : (file_size + PG - 1) / PG * PG;
  for (size_t i = 0; i < n; i++) {
    const struct nc_bootmap_seg *s = &segs[i];
    if (s->gpa % PG || s->off % PG)
      fail("gpa or offset not page-aligned", i, s, file_size);
    if (s->size == 0 || s->size % PG)
      fail("size not a positive multiple of the page", i, s, file_size);
    if (s->off > end || s->size > end - s->off)
      fail("past the end of the file", i, s, file_size);
  }
  if (segs[NC_BOOTMAP_SEGS_MAX].gpa != 0xa5a5a5a5a5a5a5a5u)
    fail("written past cap", NC_BOOTMAP_SEGS_MAX, &segs[NC_BOOTMAP_SEGS_MAX], file_size);

  /* cap 1: the same answer, cut to one segment. */
  struct nc_bootmap_seg one[2];
  memset(one, 0xa5, sizeof one);
  size_t n1 = 12345;
  int rc1 = nc_bootmap_parse(hdr, len, file_size, one, 1, &n1);
  if (rc1 != rc || n1 != (n < 1 ? n : 1) ||
      (n1 == 1 && memcmp(&one[0], &segs[0], sizeof one[0]) != 0) ||
      one[1].gpa != 0xa5a5a5a5a5a5a5a5u) {
    fprintf(stderr, "fuzz_bootmap: cap 1 gives rc %d n %zu, cap %d gave rc %d n %zu\n", rc1, n1,
            NC_BOOTMAP_SEGS_MAX, rc, n);
    abort();
  }
  free(hdr);
  return 0;
}
