/* What the REST API asks of the cluster. See cluster.h. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cluster/cluster_int.h"
#include "migrate/peer.h"
#include "sched/sched.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/log.h"
#include "vm/spec.h"

#define COMPONENT "cluster"
#define CREATE_WAIT_MS 15000

static const char *jstr(json_t *o, const char *k) {
  const char *s = json_string_value(json_object_get(o, k));
  return s ? s : "";
}

/* A new reference to v, or to a new empty value when v is NULL. */
static json_t *or_empty(json_t *v, json_t *(*make)(void)) {
  return v ? json_incref(v) : make();
}

static const char *node_state(json_t *n, json_t *alive) {
  if (!alive)
    return "dead";
  if (json_is_false(json_object_get(json_object_get(alive, "v"), "ready")))
    return "not-ready";
  const char *admin = jstr(n, "admin");
  if (strcmp(admin, "cordoned") == 0 || strcmp(admin, "draining") == 0)
    return admin;
  return "ready";
}

/* A node that has not renewed its lease cannot reach a majority of etcd:
 * it says so at once instead of blocking on the store and answering with
 * an empty (false) cluster. */
static int cut_off(struct nc_cluster *c, struct nc_errinfo *err) {
  if (nc__cl_lease_valid(c))
    return 0;
  pthread_mutex_lock(&c->mu);
  int64_t ago = c->lease_ok_ms ? (nc__cl_now_ms() - c->lease_ok_ms) / 1000 : -1;
  pthread_mutex_unlock(&c->mu);
  char when[64] = "";
  if (ago >= 0)
    snprintf(when, sizeof when, " for %lld s", (long long)ago);
  return nc_errinfo_set(err, 503, "cut_off", NULL,
                        "this node has not renewed its cluster lease%s: it cannot reach a "
                        "majority of the etcd members (network partition?), so it does not "
                        "know the cluster's state, and its HA vms are fenced; ask another "
                        "node, or see this node alone with `novacron node show`",
                        when);
}

static int unreachable(struct nc_errinfo *err) {
  return nc_errinfo_set(err, 503, "store_unreachable", NULL,
                        "the cluster store (etcd) did not answer; retry, or ask another node");
}

int nc_cluster_nodes(struct nc_cluster *c, json_t **out_nodes, struct nc_errinfo *err) {
  int rc = cut_off(c, err);
  if (rc)
    return rc;
  json_t *nodes = nc__cl_range_json(c->cfg.store, NC_CL_NODES);
  json_t *alive = nodes ? nc__cl_range_json(c->cfg.store, NC_CL_ALIVE) : NULL;
  json_t *vms = alive ? nc__cl_range_json(c->cfg.store, NC_CL_VMS) : NULL;
  if (!vms) {
    json_decref(nodes);
    json_decref(alive);
    return unreachable(err);
  }
  json_t *ctl = nc__cl_get_json(c->cfg.store, NC_CL_CONTROLLER, NULL);
  json_t *out = json_array();
  const char *name;
  json_t *e;
  json_object_foreach(nodes, name, e) {
    json_t *n = json_object_get(e, "v");
    int64_t vcpus = 0, mem = 0, count = 0;
    const char *vn;
    json_t *ve;
    json_object_foreach(vms, vn, ve) {
      json_t *r = json_object_get(ve, "v");
      if (strcmp(jstr(r, "node"), name) != 0)
        continue;
      json_t *spec = json_object_get(r, "spec");
      count++;
      vcpus += json_integer_value(json_object_get(spec, "vcpus"));
      json_t *m = json_object_get(spec, "memory");
      mem += json_is_integer(m) ? json_integer_value(m) : 0;
    }
    json_t *row = json_pack(
        "{s:s, s:s, s:s, s:s, s:s, s:o, s:b, s:b, s:{s:I, s:I}, s:{s:I, s:I}, s:I, s:o}",
        "name", name, "state", node_state(n, json_object_get(alive, name)), "api",
        jstr(n, "api"), "zone", jstr(n, "zone"), "rack", jstr(n, "rack"), "labels",
        or_empty(json_object_get(n, "labels"), json_object),
        "control_plane", json_is_true(json_object_get(n, "control_plane")), "controller",
        ctl && strcmp(jstr(ctl, "node"), name) == 0, "capacity", "vcpus",
        json_integer_value(json_object_get(n, "cpus")), "memory_bytes",
        json_integer_value(json_object_get(n, "memory_bytes")),
        "allocated", "vcpus", (json_int_t)vcpus, "memory_bytes", (json_int_t)mem, "vms",
        (json_int_t)count, "images",
        or_empty(json_object_get(n, "images"), json_array));
    if (json_object_get(n, "drain"))
      json_object_set(row, "drain", json_object_get(n, "drain"));
    json_array_append_new(out, row);
  }
  json_decref(nodes);
  json_decref(alive);
  json_decref(vms);
  json_decref(ctl);
  *out_nodes = out;
  return 0;
}

