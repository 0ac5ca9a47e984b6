/* The controller: one per cluster, elected through /cluster/controller
 * (create-if-absent, attached to the winner's lease). Every NC_CL_TICK_MS
 * it reads the cluster's records and
 *  - places pending VMs (ITP, src/sched), refusing an HA VM the cluster
 *    could not restart after one host failure (N+1);
 *  - restarts the HA VMs of nodes whose lease expired at least
 *    restart_grace_ms ago on other nodes (docs/ha.md: by then the dead
 *    node has fenced them);
 *  - drains nodes marked draining, one live migration at a time.
 * It acts only while its own lease is valid, and every record it writes is
 * a transaction that also requires its term (the controller key's mod_rev)
 * to still stand, so a controller deposed without knowing it yet (paused,
 * partitioned) cannot overwrite its successor's decisions. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/cluster_int.h"
#include "cluster/rebalance.h"
#include "migrate/peer.h"
#include "sched/sched.h"
#include "util/err.h"
#include "util/log.h"
#include "util/size.h"
#include "util/sync.h"

#define COMPONENT "controller"
struct dead_node {
  char name[NC_CL_NODE_MAX];
  int64_t since_ms; /* when this controller first saw it without a lease */
};

struct nc_ctl {
  struct dead_node *dead; /* nodes seen without a lease, at most one per node */
  size_t ndead, cap_dead;
  /* The one live migration in flight, for a drain or the rebalancer. */
  bool move_is_drain;
  char drain_vm[64], drain_src[NC_CL_NODE_MAX], drain_dst[NC_CL_NODE_MAX], drain_op[64];
  char drain_src_api[256];
  int64_t drain_started_ms;
  struct nc_rb_state rb;
  /* The mod_rev of /cluster/controller for this controller's term: every
   * write the controller makes is conditional on it, so a controller that
   * lost its term without knowing yet changes nothing. */
  int64_t term_rev;
};

int nc__ctl_new(struct nc_cluster *c, struct nc_ctl **out) {
  (void)c;
  *out = calloc(1, sizeof **out);
  return *out ? 0 : -ENOMEM;
}

void nc__ctl_free(struct nc_ctl *ctl) {
  if (ctl)
    free(ctl->dead);
  free(ctl);
}

static const char *jstr(json_t *o, const char *k) {
  const char *s = json_string_value(json_object_get(o, k));
  return s ? s : "";
}

/* ---- building the scheduler's snapshot ---------------------------------- */

static uint64_t spec_memory(json_t *spec) {
  json_t *m = json_object_get(spec, "memory");
  if (json_is_integer(m))
    return (uint64_t)json_integer_value(m);
  uint64_t v = 256ULL << 20;
  if (json_is_string(m))
    nc_size_parse(json_string_value(m), &v);
  return v;
}

/* The request for a record. Strings point into rec / lbl; lbl and groups
 * hold up to the scheduler's caps. */
struct req_buf {
  struct nc_sched_request r;
  struct nc_sched_label lbl[NC_SCHED_REQ_LABELS_MAX];
  const char *groups[NC_SCHED_REQ_GROUPS_MAX];
  char image_trait[NC_SCHED_NAME_MAX + 1];
};

static void req_from_record(const char *name, json_t *rec, struct req_buf *b) {
  memset(b, 0, sizeof *b);
  json_t *spec = json_object_get(rec, "spec");
  json_t *pl = json_object_get(rec, "placement");
  b->r.name = name;
  b->r.vcpus = (uint32_t)json_integer_value(json_object_get(spec, "vcpus"));
  if (b->r.vcpus == 0)
    b->r.vcpus = 1;
  b->r.mem_bytes = spec_memory(spec);
  b->r.ha = json_is_true(json_object_get(rec, "ha"));
  snprintf(b->image_trait, sizeof b->image_trait, "image:%s", jstr(spec, "image"));
  b->lbl[0].key = b->image_trait;
  b->r.nlabels = 1;
  const char *k;
  json_t *v;
  json_object_foreach(json_object_get(pl, "labels"), k, v) {
    if (b->r.nlabels == NC_SCHED_REQ_LABELS_MAX)
      break;
    b->lbl[b->r.nlabels].key = k;
    b->lbl[b->r.nlabels].value = json_string_value(v);
    b->r.nlabels++;
  }
  b->r.labels = b->lbl;
  size_t i;
  json_t *g;
  json_array_foreach(json_object_get(pl, "groups"), i, g) {
    if (b->r.ngroups == NC_SCHED_REQ_GROUPS_MAX)
      break;
    b->groups[b->r.ngroups++] = jstr(g, "name");
  }
  b->r.groups = b->groups;
  b->r.arch = json_string_value(json_object_get(pl, "arch"));
  b->r.prefer_zone = json_string_value(json_object_get(pl, "zone"));
  b->r.prefer_region = json_string_value(json_object_get(pl, "region"));
  b->r.latency_site = json_string_value(json_object_get(pl, "site"));
  b->r.max_latency_us = (uint32_t)json_integer_value(json_object_get(pl, "max_latency_ms")) * 1000;
}

