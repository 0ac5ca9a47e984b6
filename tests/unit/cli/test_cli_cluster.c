/* The cluster commands (cluster status, node list|cordon|uncordon|drain)
 * and vm create's cluster flags, through nc_cli_main against the fake
 * transport: the requests sent (bodies as the server would receive them),
 * the tables printed, drain and create waiting, and the errors. */
#include "harness.h"

#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "checks.h"

static const char k_not_clustered[] =
    "{\"error\":{\"code\":\"not_clustered\",\"message\":\"this node is not in a cluster (see "
    "docs/cluster.md: novacron cluster init)\",\"field\":null}}";

#define NODE_N1                                                                                 \
  "{\"name\":\"n1\",\"state\":\"ready\",\"api\":\"10.0.0.1:8470\",\"zone\":\"z1\","            \
  "\"rack\":\"r1\",\"labels\":{},\"control_plane\":true,\"controller\":true,"                   \
  "\"capacity\":{\"vcpus\":8,\"memory_bytes\":17179869184},"                                    \
  "\"allocated\":{\"vcpus\":3,\"memory_bytes\":1610612736},\"vms\":2,\"images\":[\"nc-test\"]}"
#define NODE_N3_DEAD                                                                            \
  "{\"name\":\"n3\",\"state\":\"dead\",\"api\":\"10.0.0.3:8470\",\"zone\":\"\",\"rack\":\"\","  \
  "\"labels\":{},\"control_plane\":false,\"controller\":false,"                                 \
  "\"capacity\":{\"vcpus\":4,\"memory_bytes\":8589934592},"                                     \
  "\"allocated\":{\"vcpus\":0,\"memory_bytes\":0},\"vms\":0,\"images\":[]}"
/* n2 with a drain object (or none when drain is ""). */
#define NODE_N2(state, drain)                                                                   \
  "{\"name\":\"n2\",\"state\":\"" state "\",\"api\":\"10.0.0.2:8470\",\"zone\":\"z2\","         \
  "\"rack\":\"r1\",\"labels\":{\"ssd\":\"yes\"},\"control_plane\":false,\"controller\":false,"  \
  "\"capacity\":{\"vcpus\":8,\"memory_bytes\":17179869184},"                                    \
  "\"allocated\":{\"vcpus\":2,\"memory_bytes\":536870912},\"vms\":1,\"images\":[]" drain "}"

static const char k_nodes[] = "{\"nodes\":[" NODE_N1 "," NODE_N2("ready", "") "," NODE_N3_DEAD "]}";

static const char k_nodes_table[] =
    "NAME  STATE  ROLE           ZONE  VCPUS  MEMORY    VMS  CONTROLLER\n"
    "n1    ready  control-plane  z1    3/8    1.5G/16G  2    yes\n"
    "n2    ready  worker         z2    2/8    512M/16G  1    -\n"
    "n3    dead   worker         -     0/4    0/8G      0    -\n";

/* ---- node list, cluster status ---- */

static void test_node_list(void **state) {
  struct harness *h = *state;
  h_reply(h, 200, k_nodes);
  h_run(h, "node", "list", NULL);
  check_rc(h, 0);
  assert_int_equal(h->nreqs, 1);
  assert_string_equal(h->reqs[0].method, "GET");
  assert_string_equal(h->reqs[0].path, "/v1/nodes");
  assert_string_equal(h->out, k_nodes_table);
  assert_string_equal(h->err, "");
}

static void test_node_list_json_is_raw(void **state) {
  struct harness *h = *state;
  h_reply(h, 200, k_nodes);
  h_run(h, "node", "list", "-o", "json", NULL);
  check_rc(h, 0);
  json_t *got = json_loads(h->out, 0, NULL), *want = json_loads(k_nodes, 0, NULL);
  if (got == NULL || !json_equal(got, want))
    fail_msg("stdout is not the server's answer:\n%s", h->out);
  json_decref(got);
  json_decref(want);
}

static void test_cluster_status(void **state) {
  struct harness *h = *state;
  h_reply(h, 200, "{\"node\":\"n2\",\"controller\":\"n1\",\"lease_valid\":true,"
                  "\"nodes_total\":3,\"nodes_alive\":2,\"nodes\":[" NODE_N1 "," NODE_N2(
                      "ready", "") "," NODE_N3_DEAD "]}");
  h_run(h, "cluster", "status", NULL);
  check_rc(h, 0);
  assert_string_equal(h->reqs[0].path, "/v1/cluster");
  char want[2048];
  snprintf(want, sizeof want, "node n2 (lease valid), controller n1, 2 of 3 nodes alive\n\n%s",
           k_nodes_table);
  assert_string_equal(h->out, want);
}

