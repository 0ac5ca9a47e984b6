/* The node agent: makes this node's VMs match the cluster's records.
 *
 * On every change under /cluster/vms/ (a watch) and at least every
 * AGENT_RESYNC_MS:
 *  - a record placed on this node with no local VM: create it here (and
 *    start it when the record asks), then mark the record "created";
 *  - a "created" record of this node whose local VM is gone: the user
 *    deleted it here, so drop the record;
 *  - a local HA VM that failed (fenced, or its QEMU died) while its record
 *    still names this node: restart it here, after claiming the record so
 *    the controller cannot move it at the same moment;
 *  - a local VM whose record names another node and says it was evicted
 *    from here (an HA restart elsewhere): delete the stale local copy;
 *  - a local VM with no record (defined before the node joined, or by a
 *    clone): record it as this node's.
 * VMs busy with an operation (a migration in or out, say) are left alone.
 * The run dirs of local HA VMs go to the fence file (cluster.c). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/cluster_int.h"
#include "util/err.h"
#include "util/log.h"
#include "util/sync.h"
#include "vm/image.h"
#include "vm/manager.h"

#define COMPONENT "cluster"
#define AGENT_RESYNC_MS 2000 /* a full pass at least this often */
#define AGENT_IMAGES_MS 10000 /* how often the node's image list is republished */

static const char *jstr(json_t *o, const char *k) {
  const char *s = json_string_value(json_object_get(o, k));
  return s ? s : "";
}

static void set_ha_dirs(struct nc_cluster *c, json_t *names) {
  size_t n = json_array_size(names);
  char **dirs = calloc(n ? n : 1, sizeof *dirs);
  if (!dirs)
    return;
  for (size_t i = 0; i < n; i++) {
    char d[1200];
    snprintf(d, sizeof d, "%s/vms/%s", c->data_dir, json_string_value(json_array_get(names, i)));
    dirs[i] = strdup(d);
  }
  pthread_mutex_lock(&c->mu);
  for (size_t i = 0; i < c->nha; i++)
    free(c->ha_dirs[i]);
  free(c->ha_dirs);
  c->ha_dirs = dirs;
  c->nha = n;
  pthread_mutex_unlock(&c->mu);
}

static void record_status(struct nc_cluster *c, const char *name, json_t *rec, int64_t rev,
                          const char *status, const char *error) {
  char key[128];
  snprintf(key, sizeof key, NC_CL_VMS "%s", name);
  json_t *r = json_deep_copy(rec);
  json_object_set_new(r, "status", json_string(status));
  if (error)
    json_object_set_new(r, "error", json_string(error));
  else
    json_object_del(r, "error");
  int rc = nc__cl_cas_json(c->cfg.store, key, rev, r, 0);
  if (rc && rc != NC_E_TXNFAIL)
    nc_warn(COMPONENT, "vm \"%s\": cannot record status %s: %s", name, status, nc_strerror(rc));
  json_decref(r);
}

static void create_here(struct nc_cluster *c, const char *name, json_t *rec, int64_t rev) {
  json_t *req = json_deep_copy(json_object_get(rec, "spec"));
  if (!json_is_object(req)) {
    json_decref(req);
    record_status(c, name, rec, rev, "failed", "the record has no spec");
    return;
  }
  json_object_set_new(req, "start", json_boolean(json_is_true(json_object_get(rec, "start"))));
  json_t *out = NULL;
  struct nc_errinfo err = {0};
  int rc = nc_vmm_create(c->cfg.vmm, req, &out, &err);
  json_decref(req);
  json_decref(out);
  if (rc && err.status != 409) {
    nc_warn(COMPONENT, "vm \"%s\": cannot create it here: %s", name, err.message);
    record_status(c, name, rec, rev, "failed", err.message);
    return;
  }
  nc_info(COMPONENT, "vm \"%s\": created here as the cluster placed it", name);
  record_status(c, name, rec, rev, "created", NULL);
}

