/* What only the etcd back-end promises (store_etcd.h), beyond the
 * conformance suite that every back-end passes.
 *
 * Without NC_STORE_URI only the URI checks run; the rest is skipped. The
 * e2e runner (run-etcd.sh) starts a local cluster with scripts/etcd-cluster
 * and sets NC_STORE_URI, NC_ETCD_CLUSTER (the script) and
 * NC_ETCD_CLUSTER_DIR; the leader-kill test needs all three and a
 * 3-member cluster. */
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "store/store.h"
#include "store/store_etcd.h"
#include "store_test.h"
#include "util/clock.h"

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int64_t ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* The cluster's endpoints (NC_STORE_URI without "etcd:"), or skip. */
static const char *endpoints(void) {
  const char *uri = getenv("NC_STORE_URI");
  if (!uri || strncmp(uri, "etcd:", 5) != 0) {
    skip();
    return NULL;
  }
  return uri + 5;
}

/* A fresh key prefix per test, as the conformance suite does. */
static void new_prefix(char *buf, size_t len) {
  char hex[9];
  nc_rand_hex(nc_rand_system(), hex, 4);
  snprintf(buf, len, "nce/%s/", hex);
}

/* ---- URIs (no server needed) ---- */

static void test_uri_errors(void **state) {
  struct nc_store *s = (struct nc_store *)state; /* must be reset to NULL */
  static const char *const bad[] = {
      "etcd:",
      "etcd:127.0.0.1:2379",
      "etcd:https://127.0.0.1:2379",
      "etcd:http://",
      "etcd:http://127.0.0.1:2379/v3",
      "etcd:http://127.0.0.1:2379,",
      "etcd:,http://127.0.0.1:2379",
      "etcd:http://127.0.0.1:2379,,http://127.0.0.1:2380",
      "etcd:http://127.0.0.1:23 79",
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    int rc = nc_store_open(bad[i], NULL, &s);
    if (rc != -EINVAL)
      fail_msg("open \"%s\" returned %d (%s), want -EINVAL", bad[i], rc, nc_strerror(rc));
    EXPECT_TRUE(s == NULL);
  }
  /* One endpoint too many. */
  char many[2048] = "etcd:";
  for (int i = 0; i <= NC__STORE_ETCD_ENDPOINTS_MAX; i++)
    snprintf(many + strlen(many), sizeof many - strlen(many), "%shttp://127.0.0.1:%d",
             i ? "," : "", 1 + i);
  EXPECT_RC(nc_store_open(many, NULL, &s), -EINVAL);
  /* Well-formed, nobody listening: every endpoint is tried, then refused.
   * A trailing slash is accepted. */
  int64_t t0 = now_ms();
  EXPECT_RC(nc_store_open("etcd:http://127.0.0.1:1/,http://127.0.0.1:2", NULL, &s),
            -ECONNREFUSED);
  EXPECT_TRUE(s == NULL);
  if (now_ms() - t0 > 3000)
    fail_msg("a refused open took %lld ms", (long long)(now_ms() - t0));
}

/* ---- against a cluster ---- */

/* A dead endpoint first in the list costs one refused connection. */
static void test_failover_from_dead_endpoint(void **state) {
  const char *eps = endpoints();
  char uri[4096], prefix[32], key[64];
  snprintf(uri, sizeof uri, "etcd:http://127.0.0.1:1,%s", eps);
  new_prefix(prefix, sizeof prefix);
  struct nc_store *s = NULL;
  EXPECT_RC(nc_store_open(uri, NULL, &s), 0);
  assert_string_equal(nc_store_backend_name(s), "etcd");
  for (int i = 0; i < 20; i++) {
    snprintf(key, sizeof key, "%sk%d", prefix, i);
    EXPECT_RC(nc_store_put(s, key, "v", 1, 0, NULL), 0);
  }
  struct nc_kv_list l;
  EXPECT_RC(nc_store_range(s, prefix, 0, &l), 0);
  EXPECT_I64(l.count, 20);
  nc_kv_list_free(&l);
  nc_store_close(s);
}