static void test_cluster_status_no_controller(void **state) {
  struct harness *h = *state;
  h_reply(h, 200, "{\"node\":\"n1\",\"controller\":null,\"lease_valid\":false,"
                  "\"nodes_total\":1,\"nodes_alive\":0,\"nodes\":[]}");
  h_run(h, "cluster", "status", NULL);
  check_rc(h, 0);
  check_contains(h->out, "node n1 (lease EXPIRED), controller none (election pending), 0 of 1 "
                         "nodes alive\n");
}

static void test_cluster_status_json(void **state) {
  struct harness *h = *state;
  static const char body[] = "{\"node\":\"n1\",\"controller\":null,\"lease_valid\":true,"
                             "\"nodes_total\":0,\"nodes_alive\":0,\"nodes\":[]}";
  h_reply(h, 200, body);
  h_run(h, "-o", "json", "cluster", "status", NULL);
  check_rc(h, 0);
  json_t *got = json_loads(h->out, 0, NULL), *want = json_loads(body, 0, NULL);
  if (got == NULL || !json_equal(got, want))
    fail_msg("stdout is not the server's answer:\n%s", h->out);
  json_decref(got);
  json_decref(want);
}

/* Every cluster route answers not_clustered on a single node. */
static void test_not_clustered(void **state) {
  struct harness *h = *state;
  static const char *const cmds[][3] = {
      {"cluster", "status", NULL}, {"node", "list", NULL},  {"node", "cordon", "n1"},
      {"node", "uncordon", "n1"},  {"node", "drain", "n1"},
  };
  for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++) {
    const char *argv[3];
    int argc = 0;
    for (int k = 0; k < 3 && cmds[i][k] != NULL; k++)
      argv[argc++] = cmds[i][k];
    h_free(h);
    h_init(h);
    h_reply(h, 404, k_not_clustered);
    h_runv(h, argc, argv);
    check_rc(h, 1);
    if (strncmp(h->err, "novacron: this node is not in a cluster\n", 40) != 0)
      fail_msg("%s %s: stderr is\n%s", cmds[i][0], cmds[i][1], h->err);
    check_contains(h->err, "hint: cluster and node commands need novacrond running as a cluster "
                           "member");
    assert_string_equal(h->out, "");
    assert_int_equal(h->nreqs, 1); /* drain does not go on polling */
  }
}

/* ---- cordon, uncordon ---- */

static void test_cordon_uncordon(void **state) {
  struct harness *h = *state;
  h_reply(h, 200, "{\"node\":\"n2\",\"admin\":\"cordoned\"}");
  h_run(h, "node", "cordon", "n2", NULL);
  check_rc(h, 0);
  assert_string_equal(h->reqs[0].method, "POST");
  assert_string_equal(h->reqs[0].path, "/v1/nodes/n2/cordon");
  check_body(&h->reqs[0], NULL);
  assert_string_equal(h->out, "node \"n2\" cordoned\n");

  h_free(h);
  h_init(h);
  h_reply(h, 200, "{\"node\":\"n2\",\"admin\":\"active\"}");
  h_run(h, "node", "uncordon", "n2", "-o", "json", NULL);
  check_rc(h, 0);
  assert_string_equal(h->reqs[0].path, "/v1/nodes/n2/uncordon");
  check_contains(h->out, "\"admin\": \"active\"");

  h_free(h);
  h_init(h);
  h_reply(h, 404, "{\"error\":{\"code\":\"not_found\",\"message\":\"no node \\\"n9\\\" in the "
                  "cluster (see `novacron node list`)\",\"field\":\"node\"}}");
  h_run(h, "node", "cordon", "n9", NULL);
  check_rc(h, 1);
  assert_string_equal(h->err,
                      "novacron: no node \"n9\" in the cluster (see `novacron node list`)\n");
}

/* ---- drain ---- */

#define NODES_DRAIN(drain) "{\"nodes\":[" NODE_N1 "," NODE_N2("draining", ",\"drain\":" drain) "]}"

static void test_drain_to_complete(void **state) {
  struct harness *h = *state;
  h_reply(h, 200, "{\"node\":\"n2\",\"admin\":\"draining\"}");
  h_reply(h, 200, NODES_DRAIN("{\"state\":\"draining\",\"moved\":0,\"failed\":0,\"remaining\":2,"
                              "\"current\":{\"vm\":\"web-1\",\"to\":\"n1\",\"operation\":"
                              "\"op-7\"},\"errors\":[]}"));
  /* Same progress again: not printed twice. */
  h_reply(h, 200, NODES_DRAIN("{\"state\":\"draining\",\"moved\":0,\"failed\":0,\"remaining\":2,"
                              "\"current\":{\"vm\":\"web-1\",\"to\":\"n1\",\"operation\":"
                              "\"op-7\"},\"errors\":[]}"));
  h_reply(h, 200, NODES_DRAIN("{\"state\":\"draining\",\"moved\":1,\"failed\":0,\"remaining\":1,"
                              "\"current\":null,\"errors\":[]}"));
  h_reply(h, 200, NODES_DRAIN("{\"state\":\"complete\",\"moved\":2,\"failed\":0,\"remaining\":0,"
                              "\"current\":null,\"errors\":[]}"));
  h_run(h, "node", "drain", "n2", NULL);
  check_rc(h, 0);
  assert_int_equal(h->nreqs, 5);
  assert_string_equal(h->reqs[0].method, "POST");
  assert_string_equal(h->reqs[0].path, "/v1/nodes/n2/drain");
  check_body(&h->reqs[0], NULL);
  for (int i = 1; i < 5; i++) {
    assert_string_equal(h->reqs[i].method, "GET");
    assert_string_equal(h->reqs[i].path, "/v1/nodes");
  }
  /* Once a second: three sleeps between four polls. */
  assert_int_equal(h->slept_ms, 3000);
  assert_string_equal(h->err,
                      "draining n2: moved 0, failed 0, remaining 2; moving web-1 to n1 (op-7)\n"
                      "draining n2: moved 1, failed 0, remaining 1\n");
  assert_string_equal(h->out, "node \"n2\" drained: 2 VMs moved (3.0s)\n");
}