int nc_cluster_status(struct nc_cluster *c, json_t **status, struct nc_errinfo *err) {
  json_t *nodes = NULL;
  int rc = nc_cluster_nodes(c, &nodes, err);
  if (rc)
    return rc;
  json_t *ctl = nc__cl_get_json(c->cfg.store, NC_CL_CONTROLLER, NULL);
  size_t i, ready = 0;
  json_t *n;
  json_array_foreach(nodes, i, n) ready += strcmp(jstr(n, "state"), "dead") != 0;
  json_t *out = json_pack("{s:s, s:s?, s:b, s:I, s:I, s:o}", "node", c->node, "controller",
                          ctl ? json_string_value(json_object_get(ctl, "node")) : NULL,
                          "lease_valid", nc__cl_lease_valid(c), "nodes_total",
                          (json_int_t)json_array_size(nodes), "nodes_alive", (json_int_t)ready,
                          "nodes", nodes);
  json_decref(ctl);
  *status = out;
  return 0;
}

static size_t vms_on(struct nc_cluster *c, const char *node) {
  json_t *vms = nc__cl_range_json(c->cfg.store, NC_CL_VMS);
  size_t n = 0;
  const char *name;
  json_t *e;
  json_object_foreach(vms, name, e) n += strcmp(jstr(json_object_get(e, "v"), "node"), node) == 0;
  json_decref(vms);
  return n;
}

int nc_cluster_node_admin(struct nc_cluster *c, const char *node, const char *action,
                          json_t **out, struct nc_errinfo *err) {
  const char *to = strcmp(action, "cordon") == 0     ? "cordoned"
                   : strcmp(action, "uncordon") == 0 ? "active"
                   : strcmp(action, "drain") == 0    ? "draining"
                                                     : NULL;
  if (!to)
    return nc_errinfo_set(err, 404, "not_found", NULL,
                          "unknown node action \"%s\" (cordon, uncordon or drain)", action);
  char key[128];
  if (strlen(node) >= NC_CL_NODE_MAX)
    return nc_errinfo_set(err, 404, "not_found", "node", "no node \"%.64s...\"", node);
  snprintf(key, sizeof key, NC_CL_NODES "%s", node);
  for (int attempt = 0; attempt < 5; attempt++) {
    int64_t rev = 0;
    json_t *n = nc__cl_get_json(c->cfg.store, key, &rev);
    if (!n)
      return nc_errinfo_set(err, 404, "not_found", "node",
                            "no node \"%s\" in the cluster (see `novacron node list`)", node);
    json_object_set_new(n, "admin", json_string(to));
    if (strcmp(to, "draining") == 0)
      json_object_set_new(n, "drain", json_pack("{s:s, s:i, s:i, s:I, s:[], s:[]}", "state",
                                                "draining", "moved", 0, "failed", 0,
                                                "remaining", (json_int_t)vms_on(c, node),
                                                "errors", "skip"));
    else
      json_object_del(n, "drain");
    int rc = nc__cl_cas_json(c->cfg.store, key, rev, n, 0);
    json_decref(n);
    if (rc == 0) {
      nc_info(COMPONENT, "node \"%s\": %s", node, to);
      *out = json_pack("{s:s, s:s}", "node", node, "admin", to);
      return 0;
    }
    if (rc != NC_E_TXNFAIL)
      return nc_errinfo_set(err, 503, "unavailable", NULL, "cannot update node \"%s\": %s",
                            node, nc_strerror(rc));
  }
  return nc_errinfo_set(err, 409, "conflict", NULL, "node \"%s\" keeps changing; retry", node);
}

