/* The capped network buffer (util/capbuf.h): it grows, stays
 * NUL-terminated, and refuses the write that would pass its cap without
 * keeping any of it. */
#include "nc_test.h"

#include "util/capbuf.h"

static void test_grows_and_terminates(void **state) {
  (void)state;
  struct nc_capbuf b = {.max = 1 << 20};
  char chunk[3000];
  memset(chunk, 'a', sizeof chunk);
  for (int i = 0; i < 10; i++)
    EXPECT_U64(nc_capbuf_write(chunk, 1, sizeof chunk, &b), sizeof chunk);
  EXPECT_U64(b.len, 30000);
  EXPECT_TRUE(b.cap > b.len && b.p[b.len] == '\0');
  EXPECT_TRUE(!b.toobig);
  free(b.p);
}

static void test_cap(void **state) {
  (void)state;
  struct nc_capbuf b = {.max = 10};
  EXPECT_U64(nc_capbuf_write("0123456789", 1, 10, &b), 10); /* exactly the cap */
  EXPECT_STR(b.p, "0123456789");
  EXPECT_U64(nc_capbuf_write("x", 1, 1, &b), 0); /* one past: refused */
  EXPECT_TRUE(b.toobig);
  EXPECT_U64(b.len, 10);
  EXPECT_TRUE(b.cap <= 11);
  free(b.p);
  struct nc_capbuf o = {.max = 100};
  EXPECT_U64(nc_capbuf_write("x", (size_t)-1, 2, &o), 0); /* size * nmemb overflows */
  EXPECT_TRUE(o.toobig && o.len == 0);
  free(o.p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_grows_and_terminates),
      cmocka_unit_test(test_cap),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
