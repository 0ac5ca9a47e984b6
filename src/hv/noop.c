/* The noop hypervisor driver. See noop.h for the contract and hv.h for
 * the vtable. */
#include "hv/noop.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/err.h"
#include "util/log.h"

#define TAGS_MAX 128
#define TAG_LEN_MAX 127
#define NAME_LEN_MAX 255

/* One pretend guest. The driver's list holds one reference while it is
 * live; each handle holds one. */
struct instance {
  struct instance *next;
  char run_dir[PATH_MAX];
  char name[NAME_LEN_MAX + 1];
  enum nc_hv_state state;
  uint64_t memory_bytes;
  bool has_disk;
  bool live; /* in the driver's list */
  int refs;
  size_t ntags;
  char tags[TAGS_MAX][TAG_LEN_MAX + 1];
};

struct nc_hv_noop {
  struct nc_hv base; /* first: the vtable hands us struct nc_hv * */
  pthread_mutex_t mu;
  struct instance *live;
};

struct nc_hv_vm {
  struct nc_hv_noop *drv; /* borrowed; outlives every handle */
  struct instance *inst;  /* one reference */
};

static struct nc_hv_noop *drv_of(struct nc_hv *hv) { return (struct nc_hv_noop *)hv; }

/* Under mu. */
static struct instance *find_live(struct nc_hv_noop *d, const char *run_dir) {
  for (struct instance *i = d->live; i; i = i->next)
    if (strcmp(i->run_dir, run_dir) == 0)
      return i;
  return NULL;
}

/* Under mu. */
static void unref(struct instance *i) {
  if (--i->refs == 0)
    free(i);
}

/* Under mu: takes the instance off the list (it is gone). */
static void end_instance(struct nc_hv_noop *d, struct instance *inst) {
  if (!inst->live)
    return;
  for (struct instance **p = &d->live; *p; p = &(*p)->next) {
    if (*p == inst) {
      *p = inst->next;
      break;
    }
  }
  inst->live = false;
  inst->state = NC_HV_GONE;
  unref(inst);
}

static int new_handle(struct nc_hv_noop *d, struct instance *inst, struct nc_hv_vm **out) {
  struct nc_hv_vm *vm = calloc(1, sizeof *vm);
  if (!vm)
    return -ENOMEM;
  vm->drv = d;
  vm->inst = inst;
  inst->refs++;
  *out = vm;
  return 0;
}

static int noop_launch(struct nc_hv *hv, const struct nc_hv_spec *spec, struct nc_hv_vm **out) {
  struct nc_hv_noop *d = drv_of(hv);
  *out = NULL;
  if (!spec || !spec->name || !spec->name[0] || !spec->run_dir || !spec->run_dir[0] ||
      spec->vcpus <= 0 || spec->memory_bytes == 0)
    return NC_E_INVALID;
  if (strlen(spec->run_dir) >= PATH_MAX || strlen(spec->name) > NAME_LEN_MAX)
    return -ENAMETOOLONG;
  struct instance *inst = calloc(1, sizeof *inst);
  if (!inst)
    return -ENOMEM;
  snprintf(inst->run_dir, sizeof inst->run_dir, "%s", spec->run_dir);
  snprintf(inst->name, sizeof inst->name, "%s", spec->name);
  inst->memory_bytes = spec->memory_bytes;
  inst->has_disk = spec->disk && spec->disk[0];
  inst->state = spec->incoming && strcmp(spec->incoming, "defer") == 0 ? NC_HV_INMIGRATE
                                                                       : NC_HV_RUNNING;
  int rc = 0;
  pthread_mutex_lock(&d->mu);
  if (find_live(d, spec->run_dir)) {
    rc = -EEXIST;
    goto out;
  }
  rc = new_handle(d, inst, out);
  if (rc)
    goto out;
  inst->live = true;
  inst->refs++; /* the list's */
  inst->next = d->live;
  d->live = inst;
  inst = NULL;
out:
  pthread_mutex_unlock(&d->mu);
  free(inst);
  if (rc == 0)
    nc_debug("hv", "vm \"%s\": noop instance started (no guest runs)", spec->name);
  return rc;
}

static int noop_adopt(struct nc_hv *hv, const struct nc_hv_spec *spec, struct nc_hv_vm **out) {
  struct nc_hv_noop *d = drv_of(hv);
  *out = NULL;
  if (!spec || !spec->run_dir)
    return NC_E_INVALID;
  pthread_mutex_lock(&d->mu);
  struct instance *inst = find_live(d, spec->run_dir);
  int rc = inst ? new_handle(d, inst, out) : -ESRCH;
  pthread_mutex_unlock(&d->mu);
  return rc;
}

static int noop_query(struct nc_hv_vm *vm, enum nc_hv_state *state) {
  pthread_mutex_lock(&vm->drv->mu);
  *state = vm->inst->live ? vm->inst->state : NC_HV_GONE;
  pthread_mutex_unlock(&vm->drv->mu);
  return 0;
}

/* Moves a live instance to `to`. */
static int set_state(struct nc_hv_vm *vm, enum nc_hv_state to) {
  pthread_mutex_lock(&vm->drv->mu);
  int rc = vm->inst->live ? 0 : -ESRCH;
  if (rc == 0)
    vm->inst->state = to;
  pthread_mutex_unlock(&vm->drv->mu);
  return rc;
}

static int noop_pause(struct nc_hv_vm *vm) { return set_state(vm, NC_HV_PAUSED); }