static void adopt_record(struct nc_cluster *c, json_t *vm) {
  const char *name = jstr(vm, "name");
  json_t *spec = json_pack("{s:s, s:O, s:O, s:O, s:O, s:O, s:O}", "name", name, "vcpus",
                           json_object_get(vm, "vcpus"), "memory",
                           json_object_get(vm, "memory_bytes"), "image",
                           json_object_get(vm, "image"), "nic", json_object_get(vm, "nic"),
                           "labels", json_object_get(vm, "labels"), "cmdline_append",
                           json_object_get(vm, "cmdline_append"));
  if (!spec)
    return;
  json_t *machine = json_object_get(vm, "machine"); /* pinned at create: keep it */
  if (json_is_string(machine))
    json_object_set(spec, "machine", machine);
  json_t *rec = json_pack("{s:s, s:o, s:b, s:s, s:b, s:i, s:s}", "name", name, "spec", spec,
                          "start", strcmp(jstr(vm, "desired_state"), "running") == 0, "node",
                          c->node, "ha", 0, "ha_priority", 0, "status", "created");
  char key[128];
  snprintf(key, sizeof key, NC_CL_VMS "%s", name);
  if (nc__cl_cas_json(c->cfg.store, key, 0, rec, 0) == 0)
    nc_info(COMPONENT, "vm \"%s\": recorded in the cluster as this node's", name);
  json_decref(rec);
}

static void delete_local(struct nc_cluster *c, const char *name, const char *why) {
  json_t *out = NULL;
  struct nc_errinfo err = {0};
  nc_warn(COMPONENT, "vm \"%s\": deleting the local copy: %s", name, why);
  if (nc_vmm_action(c->cfg.vmm, name, NC_ACT_DELETE, NULL, &out, &err) != 0)
    nc_warn(COMPONENT, "vm \"%s\": cannot delete the local copy: %s", name, err.message);
  json_decref(out);
}

static void restart_here(struct nc_cluster *c, const char *name, json_t *rec, int64_t rev) {
  char key[128];
  snprintf(key, sizeof key, NC_CL_VMS "%s", name);
  json_t *r = json_deep_copy(rec);
  json_object_set_new(r, "restarts",
                      json_integer(json_integer_value(json_object_get(rec, "restarts")) + 1));
  int rc = nc__cl_cas_json(c->cfg.store, key, rev, r, 0);
  json_decref(r);
  if (rc)
    return; /* the controller moved it meanwhile, or the store is away */
  nc_warn(COMPONENT, "vm \"%s\": HA vm is down here; restarting it", name);
  json_t *out = NULL;
  struct nc_errinfo err = {0};
  if (nc_vmm_action(c->cfg.vmm, name, NC_ACT_START, NULL, &out, &err) != 0)
    nc_warn(COMPONENT, "vm \"%s\": HA restart failed: %s", name, err.message);
  json_decref(out);
}

/* Asks the manager again, by name: dropping a record is for good. */
static bool local_gone(struct nc_cluster *c, const char *name) {
  json_t *vm = NULL;
  struct nc_errinfo err = {0};
  int rc = nc_vmm_get(c->cfg.vmm, name, &vm, &err);
  json_decref(vm);
  return rc != 0 && err.status == 404;
}

