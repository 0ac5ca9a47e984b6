#include "vm/manager.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysinfo.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "hv/machine.h"
#include "obs/metrics.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/log.h"
#include "util/logcap.h"
#include "util/sync.h"
#include "util/size.h"
#include "vm/events.h"
#include "vm/image.h"
#include "vm/ops.h"
#include "vm/spec.h"

#define VMS_PREFIX "/nc/vms/"
#define HISTORY_MAX 32
#define SNAPSHOTS_MAX 64
#define SNAPSHOT_TIMEOUT_MS 300000
/* serial.log beyond this: its newest half goes to serial.log.1 and it
 * starts again (util/logcap.h), checked on every reconcile pass. */
#define SERIAL_LOG_CAP (8u << 20)

/* One VM. Fields above `hv_mu` are guarded by vmm->mu; hv and stats by
 * hv_mu. An entry lives while refs > 0 (the list holds one, every running
 * operation and reconciler pass another). */
struct vm_entry {
  struct nc_vm_spec spec;
  enum nc_vm_state state, desired;
  char reason[256];
  int64_t created_ms, changed_ms;
  enum nc_hv_accel accel;
  json_t *snapshots; /* [{name, created_ms}] */
  json_t *history;   /* [{from, to, reason, at_ms}], newest last */
  struct nc_op *op;  /* the running operation, or NULL */
  bool incoming;     /* arriving by migration, not yet owned here */
  int refs;
  bool removed;

  pthread_mutex_t hv_mu;
  struct nc_hv_vm *hv;
  struct nc_hv_stats stats;
  bool stats_valid;
};

struct nc_vmm {
  struct nc_vmm_config cfg;
  char vms_dir[1024];
  pthread_mutex_t mu;
  pthread_cond_t cv; /* reconciler wake-up and op-thread exit */
  struct vm_entry **vms;
  size_t n, cap;
  int running_ops;
  bool stopping;
  bool started;
  pthread_t reconciler;
  struct nc_metric *m_transitions;
  /* The rendered VM list, reused until anything in it changes: every
   * change to an entry goes through save_locked, add/remove or an
   * operation starting or ending, and each bumps version. */
  uint64_t version;
  uint64_t list_version;
  char *list_text;
  size_t list_len;
};

/* ---- entries ------------------------------------------------------------ */

static struct vm_entry *entry_new(const struct nc_vm_spec *spec, int64_t now_ms) {
  struct vm_entry *e = calloc(1, sizeof *e);
  if (!e)
    abort();
  nc_vm_spec_copy(&e->spec, spec);
  e->state = NC_VM_DEFINED;
  e->desired = NC_VM_STOPPED;
  e->created_ms = e->changed_ms = now_ms;
  e->snapshots = json_array();
  e->history = json_array();
  e->refs = 1;
  pthread_mutex_init(&e->hv_mu, NULL);
  return e;
}

/* Caller holds vmm->mu. */
static void entry_unref_locked(struct nc_vmm *vmm, struct vm_entry *e) {
  (void)vmm;
  if (--e->refs > 0)
    return;
  if (e->hv)
    vmm->cfg.hv->ops->release(e->hv);
  nc_vm_spec_clear(&e->spec);
  json_decref(e->snapshots);
  json_decref(e->history);
  pthread_mutex_destroy(&e->hv_mu);
  free(e);
}

static void entry_unref(struct nc_vmm *vmm, struct vm_entry *e) {
  pthread_mutex_lock(&vmm->mu);
  entry_unref_locked(vmm, e);
  pthread_mutex_unlock(&vmm->mu);
}

static struct vm_entry *find_locked(struct nc_vmm *vmm, const char *name) {
  for (size_t i = 0; i < vmm->n; i++)
    if (strcmp(vmm->vms[i]->spec.name, name) == 0)
      return vmm->vms[i];
  return NULL;
}

static void add_locked(struct nc_vmm *vmm, struct vm_entry *e) {
  vmm->version++;
  if (vmm->n == vmm->cap) {
    vmm->cap = vmm->cap ? vmm->cap * 2 : 32;
    vmm->vms = realloc(vmm->vms, vmm->cap * sizeof *vmm->vms);
    if (!vmm->vms)
      abort();
  }
  vmm->vms[vmm->n++] = e;
}

static void remove_locked(struct nc_vmm *vmm, struct vm_entry *e) {
  vmm->version++;
  for (size_t i = 0; i < vmm->n; i++) {
    if (vmm->vms[i] == e) {
      memmove(&vmm->vms[i], &vmm->vms[i + 1], (vmm->n - i - 1) * sizeof *vmm->vms);
      vmm->n--;
      e->removed = true;
      entry_unref_locked(vmm, e);
      return;
    }
  }
}

static void run_dir(struct nc_vmm *vmm, const char *name, char *out, size_t len) {
  snprintf(out, len, "%s/%s", vmm->vms_dir, name);
}

static void run_file(struct nc_vmm *vmm, const char *name, const char *file, char *out,
                     size_t len) {
  snprintf(out, len, "%s/%s/%s", vmm->vms_dir, name, file);
}

/* ---- records ------------------------------------------------------------ */

static const char *accel_name(enum nc_hv_accel a) { return a == NC_ACCEL_KVM ? "kvm" : "tcg"; }

/* Caller holds vmm->mu. The stored form. */
static json_t *record_json_locked(struct vm_entry *e) {
  return json_pack("{s:o, s:s, s:s, s:s, s:I, s:I, s:s, s:O, s:O, s:b}", "spec",
                   nc_vm_spec_to_json(&e->spec), "state", nc_vm_state_name(e->state), "desired",
                   nc_vm_state_name(e->desired), "reason", e->reason, "created_ms",
                   (json_int_t)e->created_ms, "changed_ms", (json_int_t)e->changed_ms, "accel",
                   accel_name(e->accel), "snapshots", e->snapshots, "history", e->history,
                   "incoming", e->incoming);
}

/* Caller holds vmm->mu. */
static int save_locked(struct nc_vmm *vmm, struct vm_entry *e) {
  vmm->version++;
  json_t *j = record_json_locked(e);
  char *text = json_dumps(j, JSON_COMPACT);
  json_decref(j);
  if (!text)
    return -ENOMEM;
  char key[128];
  snprintf(key, sizeof key, VMS_PREFIX "%s", e->spec.name);
  int rc = nc_store_put(vmm->cfg.store, key, text, strlen(text), 0, NULL);
  free(text);
  if (rc)
    nc_error("vm", "vm \"%s\": cannot record state: %s", e->spec.name, nc_strerror(rc));
  return rc;
}

static int load_record(struct nc_vmm *vmm, const struct nc_kv *kv) {
  json_t *j = json_loadb(kv->value, kv->value_len, 0, NULL);
  json_t *spec_j = NULL, *snaps = NULL, *hist = NULL;
  const char *state = NULL, *desired = NULL, *reason = "", *accel = "tcg";
  json_int_t created = 0, changed = 0;
  int incoming = 0;
  struct nc_vm_spec spec;
  int rc = NC_E_INVALID;
  if (!j || json_unpack(j, "{s:o, s:s, s:s, s?s, s?I, s?I, s?s, s?o, s?o, s?b}", "spec", &spec_j,
                        "state", &state, "desired", &desired, "reason", &reason, "created_ms",
                        &created, "changed_ms", &changed, "accel", &accel, "snapshots", &snaps,
                        "history", &hist, "incoming", &incoming) != 0)
    goto out;
  if (nc_vm_spec_from_json(spec_j, &spec) != 0)
    goto out;
  struct vm_entry *e = entry_new(&spec, created);
  nc_vm_spec_clear(&spec);
  if (nc_vm_state_parse(state, &e->state) != 0)
    e->state = NC_VM_FAILED;
  if (nc_vm_state_parse(desired, &e->desired) != 0)
    e->desired = NC_VM_STOPPED;
  snprintf(e->reason, sizeof e->reason, "%s", reason);
  e->changed_ms = changed;
  e->incoming = incoming != 0;
  e->accel = strcmp(accel, "kvm") == 0 ? NC_ACCEL_KVM : NC_ACCEL_TCG;
  if (json_is_array(snaps)) {
    json_decref(e->snapshots);
    e->snapshots = json_deep_copy(snaps);
  }
  if (json_is_array(hist)) {
    json_decref(e->history);
    e->history = json_deep_copy(hist);
  }
  pthread_mutex_lock(&vmm->mu);
  add_locked(vmm, e);
  pthread_mutex_unlock(&vmm->mu);
  rc = 0;
out:
  if (rc)
    nc_error("vm", "ignoring unreadable vm record %s", kv->key);
  json_decref(j);
  return rc;
}

/* Caller holds vmm->mu. Moves e to state `to`, records why, persists and
 * publishes. Refuses transitions outside the lifecycle table. */
static int set_state_locked(struct nc_vmm *vmm, struct vm_entry *e, enum nc_vm_state to,
                            const char *reason) {
  enum nc_vm_state from = e->state;
  if (from == to) {
    if (reason && strcmp(reason, e->reason) != 0) {
      snprintf(e->reason, sizeof e->reason, "%s", reason);
      save_locked(vmm, e);
    }
    return 0;
  }
  if (!nc_vm_transition_valid(from, to)) {
    nc_error("vm", "vm \"%s\": refusing invalid transition %s -> %s (%s)", e->spec.name,
             nc_vm_state_name(from), nc_vm_state_name(to), reason ? reason : "");
    return -EINVAL;
  }
  int64_t now = nc_wall_ms(vmm->cfg.clock);
  e->state = to;
  e->changed_ms = now;
  snprintf(e->reason, sizeof e->reason, "%s", reason ? reason : "");
  json_array_append_new(e->history,
                        json_pack("{s:s, s:s, s:s, s:I}", "from", nc_vm_state_name(from), "to",
                                  nc_vm_state_name(to), "reason", e->reason, "at_ms",
                                  (json_int_t)now));
  while (json_array_size(e->history) > HISTORY_MAX)
    json_array_remove(e->history, 0);
  save_locked(vmm, e);
  nc_info("vm", "vm \"%s\": %s -> %s%s%s", e->spec.name, nc_vm_state_name(from),
          nc_vm_state_name(to), e->reason[0] ? ": " : "", e->reason);
  char at[NC_ISO8601_LEN];
  nc_iso8601(now, at, sizeof at);
  nc_events_publish(vmm->cfg.events, "vm.state",
                    json_pack("{s:s, s:s, s:s, s:s, s:s}", "vm", e->spec.name, "from",
                              nc_vm_state_name(from), "to", nc_vm_state_name(to), "reason",
                              e->reason, "at", at));
  if (vmm->m_transitions) {
    const char *lv[] = {nc_vm_state_name(from), nc_vm_state_name(to)};
    nc_metric_add(vmm->m_transitions, lv, 1);
  }
  return 0;
}

