/* The etcd member against the real etcd (Debian etcd-server) on loopback:
 * a 1-member cluster grows to three through member_add + start (existing)
 * + promote, replicates a write, survives a kill -9 of one member's etcd
 * (the supervisor restarts it), is adopted again after its supervisor
 * stops without killing it, and a join that crashed after the add is
 * retried idempotently. Exits 77 (skipped) when etcd is not installed.
 *
 * The steps share one cluster and run in order; after a failed step the
 * later ones are skipped. Every wait is bounded by a generous deadline
 * (the machine is a loaded 2-core box); no sleep is an assertion. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

#include "cluster/etcd_member.h"
#include "nc_test.h"
#include "store/store.h"

#define NMEMBERS 4
#define WAIT_MS 30000

struct world {
  char dir[128];
  char mdir[NMEMBERS][192];
  char name[NMEMBERS][8];
  char peer[NMEMBERS][64];
  char client[NMEMBERS][64];
  struct nc_etcd_member *m[NMEMBERS];
  bool broken; /* a step failed: the rest cannot run */
  int64_t t0_ms;
};

static struct world W;

/* Ports nobody listens on now: bound all at once to port 0, then freed. */
static int free_ports(int *ports, int n) {
  int fds[2 * NMEMBERS];
  int rc = 0;
  for (int i = 0; i < n; i++) {
    fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (fds[i] < 0 || bind(fds[i], (struct sockaddr *)&a, sizeof a) < 0 ||
        getsockname(fds[i], (struct sockaddr *)&a, &len) < 0)
      rc = -errno;
    ports[i] = ntohs(a.sin_port);
  }
  for (int i = 0; i < n; i++)
    if (fds[i] >= 0)
      close(fds[i]);
  return rc;
}

static int group_setup(void **state) {
  if (system("command -v etcd >/dev/null 2>&1") != 0) {
    printf("SKIP: etcd is not installed (apt-get install etcd-server)\n");
    exit(77);
  }
  if (nct_mkdtemp(W.dir, sizeof W.dir, "etcdm") < 0)
    return -1;
  int ports[2 * NMEMBERS];
  if (free_ports(ports, 2 * NMEMBERS) < 0)
    return -1;
  for (int i = 0; i < NMEMBERS; i++) {
    snprintf(W.mdir[i], sizeof W.mdir[i], "%s/n%d", W.dir, i + 1);
    snprintf(W.name[i], sizeof W.name[i], "n%d", i + 1);
    snprintf(W.client[i], sizeof W.client[i], "http://127.0.0.1:%d", ports[2 * i]);
    snprintf(W.peer[i], sizeof W.peer[i], "http://127.0.0.1:%d", ports[2 * i + 1]);
  }
  W.t0_ms = nct_now_ms();
  return 0;
}

/* Kills whatever etcd a member directory's pid file names, if it is ours
 * (its command line holds the directory): the test's cleanup whatever
 * state a failed step left. */
static void kill_leftover(const char *mdir) {
  char path[256], buf[64];
  snprintf(path, sizeof path, "%s/etcd.pid", mdir);
  FILE *fp = fopen(path, "r");
  if (!fp)
    return;
  int pid = 0;
  if (fgets(buf, sizeof buf, fp))
    pid = atoi(buf);
  fclose(fp);
  if (pid <= 1)
    return;
  snprintf(path, sizeof path, "/proc/%d/cmdline", pid);
  char *cmd = nct_read_file(path);
  bool ours = false;
  for (size_t off = 0; cmd && cmd[off];) { /* NUL-separated arguments */
    if (strstr(cmd + off, mdir))
      ours = true;
    off += strlen(cmd + off) + 1;
  }
  free(cmd);
  if (ours)
    kill(pid, SIGKILL);
}

static int group_teardown(void **state) {
  for (int i = 0; i < NMEMBERS; i++) {
    nc_etcd_member_stop(W.m[i], true);
    W.m[i] = NULL;
  }
  for (int i = 0; i < NMEMBERS; i++)
    kill_leftover(W.mdir[i]);
  printf("# etcd member e2e: %.1f s\n", (double)(nct_now_ms() - W.t0_ms) / 1000.0);
  nct_rmtree(W.dir);
  return 0;
}

