/* Cluster membership: the node's record, its lease, the fence file and the
 * fence guard; and the start/stop of the agent and controller threads.
 * See cluster.h. */
#include "cluster/cluster.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysinfo.h>
#include <time.h>
#include <unistd.h>

#include "cluster/cluster_int.h"
#include "cluster/fence.h"
#include "hv/proc.h"
#include "util/err.h"
#include "util/log.h"
#include "util/sync.h"

#define COMPONENT "cluster"

int64_t nc__cl_now_ms(void) { return nc_fence_now_ms(); }

json_t *nc__cl_get_json(struct nc_store *s, const char *key, int64_t *mod_rev) {
  struct nc_kv kv;
  if (mod_rev)
    *mod_rev = 0;
  if (nc_store_get(s, key, &kv) != 0)
    return NULL;
  json_t *v = json_loadb(kv.value, kv.value_len, 0, NULL);
  if (v && !json_is_object(v)) {
    json_decref(v);
    v = NULL;
  }
  if (v && mod_rev)
    *mod_rev = kv.mod_rev;
  nc_kv_free(&kv);
  return v;
}

int nc__cl_cas_json(struct nc_store *s, const char *key, int64_t expect, json_t *v,
                    int64_t lease) {
  char *text = json_dumps(v, JSON_COMPACT);
  if (!text)
    return -ENOMEM;
  struct nc_store_cmp cmp = {.key = key, .target = NC_CMP_MOD_REV, .op = NC_CMP_EQ,
                             .num = expect};
  struct nc_store_op op = {.type = NC_OP_PUT, .key = key, .value = text,
                           .value_len = strlen(text), .lease = lease};
  bool ok = false;
  int rc = nc_store_txn(s, &cmp, 1, &op, 1, NULL, 0, &ok, NULL);
  free(text);
  if (rc < 0)
    return rc;
  return ok ? 0 : NC_E_TXNFAIL;
}

int nc__cl_cas_delete(struct nc_store *s, const char *key, int64_t expect) {
  struct nc_store_cmp cmp = {.key = key, .target = NC_CMP_MOD_REV, .op = NC_CMP_EQ,
                             .num = expect};
  struct nc_store_op op = {.type = NC_OP_DELETE, .key = key};
  bool ok = false;
  int rc = nc_store_txn(s, &cmp, 1, &op, 1, NULL, 0, &ok, NULL);
  if (rc < 0)
    return rc;
  return ok ? 0 : NC_E_TXNFAIL;
}

json_t *nc__cl_range_json(struct nc_store *s, const char *prefix) {
  struct nc_kv_list l;
  if (nc_store_range(s, prefix, 0, &l) != 0)
    return NULL;
  json_t *out = json_object();
  size_t plen = strlen(prefix);
  for (size_t i = 0; i < l.count; i++) {
    json_t *v = json_loadb(l.items[i].value, l.items[i].value_len, 0, NULL);
    if (!json_is_object(v)) {
      json_decref(v);
      continue;
    }
    json_object_set_new(out, l.items[i].key + plen,
                        json_pack("{s:o, s:I}", "v", v, "rev", (json_int_t)l.items[i].mod_rev));
  }
  nc_kv_list_free(&l);
  return out;
}

bool nc__cl_wait(struct nc_cluster *c, int ms) {
  pthread_mutex_lock(&c->mu);
  struct timespec dl = nc_deadline(ms);
  while (!c->stopping && pthread_cond_timedwait(&c->cv, &c->mu, &dl) != ETIMEDOUT) {
  }
  bool go_on = !c->stopping;
  pthread_mutex_unlock(&c->mu);
  return go_on;
}

bool nc__cl_lease_valid(struct nc_cluster *c) {
  pthread_mutex_lock(&c->mu);
  bool ok = c->lease && nc__cl_now_ms() - c->lease_ok_ms < c->cfg.fence_after_ms;
  pthread_mutex_unlock(&c->mu);
  return ok;
}

/* ---- the node record ---------------------------------------------------- */