static void set_state(struct nc_vmm *vmm, struct vm_entry *e, enum nc_vm_state to,
                      const char *reason) {
  pthread_mutex_lock(&vmm->mu);
  set_state_locked(vmm, e, to, reason);
  pthread_mutex_unlock(&vmm->mu);
}

static void set_desired(struct nc_vmm *vmm, struct vm_entry *e, enum nc_vm_state d) {
  pthread_mutex_lock(&vmm->mu);
  if (e->desired != d) {
    e->desired = d;
    save_locked(vmm, e);
  }
  pthread_mutex_unlock(&vmm->mu);
}

/* Caller holds vmm->mu. The API form; the transition history only in the
 * single-VM view (it is most of the bytes of a list). */
static json_t *vm_json_locked(struct nc_vmm *vmm, struct vm_entry *e, bool with_history) {
  json_t *j = nc_vm_spec_to_json(&e->spec);
  char c[NC_ISO8601_LEN], ch[NC_ISO8601_LEN], sock[1200], log[1200];
  nc_iso8601(e->created_ms, c, sizeof c);
  nc_iso8601(e->changed_ms, ch, sizeof ch);
  run_file(vmm, e->spec.name, "serial.sock", sock, sizeof sock);
  run_file(vmm, e->spec.name, "serial.log", log, sizeof log);
  json_object_set_new(j, "state", json_string(nc_vm_state_name(e->state)));
  json_object_set_new(j, "desired_state", json_string(nc_vm_state_name(e->desired)));
  json_object_set_new(j, "state_reason", json_string(e->reason));
  json_object_set_new(j, "state_changed_at", json_string(ch));
  json_object_set_new(j, "created_at", json_string(c));
  json_object_set_new(j, "node", json_string(vmm->cfg.node_name));
  json_object_set_new(j, "pid", e->stats_valid && nc_vm_state_has_process(e->state)
                                    ? json_integer(e->stats.pid)
                                    : json_null());
  json_object_set_new(j, "accel", json_string(accel_name(e->accel)));
  json_object_set_new(j, "console", json_pack("{s:s, s:s}", "socket", sock, "log", log));
  json_object_set_new(j, "operation", e->op ? json_string(nc_op_id(e->op)) : json_null());
  json_t *snaps = json_array();
  size_t i;
  json_t *s;
  json_array_foreach(e->snapshots, i, s) {
    char at[NC_ISO8601_LEN];
    nc_iso8601(json_integer_value(json_object_get(s, "created_ms")), at, sizeof at);
    json_array_append_new(snaps, json_pack("{s:O, s:s}", "name", json_object_get(s, "name"),
                                           "created_at", at));
  }
  json_object_set_new(j, "snapshots", snaps);
  if (with_history) {
    json_t *hist = json_array();
    json_array_foreach(e->history, i, s) {
      json_t *h = json_deep_copy(s);
      char at[NC_ISO8601_LEN];
      nc_iso8601(json_integer_value(json_object_get(s, "at_ms")), at, sizeof at);
      json_object_set_new(h, "at", json_string(at));
      json_object_del(h, "at_ms");
      json_array_append_new(hist, h);
    }
    json_object_set_new(j, "history", hist);
  }
  return j;
}

/* ---- files -------------------------------------------------------------- */

static int mkdir_p(const char *path, mode_t mode) {
  char tmp[1024];
  snprintf(tmp, sizeof tmp, "%s", path);
  for (char *p = tmp + 1; *p; p++) {
    if (*p == '/') {
      *p = '\0';
      if (mkdir(tmp, mode) != 0 && errno != EEXIST)
        return -errno;
      *p = '/';
    }
  }
  if (mkdir(tmp, mode) != 0 && errno != EEXIST)
    return -errno;
  return 0;
}

/* The files a VM's directory may hold; delete removes exactly these, so a
 * bug can never turn into an rm -rf. */
static const char *const vm_files[] = {"disk.qcow2",   "qmp.sock",     "serial.sock",
                                       "serial.log",   "qemu.log",     "qemu.pid",
                                       "mig-in.sock",  "mig-out.sock", "mig-nbd.sock",
                                       "mig-nbd-in.sock", NULL};

static void remove_vm_files(struct nc_vmm *vmm, const char *name) {
  char path[1200];
  for (const char *const *f = vm_files; *f; f++) {
    run_file(vmm, name, *f, path, sizeof path);
    if (unlink(path) != 0 && errno != ENOENT)
      nc_warn("vm", "vm \"%s\": cannot remove %s: %s", name, path, strerror(errno));
  }
  run_dir(vmm, name, path, sizeof path);
  if (rmdir(path) != 0 && errno != ENOENT)
    nc_warn("vm", "vm \"%s\": %s is not empty after delete (%s); left in place", name, path,
            strerror(errno));
}

static int copy_file(const char *src, const char *dst) {
  int in = open(src, O_RDONLY | O_CLOEXEC);
  if (in < 0)
    return -errno;
  int out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (out < 0) {
    int rc = -errno;
    close(in);
    return rc;
  }
  int rc = 0;
  for (;;) {
    ssize_t n = copy_file_range(in, NULL, out, NULL, 1 << 24, 0);
    if (n == 0)
      break;
    if (n < 0) {
      rc = -errno;
      break;
    }
  }
  if (rc == 0 && fsync(out) != 0)
    rc = -errno;
  close(in);
  close(out);
  if (rc)
    unlink(dst);
  return rc;
}

static void log_tail(const char *path, char *out, size_t len) {
  out[0] = '\0';
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return;
  off_t end = lseek(fd, 0, SEEK_END);
  off_t start = end > (off_t)len - 1 ? end - (off_t)len + 1 : 0;
  ssize_t n = pread(fd, out, len - 1, start);
  close(fd);
  if (n <= 0)
    return;
  out[n] = '\0';
  for (ssize_t i = 0; i < n; i++)
    if (out[i] == '\n' || out[i] == '\r')
      out[i] = ' ';
}

/* ---- hypervisor helpers (caller holds e->hv_mu) -------------------------- */

static void spec_for_hv(struct nc_vmm *vmm, struct vm_entry *e, const struct nc_image *img,
                        struct nc_hv_spec *hs, char *dir, size_t dlen, char *disk, size_t disklen,
                        char *cmdline, size_t clen) {
  run_dir(vmm, e->spec.name, dir, dlen);
  run_file(vmm, e->spec.name, "disk.qcow2", disk, disklen);
  memset(hs, 0, sizeof *hs);
  hs->name = e->spec.name;
  hs->run_dir = dir;
  hs->vcpus = e->spec.vcpus;
  hs->memory_bytes = e->spec.memory_bytes;
  hs->nic_user = e->spec.nic == NC_NIC_USER;
  hs->accel = e->accel;
  hs->machine = e->spec.machine[0] ? e->spec.machine : NULL;
  if (img) {
    snprintf(cmdline, clen, "%s%s%s", img->cmdline, e->spec.cmdline_append[0] ? " " : "",
             e->spec.cmdline_append);
    hs->kernel = img->kernel[0] ? img->kernel : NULL;
    hs->initrd = img->initrd[0] ? img->initrd : NULL;
    hs->cmdline = cmdline;
    hs->disk = img->disk[0] ? disk : NULL;
  }
}

static enum nc_vm_state map_hv_state(enum nc_hv_state s) {
  switch (s) {
  case NC_HV_RUNNING:
    return NC_VM_RUNNING;
  case NC_HV_PAUSED:
  case NC_HV_INMIGRATE:
  case NC_HV_OTHER:
    return NC_VM_PAUSED;
  default:
    return NC_VM_STOPPED;
  }
}

/* Caller holds e->hv_mu. Ends the process and drops the handle. */
static void hv_kill_locked(struct nc_vmm *vmm, struct vm_entry *e) {
  if (!e->hv)
    return;
  int rc = vmm->cfg.hv->ops->kill(e->hv); /* frees the handle, whatever it returns */
  if (rc)
    nc_warn("vm", "vm \"%s\": kill: %s", e->spec.name, nc_strerror(rc));
  e->hv = NULL;
  e->stats_valid = false;
}

/* ---- operations --------------------------------------------------------- */

struct op_ctx {
  struct nc_vmm *vmm;
  struct vm_entry *e;
  struct vm_entry *e2; /* clone target */
  struct nc_op *op;
  enum nc_vm_action action;
  bool force;
  bool start_after;
  int timeout_ms;
  char snap[NC_NAME_MAX + 1];
  enum nc_vm_state prev_state;
};

static int do_start(struct op_ctx *c, struct vm_entry *e, struct nc_errinfo *err);

static int do_stop(struct op_ctx *c, struct nc_errinfo *err) {
  struct nc_vmm *vmm = c->vmm;
  struct vm_entry *e = c->e;
  set_desired(vmm, e, NC_VM_STOPPED);
  pthread_mutex_lock(&vmm->mu);
  if (e->state != NC_VM_FAILED) /* a failed VM goes straight to stopped */
    set_state_locked(vmm, e, NC_VM_STOPPING,
                     c->force ? "forced stop requested" : "stop requested");
  pthread_mutex_unlock(&vmm->mu);
  nc_op_running(c->op, c->force ? "killing the hypervisor" : "asking the guest to power off");
  pthread_mutex_lock(&e->hv_mu);
  int rc = 0;
  if (e->hv) {
    if (c->force) {
      hv_kill_locked(vmm, e);
    } else {
      rc = vmm->cfg.hv->ops->shutdown(e->hv, c->timeout_ms);
      if (rc)
        nc_warn("vm", "vm \"%s\": graceful shutdown: %s; killing", e->spec.name,
                nc_strerror(rc));
      hv_kill_locked(vmm, e); /* no-op for the process if it is gone; frees the handle */
      rc = 0;
    }
  }
  pthread_mutex_unlock(&e->hv_mu);
  set_state(vmm, e, NC_VM_STOPPED, c->force ? "stopped (forced)" : "stopped on request");
  (void)err;
  return rc;
}

