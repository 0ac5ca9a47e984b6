/* QMP framing and message classification (src/hv/qmp_msg.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "hv/qmp_msg.h"
#include "util/err.h"

static void push_all(struct nc_qmp_framer *f, const char *s) {
  size_t len = strlen(s);
  int took = nc_qmp_framer_push(f, s, len);
  assert_int_equal(took, (int)len);
}

static void expect_line(struct nc_qmp_framer *f, const char *want) {
  const char *line;
  size_t len;
  assert_int_equal(nc_qmp_framer_next(f, &line, &len), 1);
  assert_int_equal(len, strlen(want));
  assert_memory_equal(line, want, len);
}

static void test_framer_splits_lines(void **state) {
  (void)state;
  struct nc_qmp_framer f;
  nc_qmp_framer_init(&f, 0);
  const char *line;
  size_t len;
  push_all(&f, "{\"a\":1}\r\n{\"b\"");
  expect_line(&f, "{\"a\":1}");
  assert_int_equal(nc_qmp_framer_next(&f, &line, &len), 0);
  push_all(&f, ":2}\r");
  assert_int_equal(nc_qmp_framer_next(&f, &line, &len), 0);
  push_all(&f, "\n\r\n\n{\"c\":3}\n");
  expect_line(&f, "{\"b\":2}");
  expect_line(&f, "{\"c\":3}"); /* empty lines skipped, bare \n accepted */
  assert_int_equal(nc_qmp_framer_next(&f, &line, &len), 0);
  nc_qmp_framer_free(&f);
}

static void test_framer_byte_at_a_time(void **state) {
  (void)state;
  struct nc_qmp_framer f;
  nc_qmp_framer_init(&f, 0);
  const char *in = "{\"return\": {}, \"id\": 1}\r\n{\"event\": \"STOP\"}\r\n";
  int lines = 0;
  for (const char *p = in; *p; p++) {
    assert_int_equal(nc_qmp_framer_push(&f, p, 1), 1);
    const char *line;
    size_t len;
    while (nc_qmp_framer_next(&f, &line, &len) == 1)
      lines++;
  }
  assert_int_equal(lines, 2);
  nc_qmp_framer_free(&f);
}

static void test_framer_cap(void **state) {
  (void)state;
  struct nc_qmp_framer f;
  const char *line;
  size_t len;
  /* Exactly at the cap (with \r\n) is fine. */
  nc_qmp_framer_init(&f, 8);
  push_all(&f, "12345678\r\n");
  expect_line(&f, "12345678");
  nc_qmp_framer_free(&f);

  /* One byte over, terminated: too big, and it stays that way. */
  nc_qmp_framer_init(&f, 8);
  push_all(&f, "123456789\n");
  assert_int_equal(nc_qmp_framer_next(&f, &line, &len), NC_E_TOOBIG);
  assert_int_equal(nc_qmp_framer_push(&f, "x\n", 2), NC_E_TOOBIG);
  assert_int_equal(nc_qmp_framer_next(&f, &line, &len), NC_E_TOOBIG);
  nc_qmp_framer_free(&f);

  /* Unterminated and over the cap: detected without waiting for '\n'. */
  nc_qmp_framer_init(&f, 8);
  assert_int_equal(nc_qmp_framer_push(&f, "1234567890", 10), 10);
  assert_int_equal(nc_qmp_framer_next(&f, &line, &len), NC_E_TOOBIG);
  nc_qmp_framer_free(&f);

  /* A full buffer refuses more input rather than growing past the cap. */
  nc_qmp_framer_init(&f, 8);
  assert_int_equal(nc_qmp_framer_push(&f, "aaaaaaaaaaaaaaaaaaaa", 20), 10);
  assert_int_equal(nc_qmp_framer_next(&f, &line, &len), NC_E_TOOBIG);
  nc_qmp_framer_free(&f);
}

static void test_framer_compacts(void **state) {
  (void)state;
  /* Many lines through a small cap: consumed lines must make room. */
  struct nc_qmp_framer f;
  nc_qmp_framer_init(&f, 16);
  for (int i = 0; i < 1000; i++) {
    push_all(&f, "{\"x\":12345}\n");
    expect_line(&f, "{\"x\":12345}");
  }
  nc_qmp_framer_free(&f);
}

static void test_parse_greeting(void **state) {
  (void)state;
  const char *s = "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 2, \"minor\": 0, \"major\": 10}, "
                  "\"package\": \"Debian\"}, \"capabilities\": [\"oob\"]}}";
  struct nc_qmp_msg m;
  assert_int_equal(nc_qmp_msg_parse(s, strlen(s), &m), 0);
  assert_int_equal(m.kind, NC_QMP_MSG_GREETING);
  assert_int_equal(m.ver_major, 10);
  assert_int_equal(m.ver_minor, 0);
  assert_int_equal(m.ver_micro, 2);
  nc_qmp_msg_clear(&m);
}

