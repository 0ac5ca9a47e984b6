/* novacron vm create NAME --image IMG [...]: POST /v1/vms.
 *
 * Flags are checked here as well as by the server so a typo is a usage
 * error naming the flag, before anything is sent. Memory goes out in the
 * canonical form the API documents ("256M").
 *
 * In a cluster the body may also carry "node", "ha", "ha_priority" and
 * "placement" (docs/api.md, "Cluster"), and the answer is different: the
 * controller records and places the VM and that node's agent creates it a
 * moment later, so there is no operation to follow. The command then says
 * where the VM went and polls GET /v1/vms/{name} until the VM shows up
 * there. --explain asks POST /v1/placement/explain instead, which creates
 * nothing. */
#include "cli/action.h"
#include "cli/args.h"
#include "cli/call.h"
#include "cli/fmt.h"
#include "cli/op.h"
#include "cli/table.h"

#include <inttypes.h>
#include <string.h>

#define NC_CLI_VCPUS_MAX 1024
#define NC_CLI_HA_PRIORITY_MAX 1000
/* The scheduler's limits (src/sched/sched.h): names, groups per VM and
 * required labels per VM. Checked here so a long name is a usage error. */
#define NC_CLI_PLACEMENT_NAME_MAX 63
#define NC_CLI_PLACEMENT_GROUPS_MAX 8
#define NC_CLI_PLACEMENT_LABELS_MAX 7
/* How long a cluster create waits for the VM to appear on its node when
 * --timeout does not say. */
#define NC_CLI_CLUSTER_CREATE_WAIT_MS 60000
#define NC_CLI_CLUSTER_POLL_MS 1000

/* The group flags: each names a placement group and fixes its policy,
 * scope and hardness (docs/scheduling.md). */
static const struct {
  const char *flag, *policy, *scope;
  bool hard;
} k_group_flags[] = {
    {"anti-affinity", "anti-affinity", "host", true},
    {"affinity", "affinity", "host", true},
    {"soft-anti-affinity", "anti-affinity", "host", false},
    {"soft-affinity", "affinity", "host", false},
    {"spread-zones", "anti-affinity", "zone", true},
};
#define NGROUP_FLAGS (sizeof k_group_flags / sizeof *k_group_flags)

struct create_flags {
  const char *image, *vcpus, *memory, *nic, *cmdline, *machine;
  const char *node, *ha_priority, *zone;
  bool start, no_wait, ha, explain;
  struct nc_cli_strlist labels, require_labels;
  struct nc_cli_strlist groups[NGROUP_FLAGS];
};

/* Adds "--flag K=V"s to obj as key: value strings. max_len bounds keys and
 * values (0: no bound); empty values are refused when max_len is set. */
static int add_kvs(struct nc_cli *cli, const char *flag, const struct nc_cli_strlist *l,
                   size_t max_len, json_t *obj) {
  for (int i = 0; i < l->n; i++) {
    const char *kv = l->v[i], *eq = strchr(kv, '=');
    char key[256];
    if (eq == NULL || eq == kv)
      return nc_cli_usage_error(cli, "--%s \"%s\" is not KEY=VALUE", flag, kv);
    if ((size_t)(eq - kv) >= sizeof key ||
        (max_len > 0 && ((size_t)(eq - kv) > max_len || strlen(eq + 1) > max_len)))
      return nc_cli_usage_error(cli, "--%s \"%s\": the key or value is too long (at most %zu)",
                                flag, kv, max_len > 0 ? max_len : sizeof key - 1);
    if (max_len > 0 && eq[1] == '\0')
      return nc_cli_usage_error(cli, "--%s \"%s\" has an empty value", flag, kv);
    memcpy(key, kv, (size_t)(eq - kv));
    key[eq - kv] = '\0';
    if (json_object_get(obj, key) != NULL)
      return nc_cli_usage_error(cli, "--%s \"%s\" given twice", flag, key);
    json_object_set_new(obj, key, json_string(eq + 1));
  }
  return 0;
}

