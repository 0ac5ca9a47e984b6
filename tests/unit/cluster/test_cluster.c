/* The cluster's agent and controller in one process: three nodes, each a
 * real VM manager over the in-memory fake hypervisor, sharing one SQLite
 * store (each node on its own view, as on etcd). A clock pump runs the
 * store's manual clock at twice real time, so a node that stops renewing
 * its lease loses it after a bounded, short time while live nodes keep
 * theirs. No QEMU, no etcd: this runs in CI under ASan and UBSan, where
 * the end-to-end tests (tests/e2e/test_cluster*.py) cannot.
 *
 * Covered: placement of a pending VM and its creation by the node's agent;
 * name conflicts across nodes; hard anti-affinity; cordon (explain names
 * the "state" filter); pinning to a node; an HA VM of a node that stopped
 * renewing is re-placed and started elsewhere; the old node, back, deletes
 * its stale copy; forwarding lookups (locate). */
#include "nc_test.h"

#include <pthread.h>
#include <stdatomic.h>

#include "cluster/cluster.h"
#include "store/store.h"
#include "vm/image.h"
#include "vm_world.h"

#define NODES 3
#define WAIT_MS 20000

struct node {
  struct nct_world w;
  char name[8], api[32];
  struct nc_store *view;
  struct nc_ops *ops;
  struct nc_vmm *vmm;
  struct nc_cluster *cl;
  atomic_bool not_ready;
};

static bool node_ready_cb(void *data) {
  struct node *n = data;
  return !atomic_load(&n->not_ready);
}

struct sim {
  char dir[128];
  struct nc_clock_manual clock;
  struct nc_store *store;
  struct node n[NODES];
  pthread_t pump;
  atomic_bool stop;
};

static void *pump_main(void *arg) {
  struct sim *s = arg;
  while (!atomic_load(&s->stop)) {
    usleep(20 * 1000);
    nc_clock_manual_advance(&s->clock, 40); /* twice real time */
  }
  return NULL;
}

static int64_t real_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void node_up(struct sim *s, int i) {
  struct node *n = &s->n[i];
  if (!n->view) {
    char prefix[32];
    snprintf(prefix, sizeof prefix, "/nodes/%s", n->name);
    assert_int_equal(nc_store_view(s->store, prefix, false, &n->view), 0);
    json_t *j = json_pack("{s:s, s:s, s:s}", "name", "img", "kernel", n->w.kernel, "disk",
                          n->w.base_disk);
    struct nc_image img;
    struct nc_errinfo err = {0};
    assert_int_equal(nc_image_register(n->view, j, &img, &err), 0);
    json_decref(j);
  }
  assert_int_equal(nc_ops_new(n->view, &s->clock.clock, &n->w.rand.r, n->w.events, &n->ops), 0);
  struct nc_vmm_config vc = {
      .data_dir = n->w.data_dir,
      .node_name = n->name,
      .store = n->view,
      .hv = &n->w.hv.base,
      .disk = nct_world_disk_ops(&n->w),
      .clock = &s->clock.clock,
      .rand = &n->w.rand.r,
      .events = n->w.events,
      .ops = n->ops,
      .reconcile_interval_ms = 200,
  };
  assert_int_equal(nc_vmm_new(&vc, &n->vmm), 0);
  assert_int_equal(nc_vmm_start(n->vmm), 0);
  struct nc_cluster_config cc = {
      .store = s->store,
      .vmm = n->vmm,
      .node_store = n->view,
      .node_name = n->name,
      .api_addr = n->api,
      .dwcp_host = "127.0.0.1",
      .data_dir = n->w.data_dir,
      .token = "t0123456789abcdef0123456789abcdef",
      .zone = i == 2 ? "z2" : "z1",
      .control_plane = true,
      .lease_ttl_ms = 3000, /* store (manual) clock: 1.5 s of real time */
      .fence_after_ms = 1000,
      .restart_grace_ms = 300,
      .self_exe = NULL, /* no fence guard in-process */
      .ready = node_ready_cb,
      .ready_data = n,
  };
  assert_int_equal(nc_cluster_start(&cc, &n->cl), 0);
}

/* Stops the node's cluster part and manager without giving up its lease,
 * as a crash would (the fake hypervisor's "processes" stay). */
static void node_crash(struct sim *s, int i) {
  struct node *n = &s->n[i];
  nc_cluster_stop(n->cl);
  n->cl = NULL;
  nc_vmm_free(n->vmm);
  n->vmm = NULL;
  nc_ops_free(n->ops);
  n->ops = NULL;
  (void)s;
}

