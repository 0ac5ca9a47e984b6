/* <data_dir>/cluster.json (src/cluster/bootstrap.c, nc_cluster_boot_load):
 * a good file gives the etcd endpoints; a missing one means single node;
 * damaged, hostile or oversized ones are refused with -EINVAL, and an
 * oversized one is not read into memory at all. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "cluster/bootstrap.h"
#include "nc_test.h"

static char dir[128], path[160];

static int setup(void **state) {
  (void)state;
  if (nct_mkdtemp(dir, sizeof dir, "boot") != 0)
    return -1;
  snprintf(path, sizeof path, "%s/cluster.json", dir);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  nct_rmtree(dir);
  return 0;
}

/* The file is text, after pad spaces (whitespace is JSON too). */
static void put(const char *text, size_t pad) {
  char *buf = malloc(pad + strlen(text) + 1);
  assert_non_null(buf);
  memset(buf, ' ', pad);
  strcpy(buf + pad, text);
  assert_int_equal(nct_write_file(path, buf), 0);
  free(buf);
}

static void test_boot_file(void **state) {
  (void)state;
  struct nc_cluster_boot b;
  assert_int_equal(nc_cluster_boot_load(dir, &b), -ENOENT);
  put("{\"endpoints\": [\"http://10.0.0.1:2379\", \"http://10.0.0.2:2379\"],"
      " \"control_plane\": false}",
      0);
  assert_int_equal(nc_cluster_boot_load(dir, &b), 0);
  assert_string_equal(b.store_uri, "etcd:http://10.0.0.1:2379,http://10.0.0.2:2379");
  assert_false(b.control_plane);
  /* Whitespace is JSON too: the same file, padded past 64 KiB, is refused
   * for its size, before it is parsed. */
  put("{\"endpoints\": [\"http://10.0.0.1:2379\"]}", 70 * 1024);
  assert_int_equal(nc_cluster_boot_load(dir, &b), -EINVAL);
  put("{\"endpoints\": [\"http://10.0.0.1:2379\"]}", 1024);
  assert_int_equal(nc_cluster_boot_load(dir, &b), 0);
  put("{\"endpoints\": [\"file:///etc/passwd\"]}", 0);
  assert_int_equal(nc_cluster_boot_load(dir, &b), -EINVAL);
  put("{\"endpoints\": []}", 0);
  assert_int_equal(nc_cluster_boot_load(dir, &b), -EINVAL);
  put("{\"endpoints\": [", 0);
  assert_int_equal(nc_cluster_boot_load(dir, &b), -EINVAL);
  unlink(path);
  assert_int_equal(mkdir(path, 0700), 0); /* not a regular file */
  assert_int_equal(nc_cluster_boot_load(dir, &b), -EINVAL);
  rmdir(path);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_boot_file, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
