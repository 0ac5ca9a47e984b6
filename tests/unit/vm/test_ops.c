/* Operations (src/vm/ops.h) over a real SQLite store in a temp dir and a
 * manual clock: life cycle, cancellation, waiting, persistence and
 * recovery after a crash, and trimming past NC_OPS_KEEP. */
#include "nc_test.h"

#include <jansson.h>
#include <pthread.h>

#include "store/store.h"
#include "util/errinfo.h"
#include "vm/events.h"
#include "vm/ops.h"

struct fx {
  char dir[128];
  char uri[256];
  struct nc_clock_manual clock;
  struct nct_rand rand;
  struct nc_store *store;
  struct nc_events *events;
  struct nc_ops *ops;
};

static int setup(void **state) {
  struct fx *f = calloc(1, sizeof *f);
  if (!f || nct_mkdtemp(f->dir, sizeof f->dir, "ops") != 0)
    return -1;
  snprintf(f->uri, sizeof f->uri, "sqlite:%s/s.db", f->dir);
  nc_clock_manual_init(&f->clock, 1000);
  nct_rand_init(&f->rand, 42);
  if (nc_store_open(f->uri, &f->clock.clock, &f->store) != 0 || nc_events_new(&f->events) != 0 ||
      nc_ops_new(f->store, &f->clock.clock, &f->rand.r, f->events, &f->ops) != 0)
    return -1;
  *state = f;
  return 0;
}

static int teardown(void **state) {
  struct fx *f = *state;
  nc_ops_free(f->ops);
  nc_events_free(f->events);
  nc_store_close(f->store);
  nct_rmtree(f->dir);
  free(f);
  return 0;
}

static json_t *get(struct fx *f, const char *id, int wait_ms) {
  json_t *j = NULL;
  int rc = nc_ops_get_json(f->ops, id, wait_ms, &j);
  if (rc != 0)
    fail_msg("nc_ops_get_json(%s) returned %d (%s)", id, rc, nc_strerror(rc));
  assert_non_null(j);
  return j;
}

static const char *jstr(json_t *j, const char *k) { return json_string_value(json_object_get(j, k)); }

/* The stored record of an operation, straight from the store. */
static json_t *stored(struct fx *f, const char *id) {
  char key[64];
  snprintf(key, sizeof key, "/nc/ops/%s", id);
  struct nc_kv kv;
  if (nc_store_get(f->store, key, &kv) != 0)
    return NULL;
  json_t *j = json_loadb(kv.value, kv.value_len, 0, NULL);
  nc_kv_free(&kv);
  return j;
}

static void test_create_run_finish(void **state) {
  struct fx *f = *state;
  struct nc_op *op;
  EXPECT_RC(nc_ops_create(f->ops, "vm.start", "web-1", &op), 0);
  const char *id = nc_op_id(op);
  EXPECT_I64(strlen(id), NC_OP_ID_LEN);
  EXPECT_TRUE(strncmp(id, "op-", 3) == 0);
  EXPECT_I64(strspn(id + 3, "0123456789abcdef"), 16);

  json_t *j = get(f, id, 0);
  EXPECT_STR(jstr(j, "status"), "pending");
  EXPECT_STR(jstr(j, "kind"), "vm.start");
  EXPECT_STR(jstr(j, "target"), "web-1");
  EXPECT_TRUE(json_is_null(json_object_get(j, "error")));
  EXPECT_TRUE(json_is_null(json_object_get(j, "finished_at")));
  EXPECT_STR(jstr(j, "created_at"), "2023-11-14T22:13:21.000Z"); /* manual clock: base + 1 s */
  json_decref(j);
  json_t *s = stored(f, id);
  assert_non_null(s);
  EXPECT_STR(jstr(s, "status"), "pending");
  json_decref(s);

  nc_clock_manual_advance(&f->clock, 500);
  nc_op_running(op, "waiting for QMP");
  j = get(f, id, 0);
  EXPECT_STR(jstr(j, "status"), "running");
  EXPECT_STR(jstr(j, "message"), "waiting for QMP");
  EXPECT_STR(jstr(j, "updated_at"), "2023-11-14T22:13:21.500Z");
  json_decref(j);
  s = stored(f, id);
  EXPECT_STR(jstr(s, "status"), "running");
  json_decref(s);

  nc_op_progress(op, 0.5, "half");
  j = get(f, id, 0);
  EXPECT_TRUE(json_real_value(json_object_get(j, "progress")) == 0.5);
  EXPECT_STR(jstr(j, "message"), "half");
  json_decref(j);
  nc_op_progress(op, 7, NULL); /* clamped; message kept */
  j = get(f, id, 0);
  EXPECT_TRUE(json_real_value(json_object_get(j, "progress")) == 1.0);
  EXPECT_STR(jstr(j, "message"), "half");
  json_decref(j);
  nc_op_progress(op, -1, NULL);
  j = get(f, id, 0);
  EXPECT_TRUE(json_real_value(json_object_get(j, "progress")) == 0.0);
  json_decref(j);

  nc_clock_manual_advance(&f->clock, 1000);
  nc_op_finish(op, 0, NULL);
  j = get(f, id, 0);
  EXPECT_STR(jstr(j, "status"), "succeeded");
  EXPECT_TRUE(json_real_value(json_object_get(j, "progress")) == 1.0);
  EXPECT_STR(jstr(j, "finished_at"), "2023-11-14T22:13:22.500Z");
  EXPECT_TRUE(json_is_null(json_object_get(j, "error")));
  json_decref(j);
  s = stored(f, id);
  EXPECT_STR(jstr(s, "status"), "succeeded");
  json_decref(s);
  nc_op_unref(op);
}