static void add_groups(struct nc_sched *s, json_t *rec) {
  size_t i;
  json_t *g;
  json_array_foreach(json_object_get(json_object_get(rec, "placement"), "groups"), i, g) {
    const char *pol = jstr(g, "policy"), *scope = jstr(g, "scope");
    struct nc_sched_group sg = {
        .name = jstr(g, "name"),
        .policy = strcmp(pol, "affinity") == 0 ? NC_SCHED_AFFINITY : NC_SCHED_ANTI_AFFINITY,
        .scope = strcmp(scope, "zone") == 0   ? NC_SCHED_SCOPE_ZONE
                 : strcmp(scope, "rack") == 0 ? NC_SCHED_SCOPE_RACK
                                              : NC_SCHED_SCOPE_HOST,
        .hard = !json_is_false(json_object_get(g, "hard")),
    };
    nc_sched_group_add(s, &sg); /* -EEXIST: the first definition stands */
  }
}

/* A snapshot of the cluster: nodes (with liveness and admin state) and
 * every placed VM. skip (may be NULL) is a VM left out (the one being
 * decided). */
static int build_snapshot(struct nc_cluster *c, json_t *nodes, json_t *alive, json_t *vms,
                          const char *skip, struct nc_sched **out) {
  struct nc_sched_config cfg;
  nc_sched_config_default(&cfg);
  cfg.cpu_ratio = c->cfg.cpu_ratio;
  cfg.mem_ratio = c->cfg.mem_ratio;
  cfg.mode = c->cfg.spread ? NC_SCHED_SPREAD : NC_SCHED_PACK;
  struct nc_sched *s = NULL;
  int rc = nc_sched_new(&cfg, &s);
  if (rc)
    return rc;
  const char *name;
  json_t *e;
  json_object_foreach(nodes, name, e) {
    json_t *n = json_object_get(e, "v");
    struct nc_sched_label lbl[NC_SCHED_HOST_LABELS_MAX];
    size_t nl = 0;
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(n, "labels"), k, v) {
      if (nl == NC_SCHED_HOST_LABELS_MAX / 2)
        break;
      lbl[nl].key = k;
      lbl[nl].value = json_string_value(v);
      nl++;
    }
    char traits[NC_SCHED_HOST_LABELS_MAX][NC_SCHED_NAME_MAX + 1];
    size_t i;
    json_t *img;
    json_array_foreach(json_object_get(n, "images"), i, img) {
      if (nl == NC_SCHED_HOST_LABELS_MAX)
        break;
      snprintf(traits[nl], sizeof traits[nl], "image:%s", json_string_value(img));
      lbl[nl].key = traits[nl];
      lbl[nl].value = NULL;
      nl++;
    }
    const char *admin = jstr(n, "admin");
    json_t *al = json_object_get(alive, name);
    bool ready = !json_is_false(json_object_get(json_object_get(al, "v"), "ready"));
    struct nc_sched_host h = {
        .name = name,
        .arch = jstr(n, "arch"),
        .zone = jstr(n, "zone"),
        .rack = jstr(n, "rack"),
        .cpus = (uint32_t)json_integer_value(json_object_get(n, "cpus")),
        .mem_bytes = (uint64_t)json_integer_value(json_object_get(n, "memory_bytes")),
        .labels = lbl,
        .nlabels = nl,
        /* alive but not ready: like cordoned, its VMs still count */
        .state = !al                                       ? NC_SCHED_HOST_NOT_READY
                 : strcmp(admin, "draining") == 0          ? NC_SCHED_HOST_DRAINING
                 : strcmp(admin, "cordoned") == 0 || !ready ? NC_SCHED_HOST_CORDONED
                                                           : NC_SCHED_HOST_READY,
    };
    if (h.cpus == 0)
      h.cpus = 1;
    if (h.mem_bytes == 0)
      h.mem_bytes = 1;
    rc = nc_sched_host_add(s, &h);
    if (rc)
      nc_warn(COMPONENT, "node \"%s\" left out of placement: %s", name, nc_strerror(rc));
  }
  json_object_foreach(vms, name, e)
    add_groups(s, json_object_get(e, "v"));
  json_object_foreach(vms, name, e) {
    json_t *rec = json_object_get(e, "v");
    const char *node = jstr(rec, "node");
    if (!*node || (skip && strcmp(skip, name) == 0))
      continue;
    struct req_buf b;
    req_from_record(name, rec, &b);
    nc_sched_vm_add(s, &b.r, node); /* unknown node: left out */
  }
  *out = s;
  return 0;
}