/* Writes /cluster/nodes/<node> with what this node is, keeping the admin
 * state (cordoned, draining) that others may have set. images NULL keeps
 * the list recorded before. */
static int register_node(struct nc_cluster *c, json_t *images) {
  char key[128];
  snprintf(key, sizeof key, NC_CL_NODES "%s", c->node);
  struct sysinfo si;
  sysinfo(&si);
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  for (int attempt = 0; attempt < 5; attempt++) {
    int64_t rev = 0;
    json_t *old = nc__cl_get_json(c->cfg.store, key, &rev);
    json_t *rec = json_pack(
        "{s:s, s:s, s:s, s:s, s:s, s:O, s:s, s:I, s:I, s:b, s:o}", "name", c->node, "api",
        c->api, "dwcp_host", c->dwcp, "zone", c->zone, "rack", c->rack, "labels", c->labels,
        "arch", "x86_64", "cpus", (json_int_t)cpus, "memory_bytes",
        (json_int_t)((int64_t)si.totalram * si.mem_unit), "control_plane",
        c->cfg.control_plane, "images",
        images ? json_incref(images)
               : json_is_array(json_object_get(old, "images"))
                     ? json_incref(json_object_get(old, "images")) /* until the agent says */
                     : json_array());
    json_t *admin = old ? json_object_get(old, "admin") : NULL;
    json_object_set_new(rec, "admin", json_is_string(admin) ? json_incref(admin)
                                                            : json_string("active"));
    json_t *drain = old ? json_object_get(old, "drain") : NULL;
    if (drain)
      json_object_set(rec, "drain", drain);
    int rc = json_equal(old, rec) ? 0 : nc__cl_cas_json(c->cfg.store, key, rev, rec, 0);
    json_decref(old);
    json_decref(rec);
    if (rc != NC_E_TXNFAIL)
      return rc;
  }
  return NC_E_TXNFAIL;
}

int nc__cl_register_images(struct nc_cluster *c, json_t *images) {
  return register_node(c, images);
}

/* ---- lease and fence ---------------------------------------------------- */

static void lease_file(struct nc_cluster *c, char *out, size_t len) {
  snprintf(out, len, "%s/lease", c->fence_dir);
}

static int64_t load_saved_lease(struct nc_cluster *c) {
  char path[1200], buf[32];
  lease_file(c, path, sizeof path);
  if (nc__proc_read_small(path, buf, sizeof buf) < 0)
    return 0;
  return strtoll(buf, NULL, 10);
}

static void save_lease(struct nc_cluster *c, int64_t lease) {
  char path[1200], tmp[1300];
  lease_file(c, path, sizeof path);
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *f = fopen(tmp, "w");
  if (!f)
    return;
  fprintf(f, "%lld\n", (long long)lease);
  if (fclose(f) == 0)
    rename(tmp, path);
}

static void write_fence(struct nc_cluster *c, int64_t deadline) {
  pthread_mutex_lock(&c->mu);
  int rc = nc_fence_write(c->fence_dir, deadline, (const char *const *)c->ha_dirs, c->nha);
  pthread_mutex_unlock(&c->mu);
  if (rc)
    nc_warn(COMPONENT, "cannot write the fence file in %s: %s", c->fence_dir,
            nc_strerror(rc));
}

/* Starts the fence guard unless one runs (its pid in fence_dir/guard.pid
 * and its command line naming fence_dir). */
