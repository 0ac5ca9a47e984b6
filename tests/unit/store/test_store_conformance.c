/* The store conformance suite: what every back-end must do, through the
 * public API only (store.h).
 *
 * The store comes from NC_STORE_URI. Unset, each test gets a fresh SQLite
 * file in its own temp dir and a manual clock, so lease tests are exact and
 * instant. Set (say NC_STORE_URI=etcd:http://127.0.0.1:2379), the tests run
 * against a shared store with the real clock: every key lives under a
 * random per-test prefix, revisions are only compared relative to each
 * other, and lease tests use TTLs of seconds and poll. */
#include <dirent.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "store/store.h"
#include "store_test.h"
#include "util/clock.h"

#define MAX_WATCHES 8

struct fx {
  struct nc_store *s;
  struct nc_clock_manual clock;
  bool manual; /* our own sqlite file and clock */
  char dir[128];
  char uri[4096];
  char prefix[32];
  char **keys; /* every K() result, freed at teardown */
  size_t nkeys, cap_keys;
  struct nc_store_watch *watches[MAX_WATCHES]; /* closed at teardown if a test failed */
};

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int64_t ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* With NC_STORE_VIEW=<prefix> the suite runs on a view of the store
 * under that prefix (nc_store_view), which must behave like a store of
 * its own. */
static int open_store(struct fx *f) {
  int rc = nc_store_open(f->uri, f->manual ? &f->clock.clock : NULL, &f->s);
  const char *view = getenv("NC_STORE_VIEW");
  if (rc < 0 || !view || !*view)
    return rc;
  struct nc_store *v = NULL;
  rc = nc_store_view(f->s, view, true, &v);
  if (rc < 0) {
    nc_store_close(f->s);
    f->s = NULL;
    return rc;
  }
  f->s = v;
  return 0;
}

static int setup(void **state) {
  struct fx *f = calloc(1, sizeof *f);
  if (!f)
    return -1;
  const char *uri = getenv("NC_STORE_URI");
  if (uri && *uri) {
    snprintf(f->uri, sizeof f->uri, "%s", uri);
  } else {
    f->manual = true;
    nc_clock_manual_init(&f->clock, 1000000);
    snprintf(f->dir, sizeof f->dir, "/tmp/nc-store-test-XXXXXX");
    if (!mkdtemp(f->dir)) {
      free(f);
      return -1;
    }
    snprintf(f->uri, sizeof f->uri, "sqlite:%s/state.db", f->dir);
  }
  char hex[9];
  nc_rand_hex(nc_rand_system(), hex, 4);
  snprintf(f->prefix, sizeof f->prefix, "nct/%s/", hex);
  int rc = open_store(f);
  if (rc < 0) {
    fprintf(stderr, "cannot open %s: %s\n", f->uri, nc_strerror(rc));
    free(f);
    return -1;
  }
  *state = f;
  return 0;
}

static void rm_dir(const char *dir) {
  DIR *d = opendir(dir);
  if (!d)
    return;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.')
      continue;
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
    unlink(p);
  }
  closedir(d);
  rmdir(dir);
}

static int teardown(void **state) {
  struct fx *f = *state;
  for (int i = 0; i < MAX_WATCHES; i++)
    nc_store_watch_close(f->watches[i]);
  nc_store_close(f->s);
  for (size_t i = 0; i < f->nkeys; i++)
    free(f->keys[i]);
  free(f->keys);
  if (f->manual)
    rm_dir(f->dir);
  free(f);
  return 0;
}

/* The test's own key: prefix + suffix. Lives until teardown. */
static const char *K(struct fx *f, const char *suffix) {
  if (f->nkeys == f->cap_keys) {
    f->cap_keys = f->cap_keys ? f->cap_keys * 2 : 64;
    f->keys = realloc(f->keys, f->cap_keys * sizeof *f->keys);
    if (!f->keys)
      fail_msg("out of memory");
  }
  size_t n = strlen(f->prefix) + strlen(suffix) + 1;
  char *b = malloc(n);
  if (!b)
    fail_msg("out of memory");
  snprintf(b, n, "%s%s", f->prefix, suffix);
  f->keys[f->nkeys++] = b;
  return b;
}

/* Opens a watch the fixture will close if the test fails first. */
static struct nc_store_watch *wopen(struct fx *f, const char *prefix, int64_t start_rev) {
  struct nc_store_watch *w = NULL;
  EXPECT_RC(nc_store_watch_open(f->s, prefix, start_rev, &w), 0);
  for (int i = 0; i < MAX_WATCHES; i++) {
    if (!f->watches[i]) {
      f->watches[i] = w;
      return w;
    }
  }
  fail_msg("test opened more than %d watches", MAX_WATCHES);
  return NULL;
}

static void wclose(struct fx *f, struct nc_store_watch *w) {
  for (int i = 0; i < MAX_WATCHES; i++)
    if (f->watches[i] == w)
      f->watches[i] = NULL;
  nc_store_watch_close(w);
}

static int64_t cur(struct fx *f) {
  int64_t rev = nc_store_current_rev(f->s);
  if (rev < 0)
    fail_msg("current_rev failed: %s", nc_strerror((int)rev));
  return rev;
}

static int64_t put(struct fx *f, const char *suffix, const char *value) {
  int64_t rev = -1;
  EXPECT_RC(nc_store_put(f->s, K(f, suffix), value, strlen(value), 0, &rev), 0);
  return rev;
}

/* value NULL: the key must be absent. */
static void want_value(struct fx *f, const char *suffix, const char *value) {
  struct nc_kv kv;
  int rc = nc_store_get(f->s, K(f, suffix), &kv);
  if (!value) {
    if (rc != -ENOENT)
      fail_msg("key \"%s\": got rc %d (%s) value \"%s\", want it absent", suffix, rc,
               nc_strerror(rc), rc == 0 ? kv.value : "");
    EXPECT_TRUE(kv.key == NULL && kv.value == NULL);
    return;
  }
  if (rc != 0)
    fail_msg("key \"%s\": get returned %d (%s), want value \"%s\"", suffix, rc,
             nc_strerror(rc), value);
  assert_string_equal(kv.value, value);
  EXPECT_I64(kv.value_len, strlen(value));
  assert_string_equal(kv.key, K(f, suffix));
  nc_kv_free(&kv);
}

static struct nc_kv get_kv(struct fx *f, const char *suffix) {
  struct nc_kv kv;
  EXPECT_RC(nc_store_get(f->s, K(f, suffix), &kv), 0);
  return kv;
}

/* With the manual clock, time jumps; with a real one, we sleep. */
static void advance(struct fx *f, int64_t ms) {
  if (f->manual)
    nc_clock_manual_advance(&f->clock, ms);
  else
    sleep_ms(ms);
}

/* etcd rounds TTLs to seconds and has a minimum; give real clocks room. */
static int64_t ttl_ms(struct fx *f) { return f->manual ? 1000 : 3000; }

/* Waits (real clock) or checks at once (manual clock) until key is gone. */
static void expect_gone_soon(struct fx *f, const char *suffix) {
  int64_t until = now_ms() + (f->manual ? 0 : ttl_ms(f) + 5000);
  for (;;) {
    struct nc_kv kv;
    int rc = nc_store_get(f->s, K(f, suffix), &kv);
    if (rc == -ENOENT)
      return;
    EXPECT_RC(rc, 0);
    nc_kv_free(&kv);
    if (now_ms() >= until)
      fail_msg("key \"%s\" still present; its lease should have expired", suffix);
    sleep_ms(50);
  }
}

static void next_event(struct fx *f, struct nc_store_watch *w, enum nc_store_event_type type,
                       const char *suffix, const char *value, int64_t mod_rev) {
  struct nc_store_event ev;
  int rc = nc_store_watch_next(w, f->manual ? 2000 : ttl_ms(f) + 5000, &ev);
  if (rc != 0)
    fail_msg("watch_next returned %d (%s), want the %s of \"%s\"", rc, nc_strerror(rc),
             type == NC_EV_PUT ? "put" : "delete", suffix);
  assert_string_equal(ev.kv.key, K(f, suffix));
  EXPECT_I64(ev.type, type);
  if (mod_rev >= 0)
    EXPECT_I64(ev.kv.mod_rev, mod_rev);
  if (value) {
    assert_string_equal(ev.kv.value, value);
    EXPECT_I64(ev.kv.value_len, strlen(value));
  }
  if (type == NC_EV_DELETE) {
    EXPECT_I64(ev.kv.value_len, 0);
    EXPECT_TRUE(ev.kv.value != NULL);
  }
  nc_store_event_free(&ev);
}

static void expect_no_event(struct nc_store_watch *w, int timeout_ms) {
  struct nc_store_event ev;
  int rc = nc_store_watch_next(w, timeout_ms, &ev);
  if (rc != -ETIMEDOUT)
    fail_msg("watch_next returned %d (%s) key \"%s\", want -ETIMEDOUT", rc, nc_strerror(rc),
             rc == 0 ? ev.kv.key : "");
  EXPECT_TRUE(ev.kv.key == NULL);
}