static void step(void) {
  if (W.broken)
    skip();
  W.broken = true; /* cleared by step_done */
}
static void step_done(void) { W.broken = false; }

static struct nc_etcd_member_config config(int i, enum nc_etcd_state st, const char *ic) {
  struct nc_etcd_member_config c = {
      .data_dir = W.mdir[i],
      .name = W.name[i],
      .peer_url = W.peer[i],
      .client_url = W.client[i],
      .initial_cluster = ic,
      .state = st,
      .cluster_token = "nc-test",
      .start_timeout_ms = WAIT_MS,
      .stop_timeout_ms = 5000,
      .backoff_min_ms = 200,
      .backoff_max_ms = 2000,
  };
  return c;
}

static void start_member(int i, enum nc_etcd_state st, const char *ic) {
  struct nc_etcd_member_config c = config(i, st, ic);
  struct nc_errinfo e = {0};
  int rc = nc_etcd_member_start(&c, &W.m[i], &e);
  if (rc != 0)
    fail_msg("start %s: %d (%s): %s", W.name[i], rc, nc_strerror(rc), e.message);
}

/* The members as etcd lists them, from endpoint ep: "name:learner|voter"
 * joined with spaces, sorted as etcd sorts them (by id). */
static size_t on_body(char *p, size_t sz, size_t n, void *ud) {
  json_t **j = ud;
  json_decref(*j);
  *j = json_loadb(p, sz * n, 0, NULL); /* member lists are one small write */
  return sz * n;
}

static json_t *member_list(const char *ep) {
  char url[128];
  snprintf(url, sizeof url, "%s/v3/cluster/member/list", ep);
  CURL *c = curl_easy_init();
  json_t *j = NULL;
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, "{}");
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 5000L);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &j);
  CURLcode cc = curl_easy_perform(c);
  curl_easy_cleanup(c);
  if (cc != CURLE_OK)
    fail_msg("member list from %s: %s", ep, curl_easy_strerror(cc));
  return j;
}

/* Counts members with peer URL peer (or all when NULL) and voters. */
static void count_members(const char *ep, const char *peer, int *n, int *voters) {
  json_t *j = member_list(ep);
  json_t *arr = json_object_get(j, "members"), *mm;
  size_t i;
  *n = *voters = 0;
  json_array_foreach(arr, i, mm) {
    json_t *peers = json_object_get(mm, "peerURLs");
    const char *p0 = json_string_value(json_array_get(peers, 0));
    if (peer && (!p0 || strcmp(p0, peer) != 0))
      continue;
    (*n)++;
    if (!json_is_true(json_object_get(mm, "isLearner")))
      (*voters)++;
  }
  json_decref(j);
}

static void expect_healthy(int i) {
  struct nc_errinfo e = {0};
  int rc = nc_etcd_member_wait_healthy(W.m[i], WAIT_MS, &e);
  if (rc != 0)
    fail_msg("%s not healthy: %s", W.name[i], e.message);
}

/* Writes key=value through member w and reads it back through member r. */
static void expect_replicated(int w, int r, const char *key, const char *value) {
  char uri[128];
  struct nc_store *sw = NULL, *sr = NULL;
  snprintf(uri, sizeof uri, "etcd:%s", W.client[w]);
  EXPECT_RC(nc_store_open(uri, NULL, &sw), 0);
  snprintf(uri, sizeof uri, "etcd:%s", W.client[r]);
  EXPECT_RC(nc_store_open(uri, NULL, &sr), 0);
  EXPECT_RC(nc_store_put(sw, key, value, strlen(value), 0, NULL), 0);
  struct nc_kv kv;
  EXPECT_RC(nc_store_get(sr, key, &kv), 0); /* linearizable: sees the put */
  EXPECT_STR(kv.value, value);
  nc_kv_free(&kv);
  nc_store_close(sw);
  nc_store_close(sr);
}