static int do_start(struct op_ctx *c, struct vm_entry *e, struct nc_errinfo *err) {
  struct nc_vmm *vmm = c->vmm;
  struct nc_image img;
  char dir[1100], disk[1200], cmdline[2100];
  int rc;
  pthread_mutex_lock(&vmm->mu);
  enum nc_vm_state prev = e->state;
  e->accel = vmm->cfg.accel;
  pthread_mutex_unlock(&vmm->mu);
  set_desired(vmm, e, NC_VM_RUNNING);
  nc_op_running(c->op, "preparing");
  rc = nc_image_get(vmm->cfg.store, e->spec.image, &img);
  if (rc) {
    nc_errinfo_set(err, 422, "unprocessable", "image",
                   "vm \"%s\": image \"%s\" is not registered any more (see `novacron image "
                   "list`)",
                   e->spec.name, e->spec.image);
    set_desired(vmm, e, prev == NC_VM_FAILED ? NC_VM_STOPPED : prev);
    return rc;
  }
  set_state(vmm, e, NC_VM_STARTING, "start requested");
  struct nc_hv_spec hs;
  spec_for_hv(vmm, e, &img, &hs, dir, sizeof dir, disk, sizeof disk, cmdline, sizeof cmdline);
  if ((rc = mkdir_p(dir, 0700)) != 0) {
    nc_errinfo_set(err, 500, "internal", NULL, "cannot create %s: %s", dir, nc_strerror(rc));
    goto fail;
  }
  if (hs.disk && access(disk, F_OK) != 0) {
    nc_op_progress(c->op, 0.1, "creating the disk overlay");
    rc = vmm->cfg.disk.create_overlay(vmm->cfg.disk.data, img.disk, disk);
    if (rc) {
      nc_errinfo_set(err, 500, "disk_error", NULL,
                     "vm \"%s\": cannot create disk overlay over %s: %s", e->spec.name, img.disk,
                     nc_strerror(rc));
      goto fail;
    }
  }
  if (nc_op_cancel_requested(c->op)) {
    set_state(vmm, e, NC_VM_STOPPED, "start cancelled");
    set_desired(vmm, e, NC_VM_STOPPED);
    return NC_E_CANCELLED;
  }
  nc_op_progress(c->op, 0.3, "launching the hypervisor");
  pthread_mutex_lock(&e->hv_mu);
  if (e->hv) /* stale handle from a failed VM: make sure nothing is left */
    hv_kill_locked(vmm, e);
  rc = vmm->cfg.hv->ops->launch(vmm->cfg.hv, &hs, &e->hv);
  enum nc_hv_state hst = NC_HV_GONE;
  if (rc == 0)
    rc = vmm->cfg.hv->ops->query(e->hv, &hst);
  if (rc == 0 && e->hv)
    e->stats_valid = vmm->cfg.hv->ops->stats(e->hv, &e->stats) == 0;
  pthread_mutex_unlock(&e->hv_mu);
  if (rc) {
    char logp[1200], tail[400];
    run_file(vmm, e->spec.name, "qemu.log", logp, sizeof logp);
    log_tail(logp, tail, sizeof tail);
    nc_errinfo_set(err, 500, "hypervisor_error", NULL,
                   "vm \"%s\": the hypervisor did not start: %s%s%s", e->spec.name,
                   nc_strerror(rc), tail[0] ? "; qemu said: " : "", tail);
    pthread_mutex_lock(&e->hv_mu);
    hv_kill_locked(vmm, e);
    pthread_mutex_unlock(&e->hv_mu);
    goto fail;
  }
  if (nc_op_cancel_requested(c->op)) {
    pthread_mutex_lock(&e->hv_mu);
    hv_kill_locked(vmm, e);
    pthread_mutex_unlock(&e->hv_mu);
    set_state(vmm, e, NC_VM_STOPPED, "start cancelled");
    set_desired(vmm, e, NC_VM_STOPPED);
    return NC_E_CANCELLED;
  }
  set_state(vmm, e, map_hv_state(hst) == NC_VM_PAUSED ? NC_VM_PAUSED : NC_VM_RUNNING,
            "hypervisor started");
  return 0;
fail:
  set_state(vmm, e, NC_VM_FAILED, err->message);
  return rc ? rc : NC_E_HV;
}

/* Runs fn on the VM's hypervisor under hv_mu; reports a missing process. */
static int with_hv(struct op_ctx *c, int (*fn)(struct op_ctx *c, struct nc_errinfo *err),
                   struct nc_errinfo *err) {
  pthread_mutex_lock(&c->e->hv_mu);
  int rc;
  if (!c->e->hv)
    rc = nc_errinfo_set(err, 409, "conflict", NULL,
                        "vm \"%s\" has no running hypervisor process", c->e->spec.name);
  else
    rc = fn(c, err);
  pthread_mutex_unlock(&c->e->hv_mu);
  return rc;
}

static int hv_fail(struct op_ctx *c, int rc, const char *what, struct nc_errinfo *err) {
  if (rc)
    nc_errinfo_set(err, 500, "hypervisor_error", NULL, "vm \"%s\": %s failed: %s",
                   c->e->spec.name, what, nc_strerror(rc));
  return rc;
}

static int fn_pause(struct op_ctx *c, struct nc_errinfo *err) {
  return hv_fail(c, c->vmm->cfg.hv->ops->pause(c->e->hv), "pause", err);
}
static int fn_resume(struct op_ctx *c, struct nc_errinfo *err) {
  return hv_fail(c, c->vmm->cfg.hv->ops->resume(c->e->hv), "resume", err);
}
static int fn_reboot(struct op_ctx *c, struct nc_errinfo *err) {
  return hv_fail(c, c->vmm->cfg.hv->ops->reboot(c->e->hv), "reboot", err);
}
static int fn_snap_save(struct op_ctx *c, struct nc_errinfo *err) {
  return hv_fail(c, c->vmm->cfg.hv->ops->snapshot_save(c->e->hv, c->snap, SNAPSHOT_TIMEOUT_MS),
                 "snapshot", err);
}
static int fn_snap_load(struct op_ctx *c, struct nc_errinfo *err) {
  return hv_fail(c, c->vmm->cfg.hv->ops->snapshot_load(c->e->hv, c->snap, SNAPSHOT_TIMEOUT_MS),
                 "restore", err);
}
static int fn_snap_delete(struct op_ctx *c, struct nc_errinfo *err) {
  return hv_fail(c,
                 c->vmm->cfg.hv->ops->snapshot_delete(c->e->hv, c->snap, SNAPSHOT_TIMEOUT_MS),
                 "snapshot delete", err);
}

/* Re-reads the hypervisor's run state into the record after an action. */
static void refresh_state(struct op_ctx *c, const char *reason) {
  enum nc_hv_state hst = NC_HV_GONE;
  pthread_mutex_lock(&c->e->hv_mu);
  int rc = c->e->hv ? c->vmm->cfg.hv->ops->query(c->e->hv, &hst) : -ESRCH;
  pthread_mutex_unlock(&c->e->hv_mu);
  if (rc == 0 && hst != NC_HV_GONE && hst != NC_HV_SHUTDOWN)
    set_state(c->vmm, c->e, map_hv_state(hst), reason);
}

static int snap_index(json_t *snaps, const char *name) {
  size_t i;
  json_t *s;
  json_array_foreach(snaps, i, s) {
    if (strcmp(json_string_value(json_object_get(s, "name")), name) == 0)
      return (int)i;
  }
  return -1;
}

static int do_delete(struct op_ctx *c, struct nc_errinfo *err) {
  struct nc_vmm *vmm = c->vmm;
  struct vm_entry *e = c->e;
  nc_op_running(c->op, "removing the vm");
  pthread_mutex_lock(&e->hv_mu);
  hv_kill_locked(vmm, e);
  pthread_mutex_unlock(&e->hv_mu);
  remove_vm_files(vmm, e->spec.name);
  char key[128];
  snprintf(key, sizeof key, VMS_PREFIX "%s", e->spec.name);
  int rc = nc_store_delete(vmm->cfg.store, key, NULL);
  if (rc) {
    nc_errinfo_set(err, 500, "internal", NULL, "vm \"%s\": cannot delete its record: %s",
                   e->spec.name, nc_strerror(rc));
    return rc;
  }
  nc_info("vm", "vm \"%s\": deleted", e->spec.name);
  nc_events_publish(vmm->cfg.events, "vm.deleted", json_pack("{s:s}", "vm", e->spec.name));
  pthread_mutex_lock(&vmm->mu);
  remove_locked(vmm, e);
  pthread_mutex_unlock(&vmm->mu);
  return 0;
}

static int do_clone(struct op_ctx *c, struct nc_errinfo *err) {
  struct nc_vmm *vmm = c->vmm;
  char src[1200], dst[1200], dir[1100];
  nc_op_running(c->op, "copying the disk");
  run_file(vmm, c->e->spec.name, "disk.qcow2", src, sizeof src);
  run_file(vmm, c->e2->spec.name, "disk.qcow2", dst, sizeof dst);
  run_dir(vmm, c->e2->spec.name, dir, sizeof dir);
  int rc = mkdir_p(dir, 0700);
  if (rc == 0 && access(src, F_OK) == 0)
    rc = copy_file(src, dst);
  if (rc) {
    nc_errinfo_set(err, 500, "disk_error", NULL, "clone \"%s\": cannot copy the disk: %s",
                   c->e2->spec.name, nc_strerror(rc));
    remove_vm_files(vmm, c->e2->spec.name);
    char key[128];
    snprintf(key, sizeof key, VMS_PREFIX "%s", c->e2->spec.name);
    nc_store_delete(vmm->cfg.store, key, NULL);
    pthread_mutex_lock(&vmm->mu);
    remove_locked(vmm, c->e2);
    pthread_mutex_unlock(&vmm->mu);
    return rc;
  }
  nc_op_progress(c->op, 0.6, "disk copied");
  if (c->start_after)
    return do_start(c, c->e2, err);
  return 0;
}

static int run_action(struct op_ctx *c, struct nc_errinfo *err) {
  struct nc_vmm *vmm = c->vmm;
  int rc;
  switch (c->action) {
  case NC_ACT_START:
    return do_start(c, c->e, err);
  case NC_ACT_STOP:
    return do_stop(c, err);
  case NC_ACT_PAUSE:
    nc_op_running(c->op, "pausing");
    set_desired(vmm, c->e, NC_VM_PAUSED);
    if ((rc = with_hv(c, fn_pause, err)) == 0)
      set_state(vmm, c->e, NC_VM_PAUSED, "paused on request");
    return rc;
  case NC_ACT_RESUME:
    nc_op_running(c->op, "resuming");
    set_desired(vmm, c->e, NC_VM_RUNNING);
    if ((rc = with_hv(c, fn_resume, err)) == 0)
      set_state(vmm, c->e, NC_VM_RUNNING, "resumed on request");
    return rc;
  case NC_ACT_REBOOT:
    nc_op_running(c->op, "resetting");
    return with_hv(c, fn_reboot, err);
  case NC_ACT_DELETE:
    return do_delete(c, err);
  case NC_ACT_SNAPSHOT:
    nc_op_running(c->op, "saving memory and disk");
    rc = with_hv(c, fn_snap_save, err);
    if (rc == 0) {
      pthread_mutex_lock(&vmm->mu);
      json_array_append_new(c->e->snapshots,
                            json_pack("{s:s, s:I}", "name", c->snap, "created_ms",
                                      (json_int_t)nc_wall_ms(vmm->cfg.clock)));
      save_locked(vmm, c->e);
      pthread_mutex_unlock(&vmm->mu);
    }
    refresh_state(c, "snapshot taken");
    return rc;
  case NC_ACT_RESTORE:
    nc_op_running(c->op, "loading memory and disk");
    rc = with_hv(c, fn_snap_load, err);
    refresh_state(c, rc == 0 ? "restored from snapshot" : "restore failed");
    return rc;
  case NC_ACT_SNAPSHOT_DELETE:
    nc_op_running(c->op, "deleting the snapshot");
    rc = with_hv(c, fn_snap_delete, err);
    if (rc == 0) {
      pthread_mutex_lock(&vmm->mu);
      int i = snap_index(c->e->snapshots, c->snap);
      if (i >= 0)
        json_array_remove(c->e->snapshots, (size_t)i);
      save_locked(vmm, c->e);
      pthread_mutex_unlock(&vmm->mu);
    }
    return rc;
  case NC_ACT_CLONE:
    return do_clone(c, err);
  default:
    return -EINVAL;
  }
}