static void test_drain_tty_progress(void **state) {
  struct harness *h = *state;
  h->io.err_tty = true;
  h_reply(h, 200, "{\"node\":\"n2\",\"admin\":\"draining\"}");
  h_reply(h, 200, NODES_DRAIN("{\"state\":\"draining\",\"moved\":1,\"failed\":0,\"remaining\":1,"
                              "\"current\":{\"vm\":\"db-1\",\"to\":\"n1\"},\"errors\":[]}"));
  h_reply(h, 200, NODES_DRAIN("{\"state\":\"complete\",\"moved\":2,\"failed\":0,\"remaining\":0,"
                              "\"errors\":[]}"));
  h_run(h, "node", "drain", "n2", NULL);
  check_rc(h, 0);
  check_contains(h->err, "\r\033[Kdraining n2: moved 1, failed 0, remaining 1; moving db-1 to n1");
  /* The progress line is erased before the result. */
  check_contains(h->err, "n1\r\033[K");
  assert_string_equal(h->out, "node \"n2\" drained: 2 VMs moved (1.0s)\n");
}

/* On a tty the stuck report starts on a line of its own. */
static void test_drain_tty_stuck(void **state) {
  struct harness *h = *state;
  h->io.err_tty = true;
  h_reply(h, 200, "{\"node\":\"n2\",\"admin\":\"draining\"}");
  h_reply(h, 200, NODES_DRAIN("{\"state\":\"draining\",\"moved\":0,\"failed\":0,\"remaining\":1,"
                              "\"errors\":[]}"));
  h_reply(h, 200, NODES_DRAIN("{\"state\":\"stuck\",\"moved\":0,\"failed\":1,\"remaining\":1,"
                              "\"errors\":[\"db-1: no node fits\"]}"));
  h_run(h, "node", "drain", "n2", NULL);
  check_rc(h, 1);
  check_contains(h->err, "remaining 1\r\033[Knovacron: drain of node \"n2\" is stuck");
  check_contains(h->err, "\n  db-1: no node fits\n");
}

static void test_drain_stuck(void **state) {
  struct harness *h = *state;
  h_reply(h, 200, "{\"node\":\"n2\",\"admin\":\"draining\"}");
  h_reply(h, 200, NODES_DRAIN("{\"state\":\"draining\",\"moved\":1,\"failed\":0,\"remaining\":2,"
                              "\"current\":null,\"errors\":[]}"));
  h_reply(h, 200, NODES_DRAIN("{\"state\":\"stuck\",\"moved\":1,\"failed\":2,\"remaining\":2,"
                              "\"current\":null,\"errors\":[\"db-1: no node fits (memory: 1, "
                              "labels: 1)\",\"db-2: migration failed: destination refused\"]}"));
  h_run(h, "node", "drain", "n2", NULL);
  check_rc(h, 1);
  assert_string_equal(h->out, "");
  check_contains(h->err, "novacron: drain of node \"n2\" is stuck: moved 1, failed 2, "
                         "remaining 2\n"
                         "  db-1: no node fits (memory: 1, labels: 1)\n"
                         "  db-2: migration failed: destination refused\n"
                         "hint: fix the cause and run 'novacron node drain n2' again");
}

static void test_drain_timeout(void **state) {
  struct harness *h = *state;
  h_reply(h, 200, "{\"node\":\"n2\",\"admin\":\"draining\"}");
  h_reply(h, 200, NODES_DRAIN("{\"state\":\"draining\",\"moved\":0,\"failed\":0,\"remaining\":3,"
                              "\"current\":null,\"errors\":[]}")); /* repeats */
  h_run(h, "--timeout", "3", "node", "drain", "n2", NULL);
  check_rc(h, 1);
  /* Polls at 0, 1, 2 and 3 s; the next would be past the limit. */
  assert_int_equal(h->nreqs, 5);
  assert_int_equal(h->slept_ms, 3000);
  check_contains(h->err, "novacron: node \"n2\" still draining after 3.0s (moved 0, failed 0, "
                         "remaining 3); the drain goes on");
}

