/* The VM manager (src/vm/manager.h) over the fake hypervisor driver
 * (fake_hv.c), a real SQLite store and real files in a temp dir.
 *
 * Every scenario ends with the same invariants: each VM's recorded history
 * is a chain of valid lifecycle transitions ending in its current state,
 * and after the manager is freed no hypervisor handle is left open. */
#include "nc_test.h"

#include <fcntl.h>
#include <jansson.h>
#include <sys/stat.h>

#include "vm_world.h"
#include "hv/machine.h"
#include "obs/metrics.h"
#include "store/store.h"
#include "vm/events.h"
#include "vm/image.h"
#include "vm/manager.h"
#include "vm/ops.h"
#include "vm/state.h"

struct fx {
  struct nct_world w;
  int max_running_ops;
  struct nc_vmm *vmm;
};

static void start_manager(struct fx *f) {
  struct nc_vmm_config c = {
      .data_dir = f->w.data_dir,
      .node_name = "test-node",
      .store = f->w.store,
      .hv = &f->w.hv.base,
      .disk = nct_world_disk_ops(&f->w),
      .clock = &f->w.clock.clock,
      .rand = &f->w.rand.r,
      .metrics = f->w.metrics,
      .events = f->w.events,
      .ops = f->w.ops,
      .accel = NC_ACCEL_TCG,
      .reconcile_interval_ms = 20,
      .stop_timeout_ms = 30000,
      .max_running_ops = f->max_running_ops,
  };
  EXPECT_RC(nc_vmm_new(&c, &f->vmm), 0);
  EXPECT_RC(nc_vmm_start(f->vmm), 0);
}

static int setup(void **state) {
  struct fx *f = calloc(1, sizeof *f);
  if (!f || nct_world_init(&f->w, "vmm", 7, "console=ttyS0") != 0)
    return -1;
  *state = f;
  start_manager(f);
  return 0;
}

static void stop_manager(struct fx *f) {
  fake_hv_open_gate(&f->w.hv); /* never leave an operation stuck at the gate */
  nc_vmm_free(f->vmm);
  f->vmm = NULL;
}

static int teardown(void **state) {
  struct fx *f = *state;
  stop_manager(f);
  nct_world_fini(&f->w);
  free(f);
  return 0;
}

/* ---- helpers ------------------------------------------------------------ */

static const char *jstr(json_t *j, const char *k) { return json_string_value(json_object_get(j, k)); }

static json_t *vm_get(struct fx *f, const char *name) {
  json_t *out = NULL;
  struct nc_errinfo err = {0};
  int rc = nc_vmm_get(f->vmm, name, &out, &err);
  if (rc)
    fail_msg("nc_vmm_get(%s): %d %s", name, err.status, err.message);
  return out;
}

/* One string field of a VM, copied into a static buffer (tests are
 * single-threaded; the copy outlives the JSON). */
static const char *vm_field(struct fx *f, const char *name, const char *key) {
  static char buf[1024];
  json_t *vm = vm_get(f, name);
  const char *v = jstr(vm, key);
  snprintf(buf, sizeof buf, "%s", v ? v : "(null)");
  json_decref(vm);
  return buf;
}

static const char *vm_state(struct fx *f, const char *name, char *buf, size_t len) {
  json_t *vm = vm_get(f, name);
  snprintf(buf, len, "%s", jstr(vm, "state"));
  json_decref(vm);
  return buf;
}

static void wait_state(struct fx *f, const char *name, const char *want, int timeout_ms) {
  char st[32] = "";
  int64_t dl = nct_now_ms() + timeout_ms;
  while (nct_now_ms() < dl) {
    if (strcmp(vm_state(f, name, st, sizeof st), want) == 0)
      return;
    nct_sleep_ms(5);
  }
  fail_msg("vm %s is %s after %d ms, want %s", name, st, timeout_ms, want);
}

/* Waits for an operation to finish; checks its status; returns it. */
static json_t *wait_op(struct fx *f, const char *id, const char *want_status) {
  json_t *op = NULL;
  EXPECT_RC(nc_ops_get_json(f->w.ops, id, 5000, &op), 0);
  if (!op || strcmp(jstr(op, "status"), want_status) != 0) {
    char *t = json_dumps(op, 0);
    fail_msg("operation %s: %s, want status %s", id, t, want_status);
  }
  return op;
}

/* The op id inside {"operation": OP}. */
static void op_id(json_t *out, char *id, size_t len) {
  const char *s = jstr(json_object_get(out, "operation"), "id");
  if (!s)
    fail_msg("no operation id in the answer");
  snprintf(id, len, "%s", s);
}

static json_t *parse(const char *text) {
  if (!text)
    return NULL;
  json_error_t e;
  json_t *j = json_loads(text, 0, &e);
  if (!j)
    fail_msg("bad test JSON %s: %s", text, e.text);
  return j;
}

static int create(struct fx *f, const char *req_text, json_t **out, struct nc_errinfo *err) {
  json_t *req = parse(req_text);
  memset(err, 0, sizeof *err);
  *out = NULL;
  int rc = nc_vmm_create(f->vmm, req, out, err);
  json_decref(req);
  return rc;
}

static int act(struct fx *f, const char *name, enum nc_vm_action a, const char *body,
               char *id, struct nc_errinfo *err) {
  json_t *b = parse(body), *out = NULL;
  memset(err, 0, sizeof *err);
  int rc = nc_vmm_action(f->vmm, name, a, b, &out, err);
  json_decref(b);
  if (rc == 0 && id)
    op_id(out, id, 32);
  json_decref(out);
  return rc;
}

/* Runs an action to completion; the operation must end with want. */
static void act_ok(struct fx *f, const char *name, enum nc_vm_action a, const char *body,
                   const char *want) {
  char id[32];
  struct nc_errinfo err;
  int rc = act(f, name, a, body, id, &err);
  if (rc)
    fail_msg("%s %s refused: %d %s: %s", nc_vm_action_name(a), name, err.status, err.code,
             err.message);
  json_decref(wait_op(f, id, want));
}

/* Creates and starts a VM; waits until it runs. */
static void running_vm(struct fx *f, const char *name) {
  char req[200];
  snprintf(req, sizeof req, "{\"name\":\"%s\",\"image\":\"img\",\"start\":true}", name);
  json_t *out;
  struct nc_errinfo err;
  int rc = create(f, req, &out, &err);
  if (rc)
    fail_msg("create %s: %d %s", name, err.status, err.message);
  char id[32];
  op_id(out, id, sizeof id);
  json_decref(out);
  json_decref(wait_op(f, id, "succeeded"));
  wait_state(f, name, "running", 2000);
}

static void expect_err(int rc, const struct nc_errinfo *err, int status, const char *code,
                       const char *hint) {
  if (rc == 0)
    fail_msg("succeeded; want %d %s", status, code);
  if (err->status != status || strcmp(err->code, code) != 0)
    fail_msg("got %d %s (%s), want %d %s", err->status, err->code, err->message, status, code);
  if (hint && !strstr(err->message, hint))
    fail_msg("message \"%s\" does not contain \"%s\"", err->message, hint);
}