static void *op_thread(void *arg) {
  struct op_ctx *c = arg;
  struct nc_vmm *vmm = c->vmm;
  struct nc_errinfo err = {0};
  int rc = run_action(c, &err);
  if (rc && rc != NC_E_CANCELLED)
    nc_warn("vm", "%s %s: %s", nc_vm_action_name(c->action), c->e->spec.name,
            err.message[0] ? err.message : nc_strerror(rc));
  pthread_mutex_lock(&vmm->mu);
  if (c->e->op == c->op)
    c->e->op = NULL;
  if (c->e2 && c->e2->op == c->op)
    c->e2->op = NULL;
  vmm->version++;
  pthread_mutex_unlock(&vmm->mu);
  nc_op_finish(c->op, rc, &err);
  pthread_mutex_lock(&vmm->mu);
  nc_op_unref(c->op); /* the entry's reference */
  if (c->e2) {
    nc_op_unref(c->op);
    entry_unref_locked(vmm, c->e2);
  }
  entry_unref_locked(vmm, c->e);
  vmm->running_ops--;
  pthread_cond_broadcast(&vmm->cv);
  pthread_mutex_unlock(&vmm->mu);
  nc_op_unref(c->op); /* the thread's */
  free(c);
  return NULL;
}

/* Caller holds vmm->mu. Checks that e can take `action` now, creates the
 * operation and starts its thread. On success *out is {"operation": OP}. */
/* Caller holds vmm->mu. May e take `action` now? */
static int check_claim_locked(struct nc_vmm *vmm, struct vm_entry *e, enum nc_vm_action action,
                              struct nc_errinfo *err) {
  if (vmm->stopping)
    return nc_errinfo_set(err, 503, "unavailable", NULL, "novacrond is shutting down");
  if (e->op)
    return nc_errinfo_set(err, 409, "conflict", NULL,
                          "vm \"%s\" is busy with operation %s; wait for it or cancel it "
                          "(novacron op cancel %s)",
                          e->spec.name, nc_op_id(e->op), nc_op_id(e->op));
  if (!nc_vm_action_allowed(action, e->state))
    return nc_errinfo_set(err, 409, "conflict", NULL, "cannot %s vm \"%s\" while it is %s: %s",
                          nc_vm_action_name(action), e->spec.name, nc_vm_state_name(e->state),
                          nc_vm_action_hint(action, e->state));
  if (vmm->running_ops >= vmm->cfg.max_running_ops)
    return nc_errinfo_set(err, 503, "unavailable", NULL,
                          "too many operations in flight (%d); retry shortly",
                          vmm->running_ops);
  return 0;
}

static int begin_op_locked(struct nc_vmm *vmm, struct op_ctx *tmpl, const char *kind,
                           bool cancellable, json_t **out, struct nc_errinfo *err) {
  struct vm_entry *e = tmpl->e;
  int rc0 = check_claim_locked(vmm, e, tmpl->action, err);
  if (rc0)
    return rc0;
  struct nc_op *op;
  int rc = nc_ops_create(vmm->cfg.ops, kind, e->spec.name, &op);
  if (rc)
    return nc_errinfo_set(err, 500, "internal", NULL, "cannot create operation: %s",
                          nc_strerror(rc));
  nc_op_set_cancellable(op, cancellable);
  struct op_ctx *c = malloc(sizeof *c);
  if (!c)
    abort();
  *c = *tmpl;
  c->vmm = vmm;
  c->op = op;
  c->prev_state = e->state;
  /* References: the one from nc_ops_create is the thread's; e->op holds
   * another, and a clone target's e2->op a third. */
  e->op = op;
  vmm->version++;
  e->refs++;
  nc_op_ref(op);
  if (c->e2) {
    c->e2->op = op;
    vmm->version++;
    c->e2->refs++;
    nc_op_ref(op);
  }
  json_t *opj = nc_op_to_json(op);
  pthread_t t;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  vmm->running_ops++;
  rc = pthread_create(&t, &attr, op_thread, c);
  pthread_attr_destroy(&attr);
  if (rc) {
    vmm->running_ops--;
    e->op = NULL;
    vmm->version++;
    e->refs--;
    nc_op_unref(op);
    if (c->e2) {
      c->e2->op = NULL;
      vmm->version++;
      c->e2->refs--;
      nc_op_unref(op);
    }
    free(c);
    nc_op_finish(op, -rc, NULL);
    nc_op_unref(op);
    json_decref(opj);
    return nc_errinfo_set(err, 503, "unavailable", NULL, "cannot start a worker thread");
  }
  *out = json_pack("{s:o}", "operation", opj);
  return 0;
}

/* ---- public API --------------------------------------------------------- */

static int not_found(const char *name, struct nc_errinfo *err) {
  char ex[NC_EXCERPT_LEN];
  return nc_errinfo_set(err, 404, "not_found", NULL,
                        "vm \"%s\" does not exist (see `novacron vm list`)",
                        nc_excerpt(name, ex, sizeof ex));
}

/* The machine types of this node's hypervisor into *out: 0, -ENOTSUP for
 * a driver without them (the noop driver, a version 1 driver), another
 * error when it could not tell now (the driver logged why). */
static int hv_machines(struct nc_vmm *vmm, const struct nc_hv_machines **out) {
  const struct nc_hv_ops *ops = vmm->cfg.hv->ops;
  *out = NULL;
  if (ops->version < 2 || !ops->machines)
    return -ENOTSUP;
  return ops->machines(vmm->cfg.hv, out);
}

/* Pins spec->machine at creation: the versioned type that the type asked
 * for ("" asks for "pc") resolves to on this node's QEMU, so the guest
 * keeps its hardware when QEMU is upgraded and can migrate to a node with
 * another release. When QEMU cannot be asked, the VM runs the type as
 * given, unpinned, as before machine types were pinned; a create never
 * fails for that. A type QEMU does not list is 422 if the user asked for
 * it. */
static int pin_machine(struct nc_vmm *vmm, struct nc_vm_spec *spec, struct nc_errinfo *err) {
  bool asked = spec->machine[0] != '\0';
  char want[NC_VM_MACHINE_MAX + 1];
  snprintf(want, sizeof want, "%s", asked ? spec->machine : "pc");
  snprintf(spec->machine, sizeof spec->machine, "%s", want);
  const struct nc_hv_machines *ms;
  int rc = hv_machines(vmm, &ms);
  if (rc == -ENOTSUP)
    return 0;
  if (rc) {
    nc_warn("vm", "vm \"%s\": the hypervisor's machine types are unknown (%s); it gets machine "
            "\"%s\" unpinned, so its virtual hardware follows QEMU upgrades",
            spec->name, nc_strerror(rc), want);
    return 0;
  }
  if (!nc_hv_machine_usable(ms, want)) {
    if (!asked) {
      nc_warn("vm", "vm \"%s\": this node's QEMU lists no PC machine behind \"pc\"; it gets "
              "\"pc\" unpinned", spec->name);
      return 0;
    }
    char list[360];
    nc_hv_machines_format(ms, list, sizeof list);
    return nc_errinfo_set(err, 422, "unprocessable", "machine",
                          "vm \"%s\": machine \"%s\" is not one this node's QEMU can run; it "
                          "supports %s",
                          spec->name, want, list);
  }
  snprintf(spec->machine, sizeof spec->machine, "%s", nc_hv_machines_resolve(ms, want));
  return 0;
}

/* An incoming migration: the destination's QEMU must run the VM's machine
 * type, or the stream cannot load (QEMU's migration format is only
 * compatible between equal machine types, docs/devel/migration/
 * compatibility.rst in QEMU). Refused before anything is created. When
 * the types cannot be listed, the launch itself will tell. */
static int check_incoming_machine(struct nc_vmm *vmm, const struct nc_vm_spec *spec,
                                  struct nc_errinfo *err) {
  const struct nc_hv_machines *ms;
  int rc = hv_machines(vmm, &ms);
  if (rc) {
    if (rc != -ENOTSUP)
      nc_warn("vm", "vm \"%s\": cannot check that this node's QEMU has machine \"%s\" (%s); "
              "trying the migration anyway", spec->name, spec->machine, nc_strerror(rc));
    return 0;
  }
  if (nc_hv_machines_resolve(ms, spec->machine))
    return 0;
  const char *newest = nc_hv_machines_resolve(ms, "pc");
  return nc_errinfo_set(err, 409, "machine_unsupported", "vm.machine",
                        "vm \"%s\" runs machine type \"%s\", which this node's QEMU does not "
                        "support: its QEMU is older than the source's (its newest PC type is "
                        "%s). Upgrade QEMU on this node, or migrate to a node whose QEMU is at "
                        "least as new as the source's",
                        spec->name, spec->machine, newest ? newest : "unknown");
}