/* Fills placement from the group, label and zone flags. A group named
 * twice (by any of the group flags) is a usage error: one VM cannot both
 * seek and avoid the same group. */
static int add_placement(struct nc_cli *cli, const struct create_flags *f, json_t *placement) {
  json_t *groups = json_array();
  int ngroups = 0, rc;
  json_object_set_new(placement, "groups", groups);
  for (size_t k = 0; k < NGROUP_FLAGS; k++) {
    for (int i = 0; i < f->groups[k].n; i++) {
      const char *name = f->groups[k].v[i];
      size_t j;
      const json_t *g;
      if (strlen(name) > NC_CLI_PLACEMENT_NAME_MAX)
        return nc_cli_usage_error(cli, "--%s \"%s\": a group name is at most %d bytes",
                                  k_group_flags[k].flag, name, NC_CLI_PLACEMENT_NAME_MAX);
      json_array_foreach(groups, j, g) {
        if (strcmp(nc_cli_jstr_or(g, "name", ""), name) == 0)
          return nc_cli_usage_error(cli, "--%s \"%s\": group \"%s\" is already named by "
                                         "another group flag (one flag per group)",
                                    k_group_flags[k].flag, name, name);
      }
      if (++ngroups > NC_CLI_PLACEMENT_GROUPS_MAX)
        return nc_cli_usage_error(cli, "at most %d placement groups (--%s \"%s\" is one more)",
                                  NC_CLI_PLACEMENT_GROUPS_MAX, k_group_flags[k].flag, name);
      json_array_append_new(groups, json_pack("{s:s, s:s, s:s, s:b}", "name", name, "policy",
                                              k_group_flags[k].policy, "scope",
                                              k_group_flags[k].scope, "hard",
                                              k_group_flags[k].hard));
    }
  }
  if (ngroups == 0)
    json_object_del(placement, "groups");
  if (f->require_labels.n > NC_CLI_PLACEMENT_LABELS_MAX)
    return nc_cli_usage_error(cli, "--require-label given %d times (at most %d)",
                              f->require_labels.n, NC_CLI_PLACEMENT_LABELS_MAX);
  if (f->require_labels.n > 0) {
    json_t *labels = json_object();
    json_object_set_new(placement, "labels", labels);
    rc = add_kvs(cli, "require-label", &f->require_labels, NC_CLI_PLACEMENT_NAME_MAX, labels);
    if (rc != 0)
      return rc;
  }
  if (f->zone != NULL) {
    if (strlen(f->zone) > NC_CLI_PLACEMENT_NAME_MAX)
      return nc_cli_usage_error(cli, "--zone \"%s\" is longer than %d bytes", f->zone,
                                NC_CLI_PLACEMENT_NAME_MAX);
    json_object_set_new(placement, "zone", json_string(f->zone));
  }
  return 0;
}

/* Builds the request body from the flags. Returns 0 with *out a new
 * reference, or the usage exit status after printing why. */