static void test_drain_no_wait(void **state) {
  struct harness *h = *state;
  h_reply(h, 200, "{\"node\":\"n2\",\"admin\":\"draining\"}");
  h_run(h, "node", "drain", "n2", "--no-wait", NULL);
  check_rc(h, 0);
  assert_int_equal(h->nreqs, 1);
  assert_string_equal(h->out, "node \"n2\" draining (follow it with 'novacron node list')\n");
}

static void test_drain_called_off(void **state) {
  struct harness *h = *state;
  h_reply(h, 200, "{\"node\":\"n2\",\"admin\":\"draining\"}");
  h_reply(h, 200, k_nodes); /* n2 ready, no drain: someone uncordoned it */
  h_run(h, "node", "drain", "n2", NULL);
  check_rc(h, 1);
  assert_string_equal(h->err,
                      "novacron: the drain of node \"n2\" was called off (the node is now ready)\n");
}

static void test_drain_unknown_node(void **state) {
  struct harness *h = *state;
  h_reply(h, 404, "{\"error\":{\"code\":\"not_found\",\"message\":\"no node \\\"n9\\\" in the "
                  "cluster\",\"field\":\"node\"}}");
  h_run(h, "node", "drain", "n9", NULL);
  check_rc(h, 1);
  assert_int_equal(h->nreqs, 1);
  assert_string_equal(h->err, "novacron: no node \"n9\" in the cluster\n");
}

/* ---- vm create in a cluster: the body sent ---- */

struct body_case {
  const char *argv[24];
  const char *body; /* what the server must receive */
};

#define BASE "\"name\":\"web-1\",\"image\":\"i\",\"start\":false"

static const struct body_case k_bodies[] = {
    {{"--node", "n2"}, "{" BASE ",\"node\":\"n2\"}"},
    {{"--ha"}, "{" BASE ",\"ha\":true}"},
    {{"--ha", "--ha-priority", "750"}, "{" BASE ",\"ha\":true,\"ha_priority\":750}"},
    {{"--ha", "--ha-priority", "0"}, "{" BASE ",\"ha\":true,\"ha_priority\":0}"},
    {{"--anti-affinity", "web", "--anti-affinity", "front"},
     "{" BASE ",\"placement\":{\"groups\":["
     "{\"name\":\"web\",\"policy\":\"anti-affinity\",\"scope\":\"host\",\"hard\":true},"
     "{\"name\":\"front\",\"policy\":\"anti-affinity\",\"scope\":\"host\",\"hard\":true}]}}"},
    {{"--affinity", "db"},
     "{" BASE ",\"placement\":{\"groups\":["
     "{\"name\":\"db\",\"policy\":\"affinity\",\"scope\":\"host\",\"hard\":true}]}}"},
    {{"--soft-anti-affinity", "web"},
     "{" BASE ",\"placement\":{\"groups\":["
     "{\"name\":\"web\",\"policy\":\"anti-affinity\",\"scope\":\"host\",\"hard\":false}]}}"},
    {{"--soft-affinity", "cache"},
     "{" BASE ",\"placement\":{\"groups\":["
     "{\"name\":\"cache\",\"policy\":\"affinity\",\"scope\":\"host\",\"hard\":false}]}}"},
    {{"--spread-zones", "etcd"},
     "{" BASE ",\"placement\":{\"groups\":["
     "{\"name\":\"etcd\",\"policy\":\"anti-affinity\",\"scope\":\"zone\",\"hard\":true}]}}"},
    {{"--require-label", "ssd=yes", "--require-label", "gpu=a100"},
     "{" BASE ",\"placement\":{\"labels\":{\"ssd\":\"yes\",\"gpu\":\"a100\"}}}"},
    {{"--zone", "z2"}, "{" BASE ",\"placement\":{\"zone\":\"z2\"}}"},
    {{"--node", "n1", "--ha", "--ha-priority", "10", "--spread-zones", "etcd", "--soft-affinity",
      "cache", "--require-label", "ssd=yes", "--zone", "z1", "--label", "app=web"},
     "{" BASE ",\"labels\":{\"app\":\"web\"},\"node\":\"n1\",\"ha\":true,\"ha_priority\":10,"
     "\"placement\":{\"groups\":["
     "{\"name\":\"cache\",\"policy\":\"affinity\",\"scope\":\"host\",\"hard\":false},"
     "{\"name\":\"etcd\",\"policy\":\"anti-affinity\",\"scope\":\"zone\",\"hard\":true}],"
     "\"labels\":{\"ssd\":\"yes\"},\"zone\":\"z1\"}}"},
};