int nc_vmm_create(struct nc_vmm *vmm, json_t *req, json_t **out, struct nc_errinfo *err) {
  struct nc_vm_spec spec;
  bool start;
  int rc = nc_vm_spec_from_request(req, &spec, &start, err);
  if (rc)
    return rc;
  struct nc_image img;
  if (nc_image_get(vmm->cfg.store, spec.image, &img) != 0) {
    rc = nc_errinfo_set(err, 422, "unprocessable", "image",
                        "vm \"%s\": image \"%s\" is not registered (see `novacron image list`)",
                        spec.name, spec.image);
    nc_vm_spec_clear(&spec);
    return rc;
  }
  if ((rc = pin_machine(vmm, &spec, err)) != 0) {
    nc_vm_spec_clear(&spec);
    return rc;
  }
  struct sysinfo si;
  if (sysinfo(&si) == 0 && spec.memory_bytes > (uint64_t)si.totalram * si.mem_unit) {
    char want[32], have[32];
    nc_size_format(spec.memory_bytes, want, sizeof want);
    nc_size_format((uint64_t)si.totalram * si.mem_unit & ~((1ULL << 20) - 1), have, sizeof have);
    rc = nc_errinfo_set(err, 422, "unprocessable", "memory",
                        "vm \"%s\": memory %s is more than this node has (%s)", spec.name, want,
                        have);
    nc_vm_spec_clear(&spec);
    return rc;
  }
  char sock[1200];
  run_file(vmm, spec.name, "serial.sock", sock, sizeof sock);
  if (strlen(sock) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
    rc = nc_errinfo_set(err, 422, "unprocessable", "name",
                        "vm \"%s\": the path %s is too long for a unix socket; use a shorter "
                        "name or data directory",
                        spec.name, sock);
    nc_vm_spec_clear(&spec);
    return rc;
  }
  pthread_mutex_lock(&vmm->mu);
  if (start && (vmm->stopping || vmm->running_ops >= vmm->cfg.max_running_ops)) {
    pthread_mutex_unlock(&vmm->mu);
    rc = nc_errinfo_set(err, 503, "unavailable", NULL,
                        "too many operations in flight to start vm \"%s\"; retry shortly",
                        spec.name);
    nc_vm_spec_clear(&spec);
    return rc;
  }
  if (find_locked(vmm, spec.name)) {
    pthread_mutex_unlock(&vmm->mu);
    rc = nc_errinfo_set(err, 409, "conflict", "name",
                        "vm \"%s\" already exists (pick another name or delete it first)",
                        spec.name);
    nc_vm_spec_clear(&spec);
    return rc;
  }
  struct vm_entry *e = entry_new(&spec, nc_wall_ms(vmm->cfg.clock));
  nc_vm_spec_clear(&spec);
  e->accel = vmm->cfg.accel;
  e->desired = start ? NC_VM_RUNNING : NC_VM_STOPPED;
  rc = save_locked(vmm, e);
  if (rc) {
    entry_unref_locked(vmm, e);
    pthread_mutex_unlock(&vmm->mu);
    return nc_errinfo_set(err, 500, "internal", NULL, "cannot record the vm: %s",
                          nc_strerror(rc));
  }
  add_locked(vmm, e);
  nc_info("vm", "vm \"%s\": defined (%d vcpu, %llu MiB, image %s, machine %s)", e->spec.name,
          e->spec.vcpus, (unsigned long long)(e->spec.memory_bytes >> 20), e->spec.image,
          e->spec.machine);
  nc_events_publish(vmm->cfg.events, "vm.created", json_pack("{s:s}", "vm", e->spec.name));
  json_t *opj = json_null();
  if (start) {
    struct op_ctx t = {.e = e, .action = NC_ACT_START};
    json_t *o = NULL;
    struct nc_errinfo serr;
    if (begin_op_locked(vmm, &t, "vm.start", true, &o, &serr) == 0) {
      opj = json_incref(json_object_get(o, "operation"));
      json_decref(o);
    } else {
      nc_warn("vm", "vm \"%s\": defined but not started: %s", e->spec.name, serr.message);
    }
  }
  *out = json_pack("{s:o, s:o}", "vm", vm_json_locked(vmm, e, true), "operation", opj);
  pthread_mutex_unlock(&vmm->mu);
  return 0;
}

int nc_vmm_get(struct nc_vmm *vmm, const char *name, json_t **out, struct nc_errinfo *err) {
  pthread_mutex_lock(&vmm->mu);
  struct vm_entry *e = find_locked(vmm, name);
  if (e)
    *out = vm_json_locked(vmm, e, true);
  pthread_mutex_unlock(&vmm->mu);
  return e ? 0 : not_found(name, err);
}

int nc_vmm_list_text(struct nc_vmm *vmm, char **text, size_t *len) {
  pthread_mutex_lock(&vmm->mu);
  if (!vmm->list_text || vmm->list_version != vmm->version) {
    json_t *arr = json_array();
    for (size_t i = 0; i < vmm->n; i++)
      json_array_append_new(arr, vm_json_locked(vmm, vmm->vms[i], false));
    json_t *j = json_pack("{s:o}", "vms", arr);
    char *t = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!t) {
      pthread_mutex_unlock(&vmm->mu);
      return -ENOMEM;
    }
    free(vmm->list_text);
    vmm->list_text = t;
    vmm->list_len = strlen(t);
    vmm->list_version = vmm->version;
  }
  *text = malloc(vmm->list_len + 2);
  if (*text) {
    memcpy(*text, vmm->list_text, vmm->list_len);
    (*text)[vmm->list_len] = '\n';
    (*text)[vmm->list_len + 1] = '\0';
    *len = vmm->list_len + 1;
  }
  pthread_mutex_unlock(&vmm->mu);
  return *text ? 0 : -ENOMEM;
}

json_t *nc_vmm_list(struct nc_vmm *vmm) {
  json_t *arr = json_array();
  pthread_mutex_lock(&vmm->mu);
  for (size_t i = 0; i < vmm->n; i++)
    json_array_append_new(arr, vm_json_locked(vmm, vmm->vms[i], false));
  pthread_mutex_unlock(&vmm->mu);
  return json_pack("{s:o}", "vms", arr);
}

static int parse_stop_body(struct nc_vmm *vmm, json_t *body, struct op_ctx *t,
                           struct nc_errinfo *err) {
  static const char *const allowed[] = {"force", "timeout_s", NULL};
  t->timeout_ms = vmm->cfg.stop_timeout_ms;
  if (!body)
    return 0;
  if (!json_is_object(body))
    return nc_errinfo_set(err, 400, "bad_json", NULL, "the request body must be a JSON object");
  int rc = nc_json_check_fields(body, allowed, "stop", err);
  if (rc)
    return rc;
  json_t *f = json_object_get(body, "force");
  if (f) {
    if (!json_is_boolean(f))
      return nc_errinfo_set(err, 400, "invalid_field", "force", "force must be true or false");
    t->force = json_is_true(f);
  }
  json_t *to = json_object_get(body, "timeout_s");
  if (to) {
    if (!json_is_integer(to) || json_integer_value(to) < 1 || json_integer_value(to) > 3600)
      return nc_errinfo_set(err, 400, "invalid_field", "timeout_s",
                            "timeout_s must be an integer from 1 to 3600 seconds");
    t->timeout_ms = (int)json_integer_value(to) * 1000;
  }
  return 0;
}

static int no_body(json_t *body, const char *what, struct nc_errinfo *err) {
  static const char *const none[] = {NULL};
  if (!body)
    return 0;
  if (!json_is_object(body))
    return nc_errinfo_set(err, 400, "bad_json", NULL, "the request body must be a JSON object");
  return nc_json_check_fields(body, none, what, err);
}

int nc_vmm_action(struct nc_vmm *vmm, const char *name, enum nc_vm_action action, json_t *body,
                  json_t **out, struct nc_errinfo *err) {
  struct op_ctx t = {.action = action};
  if (!(action == NC_ACT_START || action == NC_ACT_STOP || action == NC_ACT_PAUSE ||
        action == NC_ACT_RESUME || action == NC_ACT_REBOOT || action == NC_ACT_DELETE))
    return nc_errinfo_set(err, 404, "not_found", NULL,
                          "%s is not a plain vm action (it has its own route)",
                          nc_vm_action_name(action));
  int rc = action == NC_ACT_STOP ? parse_stop_body(vmm, body, &t, err)
                                 : no_body(body, nc_vm_action_name(action), err);
  if (rc)
    return rc;
  char kind[32];
  snprintf(kind, sizeof kind, "vm.%s", nc_vm_action_name(action));
  pthread_mutex_lock(&vmm->mu);
  t.e = find_locked(vmm, name);
  rc = t.e ? begin_op_locked(vmm, &t, kind, action == NC_ACT_START, out, err)
           : not_found(name, err);
  pthread_mutex_unlock(&vmm->mu);
  return rc;
}

int nc_vmm_snapshot_list(struct nc_vmm *vmm, const char *name, json_t **out,
                         struct nc_errinfo *err) {
  json_t *vm;
  int rc = nc_vmm_get(vmm, name, &vm, err);
  if (rc)
    return rc;
  *out = json_pack("{s:O}", "snapshots", json_object_get(vm, "snapshots"));
  json_decref(vm);
  return 0;
}

int nc_vmm_snapshot_create(struct nc_vmm *vmm, const char *name, json_t *body, json_t **out,
                           struct nc_errinfo *err) {
  static const char *const allowed[] = {"name", NULL};
  if (!json_is_object(body))
    return nc_errinfo_set(err, 400, "bad_json", NULL,
                          "the request body must be a JSON object like {\"name\": \"s1\"}");
  int rc = nc_json_check_fields(body, allowed, "snapshot", err);
  if (rc)
    return rc;
  json_t *n = json_object_get(body, "name");
  if (!n)
    return nc_errinfo_set(err, 400, "missing_field", "name", "field \"name\" is required");
  if (!json_is_string(n))
    return nc_errinfo_set(err, 400, "invalid_field", "name", "name must be a string");
  if ((rc = nc_name_check("snapshot", "name", json_string_value(n), err)))
    return rc;
  struct op_ctx t = {.action = NC_ACT_SNAPSHOT};
  snprintf(t.snap, sizeof t.snap, "%s", json_string_value(n));
  pthread_mutex_lock(&vmm->mu);
  t.e = find_locked(vmm, name);
  if (!t.e)
    rc = not_found(name, err);
  else if (snap_index(t.e->snapshots, t.snap) >= 0)
    rc = nc_errinfo_set(err, 409, "conflict", "name",
                        "vm \"%s\" already has a snapshot \"%s\"", name, t.snap);
  else if (json_array_size(t.e->snapshots) >= SNAPSHOTS_MAX)
    rc = nc_errinfo_set(err, 409, "conflict", "name",
                        "vm \"%s\" has %d snapshots, the limit; delete one first", name,
                        SNAPSHOTS_MAX);
  else
    rc = begin_op_locked(vmm, &t, "vm.snapshot", false, out, err);
  pthread_mutex_unlock(&vmm->mu);
  return rc;
}

static int snapshot_op(struct nc_vmm *vmm, const char *name, const char *snap, bool del,
                       json_t **out, struct nc_errinfo *err) {
  struct op_ctx t = {.action = del ? NC_ACT_SNAPSHOT_DELETE : NC_ACT_RESTORE};
  snprintf(t.snap, sizeof t.snap, "%.63s", snap);
  int rc;
  char ex[NC_EXCERPT_LEN];
  pthread_mutex_lock(&vmm->mu);
  t.e = find_locked(vmm, name);
  if (!t.e)
    rc = not_found(name, err);
  else if (!nc_name_valid(snap) || snap_index(t.e->snapshots, snap) < 0)
    rc = nc_errinfo_set(err, 404, "not_found", NULL,
                        "vm \"%s\" has no snapshot \"%s\" (see `novacron vm snapshots %s`)",
                        name, nc_excerpt(snap, ex, sizeof ex), name);
  else
    rc = begin_op_locked(vmm, &t, del ? "vm.snapshot-delete" : "vm.restore", false, out, err);
  pthread_mutex_unlock(&vmm->mu);
  return rc;
}