struct view {
  json_t *nodes, *alive, *vms;
};

static int read_view(struct nc_cluster *c, struct view *v) {
  v->nodes = nc__cl_range_json(c->cfg.store, NC_CL_NODES);
  v->alive = nc__cl_range_json(c->cfg.store, NC_CL_ALIVE);
  v->vms = nc__cl_range_json(c->cfg.store, NC_CL_VMS);
  if (v->nodes && v->alive && v->vms)
    return 0;
  json_decref(v->nodes);
  json_decref(v->alive);
  json_decref(v->vms);
  memset(v, 0, sizeof *v);
  return -EIO;
}

static void free_view(struct view *v) {
  json_decref(v->nodes);
  json_decref(v->alive);
  json_decref(v->vms);
}

/* Decides where rec goes given the view. flags as nc_sched_place. */
static int place_in_view(struct nc_cluster *c, struct view *v, const char *name, json_t *rec,
                         json_t *exclude, char *node, size_t node_len, json_t **explain,
                         struct nc_errinfo *err) {
  struct nc_sched *s = NULL;
  int rc = build_snapshot(c, v->nodes, v->alive, v->vms, name, &s);
  if (rc)
    return nc_errinfo_set(err, 500, "internal", NULL, "cannot build the placement snapshot: %s",
                          nc_strerror(rc));
  add_groups(s, rec);
  struct req_buf b;
  req_from_record(name, rec, &b);
  const char *avoid[NC_SCHED_AVOID_MAX];
  size_t na = 0;
  size_t i;
  json_t *x;
  json_array_foreach(exclude, i, x) if (na < NC_SCHED_AVOID_MAX) avoid[na++] =
      json_string_value(x);
  b.r.avoid_hosts = avoid;
  b.r.navoid = na;
  struct nc_sched_choice ch;
  json_t *ex = NULL;
  /* Explaining costs a JSON object per host: only when asked, or to say
   * why nothing fits. */
  rc = nc_sched_place(s, &b.r, 0, &ch, explain ? &ex : NULL);
  if (rc == -ENOSPC && !ex) {
    struct nc_sched_choice dry;
    nc_sched_place(s, &b.r, NC_SCHED_DRY_RUN, &dry, &ex);
  }
  node[0] = '\0';
  if (rc == 0 && b.r.ha) {
    struct nc_sched_n1 n1;
    if (nc_sched_n1_check(s, &n1) == 0) {
      if (n1.count > 0) {
        rc = nc_errinfo_set(err, 422, "unschedulable", "ha",
                            "vm \"%s\" fits on %s, but the cluster could not restart it (or "
                            "another HA vm) if node \"%s\" failed (N+1 admission); add "
                            "capacity or create it without --ha",
                            name, ch.host, n1.items[0].failed_host);
        if (ex)
          json_object_set_new(ex, "n1_stranded",
                            json_pack("{s:s, s:s}", "failed_host", n1.items[0].failed_host,
                                      "vm", n1.items[0].vm));
      }
      nc_sched_n1_free(&n1);
    }
  } else if (rc == -ENOSPC) {
    char why[400] = "";
    size_t off = 0;
    json_t *h;
    json_array_foreach(json_object_get(ex, "hosts"), i, h) {
      if (off < sizeof why - 1)
        off += (size_t)snprintf(why + off, sizeof why - off, "%s%s: %s", off ? "; " : "",
                                jstr(h, "host"), jstr(h, "reason"));
    }
    rc = nc_errinfo_set(err, 422, "unschedulable", NULL, "no node can take vm \"%s\"%s%s",
                        name, why[0] ? ": " : "", why);
  } else if (rc) {
    rc = nc_errinfo_set(err, 422, "invalid_field", "placement",
                        "vm \"%s\": the placement request is not valid (%s)", name,
                        nc_strerror(rc));
  }
  if (rc == 0)
    snprintf(node, node_len, "%s", ch.host);
  if (explain)
    *explain = ex;
  else
    json_decref(ex);
  nc_sched_free(s);
  return rc;
}

int nc__ctl_place(struct nc_cluster *c, json_t *rec, json_t *exclude, char *node,
                  size_t node_len, json_t **explain, struct nc_errinfo *err) {
  struct view v;
  if (read_view(c, &v) != 0)
    return nc_errinfo_set(err, 503, "unavailable", NULL, "the cluster store is not reachable");
  int rc = place_in_view(c, &v, jstr(rec, "name"), rec, exclude, node, node_len, explain, err);
  free_view(&v);
  return rc;
}