static int setup(void **state) {
  struct sim *s = calloc(1, sizeof *s);
  if (!s || nct_mkdtemp(s->dir, sizeof s->dir, "cluster") != 0)
    return -1;
  nc_clock_manual_init(&s->clock, 1000000);
  char uri[200];
  snprintf(uri, sizeof uri, "sqlite:%s/shared.db", s->dir);
  if (nc_store_open(uri, &s->clock.clock, &s->store) != 0)
    return -1;
  for (int i = 0; i < NODES; i++) {
    char tag[16];
    snprintf(tag, sizeof tag, "cl-n%d", i + 1);
    if (nct_world_init(&s->n[i].w, tag, 100 + (uint64_t)i, NULL) != 0)
      return -1;
    snprintf(s->n[i].name, sizeof s->n[i].name, "n%d", i + 1);
    snprintf(s->n[i].api, sizeof s->n[i].api, "127.0.0.1:%d", 1 + i); /* never called */
  }
  pthread_create(&s->pump, NULL, pump_main, s);
  for (int i = 0; i < NODES; i++)
    node_up(s, i);
  *state = s;
  return 0;
}

static int teardown(void **state) {
  struct sim *s = *state;
  for (int i = 0; i < NODES; i++) {
    struct node *n = &s->n[i];
    nc_cluster_stop(n->cl);
    nc_vmm_free(n->vmm);
    nc_ops_free(n->ops);
    nc_store_close(n->view);
  }
  atomic_store(&s->stop, true);
  pthread_join(s->pump, NULL);
  nc_store_close(s->store);
  for (int i = 0; i < NODES; i++)
    nct_world_fini(&s->n[i].w);
  nct_rmtree(s->dir);
  free(s);
  return 0;
}

/* Waits until every node is alive and one is the controller. */
static void wait_formed(struct sim *s) {
  int64_t until = real_ms() + WAIT_MS;
  for (;;) {
    json_t *st = NULL;
    struct nc_errinfo err = {0};
    nc_cluster_status(s->n[0].cl, &st, &err);
    bool ok = json_integer_value(json_object_get(st, "nodes_alive")) == NODES &&
              json_is_string(json_object_get(st, "controller"));
    json_decref(st);
    if (ok)
      return;
    if (real_ms() > until)
      fail_msg("the cluster did not form within %d ms", WAIT_MS);
    usleep(50 * 1000);
  }
}

static json_t *record(struct sim *s, const char *vm) {
  char key[128];
  snprintf(key, sizeof key, "/cluster/vms/%s", vm);
  struct nc_kv kv;
  if (nc_store_get(s->store, key, &kv) != 0)
    return NULL;
  json_t *j = json_loadb(kv.value, kv.value_len, 0, NULL);
  nc_kv_free(&kv);
  return j;
}

/* The node index whose manager has vm running, waiting up to WAIT_MS;
 * not_on (or -1) is excluded. */
static int wait_running(struct sim *s, const char *vm, int not_on) {
  int64_t until = real_ms() + WAIT_MS;
  for (;;) {
    for (int i = 0; i < NODES; i++) {
      if (i == not_on || !s->n[i].vmm)
        continue;
      json_t *out = NULL;
      struct nc_errinfo err = {0};
      if (nc_vmm_get(s->n[i].vmm, vm, &out, &err) == 0) {
        bool run = strcmp(json_string_value(json_object_get(out, "state")), "running") == 0;
        json_decref(out);
        if (run)
          return i;
      }
    }
    if (real_ms() > until)
      fail_msg("vm %s is not running on any node (except n%d) within %d ms", vm, not_on + 1,
               WAIT_MS);
    usleep(50 * 1000);
  }
}

static int create(struct sim *s, int via, const char *body, json_t **out,
                  struct nc_errinfo *err) {
  json_t *req = json_loads(body, 0, NULL);
  assert_non_null(req);
  int rc = nc_cluster_vm_create(s->n[via].cl, req, out, err);
  json_decref(req);
  return rc;
}