/* ---- keys, values, revisions ---- */

static void test_put_get_revisions(void **state) {
  struct fx *f = *state;
  int64_t r0 = cur(f);
  EXPECT_I64(put(f, "k1", "v1"), r0 + 1);
  struct nc_kv kv = get_kv(f, "k1");
  assert_string_equal(kv.value, "v1");
  EXPECT_I64(kv.create_rev, r0 + 1);
  EXPECT_I64(kv.mod_rev, r0 + 1);
  EXPECT_I64(kv.version, 1);
  EXPECT_I64(kv.lease, 0);
  nc_kv_free(&kv);

  EXPECT_I64(put(f, "k1", "v2"), r0 + 2);
  kv = get_kv(f, "k1");
  assert_string_equal(kv.value, "v2");
  EXPECT_I64(kv.create_rev, r0 + 1);
  EXPECT_I64(kv.mod_rev, r0 + 2);
  EXPECT_I64(kv.version, 2);
  nc_kv_free(&kv);

  EXPECT_I64(put(f, "k2", "x"), r0 + 3);
  EXPECT_I64(put(f, "k1", "v3"), r0 + 4);
  kv = get_kv(f, "k1");
  EXPECT_I64(kv.version, 3);
  EXPECT_I64(kv.create_rev, r0 + 1);
  nc_kv_free(&kv);
  EXPECT_I64(cur(f), r0 + 4);
  want_value(f, "missing", NULL);

  /* Values are bytes: embedded NULs survive and a NUL still follows. */
  static const char bin[] = {'a', '\0', 'b', '\xff'};
  EXPECT_RC(nc_store_put(f->s, K(f, "bin"), bin, sizeof bin, 0, NULL), 0);
  kv = get_kv(f, "bin");
  EXPECT_I64(kv.value_len, sizeof bin);
  assert_memory_equal(kv.value, bin, sizeof bin);
  EXPECT_I64(kv.value[sizeof bin], 0);
  nc_kv_free(&kv);

  /* An empty value is a value; NULL with length 0 is allowed. */
  EXPECT_RC(nc_store_put(f->s, K(f, "empty"), NULL, 0, 0, NULL), 0);
  kv = get_kv(f, "empty");
  EXPECT_I64(kv.value_len, 0);
  assert_string_equal(kv.value, "");
  nc_kv_free(&kv);
}

static void test_delete_resets_version(void **state) {
  struct fx *f = *state;
  put(f, "k", "a");
  int64_t r = put(f, "k", "b");
  int64_t rev = -1;
  EXPECT_RC(nc_store_delete(f->s, K(f, "k"), &rev), 0);
  EXPECT_I64(rev, r + 1);
  want_value(f, "k", NULL);

  /* Deleting nothing writes nothing: the revision stays. */
  EXPECT_RC(nc_store_delete(f->s, K(f, "k"), &rev), 0);
  EXPECT_I64(rev, r + 1);
  EXPECT_I64(cur(f), r + 1);

  EXPECT_I64(put(f, "k", "c"), r + 2);
  struct nc_kv kv = get_kv(f, "k");
  EXPECT_I64(kv.version, 1);
  EXPECT_I64(kv.create_rev, r + 2);
  EXPECT_I64(kv.mod_rev, r + 2);
  nc_kv_free(&kv);
}

/* ---- range ---- */

static void expect_range(struct fx *f, const char *prefix_suffix, size_t limit,
                         const char *const *want, size_t nwant) {
  struct nc_kv_list l;
  EXPECT_RC(nc_store_range(f->s, K(f, prefix_suffix), limit, &l), 0);
  if (l.count != nwant) {
    for (size_t i = 0; i < l.count; i++)
      fprintf(stderr, "  got %s\n", l.items[i].key);
    fail_msg("range \"%s\" limit %zu: %zu keys, want %zu", prefix_suffix, limit, l.count,
             nwant);
  }
  for (size_t i = 0; i < nwant; i++) {
    assert_string_equal(l.items[i].key, K(f, want[i]));
    assert_string_equal(l.items[i].value, want[i]); /* each value is its suffix */
  }
  EXPECT_I64(l.rev, cur(f));
  nc_kv_list_free(&l);
  EXPECT_TRUE(l.items == NULL && l.count == 0);
}

static void test_range_prefix(void **state) {
  struct fx *f = *state;
  static const char *const keys[] = {"ab", "a/c", "b", "a", "a/b/c", "a/", "a/b", "a0"};
  for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
    put(f, keys[i], keys[i]);

  static const char *const under_a_slash[] = {"a/", "a/b", "a/b/c", "a/c"};
  expect_range(f, "a/", 0, under_a_slash, 4);
  static const char *const under_a_b[] = {"a/b", "a/b/c"};
  expect_range(f, "a/b", 0, under_a_b, 2);
  static const char *const under_a[] = {"a", "a/", "a/b", "a/b/c", "a/c", "a0", "ab"};
  expect_range(f, "a", 0, under_a, 7);
  static const char *const all[] = {"a", "a/", "a/b", "a/b/c", "a/c", "a0", "ab", "b"};
  expect_range(f, "", 0, all, 8);
  expect_range(f, "z", 0, NULL, 0);
  expect_range(f, "a/b/c/", 0, NULL, 0);

  /* Byte order, and a prefix ending in 0xff whose successor needs a carry. */
  static const char *const hi[] = {"x\xfe", "x\xff", "x\xff\xff", "x\xff\x01", "y"};
  for (size_t i = 0; i < sizeof hi / sizeof *hi; i++)
    put(f, hi[i], hi[i]);
  static const char *const under_xff[] = {"x\xff", "x\xff\x01", "x\xff\xff"};
  expect_range(f, "x\xff", 0, under_xff, 3);
  static const char *const under_x[] = {"x\xfe", "x\xff", "x\xff\x01", "x\xff\xff"};
  expect_range(f, "x", 0, under_x, 4);
}

static void test_range_limit(void **state) {
  struct fx *f = *state;
  static const char *const keys[] = {"r/d", "r/b", "r/e", "r/a", "r/c"};
  for (size_t i = 0; i < 5; i++)
    put(f, keys[i], keys[i]);
  static const char *const sorted[] = {"r/a", "r/b", "r/c", "r/d", "r/e"};
  expect_range(f, "r/", 1, sorted, 1);
  expect_range(f, "r/", 2, sorted, 2);
  expect_range(f, "r/", 5, sorted, 5);
  expect_range(f, "r/", 6, sorted, 5);
  expect_range(f, "r/", 0, sorted, 5);
}

/* ---- transactions ---- */

/* Runs one txn whose branches write "T" or "E" into the marker key and
 * checks the flag, the marker and the revision all agree. */
static void check_txn(struct fx *f, const struct nc_store_cmp *cmps, size_t n, bool want,
                      const char *what) {
  int64_t r = cur(f);
  struct nc_store_op t = {.type = NC_OP_PUT, .key = K(f, "marker"), .value = "T", .value_len = 1};
  struct nc_store_op e = {.type = NC_OP_PUT, .key = K(f, "marker"), .value = "E", .value_len = 1};
  bool ok = !want;
  int64_t rev = -1;
  EXPECT_RC(nc_store_txn(f->s, cmps, n, &t, 1, &e, 1, &ok, &rev), 0);
  if (ok != want)
    fail_msg("%s: txn took the %s branch, want %s", what, ok ? "then" : "else",
             want ? "then" : "else");
  EXPECT_I64(rev, r + 1);
  want_value(f, "marker", want ? "T" : "E");
}

static void test_txn_compare_targets(void **state) {
  struct fx *f = *state;
  put(f, "k", "l");
  put(f, "k", "m"); /* version 2, value "m" */
  struct nc_kv kv = get_kv(f, "k");
  const int64_t attr[3] = {kv.version, kv.create_rev, kv.mod_rev};
  EXPECT_TRUE(kv.version == 2 && kv.create_rev < kv.mod_rev);
  nc_kv_free(&kv);
  static const enum nc_store_cmp_target num_targets[3] = {NC_CMP_VERSION, NC_CMP_CREATE_REV,
                                                          NC_CMP_MOD_REV};
  /* want[op][operand below / equal / above the key's attribute] */
  static const bool want[4][3] = {
      [NC_CMP_EQ] = {false, true, false},
      [NC_CMP_NE] = {true, false, true},
      [NC_CMP_LT] = {false, false, true}, /* attribute < operand */
      [NC_CMP_GT] = {true, false, false},
  };
  char what[96];
  for (int t = 0; t < 3; t++) {
    for (int op = NC_CMP_EQ; op <= NC_CMP_GT; op++) {
      for (int d = -1; d <= 1; d++) {
        struct nc_store_cmp c = {.key = K(f, "k"), .target = num_targets[t],
                                 .op = (enum nc_store_cmp_op)op, .num = attr[t] + d};
        snprintf(what, sizeof what, "target %d op %d operand %+d", t, op, d);
        check_txn(f, &c, 1, want[op][d + 1], what);
      }
    }
  }
  /* Values compare as bytes, shorter first on a tie. */
  static const char *const operands[3] = {"l", "m", "ma"};
  for (int op = NC_CMP_EQ; op <= NC_CMP_GT; op++) {
    for (int d = 0; d < 3; d++) {
      struct nc_store_cmp c = {.key = K(f, "k"), .target = NC_CMP_VALUE,
                               .op = (enum nc_store_cmp_op)op, .value = operands[d],
                               .value_len = strlen(operands[d])};
      snprintf(what, sizeof what, "value op %d operand \"%s\"", op, operands[d]);
      check_txn(f, &c, 1, want[op][d], what);
    }
  }
  struct nc_store_cmp empty = {.key = K(f, "k"), .target = NC_CMP_VALUE, .op = NC_CMP_GT,
                               .value = "", .value_len = 0};
  check_txn(f, &empty, 1, true, "value > empty");
}

