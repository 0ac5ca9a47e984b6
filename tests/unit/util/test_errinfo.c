/* nc_errinfo_set (src/util/errinfo.h): every member is set, long input is
 * truncated and still NUL-terminated, the return code matches the status,
 * and a NULL errinfo is allowed. */
#include "nc_test.h"

#include "util/errinfo.h"

static void test_sets_every_member(void **state) {
  (void)state;
  struct nc_errinfo e;
  memset(&e, 'x', sizeof e);
  int rc = nc_errinfo_set(&e, 400, "invalid_field", "memory", "memory \"%s\" is not a size (%d)",
                          "12X", 7);
  EXPECT_RC(rc, NC_E_INVALID);
  EXPECT_I64(e.status, 400);
  EXPECT_STR(e.code, "invalid_field");
  EXPECT_STR(e.field, "memory");
  EXPECT_STR(e.message, "memory \"12X\" is not a size (7)");
}

static void test_null_field_is_empty(void **state) {
  (void)state;
  struct nc_errinfo e;
  memset(&e, 'x', sizeof e);
  nc_errinfo_set(&e, 404, "not_found", NULL, "nothing");
  EXPECT_STR(e.field, "");
}

static void test_status_to_code(void **state) {
  (void)state;
  static const struct {
    int status;
    int rc;
  } cases[] = {
      {400, NC_E_INVALID}, {404, -ENOENT},       {409, NC_E_CONFLICT}, {413, NC_E_TOOBIG},
      {415, NC_E_INVALID}, {422, NC_E_INVALID},  {500, NC_E_INVALID},  {503, NC_E_UNAVAIL},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    struct nc_errinfo e;
    int rc = nc_errinfo_set(&e, cases[i].status, "c", "f", "m");
    if (rc != cases[i].rc)
      fail_msg("status %d returned %d (%s), want %d (%s)", cases[i].status, rc, nc_strerror(rc),
               cases[i].rc, nc_strerror(cases[i].rc));
    /* Every return is an error: a validator's `return nc_errinfo_set(...)`
     * must never look like success. */
    EXPECT_TRUE(rc < 0);
  }
}

static void test_null_errinfo(void **state) {
  (void)state;
  EXPECT_RC(nc_errinfo_set(NULL, 409, "conflict", "name", "taken %s", "x"), NC_E_CONFLICT);
  EXPECT_RC(nc_errinfo_set(NULL, 404, "not_found", NULL, "gone"), -ENOENT);
}

static void test_truncation_keeps_nul(void **state) {
  (void)state;
  char big[2000];
  memset(big, 'a', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  struct nc_errinfo e;
  memset(&e, 'x', sizeof e);
  nc_errinfo_set(&e, 400, big, big, "%s", big);
  EXPECT_I64(strnlen(e.code, sizeof e.code), sizeof e.code - 1);
  EXPECT_I64(strnlen(e.field, sizeof e.field), sizeof e.field - 1);
  EXPECT_I64(strnlen(e.message, sizeof e.message), sizeof e.message - 1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sets_every_member),
      cmocka_unit_test(test_null_field_is_empty),
      cmocka_unit_test(test_status_to_code),
      cmocka_unit_test(test_null_errinfo),
      cmocka_unit_test(test_truncation_keeps_nul),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