/* ---- create ------------------------------------------------------------- */

static int check_str(json_t *v, const char *field, size_t max, struct nc_errinfo *err) {
  if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > max)
    return nc_errinfo_set(err, 400, "invalid_field", field,
                          "%s must be a string of 1 to %zu characters", field, max);
  return 0;
}

/* Validates "placement": {"groups": [{"name", "policy": "affinity" |
 * "anti-affinity", "scope": "host" | "rack" | "zone", "hard": bool}],
 * "labels": {k: v}, "zone", "region", "arch", "site", "max_latency_ms"}. */
static int check_placement(json_t *p, struct nc_errinfo *err) {
  static const char *const allowed[] = {"groups", "labels", "zone", "region", "arch",
                                        "site", "max_latency_ms", NULL};
  if (!json_is_object(p))
    return nc_errinfo_set(err, 400, "invalid_field", "placement",
                          "placement must be an object (see docs/scheduling.md)");
  int rc = nc_json_check_fields(p, allowed, "placement", err);
  if (rc)
    return rc;
  json_t *g = json_object_get(p, "groups");
  if (g) {
    if (!json_is_array(g) || json_array_size(g) > NC_SCHED_REQ_GROUPS_MAX)
      return nc_errinfo_set(err, 400, "invalid_field", "placement.groups",
                            "placement.groups must be an array of at most %d groups",
                            NC_SCHED_REQ_GROUPS_MAX);
    size_t i;
    json_t *x;
    json_array_foreach(g, i, x) {
      static const char *const gallowed[] = {"name", "policy", "scope", "hard", NULL};
      if (!json_is_object(x))
        return nc_errinfo_set(err, 400, "invalid_field", "placement.groups",
                              "each group is an object {name, policy, scope, hard}");
      if ((rc = nc_json_check_fields(x, gallowed, "placement group", err)) ||
          (rc = check_str(json_object_get(x, "name"), "placement.groups[].name",
                          NC_SCHED_NAME_MAX, err)))
        return rc;
      const char *pol = jstr(x, "policy"), *scope = jstr(x, "scope");
      if (strcmp(pol, "affinity") != 0 && strcmp(pol, "anti-affinity") != 0)
        return nc_errinfo_set(err, 400, "invalid_field", "placement.groups[].policy",
                              "policy must be \"affinity\" or \"anti-affinity\"");
      if (json_object_get(x, "scope") && strcmp(scope, "host") != 0 &&
          strcmp(scope, "rack") != 0 && strcmp(scope, "zone") != 0)
        return nc_errinfo_set(err, 400, "invalid_field", "placement.groups[].scope",
                              "scope must be \"host\", \"rack\" or \"zone\"");
      json_t *h = json_object_get(x, "hard");
      if (h && !json_is_boolean(h))
        return nc_errinfo_set(err, 400, "invalid_field", "placement.groups[].hard",
                              "hard must be true or false");
    }
  }
  json_t *l = json_object_get(p, "labels");
  if (l) {
    if (!json_is_object(l) || json_object_size(l) > NC_SCHED_REQ_LABELS_MAX - 1)
      return nc_errinfo_set(err, 400, "invalid_field", "placement.labels",
                            "placement.labels must be an object of at most %d key: value "
                            "strings", NC_SCHED_REQ_LABELS_MAX - 1);
    const char *k;
    json_t *v;
    json_object_foreach(l, k, v) {
      if (strlen(k) == 0 || strlen(k) > NC_SCHED_NAME_MAX)
        return nc_errinfo_set(err, 400, "invalid_field", "placement.labels",
                              "label keys are 1 to %d characters", NC_SCHED_NAME_MAX);
      if ((rc = check_str(v, "placement.labels", NC_SCHED_NAME_MAX, err)))
        return rc;
    }
  }
  static const char *const strs[] = {"zone", "region", "arch", "site"};
  for (size_t i = 0; i < sizeof strs / sizeof *strs; i++) {
    json_t *v = json_object_get(p, strs[i]);
    char field[32];
    snprintf(field, sizeof field, "placement.%s", strs[i]);
    if (v && (rc = check_str(v, field, NC_SCHED_NAME_MAX, err)))
      return rc;
  }
  json_t *ml = json_object_get(p, "max_latency_ms");
  if (ml && (!json_is_integer(ml) || json_integer_value(ml) < 1 ||
             json_integer_value(ml) > 100000))
    return nc_errinfo_set(err, 400, "invalid_field", "placement.max_latency_ms",
                          "max_latency_ms must be an integer from 1 to 100000");
  if (ml && !json_object_get(p, "site"))
    return nc_errinfo_set(err, 400, "invalid_field", "placement.max_latency_ms",
                          "max_latency_ms needs placement.site (the site it is measured to)");
  return 0;
}