/* The recorded transitions, "from>to" joined by spaces. */
static void history_text(json_t *vm, char *out, size_t len) {
  out[0] = '\0';
  size_t i;
  json_t *h;
  json_array_foreach(json_object_get(vm, "history"), i, h) {
    size_t o = strlen(out);
    snprintf(out + o, len - o, "%s%s>%s", i ? " " : "", jstr(h, "from"), jstr(h, "to"));
  }
}

static void expect_history(struct fx *f, const char *name, const char *want) {
  json_t *vm = vm_get(f, name);
  char h[2048];
  history_text(vm, h, sizeof h);
  json_decref(vm);
  if (strcmp(h, want) != 0)
    fail_msg("vm %s history is \"%s\", want \"%s\"", name, h, want);
}

/* Invariant: history is a chain of valid transitions ending in the state. */
static void check_history(json_t *vm) {
  const char *name = jstr(vm, "name");
  json_t *hist = json_object_get(vm, "history");
  if (!json_is_array(hist))
    fail_msg("vm %s has no history array", name);
  const char *prev = NULL;
  size_t i;
  json_t *h;
  json_array_foreach(hist, i, h) {
    enum nc_vm_state from, to;
    if (nc_vm_state_parse(jstr(h, "from"), &from) || nc_vm_state_parse(jstr(h, "to"), &to))
      fail_msg("vm %s history[%zu] has unknown states", name, i);
    if (!nc_vm_transition_valid(from, to))
      fail_msg("vm %s history[%zu]: %s -> %s is not a valid transition", name, i,
               jstr(h, "from"), jstr(h, "to"));
    if (prev && strcmp(prev, jstr(h, "from")) != 0)
      fail_msg("vm %s history[%zu] starts at %s but the previous entry ended at %s", name, i,
               jstr(h, "from"), prev);
    /* docs/api.md: {"from","to","reason","at"} with an RFC 3339 time */
    const char *at = jstr(h, "at");
    if (!json_is_string(json_object_get(h, "reason")) || !at || strlen(at) != 24 ||
        at[10] != 'T' || at[23] != 'Z')
      fail_msg("vm %s history[%zu] lacks reason or an RFC 3339 at", name, i);
    prev = jstr(h, "to");
  }
  if (prev && strcmp(prev, jstr(vm, "state")) != 0)
    fail_msg("vm %s is %s but its history ends at %s", name, jstr(vm, "state"), prev);
  if (!prev && strcmp(jstr(vm, "state"), "defined") != 0)
    fail_msg("vm %s is %s with an empty history", name, jstr(vm, "state"));
}

/* The end of every scenario: invariants, then the manager goes away and
 * must leave no hypervisor handle behind. */
static void check_and_stop(struct fx *f) {
  json_t *l = nc_vmm_list(f->vmm);
  size_t i;
  json_t *item;
  json_array_foreach(json_object_get(l, "vms"), i, item) {
    /* docs/api.md: history is in GET /v1/vms/{name} only, not in the list */
    if (json_object_get(item, "history"))
      fail_msg("vm %s: the list carries history", jstr(item, "name"));
    json_t *vm = vm_get(f, jstr(item, "name"));
    check_history(vm);
    json_decref(vm);
  }
  json_decref(l);
  stop_manager(f);
  EXPECT_I64(fake_hv_count(&f->w.hv, &f->w.hv.handles), 0);
}

/* Every event published since `after`, as "type:detail" words. */
static void events_text(struct fx *f, uint64_t after, char *out, size_t len) {
  out[0] = '\0';
  char *type, *text;
  uint64_t seq, missed;
  while (nc_events_wait(f->w.events, after, 0, &type, &text, &seq, &missed) == 0) {
    after = seq;
    json_t *j = json_loads(text, 0, NULL);
    size_t o = strlen(out);
    if (strcmp(type, "vm.state") == 0)
      snprintf(out + o, len - o, "%s%s:%s:%s>%s", o ? " " : "", type, jstr(j, "vm"),
               jstr(j, "from"), jstr(j, "to"));
    else if (strcmp(type, "operation") != 0)
      snprintf(out + o, len - o, "%s%s:%s", o ? " " : "", type, jstr(j, "vm"));
    json_decref(j);
    free(type);
    free(text);
  }
}

/* ---- scenarios ---------------------------------------------------------- */

static void test_create_start_running(void **state) {
  struct fx *f = *state;
  uint64_t ev0 = nc_events_last(f->w.events);
  json_t *out;
  struct nc_errinfo err;
  EXPECT_RC(create(f,
                   "{\"name\":\"web-1\",\"image\":\"img\",\"start\":true,\"vcpus\":2,"
                   "\"memory\":\"512M\",\"labels\":{\"app\":\"web\"},"
                   "\"cmdline_append\":\"quiet\"}",
                   &out, &err),
            0);
  json_t *vm = json_object_get(out, "vm");
  EXPECT_STR(jstr(vm, "name"), "web-1");
  EXPECT_STR(jstr(vm, "desired_state"), "running");
  EXPECT_STR(jstr(vm, "node"), "test-node");
  EXPECT_STR(jstr(vm, "memory"), "512M");
  EXPECT_STR(jstr(json_object_get(vm, "labels"), "app"), "web");
  char id[32];
  op_id(out, id, sizeof id);
  json_decref(out);
  json_t *op = wait_op(f, id, "succeeded");
  EXPECT_STR(jstr(op, "kind"), "vm.start");
  EXPECT_STR(jstr(op, "target"), "web-1");
  json_decref(op);

  vm = vm_get(f, "web-1");
  EXPECT_STR(jstr(vm, "state"), "running");
  EXPECT_STR(jstr(vm, "desired_state"), "running");
  EXPECT_STR(jstr(vm, "accel"), "tcg");
  EXPECT_I64(json_integer_value(json_object_get(vm, "pid")), 4001);
  EXPECT_TRUE(json_is_null(json_object_get(vm, "operation")));
  char want[400];
  snprintf(want, sizeof want, "%s/vms/web-1/serial.sock", f->w.data_dir);
  EXPECT_STR(jstr(json_object_get(vm, "console"), "socket"), want);
  json_decref(vm);
  expect_history(f, "web-1", "defined>starting starting>running");

  /* What the driver was asked to run. */
  struct fake_proc *p = fake_hv_proc(&f->w.hv, "web-1");
  assert_non_null(p);
  EXPECT_I64(p->vcpus, 2);
  EXPECT_U64(p->memory_bytes, 512ULL << 20);
  EXPECT_STR(p->kernel, f->w.kernel);
  EXPECT_STR(p->cmdline, "console=ttyS0 quiet");
  snprintf(want, sizeof want, "%s/vms/web-1/disk.qcow2", f->w.data_dir);
  EXPECT_STR(p->disk, want);
  EXPECT_TRUE(access(want, F_OK) == 0); /* the overlay was made */
  EXPECT_TRUE(p->nic_user);
  EXPECT_I64(f->w.overlays, 1);

  char ev[2000];
  events_text(f, ev0, ev, sizeof ev);
  EXPECT_STR(ev, "vm.created:web-1 vm.state:web-1:defined>starting "
                 "vm.state:web-1:starting>running");

  /* Recorded in the store too. */
  struct nc_kv kv;
  EXPECT_RC(nc_store_get(f->w.store, "/nc/vms/web-1", &kv), 0);
  json_t *rec = json_loadb(kv.value, kv.value_len, 0, NULL);
  EXPECT_STR(jstr(rec, "state"), "running");
  json_decref(rec);
  nc_kv_free(&kv);

  char *metrics;
  EXPECT_RC(nc_metrics_render(f->w.metrics, &metrics, NULL), 0);
  EXPECT_CONTAINS(metrics,
                  "novacron_vm_transitions_total{from=\"defined\",to=\"starting\"} 1\n");
  EXPECT_CONTAINS(metrics, "novacron_vms{state=\"running\"} 1\n");
  EXPECT_CONTAINS(metrics, "libvirt_domain_info_virtual_cpus{domain=\"web-1\"} 2\n");
  free(metrics);
  check_and_stop(f);
}