int nc_vmm_snapshot_restore(struct nc_vmm *vmm, const char *name, const char *snap,
                            json_t **out, struct nc_errinfo *err) {
  return snapshot_op(vmm, name, snap, false, out, err);
}

int nc_vmm_snapshot_delete(struct nc_vmm *vmm, const char *name, const char *snap,
                           json_t **out, struct nc_errinfo *err) {
  return snapshot_op(vmm, name, snap, true, out, err);
}

int nc_vmm_clone(struct nc_vmm *vmm, const char *name, json_t *body, json_t **out,
                 struct nc_errinfo *err) {
  static const char *const allowed[] = {"name", "start", NULL};
  if (!json_is_object(body))
    return nc_errinfo_set(err, 400, "bad_json", NULL,
                          "the request body must be a JSON object like {\"name\": \"web-2\"}");
  int rc = nc_json_check_fields(body, allowed, "clone", err);
  if (rc)
    return rc;
  json_t *n = json_object_get(body, "name"), *st = json_object_get(body, "start");
  if (!n)
    return nc_errinfo_set(err, 400, "missing_field", "name", "field \"name\" is required");
  if (!json_is_string(n))
    return nc_errinfo_set(err, 400, "invalid_field", "name", "name must be a string");
  if ((rc = nc_name_check("vm", "name", json_string_value(n), err)))
    return rc;
  if (st && !json_is_boolean(st))
    return nc_errinfo_set(err, 400, "invalid_field", "start", "start must be true or false");
  const char *newname = json_string_value(n);
  struct op_ctx t = {.action = NC_ACT_CLONE, .start_after = st && json_is_true(st)};
  pthread_mutex_lock(&vmm->mu);
  t.e = find_locked(vmm, name);
  if (!t.e) {
    rc = not_found(name, err);
  } else if (find_locked(vmm, newname)) {
    rc = nc_errinfo_set(err, 409, "conflict", "name", "vm \"%s\" already exists", newname);
  } else if (!nc_vm_action_allowed(NC_ACT_CLONE, t.e->state) ||
             nc_vm_state_has_process(t.e->state)) {
    rc = nc_errinfo_set(err, 409, "conflict", NULL,
                        "vm \"%s\" is %s; stop it before cloning so its disk is consistent",
                        name, nc_vm_state_name(t.e->state));
  } else {
    struct nc_vm_spec spec;
    nc_vm_spec_copy(&spec, &t.e->spec);
    snprintf(spec.name, sizeof spec.name, "%s", newname);
    struct vm_entry *e2 = entry_new(&spec, nc_wall_ms(vmm->cfg.clock));
    nc_vm_spec_clear(&spec);
    e2->accel = vmm->cfg.accel;
    json_decref(e2->snapshots);
    e2->snapshots = json_deep_copy(t.e->snapshots); /* internal snapshots travel in the disk */
    rc = save_locked(vmm, e2);
    if (rc == 0) {
      add_locked(vmm, e2);
      t.e2 = e2;
      rc = begin_op_locked(vmm, &t, "vm.clone", false, out, err);
      if (rc) {
        char key[128];
        snprintf(key, sizeof key, VMS_PREFIX "%s", newname);
        nc_store_delete(vmm->cfg.store, key, NULL);
        remove_locked(vmm, e2);
      }
    } else {
      entry_unref_locked(vmm, e2);
      rc = nc_errinfo_set(err, 500, "internal", NULL, "cannot record the clone: %s",
                          nc_strerror(rc));
    }
  }
  pthread_mutex_unlock(&vmm->mu);
  return rc;
}

int nc_vmm_console_log_path(struct nc_vmm *vmm, const char *name, char *out, size_t len,
                            struct nc_errinfo *err) {
  pthread_mutex_lock(&vmm->mu);
  struct vm_entry *e = find_locked(vmm, name);
  if (e)
    run_file(vmm, name, "serial.log", out, len);
  pthread_mutex_unlock(&vmm->mu);
  return e ? 0 : not_found(name, err);
}

int nc_vmm_image_get(struct nc_vmm *vmm, const char *name, struct nc_image *out) {
  return nc_image_get(vmm->cfg.store, name, out);
}

json_t *nc_vmm_node_json(struct nc_vmm *vmm) {
  struct sysinfo si;
  sysinfo(&si);
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  unsigned counts[NC_VM__COUNT] = {0};
  int64_t vcpus = 0, mem = 0;
  pthread_mutex_lock(&vmm->mu);
  for (size_t i = 0; i < vmm->n; i++) {
    struct vm_entry *e = vmm->vms[i];
    counts[e->state]++;
    if (nc_vm_state_has_process(e->state)) {
      vcpus += e->spec.vcpus;
      mem += (int64_t)e->spec.memory_bytes;
    }
  }
  size_t total = vmm->n;
  enum nc_hv_accel accel = vmm->cfg.accel;
  pthread_mutex_unlock(&vmm->mu);
  json_t *by = json_object();
  for (int s = 0; s < NC_VM__COUNT; s++)
    json_object_set_new(by, nc_vm_state_name((enum nc_vm_state)s), json_integer(counts[s]));
  json_t *j = json_pack("{s:s, s:s, s:s, s:{s:I, s:o}, s:{s:I, s:I}, s:{s:I, s:I}}", "name",
                        vmm->cfg.node_name, "accel", accel_name(accel), "data_dir",
                        vmm->cfg.data_dir, "vms", "total", (json_int_t)total, "by_state", by,
                        "capacity", "vcpus", (json_int_t)cpus, "memory_bytes",
                        (json_int_t)((int64_t)si.totalram * si.mem_unit), "allocated", "vcpus",
                        (json_int_t)vcpus, "memory_bytes", (json_int_t)mem);
  if (j && vmm->cfg.dwcp_tls)
    json_object_set_new(j, "dwcp",
                        json_pack("{s:s, s:s?}", "tls", vmm->cfg.dwcp_tls, "fingerprint",
                                  vmm->cfg.dwcp_fingerprint));
  return j;
}

void nc_vmm_set_accel(struct nc_vmm *vmm, enum nc_hv_accel accel) {
  pthread_mutex_lock(&vmm->mu);
  vmm->cfg.accel = accel;
  pthread_mutex_unlock(&vmm->mu);
}

/* ---- external operations ------------------------------------------------ */

struct nc_vmm_ext {
  struct nc_vmm *vmm;
  struct vm_entry *e;
  struct nc_op *op;
  char run_dir[1100];
};

static struct nc_vmm_ext *ext_new_locked(struct nc_vmm *vmm, struct vm_entry *e,
                                         struct nc_op *op) {
  struct nc_vmm_ext *x = calloc(1, sizeof *x);
  if (!x)
    abort();
  x->vmm = vmm;
  x->e = e;
  x->op = op; /* the reference from nc_ops_create */
  e->op = op;
  vmm->version++;
  nc_op_ref(op); /* e->op's */
  e->refs++;
  vmm->running_ops++;
  run_dir(vmm, e->spec.name, x->run_dir, sizeof x->run_dir);
  return x;
}

int nc_vmm_ext_begin(struct nc_vmm *vmm, const char *name, enum nc_vm_action action,
                     const char *kind, bool cancellable, struct nc_vmm_ext **x, json_t **out,
                     struct nc_errinfo *err) {
  pthread_mutex_lock(&vmm->mu);
  struct vm_entry *e = find_locked(vmm, name);
  int rc = e ? check_claim_locked(vmm, e, action, err) : not_found(name, err);
  struct nc_op *op = NULL;
  if (rc == 0 && (rc = nc_ops_create(vmm->cfg.ops, kind, name, &op)) != 0)
    nc_errinfo_set(err, 500, "internal", NULL, "cannot create operation: %s", nc_strerror(rc));
  if (rc == 0) {
    nc_op_set_cancellable(op, cancellable);
    *x = ext_new_locked(vmm, e, op);
    if (out)
      *out = json_pack("{s:o}", "operation", nc_op_to_json(op));
  }
  pthread_mutex_unlock(&vmm->mu);
  return rc;
}

int nc_vmm_ext_incoming(struct nc_vmm *vmm, json_t *spec_json, const char *kind,
                        struct nc_vmm_ext **xout, struct nc_errinfo *err) {
  struct nc_vm_spec spec;
  if (nc_vm_spec_from_json(spec_json, &spec) != 0)
    return nc_errinfo_set(err, 400, "invalid_field", "vm", "the incoming vm spec is not valid");
  struct nc_image img;
  int rc;
  if (nc_image_get(vmm->cfg.store, spec.image, &img) != 0) {
    rc = nc_errinfo_set(err, 422, "unprocessable", "image",
                        "vm \"%s\": image \"%s\" is not registered on the destination node",
                        spec.name, spec.image);
    nc_vm_spec_clear(&spec);
    return rc;
  }
  if ((rc = check_incoming_machine(vmm, &spec, err)) != 0) {
    nc_vm_spec_clear(&spec);
    return rc;
  }
  pthread_mutex_lock(&vmm->mu);
  if (vmm->stopping || vmm->running_ops >= vmm->cfg.max_running_ops) {
    pthread_mutex_unlock(&vmm->mu);
    nc_vm_spec_clear(&spec);
    return nc_errinfo_set(err, 503, "unavailable", NULL, "the destination is busy; retry");
  }
  if (find_locked(vmm, spec.name)) {
    pthread_mutex_unlock(&vmm->mu);
    rc = nc_errinfo_set(err, 409, "conflict", "name",
                        "vm \"%s\" already exists on the destination node", spec.name);
    nc_vm_spec_clear(&spec);
    return rc;
  }
  struct vm_entry *e = entry_new(&spec, nc_wall_ms(vmm->cfg.clock));
  nc_vm_spec_clear(&spec);
  e->accel = vmm->cfg.accel;
  e->desired = NC_VM_RUNNING;
  e->incoming = true;
  struct nc_op *op;
  if ((rc = nc_ops_create(vmm->cfg.ops, kind, e->spec.name, &op)) != 0) {
    entry_unref_locked(vmm, e);
    pthread_mutex_unlock(&vmm->mu);
    return nc_errinfo_set(err, 500, "internal", NULL, "cannot create operation: %s",
                          nc_strerror(rc));
  }
  add_locked(vmm, e);
  /* defined -> starting -> ... the incoming VM is "migrating" once its
   * hypervisor waits for the stream. */
  set_state_locked(vmm, e, NC_VM_STARTING, "incoming migration");
  struct nc_vmm_ext *x = ext_new_locked(vmm, e, op);
  pthread_mutex_unlock(&vmm->mu);

  char dir[1100], disk[1200], cmdline[2100];
  struct nc_hv_spec hs;
  spec_for_hv(vmm, e, &img, &hs, dir, sizeof dir, disk, sizeof disk, cmdline, sizeof cmdline);
  hs.incoming = "defer";
  if ((rc = mkdir_p(dir, 0700)) != 0) {
    nc_errinfo_set(err, 500, "internal", NULL, "cannot create %s: %s", dir, nc_strerror(rc));
  } else if (hs.disk && access(disk, F_OK) != 0 &&
             (rc = vmm->cfg.disk.create_overlay(vmm->cfg.disk.data, img.disk, disk)) != 0) {
    nc_errinfo_set(err, 500, "disk_error", NULL, "cannot create the disk overlay: %s",
                   nc_strerror(rc));
  } else {
    pthread_mutex_lock(&e->hv_mu);
    rc = vmm->cfg.hv->ops->launch(vmm->cfg.hv, &hs, &e->hv);
    /* As a start does: the record shows the QEMU's pid from now on, not
     * only after the next monitor pass (an API read right after the
     * hand-over saw "pid": null on a running VM). */
    if (rc == 0 && e->hv)
      e->stats_valid = vmm->cfg.hv->ops->stats(e->hv, &e->stats) == 0;
    pthread_mutex_unlock(&e->hv_mu);
    if (rc)
      nc_errinfo_set(err, 500, "hypervisor_error", NULL,
                     "vm \"%s\": the destination hypervisor did not start: %s", e->spec.name,
                     nc_strerror(rc));
  }
  if (rc) {
    nc_vmm_ext_finish(x, rc, err, NC_EXT_REMOVE);
    return rc;
  }
  nc_vmm_ext_set_state(x, NC_VM_PAUSED, "waiting for the incoming migration stream");
  nc_vmm_ext_set_state(x, NC_VM_MIGRATING, "incoming migration");
  *xout = x;
  return 0;
}