/* A reader that falls more than watch_queue_bytes_max behind gets
 * NC_E_COMPACTED, after the events that did fit, and from then on. */
static void test_watch_overflow(void **state) {
  const char *eps = endpoints();
  struct nc__store_etcd_opts opts = {.watch_queue_bytes_max = 8192};
  struct nc_store *s = NULL;
  char prefix[32], key[64], value[512];
  new_prefix(prefix, sizeof prefix);
  memset(value, 'x', sizeof value);
  EXPECT_RC(nc__store_etcd_open(eps, NULL, &opts, &s), 0);
  struct nc_store_watch *w = NULL;
  EXPECT_RC(nc_store_watch_open(s, prefix, 0, &w), 0);
  enum { N = 60 }; /* 60 x (~540 + overhead) bytes: far past 8 KiB */
  for (int i = 0; i < N; i++) {
    snprintf(key, sizeof key, "%sk%02d", prefix, i);
    EXPECT_RC(nc_store_put(s, key, value, sizeof value, 0, NULL), 0);
  }
  int got = 0, rc;
  struct nc_store_event ev;
  while ((rc = nc_store_watch_next(w, 5000, &ev)) == 0) {
    snprintf(key, sizeof key, "%sk%02d", prefix, got);
    assert_string_equal(ev.kv.key, key); /* in order, none lost before the failure */
    nc_store_event_free(&ev);
    got++;
  }
  EXPECT_RC(rc, NC_E_COMPACTED);
  if (got >= N)
    fail_msg("all %d events arrived through an 8 KiB queue", got);
  size_t most = 8192 / (sizeof value + NC__STORE_ETCD_EVENT_OVERHEAD);
  EXPECT_TRUE((size_t)got <= most);
  EXPECT_RC(nc_store_watch_next(w, 0, &ev), NC_E_COMPACTED);
  nc_store_watch_close(w);
  nc_store_close(s);
}

/* etcd refuses a request over its --max-request-bytes (1.5 MiB by
 * default): two values at NC_STORE_VALUE_MAX in one txn are NC_E_TOOBIG,
 * and nothing is written. One such value is fine. */
static void test_request_too_large(void **state) {
  const char *uri = getenv("NC_STORE_URI");
  endpoints();
  struct nc_store *s = NULL;
  char prefix[32], k1[64], k2[64];
  new_prefix(prefix, sizeof prefix);
  snprintf(k1, sizeof k1, "%sbig1", prefix);
  snprintf(k2, sizeof k2, "%sbig2", prefix);
  char *big = malloc(NC_STORE_VALUE_MAX);
  assert_non_null(big);
  memset(big, 'b', NC_STORE_VALUE_MAX);
  EXPECT_RC(nc_store_open(uri, NULL, &s), 0);
  int64_t r = nc_store_current_rev(s);
  struct nc_store_op ops[] = {
      {.type = NC_OP_PUT, .key = k1, .value = big, .value_len = NC_STORE_VALUE_MAX},
      {.type = NC_OP_PUT, .key = k2, .value = big, .value_len = NC_STORE_VALUE_MAX},
  };
  EXPECT_RC(nc_store_txn(s, NULL, 0, ops, 2, NULL, 0, NULL, NULL), NC_E_TOOBIG);
  EXPECT_I64(nc_store_current_rev(s), r);
  EXPECT_RC(nc_store_txn(s, NULL, 0, ops, 1, NULL, 0, NULL, NULL), 0);
  EXPECT_I64(nc_store_current_rev(s), r + 1);
  nc_store_close(s);
  free(big);
}

/* Sequential puts and CAS, and puts from 8 threads; printed, not judged. */
struct put_worker {
  struct nc_store *s;
  const char *prefix;
  int id, n, errors;
};

static void *put_main(void *arg) {
  struct put_worker *p = arg;
  char key[64];
  for (int i = 0; i < p->n; i++) {
    snprintf(key, sizeof key, "%spar/%d/%d", p->prefix, p->id, i);
    if (nc_store_put(p->s, key, "v", 1, 0, NULL) != 0)
      p->errors++;
  }
  return NULL;
}