/* ---- controller duties -------------------------------------------------- */

static int put_record(struct nc_cluster *c, const char *name, json_t *rec, int64_t rev) {
  char key[128];
  snprintf(key, sizeof key, NC_CL_VMS "%s", name);
  char *text = json_dumps(rec, JSON_COMPACT);
  if (!text)
    return -ENOMEM;
  struct nc_store_cmp cmps[2] = {
      {.key = key, .target = NC_CMP_MOD_REV, .op = NC_CMP_EQ, .num = rev},
      {.key = NC_CL_CONTROLLER, .target = NC_CMP_MOD_REV, .op = NC_CMP_EQ,
       .num = c->ctl->term_rev},
  };
  struct nc_store_op op = {.type = NC_OP_PUT, .key = key, .value = text,
                           .value_len = strlen(text)};
  bool ok = false;
  int rc = nc_store_txn(c->cfg.store, cmps, 2, &op, 1, NULL, 0, &ok, NULL);
  free(text);
  if (rc < 0)
    return rc;
  return ok ? 0 : NC_E_TXNFAIL;
}

static void place_pending(struct nc_cluster *c, struct view *v) {
  const char *name;
  json_t *e;
  json_object_foreach(v->vms, name, e) {
    json_t *rec = json_object_get(e, "v");
    if (strcmp(jstr(rec, "status"), "pending") != 0)
      continue;
    char node[NC_CL_NODE_MAX];
    struct nc_errinfo err = {0};
    int rc = place_in_view(c, v, name, rec, NULL, node, sizeof node, NULL, &err);
    json_t *r = json_deep_copy(rec);
    if (rc == 0) {
      json_object_set_new(r, "node", json_string(node));
      json_object_set_new(r, "status", json_string("placed"));
      nc_info(COMPONENT, "vm \"%s\" placed on %s", name, node);
    } else {
      json_object_set_new(r, "status", json_string("unschedulable"));
      json_object_set_new(r, "error", json_string(err.message));
      nc_warn(COMPONENT, "%s", err.message);
    }
    if (put_record(c, name, r, json_integer_value(json_object_get(e, "rev"))) == 0)
      json_object_set_new(e, "v", r); /* later decisions in this tick see it */
    else
      json_decref(r);
  }
}

/* How long node has been without a lease, as this controller saw it; 0
 * while it is alive. */
static int64_t dead_for(struct nc_ctl *ctl, const char *node, bool alive, int64_t now) {
  for (size_t i = 0; i < ctl->ndead; i++) {
    if (strcmp(ctl->dead[i].name, node) != 0)
      continue;
    if (alive) {
      ctl->dead[i] = ctl->dead[--ctl->ndead];
      return 0;
    }
    return now - ctl->dead[i].since_ms;
  }
  if (alive)
    return 0;
  if (ctl->ndead == ctl->cap_dead) {
    size_t cap = ctl->cap_dead ? ctl->cap_dead * 2 : 16;
    struct dead_node *d = realloc(ctl->dead, cap * sizeof *d);
    if (!d)
      return 0; /* tried again next tick */
    ctl->dead = d;
    ctl->cap_dead = cap;
  }
  snprintf(ctl->dead[ctl->ndead].name, sizeof ctl->dead[ctl->ndead].name, "%s", node);
  ctl->dead[ctl->ndead++].since_ms = now;
  nc_warn(COMPONENT, "node \"%s\" lost its lease", node);
  return 0;
}

/* Whether the VM's own node recorded that it should run. */
static bool wants_running(struct nc_cluster *c, const char *node, const char *vm) {
  char key[300];
  snprintf(key, sizeof key, "/nodes/%s/nc/vms/%s", node, vm);
  json_t *local = nc__cl_get_json(c->cfg.store, key, NULL);
  bool run = local ? strcmp(jstr(local, "desired"), "running") == 0 : false;
  json_decref(local);
  return run;
}