static void test_txn_compare_absent(void **state) {
  struct fx *f = *state;
  const char *k = K(f, "absent");
  struct nc_store_cmp c = {.key = k, .target = NC_CMP_VERSION, .op = NC_CMP_EQ, .num = 0};
  check_txn(f, &c, 1, true, "absent version == 0");
  c.target = NC_CMP_CREATE_REV;
  check_txn(f, &c, 1, true, "absent create_rev == 0");
  c.target = NC_CMP_MOD_REV;
  c.op = NC_CMP_LT;
  c.num = 1;
  check_txn(f, &c, 1, true, "absent mod_rev < 1");
  c.target = NC_CMP_VERSION;
  c.op = NC_CMP_GT;
  c.num = 0;
  check_txn(f, &c, 1, false, "absent version > 0");
  /* A value compare on an absent key fails whatever the op. */
  for (int op = NC_CMP_EQ; op <= NC_CMP_GT; op++) {
    struct nc_store_cmp v = {.key = k, .target = NC_CMP_VALUE, .op = (enum nc_store_cmp_op)op,
                             .value = "x", .value_len = 1};
    check_txn(f, &v, 1, false, "absent value");
    v.value_len = 0;
    check_txn(f, &v, 1, false, "absent value vs empty");
  }
}

static void test_txn_compare_conjunction(void **state) {
  struct fx *f = *state;
  put(f, "a", "1");
  struct nc_store_cmp c[2] = {
      {.key = K(f, "a"), .target = NC_CMP_VERSION, .op = NC_CMP_EQ, .num = 1},
      {.key = K(f, "b"), .target = NC_CMP_VERSION, .op = NC_CMP_EQ, .num = 1},
  };
  check_txn(f, c, 2, false, "true && false");
  check_txn(f, &c[1], 1, false, "false");
  c[1].num = 0;
  check_txn(f, c, 2, true, "true && true");
  check_txn(f, NULL, 0, true, "no compares");
}

static void test_txn_ops(void **state) {
  struct fx *f = *state;
  put(f, "c", "c");
  put(f, "d", "d");
  put(f, "d/1", "d/1");
  put(f, "d/2", "d/2");
  int64_t r_dx = put(f, "dx", "dx");
  int64_t r = cur(f);

  /* The then branch: every op kind, one revision. */
  struct nc_store_op then_ops[] = {
      {.type = NC_OP_PUT, .key = K(f, "a"), .value = "A", .value_len = 1},
      {.type = NC_OP_DELETE, .key = K(f, "c")},
      {.type = NC_OP_DELETE_PREFIX, .key = K(f, "d/")},
      {.type = NC_OP_PUT, .key = K(f, "b"), .value = "B", .value_len = 1},
      {.type = NC_OP_DELETE, .key = K(f, "nothing")},
  };
  struct nc_store_op else_ops[] = {
      {.type = NC_OP_PUT, .key = K(f, "e"), .value = "E", .value_len = 1},
  };
  bool ok = false;
  int64_t rev = -1;
  EXPECT_RC(nc_store_txn(f->s, NULL, 0, then_ops, 5, else_ops, 1, &ok, &rev), 0);
  EXPECT_TRUE(ok);
  EXPECT_I64(rev, r + 1);
  EXPECT_I64(cur(f), r + 1);
  want_value(f, "a", "A");
  want_value(f, "b", "B");
  want_value(f, "c", NULL);
  want_value(f, "d/1", NULL);
  want_value(f, "d/2", NULL);
  want_value(f, "e", NULL);
  want_value(f, "d", "d");
  want_value(f, "dx", "dx");
  struct nc_kv a = get_kv(f, "a"), b = get_kv(f, "b"), dx = get_kv(f, "dx");
  EXPECT_I64(a.mod_rev, r + 1);
  EXPECT_I64(b.mod_rev, r + 1);
  EXPECT_I64(dx.mod_rev, r_dx);
  nc_kv_free(&a);
  nc_kv_free(&b);
  nc_kv_free(&dx);

  /* The else branch, same op kinds. */
  struct nc_store_cmp never = {.key = K(f, "a"), .target = NC_CMP_VERSION, .op = NC_CMP_EQ,
                               .num = 99};
  struct nc_store_op else2[] = {
      {.type = NC_OP_DELETE_PREFIX, .key = K(f, "d")},
      {.type = NC_OP_DELETE, .key = K(f, "a")},
      {.type = NC_OP_PUT, .key = K(f, "e"), .value = "E", .value_len = 1},
  };
  EXPECT_RC(nc_store_txn(f->s, &never, 1, then_ops, 1, else2, 3, &ok, &rev), 0);
  EXPECT_TRUE(!ok);
  EXPECT_I64(rev, r + 2);
  want_value(f, "a", NULL);
  want_value(f, "d", NULL);
  want_value(f, "dx", NULL);
  want_value(f, "e", "E");
  want_value(f, "b", "B");

  /* A branch that writes nothing keeps the revision and still succeeds. */
  struct nc_store_op noop = {.type = NC_OP_DELETE_PREFIX, .key = K(f, "nothing/")};
  EXPECT_RC(nc_store_txn(f->s, NULL, 0, &noop, 1, NULL, 0, &ok, &rev), 0);
  EXPECT_TRUE(ok);
  EXPECT_I64(rev, r + 2);
  EXPECT_RC(nc_store_txn(f->s, &never, 1, NULL, 0, NULL, 0, &ok, &rev), 0);
  EXPECT_TRUE(!ok);
  EXPECT_I64(rev, r + 2);
  EXPECT_I64(cur(f), r + 2);
}

static void test_txn_rejects(void **state) {
  struct fx *f = *state;
  put(f, "x", "x");
  int64_t r = cur(f);
  bool ok = false;
  struct nc_store_op dup[] = {
      {.type = NC_OP_PUT, .key = K(f, "n"), .value = "1", .value_len = 1},
      {.type = NC_OP_PUT, .key = K(f, "n"), .value = "2", .value_len = 1},
  };
  EXPECT_RC(nc_store_txn(f->s, NULL, 0, dup, 2, NULL, 0, &ok, NULL), -EINVAL);
  /* The check covers the branch not taken too. */
  EXPECT_RC(nc_store_txn(f->s, NULL, 0, dup, 1, dup, 2, &ok, NULL), -EINVAL);
  struct nc_store_op put_del[] = {
      {.type = NC_OP_PUT, .key = K(f, "x/y"), .value = "1", .value_len = 1},
      {.type = NC_OP_DELETE_PREFIX, .key = K(f, "x")},
  };
  EXPECT_RC(nc_store_txn(f->s, NULL, 0, put_del, 2, NULL, 0, &ok, NULL), -EINVAL);
  put_del[1].type = NC_OP_DELETE;
  put_del[1].key = K(f, "x/y");
  EXPECT_RC(nc_store_txn(f->s, NULL, 0, put_del, 2, NULL, 0, &ok, NULL), -EINVAL);
  EXPECT_I64(cur(f), r);
  want_value(f, "n", NULL);
  want_value(f, "x/y", NULL);

  /* Overlapping deletes are fine. */
  struct nc_store_op dels[] = {
      {.type = NC_OP_DELETE, .key = K(f, "x")},
      {.type = NC_OP_DELETE_PREFIX, .key = K(f, "x")},
  };
  EXPECT_RC(nc_store_txn(f->s, NULL, 0, dels, 2, NULL, 0, &ok, NULL), 0);
  EXPECT_I64(cur(f), r + 1);
  r++;

  /* Malformed ops. */
  struct nc_store_op bad = {.type = (enum nc_store_op_type)42, .key = K(f, "q")};
  EXPECT_RC(nc_store_txn(f->s, NULL, 0, &bad, 1, NULL, 0, &ok, NULL), -EINVAL);
  bad.type = NC_OP_DELETE_PREFIX;
  bad.key = "";
  EXPECT_RC(nc_store_txn(f->s, NULL, 0, &bad, 1, NULL, 0, &ok, NULL), -EINVAL);
  bad.key = NULL;
  EXPECT_RC(nc_store_txn(f->s, NULL, 0, &bad, 1, NULL, 0, &ok, NULL), -EINVAL);
  bad = (struct nc_store_op){.type = NC_OP_PUT, .key = K(f, "q"), .value = NULL, .value_len = 3};
  EXPECT_RC(nc_store_txn(f->s, NULL, 0, &bad, 1, NULL, 0, &ok, NULL), -EINVAL);
  bad.value = "abc";
  bad.lease = -1;
  EXPECT_RC(nc_store_txn(f->s, NULL, 0, &bad, 1, NULL, 0, &ok, NULL), -EINVAL);
  struct nc_store_cmp badc = {.key = K(f, "q"), .target = (enum nc_store_cmp_target)9};
  EXPECT_RC(nc_store_txn(f->s, &badc, 1, NULL, 0, NULL, 0, &ok, NULL), -EINVAL);
  badc = (struct nc_store_cmp){.key = K(f, "q"), .op = (enum nc_store_cmp_op)9};
  EXPECT_RC(nc_store_txn(f->s, &badc, 1, NULL, 0, NULL, 0, &ok, NULL), -EINVAL);
  EXPECT_RC(nc_store_txn(f->s, NULL, 1, NULL, 0, NULL, 0, &ok, NULL), -EINVAL);
  EXPECT_RC(nc_store_txn(NULL, NULL, 0, NULL, 0, NULL, 0, &ok, NULL), -EINVAL);
  EXPECT_I64(cur(f), r);
  want_value(f, "q", NULL);
}