static void test_create_bodies(void **state) {
  struct harness *h = *state;
  for (size_t i = 0; i < sizeof k_bodies / sizeof *k_bodies; i++) {
    const struct body_case *c = &k_bodies[i];
    const char *argv[32] = {"vm", "create", "web-1", "--image", "i", "--no-wait"};
    int argc = 6;
    for (int k = 0; c->argv[k] != NULL; k++)
      argv[argc++] = c->argv[k];
    h_free(h);
    h_init(h);
    h_reply(h, 201, "{\"vm\":\"web-1\",\"node\":\"n1\",\"status\":\"created\"}");
    h_runv(h, argc, argv);
    if (h->rc != 0 || h->nreqs != 1)
      fail_msg("case %zu (%s): exit %d after %d requests\nstderr:\n%s", i, c->argv[0], h->rc,
               h->nreqs, h->err);
    assert_string_equal(h->reqs[0].method, "POST");
    assert_string_equal(h->reqs[0].path, "/v1/vms");
    check_body(&h->reqs[0], c->body);
  }
}

/* ---- vm create: usage errors for the cluster flags ---- */

struct usage_case {
  const char *argv[20];
  const char *want;
};

static const struct usage_case k_usage[] = {
    {{"--ha-priority", "5"}, "--ha-priority goes with --ha"},
    {{"--ha", "--ha-priority", "1001"}, "--ha-priority \"1001\" is not a whole number from 0 to "
                                        "1000"},
    {{"--ha", "--ha-priority", "-1"}, "--ha-priority \"-1\""},
    {{"--ha", "--ha-priority", "high"}, "--ha-priority \"high\""},
    {{"--ha=yes"}, "--ha takes no value"},
    {{"--explain=1"}, "--explain takes no value"},
    {{"--node"}, "--node needs a value"},
    {{"--node", "a", "--node", "b"}, "--node given twice"},
    {{"--node", "n1234567890123456789012345678901234567890123456789012345678901234"},
     "--node \"n1234567890123456789012345678901234567890123456789012345678901234\" is longer"},
    {{"--zone", "a", "--zone", "b"}, "--zone given twice"},
    {{"--anti-affinity="}, "--anti-affinity needs a non-empty value"},
    {{"--anti-affinity", "web", "--affinity", "web"},
     "--affinity \"web\": group \"web\" is already named by another group flag"},
    {{"--soft-affinity", "g", "--soft-affinity", "g"}, "--soft-affinity \"g\": group \"g\""},
    {{"--spread-zones", "g1234567890123456789012345678901234567890123456789012345678901234"},
     "--spread-zones \"g1234567890123456789012345678901234567890123456789012345678901234\": a "
     "group name is at most 63 bytes"},
    {{"--affinity", "a", "--affinity", "b", "--affinity", "c", "--affinity", "d", "--affinity",
      "e", "--affinity", "f", "--affinity", "g", "--affinity", "h", "--affinity", "i"},
     "at most 8 placement groups (--affinity \"i\" is one more)"},
    {{"--require-label", "ssd"}, "--require-label \"ssd\" is not KEY=VALUE"},
    {{"--require-label", "=yes"}, "--require-label \"=yes\" is not KEY=VALUE"},
    {{"--require-label", "ssd="}, "--require-label \"ssd=\" has an empty value"},
    {{"--require-label", "a=1", "--require-label", "a=2"}, "--require-label \"a\" given twice"},
    {{"--affinity-group", "x"}, "unknown flag --affinity-group"},
};

static void test_create_usage_errors(void **state) {
  struct harness *h = *state;
  for (size_t i = 0; i < sizeof k_usage / sizeof *k_usage; i++) {
    const struct usage_case *c = &k_usage[i];
    const char *argv[32] = {"vm", "create", "web-1", "--image", "i"};
    int argc = 5;
    for (int k = 0; c->argv[k] != NULL; k++)
      argv[argc++] = c->argv[k];
    h_free(h);
    h_init(h);
    h_reply(h, 201, "{}");
    h_runv(h, argc, argv);
    if (h->rc != 2 || strstr(h->err, c->want) == NULL || h->nreqs != 0)
      fail_msg("case %zu (%s): exit %d, %d requests, stderr:\n%s\nwant exit 2, no request, "
               "stderr containing \"%s\"",
               i, c->argv[0], h->rc, h->nreqs, h->err, c->want);
    check_contains(h->err, "usage: novacron vm create NAME --image IMG");
  }
}

static void test_too_many_required_labels(void **state) {
  struct harness *h = *state;
  const char *argv[32] = {"vm", "create", "web-1", "--image", "i"};
  int argc = 5;
  static const char *const kv[] = {"a=1", "b=1", "c=1", "d=1", "e=1", "f=1", "g=1", "h=1"};
  for (int i = 0; i < 8; i++) {
    argv[argc++] = "--require-label";
    argv[argc++] = kv[i];
  }
  h_runv(h, argc, argv);
  check_rc(h, 2);
  check_contains(h->err, "--require-label given 8 times (at most 7)");
  assert_int_equal(h->nreqs, 0);
}

