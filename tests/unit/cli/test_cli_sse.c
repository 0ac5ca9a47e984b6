/* The text/event-stream parser (WHATWG HTML 9.2.6), fed whole and in every
 * split, since the network cuts the stream anywhere. */
#include "cli/sse.h"
#include "util/err.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

struct collect {
  char log[4096];
  size_t len;
  int stop_after; /* stop with -EINTR after this many events; 0 never */
  int n;
};

static int on_event(void *arg, const char *event, const char *data, size_t len) {
  struct collect *c = arg;
  assert_int_equal(strlen(data), len); /* NUL-terminated, no embedded NUL here */
  c->len += (size_t)snprintf(c->log + c->len, sizeof c->log - c->len, "[%s|%s]", event, data);
  c->n++;
  return c->stop_after != 0 && c->n >= c->stop_after ? -EINTR : 0;
}

/* Parses in in pieces of `piece` bytes; returns the feed result. */
static int parse(const char *in, size_t piece, size_t max_line, size_t max_event,
                 struct collect *c) {
  struct nc_cli_sse *p;
  int rc = 0;
  memset(c->log, 0, sizeof c->log);
  c->len = 0;
  c->n = 0;
  assert_int_equal(nc_cli_sse_new(max_line, max_event, on_event, c, &p), 0);
  size_t len = strlen(in);
  for (size_t off = 0; off < len && rc == 0; off += piece)
    rc = nc_cli_sse_feed(p, in + off, len - off < piece ? len - off : piece);
  nc_cli_sse_destroy(p);
  return rc;
}

static void check_all_splits(const char *in, const char *want) {
  struct collect c = {0};
  size_t len = strlen(in);
  for (size_t piece = 1; piece <= len; piece++) {
    assert_int_equal(parse(in, piece, 1024, 1024, &c), 0);
    if (strcmp(c.log, want) != 0)
      fail_msg("pieces of %zu: got %s, want %s", piece, c.log, want);
  }
}

static void test_basic(void **state) {
  check_all_splits("event: vm.state\ndata: {\"a\":1}\n\n", "[vm.state|{\"a\":1}]");
  /* No event name: "message". The type resets after each dispatch. */
  check_all_splits("event: x\ndata: 1\n\ndata: 2\n\n", "[x|1][message|2]");
}

static void test_line_ends(void **state) {
  check_all_splits("event: a\r\ndata: 1\r\n\r\nevent: b\rdata: 2\r\rdata: 3\n\n",
                   "[a|1][b|2][message|3]");
}

static void test_fields(void **state) {
  /* Multi-line data joins with LF; one leading space is stripped, not two;
   * "data" alone is an empty line of data; comments and unknown fields and
   * id/retry are ignored. */
  check_all_splits(": hello\ndata: one\ndata:  two\ndata\nid: 7\nretry: 10\nfoo: bar\n\n",
                   "[message|one\n two\n]");
  /* An event without data is not dispatched. */
  check_all_splits("event: ping\n\nevent: x\ndata:\n\n", "[x|]");
  /* A stream that ends without the blank line drops the partial event. */
  check_all_splits("data: partial\n", "");
  /* A byte order mark at the start is skipped. */
  struct collect c = {0};
  assert_int_equal(parse("\xEF\xBB\xBF" "data: x\n\n", 64, 64, 64, &c), 0);
  assert_string_equal(c.log, "[message|x]");
}

static void test_caps(void **state) {
  struct collect c = {0};
  /* A line longer than the cap. */
  assert_int_equal(parse("data: 0123456789abcdef\n\n", 4, 16, 1024, &c), NC_E_TOOBIG);
  /* An event whose data lines add up past the cap. */
  assert_int_equal(parse("data: 0123456\ndata: 0123456\n\n", 3, 64, 12, &c), NC_E_TOOBIG);
  assert_int_equal(c.n, 0);
  /* Exactly at the cap is fine: 7 bytes + LF. */
  assert_int_equal(parse("data: 0123456\n\n", 3, 64, 8, &c), 0);
  assert_string_equal(c.log, "[message|0123456]");
}

static void test_callback_stops(void **state) {
  struct collect c = {.stop_after = 1};
  assert_int_equal(parse("data: 1\n\ndata: 2\n\n", 100, 64, 64, &c), -EINTR);
  assert_int_equal(c.n, 1);
}

static int count_event(void *arg, const char *event, const char *data, size_t len) {
  (void)event;
  assert_true(len <= 256); /* never more than the event cap */
  assert_int_equal(data[len], '\0');
  (*(int *)arg)++;
  return 0;
}

/* Random bytes drawn mostly from the protocol's own alphabet, in random
 * pieces: the parser must never read or write out of bounds (run under
 * ASan) and must fail only with NC_E_TOOBIG. A fixed seed keeps it
 * deterministic; a libFuzzer target would belong in fuzz/. */
static void test_random_input(void **state) {
  static const char alphabet[] = "data:event: \r\n\n:x{}";
  uint32_t seed = 12345;
  int total_events = 0, total_toobig = 0;
  for (int round = 0; round < 2000; round++) {
    struct nc_cli_sse *p;
    int events = 0, rc = 0;
    char buf[512];
    assert_int_equal(nc_cli_sse_new(64, 256, count_event, &events, &p), 0);
    for (int piece = 0; piece < 8 && rc == 0; piece++) {
      seed = seed * 1103515245u + 12345u;
      size_t len = (seed >> 16) % sizeof buf;
      for (size_t i = 0; i < len; i++) {
        seed = seed * 1103515245u + 12345u;
        unsigned r = seed >> 16;
        buf[i] = (r & 7) == 0 ? (char)(r >> 3) : alphabet[(r >> 3) % (sizeof alphabet - 1)];
      }
      rc = nc_cli_sse_feed(p, buf, len);
    }
    if (rc != 0 && rc != NC_E_TOOBIG)
      fail_msg("round %d: feed returned %d", round, rc);
    total_events += events;
    total_toobig += rc == NC_E_TOOBIG;
    nc_cli_sse_destroy(p);
  }
  /* The input must exercise both outcomes, or the test proves nothing. */
  if (total_events == 0 || total_toobig == 0)
    fail_msg("events %d, too-big rounds %d: the generator misses a path", total_events,
             total_toobig);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_basic),  cmocka_unit_test(test_line_ends),
      cmocka_unit_test(test_fields), cmocka_unit_test(test_caps),
      cmocka_unit_test(test_callback_stops), cmocka_unit_test(test_random_input),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