static void test_ops_per_second(void **state) {
  const char *eps = endpoints();
  const char *uri = getenv("NC_STORE_URI");
  struct nc_store *s = NULL;
  char prefix[32], key[64], val[32];
  new_prefix(prefix, sizeof prefix);
  EXPECT_RC(nc_store_open(uri, NULL, &s), 0);
  enum { N = 400, THREADS = 8 };

  int64_t t0 = now_ms();
  for (int i = 0; i < N; i++) {
    snprintf(key, sizeof key, "%sseq/%d", prefix, i);
    EXPECT_RC(nc_store_put(s, key, "v", 1, 0, NULL), 0);
  }
  int64_t put_ms = now_ms() - t0;

  /* CAS chain: each CAS expects the revision the previous one returned. */
  snprintf(key, sizeof key, "%scas", prefix);
  int64_t mod = 0;
  t0 = now_ms();
  for (int i = 0; i < N; i++) {
    int len = snprintf(val, sizeof val, "%d", i + 1);
    EXPECT_RC(nc_store_cas(s, key, mod, val, (size_t)len, &mod), 0);
  }
  int64_t cas_ms = now_ms() - t0;

  /* Read-modify-write: get, then CAS on what was read. */
  t0 = now_ms();
  for (int i = 0; i < N; i++) {
    struct nc_kv kv;
    EXPECT_RC(nc_store_get(s, key, &kv), 0);
    int len = snprintf(val, sizeof val, "%ld", strtol(kv.value, NULL, 10) + 1);
    EXPECT_RC(nc_store_cas(s, key, kv.mod_rev, val, (size_t)len, NULL), 0);
    nc_kv_free(&kv);
  }
  int64_t rmw_ms = now_ms() - t0;

  struct put_worker pw[THREADS];
  pthread_t t[THREADS];
  t0 = now_ms();
  for (int i = 0; i < THREADS; i++) {
    pw[i] = (struct put_worker){s, prefix, i, N / 2, 0};
    assert_int_equal(pthread_create(&t[i], NULL, put_main, &pw[i]), 0);
  }
  for (int i = 0; i < THREADS; i++) {
    pthread_join(t[i], NULL);
    EXPECT_I64(pw[i].errors, 0);
  }
  int64_t par_ms = now_ms() - t0;

  int members = 1;
  for (const char *p = eps; (p = strchr(p, ',')) != NULL; p++)
    members++;
  printf("# etcd ops/s (%d endpoint%s): sequential put %.0f, CAS %.0f, get+CAS %.0f, "
         "put from %d threads %.0f\n",
         members, members == 1 ? "" : "s", N * 1000.0 / (double)(put_ms ? put_ms : 1),
         N * 1000.0 / (double)(cas_ms ? cas_ms : 1), N * 1000.0 / (double)(rmw_ms ? rmw_ms : 1),
         THREADS, THREADS * (N / 2) * 1000.0 / (double)(par_ms ? par_ms : 1));
  nc_store_close(s);
}

/* ---- killing the leader under CAS load ---- */

#define KILL_WORKERS 4
#define KILL_ROUNDS 2
#define WINS_MAX 100000

struct kill_run {
  struct nc_store *s;
  const char *key;
  pthread_mutex_t mu;
  bool stop;
  int nwins;
  long win_value[WINS_MAX];
  int64_t win_rev[WINS_MAX];
  int64_t win_ms[WINS_MAX]; /* when the CAS returned */
  int unknown;              /* -ETIMEDOUT: the CAS may or may not have applied */
  int unavailable;          /* other errors: surely not applied */
  int lost_races;           /* NC_E_TXNFAIL */
};