static void restart_ha(struct nc_cluster *c, struct nc_ctl *ctl, struct view *v) {
  int64_t now = nc__cl_now_ms();
  const char *node;
  json_t *e;
  json_t *ready_dead = json_array();
  json_object_foreach(v->nodes, node, e) {
    int64_t d = dead_for(ctl, node, json_object_get(v->alive, node) != NULL, now);
    if (d >= c->cfg.restart_grace_ms)
      json_array_append_new(ready_dead, json_string(node));
  }
  /* Highest priority first: collect, sort, place one by one. */
  json_t *todo = json_array();
  const char *name;
  json_object_foreach(v->vms, name, e) {
    json_t *rec = json_object_get(e, "v");
    if (!json_is_true(json_object_get(rec, "ha")))
      continue;
    size_t i;
    json_t *d;
    json_array_foreach(ready_dead, i, d) {
      if (strcmp(jstr(rec, "node"), json_string_value(d)) == 0 &&
          wants_running(c, json_string_value(d), name))
        json_array_append_new(todo, json_string(name));
    }
  }
  for (size_t i = 1; i < json_array_size(todo); i++) /* insertion sort by priority */
    for (size_t j = i; j > 0; j--) {
      json_t *a = json_object_get(json_object_get(v->vms, json_string_value(json_array_get(todo, j - 1))), "v");
      json_t *b = json_object_get(json_object_get(v->vms, json_string_value(json_array_get(todo, j))), "v");
      if (json_integer_value(json_object_get(a, "ha_priority")) >=
          json_integer_value(json_object_get(b, "ha_priority")))
        break;
      json_t *t = json_incref(json_array_get(todo, j - 1));
      json_array_set(todo, j - 1, json_array_get(todo, j));
      json_array_set_new(todo, j, t);
    }
  size_t i;
  json_t *n;
  json_array_foreach(todo, i, n) {
    name = json_string_value(n);
    json_t *ent = json_object_get(v->vms, name);
    json_t *rec = json_object_get(ent, "v");
    char to[NC_CL_NODE_MAX];
    struct nc_errinfo err = {0};
    json_t *r = json_deep_copy(rec);
    json_object_set_new(r, "ha", json_false()); /* no N+1 veto for a restart */
    int rc = place_in_view(c, v, name, r, ready_dead, to, sizeof to, NULL, &err);
    json_object_set_new(r, "ha", json_true());
    if (rc) {
      json_decref(r);
      nc_warn(COMPONENT, "HA vm \"%s\" cannot be restarted anywhere: %s", name, err.message);
      continue;
    }
    const char *from = jstr(rec, "node");
    json_object_set_new(r, "evicted_from", json_string(from));
    json_object_set_new(r, "node", json_string(to));
    json_object_set_new(r, "status", json_string("placed"));
    json_object_set_new(r, "start", json_true());
    json_object_set_new(r, "restarts",
                        json_integer(json_integer_value(json_object_get(rec, "restarts")) + 1));
    nc_warn(COMPONENT, "HA vm \"%s\": node \"%s\" is dead; restarting it on \"%s\"", name, from,
            to);
    if (put_record(c, name, r, json_integer_value(json_object_get(ent, "rev"))) == 0)
      json_object_set_new(ent, "v", r);
    else
      json_decref(r);
  }
  json_decref(todo);
  json_decref(ready_dead);
}

/* ---- drain -------------------------------------------------------------- */

static void set_drain_status(struct nc_cluster *c, const char *node, json_t *status) {
  char key[128];
  snprintf(key, sizeof key, NC_CL_NODES "%s", node);
  for (int attempt = 0; attempt < 3; attempt++) {
    int64_t rev = 0;
    json_t *n = nc__cl_get_json(c->cfg.store, key, &rev);
    if (!n)
      return;
    if (strcmp(jstr(n, "admin"), "draining") != 0) {
      json_decref(n);
      return; /* uncordoned meanwhile */
    }
    json_t *old = json_object_get(n, "drain");
    json_t *d = json_deep_copy(old ? old : json_object());
    json_object_update(d, status);
    json_object_set_new(n, "drain", d);
    int rc = nc__cl_cas_json(c->cfg.store, key, rev, n, 0);
    json_decref(n);
    if (rc != NC_E_TXNFAIL)
      return;
  }
}