static void test_txn_op_count_caps(void **state) {
  struct fx *f = *state;
  enum { N = NC_STORE_TXN_OPS_MAX + 1 };
  static struct nc_store_op ops[N];
  static struct nc_store_cmp cmps[N];
  static char keys[N][64];
  for (int i = 0; i < N; i++) {
    snprintf(keys[i], sizeof keys[i], "%sm/%03d", f->prefix, i);
    ops[i] = (struct nc_store_op){.type = NC_OP_PUT, .key = keys[i], .value = "v",
                                  .value_len = 1};
    cmps[i] = (struct nc_store_cmp){.key = keys[i], .target = NC_CMP_VERSION, .op = NC_CMP_EQ};
  }
  int64_t r = cur(f);
  bool ok = false;
  EXPECT_RC(nc_store_txn(f->s, NULL, 0, ops, N, NULL, 0, &ok, NULL), NC_E_TOOBIG);
  EXPECT_RC(nc_store_txn(f->s, NULL, 0, ops, 1, ops, N, &ok, NULL), NC_E_TOOBIG);
  EXPECT_RC(nc_store_txn(f->s, cmps, N, ops, 1, NULL, 0, &ok, NULL), NC_E_TOOBIG);
  EXPECT_I64(cur(f), r);
  want_value(f, "m/000", NULL);
  /* Exactly the cap: one revision for all of it. */
  int64_t rev = -1;
  EXPECT_RC(nc_store_txn(f->s, cmps, N - 1, ops, N - 1, NULL, 0, &ok, &rev), 0);
  EXPECT_TRUE(ok);
  EXPECT_I64(rev, r + 1);
  struct nc_kv_list l;
  EXPECT_RC(nc_store_range(f->s, K(f, "m/"), 0, &l), 0);
  EXPECT_I64(l.count, N - 1);
  for (size_t i = 0; i < l.count; i++)
    EXPECT_I64(l.items[i].mod_rev, r + 1);
  nc_kv_list_free(&l);
}

static void test_cas(void **state) {
  struct fx *f = *state;
  const char *k = K(f, "owner");
  int64_t r1 = -1, r2 = -1, rev = -1;
  EXPECT_RC(nc_store_cas(f->s, k, 0, "host-a", 6, &r1), 0);
  EXPECT_I64(r1, cur(f));
  /* Create-if-absent fails once it exists. */
  EXPECT_RC(nc_store_cas(f->s, k, 0, "host-b", 6, &rev), NC_E_TXNFAIL);
  want_value(f, "owner", "host-a");
  EXPECT_I64(cur(f), r1);
  /* Update-if-unchanged. */
  EXPECT_RC(nc_store_cas(f->s, k, r1, "host-b", 6, &r2), 0);
  EXPECT_I64(r2, r1 + 1);
  EXPECT_RC(nc_store_cas(f->s, k, r1, "host-c", 6, NULL), NC_E_TXNFAIL);
  EXPECT_RC(nc_store_cas(f->s, k, r2 + 1, "host-c", 6, NULL), NC_E_TXNFAIL);
  want_value(f, "owner", "host-b");
  struct nc_kv kv = get_kv(f, "owner");
  EXPECT_I64(kv.version, 2);
  EXPECT_I64(kv.mod_rev, r2);
  nc_kv_free(&kv);
  EXPECT_RC(nc_store_cas(f->s, k, -1, "x", 1, NULL), -EINVAL);
  /* After a delete, create-if-absent works again. */
  EXPECT_RC(nc_store_delete(f->s, k, NULL), 0);
  EXPECT_RC(nc_store_cas(f->s, k, r2, "host-d", 6, NULL), NC_E_TXNFAIL);
  EXPECT_RC(nc_store_cas(f->s, k, 0, "host-d", 6, NULL), 0);
  want_value(f, "owner", "host-d");
}

/* ---- caps ---- */

static void test_caps(void **state) {
  struct fx *f = *state;
  size_t plen = strlen(f->prefix);
  char *max_key = malloc(NC_STORE_KEY_MAX + 2);
  char *big = malloc(NC_STORE_VALUE_MAX + 1);
  assert_non_null(max_key);
  assert_non_null(big);
  memcpy(max_key, f->prefix, plen);
  memset(max_key + plen, 'k', NC_STORE_KEY_MAX + 1 - plen);
  /* exactly the cap; a view's cap is shorter by its prefix */
  const char *view = getenv("NC_STORE_VIEW");
  size_t cap = NC_STORE_KEY_MAX - (view ? strlen(view) : 0);
  max_key[cap] = '\0';
  memset(big, 'v', NC_STORE_VALUE_MAX + 1);

  int64_t r = cur(f);
  EXPECT_RC(nc_store_put(f->s, max_key, "ok", 2, 0, NULL), 0);
  EXPECT_RC(nc_store_put(f->s, K(f, "big"), big, NC_STORE_VALUE_MAX, 0, NULL), 0);
  struct nc_kv kv;
  EXPECT_RC(nc_store_get(f->s, K(f, "big"), &kv), 0);
  EXPECT_I64(kv.value_len, NC_STORE_VALUE_MAX);
  assert_memory_equal(kv.value, big, NC_STORE_VALUE_MAX);
  nc_kv_free(&kv);
  EXPECT_RC(nc_store_get(f->s, max_key, &kv), 0);
  nc_kv_free(&kv);
  r += 2;

  max_key[cap] = 'k'; /* one past the cap */
  max_key[cap + 1] = '\0';
  EXPECT_RC(nc_store_put(f->s, max_key, "no", 2, 0, NULL), NC_E_TOOBIG);
  EXPECT_RC(nc_store_get(f->s, max_key, &kv), NC_E_TOOBIG);
  EXPECT_RC(nc_store_delete(f->s, max_key, NULL), NC_E_TOOBIG);
  EXPECT_RC(nc_store_cas(f->s, max_key, 0, "no", 2, NULL), NC_E_TOOBIG);
  struct nc_kv_list l;
  EXPECT_RC(nc_store_range(f->s, max_key, 0, &l), NC_E_TOOBIG);
  struct nc_store_watch *w = (struct nc_store_watch *)&l; /* must be reset to NULL */
  EXPECT_RC(nc_store_watch_open(f->s, max_key, 0, &w), NC_E_TOOBIG);
  EXPECT_TRUE(w == NULL);
  struct nc_store_cmp c = {.key = max_key, .target = NC_CMP_VERSION};
  EXPECT_RC(nc_store_txn(f->s, &c, 1, NULL, 0, NULL, 0, NULL, NULL), NC_E_TOOBIG);
  EXPECT_RC(nc_store_put(f->s, K(f, "big2"), big, NC_STORE_VALUE_MAX + 1, 0, NULL), NC_E_TOOBIG);
  EXPECT_RC(nc_store_cas(f->s, K(f, "big2"), 0, big, NC_STORE_VALUE_MAX + 1, NULL), NC_E_TOOBIG);
  struct nc_store_cmp cv = {.key = K(f, "big"), .target = NC_CMP_VALUE, .value = big,
                            .value_len = NC_STORE_VALUE_MAX + 1};
  EXPECT_RC(nc_store_txn(f->s, &cv, 1, NULL, 0, NULL, 0, NULL, NULL), NC_E_TOOBIG);
  /* An oversized op in the branch not taken still fails the whole txn. */
  struct nc_store_op small = {.type = NC_OP_PUT, .key = K(f, "small"), .value = "s", .value_len = 1};
  struct nc_store_op huge = {.type = NC_OP_PUT, .key = K(f, "big2"), .value = big,
                             .value_len = NC_STORE_VALUE_MAX + 1};
  EXPECT_RC(nc_store_txn(f->s, NULL, 0, &small, 1, &huge, 1, NULL, NULL), NC_E_TOOBIG);

  /* Empty and NULL keys are invalid, not too big. */
  EXPECT_RC(nc_store_put(f->s, "", "x", 1, 0, NULL), -EINVAL);
  EXPECT_RC(nc_store_put(f->s, NULL, "x", 1, 0, NULL), -EINVAL);
  EXPECT_RC(nc_store_get(f->s, "", &kv), -EINVAL);
  EXPECT_RC(nc_store_get(f->s, K(f, "x"), NULL), -EINVAL);

  EXPECT_I64(cur(f), r);
  want_value(f, "big2", NULL);
  want_value(f, "small", NULL);
  free(max_key);
  free(big);
}