static void *cas_worker(void *arg) {
  struct kill_run *k = arg;
  for (;;) {
    pthread_mutex_lock(&k->mu);
    bool stop = k->stop;
    pthread_mutex_unlock(&k->mu);
    if (stop)
      break;
    struct nc_kv kv;
    int rc = nc_store_get(k->s, k->key, &kv);
    long n = 0;
    int64_t mod = 0;
    if (rc == 0) {
      n = strtol(kv.value, NULL, 10);
      mod = kv.mod_rev;
      nc_kv_free(&kv);
    } else if (rc != -ENOENT) {
      pthread_mutex_lock(&k->mu);
      k->unavailable++;
      pthread_mutex_unlock(&k->mu);
      sleep_ms(20);
      continue;
    }
    char buf[32];
    int len = snprintf(buf, sizeof buf, "%ld", n + 1);
    int64_t rev = 0;
    rc = nc_store_cas(k->s, k->key, mod, buf, (size_t)len, &rev);
    int64_t t = now_ms();
    pthread_mutex_lock(&k->mu);
    if (rc == 0 && k->nwins < WINS_MAX) {
      k->win_value[k->nwins] = n + 1;
      k->win_rev[k->nwins] = rev;
      k->win_ms[k->nwins] = t;
      k->nwins++;
    } else if (rc == NC_E_TXNFAIL) {
      k->lost_races++;
    } else if (rc == -ETIMEDOUT) {
      k->unknown++;
    } else if (rc != 0) {
      k->unavailable++;
    }
    pthread_mutex_unlock(&k->mu);
    if (rc != 0 && rc != NC_E_TXNFAIL)
      sleep_ms(20);
  }
  return NULL;
}

static int wins(struct kill_run *k) {
  pthread_mutex_lock(&k->mu);
  int n = k->nwins;
  pthread_mutex_unlock(&k->mu);
  return n;
}

/* Waits until n increments in all (20 s at most). */
static void wait_wins(struct kill_run *k, int n) {
  int64_t until = now_ms() + 20000;
  while (wins(k) < n && now_ms() < until)
    sleep_ms(10);
  if (wins(k) < n)
    fail_msg("%d increments after 20 s, want %d", wins(k), n);
}

/* Runs "$NC_ETCD_CLUSTER verb $NC_ETCD_CLUSTER_DIR [arg]"; the first line
 * of its output goes to out. */
static int cluster(const char *verb, const char *arg, char *out, size_t len) {
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "'%s' %s '%s' %s", getenv("NC_ETCD_CLUSTER"), verb,
           getenv("NC_ETCD_CLUSTER_DIR"), arg ? arg : "");
  FILE *p = popen(cmd, "r");
  if (!p)
    return -1;
  char line[256] = "";
  if (!fgets(line, sizeof line, p))
    line[0] = '\0';
  int rc = pclose(p);
  line[strcspn(line, "\n")] = '\0';
  if (out)
    snprintf(out, len, "%s", line);
  return rc;
}

static int cmp_long(const void *a, const void *b) {
  long x = *(const long *)a, y = *(const long *)b;
  return x < y ? -1 : x > y;
}

/* The longest stretch without a completed increment from t on: from t to
 * the first one, then between consecutive ones. */
static int64_t outage_ms(struct kill_run *k, int64_t t) {
  int64_t worst = 0, prev = t;
  pthread_mutex_lock(&k->mu);
  for (int i = 0; i < k->nwins; i++) { /* win_ms never decreases with i */
    if (k->win_ms[i] < t)
      continue;
    if (k->win_ms[i] - prev > worst)
      worst = k->win_ms[i] - prev;
    prev = k->win_ms[i];
  }
  pthread_mutex_unlock(&k->mu);
  return worst;
}

/* A store opened on one member's URL learns the others (MemberList) and
 * keeps working when that member dies, as a node formed with `cluster
 * init` (it knew only its own member then) must. */