static void test_create_without_start(void **state) {
  struct fx *f = *state;
  json_t *out;
  struct nc_errinfo err;
  EXPECT_RC(create(f, "{\"name\":\"db\",\"image\":\"img\"}", &out, &err), 0);
  EXPECT_TRUE(json_is_null(json_object_get(out, "operation")));
  EXPECT_STR(jstr(json_object_get(out, "vm"), "state"), "defined");
  EXPECT_STR(jstr(json_object_get(out, "vm"), "desired_state"), "stopped");
  EXPECT_TRUE(json_is_null(json_object_get(json_object_get(out, "vm"), "pid")));
  json_decref(out);
  EXPECT_I64(fake_hv_count(&f->w.hv, &f->w.hv.launches), 0);
  act_ok(f, "db", NC_ACT_START, NULL, "succeeded");
  wait_state(f, "db", "running", 2000);
  check_and_stop(f);
}

static void test_pause_resume_reboot(void **state) {
  struct fx *f = *state;
  running_vm(f, "w");
  act_ok(f, "w", NC_ACT_PAUSE, NULL, "succeeded");
  EXPECT_STR(vm_field(f, "w", "state"), "paused");
  EXPECT_I64(fake_hv_state(&f->w.hv, "w"), NC_HV_PAUSED);
  act_ok(f, "w", NC_ACT_RESUME, NULL, "succeeded");
  EXPECT_I64(fake_hv_state(&f->w.hv, "w"), NC_HV_RUNNING);
  act_ok(f, "w", NC_ACT_REBOOT, NULL, "succeeded");
  EXPECT_I64(fake_hv_count(&f->w.hv, &f->w.hv.reboots), 1);
  expect_history(f, "w", "defined>starting starting>running running>paused paused>running");
  check_and_stop(f);
}

static void test_stop(void **state) {
  struct fx *f = *state;
  running_vm(f, "w");
  act_ok(f, "w", NC_ACT_STOP, "{\"timeout_s\": 5}", "succeeded");
  json_t *vm = vm_get(f, "w");
  EXPECT_STR(jstr(vm, "state"), "stopped");
  EXPECT_STR(jstr(vm, "desired_state"), "stopped");
  EXPECT_TRUE(json_is_null(json_object_get(vm, "pid")));
  json_decref(vm);
  EXPECT_I64(fake_hv_count(&f->w.hv, &f->w.hv.shutdowns), 1);
  EXPECT_I64(f->w.hv.last_shutdown_timeout_ms, 5000);
  EXPECT_I64(fake_hv_state(&f->w.hv, "w"), NC_HV_GONE);
  expect_history(f, "w", "defined>starting starting>running running>stopping stopping>stopped");

  /* Start again, then a forced stop kills without asking the guest. */
  act_ok(f, "w", NC_ACT_START, NULL, "succeeded");
  int kills = fake_hv_count(&f->w.hv, &f->w.hv.kills);
  act_ok(f, "w", NC_ACT_STOP, "{\"force\": true}", "succeeded");
  EXPECT_I64(fake_hv_count(&f->w.hv, &f->w.hv.shutdowns), 1);
  EXPECT_I64(fake_hv_count(&f->w.hv, &f->w.hv.kills), kills + 1);
  EXPECT_I64(fake_hv_state(&f->w.hv, "w"), NC_HV_GONE);
  EXPECT_STR(vm_field(f, "w", "state_reason"), "stopped (forced)");
  check_and_stop(f);
}

static void test_stop_body_validation(void **state) {
  struct fx *f = *state;
  running_vm(f, "w");
  struct nc_errinfo err;
  int rc = act(f, "w", NC_ACT_STOP, "{\"force\":\"yes\"}", NULL, &err);
  expect_err(rc, &err, 400, "invalid_field", "true or false");
  EXPECT_STR(err.field, "force");
  rc = act(f, "w", NC_ACT_STOP, "{\"timeout_s\":0}", NULL, &err);
  expect_err(rc, &err, 400, "invalid_field", "1 to 3600");
  EXPECT_STR(err.field, "timeout_s");
  rc = act(f, "w", NC_ACT_STOP, "{\"timeout_s\":3601}", NULL, &err);
  expect_err(rc, &err, 400, "invalid_field", "1 to 3600");
  rc = act(f, "w", NC_ACT_STOP, "{\"now\":true}", NULL, &err);
  expect_err(rc, &err, 400, "unknown_field", "now");
  rc = act(f, "w", NC_ACT_PAUSE, "{\"force\":true}", NULL, &err);
  expect_err(rc, &err, 400, "unknown_field", "force");
  EXPECT_STR(vm_field(f, "w", "state"), "running");
  check_and_stop(f);
}

static void test_delete(void **state) {
  struct fx *f = *state;
  running_vm(f, "w");
  uint64_t ev0 = nc_events_last(f->w.events);
  act_ok(f, "w", NC_ACT_DELETE, NULL, "succeeded");
  json_t *out = NULL;
  struct nc_errinfo err = {0};
  int rc = nc_vmm_get(f->vmm, "w", &out, &err);
  expect_err(rc, &err, 404, "not_found", "\"w\"");
  EXPECT_I64(fake_hv_state(&f->w.hv, "w"), NC_HV_GONE);
  char dir[400];
  snprintf(dir, sizeof dir, "%s/vms/w", f->w.data_dir);
  EXPECT_TRUE(access(dir, F_OK) != 0);
  struct nc_kv kv;
  EXPECT_RC(nc_store_get(f->w.store, "/nc/vms/w", &kv), -ENOENT);
  char ev[1000];
  events_text(f, ev0, ev, sizeof ev);
  EXPECT_CONTAINS(ev, "vm.deleted:w");
  /* The name is free again. */
  running_vm(f, "w");
  check_and_stop(f);
}

static void test_duplicate_create_conflicts(void **state) {
  struct fx *f = *state;
  json_t *out;
  struct nc_errinfo err;
  EXPECT_RC(create(f, "{\"name\":\"w\",\"image\":\"img\"}", &out, &err), 0);
  json_decref(out);
  int rc = create(f, "{\"name\":\"w\",\"image\":\"img\",\"vcpus\":2}", &out, &err);
  expect_err(rc, &err, 409, "conflict", "already exists");
  EXPECT_STR(err.field, "name");
  EXPECT_RC(rc, NC_E_CONFLICT);
  check_and_stop(f);
}