/* ---- leases ---- */

static void test_lease_expiry(void **state) {
  struct fx *f = *state;
  int64_t ttl = ttl_ms(f), id = 0, id2 = 0;
  EXPECT_RC(nc_store_lease_grant(f->s, ttl, &id), 0);
  EXPECT_TRUE(id > 0);
  EXPECT_RC(nc_store_lease_grant(f->s, ttl * 100, &id2), 0);
  EXPECT_TRUE(id2 > 0 && id2 != id);
  EXPECT_RC(nc_store_put(f->s, K(f, "l/b"), "b", 1, id, NULL), 0);
  EXPECT_RC(nc_store_put(f->s, K(f, "l/a"), "a", 1, id, NULL), 0);
  EXPECT_RC(nc_store_put(f->s, K(f, "l/c"), "c", 1, id2, NULL), 0);
  put(f, "l/plain", "p");
  struct nc_kv kv = get_kv(f, "l/a");
  EXPECT_I64(kv.lease, id);
  nc_kv_free(&kv);
  struct nc_store_watch *w = wopen(f, K(f, "l/"), 0);
  int64_t r = cur(f);

  if (f->manual) {
    advance(f, ttl - 1);
    want_value(f, "l/a", "a");
    EXPECT_I64(cur(f), r);
    advance(f, 1);
  }
  expect_gone_soon(f, "l/a");
  want_value(f, "l/b", NULL);
  want_value(f, "l/c", "c");
  want_value(f, "l/plain", "p");
  /* Both keys go in one revision, as delete events in key order. */
  next_event(f, w, NC_EV_DELETE, "l/a", NULL, r + 1);
  next_event(f, w, NC_EV_DELETE, "l/b", NULL, r + 1);
  expect_no_event(w, 0);
  EXPECT_I64(cur(f), r + 1);
  wclose(f, w);

  EXPECT_RC(nc_store_lease_keepalive(f->s, id), NC_E_LEASE);
  EXPECT_RC(nc_store_lease_revoke(f->s, id), NC_E_LEASE);
  EXPECT_RC(nc_store_put(f->s, K(f, "l/late"), "x", 1, id, NULL), NC_E_LEASE);
  want_value(f, "l/late", NULL);
  EXPECT_RC(nc_store_lease_keepalive(f->s, id2), 0);
  EXPECT_RC(nc_store_lease_revoke(f->s, id2), 0);
}

/* Waiting in watch_next is enough for expiry: nobody else calls the store. */
static void test_lease_expiry_wakes_watch(void **state) {
  struct fx *f = *state;
  int64_t id = 0;
  EXPECT_RC(nc_store_lease_grant(f->s, ttl_ms(f), &id), 0);
  EXPECT_RC(nc_store_put(f->s, K(f, "w/k"), "v", 1, id, NULL), 0);
  struct nc_store_watch *w = wopen(f, K(f, "w/"), 0);
  int64_t r = cur(f);
  if (f->manual) {
    expect_no_event(w, 0);
    advance(f, ttl_ms(f));
  }
  next_event(f, w, NC_EV_DELETE, "w/k", NULL, r + 1);
  wclose(f, w);
}

static void test_lease_keepalive(void **state) {
  struct fx *f = *state;
  int64_t ttl = ttl_ms(f), id = 0;
  EXPECT_RC(nc_store_lease_grant(f->s, ttl, &id), 0);
  EXPECT_RC(nc_store_put(f->s, K(f, "ka"), "v", 1, id, NULL), 0);
  advance(f, ttl / 2);
  EXPECT_RC(nc_store_lease_keepalive(f->s, id), 0);
  advance(f, ttl * 3 / 4); /* past the first deadline, before the new one */
  want_value(f, "ka", "v");
  if (f->manual) {
    advance(f, ttl / 4 - 1);
    want_value(f, "ka", "v");
    EXPECT_RC(nc_store_lease_keepalive(f->s, id), 0);
    advance(f, ttl - 1);
    want_value(f, "ka", "v");
    advance(f, 1);
  }
  expect_gone_soon(f, "ka");
  EXPECT_RC(nc_store_lease_keepalive(f->s, id), NC_E_LEASE);
}

static void test_lease_revoke(void **state) {
  struct fx *f = *state;
  int64_t id = 0, empty = 0;
  EXPECT_RC(nc_store_lease_grant(f->s, 3600 * 1000, &id), 0);
  EXPECT_RC(nc_store_put(f->s, K(f, "rv/1"), "1", 1, id, NULL), 0);
  EXPECT_RC(nc_store_put(f->s, K(f, "rv/2"), "2", 1, id, NULL), 0);
  int64_t r = cur(f);
  EXPECT_RC(nc_store_lease_revoke(f->s, id), 0);
  EXPECT_I64(cur(f), r + 1);
  want_value(f, "rv/1", NULL);
  want_value(f, "rv/2", NULL);
  EXPECT_RC(nc_store_lease_revoke(f->s, id), NC_E_LEASE);
  EXPECT_RC(nc_store_lease_keepalive(f->s, id), NC_E_LEASE);
  EXPECT_RC(nc_store_put(f->s, K(f, "rv/3"), "3", 1, id, NULL), NC_E_LEASE);
  /* A lease with no keys goes without a revision. */
  EXPECT_RC(nc_store_lease_grant(f->s, 3600 * 1000, &empty), 0);
  EXPECT_RC(nc_store_lease_revoke(f->s, empty), 0);
  EXPECT_I64(cur(f), r + 1);
  /* Leases nobody granted. */
  EXPECT_RC(nc_store_lease_revoke(f->s, 0x7fffffff), NC_E_LEASE);
  EXPECT_RC(nc_store_put(f->s, K(f, "rv/4"), "4", 1, 0x7fffffff, NULL), NC_E_LEASE);
  struct nc_store_op op = {.type = NC_OP_PUT, .key = K(f, "rv/5"), .value = "5", .value_len = 1,
                           .lease = 0x7fffffff};
  EXPECT_RC(nc_store_txn(f->s, NULL, 0, &op, 1, NULL, 0, NULL, NULL), NC_E_LEASE);
  EXPECT_I64(cur(f), r + 1);
  want_value(f, "rv/4", NULL);
  want_value(f, "rv/5", NULL);
  /* Bad arguments. */
  int64_t junk = 0;
  EXPECT_RC(nc_store_lease_grant(f->s, 0, &junk), -EINVAL);
  EXPECT_RC(nc_store_lease_grant(f->s, -5, &junk), -EINVAL);
  EXPECT_RC(nc_store_lease_grant(f->s, NC_STORE_LEASE_TTL_MAX_MS + 1, &junk), -EINVAL);
  EXPECT_RC(nc_store_lease_keepalive(f->s, 0), -EINVAL);
  EXPECT_RC(nc_store_lease_revoke(f->s, -1), -EINVAL);
}