/* Adds member i through endpoints eps, starts it and promotes it. */
static void join(int i, const char *eps) {
  char *ic = NULL;
  struct nc_errinfo e = {0};
  int rc = nc_etcd_member_add(eps, W.name[i], W.peer[i], &ic, &e);
  if (rc != 0)
    fail_msg("add %s: %d (%s): %s", W.name[i], rc, nc_strerror(rc), e.message);
  for (int k = 0; k <= i; k++) {
    char want[128];
    snprintf(want, sizeof want, "%s=%s", W.name[k], W.peer[k]);
    EXPECT_CONTAINS(ic, want);
  }
  start_member(i, NC_ETCD_STATE_EXISTING, ic);
  free(ic);
  rc = nc_etcd_member_promote(eps, W.peer[i], WAIT_MS, &e);
  if (rc != 0)
    fail_msg("promote %s: %d (%s): %s", W.name[i], rc, nc_strerror(rc), e.message);
  /* Promoting a voter again is a no-op. */
  EXPECT_RC(nc_etcd_member_promote(eps, W.peer[i], WAIT_MS, &e), 0);
}

static void test_init(void **state) {
  step();
  start_member(0, NC_ETCD_STATE_NEW, NULL);
  pid_t pid = nc_etcd_member_pid(W.m[0]);
  EXPECT_TRUE(pid > 0);
  EXPECT_TRUE(!nc_etcd_member_adopted(W.m[0]));
  /* Detached: neither our session nor our process group, so a kill -9 of
   * the daemon's group (or systemd's KillMode=process) spares it. */
  EXPECT_TRUE(getsid(pid) != getsid(0));
  EXPECT_TRUE(getpgid(pid) != getpgrp());
  EXPECT_TRUE(nc_etcd_member_configured(W.mdir[0]));
  EXPECT_STR(nc_etcd_member_client_url(W.m[0]), W.client[0]);
  int n, voters;
  count_members(W.client[0], NULL, &n, &voters);
  EXPECT_I64(n, 1);
  EXPECT_I64(voters, 1);
  /* Bootstrapped: a start after data loss must not bootstrap again. */
  char path[256];
  snprintf(path, sizeof path, "%s/member.json", W.mdir[0]);
  char *saved = nct_read_file(path);
  EXPECT_CONTAINS(saved, "\"initial_cluster_state\": \"existing\"");
  free(saved);
  step_done();
}

static void test_join_two_more(void **state) {
  step();
  join(1, W.client[0]);
  char eps[256];
  snprintf(eps, sizeof eps, "%s,%s", W.client[0], W.client[1]);
  join(2, eps);
  for (int i = 0; i < 3; i++)
    expect_healthy(i);
  int n, voters;
  count_members(W.client[2], NULL, &n, &voters);
  EXPECT_I64(n, 3);
  EXPECT_I64(voters, 3);
  expect_replicated(0, 2, "etcdm/a", "one");
  expect_replicated(2, 1, "etcdm/b", "two");
  step_done();
}

/* kill -9 of one member's etcd: the supervisor starts it again, with its
 * data, and it serves the cluster again. */
static void test_kill9_restarts(void **state) {
  step();
  pid_t old = nc_etcd_member_pid(W.m[1]);
  EXPECT_TRUE(old > 0);
  EXPECT_I64(kill(old, SIGKILL), 0);
  int64_t deadline = nct_now_ms() + WAIT_MS;
  pid_t now;
  while ((now = nc_etcd_member_pid(W.m[1])) <= 0 || now == old) {
    if (nct_now_ms() > deadline)
      fail_msg("etcd of n2 not restarted %d ms after kill -9 (pid %d)", WAIT_MS, (int)now);
    nct_sleep_ms(50);
  }
  EXPECT_I64(nc_etcd_member_restarts(W.m[1]), 1);
  expect_healthy(1);
  expect_replicated(1, 0, "etcdm/c", "three");
  int n, voters;
  count_members(W.client[1], NULL, &n, &voters);
  EXPECT_I64(voters, 3);
  step_done();
}

/* Stopping the supervisor leaves etcd running; the next start (from the
 * saved member.json alone, as a restarted novacrond does) adopts it. */