static void test_learns_members(void **state) {
  const char *uri = getenv("NC_STORE_URI");
  endpoints();
  if (!getenv("NC_ETCD_CLUSTER") || !getenv("NC_ETCD_CLUSTER_DIR") || !strchr(uri, ','))
    skip(); /* needs the runner's 3-member cluster */
  char first[512], prefix[32], key[64];
  snprintf(first, sizeof first, "%s", uri);
  first[strcspn(first, ",")] = '\0'; /* "etcd:http://...:BASE": member m1 alone */
  new_prefix(prefix, sizeof prefix);
  snprintf(key, sizeof key, "%sk", prefix);
  struct nc_store *s = NULL;
  EXPECT_RC(nc_store_open(first, NULL, &s), 0);
  EXPECT_RC(nc_store_put(s, key, "1", 1, 0, NULL), 0);
  EXPECT_RC(cluster("kill", "m1", NULL, 0), 0);
  struct nc_kv kv;
  EXPECT_RC(nc_store_get(s, key, &kv), 0); /* a read fails over to a learned member */
  assert_string_equal(kv.value, "1");
  nc_kv_free(&kv);
  /* A write on a pooled connection to the dead member may fail once as
   * "may have been applied" (-ETIMEDOUT); putting the same value again is
   * safe. */
  int rc = nc_store_put(s, key, "2", 1, 0, NULL);
  if (rc == -ETIMEDOUT)
    rc = nc_store_put(s, key, "2", 1, 0, NULL);
  EXPECT_RC(rc, 0);
  EXPECT_RC(nc_store_get(s, key, &kv), 0);
  assert_string_equal(kv.value, "2");
  nc_kv_free(&kv);
  nc_store_close(s);
}

static int restart_m1(void **state) {
  (void)state;
  if (getenv("NC_ETCD_CLUSTER") && getenv("NC_ETCD_CLUSTER_DIR"))
    cluster("restart", "m1", NULL, 0); /* fails harmlessly when it runs */
  return 0;
}

/* Four threads CAS-increment one counter while the leader is SIGKILLed,
 * twice (the first victim is restarted in between, so the second kill
 * again leaves a quorum). Increments must resume within a few seconds, and
 * every increment reported as done must be in the history exactly once, at
 * the revision its CAS returned; only a CAS that returned -ETIMEDOUT may
 * have applied unreported. A watch opened before the first kill must see
 * all of it. */