static void test_create_refusals(void **state) {
  struct fx *f = *state;
  json_t *out;
  struct nc_errinfo err;
  int rc = create(f, "{\"name\":\"w\",\"image\":\"nope\"}", &out, &err);
  expect_err(rc, &err, 422, "unprocessable", "\"nope\"");
  EXPECT_STR(err.field, "image");
  rc = create(f, "{\"name\":\"W\",\"image\":\"img\"}", &out, &err);
  expect_err(rc, &err, 400, "invalid_field", "\"W\"");
  json_t *l = nc_vmm_list(f->vmm);
  EXPECT_I64(json_array_size(json_object_get(l, "vms")), 0);
  json_decref(l);
  check_and_stop(f);
}

static void test_missing_vm_is_404(void **state) {
  struct fx *f = *state;
  struct nc_errinfo err;
  for (int a = NC_ACT_START; a <= NC_ACT_DELETE; a++) {
    int rc = act(f, "ghost", (enum nc_vm_action)a, NULL, NULL, &err);
    expect_err(rc, &err, 404, "not_found", "\"ghost\"");
    EXPECT_CONTAINS(err.message, "vm list");
    EXPECT_RC(rc, -ENOENT);
  }
  json_t *out = NULL;
  expect_err(nc_vmm_snapshot_list(f->vmm, "ghost", &out, &err), &err, 404, "not_found", NULL);
  expect_err(nc_vmm_snapshot_restore(f->vmm, "ghost", "s1", &out, &err), &err, 404,
             "not_found", NULL);
  char path[100];
  expect_err(nc_vmm_console_log_path(f->vmm, "ghost", path, sizeof path, &err), &err, 404,
             "not_found", NULL);
  check_and_stop(f);
}

/* manager.h: nc_vmm_action takes start stop pause resume reboot delete.
 * Snapshot, restore, clone and snapshot-delete need a name and have their
 * own calls; through nc_vmm_action they would run with an empty snapshot
 * name (or no clone target). They must be refused, and nothing may reach
 * the hypervisor. */
static void test_action_refuses_actions_with_own_calls(void **state) {
  struct fx *f = *state;
  running_vm(f, "w");
  static const enum nc_vm_action own[] = {NC_ACT_SNAPSHOT, NC_ACT_RESTORE, NC_ACT_CLONE,
                                          NC_ACT_SNAPSHOT_DELETE};
  for (size_t i = 0; i < sizeof own / sizeof own[0]; i++) {
    char id[32] = "";
    struct nc_errinfo err;
    int rc = act(f, "w", own[i], NULL, id, &err);
    if (rc == 0) {
      json_t *op = NULL;
      nc_ops_get_json(f->w.ops, id, 5000, &op);
      char *t = json_dumps(op, JSON_COMPACT);
      print_error("nc_vmm_action(%s) was accepted: %s\n", nc_vm_action_name(own[i]), t);
      free(t);
      json_decref(op);
    }
    EXPECT_TRUE(rc != 0);
  }
  EXPECT_I64(fake_hv_count(&f->w.hv, &f->w.hv.snap_saves), 0);
  EXPECT_I64(fake_hv_count(&f->w.hv, &f->w.hv.snap_loads), 0);
  EXPECT_I64(fake_hv_count(&f->w.hv, &f->w.hv.snap_deletes), 0);
  json_t *out = NULL;
  struct nc_errinfo err = {0};
  EXPECT_RC(nc_vmm_snapshot_list(f->vmm, "w", &out, &err), 0);
  EXPECT_I64(json_array_size(json_object_get(out, "snapshots")), 0);
  json_decref(out);
  check_and_stop(f);
}

static void test_wrong_state_is_409_with_hint(void **state) {
  struct fx *f = *state;
  json_t *out;
  struct nc_errinfo err;
  EXPECT_RC(create(f, "{\"name\":\"w\",\"image\":\"img\"}", &out, &err), 0);
  json_decref(out);
  int rc = act(f, "w", NC_ACT_PAUSE, NULL, NULL, &err);
  expect_err(rc, &err, 409, "conflict", "start it first");
  EXPECT_CONTAINS(err.message, "defined");
  EXPECT_RC(rc, NC_E_CONFLICT);
  act_ok(f, "w", NC_ACT_START, NULL, "succeeded");
  rc = act(f, "w", NC_ACT_START, NULL, NULL, &err);
  expect_err(rc, &err, 409, "conflict", "already running");
  rc = act(f, "w", NC_ACT_RESUME, NULL, NULL, &err);
  expect_err(rc, &err, 409, "conflict", "cannot resume");
  act_ok(f, "w", NC_ACT_PAUSE, NULL, "succeeded");
  rc = act(f, "w", NC_ACT_REBOOT, NULL, NULL, &err);
  expect_err(rc, &err, 409, "conflict", "resume it first");
  rc = act(f, "w", NC_ACT_PAUSE, NULL, NULL, &err);
  expect_err(rc, &err, 409, "conflict", "already paused");
  check_and_stop(f);
}

static void test_busy_vm_refuses_second_op(void **state) {
  struct fx *f = *state;
  fake_hv_close_gate(&f->w.hv);
  json_t *out;
  struct nc_errinfo err;
  EXPECT_RC(create(f, "{\"name\":\"w\",\"image\":\"img\",\"start\":true}", &out, &err), 0);
  char id[32];
  op_id(out, id, sizeof id);
  json_decref(out);
  EXPECT_TRUE(fake_hv_wait_launching(&f->w.hv, 1, 5000));
  json_t *vm = vm_get(f, "w");
  EXPECT_STR(jstr(vm, "state"), "starting");
  EXPECT_STR(jstr(vm, "operation"), id);
  json_decref(vm);
  static const enum nc_vm_action acts[] = {NC_ACT_STOP, NC_ACT_DELETE, NC_ACT_START};
  for (size_t i = 0; i < 3; i++) {
    int rc = act(f, "w", acts[i], NULL, NULL, &err);
    expect_err(rc, &err, 409, "conflict", id);
    EXPECT_CONTAINS(err.message, "busy");
  }
  fake_hv_open_gate(&f->w.hv);
  json_decref(wait_op(f, id, "succeeded"));
  act_ok(f, "w", NC_ACT_PAUSE, NULL, "succeeded");
  check_and_stop(f);
}