static void test_failed_and_cancelled(void **state) {
  struct fx *f = *state;
  struct nc_op *a, *b, *c;
  EXPECT_RC(nc_ops_create(f->ops, "vm.start", "a", &a), 0);
  EXPECT_RC(nc_ops_create(f->ops, "vm.stop", "b", &b), 0);
  EXPECT_RC(nc_ops_create(f->ops, "vm.pause", "c", &c), 0);
  struct nc_errinfo err;
  nc_errinfo_set(&err, 500, "hypervisor_error", NULL, "vm \"a\": qemu said no");
  nc_op_finish(a, NC_E_HV, &err);
  nc_op_finish(b, NC_E_CANCELLED, NULL);
  nc_op_finish(c, -ENOSPC, NULL);

  json_t *j = get(f, nc_op_id(a), 0);
  EXPECT_STR(jstr(j, "status"), "failed");
  EXPECT_STR(jstr(json_object_get(j, "error"), "code"), "hypervisor_error");
  EXPECT_STR(jstr(json_object_get(j, "error"), "message"), "vm \"a\": qemu said no");
  json_decref(j);
  j = get(f, nc_op_id(b), 0);
  EXPECT_STR(jstr(j, "status"), "cancelled");
  EXPECT_STR(jstr(json_object_get(j, "error"), "code"), "cancelled");
  json_decref(j);
  j = get(f, nc_op_id(c), 0);
  EXPECT_STR(jstr(j, "status"), "failed");
  EXPECT_STR(jstr(json_object_get(j, "error"), "code"), "failed");
  EXPECT_STR(jstr(json_object_get(j, "error"), "message"), nc_strerror(-ENOSPC));
  json_decref(j);

  unsigned counts[5];
  nc_ops_counts(f->ops, counts);
  EXPECT_I64(counts[NC_OP_FAILED], 2);
  EXPECT_I64(counts[NC_OP_CANCELLED], 1);
  EXPECT_I64(counts[NC_OP_PENDING], 0);
  nc_op_unref(a);
  nc_op_unref(b);
  nc_op_unref(c);
}

static void test_cancel_only_when_cancellable(void **state) {
  struct fx *f = *state;
  struct nc_op *op;
  EXPECT_RC(nc_ops_create(f->ops, "vm.stop", "w", &op), 0);
  char id[NC_OP_ID_LEN + 1];
  snprintf(id, sizeof id, "%s", nc_op_id(op));

  json_t *out = NULL;
  EXPECT_RC(nc_ops_cancel(f->ops, id, &out), NC_E_CONFLICT); /* the API's 409 */
  assert_non_null(out); /* still filled when found */
  EXPECT_STR(jstr(out, "status"), "pending");
  EXPECT_TRUE(json_is_false(json_object_get(out, "cancellable")));
  json_decref(out);
  EXPECT_TRUE(!nc_op_cancel_requested(op));

  nc_op_set_cancellable(op, true);
  out = NULL;
  EXPECT_RC(nc_ops_cancel(f->ops, id, &out), 0);
  json_decref(out);
  EXPECT_TRUE(nc_op_cancel_requested(op));
  EXPECT_RC(nc_ops_cancel(f->ops, id, NULL), 0); /* asking twice is fine */

  nc_op_finish(op, NC_E_CANCELLED, NULL);
  out = NULL;
  EXPECT_RC(nc_ops_cancel(f->ops, id, &out), NC_E_CONFLICT); /* finished */
  EXPECT_STR(jstr(out, "status"), "cancelled");
  json_decref(out);

  out = NULL;
  EXPECT_RC(nc_ops_cancel(f->ops, "op-0000000000000000", &out), -ENOENT);
  EXPECT_TRUE(out == NULL);
  nc_op_unref(op);
}