static void test_leader_kill(void **state) {
  const char *uri = getenv("NC_STORE_URI");
  endpoints();
  if (!getenv("NC_ETCD_CLUSTER") || !getenv("NC_ETCD_CLUSTER_DIR") || !strchr(uri, ','))
    skip(); /* needs the runner's 3-member cluster */
  static struct kill_run k; /* big: static */
  memset(&k, 0, sizeof k);
  char prefix[32], key[64];
  new_prefix(prefix, sizeof prefix);
  snprintf(key, sizeof key, "%scounter", prefix);
  k.key = key;
  pthread_mutex_init(&k.mu, NULL);
  EXPECT_RC(nc_store_open(uri, NULL, &k.s), 0);
  int64_t r0 = nc_store_current_rev(k.s);
  EXPECT_TRUE(r0 > 0);
  struct nc_store_watch *w = NULL;
  EXPECT_RC(nc_store_watch_open(k.s, key, r0, &w), 0);

  pthread_t t[KILL_WORKERS];
  for (int i = 0; i < KILL_WORKERS; i++)
    assert_int_equal(pthread_create(&t[i], NULL, cas_worker, &k), 0);
  char killed[KILL_ROUNDS][64];
  int64_t outage[KILL_ROUNDS];
  for (int round = 0; round < KILL_ROUNDS; round++) {
    wait_wins(&k, wins(&k) + 150);
    EXPECT_RC(cluster("leader", NULL, killed[round], sizeof killed[round]), 0);
    int64_t kill_ms = now_ms();
    EXPECT_RC(cluster("kill", killed[round], NULL, 0), 0);
    wait_wins(&k, wins(&k) + 150);
    outage[round] = outage_ms(&k, kill_ms);
    if (round + 1 < KILL_ROUNDS)
      EXPECT_RC(cluster("restart", killed[round], NULL, 0), 0);
  }
  pthread_mutex_lock(&k.mu);
  k.stop = true;
  pthread_mutex_unlock(&k.mu);
  for (int i = 0; i < KILL_WORKERS; i++)
    pthread_join(t[i], NULL);

  for (int round = 0; round < KILL_ROUNDS; round++) {
    printf("# kill %d: leader %s SIGKILLed; longest stretch without an increment after it: "
           "%lld ms\n", round + 1, killed[round], (long long)outage[round]);
    if (outage[round] > 8000)
      fail_msg("increments stopped for %lld ms after leader %s was killed, want <= 8000",
               (long long)outage[round], killed[round]);
  }
  printf("# %d increments, %d lost races, %d unknown outcomes, %d unavailable\n", k.nwins,
         k.lost_races, k.unknown, k.unavailable);

  /* No increment reported twice. */
  long *vals = malloc(sizeof *vals * (size_t)k.nwins);
  assert_non_null(vals);
  memcpy(vals, k.win_value, sizeof *vals * (size_t)k.nwins);
  qsort(vals, (size_t)k.nwins, sizeof *vals, cmp_long);
  for (int i = 1; i < k.nwins; i++)
    if (vals[i] == vals[i - 1])
      fail_msg("value %ld was reported written by two CAS calls", vals[i]);
  free(vals);

  /* The counter is the count of applied increments: the reported ones
   * plus at most the unknown ones. */
  struct nc_kv kv;
  EXPECT_RC(nc_store_get(k.s, key, &kv), 0);
  long final = strtol(kv.value, NULL, 10);
  EXPECT_I64(kv.version, final);
  nc_kv_free(&kv);
  if (final < k.nwins || final > k.nwins + k.unknown)
    fail_msg("counter is %ld after %d reported and %d unknown increments", final, k.nwins,
             k.unknown);

  /* The watch, which lived through the kills, sees 1..final in order, and
   * each reported increment at the revision its CAS returned. */
  int64_t *rev_of = calloc((size_t)final + 1, sizeof *rev_of);
  assert_non_null(rev_of);
  int64_t last = r0;
  for (long v = 1; v <= final; v++) {
    struct nc_store_event ev;
    int rc = nc_store_watch_next(w, 10000, &ev);
    if (rc != 0)
      fail_msg("watch_next for value %ld returned %d (%s)", v, rc, nc_strerror(rc));
    if (ev.type != NC_EV_PUT || strtol(ev.kv.value, NULL, 10) != v || ev.kv.mod_rev <= last)
      fail_msg("event %ld: type %d value \"%s\" rev %lld after rev %lld", v, (int)ev.type,
               ev.kv.value, (long long)ev.kv.mod_rev, (long long)last);
    last = rev_of[v] = ev.kv.mod_rev;
    nc_store_event_free(&ev);
  }
  struct nc_store_event ev;
  EXPECT_RC(nc_store_watch_next(w, 200, &ev), -ETIMEDOUT);
  for (int i = 0; i < k.nwins; i++)
    if (rev_of[k.win_value[i]] != k.win_rev[i])
      fail_msg("value %ld: CAS returned revision %lld, history has it at %lld", k.win_value[i],
               (long long)k.win_rev[i], (long long)rev_of[k.win_value[i]]);
  free(rev_of);
  nc_store_watch_close(w);
  nc_store_close(k.s);
  pthread_mutex_destroy(&k.mu);
  /* Leave the cluster whole for whatever runs next. */
  EXPECT_RC(cluster("restart", killed[KILL_ROUNDS - 1], NULL, 0), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_uri_errors),
      cmocka_unit_test(test_failover_from_dead_endpoint),
      cmocka_unit_test(test_watch_overflow),
      cmocka_unit_test(test_request_too_large),
      cmocka_unit_test(test_ops_per_second),
      cmocka_unit_test_teardown(test_learns_members, restart_m1),
      cmocka_unit_test(test_leader_kill),
  };
  return cmocka_run_group_tests_name("store_etcd", tests, NULL, NULL);
}