/* ---- vm create in a cluster: following the placement ---- */

static void test_create_cluster_waits(void **state) {
  struct harness *h = *state;
  h_reply(h, 201, "{\"vm\":\"web-1\",\"node\":\"n2\",\"status\":\"created\"}");
  h_reply(h, 404, "{\"error\":{\"code\":\"not_found\",\"message\":\"no vm \\\"web-1\\\"\"}}");
  h_reply(h, 503, "{\"error\":{\"code\":\"node_down\",\"message\":\"the node this vm is "
                  "assigned to has no lease\"}}");
  h_reply(h, 200, "{\"name\":\"web-1\",\"state\":\"starting\",\"node\":\"n2\"}");
  h_reply(h, 200, "{\"name\":\"web-1\",\"state\":\"running\",\"node\":\"n2\"}");
  h_run(h, "vm", "create", "web-1", "--image", "i", "--start", "--anti-affinity", "web", NULL);
  check_rc(h, 0);
  assert_int_equal(h->nreqs, 5);
  for (int i = 1; i < 5; i++) {
    assert_string_equal(h->reqs[i].method, "GET");
    assert_string_equal(h->reqs[i].path, "/v1/vms/web-1");
  }
  assert_int_equal(h->slept_ms, 3000);
  assert_string_equal(h->out, "vm \"web-1\" placed on n2\n"
                              "vm \"web-1\" created and started on n2 (3.0s)\n");
  assert_string_equal(h->err, ""); /* the expected 404 and 503 are not reported */
}

static void test_create_cluster_without_start(void **state) {
  struct harness *h = *state;
  h_reply(h, 201, "{\"vm\":\"web-1\",\"node\":null,\"status\":\"pending\"}");
  h_reply(h, 404, "{\"error\":{\"code\":\"not_found\",\"message\":\"no vm\"}}");
  h_reply(h, 200, "{\"name\":\"web-1\",\"state\":\"defined\",\"node\":\"n3\"}");
  h_run(h, "vm", "create", "web-1", "--image", "i", NULL);
  check_rc(h, 0);
  assert_string_equal(h->out, "vm \"web-1\" accepted; the controller has not placed it yet\n"
                              "vm \"web-1\" created on n3 (1.0s)\n");
}

static void test_create_cluster_json(void **state) {
  struct harness *h = *state;
  h_reply(h, 201, "{\"vm\":\"web-1\",\"node\":\"n2\",\"status\":\"created\"}");
  h_reply(h, 200, "{\"name\":\"web-1\",\"state\":\"defined\",\"node\":\"n2\"}");
  h_run(h, "-o", "json", "vm", "create", "web-1", "--image", "i", NULL);
  check_rc(h, 0);
  json_t *j = json_loads(h->out, 0, NULL);
  if (j == NULL)
    fail_msg("stdout is not one JSON document:\n%s", h->out);
  assert_string_equal(json_string_value(json_object_get(j, "state")), "defined");
  json_decref(j);
}

static void test_create_cluster_timeout(void **state) {
  struct harness *h = *state;
  h_reply(h, 201, "{\"vm\":\"web-1\",\"node\":\"n2\",\"status\":\"created\"}");
  h_reply(h, 404, "{\"error\":{\"code\":\"not_found\",\"message\":\"no vm\"}}"); /* repeats */
  h_run(h, "vm", "create", "web-1", "--image", "i", NULL);
  check_rc(h, 1);
  assert_int_equal(h->slept_ms, 60000);
  check_contains(h->err, "novacron: vm \"web-1\" is not there on n2 after 1m00s (not created "
                         "yet); see 'novacron vm show web-1'");
}

static void test_create_cluster_timeout_flag(void **state) {
  struct harness *h = *state;
  h_reply(h, 201, "{\"vm\":\"web-1\",\"node\":\"n2\",\"status\":\"created\"}");
  h_reply(h, 200, "{\"name\":\"web-1\",\"state\":\"starting\"}"); /* repeats */
  h_run(h, "--timeout", "5", "vm", "create", "web-1", "--image", "i", "--start", NULL);
  check_rc(h, 1);
  assert_int_equal(h->slept_ms, 5000);
  check_contains(h->err, "is not running on n2 after 5.0s (starting)");
}

static void test_create_cluster_vm_failed(void **state) {
  struct harness *h = *state;
  h_reply(h, 201, "{\"vm\":\"web-1\",\"node\":\"n2\",\"status\":\"created\"}");
  h_reply(h, 200, "{\"name\":\"web-1\",\"state\":\"failed\",\"state_reason\":\"qemu exited\","
                  "\"node\":\"n2\"}");
  h_run(h, "vm", "create", "web-1", "--image", "i", "--start", NULL);
  check_rc(h, 1);
  assert_string_equal(h->err, "novacron: vm \"web-1\" failed on n2: qemu exited\n");
}