static void test_place_create_and_conflict(void **state) {
  struct sim *s = *state;
  wait_formed(s);
  json_t *out = NULL;
  struct nc_errinfo err = {0};
  EXPECT_RC(create(s, 0, "{\"name\":\"web-1\",\"image\":\"img\",\"start\":true}", &out, &err),
            0);
  EXPECT_STR(json_string_value(json_object_get(out, "status")), "created");
  const char *node = json_string_value(json_object_get(out, "node"));
  int on = wait_running(s, "web-1", -1);
  EXPECT_STR(s->n[on].name, node);
  json_decref(out);
  /* the same name through another node */
  memset(&err, 0, sizeof err);
  EXPECT_TRUE(create(s, 2, "{\"name\":\"web-1\",\"image\":\"img\"}", &out, &err) != 0);
  EXPECT_I64(err.status, 409);
  /* forwarding lookups */
  char addr[64];
  bool local = true;
  int other = (on + 1) % NODES;
  EXPECT_RC(nc_cluster_vm_locate(s->n[other].cl, "web-1", addr, sizeof addr, &local), 0);
  EXPECT_TRUE(!local);
  EXPECT_STR(addr, s->n[on].api);
  EXPECT_RC(nc_cluster_vm_locate(s->n[on].cl, "web-1", addr, sizeof addr, &local), 0);
  EXPECT_TRUE(local);
  EXPECT_RC(nc_cluster_vm_locate(s->n[0].cl, "nope", addr, sizeof addr, &local), -ENOENT);
  /* bad input names the field */
  memset(&err, 0, sizeof err);
  EXPECT_TRUE(create(s, 0, "{\"name\":\"x\",\"image\":\"img\",\"placement\":{\"groups\":[{\"name\":\"g\",\"policy\":\"near\"}]}}", &out, &err) != 0);
  EXPECT_I64(err.status, 400);
  EXPECT_STR(err.field, "placement.groups[].policy");
  memset(&err, 0, sizeof err);
  EXPECT_TRUE(create(s, 0, "{\"name\":\"x\",\"image\":\"img\",\"ha_priority\":5000}", &out, &err) != 0);
  EXPECT_STR(err.field, "ha_priority");
  memset(&err, 0, sizeof err);
  EXPECT_TRUE(create(s, 0, "{\"name\":\"x\",\"image\":\"img\",\"node\":\"n9\"}", &out, &err) != 0);
  EXPECT_I64(err.status, 422);
  EXPECT_STR(err.field, "node");
  json_t *rec = record(s, "x");
  EXPECT_TRUE(rec == NULL); /* refused requests leave nothing behind */
}

static const char *record_node(struct sim *s, const char *vm, char *buf, size_t len) {
  json_t *rec = record(s, vm);
  snprintf(buf, len, "%s", rec ? json_string_value(json_object_get(rec, "node")) : "(none)");
  json_decref(rec);
  return buf;
}

/* The migration hooks: the destination claims the record from the source
 * before it resumes the guest, and hands it back (release) when the guest
 * then cannot resume there; neither moves a record a third node holds. */
static void test_claim_and_release(void **state) {
  struct sim *s = *state;
  wait_formed(s);
  json_t *out = NULL;
  struct nc_errinfo err = {0};
  EXPECT_RC(create(s, 0, "{\"name\":\"mv\",\"image\":\"img\",\"node\":\"n1\"}", &out, &err), 0);
  json_decref(out);
  /* n2 holds a local copy, as a destination does while it migrates in
   * (else its agent drops a record naming it for a VM it does not have) */
  json_t *req = json_loads("{\"name\":\"mv\",\"image\":\"img\"}", 0, NULL);
  EXPECT_RC(nc_vmm_create(s->n[1].vmm, req, &out, &err), 0);
  json_decref(req);
  json_decref(out);
  char node[64];
  EXPECT_STR(record_node(s, "mv", node, sizeof node), "n1");
  EXPECT_RC(nc_cluster_claim(s->n[1].cl, "mv", "n1"), 0);
  EXPECT_STR(record_node(s, "mv", node, sizeof node), "n2");
  /* n3 cannot take it from n1 any more, nor hand back what it does not hold */
  EXPECT_RC(nc_cluster_claim(s->n[2].cl, "mv", "n1"), -EBUSY);
  EXPECT_RC(nc_cluster_release(s->n[2].cl, "mv", "n1"), -EBUSY);
  EXPECT_STR(record_node(s, "mv", node, sizeof node), "n2");
  EXPECT_RC(nc_cluster_release(s->n[1].cl, "mv", "n1"), 0);
  EXPECT_STR(record_node(s, "mv", node, sizeof node), "n1");
  json_t *rec = record(s, "mv");
  EXPECT_STR(json_string_value(json_object_get(rec, "status")), "created");
  json_decref(rec);
  /* a release after the source already holds it again changes nothing */
  EXPECT_RC(nc_cluster_release(s->n[1].cl, "mv", "n1"), 0);
  EXPECT_STR(record_node(s, "mv", node, sizeof node), "n1");
  EXPECT_RC(nc_cluster_claim(s->n[1].cl, "nope", "n1"), -ENOENT);
  EXPECT_RC(nc_cluster_release(s->n[1].cl, "nope", "n1"), -ENOENT);
}