static void drain_poll(struct nc_cluster *c, struct nc_ctl *ctl) {
  char path[128];
  snprintf(path, sizeof path, "/v1/operations/%s", ctl->drain_op);
  long status = 0;
  json_t *op = NULL;
  int rc = nc__peer_call("GET", ctl->drain_src_api, path, c->token, NULL, 3000, &status, &op);
  const char *st = op ? jstr(op, "status") : "";
  bool done = strcmp(st, "succeeded") == 0;
  bool failed = strcmp(st, "failed") == 0 || strcmp(st, "cancelled") == 0 ||
                (rc == 0 && status == 404);
  if (done || failed) {
    json_t *e = json_object_get(op, "error");
    char msg[300];
    snprintf(msg, sizeof msg, "%s: %s", ctl->drain_vm,
             failed ? (e ? jstr(e, "message") : "operation lost") : "moved");
    nc_info(COMPONENT, "%s of \"%s\": vm \"%s\" %s to \"%s\"",
            ctl->move_is_drain ? "drain" : "rebalance", ctl->drain_src, ctl->drain_vm,
            done ? "moved" : "could not move", ctl->drain_dst);
    if (!ctl->move_is_drain) {
      ctl->drain_op[0] = '\0';
      json_decref(op);
      return;
    }
    char key[128];
    snprintf(key, sizeof key, NC_CL_NODES "%s", ctl->drain_src);
    json_t *n = nc__cl_get_json(c->cfg.store, key, NULL);
    json_t *d = n ? json_object_get(n, "drain") : NULL;
    json_int_t rem = json_integer_value(json_object_get(d, "remaining"));
    json_t *upd = json_pack("{s:I, s:I, s:I, s:n}", "moved",
                            json_integer_value(json_object_get(d, "moved")) + (done ? 1 : 0),
                            "failed",
                            json_integer_value(json_object_get(d, "failed")) + (failed ? 1 : 0),
                            "remaining", done && rem > 0 ? rem - 1 : rem, "current");
    if (failed) {
      json_t *errs = json_deep_copy(json_object_get(d, "errors"));
      if (!json_is_array(errs)) {
        json_decref(errs);
        errs = json_array();
      }
      json_array_append_new(errs, json_string(msg));
      json_object_set_new(upd, "errors", errs);
      json_t *skip = json_deep_copy(json_object_get(d, "skip"));
      if (!json_is_array(skip)) {
        json_decref(skip);
        skip = json_array();
      }
      json_array_append_new(skip, json_string(ctl->drain_vm));
      json_object_set_new(upd, "skip", skip);
    }
    set_drain_status(c, ctl->drain_src, upd);
    json_decref(upd);
    json_decref(n);
    ctl->drain_op[0] = '\0';
  }
  json_decref(op);
}

/* Asks the VM's node to live-migrate it to node `to`; on success records
 * the move in flight. err gets why not. */
static int start_move(struct nc_cluster *c, struct nc_ctl *ctl, struct view *v, const char *vm,
                      const char *from, const char *to, bool drain, struct nc_errinfo *err) {
  json_t *src = json_object_get(json_object_get(v->nodes, from), "v");
  json_t *dst = json_object_get(json_object_get(v->nodes, to), "v");
  json_t *body = json_pack("{s:s}", "to", jstr(dst, "api"));
  char path[128];
  snprintf(path, sizeof path, "/v1/vms/%s/migrate", vm);
  long status = 0;
  json_t *res = NULL;
  int rc = nc__peer_call("POST", jstr(src, "api"), path, c->token, body, 10000, &status, &res);
  json_decref(body);
  json_t *op = json_object_get(res, "operation");
  const char *id = json_is_object(op) ? jstr(op, "id") : json_string_value(op);
  if (rc == 0 && status == 202 && id && *id) {
    ctl->move_is_drain = drain;
    snprintf(ctl->drain_op, sizeof ctl->drain_op, "%s", id);
    snprintf(ctl->drain_vm, sizeof ctl->drain_vm, "%s", vm);
    snprintf(ctl->drain_src, sizeof ctl->drain_src, "%s", from);
    snprintf(ctl->drain_dst, sizeof ctl->drain_dst, "%s", to);
    snprintf(ctl->drain_src_api, sizeof ctl->drain_src_api, "%s", jstr(src, "api"));
    ctl->drain_started_ms = nc__cl_now_ms();
    nc_info(COMPONENT, "%s: live-migrating vm \"%s\" from \"%s\" to \"%s\"",
            drain ? "drain" : "rebalance", vm, from, to);
    rc = 0;
  } else {
    const char *msg = res ? jstr(json_object_get(res, "error"), "message") : "";
    nc_errinfo_set(err, 502, "migration_failed", NULL, "cannot start the migration (%s)",
                   rc ? nc_strerror(rc) : msg);
    rc = -EIO;
  }
  json_decref(res);
  return rc;
}

static bool in_array(json_t *arr, const char *s) {
  size_t i;
  json_t *x;
  json_array_foreach(arr, i, x) if (strcmp(json_string_value(x), s) == 0) return true;
  return false;
}