static void test_parse_return_error_event(void **state) {
  (void)state;
  struct nc_qmp_msg m;
  const char *r = "{\"return\": {\"status\": \"running\", \"running\": true}, \"id\": 7}";
  assert_int_equal(nc_qmp_msg_parse(r, strlen(r), &m), 0);
  assert_int_equal(m.kind, NC_QMP_MSG_RETURN);
  assert_int_equal(json_integer_value(m.id), 7);
  assert_string_equal(json_string_value(json_object_get(m.value, "status")), "running");
  nc_qmp_msg_clear(&m);

  const char *e = "{\"id\": 3, \"error\": {\"class\": \"CommandNotFound\", \"desc\": \"The "
                  "command nope has not been found\"}}";
  assert_int_equal(nc_qmp_msg_parse(e, strlen(e), &m), 0);
  assert_int_equal(m.kind, NC_QMP_MSG_ERROR);
  assert_string_equal(m.err_class, "CommandNotFound");
  assert_string_equal(m.err_desc, "The command nope has not been found");
  nc_qmp_msg_clear(&m);

  const char *ev = "{\"timestamp\": {\"seconds\": 1795821045, \"microseconds\": 542109}, "
                   "\"event\": \"JOB_STATUS_CHANGE\", \"data\": {\"status\": \"running\", "
                   "\"id\": \"s1\"}}";
  assert_int_equal(nc_qmp_msg_parse(ev, strlen(ev), &m), 0);
  assert_int_equal(m.kind, NC_QMP_MSG_EVENT);
  assert_string_equal(m.event, "JOB_STATUS_CHANGE");
  assert_int_equal(m.timestamp_us, 1795821045LL * 1000000 + 542109);
  assert_string_equal(json_string_value(json_object_get(m.value, "id")), "s1");
  assert_null(m.id);
  nc_qmp_msg_clear(&m);
  nc_qmp_msg_clear(&m); /* twice is harmless */
}

static void test_parse_rejects(void **state) {
  (void)state;
  static const char *const bad[] = {
      "",
      "[1,2]",
      "\"QMP\"",
      "{}",
      "{\"foo\": 1}",
      "{\"return\": {}, \"error\": {\"class\": \"x\", \"desc\": \"y\"}}",
      "{\"error\": {\"class\": \"GenericError\"}}",
      "{\"error\": \"nope\"}",
      "{\"event\": 5}",
      "{\"QMP\": []}",
      "{\"return\": {}, \"return\": {}}",
      "{\"return\": {}} trailing",
      "{\"return\": \"\\u0000\"}",
      "{\"return\": {}",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    struct nc_qmp_msg m;
    int rc = nc_qmp_msg_parse(bad[i], strlen(bad[i]), &m);
    if (rc != NC_E_PROTO)
      fail_msg("input %zu '%s': got %d, want NC_E_PROTO (%d)", i, bad[i], rc, NC_E_PROTO);
    assert_null(m.root);
  }
}

static void test_parse_odd_timestamps(void **state) {
  (void)state;
  static const char *const evs[] = {
      "{\"event\": \"X\"}",
      "{\"event\": \"X\", \"timestamp\": {\"seconds\": -1, \"microseconds\": 0}}",
      "{\"event\": \"X\", \"timestamp\": {\"seconds\": 9223372036854775807, \"microseconds\": 0}}",
      "{\"event\": \"X\", \"timestamp\": {\"seconds\": 1, \"microseconds\": 1000000}}",
      "{\"event\": \"X\", \"timestamp\": 5}",
  };
  for (size_t i = 0; i < sizeof evs / sizeof evs[0]; i++) {
    struct nc_qmp_msg m;
    assert_int_equal(nc_qmp_msg_parse(evs[i], strlen(evs[i]), &m), 0);
    assert_int_equal(m.timestamp_us, -1);
    nc_qmp_msg_clear(&m);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_framer_splits_lines),
      cmocka_unit_test(test_framer_byte_at_a_time),
      cmocka_unit_test(test_framer_cap),
      cmocka_unit_test(test_framer_compacts),
      cmocka_unit_test(test_parse_greeting),
      cmocka_unit_test(test_parse_return_error_event),
      cmocka_unit_test(test_parse_rejects),
      cmocka_unit_test(test_parse_odd_timestamps),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