/* Splits a cluster create request into the VM spec request and the
 * cluster record. */
static int parse_create(struct nc_cluster *c, json_t *req, json_t **rec_out,
                        struct nc_errinfo *err) {
  (void)c;
  if (!json_is_object(req))
    return nc_errinfo_set(err, 400, "bad_json", NULL, "the request body must be a JSON object");
  json_t *vmreq = json_deep_copy(req);
  json_t *node = json_incref(json_object_get(req, "node"));
  json_t *ha = json_incref(json_object_get(req, "ha"));
  json_t *prio = json_incref(json_object_get(req, "ha_priority"));
  json_t *pl = json_incref(json_object_get(req, "placement"));
  json_object_del(vmreq, "node");
  json_object_del(vmreq, "ha");
  json_object_del(vmreq, "ha_priority");
  json_object_del(vmreq, "placement");
  json_object_del(vmreq, "explain");
  struct nc_vm_spec spec;
  memset(&spec, 0, sizeof spec);
  bool start = false;
  int rc = nc_vm_spec_from_request(vmreq, &spec, &start, err);
  json_decref(vmreq);
  if (!rc && node && (rc = check_str(node, "node", NC_CL_NODE_MAX - 1, err)) == 0 &&
      !nc_name_valid(json_string_value(node)))
    rc = nc_errinfo_set(err, 400, "invalid_field", "node",
                        "node must be a node name (see `novacron node list`)");
  if (!rc && ha && !json_is_boolean(ha))
    rc = nc_errinfo_set(err, 400, "invalid_field", "ha", "ha must be true or false");
  if (!rc && prio && (!json_is_integer(prio) || json_integer_value(prio) < 0 ||
                      json_integer_value(prio) > 1000))
    rc = nc_errinfo_set(err, 400, "invalid_field", "ha_priority",
                        "ha_priority must be an integer from 0 to 1000 (higher restarts first)");
  if (!rc && pl)
    rc = check_placement(pl, err);
  if (rc) {
    if (spec.name[0]) /* the spec parsed; a cluster field did not */
      nc_vm_spec_clear(&spec);
    json_decref(node);
    json_decref(ha);
    json_decref(prio);
    json_decref(pl);
    return rc;
  }
  json_t *sj = nc_vm_spec_to_json(&spec);
  json_object_set(sj, "memory", json_object_get(sj, "memory_bytes"));
  json_object_del(sj, "memory_bytes");
  json_t *rec = json_pack("{s:s, s:o, s:b, s:b, s:I, s:o, s:s}", "name", spec.name, "spec", sj,
                          "start", start, "ha", json_is_true(ha), "ha_priority",
                          (json_int_t)(prio ? json_integer_value(prio) : 0), "placement",
                          or_empty(pl, json_object), "status", node ? "placed" : "pending");
  if (node)
    json_object_set(rec, "node", node);
  nc_vm_spec_clear(&spec);
  json_decref(node);
  json_decref(ha);
  json_decref(prio);
  json_decref(pl);
  *rec_out = rec;
  return 0;
}