static int build_body(struct nc_cli *cli, const char *name, const struct create_flags *f,
                      json_t **out) {
  json_t *body = json_object();
  int rc = 0;

  json_object_set_new(body, "name", json_string(name));
  json_object_set_new(body, "image", json_string(f->image));
  if (f->vcpus != NULL) {
    uint64_t n;
    if (nc_cli_parse_uint(f->vcpus, NC_CLI_VCPUS_MAX, &n) != 0 || n == 0) {
      rc = nc_cli_usage_error(cli, "--vcpus \"%s\" is not a whole number from 1 to %d", f->vcpus,
                              NC_CLI_VCPUS_MAX);
      goto out;
    }
    json_object_set_new(body, "vcpus", json_integer((json_int_t)n));
  }
  if (f->memory != NULL) {
    uint64_t bytes;
    char canon[32];
    if (nc_cli_parse_size(f->memory, &bytes) != 0 || bytes == 0) {
      rc = nc_cli_usage_error(cli, "--memory \"%s\" is not a size (try 512M or 2G)", f->memory);
      goto out;
    }
    nc_cli_size_canonical(bytes, canon, sizeof canon);
    json_object_set_new(body, "memory", json_string(canon));
  }
  if (f->labels.n > 0) {
    json_t *labels = json_object();
    json_object_set_new(body, "labels", labels);
    rc = add_kvs(cli, "label", &f->labels, 0, labels);
    if (rc != 0)
      goto out;
  }
  if (f->nic != NULL) {
    if (strcmp(f->nic, "user") != 0 && strcmp(f->nic, "none") != 0) {
      rc = nc_cli_usage_error(cli, "--nic \"%s\" is not user or none", f->nic);
      goto out;
    }
    json_object_set_new(body, "nic", json_string(f->nic));
  }
  if (f->cmdline != NULL)
    json_object_set_new(body, "cmdline_append", json_string(f->cmdline));
  /* Checked by the node, which knows what its QEMU runs. */
  if (f->machine != NULL)
    json_object_set_new(body, "machine", json_string(f->machine));
  json_object_set_new(body, "start", json_boolean(f->start));

  /* Cluster fields: only what was asked for, so a create without them
   * still works on a single node. */
  if (f->node != NULL) {
    if (strlen(f->node) > NC_CLI_PLACEMENT_NAME_MAX) {
      rc = nc_cli_usage_error(cli, "--node \"%s\" is longer than %d bytes", f->node,
                              NC_CLI_PLACEMENT_NAME_MAX);
      goto out;
    }
    json_object_set_new(body, "node", json_string(f->node));
  }
  if (f->ha_priority != NULL && !f->ha) {
    rc = nc_cli_usage_error(cli, "--ha-priority goes with --ha (it orders HA restarts)");
    goto out;
  }
  if (f->ha)
    json_object_set_new(body, "ha", json_true());
  if (f->ha_priority != NULL) {
    uint64_t prio;
    if (nc_cli_parse_uint(f->ha_priority, NC_CLI_HA_PRIORITY_MAX, &prio) != 0) {
      rc = nc_cli_usage_error(cli, "--ha-priority \"%s\" is not a whole number from 0 to %d "
                                   "(higher restarts first)",
                              f->ha_priority, NC_CLI_HA_PRIORITY_MAX);
      goto out;
    }
    json_object_set_new(body, "ha_priority", json_integer((json_int_t)prio));
  }
  json_t *placement = json_object();
  json_object_set_new(body, "placement", placement);
  rc = add_placement(cli, f, placement);
  if (rc != 0)
    goto out;
  if (json_object_size(placement) == 0)
    json_object_del(body, "placement");
out:
  if (rc != 0)
    json_decref(body);
  else
    *out = body;
  return rc;
}

/* "cpu 0.40, memory 0.31": a fitting host's weights, in the answer's
 * order. */
static void weights_text(const json_t *w, char *buf, size_t n) {
  const char *key;
  const json_t *v;
  size_t o = 0;
  buf[0] = '\0';
  json_object_foreach((json_t *)w, key, v) {
    int k = snprintf(buf + o, n - o, "%s%s %.2f", o ? ", " : "", key,
                     json_is_number(v) ? json_number_value(v) : 0.0);
    if (k < 0 || (size_t)k >= n - o)
      break;
    o += (size_t)k;
  }
}

/* Prints an explain answer: a summary line, then HOST FIT SCORE/FILTER
 * REASON with one row per node in the scheduler's order. Exit 1 when
 * nothing fits, so scripts can ask "would it fit?". */
