/* What etcd_member.h promises without a running etcd: config checks, the
 * errors an operator sees (missing etcd, no saved member, unreachable
 * cluster, an etcd that dies while starting), and the saved member file.
 * The real-etcd behaviour is test_etcd_member_e2e.c. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cluster/etcd_member.h"
#include "nc_test.h"

struct fixture {
  char dir[128];
  char member_dir[192];
};

static int setup(void **state) {
  struct fixture *f = calloc(1, sizeof *f);
  if (!f || nct_mkdtemp(f->dir, sizeof f->dir, "etcdm-unit") < 0)
    return -1;
  snprintf(f->member_dir, sizeof f->member_dir, "%s/etcd", f->dir);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  struct fixture *f = *state;
  nct_rmtree(f->dir);
  free(f);
  return 0;
}

static struct nc_etcd_member_config good_config(const struct fixture *f) {
  struct nc_etcd_member_config c = {
      .data_dir = f->member_dir,
      .name = "n1",
      .peer_url = "http://127.0.0.1:1",
      .client_url = "http://127.0.0.1:2",
      .state = NC_ETCD_STATE_NEW,
      .start_timeout_ms = 2000,
  };
  return c;
}

static void expect_invalid(struct nc_etcd_member_config c, const char *field) {
  struct nc_etcd_member *m = (struct nc_etcd_member *)&c; /* must be reset */
  struct nc_errinfo e = {0};
  EXPECT_RC(nc_etcd_member_start(&c, &m, &e), -EINVAL);
  EXPECT_TRUE(m == NULL);
  EXPECT_STR(e.field, field);
  EXPECT_I64(e.status, 400);
}

static void test_config_checks(void **state) {
  struct fixture *f = *state;
  struct nc_etcd_member_config c = good_config(f);
  c.etcd_path = "/bin/true"; /* never reached: every config below is refused */
  c.name = "";
  expect_invalid(c, "name");
  c.name = "has space";
  expect_invalid(c, "name");
  char longname[NC_ETCD_MEMBER_NAME_MAX + 2];
  memset(longname, 'a', sizeof longname - 1);
  longname[sizeof longname - 1] = '\0';
  c.name = longname;
  expect_invalid(c, "name");
  c = good_config(f);
  c.etcd_path = "/bin/true";
  static const char *const bad_urls[] = {
      "127.0.0.1:2380",         "https://127.0.0.1:2380", "http://127.0.0.1",
      "http://127.0.0.1:0",     "http://127.0.0.1:2380/", "http://:2380",
      "http://127.0.0.1:99999", "http://a b:1",
  };
  for (size_t i = 0; i < sizeof bad_urls / sizeof *bad_urls; i++) {
    c.peer_url = bad_urls[i];
    expect_invalid(c, "peer_url");
  }
  c = good_config(f);
  c.etcd_path = "/bin/true";
  c.client_url = NULL;
  expect_invalid(c, "client_url");
  c = good_config(f);
  c.etcd_path = "/bin/true";
  c.initial_cluster = "n2=http://127.0.0.1:3"; /* does not list us */
  expect_invalid(c, "initial_cluster");
  c.initial_cluster = "n1=http://127.0.0.1:1,";
  expect_invalid(c, "initial_cluster");
  c.initial_cluster = "n1=http://127.0.0.1:10"; /* a prefix of ours is not ours */
  expect_invalid(c, "initial_cluster");
  c.initial_cluster = NULL;
  c.state = 0;
  expect_invalid(c, "state");
  c.state = NC_ETCD_STATE_NEW;
  c.cluster_token = "a/b";
  expect_invalid(c, "cluster_token");
  c.cluster_token = NULL;
  c.data_dir = NULL;
  expect_invalid(c, "data_dir");
}

static void test_missing_etcd(void **state) {
  struct fixture *f = *state;
  struct nc_etcd_member_config c = good_config(f);
  c.etcd_path = "nc-no-such-etcd-binary";
  struct nc_etcd_member *m = NULL;
  struct nc_errinfo e = {0};
  EXPECT_RC(nc_etcd_member_start(&c, &m, &e), -ENOENT);
  EXPECT_TRUE(m == NULL);
  EXPECT_CONTAINS(e.message, "nc-no-such-etcd-binary");
  EXPECT_CONTAINS(e.message, "install etcd-server");
  EXPECT_STR(e.field, "etcd_path");
}

static void test_no_saved_member(void **state) {
  struct fixture *f = *state;
  EXPECT_TRUE(!nc_etcd_member_configured(f->member_dir));
  struct nc_etcd_member_config c = {.data_dir = f->member_dir, .etcd_path = "/bin/true"};
  struct nc_etcd_member *m = NULL;
  struct nc_errinfo e = {0};
  EXPECT_RC(nc_etcd_member_start(&c, &m, &e), -ENOENT);
  EXPECT_CONTAINS(e.message, "member.json");
  EXPECT_CONTAINS(e.message, "novacron cluster join");

  /* A damaged member file is an error naming it, never a guess. */
  char path[256];
  snprintf(path, sizeof path, "%s/member.json", f->member_dir);
  EXPECT_RC(nct_write_file(path, "{\"version\":1,\"name\":\"n1\"}"), 0);
  EXPECT_TRUE(nc_etcd_member_configured(f->member_dir));
  EXPECT_RC(nc_etcd_member_start(&c, &m, &e), NC_E_PROTO);
  EXPECT_CONTAINS(e.message, path);
}