static void test_adopt(void **state) {
  step();
  pid_t pid = nc_etcd_member_pid(W.m[2]);
  nc_etcd_member_stop(W.m[2], false);
  W.m[2] = NULL;
  EXPECT_I64(kill(pid, 0), 0);
  struct nc_etcd_member_config c = {.data_dir = W.mdir[2], .start_timeout_ms = WAIT_MS};
  struct nc_errinfo e = {0};
  int rc = nc_etcd_member_start(&c, &W.m[2], &e);
  if (rc != 0)
    fail_msg("restart n3 from its saved config: %d (%s): %s", rc, nc_strerror(rc), e.message);
  EXPECT_TRUE(nc_etcd_member_adopted(W.m[2]));
  EXPECT_I64(nc_etcd_member_pid(W.m[2]), pid);
  EXPECT_STR(nc_etcd_member_client_url(W.m[2]), W.client[2]);
  expect_replicated(2, 0, "etcdm/d", "four");
  step_done();
}

/* A join that crashed after MemberAdd (nothing started) is retried: the
 * same initial cluster comes back and no second member is added. Names
 * and peer URLs of other members are not taken over. */
static void test_rejoin_after_crash(void **state) {
  step();
  char eps[256];
  snprintf(eps, sizeof eps, "%s,%s,%s", W.client[0], W.client[1], W.client[2]);
  char *ic1 = NULL, *ic2 = NULL;
  struct nc_errinfo e = {0};
  int rc = nc_etcd_member_add(eps, "n4", W.peer[3], &ic1, &e);
  if (rc != 0)
    fail_msg("add n4: %d (%s): %s", rc, nc_strerror(rc), e.message);
  /* "crash": n4's etcd never starts. The join runs again. */
  rc = nc_etcd_member_add(eps, "n4", W.peer[3], &ic2, &e);
  if (rc != 0)
    fail_msg("add n4 again: %d (%s): %s", rc, nc_strerror(rc), e.message);
  EXPECT_STR(ic2, ic1);
  int n, voters;
  count_members(W.client[0], NULL, &n, &voters);
  EXPECT_I64(n, 4);
  EXPECT_I64(voters, 3);
  count_members(W.client[0], W.peer[3], &n, &voters);
  EXPECT_I64(n, 1);
  /* Conflicts: a name in use at another URL; a second learner. */
  char *ic = (char *)&ic;
  EXPECT_RC(nc_etcd_member_add(eps, "n1", "http://127.0.0.1:9", &ic, &e), NC_E_CONFLICT);
  EXPECT_TRUE(ic == NULL);
  EXPECT_CONTAINS(e.message, "remove");
  EXPECT_RC(nc_etcd_member_add(eps, "n5", "http://127.0.0.1:9", &ic, &e), NC_E_CONFLICT);
  EXPECT_CONTAINS(e.message, "another host is joining");

  /* Finishing the join works from the retried add's answer. */
  start_member(3, NC_ETCD_STATE_EXISTING, ic2);
  free(ic1);
  free(ic2);
  rc = nc_etcd_member_promote(eps, W.peer[3], WAIT_MS, &e);
  if (rc != 0)
    fail_msg("promote n4: %d (%s): %s", rc, nc_strerror(rc), e.message);
  /* A join retried after the member started is idempotent too. */
  rc = nc_etcd_member_add(eps, "n4", W.peer[3], &ic1, &e);
  if (rc != 0)
    fail_msg("add n4 once it runs: %d (%s): %s", rc, nc_strerror(rc), e.message);
  free(ic1);
  expect_replicated(3, 1, "etcdm/e", "five");
  count_members(W.client[3], NULL, &n, &voters);
  EXPECT_I64(voters, 4);

  /* Remove it again: stop its etcd, then remove it by name. */
  nc_etcd_member_stop(W.m[3], true);
  W.m[3] = NULL;
  EXPECT_RC(nc_etcd_member_remove(eps, "n4", &e), 0);
  EXPECT_RC(nc_etcd_member_remove(eps, "n4", &e), -ENOENT);
  count_members(W.client[0], NULL, &n, &voters);
  EXPECT_I64(n, 3);
  EXPECT_I64(voters, 3);
  expect_replicated(0, 1, "etcdm/f", "six");
  step_done();
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_init),
      cmocka_unit_test(test_join_two_more),
      cmocka_unit_test(test_kill9_restarts),
      cmocka_unit_test(test_adopt),
      cmocka_unit_test(test_rejoin_after_crash),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