static void ensure_guard(struct nc_cluster *c) {
  if (!c->self_exe[0])
    return; /* no guard: tests and simulations only (cluster.h) */
  if (c->guard_pid > 0 && nc__proc_alive(c->guard_pid, c->guard_pidfd) == 1)
    return;
  if (c->guard_pidfd >= 0)
    close(c->guard_pidfd);
  c->guard_pidfd = -1;
  c->guard_pid = 0;
  char pidpath[1200];
  snprintf(pidpath, sizeof pidpath, "%s/guard.pid", c->fence_dir);
  pid_t pid = 0;
  if (nc__proc_read_pid(pidpath, &pid) == 0) {
    int err = 0;
    int fd = nc__proc_pidfd_open(pid, &err);
    if (nc__proc_alive(pid, fd) == 1 &&
        nc__proc_cmdline_has_prefix(pid, c->fence_dir) == 1) {
      c->guard_pid = pid;
      c->guard_pidfd = fd;
      return;
    }
    if (fd >= 0)
      close(fd);
  }
  char log[1200];
  snprintf(log, sizeof log, "%s/guard.log", c->fence_dir);
  char *argv[] = {c->self_exe, "--fence-guard", c->fence_dir, NULL};
  pid = 0;
  int fd = -1;
  int rc = nc__proc_spawn_detached(argv, log, &pid, &fd);
  if (rc) {
    nc_error(COMPONENT, "cannot start the fence guard (%s --fence-guard): %s", c->self_exe,
             nc_strerror(rc));
    return;
  }
  c->guard_pid = pid;
  c->guard_pidfd = fd;
  FILE *f = fopen(pidpath, "w");
  if (f) {
    fprintf(f, "%d\n", (int)pid);
    fclose(f);
  }
  nc_info(COMPONENT, "fence guard started (pid %d)", (int)pid);
}

static bool node_ready(struct nc_cluster *c) {
  return c->cfg.ready ? c->cfg.ready(c->cfg.ready_data) : true;
}

/* The alive key says whether the node is ready (its daemon's critical
 * components are up); it is rewritten only when that changes, so a quiet
 * cluster writes nothing. */
static int put_alive(struct nc_cluster *c, int64_t lease, bool ready) {
  char key[128];
  snprintf(key, sizeof key, NC_CL_ALIVE "%s", c->node);
  char val[160];
  snprintf(val, sizeof val, "{\"node\":\"%s\",\"lease\":%lld,\"ready\":%s}", c->node,
           (long long)lease, ready ? "true" : "false");
  int rc = nc_store_put(c->cfg.store, key, val, strlen(val), lease, NULL);
  if (rc == 0)
    c->ready_published = ready;
  return rc;
}

/* One round: keep the lease alive (or get a new one), then extend the
 * fence deadline by what was acknowledged. */
static void lease_round(struct nc_cluster *c) {
  int64_t sent = nc__cl_now_ms();
  pthread_mutex_lock(&c->mu);
  int64_t lease = c->lease;
  pthread_mutex_unlock(&c->mu);
  int rc;
  if (lease) {
    rc = nc_store_lease_keepalive(c->cfg.store, lease);
    if (rc == NC_E_LEASE) {
      nc_warn(COMPONENT, "cluster lease %llx expired; HA vms here were fenced, taking a new "
                         "lease", (unsigned long long)lease);
      lease = 0;
    }
  }
  if (!lease) {
    rc = nc_store_lease_grant(c->cfg.store, c->cfg.lease_ttl_ms, &lease);
    if (rc == 0)
      rc = put_alive(c, lease, node_ready(c));
    if (rc == 0) {
      save_lease(c, lease);
      nc_info(COMPONENT, "node \"%s\" joined with lease %llx (ttl %lld ms)", c->node,
              (unsigned long long)lease, (long long)c->cfg.lease_ttl_ms);
    } else {
      lease = 0;
    }
  }
  pthread_mutex_lock(&c->mu);
  bool was_valid = c->lease && sent - c->lease_ok_ms < c->cfg.fence_after_ms;
  c->lease = lease;
  if (rc == 0 && lease)
    c->lease_ok_ms = sent;
  pthread_mutex_unlock(&c->mu);
  if (rc == 0 && lease) {
    write_fence(c, sent + c->cfg.fence_after_ms);
    bool ready = node_ready(c);
    if (ready != c->ready_published && put_alive(c, lease, ready) == 0)
      nc_info(COMPONENT, "node \"%s\" is %s", c->node, ready ? "ready" : "not ready");
  } else if (was_valid) {
    nc_warn(COMPONENT, "cannot renew the cluster lease: %s (HA vms are fenced %lld ms after "
                       "the last renewal)", nc_strerror(rc), (long long)c->cfg.fence_after_ms);
  }
  ensure_guard(c);
}