int nc_cluster_explain(struct nc_cluster *c, json_t *req, json_t **out, struct nc_errinfo *err) {
  json_t *rec = NULL;
  int rc = parse_create(c, req, &rec, err);
  if (rc)
    return rc;
  char node[NC_CL_NODE_MAX];
  json_t *ex = NULL;
  struct nc_errinfo perr = {0};
  rc = nc__ctl_place(c, rec, NULL, node, sizeof node, &ex, &perr);
  json_decref(rec);
  if (rc && !ex) {
    *err = perr;
    return rc;
  }
  if (rc)
    json_object_set_new(ex, "error", json_string(perr.message));
  *out = ex;
  return 0;
}

int nc_cluster_vm_create(struct nc_cluster *c, json_t *req, json_t **out,
                         struct nc_errinfo *err) {
  json_t *rec = NULL;
  int rc = parse_create(c, req, &rec, err);
  if (rc)
    return rc;
  char name[NC_NAME_MAX + 1];
  snprintf(name, sizeof name, "%s", jstr(rec, "name"));
  char key[128];
  snprintf(key, sizeof key, NC_CL_VMS "%s", name);
  if (json_object_get(rec, "node")) {
    /* Pinned: the filters still apply to that one node. */
    json_t *excl = json_array();
    json_t *nodes = nc__cl_range_json(c->cfg.store, NC_CL_NODES);
    const char *pin = jstr(rec, "node");
    if (nodes && !json_object_get(nodes, pin)) {
      json_decref(nodes);
      json_decref(excl);
      json_decref(rec);
      return nc_errinfo_set(err, 422, "unprocessable", "node",
                            "no node \"%s\" in the cluster (see `novacron node list`)", pin);
    }
    const char *n;
    json_t *v;
    json_object_foreach(nodes, n, v) if (strcmp(n, pin) != 0) json_array_append_new(
        excl, json_string(n));
    json_decref(nodes);
    char got[NC_CL_NODE_MAX];
    rc = nc__ctl_place(c, rec, excl, got, sizeof got, NULL, err);
    json_decref(excl);
    if (rc) {
      json_decref(rec);
      return rc;
    }
  }
  rc = nc__cl_cas_json(c->cfg.store, key, 0, rec, 0);
  json_decref(rec);
  if (rc == NC_E_TXNFAIL)
    return nc_errinfo_set(err, 409, "conflict", "name",
                          "vm \"%s\" already exists in the cluster (pick another name or "
                          "delete it first)", name);
  if (rc)
    return nc_errinfo_set(err, 503, "unavailable", NULL, "cannot record vm \"%s\": %s", name,
                          nc_strerror(rc));
  /* Wait for the controller's decision and the node's creation. */
  for (int waited = 0; waited < CREATE_WAIT_MS; waited += 100) {
    int64_t rev = 0;
    json_t *r = nc__cl_get_json(c->cfg.store, key, &rev);
    const char *st = r ? jstr(r, "status") : "gone";
    if (strcmp(st, "unschedulable") == 0 || strcmp(st, "failed") == 0) {
      rc = nc_errinfo_set(err, 422, "unschedulable", NULL, "%s", jstr(r, "error"));
      if (nc__cl_cas_delete(c->cfg.store, key, rev) != 0)
        nc_warn(COMPONENT, "vm \"%s\": could not drop the failed record", name);
      json_decref(r);
      return rc;
    }
    if (strcmp(st, "created") == 0 || strcmp(st, "gone") == 0) {
      *out = json_pack("{s:s, s:s, s:s}", "vm", name, "node", jstr(r, "node"), "status", st);
      json_decref(r);
      return 0;
    }
    json_decref(r);
    usleep(100 * 1000);
  }
  *out = json_pack("{s:s, s:n, s:s}", "vm", name, "node", "status", "pending");
  return 0;
}

