/* libFuzzer target for the QEMU precopy stream parser (src/dwcp/qstream.c).
 *
 * Input: one control byte, then the stream. Control bit 7 prepends a valid
 * file header (QEVM, version 3) so mutations reach the records instead of
 * dying on the magic; bits 0-6 seed the split of the stream into feeds
 * (some one byte at a time). The oracle is the codec's contract, not just
 * "no crash": the OPAQUE and PAGE segments must rebuild the input byte for
 * byte, the counters must add up, every page must name a known block at a
 * page-aligned offset, and a stream the parser rejects (NC_E_PROTO, only
 * for a bad magic) must have produced no output at all.
 *
 * corpus/qstream/ holds hand-built streams covering the record types and
 * variants the parser knows (the same shapes as tests/unit/qstream's
 * synthetic ones), and real QEMU 10.0 and 7.2 streams from
 * tests/data/qstream cut short: the head (file header, configuration,
 * block table, first pages), and the head spliced to the real RAM END and
 * device-state tail with its VMDESCRIPTION. Build: make fuzz (clang,
 * -DNC_FUZZ=ON); the ordinary test run replays the corpus. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dwcp/qstream.h"
#include "util/err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                           \
  do {                                                                                        \
    if (!(cond))                                                                              \
      __builtin_trap();                                                                       \
  } while (0)

struct rebuild {
  const uint8_t *want;
  size_t len, emitted;
  uint64_t pages;
  const struct nc_qs_parser *p;
};

static int on_opaque(void *data, const uint8_t *b, size_t n) {
  struct rebuild *r = data;
  CHECK(n > 0);
  CHECK(r->emitted + n <= r->len);
  CHECK(memcmp(r->want + r->emitted, b, n) == 0);
  r->emitted += n;
  return 0;
}

static int on_page(void *data, uint32_t block, uint64_t offset, const uint8_t page[NC_QS_PAGE_SIZE]) {
  struct rebuild *r = data;
  const char *name = nc_qs_block_name(r->p, block);
  CHECK(name != NULL);
  CHECK(strlen(name) < 256);
  CHECK(offset % NC_QS_PAGE_SIZE == 0);
  r->pages++;
  return on_opaque(data, page, NC_QS_PAGE_SIZE);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  static const uint8_t header[8] = {'Q', 'E', 'V', 'M', 0, 0, 0, 3};
  uint8_t ctl = data[0];
  size_t hdr = (ctl & 0x80) ? sizeof header : 0;
  size_t len = hdr + size - 1;
  uint8_t *in = malloc(len ? len : 1);
  if (!in)
    return 0;
  memcpy(in, header, hdr);
  memcpy(in + hdr, data + 1, size - 1);

  struct rebuild r = {.want = in, .len = len};
  struct nc_qs_sink sink = {.data = &r, .opaque = on_opaque, .page = on_page};
  struct nc_qs_parser *p = NULL;
  if (nc_qs_parser_new(&sink, &p) != 0) {
    free(in);
    return 0;
  }
  r.p = p;

  uint32_t s = (uint32_t)(ctl & 0x7f) * 2654435761u + 1;
  size_t off = 0;
  int rc = 0;
  while (off < len && rc == 0) {
    s ^= s << 13;
    s ^= s >> 17;
    s ^= s << 5;
    size_t n = (ctl & 0x7f) == 0 ? len : (s & 1) ? 1 + (s >> 8) % 8 : 1 + (s >> 8) % 6000;
    if (n > len - off)
      n = len - off;
    rc = nc_qs_feed(p, in + off, n);
    off += n;
  }
  if (rc == 0)
    rc = nc_qs_finish(p);

  struct nc_qs_stats st;
  nc_qs_stats(p, &st);
  const char *reason = nc_qs_passthrough_reason(p);
  CHECK(reason != NULL && strlen(reason) < 192);
  CHECK(st.passthrough == (reason[0] != '\0'));
  if (rc == NC_E_PROTO) {
    CHECK(r.emitted == 0);
    CHECK(len < 4 || memcmp(in, "QEVM", 4) != 0);
  } else {
    CHECK(rc == 0);
    CHECK(r.emitted == len);
    CHECK(st.bytes_in == len);
    CHECK(st.pages == r.pages);
    CHECK(st.opaque_bytes + st.pages * NC_QS_PAGE_SIZE == len);
    CHECK(!st.eof || !st.passthrough);
    CHECK(!st.ram_done || st.passes >= 2);
  }
  nc_qs_parser_free(p);
  free(in);
  return 0;
}