static void drain_step(struct nc_cluster *c, struct nc_ctl *ctl, struct view *v) {
  if (ctl->drain_op[0]) {
    drain_poll(c, ctl);
    return;
  }
  const char *node;
  json_t *ne;
  json_object_foreach(v->nodes, node, ne) {
    json_t *n = json_object_get(ne, "v");
    if (strcmp(jstr(n, "admin"), "draining") != 0 || !json_object_get(v->alive, node))
      continue;
    json_t *d = json_object_get(n, "drain");
    json_t *skip = json_object_get(d, "skip");
    size_t remaining = 0;
    const char *pick = NULL;
    const char *name;
    json_t *e;
    json_object_foreach(v->vms, name, e) {
      json_t *rec = json_object_get(e, "v");
      if (strcmp(jstr(rec, "node"), node) != 0)
        continue;
      remaining++;
      if (!pick && !in_array(skip, name) && strcmp(jstr(rec, "status"), "created") == 0)
        pick = name;
    }
    if (!pick) {
      json_t *st = json_pack("{s:I, s:s}", "remaining", (json_int_t)remaining, "state",
                             remaining ? "stuck" : "complete");
      if (!json_equal(json_object_get(d, "state"), json_object_get(st, "state")) ||
          !json_equal(json_object_get(d, "remaining"), json_object_get(st, "remaining")))
        set_drain_status(c, node, st);
      json_decref(st);
      continue;
    }
    json_t *rec = json_object_get(json_object_get(v->vms, pick), "v");
    json_t *excl = json_pack("[s]", node);
    char to[NC_CL_NODE_MAX];
    struct nc_errinfo err = {0};
    json_t *r = json_deep_copy(rec);
    json_object_set_new(r, "ha", json_false());
    int rc = place_in_view(c, v, pick, r, excl, to, sizeof to, NULL, &err);
    json_decref(r);
    json_decref(excl);
    json_t *upd = NULL;
    if (rc == 0)
      rc = start_move(c, ctl, v, pick, node, to, true, &err);
    if (rc == 0)
      upd = json_pack("{s:s, s:I, s:{s:s, s:s, s:s}}", "state", "draining", "remaining",
                      (json_int_t)remaining, "current", "vm", pick, "to", to, "operation",
                      ctl->drain_op);
    if (rc) {
      char msg[600];
      snprintf(msg, sizeof msg, "%.63s: %s", pick, err.message);
      nc_warn(COMPONENT, "drain of \"%s\": %s", node, msg);
      json_t *errs = json_deep_copy(json_object_get(d, "errors"));
      if (!json_is_array(errs)) {
        json_decref(errs);
        errs = json_array();
      }
      json_array_append_new(errs, json_string(msg));
      json_t *sk = json_deep_copy(skip);
      if (!json_is_array(sk)) {
        json_decref(sk);
        sk = json_array();
      }
      json_array_append_new(sk, json_string(pick));
      upd = json_pack("{s:o, s:o, s:I}", "errors", errs, "skip", sk, "failed",
                      json_integer_value(json_object_get(d, "failed")) + 1);
    }
    set_drain_status(c, node, upd);
    json_decref(upd);
    return; /* one migration at a time, cluster-wide */
  }
}

/* ---- rebalance ---------------------------------------------------------- */