int nc_cluster_vm_locate(struct nc_cluster *c, const char *name, char *addr, size_t len,
                         bool *local) {
  if (!nc__cl_lease_valid(c))
    return -ENOLINK; /* cut off: do not block on the store */
  char key[128];
  if (strlen(name) > 64)
    return -ENOENT;
  snprintf(key, sizeof key, NC_CL_VMS "%s", name);
  json_t *r = nc__cl_get_json(c->cfg.store, key, NULL);
  if (!r)
    return -ENOENT;
  const char *node = jstr(r, "node");
  *local = strcmp(node, c->node) == 0;
  int rc = 0;
  if (!*local) {
    char nk[128];
    snprintf(nk, sizeof nk, NC_CL_NODES "%s", node);
    json_t *n = *node ? nc__cl_get_json(c->cfg.store, nk, NULL) : NULL;
    snprintf(nk, sizeof nk, NC_CL_ALIVE "%s", node);
    struct nc_kv kv;
    bool alive = *node && nc_store_get(c->cfg.store, nk, &kv) == 0;
    nc_kv_free(&kv);
    if (!n)
      rc = -ENOENT;
    else if (!alive)
      rc = -EHOSTDOWN;
    else
      snprintf(addr, len, "%s", jstr(n, "api"));
    json_decref(n);
  }
  json_decref(r);
  return rc;
}

/* The node's own record of vm (borrowed), reading all of that node's
 * records once per listing: one range per node, not one read per VM. */
static json_t *node_vm(struct nc_cluster *c, json_t *locals, const char *node,
                       const char *vm) {
  json_t *mine = json_object_get(locals, node);
  if (!mine) {
    char prefix[160];
    snprintf(prefix, sizeof prefix, "/nodes/%s/nc/vms/", node);
    mine = nc__cl_range_json(c->cfg.store, prefix);
    if (!mine)
      mine = json_object();
    json_object_set_new(locals, node, mine);
  }
  return json_object_get(json_object_get(mine, vm), "v");
}

int nc_cluster_vm_list(struct nc_cluster *c, json_t **list, struct nc_errinfo *err) {
  int rc = cut_off(c, err);
  if (rc)
    return rc;
  json_t *vms = nc__cl_range_json(c->cfg.store, NC_CL_VMS);
  json_t *alive = vms ? nc__cl_range_json(c->cfg.store, NC_CL_ALIVE) : NULL;
  if (!alive) {
    json_decref(vms);
    return unreachable(err);
  }
  json_t *locals = json_object();
  json_t *out = json_array();
  const char *name;
  json_t *e;
  json_object_foreach(vms, name, e) {
    json_t *r = json_object_get(e, "v");
    const char *node = jstr(r, "node");
    json_t *local = *node ? node_vm(c, locals, node, name) : NULL;
    json_t *spec = json_object_get(r, "spec");
    char created[NC_ISO8601_LEN] = "";
    if (local)
      nc_iso8601(json_integer_value(json_object_get(local, "created_ms")), created,
                 sizeof created);
    const char *state = local ? jstr(local, "state") : jstr(r, "status");
    if (*node && !json_object_get(alive, node))
      state = "unknown";
    json_array_append_new(
        out, json_pack("{s:s, s:s, s:I, s:I, s:s, s:s, s:b, s:s}", "name", name, "node", node,
                       "vcpus", json_integer_value(json_object_get(spec, "vcpus")),
                       "memory_bytes", json_integer_value(json_object_get(spec, "memory")),
                       "image", jstr(spec, "image"), "state",
                       state, "ha", json_is_true(json_object_get(r, "ha")), "status",
                       jstr(r, "status")));
    if (created[0])
      json_object_set_new(json_array_get(out, json_array_size(out) - 1), "created_at",
                          json_string(created));
  }
  json_decref(locals);
  json_decref(vms);
  json_decref(alive);
  *list = out;
  return 0;
}