struct nc_op *nc_vmm_ext_op(struct nc_vmm_ext *x) { return x->op; }
const char *nc_vmm_ext_name(struct nc_vmm_ext *x) { return x->e->spec.name; }
const char *nc_vmm_ext_run_dir(struct nc_vmm_ext *x) { return x->run_dir; }

json_t *nc_vmm_ext_spec(struct nc_vmm_ext *x) {
  pthread_mutex_lock(&x->vmm->mu);
  json_t *j = nc_vm_spec_to_json(&x->e->spec);
  pthread_mutex_unlock(&x->vmm->mu);
  return j;
}

int nc_vmm_ext_with_hv(struct nc_vmm_ext *x, int (*fn)(struct nc_hv_vm *hv, void *arg),
                       void *arg) {
  pthread_mutex_lock(&x->e->hv_mu);
  int rc = fn(x->e->hv, arg);
  pthread_mutex_unlock(&x->e->hv_mu);
  return rc;
}

int nc_vmm_ext_set_state(struct nc_vmm_ext *x, enum nc_vm_state state, const char *reason) {
  pthread_mutex_lock(&x->vmm->mu);
  if (state == NC_VM_PAUSED && x->e->state == NC_VM_MIGRATING && x->e->incoming) {
    /* The destination takes ownership: recorded before it resumes. */
    x->e->incoming = false;
  }
  int rc = set_state_locked(x->vmm, x->e, state, reason);
  if (rc == 0 && (state == NC_VM_RUNNING || state == NC_VM_PAUSED))
    x->e->desired = state;
  if (rc == 0)
    save_locked(x->vmm, x->e);
  pthread_mutex_unlock(&x->vmm->mu);
  return rc;
}

void nc_vmm_ext_finish(struct nc_vmm_ext *x, int rc, const struct nc_errinfo *err,
                       enum nc_vmm_ext_end end) {
  struct nc_vmm *vmm = x->vmm;
  struct vm_entry *e = x->e;
  if (end == NC_EXT_REMOVE) {
    pthread_mutex_lock(&e->hv_mu);
    hv_kill_locked(vmm, e);
    pthread_mutex_unlock(&e->hv_mu);
    remove_vm_files(vmm, e->spec.name);
    char key[128];
    snprintf(key, sizeof key, VMS_PREFIX "%s", e->spec.name);
    int drc = nc_store_delete(vmm->cfg.store, key, NULL);
    if (drc)
      nc_error("vm", "vm \"%s\": cannot delete its record: %s", e->spec.name, nc_strerror(drc));
    nc_events_publish(vmm->cfg.events, "vm.deleted", json_pack("{s:s}", "vm", e->spec.name));
  }
  pthread_mutex_lock(&vmm->mu);
  if (e->op == x->op)
    e->op = NULL;
  vmm->version++;
  if (end == NC_EXT_REMOVE && !e->removed)
    remove_locked(vmm, e);
  pthread_mutex_unlock(&vmm->mu);
  nc_op_finish(x->op, rc, err);
  pthread_mutex_lock(&vmm->mu);
  nc_op_unref(x->op); /* e->op's */
  entry_unref_locked(vmm, e);
  vmm->running_ops--;
  pthread_cond_broadcast(&vmm->cv);
  pthread_mutex_unlock(&vmm->mu);
  nc_op_unref(x->op);
  free(x);
}

/* ---- reconciler --------------------------------------------------------- */

/* One pass over one idle VM: ask the hypervisor what is true and record
 * it. Never kills a VM that is running. */
static void reconcile_one(struct nc_vmm *vmm, struct vm_entry *e) {
  const struct nc_hv_ops *ops = vmm->cfg.hv->ops;
  /* What we observe below is stale if the state changes meanwhile (an
   * operation that started and ended between the snapshot and the lock
   * further down): then this pass records nothing. */
  pthread_mutex_lock(&vmm->mu);
  int64_t seen_changed = e->changed_ms;
  enum nc_vm_state seen_state = e->state;
  pthread_mutex_unlock(&vmm->mu);
  pthread_mutex_lock(&e->hv_mu);
  struct nc_hv_vm *h = e->hv;
  enum nc_hv_state hst = NC_HV_GONE;
  int rc = h ? ops->query(h, &hst) : -ESRCH;
  if (h && rc != 0) {
    /* QMP unreachable: trust the process table rather than guess. */
    nc_warn("vm", "vm \"%s\": query failed: %s", e->spec.name, nc_strerror(rc));
  }
  if (h && hst != NC_HV_GONE) {
    struct nc_hv_stats st;
    if (ops->stats(h, &st) == 0) {
      e->stats = st;
      e->stats_valid = true;
    }
  }
  bool has_log = h && hst != NC_HV_GONE;
  bool powered_off = h && rc == 0 && hst == NC_HV_SHUTDOWN;
  bool gone = h && hst == NC_HV_GONE && (rc == 0 || rc == -ESRCH);
  if (powered_off || gone) {
    if (powered_off)
      ops->kill(h); /* frees h */
    else
      ops->release(h);
    e->hv = NULL;
    e->stats_valid = false;
  }
  pthread_mutex_unlock(&e->hv_mu);

  pthread_mutex_lock(&vmm->mu);
  if (e->op || e->removed || e->changed_ms != seen_changed || e->state != seen_state) {
    /* an operation started (or came and went) meanwhile: it owns the state */
    pthread_mutex_unlock(&vmm->mu);
    return;
  }
  if (powered_off) {
    e->desired = NC_VM_STOPPED;
    set_state_locked(vmm, e, NC_VM_STOPPED, "the guest powered itself off");
  } else if (gone) {
    set_state_locked(vmm, e, NC_VM_FAILED,
                     "the hypervisor process exited unexpectedly (see qemu.log in the vm's "
                     "directory)");
  } else if (h && rc == 0) {
    enum nc_vm_state obs = map_hv_state(hst);
    if (obs != e->state && (e->state == NC_VM_RUNNING || e->state == NC_VM_PAUSED))
      set_state_locked(vmm, e, obs,
                       obs == NC_VM_PAUSED ? "paused outside novacron (e.g. by QEMU on an I/O "
                                             "error)"
                                           : "resumed outside novacron");
  } else if (!h && nc_vm_state_has_process(e->state)) {
    set_state_locked(vmm, e, NC_VM_FAILED, "no hypervisor process for this vm");
  }
  pthread_mutex_unlock(&vmm->mu);
  if (has_log && !powered_off) { /* a guest that prints for months must not fill the disk */
    char log[1200];
    run_file(vmm, e->spec.name, "serial.log", log, sizeof log);
    int lrc = nc_logcap(log, SERIAL_LOG_CAP);
    if (lrc < 0)
      nc_warn("vm", "vm \"%s\": capping %s: %s", e->spec.name, log, nc_strerror(lrc));
  }
}

static void reconcile_all(struct nc_vmm *vmm) {
  pthread_mutex_lock(&vmm->mu);
  size_t n = vmm->n;
  struct vm_entry **snap = malloc((n ? n : 1) * sizeof *snap);
  if (!snap)
    abort();
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    if (vmm->vms[i]->op)
      continue;
    snap[k++] = vmm->vms[i];
    vmm->vms[i]->refs++;
  }
  pthread_mutex_unlock(&vmm->mu);
  for (size_t i = 0; i < k; i++) {
    reconcile_one(vmm, snap[i]);
    entry_unref(vmm, snap[i]);
  }
  free(snap);
}

static void *reconciler_main(void *arg) {
  struct nc_vmm *vmm = arg;
  pthread_mutex_lock(&vmm->mu);
  while (!vmm->stopping) {
    pthread_mutex_unlock(&vmm->mu);
    reconcile_all(vmm);
    pthread_mutex_lock(&vmm->mu);
    struct timespec dl = nc_deadline(vmm->cfg.reconcile_interval_ms);
    if (!vmm->stopping)
      pthread_cond_timedwait(&vmm->cv, &vmm->mu, &dl);
  }
  pthread_mutex_unlock(&vmm->mu);
  return NULL;
}

/* ---- metrics ------------------------------------------------------------ */