static int print_explain(struct nc_cli *cli, const char *name, const json_t *ex) {
  static const char *const headers[] = {"HOST", "FIT", "SCORE/FILTER", "REASON"};
  const bool placed = json_is_true(json_object_get(ex, "placed"));
  const char *host = nc_cli_jstr(ex, "host");
  struct nc_cli_table *t = NULL;
  const json_t *hosts = json_object_get(ex, "hosts"), *e;
  char line[1024], clean[1024];
  size_t i;
  int rc = NC_CLI_EXIT_OK;

  if (cli->output == NC_CLI_OUTPUT_JSON) {
    nc_cli_print_json(cli, ex);
  } else {
    if (placed)
      snprintf(line, sizeof line, "vm \"%s\" would be placed on %s: %" PRId64 " of %zu nodes fit "
                                  "(mode %s)",
               name, host ? host : "?", nc_cli_jint(ex, "hosts_fit", 0), json_array_size(hosts),
               nc_cli_jstr_or(ex, "mode", "?"));
    else
      snprintf(line, sizeof line, "vm \"%s\" fits none of the %zu nodes (mode %s)", name,
               json_array_size(hosts), nc_cli_jstr_or(ex, "mode", "?"));
    nc_cli_sanitize(line, clean, sizeof clean);
    fprintf(cli->out, "%s\n\n", clean);
    if (nc_cli_table_new(4, headers, &t) != 0)
      return nc_cli_fail(cli, "out of memory");
    json_array_foreach(hosts, i, e) {
      const char *cells[4] = {nc_cli_jstr(e, "host"), NULL, NULL, NULL};
      char score[32], reason[512], w[400];
      if (json_is_true(json_object_get(e, "fit"))) {
        const json_t *s = json_object_get(e, "score");
        const char *h = nc_cli_jstr(e, "host");
        cells[1] = "yes";
        snprintf(score, sizeof score, "%.2f", json_is_number(s) ? json_number_value(s) : 0.0);
        cells[2] = score;
        weights_text(json_object_get(e, "weights"), w, sizeof w);
        snprintf(reason, sizeof reason, "rank %" PRId64 "%s%s%s", nc_cli_jint(e, "rank", 0),
                 placed && h != NULL && host != NULL && strcmp(h, host) == 0 ? " (chosen)" : "",
                 w[0] ? ": " : "", w);
        cells[3] = reason;
      } else {
        cells[1] = "no";
        cells[2] = nc_cli_jstr(e, "filter");
        cells[3] = nc_cli_jstr(e, "reason");
      }
      if (nc_cli_table_add(t, cells) != 0) {
        nc_cli_table_destroy(t);
        return nc_cli_fail(cli, "out of memory");
      }
    }
    nc_cli_table_print(t, cli->out);
    nc_cli_table_destroy(t);
  }
  if (!placed) {
    const char *err = nc_cli_jstr(ex, "error");
    rc = err != NULL ? nc_cli_fail(cli, "%s", err)
                     : nc_cli_fail(cli, "no node can take vm \"%s\"", name);
  }
  return rc;
}

/* Sends the create; a refusal because a single node does not know the
 * cluster fields is said plainly. Returns the exit status; *out as
 * nc_cli_call's. */
static int send_create(struct nc_cli *cli, const json_t *body, json_t **out) {
  static const char *const cluster_fields[] = {"node", "ha", "ha_priority", "placement"};
  struct nc_cli_http_resp failed;
  int rc = nc__cli_call_ex(cli, "POST", "/v1/vms", body, nc_cli_request_timeout_ms(cli), &failed,
                           out);
  if (rc == NC_CLI_EXIT_OK || failed.status == 0)
    return rc;
  char code[64];
  nc__cli_error_code(&failed, code, sizeof code);
  if (strcmp(code, "unknown_field") == 0) {
    json_t *root = json_loadb(failed.body, failed.len, 0, NULL);
    const char *field = nc_cli_jstr(json_object_get(root, "error"), "field");
    bool cluster_field = false;
    for (size_t i = 0; field != NULL && i < sizeof cluster_fields / sizeof *cluster_fields; i++)
      cluster_field = cluster_field || strcmp(field, cluster_fields[i]) == 0;
    json_decref(root);
    if (cluster_field) {
      nc_cli_http_resp_reset(&failed);
      fprintf(cli->err, "novacron: this node is not in a cluster: --node, --ha, --ha-priority "
                        "and the placement flags need one\n");
      return NC_CLI_EXIT_FAIL;
    }
  }
  rc = nc_cli_report_http_error(cli, &failed);
  nc_cli_http_resp_reset(&failed);
  return rc;
}