/* An etcd that dies at once: start says so, quoting its log, and the
 * saved config survives for the next attempt. */
static void test_etcd_dies_while_starting(void **state) {
  struct fixture *f = *state;
  char fake[256];
  snprintf(fake, sizeof fake, "%s/fake-etcd", f->dir);
  EXPECT_RC(nct_write_file(fake, "#!/bin/sh\necho \"fake etcd: bad flag $2\" >&2\nexit 1\n"), 0);
  EXPECT_I64(chmod(fake, 0755), 0);
  struct nc_etcd_member_config c = good_config(f);
  c.etcd_path = fake;
  c.start_timeout_ms = 20000;
  struct nc_etcd_member *m = NULL;
  struct nc_errinfo e = {0};
  int64_t t0 = nct_now_ms();
  EXPECT_RC(nc_etcd_member_start(&c, &m, &e), -ECHILD);
  EXPECT_TRUE(nct_now_ms() - t0 < 15000); /* did not wait for the deadline */
  EXPECT_TRUE(m == NULL);
  EXPECT_CONTAINS(e.message, "fake etcd: bad flag");
  EXPECT_CONTAINS(e.message, "etcd.log");
  EXPECT_TRUE(nc_etcd_member_configured(f->member_dir));
  char path[256];
  snprintf(path, sizeof path, "%s/member.json", f->member_dir);
  char *saved = nct_read_file(path);
  EXPECT_CONTAINS(saved, "\"initial_cluster\": \"n1=http://127.0.0.1:1\"");
  EXPECT_CONTAINS(saved, "\"initial_cluster_state\": \"new\"");
  free(saved);
  snprintf(path, sizeof path, "%s/etcd.pid", f->member_dir);
  EXPECT_TRUE(access(path, F_OK) != 0); /* no pid file left behind */
  struct stat st;
  EXPECT_I64(stat(f->member_dir, &st), 0);
  EXPECT_I64(st.st_mode & 0777, 0700);

  /* Started again from the saved file alone: the same failure. */
  struct nc_etcd_member_config again = {
      .data_dir = f->member_dir, .etcd_path = fake, .start_timeout_ms = 20000};
  EXPECT_RC(nc_etcd_member_start(&again, &m, &e), -ECHILD);
  /* The previous run's log is kept. */
  snprintf(path, sizeof path, "%s/etcd.log.1", f->member_dir);
  char *old = nct_read_file(path);
  EXPECT_CONTAINS(old, "fake etcd");
  free(old);
}

static void test_membership_errors(void **state) {
  char *ic = (char *)state;
  struct nc_errinfo e = {0};
  /* Nobody listens on port 1. */
  EXPECT_RC(nc_etcd_member_add("http://127.0.0.1:1", "n2", "http://127.0.0.1:3", &ic, &e),
            -ECONNREFUSED);
  EXPECT_TRUE(ic == NULL);
  EXPECT_CONTAINS(e.message, "no etcd member answers");
  EXPECT_I64(e.status, 503);
  EXPECT_RC(nc_etcd_member_add("127.0.0.1:1", "n2", "http://127.0.0.1:3", &ic, &e), -EINVAL);
  EXPECT_STR(e.field, "endpoints");
  EXPECT_RC(nc_etcd_member_add("http://127.0.0.1:1", "n 2", "http://127.0.0.1:3", &ic, &e),
            -EINVAL);
  EXPECT_STR(e.field, "name");
  EXPECT_RC(nc_etcd_member_add("http://127.0.0.1:1", "n2", "http://127.0.0.1", &ic, &e), -EINVAL);
  EXPECT_STR(e.field, "peer_url");
  /* One endpoint too many. */
  char many[4096] = "";
  for (int i = 0; i <= NC_ETCD_MEMBER_ENDPOINTS_MAX; i++)
    snprintf(many + strlen(many), sizeof many - strlen(many), "%shttp://127.0.0.1:%d", i ? "," : "",
             1 + i);
  EXPECT_RC(nc_etcd_member_remove(many, "n2", &e), -EINVAL);
  EXPECT_RC(nc_etcd_member_remove("http://127.0.0.1:1", "", &e), -EINVAL);
  EXPECT_RC(nc_etcd_member_promote("http://127.0.0.1:1", "http://127.0.0.1:3", 60000, &e),
            -ECONNREFUSED); /* at once: a wrong address does not get better */
  EXPECT_CONTAINS(e.message, "no etcd member answers");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_config_checks, setup, teardown),
      cmocka_unit_test_setup_teardown(test_missing_etcd, setup, teardown),
      cmocka_unit_test_setup_teardown(test_no_saved_member, setup, teardown),
      cmocka_unit_test_setup_teardown(test_etcd_dies_while_starting, setup, teardown),
      cmocka_unit_test(test_membership_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