/* Moves the VM's record to node `to` if it names `from` or `to` now. */
static int move_record(struct nc_cluster *c, const char *vm, const char *from, const char *to,
                       const char *what) {
  if (!nc__cl_lease_valid(c))
    return -ENOLCK;
  char key[128];
  snprintf(key, sizeof key, NC_CL_VMS "%s", vm);
  int64_t rev = 0;
  json_t *r = nc__cl_get_json(c->cfg.store, key, &rev);
  if (!r)
    return -ENOENT;
  int rc;
  if (strcmp(jstr(r, "node"), from) != 0 && strcmp(jstr(r, "node"), to) != 0) {
    nc_warn(COMPONENT, "vm \"%s\": cannot %s: the cluster has it on \"%s\"", vm, what,
            jstr(r, "node"));
    rc = -EBUSY;
  } else {
    json_object_set_new(r, "node", json_string(to));
    json_object_set_new(r, "status", json_string("created"));
    json_object_del(r, "evicted_from");
    rc = nc__cl_cas_json(c->cfg.store, key, rev, r, 0);
  }
  json_decref(r);
  return rc;
}

int nc_cluster_claim(void *cluster, const char *vm, const char *from) {
  struct nc_cluster *c = cluster;
  return c ? move_record(c, vm, from, c->node, "take it over from the source") : 0;
}

int nc_cluster_release(void *cluster, const char *vm, const char *to) {
  struct nc_cluster *c = cluster;
  return c ? move_record(c, vm, c->node, to, "hand it back to the source") : 0;
}

int nc_cluster_op_locate(struct nc_cluster *c, const char *id, char *addr, size_t len) {
  if (strlen(id) > 64)
    return -ENOENT;
  json_t *nodes = nc__cl_range_json(c->cfg.store, NC_CL_NODES);
  const char *name;
  json_t *e;
  int rc = -ENOENT;
  json_object_foreach(nodes, name, e) {
    if (strcmp(name, c->node) == 0)
      continue;
    char key[300];
    snprintf(key, sizeof key, "/nodes/%s/nc/ops/%s", name, id);
    struct nc_kv kv;
    if (nc_store_get(c->cfg.store, key, &kv) == 0) {
      nc_kv_free(&kv);
      snprintf(addr, len, "%s", jstr(json_object_get(e, "v"), "api"));
      rc = 0;
      break;
    }
  }
  json_decref(nodes);
  return rc;
}

int nc_cluster_forward(struct nc_cluster *c, const char *addr, const char *method,
                       const char *path, json_t *body, long *status, json_t **out) {
  return nc__peer_call(method, addr, path, c->token, body, 30000, status, out);
}

int nc_cluster_node_api(struct nc_cluster *c, const char *name, char *addr, size_t len) {
  if (strlen(name) >= NC_CL_NODE_MAX)
    return -ENOENT;
  char key[128];
  snprintf(key, sizeof key, NC_CL_NODES "%s", name);
  json_t *n = nc__cl_get_json(c->cfg.store, key, NULL);
  if (!n)
    return -ENOENT;
  snprintf(addr, len, "%s", jstr(n, "api"));
  json_decref(n);
  return addr[0] ? 0 : -ENOENT;
}