static void collect(struct nc_metrics_writer *w, void *data) {
  struct nc_vmm *vmm = data;
  unsigned counts[NC_VM__COUNT] = {0};
  struct row {
    char name[NC_NAME_MAX + 1];
    struct nc_hv_stats st;
    int vcpus;
  } *rows;
  pthread_mutex_lock(&vmm->mu);
  size_t n = vmm->n, k = 0;
  rows = calloc(n ? n : 1, sizeof *rows);
  if (!rows)
    abort();
  for (size_t i = 0; i < n; i++) {
    struct vm_entry *e = vmm->vms[i];
    counts[e->state]++;
    pthread_mutex_lock(&e->hv_mu);
    if (e->stats_valid && nc_vm_state_has_process(e->state)) {
      snprintf(rows[k].name, sizeof rows[k].name, "%s", e->spec.name);
      rows[k].st = e->stats;
      rows[k].vcpus = e->spec.vcpus;
      k++;
    }
    pthread_mutex_unlock(&e->hv_mu);
  }
  pthread_mutex_unlock(&vmm->mu);

  nc_metrics_write_family(w, "novacron_vms", NC_METRIC_GAUGE, "VMs on this node by state.");
  for (int s = 0; s < NC_VM__COUNT; s++) {
    const char *l[] = {"state", nc_vm_state_name((enum nc_vm_state)s), NULL};
    nc_metrics_write_sample(w, "novacron_vms", l, counts[s]);
  }
  unsigned oc[5];
  nc_ops_counts(vmm->cfg.ops, oc);
  nc_metrics_write_family(w, "novacron_operations", NC_METRIC_GAUGE,
                          "Operations known to this node by status.");
  for (int s = 0; s < 5; s++) {
    const char *l[] = {"status", nc_op_status_name((enum nc_op_status)s), NULL};
    nc_metrics_write_sample(w, "novacron_operations", l, oc[s]);
  }

  /* Per-domain metrics use the names of the libvirt exporter so existing
   * dashboards work unchanged. */
  static const struct {
    const char *name, *help;
    enum nc_metric_type type;
  } fam[] = {
      {"libvirt_domain_info_cpu_time_seconds_total", "Amount of CPU time used by the domain, "
       "in seconds.", NC_METRIC_COUNTER},
      {"libvirt_domain_info_memory_usage_bytes", "Memory usage of the domain, in bytes.",
       NC_METRIC_GAUGE},
      {"libvirt_domain_info_maximum_memory_bytes", "Maximum allowed memory of the domain, in "
       "bytes.", NC_METRIC_GAUGE},
      {"libvirt_domain_info_virtual_cpus", "Number of virtual CPUs for the domain.",
       NC_METRIC_GAUGE},
      {"libvirt_domain_block_stats_read_bytes_total", "Number of bytes read from a block "
       "device, in bytes.", NC_METRIC_COUNTER},
      {"libvirt_domain_block_stats_write_bytes_total", "Number of bytes written to a block "
       "device, in bytes.", NC_METRIC_COUNTER},
      /* libvirt_domain_interface_stats_{receive,transmit}_bytes_total are
       * not exported: QEMU keeps no byte counters for user-mode (slirp)
       * networking, the only NIC type so far, and a constant 0 would read
       * as "no traffic". They come with tap networking. */
  };
  for (size_t f = 0; f < sizeof fam / sizeof fam[0]; f++) {
    nc_metrics_write_family(w, fam[f].name, fam[f].type, fam[f].help);
    for (size_t i = 0; i < k; i++) {
      const struct nc_hv_stats *st = &rows[i].st;
      double v = 0;
      switch (f) {
      case 0: v = (double)st->cpu_time_ns / 1e9; break;
      case 1: v = (double)st->memory_rss_bytes; break;
      case 2: v = (double)st->memory_bytes; break;
      case 3: v = rows[i].vcpus; break;
      case 4: v = (double)st->block_rd_bytes; break;
      default: v = (double)st->block_wr_bytes; break;
      }
      const char *l[] = {"domain", rows[i].name, NULL};
      nc_metrics_write_sample(w, fam[f].name, l, v);
    }
  }
  free(rows);
}

/* ---- life cycle --------------------------------------------------------- */

int nc_vmm_new(const struct nc_vmm_config *cfg, struct nc_vmm **out) {
  struct nc_vmm *vmm = calloc(1, sizeof *vmm);
  if (!vmm)
    return -ENOMEM;
  vmm->cfg = *cfg;
  if (vmm->cfg.reconcile_interval_ms <= 0)
    vmm->cfg.reconcile_interval_ms = 1000;
  if (vmm->cfg.stop_timeout_ms <= 0)
    vmm->cfg.stop_timeout_ms = 30000;
  if (vmm->cfg.max_running_ops <= 0)
    vmm->cfg.max_running_ops = 32;
  snprintf(vmm->vms_dir, sizeof vmm->vms_dir, "%s/vms", cfg->data_dir);
  pthread_mutex_init(&vmm->mu, NULL);
  nc_cond_init_mono(&vmm->cv);
  int rc = mkdir_p(vmm->vms_dir, 0700);
  if (rc) {
    nc_error("vm", "cannot create %s: %s", vmm->vms_dir, nc_strerror(rc));
    pthread_mutex_destroy(&vmm->mu);
    pthread_cond_destroy(&vmm->cv);
    free(vmm);
    return rc;
  }
  if (cfg->metrics) {
    static const char *const labels[] = {"from", "to", NULL};
    vmm->m_transitions = nc_metrics_register(cfg->metrics, NC_METRIC_COUNTER,
                                             "novacron_vm_transitions_total",
                                             "VM state transitions recorded.", labels, NULL, 0);
    nc_metrics_add_collector(cfg->metrics, collect, vmm);
  }
  *out = vmm;
  return 0;
}

/* Re-attaches to the QEMU of every VM that should have one. */
static void adopt_all(struct nc_vmm *vmm) {
  pthread_mutex_lock(&vmm->mu);
  size_t n = vmm->n;
  struct vm_entry **all = malloc((n ? n : 1) * sizeof *all);
  if (!all)
    abort();
  for (size_t i = 0; i < n; i++) {
    all[i] = vmm->vms[i];
    all[i]->refs++;
  }
  pthread_mutex_unlock(&vmm->mu);
  for (size_t i = 0; i < n; i++) {
    struct vm_entry *e = all[i];
    struct nc_image img;
    bool have_img = nc_image_get(vmm->cfg.store, e->spec.image, &img) == 0;
    char dir[1100], disk[1200], cmdline[2100];
    struct nc_hv_spec hs;
    spec_for_hv(vmm, e, have_img ? &img : NULL, &hs, dir, sizeof dir, disk, sizeof disk, cmdline,
                sizeof cmdline);
    pthread_mutex_lock(&e->hv_mu);
    int rc = vmm->cfg.hv->ops->adopt(vmm->cfg.hv, &hs, &e->hv);
    enum nc_hv_state hst = NC_HV_GONE;
    if (rc == 0 && vmm->cfg.hv->ops->query(e->hv, &hst) == 0 && hst != NC_HV_GONE)
      e->stats_valid = vmm->cfg.hv->ops->stats(e->hv, &e->stats) == 0;
    pthread_mutex_unlock(&e->hv_mu);
    pthread_mutex_lock(&vmm->mu);
    if (e->incoming) {
      /* A migration into this node was cut short before the hand-over:
       * the source still owns the VM (and resumes it when it learns we do
       * not have it). Remove what we had prepared. */
      pthread_mutex_unlock(&vmm->mu);
      nc_warn("vm", "vm \"%s\": removing an incoming migration interrupted by a restart",
              e->spec.name);
      pthread_mutex_lock(&e->hv_mu);
      if (rc == 0)
        hv_kill_locked(vmm, e);
      pthread_mutex_unlock(&e->hv_mu);
      remove_vm_files(vmm, e->spec.name);
      char key[128];
      snprintf(key, sizeof key, VMS_PREFIX "%s", e->spec.name);
      nc_store_delete(vmm->cfg.store, key, NULL);
      pthread_mutex_lock(&vmm->mu);
      remove_locked(vmm, e);
      entry_unref_locked(vmm, e);
      pthread_mutex_unlock(&vmm->mu);
      continue;
    }
    if (rc == 0 && e->state == NC_VM_MIGRATING && hst != NC_HV_RUNNING &&
        hst != NC_HV_PAUSED) {
      /* An outgoing migration was cut short after QEMU finished sending:
       * the destination may run the VM now. Never resume blindly. */
      set_state_locked(vmm, e, NC_VM_FAILED,
                       "a migration away from this node was interrupted during the hand-over; "
                       "check whether the destination runs the vm before resuming it here");
    } else if (rc == 0) {
      nc_info("vm", "vm \"%s\": re-adopted running hypervisor (pid %d)", e->spec.name,
              e->stats_valid ? e->stats.pid : -1);
      if (hst == NC_HV_RUNNING || hst == NC_HV_PAUSED) {
        enum nc_vm_state obs = map_hv_state(hst);
        if (e->state != obs) {
          /* Interrupted mid-transition (starting/stopping): record what is
           * true, through the lifecycle table. */
          if (!nc_vm_transition_valid(e->state, obs))
            set_state_locked(vmm, e, NC_VM_FAILED, "interrupted by a daemon restart");
          if (e->state == NC_VM_FAILED || e->state == NC_VM_STOPPED)
            set_state_locked(vmm, e, NC_VM_STARTING, "re-adopted after daemon restart");
          set_state_locked(vmm, e, obs, "re-adopted after daemon restart");
        }
      }
      /* Other run states (shutdown, gone) are settled by the reconciler. */
    } else if (nc_vm_state_has_process(e->state)) {
      set_state_locked(vmm, e, NC_VM_FAILED,
                       "the hypervisor process exited while novacrond was down");
    }
    entry_unref_locked(vmm, e);
    pthread_mutex_unlock(&vmm->mu);
  }
  free(all);
}

int nc_vmm_start(struct nc_vmm *vmm) {
  struct nc_kv_list l;
  int rc = nc_store_range(vmm->cfg.store, VMS_PREFIX, 0, &l);
  if (rc)
    return rc;
  for (size_t i = 0; i < l.count; i++)
    load_record(vmm, &l.items[i]);
  nc_kv_list_free(&l);
  adopt_all(vmm);
  rc = pthread_create(&vmm->reconciler, NULL, reconciler_main, vmm);
  if (rc)
    return -rc;
  vmm->started = true;
  return 0;
}

void nc_vmm_free(struct nc_vmm *vmm) {
  if (!vmm)
    return;
  pthread_mutex_lock(&vmm->mu);
  vmm->stopping = true;
  pthread_cond_broadcast(&vmm->cv);
  pthread_mutex_unlock(&vmm->mu);
  if (vmm->started)
    pthread_join(vmm->reconciler, NULL);
  if (vmm->cfg.metrics)
    nc_metrics_remove_collector(vmm->cfg.metrics, collect, vmm);
  pthread_mutex_lock(&vmm->mu);
  for (size_t i = 0; i < vmm->n; i++)
    if (vmm->vms[i]->op)
      nc_ops_cancel(vmm->cfg.ops, nc_op_id(vmm->vms[i]->op), NULL);
  while (vmm->running_ops > 0)
    pthread_cond_wait(&vmm->cv, &vmm->mu);
  for (size_t i = 0; i < vmm->n; i++)
    entry_unref_locked(vmm, vmm->vms[i]); /* releases handles; QEMUs keep running */
  vmm->n = 0;
  pthread_mutex_unlock(&vmm->mu);
  free(vmm->vms);
  free(vmm->list_text);
  pthread_cond_destroy(&vmm->cv);
  pthread_mutex_destroy(&vmm->mu);
  free(vmm);
}