static void *lease_main(void *arg) {
  struct nc_cluster *c = arg;
  int64_t period = c->cfg.lease_ttl_ms / 6;
  if (period < 200)
    period = 200;
  do
    lease_round(c);
  while (nc__cl_wait(c, (int)period));
  return NULL;
}

/* ---- lifecycle ---------------------------------------------------------- */

/* Copies src ("" for NULL) into dst[cap]; NC_E_TOOBIG naming what. */
static int copy_str(char *dst, size_t cap, const char *src, const char *what) {
  if (!src)
    src = "";
  if (strlen(src) >= cap) {
    nc_error(COMPONENT, "%s is too long (at most %zu characters)", what, cap - 1);
    return NC_E_TOOBIG;
  }
  snprintf(dst, cap, "%s", src);
  return 0;
}

int nc_cluster_start(const struct nc_cluster_config *cfg, struct nc_cluster **out) {
  if (!cfg || !out || !cfg->store || !cfg->vmm || !cfg->node_store || !cfg->node_name ||
      !cfg->api_addr || !cfg->data_dir)
    return -EINVAL;
  *out = NULL;
  struct nc_cluster *c = calloc(1, sizeof *c);
  if (!c)
    return -ENOMEM;
  c->cfg = *cfg;
  c->guard_pidfd = -1;
  const struct {
    char *dst;
    size_t cap;
    const char *src, *what;
  } strs[] = {
      {c->node, sizeof c->node, cfg->node_name, "node_name"},
      {c->api, sizeof c->api, cfg->api_addr, "the API address"},
      {c->dwcp, sizeof c->dwcp, cfg->dwcp_host, "dwcp_host"},
      {c->data_dir, sizeof c->data_dir, cfg->data_dir, "data_dir"},
      {c->token, sizeof c->token, cfg->token, "the cluster token"},
      {c->zone, sizeof c->zone, cfg->zone, "zone"},
      {c->rack, sizeof c->rack, cfg->rack, "rack"},
      {c->self_exe, sizeof c->self_exe, cfg->self_exe, "the daemon's path"},
  };
  int rc = 0;
  for (size_t i = 0; rc == 0 && i < sizeof strs / sizeof *strs; i++)
    rc = copy_str(strs[i].dst, strs[i].cap, strs[i].src, strs[i].what);
  if (rc) {
    free(c);
    return rc;
  }
  c->labels = cfg->labels ? json_deep_copy(cfg->labels) : json_object();
  if (c->cfg.lease_ttl_ms <= 0)
    c->cfg.lease_ttl_ms = 6000;
  if (c->cfg.fence_after_ms <= 0)
    c->cfg.fence_after_ms = c->cfg.lease_ttl_ms - 2000;
  if (c->cfg.fence_after_ms <= 0 || c->cfg.fence_after_ms >= c->cfg.lease_ttl_ms) {
    nc_error(COMPONENT, "fence_after_ms (%lld) must be positive and below the lease ttl "
                        "(%lld ms)", (long long)c->cfg.fence_after_ms,
             (long long)c->cfg.lease_ttl_ms);
    json_decref(c->labels);
    free(c);
    return -EINVAL;
  }
  if (c->cfg.restart_grace_ms <= 0)
    c->cfg.restart_grace_ms = 2000;
  if (c->cfg.cpu_ratio <= 0)
    c->cfg.cpu_ratio = 4.0;
  if (c->cfg.mem_ratio <= 0)
    c->cfg.mem_ratio = 1.0;
  snprintf(c->fence_dir, sizeof c->fence_dir, "%s/cluster", c->data_dir);
  if (mkdir(c->fence_dir, 0700) != 0 && errno != EEXIST) {
    rc = -errno;
    nc_error(COMPONENT, "cannot create %s: %s", c->fence_dir, nc_strerror(rc));
    json_decref(c->labels);
    free(c);
    return rc;
  }
  pthread_mutex_init(&c->mu, NULL);
  nc_cond_init_mono(&c->cv);

  /* A restarted daemon keeps its lease if it is still alive: the fence
   * deadline then never lapses across a quick restart. */
  int64_t saved = load_saved_lease(c);
  if (saved > 0 && nc_store_lease_keepalive(c->cfg.store, saved) == 0 &&
      put_alive(c, saved, node_ready(c)) == 0) {
    c->lease = saved;
    c->lease_ok_ms = nc__cl_now_ms();
    nc_info(COMPONENT, "kept lease %llx across the restart", (unsigned long long)saved);
  } else {
    lease_round(c); /* alive before the node record appears: never seen as dead */
  }
  rc = register_node(c, NULL); /* the agent publishes the images once it runs */
  if (rc) {
    nc_error(COMPONENT, "cannot register node \"%s\" in the cluster store: %s", c->node,
             nc_strerror(rc));
    goto fail;
  }

  rc = nc__ctl_new(c, &c->ctl);
  if (rc)
    goto fail;
  if (pthread_create(&c->lease_thr, NULL, lease_main, c) != 0) {
    rc = -EAGAIN;
    goto fail;
  }
  if (pthread_create(&c->agent_thr, NULL, nc__cl_agent_main, c) != 0) {
    rc = -EAGAIN;
    goto fail_lease;
  }
  if (c->cfg.control_plane) {
    if (pthread_create(&c->ctl_thr, NULL, nc__ctl_main, c) != 0) {
      rc = -EAGAIN;
      goto fail_agent;
    }
    c->ctl_started = true;
  }
  nc_info(COMPONENT, "node \"%s\" in the cluster (api %s, %s)", c->node, c->api,
          c->cfg.control_plane ? "control plane" : "worker");
  *out = c;
  return 0;

fail_agent:
  pthread_mutex_lock(&c->mu);
  c->stopping = true;
  pthread_cond_broadcast(&c->cv);
  pthread_mutex_unlock(&c->mu);
  pthread_join(c->agent_thr, NULL);
fail_lease:
  pthread_mutex_lock(&c->mu);
  c->stopping = true;
  pthread_cond_broadcast(&c->cv);
  pthread_mutex_unlock(&c->mu);
  pthread_join(c->lease_thr, NULL);
fail:
  nc__ctl_free(c->ctl);
  json_decref(c->labels);
  pthread_mutex_destroy(&c->mu);
  pthread_cond_destroy(&c->cv);
  free(c);
  return rc;
}