static void test_cancel_start(void **state) {
  struct fx *f = *state;
  fake_hv_close_gate(&f->w.hv);
  json_t *out;
  struct nc_errinfo err;
  EXPECT_RC(create(f, "{\"name\":\"w\",\"image\":\"img\",\"start\":true}", &out, &err), 0);
  char id[32];
  op_id(out, id, sizeof id);
  json_decref(out);
  EXPECT_TRUE(fake_hv_wait_launching(&f->w.hv, 1, 5000));
  EXPECT_RC(nc_ops_cancel(f->w.ops, id, NULL), 0);
  fake_hv_open_gate(&f->w.hv);
  json_t *op = wait_op(f, id, "cancelled");
  json_decref(op);
  json_t *vm = vm_get(f, "w");
  EXPECT_STR(jstr(vm, "state"), "stopped");
  EXPECT_STR(jstr(vm, "state_reason"), "start cancelled");
  EXPECT_STR(jstr(vm, "desired_state"), "stopped");
  json_decref(vm);
  EXPECT_I64(fake_hv_state(&f->w.hv, "w"), NC_HV_GONE);

  /* Only start is cancellable; other operations answer the API's 409. */
  char id2[32];
  EXPECT_RC(act(f, "w", NC_ACT_START, NULL, id2, &err), 0);
  op = wait_op(f, id2, "succeeded");
  EXPECT_TRUE(json_is_true(json_object_get(op, "cancellable")));
  json_decref(op);
  EXPECT_RC(act(f, "w", NC_ACT_PAUSE, NULL, id2, &err), 0);
  op = wait_op(f, id2, "succeeded");
  EXPECT_TRUE(json_is_false(json_object_get(op, "cancellable")));
  json_decref(op);
  EXPECT_RC(nc_ops_cancel(f->w.ops, id2, NULL), NC_E_CONFLICT);
  check_and_stop(f);
}

static void test_reconciler_marks_dead_vm_failed(void **state) {
  struct fx *f = *state;
  running_vm(f, "w");
  fake_hv_set_state(&f->w.hv, "w", NC_HV_GONE);
  wait_state(f, "w", "failed", 3000);
  json_t *vm = vm_get(f, "w");
  EXPECT_CONTAINS(jstr(vm, "state_reason"), "exited unexpectedly");
  EXPECT_TRUE(json_is_null(json_object_get(vm, "pid")));
  json_decref(vm);
  expect_history(f, "w", "defined>starting starting>running running>failed");
  /* A failed VM starts again. */
  act_ok(f, "w", NC_ACT_START, NULL, "succeeded");
  wait_state(f, "w", "running", 2000);
  check_and_stop(f);
}

/* A running VM's serial.log is capped on the reconcile pass: past 8 MiB its
 * newest 4 MiB go to serial.log.1 and it starts again. */
static void test_serial_log_capped(void **state) {
  struct fx *f = *state;
  running_vm(f, "w");
  char log[400], old[420];
  snprintf(log, sizeof log, "%s/vms/w/serial.log", f->w.data_dir);
  snprintf(old, sizeof old, "%s.1", log);
  int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0640);
  EXPECT_TRUE(fd >= 0);
  static char chunk[65536];
  memset(chunk, 'x', sizeof chunk);
  for (int i = 0; i < 8 * 16 + 1; i++) /* 8 MiB + 64 KiB */
    EXPECT_TRUE(write(fd, chunk, sizeof chunk) == (ssize_t)sizeof chunk);
  close(fd);
  struct stat st = {0};
  for (int i = 0; i < 300 && stat(old, &st) != 0; i++)
    usleep(10 * 1000);
  EXPECT_I64(st.st_size, 4 << 20);
  EXPECT_RC(stat(log, &st), 0);
  EXPECT_I64(st.st_size, 0);
  unlink(old);
  check_and_stop(f);
}

static void test_guest_power_off_is_stopped(void **state) {
  struct fx *f = *state;
  running_vm(f, "w");
  fake_hv_set_state(&f->w.hv, "w", NC_HV_SHUTDOWN);
  wait_state(f, "w", "stopped", 3000);
  json_t *vm = vm_get(f, "w");
  EXPECT_CONTAINS(jstr(vm, "state_reason"), "powered itself off");
  EXPECT_STR(jstr(vm, "desired_state"), "stopped");
  json_decref(vm);
  EXPECT_I64(fake_hv_state(&f->w.hv, "w"), NC_HV_GONE); /* the QEMU left behind is ended */
  expect_history(f, "w", "defined>starting starting>running running>stopped");
  check_and_stop(f);
}

static void test_paused_outside_is_recorded(void **state) {
  struct fx *f = *state;
  running_vm(f, "w");
  fake_hv_set_state(&f->w.hv, "w", NC_HV_PAUSED);
  wait_state(f, "w", "paused", 3000);
  EXPECT_CONTAINS(vm_field(f, "w", "state_reason"), "outside novacron");
  fake_hv_set_state(&f->w.hv, "w", NC_HV_RUNNING);
  wait_state(f, "w", "running", 3000);
  check_and_stop(f);
}

static void test_launch_failure(void **state) {
  struct fx *f = *state;
  f->w.hv.launch_rc = NC_E_HV;
  f->w.hv.launch_log = "qemu-system-x86_64: -drive file=disk.qcow2: Permission denied\n";
  json_t *out;
  struct nc_errinfo err;
  EXPECT_RC(create(f, "{\"name\":\"w\",\"image\":\"img\",\"start\":true}", &out, &err), 0);
  char id[32];
  op_id(out, id, sizeof id);
  json_decref(out);
  json_t *op = wait_op(f, id, "failed");
  json_t *e = json_object_get(op, "error");
  EXPECT_STR(jstr(e, "code"), "hypervisor_error");
  EXPECT_CONTAINS(jstr(e, "message"), "Permission denied");
  EXPECT_CONTAINS(jstr(e, "message"), "\"w\"");
  json_decref(op);
  json_t *vm = vm_get(f, "w");
  EXPECT_STR(jstr(vm, "state"), "failed");
  EXPECT_CONTAINS(jstr(vm, "state_reason"), "Permission denied");
  json_decref(vm);
  expect_history(f, "w", "defined>starting starting>failed");
  /* Fixed: start works from failed. */
  f->w.hv.launch_rc = 0;
  act_ok(f, "w", NC_ACT_START, NULL, "succeeded");
  check_and_stop(f);
}

static void test_overlay_failure(void **state) {
  struct fx *f = *state;
  f->w.overlay_rc = -ENOSPC;
  json_t *out;
  struct nc_errinfo err;
  EXPECT_RC(create(f, "{\"name\":\"w\",\"image\":\"img\",\"start\":true}", &out, &err), 0);
  char id[32];
  op_id(out, id, sizeof id);
  json_decref(out);
  json_t *op = wait_op(f, id, "failed");
  EXPECT_STR(jstr(json_object_get(op, "error"), "code"), "disk_error");
  EXPECT_CONTAINS(jstr(json_object_get(op, "error"), "message"), f->w.base_disk);
  json_decref(op);
  EXPECT_STR(vm_field(f, "w", "state"), "failed");
  EXPECT_I64(fake_hv_count(&f->w.hv, &f->w.hv.launches), 0);
  check_and_stop(f);
}

/* Stopping a failed VM settles it in "stopped". The manager must not try a
 * transition the lifecycle table refuses on the way (it would log
 * "refusing invalid transition" at error level for an ordinary request). */
static void test_stop_failed_vm(void **state) {
  struct fx *f = *state;
  running_vm(f, "w");
  fake_hv_set_state(&f->w.hv, "w", NC_HV_GONE);
  wait_state(f, "w", "failed", 3000);

  char logpath[300];
  snprintf(logpath, sizeof logpath, "%s/stderr.txt", f->w.dir);
  fflush(stderr);
  int saved = dup(2);
  int fd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  dup2(fd, 2);
  close(fd);
  act_ok(f, "w", NC_ACT_STOP, NULL, "succeeded");
  fflush(stderr);
  dup2(saved, 2);
  close(saved);

  EXPECT_STR(vm_field(f, "w", "state"), "stopped");
  expect_history(f, "w", "defined>starting starting>running running>failed failed>stopped");
  char *log = nct_read_file(logpath);
  char shown[600];
  bool bad = log && strstr(log, "refusing invalid transition");
  snprintf(shown, sizeof shown, "%s", log ? log : "");
  free(log);
  if (bad)
    fail_msg("stopping a failed vm tried an invalid transition:\n%s", shown);
  check_and_stop(f);
}