/* After a cluster create: waits until GET /v1/vms/{name} finds the VM
 * (with --start, running). 404 and 503 node_down are expected while the
 * node's agent creates it. Returns the exit status. */
static int wait_cluster(struct nc_cli *cli, const char *name, const char *node, bool start) {
  const int64_t t0 = nc_mono_ms(cli->clock);
  const int64_t limit = cli->timeout_ms > 0 ? cli->timeout_ms : NC_CLI_CLUSTER_CREATE_WAIT_MS;
  char path[512], last[128] = "not created yet", took[32];
  json_t *vm = NULL;
  int rc = nc__cli_path(cli, path, sizeof path, "/v1/vms/%s", name);
  if (rc != 0)
    return rc;

  for (;;) {
    const int64_t now = nc_mono_ms(cli->clock);
    struct nc_cli_http_resp failed;
    json_decref(vm);
    vm = NULL;
    rc = nc__cli_call_ex(cli, "GET", path, NULL, nc_cli_request_timeout_ms(cli), &failed, &vm);
    if (rc != NC_CLI_EXIT_OK) {
      char code[64];
      if (failed.status == 0)
        goto out;
      nc__cli_error_code(&failed, code, sizeof code);
      if (failed.status != 404 && !(failed.status == 503 && strcmp(code, "node_down") == 0)) {
        rc = nc_cli_report_http_error(cli, &failed);
        nc_cli_http_resp_reset(&failed);
        goto out;
      }
      nc_cli_http_resp_reset(&failed);
    } else {
      const char *state = nc_cli_jstr(vm, "state");
      snprintf(last, sizeof last, "%s", state ? state : "no state");
      if (state != NULL && strcmp(state, "failed") == 0) {
        rc = nc_cli_fail(cli, "vm \"%s\" failed on %s: %s", name,
                         nc_cli_jstr_or(vm, "node", node ? node : "its node"),
                         nc_cli_jstr_or(vm, "state_reason", "no reason given"));
        goto out;
      }
      if (state != NULL && strcmp(state, "pending") != 0 &&
          (!start || strcmp(state, "running") == 0))
        break;
    }
    const int64_t after = nc_mono_ms(cli->clock);
    if (now + NC_CLI_CLUSTER_POLL_MS > t0 + limit) {
      nc_cli_format_duration(after - t0, took, sizeof took);
      rc = nc_cli_fail(cli, "vm \"%s\" is not %s on %s after %s (%s); see 'novacron vm show %s' "
                            "and that node's log",
                       name, start ? "running" : "there", node ? node : "its node", took, last,
                       name);
      goto out;
    }
    if (after - now < NC_CLI_CLUSTER_POLL_MS)
      nc__cli_sleep_ms(cli, NC_CLI_CLUSTER_POLL_MS - (after - now));
  }
  nc_cli_format_duration(nc_mono_ms(cli->clock) - t0, took, sizeof took);
  if (cli->output == NC_CLI_OUTPUT_JSON) {
    nc_cli_print_json(cli, vm);
  } else {
    char line[512], clean[512];
    snprintf(line, sizeof line, "vm \"%s\" created%s on %s (%s)", name,
             start ? " and started" : "", nc_cli_jstr_or(vm, "node", node ? node : "?"), took);
    nc_cli_sanitize(line, clean, sizeof clean);
    fprintf(cli->out, "%s\n", clean);
  }
  rc = NC_CLI_EXIT_OK;
out:
  json_decref(vm);
  return rc;
}

/* The cluster answer {"vm": NAME, "node": N | null, "status"}: says where
 * the VM went, then (unless --no-wait) waits for it there. */