static int noop_resume(struct nc_hv_vm *vm) { return set_state(vm, NC_HV_RUNNING); }

static int noop_reboot(struct nc_hv_vm *vm) {
  pthread_mutex_lock(&vm->drv->mu);
  int rc = vm->inst->live ? 0 : -ESRCH;
  if (rc == 0 && vm->inst->state == NC_HV_SHUTDOWN)
    vm->inst->state = NC_HV_RUNNING;
  pthread_mutex_unlock(&vm->drv->mu);
  return rc;
}

static int noop_shutdown(struct nc_hv_vm *vm, int timeout_ms) {
  (void)timeout_ms;
  pthread_mutex_lock(&vm->drv->mu);
  end_instance(vm->drv, vm->inst);
  pthread_mutex_unlock(&vm->drv->mu);
  return 0;
}

static int noop_kill(struct nc_hv_vm *vm) {
  if (!vm)
    return 0;
  struct nc_hv_noop *d = vm->drv;
  pthread_mutex_lock(&d->mu);
  end_instance(d, vm->inst);
  unref(vm->inst);
  pthread_mutex_unlock(&d->mu);
  free(vm);
  return 0;
}

static int noop_stats(struct nc_hv_vm *vm, struct nc_hv_stats *out) {
  memset(out, 0, sizeof *out);
  pthread_mutex_lock(&vm->drv->mu);
  int rc = vm->inst->live ? 0 : -ESRCH;
  out->memory_bytes = vm->inst->memory_bytes;
  pthread_mutex_unlock(&vm->drv->mu);
  return rc;
}

/* Under mu: index of tag, or -1. */
static int tag_index(const struct instance *i, const char *tag) {
  for (size_t k = 0; k < i->ntags; k++)
    if (strcmp(i->tags[k], tag) == 0)
      return (int)k;
  return -1;
}

enum snap_op { SNAP_SAVE, SNAP_LOAD, SNAP_DELETE };

static int snapshot(struct nc_hv_vm *vm, const char *tag, enum snap_op op) {
  if (!tag || !tag[0])
    return NC_E_INVALID;
  if (strlen(tag) > TAG_LEN_MAX)
    return NC_E_TOOBIG;
  struct instance *i = vm->inst;
  int rc = 0;
  pthread_mutex_lock(&vm->drv->mu);
  if (!i->live) {
    rc = -ESRCH;
    goto out;
  }
  if (!i->has_disk) {
    rc = -ENOTSUP;
    goto out;
  }
  int k = tag_index(i, tag);
  if (op == SNAP_SAVE) {
    if (k >= 0)
      rc = -EEXIST;
    else if (i->ntags == TAGS_MAX)
      rc = NC_E_TOOBIG;
    else
      snprintf(i->tags[i->ntags++], sizeof i->tags[0], "%s", tag);
  } else if (k < 0) {
    rc = -ENOENT;
  } else if (op == SNAP_DELETE) {
    memmove(i->tags[k], i->tags[k + 1], (i->ntags - (size_t)k - 1) * sizeof i->tags[0]);
    i->ntags--;
  }
out:
  pthread_mutex_unlock(&vm->drv->mu);
  return rc;
}

static int noop_snapshot_save(struct nc_hv_vm *vm, const char *tag, int timeout_ms) {
  (void)timeout_ms;
  return snapshot(vm, tag, SNAP_SAVE);
}

static int noop_snapshot_load(struct nc_hv_vm *vm, const char *tag, int timeout_ms) {
  (void)timeout_ms;
  return snapshot(vm, tag, SNAP_LOAD);
}

static int noop_snapshot_delete(struct nc_hv_vm *vm, const char *tag, int timeout_ms) {
  (void)timeout_ms;
  return snapshot(vm, tag, SNAP_DELETE);
}

static void noop_release(struct nc_hv_vm *vm) {
  if (!vm)
    return;
  pthread_mutex_lock(&vm->drv->mu);
  unref(vm->inst);
  pthread_mutex_unlock(&vm->drv->mu);
  free(vm);
}

static void noop_destroy(struct nc_hv *hv) {
  if (!hv)
    return;
  struct nc_hv_noop *d = drv_of(hv);
  pthread_mutex_lock(&d->mu);
  while (d->live)
    end_instance(d, d->live);
  pthread_mutex_unlock(&d->mu);
  pthread_mutex_destroy(&d->mu);
  free(d);
}

static const struct nc_hv_ops noop_ops = {
    .version = 1,
    .name = "noop",
    .launch = noop_launch,
    .adopt = noop_adopt,
    .query = noop_query,
    .pause = noop_pause,
    .resume = noop_resume,
    .reboot = noop_reboot,
    .shutdown = noop_shutdown,
    .kill = noop_kill,
    .stats = noop_stats,
    .snapshot_save = noop_snapshot_save,
    .snapshot_load = noop_snapshot_load,
    .snapshot_delete = noop_snapshot_delete,
    .release = noop_release,
    .destroy = noop_destroy,
};

int nc_hv_noop_new(struct nc_hv **out) {
  *out = NULL;
  struct nc_hv_noop *d = calloc(1, sizeof *d);
  if (!d)
    return -ENOMEM;
  d->base.ops = &noop_ops;
  pthread_mutex_init(&d->mu, NULL);
  nc_warn("hv", "hypervisor: noop driver — no guests run; for control-plane benchmarks only");
  *out = &d->base;
  return 0;
}
