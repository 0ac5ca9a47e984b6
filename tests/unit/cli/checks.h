/* Assertions and the cmocka fixture shared by the CLI tests that run the
 * CLI in-process (harness.h). Include after <cmocka.h>'s prerequisites;
 * this header includes cmocka itself. */
#ifndef NC_TEST_CLI_CHECKS_H
#define NC_TEST_CLI_CHECKS_H

#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "harness.h"

#define check_contains(hay, needle)                                                             \
  do {                                                                                          \
    const char *h_ = (hay) ? (hay) : "";                                                        \
    if (strstr(h_, (needle)) == NULL)                                                           \
      fail_msg("expected %s to contain \"%s\"; it is:\n%s", #hay, (needle), h_);                \
  } while (0)

/* The harness's last exit status, with its output when it is wrong. */
#define check_rc(h, want)                                                                       \
  do {                                                                                          \
    if ((h)->rc != (want))                                                                      \
      fail_msg("exit status %d, want %d\nstdout:\n%s\nstderr:\n%s", (h)->rc, (want),             \
               (h)->out ? (h)->out : "", (h)->err ? (h)->err : "");                              \
  } while (0)

/* r's body equals the JSON want (compared as JSON); want NULL: no body. */
static inline void check_body(const struct fake_req *r, const char *want) {
  if (want == NULL) {
    if (r->body != NULL)
      fail_msg("%s %s: want no body, got %s", r->method, r->path, r->body);
    return;
  }
  if (r->body == NULL)
    fail_msg("%s %s: want body %s, got none", r->method, r->path, want);
  json_t *a = json_loads(r->body, 0, NULL), *b = json_loads(want, 0, NULL);
  assert_non_null(b);
  if (a == NULL || !json_equal(a, b))
    fail_msg("%s %s: body %s, want %s", r->method, r->path, r->body, want);
  json_decref(a);
  json_decref(b);
}

/* cmocka setup/teardown giving each test a fresh harness in *state. */
static inline int h_setup(void **state) {
  struct harness *h = malloc(sizeof *h);
  if (!h)
    return -1;
  h_init(h);
  *state = h;
  return 0;
}

static inline int h_teardown(void **state) {
  h_free(*state);
  free(*state);
  return 0;
}

#endif