struct finisher {
  struct nc_op *op;
  int delay_ms;
};

static void *finish_later(void *arg) {
  struct finisher *fin = arg;
  nct_sleep_ms(fin->delay_ms);
  nc_op_finish(fin->op, 0, NULL);
  return NULL;
}

static void test_wait(void **state) {
  struct fx *f = *state;
  struct nc_op *op;
  EXPECT_RC(nc_ops_create(f->ops, "vm.start", "w", &op), 0);
  nc_op_running(op, "booting");

  /* Times out: returns the unfinished operation after about wait_ms. */
  int64_t t0 = nct_now_ms();
  json_t *j = get(f, nc_op_id(op), 150);
  int64_t took = nct_now_ms() - t0;
  EXPECT_STR(jstr(j, "status"), "running");
  json_decref(j);
  if (took < 140 || took > 2000)
    fail_msg("a 150 ms wait took %lld ms", (long long)took);

  /* Finishes while we wait: returns promptly, finished. */
  struct finisher fin = {op, 100};
  pthread_t t;
  pthread_create(&t, NULL, finish_later, &fin);
  t0 = nct_now_ms();
  j = get(f, nc_op_id(op), 10000);
  took = nct_now_ms() - t0;
  pthread_join(t, NULL);
  EXPECT_STR(jstr(j, "status"), "succeeded");
  json_decref(j);
  if (took > 3000)
    fail_msg("the wait returned %lld ms after the finish", (long long)took);

  /* Already finished: no wait at all. */
  t0 = nct_now_ms();
  json_decref(get(f, nc_op_id(op), 10000));
  EXPECT_TRUE(nct_now_ms() - t0 < 1000);

  json_t *none = NULL;
  EXPECT_RC(nc_ops_get_json(f->ops, "op-ffffffffffffffff", 10, &none), -ENOENT);
  nc_op_unref(op);
}

static void test_list_newest_first_and_events(void **state) {
  struct fx *f = *state;
  uint64_t ev0 = nc_events_last(f->events);
  struct nc_op *a, *b;
  EXPECT_RC(nc_ops_create(f->ops, "vm.start", "a", &a), 0);
  nc_clock_manual_advance(&f->clock, 10);
  EXPECT_RC(nc_ops_create(f->ops, "vm.start", "b", &b), 0);
  json_t *l = nc_ops_list_json(f->ops);
  EXPECT_I64(json_array_size(l), 2);
  EXPECT_STR(jstr(json_array_get(l, 0), "id"), nc_op_id(b));
  EXPECT_STR(jstr(json_array_get(l, 1), "id"), nc_op_id(a));
  json_decref(l);

  /* Every status change is published as an "operation" event. */
  nc_op_running(a, "x");
  nc_op_finish(a, 0, NULL);
  EXPECT_U64(nc_events_last(f->events), ev0 + 4);
  char *type, *text;
  uint64_t seq, missed;
  EXPECT_RC(nc_events_wait(f->events, ev0 + 3, 0, &type, &text, &seq, &missed), 0);
  EXPECT_STR(type, "operation");
  json_t *e = json_loads(text, 0, NULL);
  EXPECT_STR(jstr(e, "id"), nc_op_id(a));
  EXPECT_STR(jstr(e, "status"), "succeeded");
  json_decref(e);
  free(type);
  free(text);
  nc_op_unref(a);
  nc_op_unref(b);
}

/* Restarts the ops registry (and the store) as a daemon restart would. */
static void restart(struct fx *f) {
  nc_ops_free(f->ops);
  nc_store_close(f->store);
  f->ops = NULL;
  f->store = NULL;
  EXPECT_RC(nc_store_open(f->uri, &f->clock.clock, &f->store), 0);
  EXPECT_RC(nc_ops_new(f->store, &f->clock.clock, &f->rand.r, f->events, &f->ops), 0);
  EXPECT_RC(nc_ops_recover(f->ops), 0);
}