static void test_anti_affinity_cordon_and_pin(void **state) {
  struct sim *s = *state;
  wait_formed(s);
  const char *body =
      "{\"name\":\"%s\",\"image\":\"img\",\"start\":true,\"placement\":{\"groups\":"
      "[{\"name\":\"web\",\"policy\":\"anti-affinity\",\"scope\":\"host\",\"hard\":true}]}}";
  char b[400];
  json_t *out = NULL;
  struct nc_errinfo err = {0};
  const char *nodes[3];
  json_t *outs[3];
  for (int i = 0; i < 3; i++) {
    char name[8];
    snprintf(name, sizeof name, "aa-%d", i);
    snprintf(b, sizeof b, body, name);
    EXPECT_RC(create(s, i, b, &outs[i], &err), 0);
    nodes[i] = json_string_value(json_object_get(outs[i], "node"));
  }
  EXPECT_TRUE(strcmp(nodes[0], nodes[1]) != 0 && strcmp(nodes[1], nodes[2]) != 0 &&
              strcmp(nodes[0], nodes[2]) != 0);
  /* a fourth member has nowhere to go: refused, with each node's reason */
  snprintf(b, sizeof b, body, "aa-3");
  memset(&err, 0, sizeof err);
  EXPECT_TRUE(create(s, 0, b, &out, &err) != 0);
  EXPECT_I64(err.status, 422);
  EXPECT_CONTAINS(err.message, "anti_affinity");
  EXPECT_TRUE(record(s, "aa-3") == NULL);
  for (int i = 0; i < 3; i++)
    json_decref(outs[i]);
  /* cordon n1: explain says why, placement avoids it */
  EXPECT_RC(nc_cluster_node_admin(s->n[1].cl, "n1", "cordon", &out, &err), 0);
  json_decref(out);
  json_t *req = json_loads("{\"name\":\"c-1\",\"image\":\"img\"}", 0, NULL);
  EXPECT_RC(nc_cluster_explain(s->n[2].cl, req, &out, &err), 0);
  json_t *h;
  size_t i;
  bool saw = false;
  json_array_foreach(json_object_get(out, "hosts"), i, h) {
    if (strcmp(json_string_value(json_object_get(h, "host")), "n1") == 0) {
      EXPECT_STR(json_string_value(json_object_get(h, "filter")), "state");
      saw = true;
    }
  }
  EXPECT_TRUE(saw);
  EXPECT_TRUE(strcmp(json_string_value(json_object_get(out, "host")), "n1") != 0);
  json_decref(out);
  /* pinning to a cordoned node is refused; to another, honoured */
  json_object_set_new(req, "node", json_string("n1"));
  memset(&err, 0, sizeof err);
  EXPECT_TRUE(nc_cluster_vm_create(s->n[0].cl, req, &out, &err) != 0);
  EXPECT_I64(err.status, 422);
  json_object_set_new(req, "node", json_string("n3"));
  EXPECT_RC(nc_cluster_vm_create(s->n[0].cl, req, &out, &err), 0);
  EXPECT_STR(json_string_value(json_object_get(out, "node")), "n3");
  json_decref(out);
  json_decref(req);
  EXPECT_RC(nc_cluster_node_admin(s->n[1].cl, "n1", "uncordon", &out, &err), 0);
  json_decref(out);
  memset(&err, 0, sizeof err);
  EXPECT_TRUE(nc_cluster_node_admin(s->n[1].cl, "n7", "cordon", &out, &err) != 0);
  EXPECT_I64(err.status, 404);
}

static const char *node_state_of(struct sim *s, const char *name) {
  static char st[32];
  json_t *nodes = NULL;
  struct nc_errinfo err = {0};
  st[0] = '\0';
  if (nc_cluster_nodes(s->n[0].cl, &nodes, &err) != 0)
    return st;
  size_t i;
  json_t *n;
  json_array_foreach(nodes, i, n) if (strcmp(json_string_value(json_object_get(n, "name")),
                                             name) == 0)
      snprintf(st, sizeof st, "%s", json_string_value(json_object_get(n, "state")));
  json_decref(nodes);
  return st;
}