static void rebalance_step(struct nc_cluster *c, struct nc_ctl *ctl, struct view *v) {
  if (!c->cfg.rebalance || ctl->drain_op[0])
    return;
  size_t nn = json_object_size(v->nodes), nv = json_object_size(v->vms);
  struct nc_rb_node *nodes = calloc(nn ? nn : 1, sizeof *nodes);
  struct nc_rb_vm *vms = calloc(nv ? nv : 1, sizeof *vms);
  if (!nodes || !vms) {
    free(nodes);
    free(vms);
    return;
  }
  size_t i = 0;
  const char *name;
  json_t *e;
  json_object_foreach(v->nodes, name, e) {
    json_t *n = json_object_get(e, "v");
    if (strcmp(jstr(n, "admin"), "draining") == 0)
      goto out; /* a drain is under way: no rebalancing meanwhile */
    double cpus = (double)json_integer_value(json_object_get(n, "cpus"));
    double mem = (double)json_integer_value(json_object_get(n, "memory_bytes"));
    nodes[i] = (struct nc_rb_node){
        .name = name,
        .cpu_cap = (cpus > 0 ? cpus : 1) * c->cfg.cpu_ratio,
        .mem_cap = (mem > 0 ? mem : 1) * c->cfg.mem_ratio,
        .eligible = json_object_get(v->alive, name) && strcmp(jstr(n, "admin"), "active") == 0 &&
                    !json_is_false(json_object_get(
                        json_object_get(json_object_get(v->alive, name), "v"), "ready")),
    };
    i++;
  }
  size_t m = 0;
  json_object_foreach(v->vms, name, e) {
    json_t *r = json_object_get(e, "v");
    json_t *spec = json_object_get(r, "spec");
    size_t k = 0;
    while (k < nn && strcmp(nodes[k].name, jstr(r, "node")) != 0)
      k++;
    if (k == nn)
      continue;
    double cpu = (double)json_integer_value(json_object_get(spec, "vcpus"));
    double mem = (double)spec_memory(spec);
    nodes[k].cpu_used += cpu;
    nodes[k].mem_used += mem;
    vms[m++] = (struct nc_rb_vm){.name = name, .node = k, .cpu = cpu, .mem = mem,
                                 .movable = strcmp(jstr(r, "status"), "created") == 0 &&
                                            wants_running(c, jstr(r, "node"), name)};
  }
  struct nc_rb_config rc;
  nc_rb_config_default(&rc);
  if (c->cfg.rebalance_threshold > 0)
    rc.threshold = c->cfg.rebalance_threshold;
  size_t vi, to;
  if (!nc_rb_decide(&rc, &ctl->rb, nc__cl_now_ms(), nodes, nn, vms, m, &vi, &to))
    goto out;
  /* The scheduler's filters (affinity, labels, images) still rule. */
  json_t *excl = json_array();
  for (size_t k = 0; k < nn; k++)
    if (k != to)
      json_array_append_new(excl, json_string(nodes[k].name));
  json_t *rec = json_deep_copy(json_object_get(json_object_get(v->vms, vms[vi].name), "v"));
  json_object_set_new(rec, "ha", json_false());
  char got[NC_CL_NODE_MAX];
  struct nc_errinfo err = {0};
  int rcp = place_in_view(c, v, vms[vi].name, rec, excl, got, sizeof got, NULL, &err);
  json_decref(rec);
  json_decref(excl);
  nc_rb_moved(&rc, &ctl->rb, nc__cl_now_ms()); /* cool down whatever happens next */
  if (rcp) {
    nc_info(COMPONENT, "rebalance: vm \"%s\" may not go to \"%s\" (%s); waiting",
            vms[vi].name, nodes[to].name, err.message);
    goto out;
  }
  nc_info(COMPONENT, "rebalance: load imbalance %.2f above %.2f", nc_rb_imbalance(nodes, nn),
          rc.threshold);
  if (start_move(c, ctl, v, vms[vi].name, nodes[vms[vi].node].name,
                 nodes[to].name, false, &err) != 0)
    nc_warn(COMPONENT, "rebalance: %s", err.message);
out:
  free(nodes);
  free(vms);
}

/* ---- election and the loop ---------------------------------------------- */

static bool campaign(struct nc_cluster *c) {
  pthread_mutex_lock(&c->mu);
  int64_t lease = c->lease;
  pthread_mutex_unlock(&c->mu);
  if (!lease || !nc__cl_lease_valid(c))
    return false;
  int64_t rev = 0;
  json_t *cur = nc__cl_get_json(c->cfg.store, NC_CL_CONTROLLER, &rev);
  if (cur) {
    bool me = strcmp(jstr(cur, "node"), c->node) == 0 &&
              json_integer_value(json_object_get(cur, "lease")) == lease;
    json_decref(cur);
    if (me)
      c->ctl->term_rev = rev;
    return me;
  }
  json_t *v = json_pack("{s:s, s:I}", "node", c->node, "lease", (json_int_t)lease);
  int rc = nc__cl_cas_json(c->cfg.store, NC_CL_CONTROLLER, 0, v, lease);
  json_decref(v);
  if (rc == 0) {
    nc_info(COMPONENT, "node \"%s\" is the cluster controller", c->node);
    json_decref(nc__cl_get_json(c->cfg.store, NC_CL_CONTROLLER, &c->ctl->term_rev));
  }
  return rc == 0 && c->ctl->term_rev > 0;
}

void *nc__ctl_main(void *arg) {
  struct nc_cluster *c = arg;
  struct nc_ctl *ctl = c->ctl;
  do {
    bool lead = campaign(c);
    if (lead != c->leader) {
      if (!lead)
        nc_warn(COMPONENT, "node \"%s\" is no longer the controller", c->node);
      /* A new term starts without history: every node seen dead gets
       * the full grace from now. */
      ctl->ndead = 0;
      ctl->drain_op[0] = '\0';
    }
    pthread_mutex_lock(&c->mu);
    c->leader = lead;
    pthread_mutex_unlock(&c->mu);
    struct view v;
    if (lead && read_view(c, &v) == 0) {
      place_pending(c, &v);
      restart_ha(c, ctl, &v);
      drain_step(c, ctl, &v);
      rebalance_step(c, ctl, &v);
      free_view(&v);
    }
  } while (nc__cl_wait(c, NC_CL_TICK_MS));
  return NULL;
}