static void sync_once(struct nc_cluster *c) {
  json_t *recs = nc__cl_range_json(c->cfg.store, NC_CL_VMS);
  if (!recs)
    return; /* store unreachable: change nothing */
  bool valid = nc__cl_lease_valid(c);
  json_t *list = nc_vmm_list(c->cfg.vmm);
  json_t *local = json_object_get(list, "vms");
  json_t *by_name = json_object();
  size_t i;
  json_t *vm;
  json_array_foreach(local, i, vm) json_object_set(by_name, jstr(vm, "name"), vm);

  json_t *ha = json_array();
  const char *name;
  json_t *e;
  json_object_foreach(recs, name, e) {
    json_t *rec = json_object_get(e, "v");
    int64_t rev = json_integer_value(json_object_get(e, "rev"));
    const char *node = jstr(rec, "node");
    const char *status = jstr(rec, "status");
    json_t *lv = json_object_get(by_name, name);
    bool mine = strcmp(node, c->node) == 0;
    bool busy = lv && !json_is_null(json_object_get(lv, "operation"));
    if (mine && json_is_true(json_object_get(rec, "ha")) && lv)
      json_array_append_new(ha, json_string(name));
    if (!valid || busy)
      continue; /* without a lease this node decides nothing */
    if (mine && !lv && strcmp(status, "placed") == 0) {
      create_here(c, name, rec, rev);
    } else if (mine && !lv && strcmp(status, "created") == 0 && local_gone(c, name)) {
      char key[128];
      snprintf(key, sizeof key, NC_CL_VMS "%s", name);
      if (nc__cl_cas_delete(c->cfg.store, key, rev) == 0)
        nc_info(COMPONENT, "vm \"%s\": deleted here; dropped from the cluster", name);
    } else if (mine && lv && strcmp(status, "placed") == 0) {
      record_status(c, name, rec, rev, "created", NULL);
    } else if (mine && lv && json_is_true(json_object_get(rec, "ha")) &&
               strcmp(jstr(lv, "state"), "failed") == 0 &&
               strcmp(jstr(lv, "desired_state"), "running") == 0) {
      restart_here(c, name, rec, rev);
    } else if (!mine && lv && strcmp(jstr(rec, "evicted_from"), c->node) == 0) {
      delete_local(c, name, "the cluster restarted it on another node while this one had "
                            "lost its lease");
    }
  }
  set_ha_dirs(c, ha);
  json_decref(ha);

  if (valid) {
    json_array_foreach(local, i, vm) {
      const char *n = jstr(vm, "name");
      if (!json_object_get(recs, n) && json_is_null(json_object_get(vm, "operation")) &&
          strcmp(jstr(vm, "state"), "migrating") != 0)
        adopt_record(c, vm);
    }
  }
  json_decref(by_name);
  json_decref(list);
  json_decref(recs);
}

static void publish_images(struct nc_cluster *c, json_t **last) {
  json_t *imgs = nc_image_list_json(c->cfg.node_store);
  if (!imgs)
    return;
  json_t *names = json_array();
  size_t i;
  json_t *im;
  json_array_foreach(json_object_get(imgs, "images"), i, im)
    json_array_append(names, json_object_get(im, "name"));
  json_decref(imgs);
  if (*last && json_equal(*last, names)) {
    json_decref(names);
    return;
  }
  if (nc__cl_register_images(c, names) == 0) {
    json_decref(*last);
    *last = names;
  } else {
    json_decref(names);
  }
}

/* Waits up to NC_CL_TICK_MS for a change under /cluster/vms/ (through the
 * watch, reopened when it fails) and reports whether one came. Events are
 * only a nudge: sync_once reads the records afresh. */
static bool wait_change(struct nc_cluster *c, struct nc_store_watch **w) {
  if (!*w && nc_store_watch_open(c->cfg.store, NC_CL_VMS, 0, w) != 0) {
    *w = NULL;
    nc__cl_wait(c, NC_CL_TICK_MS);
    return false;
  }
  struct nc_store_event ev;
  int rc = nc_store_watch_next(*w, NC_CL_TICK_MS, &ev);
  if (rc == 0) {
    nc_store_event_free(&ev);
    while (nc_store_watch_next(*w, 0, &ev) == 0) /* a burst counts once */
      nc_store_event_free(&ev);
    return true;
  }
  if (rc != -ETIMEDOUT) {
    nc_store_watch_close(*w);
    *w = NULL;
  }
  return false;
}

void *nc__cl_agent_main(void *arg) {
  struct nc_cluster *c = arg;
  json_t *images = NULL;
  struct nc_store_watch *w = NULL;
  int64_t last_sync = 0, last_images = 0;
  bool first = true;
  for (;;) {
    int64_t now = nc__cl_now_ms();
    if (first || now - last_images >= AGENT_IMAGES_MS) {
      publish_images(c, &images);
      last_images = now;
    }
    first = false;
    sync_once(c);
    last_sync = nc__cl_now_ms();
    /* Next pass: on a change to the records, or every AGENT_RESYNC_MS for
     * what no record change announces (a local VM that failed, a lease
     * regained). */
    bool go = true;
    while (go && !wait_change(c, &w) && nc__cl_now_ms() - last_sync < AGENT_RESYNC_MS) {
      pthread_mutex_lock(&c->mu);
      go = !c->stopping;
      pthread_mutex_unlock(&c->mu);
    }
    pthread_mutex_lock(&c->mu);
    bool stop = c->stopping;
    pthread_mutex_unlock(&c->mu);
    if (stop)
      break;
  }
  nc_store_watch_close(w);
  json_decref(images);
  return NULL;
}