/* A VM as returned by nc_vmm_get is a snapshot owned by the caller (the API
 * serialises it after the manager's lock is released). Later transitions
 * must not change it underneath. */
static void test_get_returns_a_snapshot(void **state) {
  struct fx *f = *state;
  running_vm(f, "w");
  json_t *before = vm_get(f, "w");
  size_t n = json_array_size(json_object_get(before, "history"));
  act_ok(f, "w", NC_ACT_PAUSE, NULL, "succeeded");
  size_t after = json_array_size(json_object_get(before, "history"));
  json_decref(before);
  if (after != n)
    fail_msg("a VM returned by nc_vmm_get changed after the call: its history grew from %zu "
             "to %zu entries (it shares the manager's array)",
             n, after);
  check_and_stop(f);
}

static void test_restart_readopts_running_vm(void **state) {
  struct fx *f = *state;
  running_vm(f, "a");
  running_vm(f, "b");
  act_ok(f, "b", NC_ACT_PAUSE, NULL, "succeeded");
  stop_manager(f);
  EXPECT_I64(fake_hv_count(&f->w.hv, &f->w.hv.handles), 0);
  EXPECT_I64(fake_hv_state(&f->w.hv, "a"), NC_HV_RUNNING); /* the manager never kills */
  int adopts = f->w.hv.adopts;

  start_manager(f);
  EXPECT_TRUE(f->w.hv.adopts >= adopts + 2);
  json_t *vm = vm_get(f, "a");
  EXPECT_STR(jstr(vm, "state"), "running");
  EXPECT_I64(json_integer_value(json_object_get(vm, "pid")), fake_hv_proc(&f->w.hv, "a")->pid);
  json_decref(vm);
  EXPECT_STR(vm_field(f, "b", "state"), "paused");
  expect_history(f, "a", "defined>starting starting>running");
  /* The adopted handle works. */
  act_ok(f, "a", NC_ACT_STOP, NULL, "succeeded");
  EXPECT_I64(fake_hv_count(&f->w.hv, &f->w.hv.shutdowns), 1);
  act_ok(f, "b", NC_ACT_RESUME, NULL, "succeeded");
  check_and_stop(f);
}

static void test_restart_with_dead_process_is_failed(void **state) {
  struct fx *f = *state;
  running_vm(f, "w");
  json_t *out;
  struct nc_errinfo err;
  EXPECT_RC(create(f, "{\"name\":\"idle\",\"image\":\"img\"}", &out, &err), 0);
  json_decref(out);
  stop_manager(f);
  fake_hv_set_state(&f->w.hv, "w", NC_HV_GONE);
  start_manager(f);
  json_t *vm = vm_get(f, "w");
  EXPECT_STR(jstr(vm, "state"), "failed");
  EXPECT_CONTAINS(jstr(vm, "state_reason"), "while novacrond was down");
  json_decref(vm);
  EXPECT_STR(vm_field(f, "idle", "state"), "defined"); /* nothing to adopt: untouched */
  expect_history(f, "w", "defined>starting starting>running running>failed");
  check_and_stop(f);
}

static void test_snapshots(void **state) {
  struct fx *f = *state;
  running_vm(f, "w");
  json_t *body = json_pack("{s:s}", "name", "s1"), *out = NULL;
  struct nc_errinfo err = {0};
  EXPECT_RC(nc_vmm_snapshot_create(f->vmm, "w", body, &out, &err), 0);
  char id[32];
  op_id(out, id, sizeof id);
  json_decref(out);
  json_decref(wait_op(f, id, "succeeded"));
  EXPECT_RC(nc_vmm_snapshot_list(f->vmm, "w", &out, &err), 0);
  json_t *snaps = json_object_get(out, "snapshots");
  EXPECT_I64(json_array_size(snaps), 1);
  EXPECT_STR(jstr(json_array_get(snaps, 0), "name"), "s1");
  EXPECT_TRUE(json_is_string(json_object_get(json_array_get(snaps, 0), "created_at")));
  json_decref(out);
  EXPECT_I64(fake_hv_count(&f->w.hv, &f->w.hv.snap_saves), 1);

  expect_err(nc_vmm_snapshot_create(f->vmm, "w", body, &out, &err), &err, 409, "conflict",
             "already has");
  json_decref(body);
  body = json_pack("{s:s}", "name", "S 1");
  expect_err(nc_vmm_snapshot_create(f->vmm, "w", body, &out, &err), &err, 400,
             "invalid_field", "\"S 1\"");
  json_decref(body);
  body = json_pack("{s:s, s:b}", "name", "s2", "live", 1);
  expect_err(nc_vmm_snapshot_create(f->vmm, "w", body, &out, &err), &err, 400,
             "unknown_field", "live");
  json_decref(body);

  EXPECT_RC(nc_vmm_snapshot_restore(f->vmm, "w", "s1", &out, &err), 0);
  op_id(out, id, sizeof id);
  json_decref(out);
  json_decref(wait_op(f, id, "succeeded"));
  EXPECT_I64(fake_hv_count(&f->w.hv, &f->w.hv.snap_loads), 1);
  expect_err(nc_vmm_snapshot_restore(f->vmm, "w", "nope", &out, &err), &err, 404, "not_found",
             "\"nope\"");

  EXPECT_RC(nc_vmm_snapshot_delete(f->vmm, "w", "s1", &out, &err), 0);
  op_id(out, id, sizeof id);
  json_decref(out);
  json_decref(wait_op(f, id, "succeeded"));
  EXPECT_RC(nc_vmm_snapshot_list(f->vmm, "w", &out, &err), 0);
  EXPECT_I64(json_array_size(json_object_get(out, "snapshots")), 0);
  json_decref(out);
  EXPECT_I64(fake_hv_count(&f->w.hv, &f->w.hv.snap_deletes), 1);

  /* A stopped VM has no QEMU to take one. */
  act_ok(f, "w", NC_ACT_STOP, NULL, "succeeded");
  body = json_pack("{s:s}", "name", "s3");
  expect_err(nc_vmm_snapshot_create(f->vmm, "w", body, &out, &err), &err, 409, "conflict",
             "stopped");
  json_decref(body);
  check_and_stop(f);
}