/* The listed form of an operation, without taking a reference (see
 * test_recovered_op_survives_repeated_reads for why this test avoids
 * nc_ops_get_json on recovered operations). New reference or NULL. */
static json_t *listed(struct fx *f, const char *id) {
  json_t *l = nc_ops_list_json(f->ops), *found = NULL;
  size_t i;
  json_t *o;
  json_array_foreach(l, i, o) {
    if (strcmp(jstr(o, "id"), id) == 0)
      found = json_incref(o);
  }
  json_decref(l);
  if (!found)
    fail_msg("operation %s is not listed", id);
  return found;
}

static void test_recover_fails_unfinished(void **state) {
  struct fx *f = *state;
  struct nc_op *done, *running, *pending;
  EXPECT_RC(nc_ops_create(f->ops, "vm.stop", "a", &done), 0);
  EXPECT_RC(nc_ops_create(f->ops, "vm.start", "b", &running), 0);
  EXPECT_RC(nc_ops_create(f->ops, "vm.pause", "c", &pending), 0);
  nc_op_finish(done, 0, NULL);
  nc_op_running(running, "launching");
  char id_done[32], id_running[32], id_pending[32];
  snprintf(id_done, sizeof id_done, "%s", nc_op_id(done));
  snprintf(id_running, sizeof id_running, "%s", nc_op_id(running));
  snprintf(id_pending, sizeof id_pending, "%s", nc_op_id(pending));
  nc_op_unref(done);
  nc_op_unref(running);
  nc_op_unref(pending);

  nc_clock_manual_advance(&f->clock, 60000);
  restart(f);

  json_t *j = listed(f, id_done);
  EXPECT_STR(jstr(j, "status"), "succeeded");
  EXPECT_STR(jstr(j, "kind"), "vm.stop");
  json_decref(j);
  const char *cut[] = {id_running, id_pending};
  for (int i = 0; i < 2; i++) {
    j = listed(f, cut[i]);
    EXPECT_STR(jstr(j, "status"), "failed");
    EXPECT_STR(jstr(json_object_get(j, "error"), "code"), "interrupted");
    EXPECT_CONTAINS(jstr(json_object_get(j, "error"), "message"), "retry");
    EXPECT_TRUE(json_is_string(json_object_get(j, "finished_at")));
    json_decref(j);
    /* and recorded so, not only in memory */
    json_t *s = stored(f, cut[i]);
    EXPECT_STR(jstr(s, "status"), "failed");
    json_decref(s);
  }
  j = nc_ops_list_json(f->ops);
  EXPECT_I64(json_array_size(j), 3);
  json_decref(j);

  /* A second restart keeps them failed, not "interrupted" again. */
  restart(f);
  j = listed(f, id_running);
  EXPECT_STR(jstr(j, "status"), "failed");
  json_decref(j);
}

/* A recovered operation is read by GET /v1/operations/{id} any number of
 * times. Each read takes and drops a reference; the list's own reference
 * must keep it alive. */
static void test_recovered_op_survives_repeated_reads(void **state) {
  struct fx *f = *state;
  struct nc_op *op;
  EXPECT_RC(nc_ops_create(f->ops, "vm.start", "a", &op), 0);
  nc_op_finish(op, 0, NULL);
  char id[32];
  snprintf(id, sizeof id, "%s", nc_op_id(op));
  nc_op_unref(op);
  restart(f);
  for (int i = 0; i < 3; i++) {
    json_t *j = NULL;
    int rc = nc_ops_get_json(f->ops, id, 0, &j);
    if (rc != 0)
      fail_msg("read %d of recovered operation %s returned %d (%s): it was freed while "
               "still listed",
               i + 1, id, rc, nc_strerror(rc));
    EXPECT_STR(jstr(j, "id"), id);
    json_decref(j);
  }
}

static void test_recover_skips_garbage(void **state) {
  struct fx *f = *state;
  EXPECT_RC(nc_store_put(f->store, "/nc/ops/op-bad", "not json", 8, 0, NULL), 0);
  EXPECT_RC(nc_store_put(f->store, "/nc/ops/op-bad2", "{\"id\":1}", 8, 0, NULL), 0);
  restart(f);
  json_t *l = nc_ops_list_json(f->ops);
  EXPECT_I64(json_array_size(l), 0);
  json_decref(l);
}