static void test_create_cluster_other_error(void **state) {
  struct harness *h = *state;
  h_reply(h, 201, "{\"vm\":\"web-1\",\"node\":\"n2\",\"status\":\"created\"}");
  h_reply(h, 500, "{\"error\":{\"code\":\"internal\",\"message\":\"disk on fire\"}}");
  h_run(h, "vm", "create", "web-1", "--image", "i", NULL);
  check_rc(h, 1);
  assert_int_equal(h->nreqs, 2); /* not an expected answer: no more polling */
  assert_string_equal(h->err, "novacron: disk on fire\n");
}

static void test_create_cluster_no_wait(void **state) {
  struct harness *h = *state;
  h_reply(h, 201, "{\"vm\":\"web-1\",\"node\":\"n2\",\"status\":\"pending\"}");
  h_run(h, "vm", "create", "web-1", "--image", "i", "--no-wait", NULL);
  check_rc(h, 0);
  assert_int_equal(h->nreqs, 1);
  assert_string_equal(h->out, "vm \"web-1\" placed on n2\n");
}

static void test_create_unschedulable(void **state) {
  struct harness *h = *state;
  h_reply(h, 422, "{\"error\":{\"code\":\"unschedulable\",\"message\":\"no node fits vm "
                  "\\\"web-1\\\": n1: memory (needs 4G, 1G free); n2: cordoned\"}}");
  h_run(h, "vm", "create", "web-1", "--image", "i", "--memory", "4G", NULL);
  check_rc(h, 1);
  assert_int_equal(h->nreqs, 1);
  assert_string_equal(h->err, "novacron: no node fits vm \"web-1\": n1: memory (needs 4G, 1G "
                              "free); n2: cordoned\n");
}

/* A single node's create refuses the cluster fields as unknown. */
static void test_create_cluster_flags_single_node(void **state) {
  struct harness *h = *state;
  h_reply(h, 400, "{\"error\":{\"code\":\"unknown_field\",\"message\":\"create vm: unknown "
                  "field \\\"node\\\" (remove it; see docs/api.md)\",\"field\":\"node\"}}");
  h_run(h, "vm", "create", "web-1", "--image", "i", "--node", "n2", NULL);
  check_rc(h, 1);
  assert_string_equal(h->err, "novacron: this node is not in a cluster: --node, --ha, "
                              "--ha-priority and the placement flags need one\n");
  /* Any other unknown field is reported as the server said it. */
  h_free(h);
  h_init(h);
  h_reply(h, 400, "{\"error\":{\"code\":\"unknown_field\",\"message\":\"create vm: unknown "
                  "field \\\"nic\\\"\",\"field\":\"nic\"}}");
  h_run(h, "vm", "create", "web-1", "--image", "i", "--nic", "none", NULL);
  check_rc(h, 1);
  assert_string_equal(h->err, "novacron: create vm: unknown field \"nic\"\n");
}

/* The single-node answer still follows its operation. */
static void test_create_single_node_unchanged(void **state) {
  struct harness *h = *state;
  h_reply(h, 201, "{\"vm\":{\"name\":\"web-1\"},\"operation\":{\"id\":\"op-1\",\"status\":"
                  "\"pending\"}}");
  h_reply(h, 200, "{\"id\":\"op-1\",\"status\":\"succeeded\"}");
  h_run(h, "vm", "create", "web-1", "--image", "i", "--start", NULL);
  check_rc(h, 0);
  assert_string_equal(h->reqs[1].path, "/v1/operations/op-1?wait_s=30");
  assert_string_equal(h->out, "vm \"web-1\" created and started\n");
}

/* ---- vm create --explain ---- */

static const char k_explain[] =
    "{\"vm\":\"web-1\",\"mode\":\"balanced\",\"placed\":true,\"host\":\"n2\",\"hosts_fit\":2,"
    "\"rejected\":{\"memory\":1},\"hosts\":["
    "{\"host\":\"n2\",\"fit\":true,\"rank\":1,\"score\":0.8234,"
    "\"weights\":{\"cpu\":0.4,\"memory\":0.31}},"
    "{\"host\":\"n1\",\"fit\":true,\"rank\":2,\"score\":0.5,\"weights\":{}},"
    "{\"host\":\"n3\",\"fit\":false,\"filter\":\"memory\","
    "\"reason\":\"needs 4G, 1G free\"}]}";