/* A put without a lease detaches the key (as etcd's put), CAS included. */
static void test_lease_detach(void **state) {
  struct fx *f = *state;
  int64_t id = 0;
  EXPECT_RC(nc_store_lease_grant(f->s, ttl_ms(f), &id), 0);
  struct nc_store_op ops[] = {
      {.type = NC_OP_PUT, .key = K(f, "dt/a"), .value = "1", .value_len = 1, .lease = id},
      {.type = NC_OP_PUT, .key = K(f, "dt/b"), .value = "1", .value_len = 1, .lease = id},
      {.type = NC_OP_PUT, .key = K(f, "dt/c"), .value = "1", .value_len = 1, .lease = id},
  };
  EXPECT_RC(nc_store_txn(f->s, NULL, 0, ops, 3, NULL, 0, NULL, NULL), 0);
  struct nc_kv kv = get_kv(f, "dt/a");
  EXPECT_I64(kv.lease, id);
  nc_kv_free(&kv);
  EXPECT_RC(nc_store_put(f->s, K(f, "dt/a"), "2", 1, 0, NULL), 0);
  kv = get_kv(f, "dt/b");
  EXPECT_RC(nc_store_cas(f->s, K(f, "dt/b"), kv.mod_rev, "2", 1, NULL), 0);
  nc_kv_free(&kv);
  kv = get_kv(f, "dt/a");
  EXPECT_I64(kv.lease, 0);
  nc_kv_free(&kv);
  advance(f, ttl_ms(f));
  expect_gone_soon(f, "dt/c");
  want_value(f, "dt/a", "2");
  want_value(f, "dt/b", "2");
}

/* ---- watch ---- */

static void test_watch_from_now(void **state) {
  struct fx *f = *state;
  put(f, "wn/before", "x");
  struct nc_store_watch *w = wopen(f, K(f, "wn/"), 0);
  expect_no_event(w, 0);
  put(f, "wn/k", "1");
  int64_t r = put(f, "wn/k", "2");
  struct nc_store_event ev;
  EXPECT_RC(nc_store_watch_next(w, 2000, &ev), 0);
  EXPECT_I64(ev.type, NC_EV_PUT);
  assert_string_equal(ev.kv.key, K(f, "wn/k"));
  assert_string_equal(ev.kv.value, "1");
  EXPECT_I64(ev.kv.version, 1);
  EXPECT_I64(ev.kv.create_rev, r - 1);
  EXPECT_I64(ev.kv.mod_rev, r - 1);
  nc_store_event_free(&ev);
  EXPECT_TRUE(ev.kv.key == NULL);
  EXPECT_RC(nc_store_watch_next(w, 2000, &ev), 0);
  EXPECT_I64(ev.kv.version, 2);
  EXPECT_I64(ev.kv.create_rev, r - 1);
  EXPECT_I64(ev.kv.mod_rev, r);
  assert_string_equal(ev.kv.value, "2");
  nc_store_event_free(&ev);
  expect_no_event(w, 0);
  wclose(f, w);
  nc_store_watch_close(NULL);
}

static void test_watch_replay(void **state) {
  struct fx *f = *state;
  int64_t r0 = cur(f);
  put(f, "wr/a", "1");
  put(f, "wr/b", "2");
  EXPECT_RC(nc_store_delete(f->s, K(f, "wr/a"), NULL), 0);
  put(f, "wr/a", "3");
  struct nc_store_watch *w = wopen(f, K(f, "wr/"), r0);
  next_event(f, w, NC_EV_PUT, "wr/a", "1", r0 + 1);
  next_event(f, w, NC_EV_PUT, "wr/b", "2", r0 + 2);
  next_event(f, w, NC_EV_DELETE, "wr/a", NULL, r0 + 3);
  next_event(f, w, NC_EV_PUT, "wr/a", "3", r0 + 4);
  expect_no_event(w, 0);
  wclose(f, w);
  /* From the middle: strictly after start_rev. */
  w = wopen(f, K(f, "wr/"), r0 + 2);
  next_event(f, w, NC_EV_DELETE, "wr/a", NULL, r0 + 3);
  next_event(f, w, NC_EV_PUT, "wr/a", "3", r0 + 4);
  expect_no_event(w, 0);
  wclose(f, w);
  /* From a future revision: nothing yet, then the event. */
  w = wopen(f, K(f, "wr/"), r0 + 5);
  put(f, "wr/c", "skipped"); /* r0 + 5 */
  put(f, "wr/c", "seen");    /* r0 + 6 */
  next_event(f, w, NC_EV_PUT, "wr/c", "seen", r0 + 6);
  wclose(f, w);
  EXPECT_RC(nc_store_watch_open(f->s, K(f, "wr/"), -1, &w), -EINVAL);
}

static void test_watch_prefix(void **state) {
  struct fx *f = *state;
  struct nc_store_watch *w = wopen(f, K(f, "a/"), 0);
  put(f, "a", "no");
  put(f, "a/x", "yes1");
  put(f, "ab", "no");
  put(f, "b/a/", "no");
  put(f, "a/", "yes2");
  put(f, "a0", "no");
  put(f, "a/y/z", "yes3");
  next_event(f, w, NC_EV_PUT, "a/x", "yes1", -1);
  next_event(f, w, NC_EV_PUT, "a/", "yes2", -1);
  next_event(f, w, NC_EV_PUT, "a/y/z", "yes3", -1);
  expect_no_event(w, 0);
  wclose(f, w);
}

static void test_watch_ordering(void **state) {
  struct fx *f = *state;
  int64_t r0 = cur(f);
  char key[32], val[32];
  for (int i = 0; i < 50; i++) {
    snprintf(key, sizeof key, "o/%d", i % 7);
    snprintf(val, sizeof val, "%d", i);
    put(f, key, val);
  }
  struct nc_store_watch *w = wopen(f, K(f, "o/"), r0);
  for (int i = 0; i < 50; i++) {
    snprintf(key, sizeof key, "o/%d", i % 7);
    snprintf(val, sizeof val, "%d", i);
    next_event(f, w, NC_EV_PUT, key, val, r0 + 1 + i);
  }
  expect_no_event(w, 0);
  wclose(f, w);
}

static void test_watch_txn_events(void **state) {
  struct fx *f = *state;
  put(f, "t/z", "z");
  put(f, "t/p/2", "2");
  put(f, "t/p/1", "1");
  int64_t r = cur(f);
  struct nc_store_watch *w = wopen(f, K(f, "t/"), r);
  struct nc_store_op ops[] = {
      {.type = NC_OP_PUT, .key = K(f, "t/y"), .value = "Y", .value_len = 1},
      {.type = NC_OP_PUT, .key = K(f, "t/x"), .value = "X", .value_len = 1},
      {.type = NC_OP_DELETE, .key = K(f, "t/z")},
      {.type = NC_OP_DELETE_PREFIX, .key = K(f, "t/p/")},
  };
  EXPECT_RC(nc_store_txn(f->s, NULL, 0, ops, 4, NULL, 0, NULL, NULL), 0);
  /* One revision; events in op order, a prefix delete in key order. */
  next_event(f, w, NC_EV_PUT, "t/y", "Y", r + 1);
  next_event(f, w, NC_EV_PUT, "t/x", "X", r + 1);
  next_event(f, w, NC_EV_DELETE, "t/z", NULL, r + 1);
  next_event(f, w, NC_EV_DELETE, "t/p/1", NULL, r + 1);
  next_event(f, w, NC_EV_DELETE, "t/p/2", NULL, r + 1);
  expect_no_event(w, 0);
  wclose(f, w);
}

static void test_watch_timeout(void **state) {
  struct fx *f = *state;
  struct nc_store_watch *w = wopen(f, K(f, "quiet/"), 0);
  put(f, "loud", "elsewhere");
  int64_t t0 = now_ms();
  expect_no_event(w, 100);
  int64_t took = now_ms() - t0;
  if (took < 90 || took > 3000)
    fail_msg("watch_next(100 ms) returned after %lld ms", (long long)took);
  struct nc_store_event ev;
  EXPECT_RC(nc_store_watch_next(w, -1, &ev), -EINVAL);
  EXPECT_RC(nc_store_watch_next(NULL, 0, &ev), -EINVAL);
  wclose(f, w);
}

struct delayed_put {
  struct fx *f;
  const char *key;
};

static void *delayed_put_main(void *arg) {
  struct delayed_put *d = arg;
  sleep_ms(100);
  nc_store_put(d->f->s, d->key, "late", 4, 0, NULL);
  return NULL;
}

static void test_watch_blocks_until_commit(void **state) {
  struct fx *f = *state;
  struct nc_store_watch *w = wopen(f, K(f, "bl/"), 0);
  struct delayed_put d = {f, K(f, "bl/k")};
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, delayed_put_main, &d), 0);
  int64_t t0 = now_ms();
  struct nc_store_event ev;
  EXPECT_RC(nc_store_watch_next(w, 10000, &ev), 0);
  int64_t took = now_ms() - t0;
  pthread_join(t, NULL);
  assert_string_equal(ev.kv.value, "late");
  nc_store_event_free(&ev);
  if (took > 5000)
    fail_msg("watch_next woke %lld ms after a commit 100 ms in", (long long)took);
  wclose(f, w);
}

struct blocked_watch {
  struct nc_store_watch *w;
  int rc;
  int64_t took_ms;
};

static void *blocked_watch_main(void *arg) {
  struct blocked_watch *b = arg;
  struct nc_store_event ev;
  int64_t t0 = now_ms();
  b->rc = nc_store_watch_next(b->w, 10000, &ev);
  b->took_ms = now_ms() - t0;
  if (b->rc == 0)
    nc_store_event_free(&ev);
  return NULL;
}