static size_t stored_count(struct fx *f) {
  struct nc_kv_list l;
  EXPECT_RC(nc_store_range(f->store, "/nc/ops/", 0, &l), 0);
  size_t n = l.count;
  nc_kv_list_free(&l);
  return n;
}

static void test_trim_beyond_keep(void **state) {
  struct fx *f = *state;
  enum { EXTRA = 7 };
  char first[EXTRA][32];
  struct nc_op *live;
  EXPECT_RC(nc_ops_create(f->ops, "vm.start", "live", &live), 0); /* unfinished: never trimmed */
  for (int i = 0; i < NC_OPS_KEEP + EXTRA; i++) {
    struct nc_op *op;
    nc_clock_manual_advance(&f->clock, 1);
    EXPECT_RC(nc_ops_create(f->ops, "vm.reboot", "w", &op), 0);
    if (i < EXTRA)
      snprintf(first[i], sizeof first[i], "%s", nc_op_id(op));
    nc_op_finish(op, 0, NULL);
    nc_op_unref(op);
  }
  /* Trimming runs at the next create. */
  struct nc_op *last;
  nc_clock_manual_advance(&f->clock, 1);
  EXPECT_RC(nc_ops_create(f->ops, "vm.stop", "w", &last), 0);
  json_t *l = nc_ops_list_json(f->ops);
  EXPECT_I64(json_array_size(l), NC_OPS_KEEP + 2); /* KEEP finished + live + last */
  json_decref(l);
  for (int i = 0; i < EXTRA; i++) {
    json_t *j = NULL;
    EXPECT_RC(nc_ops_get_json(f->ops, first[i], 0, &j), -ENOENT);
    EXPECT_TRUE(stored(f, first[i]) == NULL);
  }
  json_t *j = get(f, nc_op_id(live), 0);
  EXPECT_STR(jstr(j, "status"), "pending");
  json_decref(j);
  EXPECT_I64(stored_count(f), NC_OPS_KEEP + 2);

  /* Recovery trims too, and keeps the newest. */
  nc_op_finish(live, 0, NULL);
  nc_op_finish(last, 0, NULL);
  char last_id[32];
  snprintf(last_id, sizeof last_id, "%s", nc_op_id(last));
  nc_op_unref(live);
  nc_op_unref(last);
  restart(f);
  l = nc_ops_list_json(f->ops);
  EXPECT_I64(json_array_size(l), NC_OPS_KEEP);
  EXPECT_STR(jstr(json_array_get(l, 0), "id"), last_id);
  json_decref(l);
  EXPECT_I64(stored_count(f), NC_OPS_KEEP);
}

static void test_status_names(void **state) {
  (void)state;
  EXPECT_STR(nc_op_status_name(NC_OP_PENDING), "pending");
  EXPECT_STR(nc_op_status_name(NC_OP_RUNNING), "running");
  EXPECT_STR(nc_op_status_name(NC_OP_SUCCEEDED), "succeeded");
  EXPECT_STR(nc_op_status_name(NC_OP_FAILED), "failed");
  EXPECT_STR(nc_op_status_name(NC_OP_CANCELLED), "cancelled");
  EXPECT_STR(nc_op_status_name((enum nc_op_status)9), "unknown");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_create_run_finish, setup, teardown),
      cmocka_unit_test_setup_teardown(test_failed_and_cancelled, setup, teardown),
      cmocka_unit_test_setup_teardown(test_cancel_only_when_cancellable, setup, teardown),
      cmocka_unit_test_setup_teardown(test_wait, setup, teardown),
      cmocka_unit_test_setup_teardown(test_list_newest_first_and_events, setup, teardown),
      cmocka_unit_test_setup_teardown(test_recover_fails_unfinished, setup, teardown),
      cmocka_unit_test_setup_teardown(test_trim_beyond_keep, setup, teardown),
      cmocka_unit_test(test_status_names),
      /* last two: each shows an open bug that, under the sanitizers or
       * after a use after free, ends the whole run (recovering nothing
       * calls qsort(NULL, 0): UB; a recovered operation is freed while
       * still listed) */
      cmocka_unit_test_setup_teardown(test_recover_skips_garbage, setup, teardown),
      cmocka_unit_test_setup_teardown(test_recovered_op_survives_repeated_reads, setup,
                                      teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