static void test_clone(void **state) {
  struct fx *f = *state;
  running_vm(f, "src");
  struct nc_errinfo err = {0};
  json_t *body = json_pack("{s:s}", "name", "copy"), *out = NULL;
  expect_err(nc_vmm_clone(f->vmm, "src", body, &out, &err), &err, 409, "conflict",
             "stop it before cloning");
  act_ok(f, "src", NC_ACT_STOP, NULL, "succeeded");
  EXPECT_RC(nc_vmm_clone(f->vmm, "src", body, &out, &err), 0);
  char id[32];
  op_id(out, id, sizeof id);
  json_decref(out);
  json_decref(wait_op(f, id, "succeeded"));
  json_t *vm = vm_get(f, "copy");
  EXPECT_STR(jstr(vm, "state"), "defined");
  EXPECT_STR(jstr(vm, "image"), "img");
  json_decref(vm);
  char disk[400];
  snprintf(disk, sizeof disk, "%s/vms/copy/disk.qcow2", f->w.data_dir);
  char *d = nct_read_file(disk);
  EXPECT_STR(d, ""); /* a copy of the (empty) fake overlay */
  free(d);
  expect_err(nc_vmm_clone(f->vmm, "src", body, &out, &err), &err, 409, "conflict",
             "already exists");
  json_decref(body);
  body = json_pack("{s:s, s:b}", "name", "copy2", "start", 1);
  EXPECT_RC(nc_vmm_clone(f->vmm, "src", body, &out, &err), 0);
  json_decref(body);
  op_id(out, id, sizeof id);
  json_decref(out);
  json_decref(wait_op(f, id, "succeeded"));
  wait_state(f, "copy2", "running", 2000);
  check_and_stop(f);
}

static void test_too_many_operations(void **state) {
  struct fx *f = *state;
  stop_manager(f);
  f->max_running_ops = 1;
  start_manager(f);
  fake_hv_close_gate(&f->w.hv);
  json_t *out;
  struct nc_errinfo err;
  EXPECT_RC(create(f, "{\"name\":\"a\",\"image\":\"img\",\"start\":true}", &out, &err), 0);
  json_decref(out);
  EXPECT_TRUE(fake_hv_wait_launching(&f->w.hv, 1, 5000));
  EXPECT_RC(create(f, "{\"name\":\"b\",\"image\":\"img\"}", &out, &err), 0);
  json_decref(out);
  int rc = act(f, "b", NC_ACT_START, NULL, NULL, &err);
  expect_err(rc, &err, 503, "unavailable", "retry");
  fake_hv_open_gate(&f->w.hv);
  wait_state(f, "a", "running", 3000);
  check_and_stop(f);
}

static void test_node_json(void **state) {
  struct fx *f = *state;
  running_vm(f, "a");
  json_t *out;
  struct nc_errinfo err;
  EXPECT_RC(create(f, "{\"name\":\"b\",\"image\":\"img\",\"vcpus\":3}", &out, &err), 0);
  json_decref(out);
  json_t *n = nc_vmm_node_json(f->vmm);
  EXPECT_STR(jstr(n, "name"), "test-node");
  json_t *vms = json_object_get(n, "vms");
  EXPECT_I64(json_integer_value(json_object_get(vms, "total")), 2);
  EXPECT_I64(json_integer_value(json_object_get(json_object_get(vms, "by_state"), "running")),
             1);
  EXPECT_I64(json_integer_value(json_object_get(json_object_get(vms, "by_state"), "defined")),
             1);
  EXPECT_I64(json_integer_value(json_object_get(json_object_get(n, "allocated"), "vcpus")), 1);
  EXPECT_TRUE(json_integer_value(json_object_get(json_object_get(n, "capacity"), "vcpus")) > 0);
  json_decref(n);
  check_and_stop(f);
}

/* ---- machine types ------------------------------------------------------ */

/* What a QEMU 10.0 would list (abridged from tests/data/qemu). */
static const char MACHINES_10_0[] =
    "Supported machines are:\n"
    "microvm              microvm (i386)\n"
    "pc-i440fx-9.2        Standard PC (i440FX + PIIX, 1996)\n"
    "pc                   Standard PC (i440FX + PIIX, 1996) (alias of pc-i440fx-10.0)\n"
    "pc-i440fx-10.0       Standard PC (i440FX + PIIX, 1996) (default)\n"
    "q35                  Standard PC (Q35 + ICH9, 2009) (alias of pc-q35-10.0)\n"
    "pc-q35-10.0          Standard PC (Q35 + ICH9, 2009)\n"
    "none                 empty machine\n";

static struct nc_hv_machines machines_10_0;

static void use_machines(struct fx *f, const struct nc_hv_machines *m, int rc) {
  pthread_mutex_lock(&f->w.hv.mu);
  f->w.hv.machines = m;
  f->w.hv.machines_rc = rc;
  pthread_mutex_unlock(&f->w.hv.mu);
}

static void give_qemu_10_0(struct fx *f) {
  EXPECT_RC(nc_hv_machines_parse(MACHINES_10_0, &machines_10_0), 0);
  use_machines(f, &machines_10_0, 0);
}

/* The machine a started VM's hypervisor was launched with. */
static const char *launched_machine(struct fx *f, const char *name) {
  static char buf[64];
  struct fake_proc *p = fake_hv_proc(&f->w.hv, name);
  pthread_mutex_lock(&f->w.hv.mu);
  snprintf(buf, sizeof buf, "%s", p ? p->machine : "(no process)");
  pthread_mutex_unlock(&f->w.hv.mu);
  return buf;
}

/* Created VMs get the versioned type the alias stands for; the hypervisor
 * runs exactly that; a type the user names is resolved and checked. */
static void test_machine_pinned_at_create(void **state) {
  struct fx *f = *state;
  give_qemu_10_0(f);
  running_vm(f, "a");
  EXPECT_STR(vm_field(f, "a", "machine"), "pc-i440fx-10.0");
  EXPECT_STR(launched_machine(f, "a"), "pc-i440fx-10.0");

  json_t *out;
  struct nc_errinfo err;
  EXPECT_RC(create(f, "{\"name\":\"b\",\"image\":\"img\",\"machine\":\"q35\"}", &out, &err),
            0);
  EXPECT_STR(jstr(json_object_get(out, "vm"), "machine"), "pc-q35-10.0");
  json_decref(out);
  EXPECT_RC(create(f, "{\"name\":\"c\",\"image\":\"img\",\"machine\":\"pc-i440fx-9.2\"}",
                   &out, &err),
            0);
  json_decref(out);
  act_ok(f, "c", NC_ACT_START, NULL, "succeeded");
  EXPECT_STR(launched_machine(f, "c"), "pc-i440fx-9.2");

  /* Not listed, or listed but not a PC: 422 on "machine", naming the
   * supported ones. Nothing is recorded. */
  int rc = create(f, "{\"name\":\"d\",\"image\":\"img\",\"machine\":\"pc-i440fx-11.0\"}",
                  &out, &err);
  expect_err(rc, &err, 422, "unprocessable", "\"pc-i440fx-11.0\" is not one this node's QEMU");
  EXPECT_STR(err.field, "machine");
  EXPECT_CONTAINS(err.message, "supports pc, pc-i440fx-10.0, q35, pc-q35-10.0, pc-i440fx-9.2");
  rc = create(f, "{\"name\":\"d\",\"image\":\"img\",\"machine\":\"microvm\"}", &out, &err);
  expect_err(rc, &err, 422, "unprocessable", "\"microvm\"");
  EXPECT_STR(err.field, "machine");
  if (strstr(err.message, "supports") && strstr(strstr(err.message, "supports"), "microvm"))
    fail_msg("microvm offered as supported: %s", err.message);
  json_t *l = nc_vmm_list(f->vmm);
  EXPECT_I64(json_array_size(json_object_get(l, "vms")), 3);
  json_decref(l);

  /* A clone keeps its source's type (its internal snapshots need it). */
  act_ok(f, "c", NC_ACT_STOP, NULL, "succeeded");
  json_t *body = parse("{\"name\":\"c2\"}");
  EXPECT_RC(nc_vmm_clone(f->vmm, "c", body, &out, &err), 0);
  json_decref(body);
  char id[32];
  op_id(out, id, sizeof id);
  json_decref(out);
  json_decref(wait_op(f, id, "succeeded"));
  EXPECT_STR(vm_field(f, "c2", "machine"), "pc-i440fx-9.2");
  check_and_stop(f);
}