/* Closing the store is how a daemon stops its watcher threads. */
static void test_close_wakes_watches(void **state) {
  struct fx *f = *state;
  struct nc_store_watch *idle = NULL;
  struct blocked_watch b = {0};
  EXPECT_RC(nc_store_watch_open(f->s, K(f, "cw/"), 0, &b.w), 0);
  EXPECT_RC(nc_store_watch_open(f->s, K(f, "cw/"), 0, &idle), 0);
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, blocked_watch_main, &b), 0);
  sleep_ms(100);
  nc_store_close(f->s);
  f->s = NULL;
  pthread_join(t, NULL);
  EXPECT_RC(b.rc, -ESHUTDOWN);
  if (b.took_ms > 5000)
    fail_msg("watch_next took %lld ms to notice the close", (long long)b.took_ms);
  struct nc_store_event ev;
  EXPECT_RC(nc_store_watch_next(idle, 0, &ev), -ESHUTDOWN);
  nc_store_watch_close(b.w);
  nc_store_watch_close(idle); /* the last one frees the store (ASan checks) */
  EXPECT_RC(open_store(f), 0);
}

static void test_watch_after_compaction(void **state) {
  struct fx *f = *state;
  int64_t r0 = cur(f);
  for (int i = 0; i < 5; i++)
    put(f, "c/k", "v");
  int64_t r = cur(f);
  EXPECT_RC(nc_store_compact(f->s, r - 2), 0);
  struct nc_store_watch *w = (struct nc_store_watch *)f; /* must be reset to NULL */
  EXPECT_RC(nc_store_watch_open(f->s, K(f, "c/"), r0, &w), NC_E_COMPACTED);
  EXPECT_TRUE(w == NULL);
  EXPECT_RC(nc_store_watch_open(f->s, K(f, "c/"), r - 3, &w), NC_E_COMPACTED);
  /* From the compaction point on, history is whole. */
  w = wopen(f, K(f, "c/"), r - 2);
  next_event(f, w, NC_EV_PUT, "c/k", "v", r - 1);
  next_event(f, w, NC_EV_PUT, "c/k", "v", r);
  expect_no_event(w, 0);
  wclose(f, w);
  /* Compaction drops history, never data. */
  struct nc_kv kv = get_kv(f, "c/k");
  EXPECT_I64(kv.version, 5);
  EXPECT_I64(kv.create_rev, r0 + 1);
  nc_kv_free(&kv);
  EXPECT_RC(nc_store_compact(f->s, r - 2), NC_E_COMPACTED);
  EXPECT_RC(nc_store_compact(f->s, r + 1), -EINVAL);
  EXPECT_RC(nc_store_compact(f->s, 0), -EINVAL);
  EXPECT_I64(cur(f), r);
}

/* ---- concurrency ---- */

#define CAS_THREADS 4
#define CAS_ATTEMPTS 100

struct cas_worker {
  struct fx *f;
  const char *key;
  int wins, errors;
};

static void *cas_main(void *arg) {
  struct cas_worker *cw = arg;
  for (int i = 0; i < CAS_ATTEMPTS; i++) {
    struct nc_kv kv;
    int rc = nc_store_get(cw->f->s, cw->key, &kv);
    long n = 0;
    int64_t mod = 0;
    if (rc == 0) {
      n = strtol(kv.value, NULL, 10);
      mod = kv.mod_rev;
      nc_kv_free(&kv);
    } else if (rc != -ENOENT) {
      cw->errors++;
      continue;
    }
    char buf[32];
    int len = snprintf(buf, sizeof buf, "%ld", n + 1);
    rc = nc_store_cas(cw->f->s, cw->key, mod, buf, (size_t)len, NULL);
    if (rc == 0)
      cw->wins++;
    else if (rc != NC_E_TXNFAIL)
      cw->errors++;
  }
  return NULL;
}

static void test_concurrent_cas(void **state) {
  struct fx *f = *state;
  const char *key = K(f, "counter");
  int64_t r0 = cur(f);
  struct cas_worker cw[CAS_THREADS];
  pthread_t t[CAS_THREADS];
  for (int i = 0; i < CAS_THREADS; i++) {
    cw[i] = (struct cas_worker){f, key, 0, 0};
    assert_int_equal(pthread_create(&t[i], NULL, cas_main, &cw[i]), 0);
  }
  int wins = 0;
  for (int i = 0; i < CAS_THREADS; i++) {
    pthread_join(t[i], NULL);
    EXPECT_I64(cw[i].errors, 0);
    wins += cw[i].wins;
  }
  EXPECT_TRUE(wins >= CAS_ATTEMPTS); /* every round somebody wins */
  struct nc_kv kv = get_kv(f, "counter");
  EXPECT_I64(strtol(kv.value, NULL, 10), wins);
  EXPECT_I64(kv.version, wins);
  nc_kv_free(&kv);
  EXPECT_I64(cur(f), r0 + wins);
  /* History holds every increment, in order. */
  struct nc_store_watch *w = wopen(f, key, r0);
  char val[32];
  for (int i = 1; i <= wins; i++) {
    snprintf(val, sizeof val, "%d", i);
    next_event(f, w, NC_EV_PUT, "counter", val, r0 + i);
  }
  expect_no_event(w, 0);
  wclose(f, w);
}

/* ---- persistence ---- */

static void test_persistence(void **state) {
  struct fx *f = *state;
  put(f, "p/a", "1");
  put(f, "p/b", "2");
  EXPECT_RC(nc_store_delete(f->s, K(f, "p/b"), NULL), 0);
  int64_t id = 0;
  EXPECT_RC(nc_store_lease_grant(f->s, 3600 * 1000, &id), 0);
  EXPECT_RC(nc_store_put(f->s, K(f, "p/l"), "l", 1, id, NULL), 0);
  int64_t r = cur(f);
  nc_store_close(f->s);
  f->s = NULL;
  EXPECT_RC(open_store(f), 0);
  EXPECT_I64(cur(f), r);
  want_value(f, "p/a", "1");
  want_value(f, "p/b", NULL);
  struct nc_kv kv = get_kv(f, "p/l");
  EXPECT_I64(kv.lease, id);
  nc_kv_free(&kv);
  EXPECT_I64(put(f, "p/c", "3"), r + 1);
  /* History survives too. */
  struct nc_store_watch *w = wopen(f, K(f, "p/"), r - 1);
  next_event(f, w, NC_EV_PUT, "p/l", "l", r);
  next_event(f, w, NC_EV_PUT, "p/c", "3", r + 1);
  wclose(f, w);
  EXPECT_RC(nc_store_lease_revoke(f->s, id), 0);
  want_value(f, "p/l", NULL);
}

/* ---- a random walk checked against a model ---- */

#define MK 6

struct model_key {
  bool present;
  char value[16];
  int64_t create_rev, mod_rev, version;
};

static const char *const model_names[MK] = {"m/a", "m/b", "m/c/1", "m/c/2", "m/c", "n/x"};

