/* nc_logcap (src/util/logcap.c): a log another process appends to keeps
 * its newest half in path.1 once it grows past the cap, and the writer's
 * next appends start the file again, without a hole. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "nc_test.h"
#include "util/logcap.h"

static char dir[128], path[160], old[180];

static int setup(void **state) {
  (void)state;
  if (nct_mkdtemp(dir, sizeof dir, "logcap") != 0)
    return -1;
  snprintf(path, sizeof path, "%s/serial.log", dir);
  snprintf(old, sizeof old, "%s.1", path);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  nct_rmtree(dir);
  return 0;
}

static off_t size_of(const char *p) {
  struct stat st;
  return stat(p, &st) == 0 ? st.st_size : -1;
}

static void append(int fd, char c, size_t n) {
  char buf[256];
  memset(buf, c, sizeof buf);
  while (n > 0) {
    size_t k = n < sizeof buf ? n : sizeof buf;
    assert_int_equal(write(fd, buf, k), (ssize_t)k);
    n -= k;
  }
}

static void test_rotates_and_writer_restarts(void **state) {
  (void)state;
  /* The writer, as QEMU's logappend=on opens it. */
  int w = open(path, O_WRONLY | O_CREAT | O_APPEND, 0640);
  assert_true(w >= 0);
  append(w, 'a', 600);
  assert_int_equal(nc_logcap(path, 1000), 0); /* under the cap: untouched */
  assert_int_equal(size_of(path), 600);
  assert_int_equal(size_of(old), -1);
  append(w, 'b', 600);
  assert_int_equal(nc_logcap(path, 1000), 0);
  assert_int_equal(size_of(path), 0);
  assert_int_equal(size_of(old), 500); /* the newest half of the cap */
  char got[600];
  int r = open(old, O_RDONLY);
  assert_int_equal(read(r, got, sizeof got), 500);
  close(r);
  for (int i = 0; i < 500; i++)
    assert_int_equal(got[i], 'b');
  append(w, 'c', 10); /* lands at the start: no hole */
  assert_int_equal(size_of(path), 10);
  r = open(path, O_RDONLY);
  assert_int_equal(read(r, got, sizeof got), 10);
  close(r);
  assert_memory_equal(got, "cccccccccc", 10);
  /* Again: path.1 is replaced by the newer tail. */
  append(w, 'd', 2000);
  assert_int_equal(nc_logcap(path, 1000), 0);
  assert_int_equal(size_of(old), 500);
  r = open(old, O_RDONLY);
  assert_int_equal(read(r, got, 1), 1);
  close(r);
  assert_int_equal(got[0], 'd');
  close(w);
}

static void test_bad_input(void **state) {
  (void)state;
  assert_int_equal(nc_logcap(path, 1000), 0); /* missing: nothing to do */
  assert_int_equal(nc_logcap(NULL, 1000), -EINVAL);
  assert_int_equal(nc_logcap(path, 1), -EINVAL);
  assert_int_equal(nc_logcap(dir, 2), 0); /* not a regular file: left alone */
  assert_int_equal(mkdir(old, 0700), 0); /* path.1 cannot be replaced */
  int w = open(path, O_WRONLY | O_CREAT | O_APPEND, 0640);
  append(w, 'x', 100);
  close(w);
  assert_true(nc_logcap(path, 10) < 0);
  assert_int_equal(size_of(path), 100); /* nothing lost */
  rmdir(old);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_rotates_and_writer_restarts, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bad_input, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