/* When QEMU cannot be asked the VM is still created, with "pc" as before;
 * a driver without machine types (the noop driver) does the same. */
static void test_machine_unknown_falls_back_to_pc(void **state) {
  struct fx *f = *state;
  use_machines(f, NULL, NC_E_HV);
  running_vm(f, "a");
  EXPECT_STR(vm_field(f, "a", "machine"), "pc");
  EXPECT_STR(launched_machine(f, "a"), "pc");
  use_machines(f, NULL, 0); /* -ENOTSUP */
  running_vm(f, "b");
  EXPECT_STR(vm_field(f, "b", "machine"), "pc");
  check_and_stop(f);
}

/* A record stored before specs had a machine loads, shows "pc" and runs
 * with -machine pc as it always did. */
static void test_machine_old_record_runs_pc(void **state) {
  struct fx *f = *state;
  give_qemu_10_0(f);
  json_t *out;
  struct nc_errinfo err;
  EXPECT_RC(create(f, "{\"name\":\"old\",\"image\":\"img\"}", &out, &err), 0);
  json_decref(out);
  stop_manager(f);
  struct nc_kv kv;
  EXPECT_RC(nc_store_get(f->w.store, "/nc/vms/old", &kv), 0);
  json_t *rec = json_loadb(kv.value, kv.value_len, 0, NULL);
  nc_kv_free(&kv);
  EXPECT_STR(jstr(json_object_get(rec, "spec"), "machine"), "pc-i440fx-10.0");
  json_object_del(json_object_get(rec, "spec"), "machine");
  char *text = json_dumps(rec, JSON_COMPACT);
  json_decref(rec);
  EXPECT_RC(nc_store_put(f->w.store, "/nc/vms/old", text, strlen(text), 0, NULL), 0);
  free(text);

  start_manager(f);
  EXPECT_STR(vm_field(f, "old", "machine"), "pc");
  act_ok(f, "old", NC_ACT_START, NULL, "succeeded");
  EXPECT_STR(launched_machine(f, "old"), "pc");
  check_and_stop(f);
}

static json_t *incoming_spec(const char *machine) {
  json_t *j = parse("{\"name\":\"mig\",\"vcpus\":1,\"memory_bytes\":268435456,"
                    "\"image\":\"img\",\"nic\":\"user\",\"labels\":{},\"cmdline_append\":\"\"}");
  if (machine)
    json_object_set_new(j, "machine", json_string(machine));
  return j;
}

/* A migration's destination runs the VM's own type, and refuses one its
 * QEMU lacks before it creates anything. */
static void test_machine_incoming(void **state) {
  struct fx *f = *state;
  give_qemu_10_0(f);
  int launches = fake_hv_count(&f->w.hv, &f->w.hv.launches);
  struct nc_vmm_ext *x = NULL;
  struct nc_errinfo err = {0};
  json_t *spec = incoming_spec("pc-i440fx-10.1");
  int rc = nc_vmm_ext_incoming(f->vmm, spec, "vm.migrate-in", &x, &err);
  json_decref(spec);
  expect_err(rc, &err, 409, "machine_unsupported", "\"pc-i440fx-10.1\"");
  EXPECT_STR(err.field, "vm.machine");
  EXPECT_CONTAINS(err.message, "older than the source's");
  EXPECT_CONTAINS(err.message, "pc-i440fx-10.0");
  json_t *l = nc_vmm_list(f->vmm);
  EXPECT_I64(json_array_size(json_object_get(l, "vms")), 0);
  json_decref(l);
  EXPECT_I64(fake_hv_count(&f->w.hv, &f->w.hv.launches), launches);
  EXPECT_I64(f->w.overlays, 0);
  char dir[600];
  snprintf(dir, sizeof dir, "%s/vms/mig", f->w.data_dir);
  EXPECT_TRUE(access(dir, F_OK) != 0);

  /* An older type this QEMU still has: launched with it, unchanged. */
  spec = incoming_spec("pc-i440fx-9.2");
  EXPECT_RC(nc_vmm_ext_incoming(f->vmm, spec, "vm.migrate-in", &x, &err), 0);
  json_decref(spec);
  EXPECT_STR(launched_machine(f, "mig"), "pc-i440fx-9.2");
  EXPECT_STR(vm_field(f, "mig", "machine"), "pc-i440fx-9.2");
  nc_errinfo_set(&err, 500, "internal", NULL, "test over");
  nc_vmm_ext_finish(x, NC_E_CANCELLED, &err, NC_EXT_REMOVE);

  /* From a source older than this change (no machine): "pc", as before. */
  spec = incoming_spec(NULL);
  EXPECT_RC(nc_vmm_ext_incoming(f->vmm, spec, "vm.migrate-in", &x, &err), 0);
  json_decref(spec);
  EXPECT_STR(launched_machine(f, "mig"), "pc");
  EXPECT_STR(vm_field(f, "mig", "machine"), "pc");
  nc_vmm_ext_finish(x, NC_E_CANCELLED, &err, NC_EXT_REMOVE);
  check_and_stop(f);
}

int main(void) {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
  const struct CMUnitTest tests[] = {
      T(test_create_start_running),
      T(test_create_without_start),
      T(test_pause_resume_reboot),
      T(test_stop),
      T(test_stop_body_validation),
      T(test_delete),
      T(test_duplicate_create_conflicts),
      T(test_create_refusals),
      T(test_missing_vm_is_404),
      T(test_wrong_state_is_409_with_hint),
      T(test_action_refuses_actions_with_own_calls),
      T(test_busy_vm_refuses_second_op),
      T(test_cancel_start),
      T(test_reconciler_marks_dead_vm_failed),
      T(test_serial_log_capped),
      T(test_guest_power_off_is_stopped),
      T(test_paused_outside_is_recorded),
      T(test_launch_failure),
      T(test_overlay_failure),
      T(test_stop_failed_vm),
      T(test_get_returns_a_snapshot),
      T(test_restart_readopts_running_vm),
      T(test_restart_with_dead_process_is_failed),
      T(test_snapshots),
      T(test_clone),
      T(test_too_many_operations),
      T(test_node_json),
      T(test_machine_pinned_at_create),
      T(test_machine_unknown_falls_back_to_pc),
      T(test_machine_old_record_runs_pc),
      T(test_machine_incoming),
  };
#undef T
  return cmocka_run_group_tests(tests, NULL, NULL);
}