static uint64_t rnd(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

static void model_check(struct fx *f, const struct model_key *m, int64_t rev, int step) {
  for (int i = 0; i < MK; i++) {
    struct nc_kv kv;
    int rc = nc_store_get(f->s, K(f, model_names[i]), &kv);
    if (!m[i].present) {
      if (rc != -ENOENT)
        fail_msg("step %d: %s present (rc %d), model says absent", step, model_names[i], rc);
      continue;
    }
    if (rc != 0)
      fail_msg("step %d: %s: rc %d (%s), model has \"%s\"", step, model_names[i], rc,
               nc_strerror(rc), m[i].value);
    if (strcmp(kv.value, m[i].value) != 0 || kv.create_rev != m[i].create_rev ||
        kv.mod_rev != m[i].mod_rev || kv.version != m[i].version)
      fail_msg("step %d: %s is \"%s\" c%lld m%lld v%lld; model \"%s\" c%lld m%lld v%lld", step,
               model_names[i], kv.value, (long long)kv.create_rev, (long long)kv.mod_rev,
               (long long)kv.version, m[i].value, (long long)m[i].create_rev,
               (long long)m[i].mod_rev, (long long)m[i].version);
    nc_kv_free(&kv);
  }
  EXPECT_I64(cur(f), rev);
}

static bool model_cmp(const struct model_key *k, const struct nc_store_cmp *c) {
  int d;
  if (c->target == NC_CMP_VALUE) {
    if (!k->present)
      return false;
    d = strcmp(k->value, (const char *)c->value);
  } else {
    int64_t have = !k->present                       ? 0
                   : c->target == NC_CMP_VERSION     ? k->version
                   : c->target == NC_CMP_CREATE_REV  ? k->create_rev
                                                     : k->mod_rev;
    d = have < c->num ? -1 : have > c->num;
  }
  switch (c->op) {
  case NC_CMP_EQ:
    return d == 0;
  case NC_CMP_NE:
    return d != 0;
  case NC_CMP_LT:
    return d < 0;
  case NC_CMP_GT:
    return d > 0;
  }
  return false;
}

/* Applies ops to the model at revision rev+1; returns whether it wrote. */
static bool model_apply(struct model_key *m, const struct nc_store_op *ops, const int *idx,
                        size_t n, int64_t rev) {
  bool wrote = false;
  for (size_t i = 0; i < n; i++) {
    for (int k = 0; k < MK; k++) {
      bool hit = ops[i].type == NC_OP_DELETE_PREFIX
                     ? strncmp(model_names[k], model_names[idx[i]], strlen(model_names[idx[i]])) == 0
                     : k == idx[i];
      if (!hit)
        continue;
      if (ops[i].type == NC_OP_PUT) {
        if (!m[k].present) {
          m[k].create_rev = rev + 1;
          m[k].version = 0;
        }
        m[k].present = true;
        m[k].version++;
        m[k].mod_rev = rev + 1;
        snprintf(m[k].value, sizeof m[k].value, "%s", (const char *)ops[i].value);
        wrote = true;
      } else if (m[k].present) {
        memset(&m[k], 0, sizeof m[k]);
        wrote = true;
      }
    }
  }
  return wrote;
}

static void test_random_against_model(void **state) {
  struct fx *f = *state;
  struct model_key m[MK] = {0};
  uint64_t seed = 0x9e3779b97f4a7c15ULL;
  int64_t r0 = cur(f), rev = r0;
  char vals[4][16];
  for (int step = 0; step < 300; step++) {
    struct nc_store_op ops[3];
    int idx[3];
    size_t nops = 1 + rnd(&seed) % 3;
    /* Distinct keys, puts never under a delete-prefix of the same branch. */
    int used = 0;
    size_t n = 0;
    for (size_t i = 0; i < nops; i++) {
      int k = (int)(rnd(&seed) % MK);
      int kind = (int)(rnd(&seed) % 4); /* put twice as often */
      if (used & (1 << k))
        continue;
      used |= 1 << k;
      idx[n] = k;
      snprintf(vals[n], sizeof vals[n], "v%d", (int)(rnd(&seed) % 5));
      ops[n] = (struct nc_store_op){.key = K(f, model_names[k]), .value = vals[n],
                                    .value_len = strlen(vals[n])};
      ops[n].type = kind < 2 ? NC_OP_PUT : kind == 2 ? NC_OP_DELETE : NC_OP_DELETE_PREFIX;
      n++;
    }
    bool clash = false;
    for (size_t i = 0; i < n; i++)
      for (size_t j = 0; j < n; j++)
        if (i != j && ops[i].type == NC_OP_PUT && ops[j].type == NC_OP_DELETE_PREFIX &&
            strncmp(model_names[idx[i]], model_names[idx[j]], strlen(model_names[idx[j]])) == 0)
          clash = true;
    if (clash)
      continue;
    struct nc_store_cmp c = {0};
    size_t ncmps = rnd(&seed) % 2;
    int ck = (int)(rnd(&seed) % MK);
    if (ncmps) {
      c.key = K(f, model_names[ck]);
      c.target = (enum nc_store_cmp_target)(rnd(&seed) % 4);
      c.op = (enum nc_store_cmp_op)(rnd(&seed) % 4);
      c.num = c.target == NC_CMP_VERSION ? (int64_t)(rnd(&seed) % 3)
                                         : rev - (int64_t)(rnd(&seed) % 4);
      c.value = vals[3];
      snprintf(vals[3], sizeof vals[3], "v%d", (int)(rnd(&seed) % 5));
      c.value_len = strlen(vals[3]);
    }
    bool want = !ncmps || model_cmp(&m[ck], &c);
    bool ok = !want;
    int64_t got_rev = -1;
    /* The else branch is the then branch reversed, to use both. */
    struct nc_store_op rev_ops[3];
    int rev_idx[3];
    for (size_t i = 0; i < n; i++) {
      rev_ops[i] = ops[n - 1 - i];
      rev_idx[i] = idx[n - 1 - i];
    }
    EXPECT_RC(nc_store_txn(f->s, ncmps ? &c : NULL, ncmps, ops, n, rev_ops, n, &ok, &got_rev),
              0);
    if (ok != want)
      fail_msg("step %d: txn took %s, model says %s", step, ok ? "then" : "else",
               want ? "then" : "else");
    if (model_apply(m, want ? ops : rev_ops, want ? idx : rev_idx, n, rev))
      rev++;
    EXPECT_I64(got_rev, rev);
    model_check(f, m, rev, step);
  }
  EXPECT_TRUE(rev - r0 > 100); /* the walk really wrote */

  /* Replaying the history onto nothing rebuilds the same state. */
  struct model_key replay[MK] = {0};
  struct nc_store_watch *w = wopen(f, f->prefix, r0);
  int64_t last = r0;
  for (;;) {
    struct nc_store_event ev;
    int rc = nc_store_watch_next(w, 0, &ev);
    if (rc == -ETIMEDOUT)
      break;
    EXPECT_RC(rc, 0);
    EXPECT_TRUE(ev.kv.mod_rev >= last && ev.kv.mod_rev <= last + 1); /* no gaps */
    last = ev.kv.mod_rev;
    int k = -1;
    for (int i = 0; i < MK; i++)
      if (strcmp(ev.kv.key, K(f, model_names[i])) == 0)
        k = i;
    EXPECT_TRUE(k >= 0);
    if (ev.type == NC_EV_PUT) {
      replay[k].present = true;
      snprintf(replay[k].value, sizeof replay[k].value, "%s", ev.kv.value);
      replay[k].create_rev = ev.kv.create_rev;
      replay[k].mod_rev = ev.kv.mod_rev;
      replay[k].version = ev.kv.version;
    } else {
      memset(&replay[k], 0, sizeof replay[k]);
    }
    nc_store_event_free(&ev);
  }
  wclose(f, w);
  EXPECT_I64(last, rev);
  for (int i = 0; i < MK; i++) {
    EXPECT_I64(replay[i].present, m[i].present);
    EXPECT_I64(replay[i].version, m[i].version);
    EXPECT_I64(replay[i].mod_rev, m[i].mod_rev);
    EXPECT_I64(replay[i].create_rev, m[i].create_rev);
    assert_string_equal(replay[i].value, m[i].value);
  }
}

/* ---- misc API edges ---- */

static void test_api_edges(void **state) {
  struct fx *f = *state;
  struct nc_store *s = (struct nc_store *)f; /* must be reset to NULL */
  EXPECT_RC(nc_store_open("bogus:/x", NULL, &s), -EINVAL);
  EXPECT_TRUE(s == NULL);
  EXPECT_RC(nc_store_open("sqlite:", NULL, &s), -EINVAL);
  /* Nothing listens on port 1: the etcd back-end's probe is refused. */
  EXPECT_RC(nc_store_open("etcd:http://127.0.0.1:1", NULL, &s), -ECONNREFUSED);
  EXPECT_TRUE(s == NULL);
  EXPECT_RC(nc_store_open(NULL, NULL, &s), -EINVAL);
  nc_store_close(NULL);
  assert_string_equal(nc_store_backend_name(NULL), "none");
  EXPECT_TRUE(strcmp(nc_store_backend_name(f->s), "none") != 0);
  EXPECT_I64(nc_store_current_rev(NULL), -EINVAL);
  nc_kv_free(NULL);
  nc_kv_list_free(NULL);
  nc_store_event_free(NULL);
  struct nc_kv_list l;
  EXPECT_RC(nc_store_range(f->s, NULL, 0, &l), -EINVAL);
  EXPECT_RC(nc_store_range(NULL, "", 0, &l), -EINVAL);
}

int main(void) {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
  const struct CMUnitTest tests[] = {
      T(test_put_get_revisions),
      T(test_delete_resets_version),
      T(test_range_prefix),
      T(test_range_limit),
      T(test_txn_compare_targets),
      T(test_txn_compare_absent),
      T(test_txn_compare_conjunction),
      T(test_txn_ops),
      T(test_txn_rejects),
      T(test_txn_op_count_caps),
      T(test_cas),
      T(test_caps),
      T(test_lease_expiry),
      T(test_lease_expiry_wakes_watch),
      T(test_lease_keepalive),
      T(test_lease_revoke),
      T(test_lease_detach),
      T(test_watch_from_now),
      T(test_watch_replay),
      T(test_watch_prefix),
      T(test_watch_ordering),
      T(test_watch_txn_events),
      T(test_watch_timeout),
      T(test_watch_blocks_until_commit),
      T(test_watch_after_compaction),
      T(test_close_wakes_watches),
      T(test_concurrent_cas),
      T(test_persistence),
      T(test_random_against_model),
      T(test_api_edges),
  };
#undef T
  return cmocka_run_group_tests_name("store_conformance", tests, NULL, NULL);
}