static int follow_cluster(struct nc_cli *cli, const char *name, const json_t *resp,
                          const struct create_flags *f) {
  const char *node = nc_cli_jstr(resp, "node");
  const char *status = nc_cli_jstr_or(resp, "status", "");
  char line[512], clean[512];

  if (strcmp(status, "gone") == 0)
    return nc_cli_fail(cli, "vm \"%s\" was deleted before its node created it", name);
  if (cli->output == NC_CLI_OUTPUT_TABLE || f->no_wait) {
    if (cli->output == NC_CLI_OUTPUT_JSON) {
      nc_cli_print_json(cli, resp);
    } else {
      if (node != NULL)
        snprintf(line, sizeof line, "vm \"%s\" placed on %s", name, node);
      else
        snprintf(line, sizeof line, "vm \"%s\" accepted; the controller has not placed it yet",
                 name);
      nc_cli_sanitize(line, clean, sizeof clean);
      fprintf(cli->out, "%s\n", clean);
      fflush(cli->out);
    }
  }
  if (f->no_wait)
    return NC_CLI_EXIT_OK;
  return wait_cluster(cli, name, node, f->start);
}

int nc_cli_cmd_vm_create(struct nc_cli *cli, int argc, char **argv) {
  struct create_flags f = {0};
  const struct nc_cli_opt opts[] = {
      {"image", NC_CLI_OPT_STR, &f.image},
      {"vcpus", NC_CLI_OPT_STR, &f.vcpus},
      {"memory", NC_CLI_OPT_STR, &f.memory},
      {"label", NC_CLI_OPT_LIST, &f.labels},
      {"nic", NC_CLI_OPT_STR, &f.nic},
      {"cmdline-append", NC_CLI_OPT_STR, &f.cmdline},
      {"machine", NC_CLI_OPT_STR, &f.machine},
      {"start", NC_CLI_OPT_BOOL, &f.start},
      {"no-wait", NC_CLI_OPT_BOOL, &f.no_wait},
      {"node", NC_CLI_OPT_STR, &f.node},
      {"ha", NC_CLI_OPT_BOOL, &f.ha},
      {"ha-priority", NC_CLI_OPT_STR, &f.ha_priority},
      {"anti-affinity", NC_CLI_OPT_LIST, &f.groups[0]},
      {"affinity", NC_CLI_OPT_LIST, &f.groups[1]},
      {"soft-anti-affinity", NC_CLI_OPT_LIST, &f.groups[2]},
      {"soft-affinity", NC_CLI_OPT_LIST, &f.groups[3]},
      {"spread-zones", NC_CLI_OPT_LIST, &f.groups[4]},
      {"require-label", NC_CLI_OPT_LIST, &f.require_labels},
      {"zone", NC_CLI_OPT_STR, &f.zone},
      {"explain", NC_CLI_OPT_BOOL, &f.explain},
      {NULL, 0, NULL},
  };
  static const char *const names[] = {"NAME"};
  const struct nc_cli_argspec spec = {opts, names, 1, 1};
  const char *pos[1];
  char done[512];
  json_t *body = NULL, *resp = NULL;
  int rc;

  rc = nc_cli_args_parse(cli, &spec, argc, argv, pos);
  if (rc != 0)
    return nc_cli_args_status(rc);
  if (f.image == NULL)
    return nc_cli_usage_error(cli, "--image is required (see 'novacron image list')");
  rc = build_body(cli, pos[0], &f, &body);
  if (rc != 0)
    return rc;

  if (f.explain) {
    rc = nc_cli_call(cli, "POST", "/v1/placement/explain", body, &resp);
    if (rc == NC_CLI_EXIT_OK)
      rc = print_explain(cli, pos[0], resp);
    goto out;
  }
  rc = send_create(cli, body, &resp);
  if (rc != NC_CLI_EXIT_OK)
    goto out;
  if (json_object_get(resp, "operation") == NULL && json_is_string(json_object_get(resp, "vm"))) {
    rc = follow_cluster(cli, pos[0], resp, &f);
    goto out;
  }
  snprintf(done, sizeof done, "vm \"%s\" created%s", pos[0], f.start ? " and started" : "");
  rc = nc__cli_follow_answer(cli, resp, f.no_wait, done);
out:
  json_decref(body);
  json_decref(resp);
  return rc;
}