static void wait_state(struct sim *s, const char *node, const char *want) {
  int64_t until = real_ms() + WAIT_MS;
  while (strcmp(node_state_of(s, node), want) != 0) {
    if (real_ms() > until)
      fail_msg("node %s is %s, not %s, after %d ms", node, node_state_of(s, node), want,
               WAIT_MS);
    usleep(50 * 1000);
  }
}

/* A node whose daemon is not ready stays alive (its VMs stay) but takes
 * no new VMs; ready again, it does. */
static void test_not_ready(void **state) {
  struct sim *s = *state;
  wait_formed(s);
  atomic_store(&s->n[2].not_ready, true);
  wait_state(s, "n3", "not-ready");
  json_t *req = json_loads("{\"name\":\"nr-1\",\"image\":\"img\"}", 0, NULL);
  json_t *out = NULL;
  struct nc_errinfo err = {0};
  EXPECT_RC(nc_cluster_explain(s->n[0].cl, req, &out, &err), 0);
  json_t *h;
  size_t i;
  bool saw = false;
  json_array_foreach(json_object_get(out, "hosts"), i, h) {
    if (strcmp(json_string_value(json_object_get(h, "host")), "n3") == 0) {
      EXPECT_STR(json_string_value(json_object_get(h, "filter")), "state");
      saw = true;
    }
  }
  EXPECT_TRUE(saw);
  json_decref(out);
  json_decref(req);
  atomic_store(&s->n[2].not_ready, false);
  wait_state(s, "n3", "ready");
}

static void test_ha_restart_elsewhere(void **state) {
  struct sim *s = *state;
  wait_formed(s);
  json_t *out = NULL;
  struct nc_errinfo err = {0};
  EXPECT_RC(create(s, 0, "{\"name\":\"ha-1\",\"image\":\"img\",\"start\":true,\"ha\":true}",
                   &out, &err),
            0);
  json_decref(out);
  int on = wait_running(s, "ha-1", -1);
  json_t *nonha = NULL;
  char b[200];
  snprintf(b, sizeof b, "{\"name\":\"plain-1\",\"image\":\"img\",\"start\":true,\"node\":\"%s\"}",
           s->n[on].name);
  EXPECT_RC(create(s, (on + 1) % NODES, b, &nonha, &err), 0);
  json_decref(nonha);
  wait_running(s, "plain-1", -1);
  int64_t t0 = real_ms();
  node_crash(s, on);
  int to = wait_running(s, "ha-1", on);
  int64_t took = real_ms() - t0;
  fprintf(stderr, "ha-1: n%d stopped renewing; running on n%d after %lld ms\n", on + 1, to + 1,
          (long long)took);
  json_t *rec = record(s, "ha-1");
  EXPECT_STR(json_string_value(json_object_get(rec, "node")), s->n[to].name);
  EXPECT_STR(json_string_value(json_object_get(rec, "evicted_from")), s->n[on].name);
  json_decref(rec);
  /* the non-HA VM stays assigned to the dead node */
  rec = record(s, "plain-1");
  EXPECT_STR(json_string_value(json_object_get(rec, "node")), s->n[on].name);
  json_decref(rec);
  /* the old node comes back: it deletes its stale copy of ha-1 and keeps plain-1 */
  node_up(s, on);
  int64_t until = real_ms() + WAIT_MS;
  for (;;) {
    json_t *vm = NULL;
    struct nc_errinfo e2 = {0};
    int rc = nc_vmm_get(s->n[on].vmm, "ha-1", &vm, &e2);
    json_decref(vm);
    if (rc != 0 && e2.status == 404)
      break;
    if (real_ms() > until)
      fail_msg("n%d kept its stale copy of ha-1", on + 1);
    usleep(50 * 1000);
  }
  json_t *vm = NULL;
  EXPECT_RC(nc_vmm_get(s->n[on].vmm, "plain-1", &vm, &err), 0);
  json_decref(vm);
  /* exactly one manager has ha-1 */
  int have = 0;
  for (int i = 0; i < NODES; i++) {
    json_t *x = NULL;
    struct nc_errinfo e3 = {0};
    if (nc_vmm_get(s->n[i].vmm, "ha-1", &x, &e3) == 0)
      have++;
    json_decref(x);
  }
  EXPECT_I64(have, 1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_place_create_and_conflict, setup, teardown),
      cmocka_unit_test_setup_teardown(test_anti_affinity_cordon_and_pin, setup, teardown),
      cmocka_unit_test_setup_teardown(test_claim_and_release, setup, teardown),
      cmocka_unit_test_setup_teardown(test_not_ready, setup, teardown),
      cmocka_unit_test_setup_teardown(test_ha_restart_elsewhere, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