static void test_explain_table(void **state) {
  struct harness *h = *state;
  h_reply(h, 200, k_explain);
  h_run(h, "vm", "create", "web-1", "--image", "i", "--memory", "4G", "--anti-affinity", "web",
        "--explain", NULL);
  check_rc(h, 0);
  assert_int_equal(h->nreqs, 1);
  assert_string_equal(h->reqs[0].method, "POST");
  assert_string_equal(h->reqs[0].path, "/v1/placement/explain");
  check_body(&h->reqs[0], "{" BASE ",\"memory\":\"4G\",\"placement\":{\"groups\":["
                          "{\"name\":\"web\",\"policy\":\"anti-affinity\",\"scope\":\"host\","
                          "\"hard\":true}]}}");
  assert_string_equal(h->out,
                      "vm \"web-1\" would be placed on n2: 2 of 3 nodes fit (mode balanced)\n"
                      "\n"
                      "HOST  FIT  SCORE/FILTER  REASON\n"
                      "n2    yes  0.82          rank 1 (chosen): cpu 0.40, memory 0.31\n"
                      "n1    yes  0.50          rank 2\n"
                      "n3    no   memory        needs 4G, 1G free\n");
  assert_string_equal(h->err, "");
}

static void test_explain_nothing_fits(void **state) {
  struct harness *h = *state;
  h_reply(h, 200, "{\"vm\":\"web-1\",\"mode\":\"balanced\",\"placed\":false,\"host\":null,"
                  "\"hosts_fit\":0,\"rejected\":{\"labels\":1},\"hosts\":["
                  "{\"host\":\"n1\",\"fit\":false,\"filter\":\"labels\","
                  "\"reason\":\"lacks label ssd=yes\"}],"
                  "\"error\":\"no node fits vm \\\"web-1\\\"\"}");
  h_run(h, "vm", "create", "web-1", "--image", "i", "--require-label", "ssd=yes", "--explain",
        NULL);
  check_rc(h, 1);
  assert_string_equal(h->out, "vm \"web-1\" fits none of the 1 nodes (mode balanced)\n"
                              "\n"
                              "HOST  FIT  SCORE/FILTER  REASON\n"
                              "n1    no   labels        lacks label ssd=yes\n");
  assert_string_equal(h->err, "novacron: no node fits vm \"web-1\"\n");
}

static void test_explain_json(void **state) {
  struct harness *h = *state;
  h_reply(h, 200, k_explain);
  h_run(h, "vm", "create", "web-1", "--image", "i", "--explain", "-o", "json", NULL);
  check_rc(h, 0);
  json_t *got = json_loads(h->out, 0, NULL), *want = json_loads(k_explain, 0, NULL);
  if (got == NULL || !json_equal(got, want))
    fail_msg("stdout is not the server's answer:\n%s", h->out);
  json_decref(got);
  json_decref(want);
}

static void test_explain_not_clustered(void **state) {
  struct harness *h = *state;
  h_reply(h, 404, k_not_clustered);
  h_run(h, "vm", "create", "web-1", "--image", "i", "--explain", NULL);
  check_rc(h, 1);
  check_contains(h->err, "novacron: this node is not in a cluster\n");
}

/* ---- help ---- */

static void test_help_lists_cluster_commands(void **state) {
  struct harness *h = *state;
  h_run(h, "node", "--help", NULL);
  check_rc(h, 0);
  check_contains(h->out, "  list ");
  check_contains(h->out, "  cordon ");
  check_contains(h->out, "  uncordon ");
  check_contains(h->out, "  drain ");
  check_contains(h->out, "  show ");
  h_run(h, "cluster", "--help", NULL);
  check_rc(h, 0);
  check_contains(h->out, "  status ");
  h_run(h, "vm", "create", "--help", NULL);
  check_rc(h, 0);
  check_contains(h->out, "--spread-zones G");
  check_contains(h->out, "--explain");
  h_run(h, "node", "drain", NULL);
  check_rc(h, 2);
  check_contains(h->err, "missing NODE");
  h_run(h, "cluster", "status", "x", NULL);
  check_rc(h, 2);
  check_contains(h->err, "unexpected argument \"x\"");
  assert_int_equal(h->nreqs, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_node_list, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_node_list_json_is_raw, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_cluster_status, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_cluster_status_no_controller, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_cluster_status_json, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_not_clustered, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_cordon_uncordon, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_drain_to_complete, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_drain_tty_progress, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_drain_stuck, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_drain_tty_stuck, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_drain_timeout, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_drain_no_wait, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_drain_called_off, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_drain_unknown_node, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_create_bodies, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_create_usage_errors, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_too_many_required_labels, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_create_cluster_waits, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_create_cluster_without_start, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_create_cluster_json, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_create_cluster_timeout, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_create_cluster_timeout_flag, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_create_cluster_vm_failed, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_create_cluster_other_error, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_create_cluster_no_wait, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_create_unschedulable, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_create_cluster_flags_single_node, h_setup,
                                      h_teardown),
      cmocka_unit_test_setup_teardown(test_create_single_node_unchanged, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_explain_table, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_explain_nothing_fits, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_explain_json, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_explain_not_clustered, h_setup, h_teardown),
      cmocka_unit_test_setup_teardown(test_help_lists_cluster_commands, h_setup, h_teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