void nc_cluster_stop(struct nc_cluster *c) {
  if (!c)
    return;
  pthread_mutex_lock(&c->mu);
  c->stopping = true;
  pthread_cond_broadcast(&c->cv);
  pthread_mutex_unlock(&c->mu);
  pthread_join(c->lease_thr, NULL);
  pthread_join(c->agent_thr, NULL);
  if (c->ctl_started)
    pthread_join(c->ctl_thr, NULL);
  /* Give up the controller role at once; the lease itself stays so a
   * quick restart keeps the fence deadline (it expires on its own
   * otherwise). */
  if (c->leader) {
    int64_t rev = 0;
    json_t *cur = nc__cl_get_json(c->cfg.store, NC_CL_CONTROLLER, &rev);
    const char *who = cur ? json_string_value(json_object_get(cur, "node")) : NULL;
    if (who && strcmp(who, c->node) == 0)
      nc__cl_cas_delete(c->cfg.store, NC_CL_CONTROLLER, rev);
    json_decref(cur);
  }
  nc__ctl_free(c->ctl);
  if (c->guard_pidfd >= 0)
    close(c->guard_pidfd);
  for (size_t i = 0; i < c->nha; i++)
    free(c->ha_dirs[i]);
  free(c->ha_dirs);
  json_decref(c->labels);
  pthread_mutex_destroy(&c->mu);
  pthread_cond_destroy(&c->cv);
  free(c);
}
