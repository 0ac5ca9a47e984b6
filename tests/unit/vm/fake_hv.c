#include "fake_hv.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct nc_hv_vm {
  struct fake_hv *hv;
  struct fake_proc *p;
};

static struct fake_hv *drv(struct nc_hv *hv) { return (struct fake_hv *)hv; }

/* Caller holds f->mu. */
static struct fake_proc *find_dir_locked(struct fake_hv *f, const char *run_dir) {
  for (int i = 0; i < f->nprocs; i++)
    if (strcmp(f->procs[i].run_dir, run_dir) == 0)
      return &f->procs[i];
  return NULL;
}

static struct nc_hv_vm *handle_new_locked(struct fake_hv *f, struct fake_proc *p) {
  struct nc_hv_vm *vm = calloc(1, sizeof *vm);
  if (!vm)
    abort();
  vm->hv = f;
  vm->p = p;
  f->handles++;
  return vm;
}

static void write_log(const char *run_dir, const char *text) {
  char path[1300];
  snprintf(path, sizeof path, "%s/qemu.log", run_dir);
  FILE *fp = fopen(path, "w");
  if (fp) {
    fputs(text, fp);
    fclose(fp);
  }
}

static int f_launch(struct nc_hv *hv, const struct nc_hv_spec *spec, struct nc_hv_vm **out) {
  struct fake_hv *f = drv(hv);
  pthread_mutex_lock(&f->mu);
  f->launching++;
  pthread_cond_broadcast(&f->cv);
  while (f->gate)
    pthread_cond_wait(&f->cv, &f->mu);
  f->launching--;
  f->launches++;
  int rc = f->launch_rc;
  if (rc) {
    if (f->launch_log)
      write_log(spec->run_dir, f->launch_log);
    pthread_mutex_unlock(&f->mu);
    return rc;
  }
  struct fake_proc *p = find_dir_locked(f, spec->run_dir);
  if (!p) {
    if (f->nprocs == FAKE_HV_PROCS_MAX)
      abort();
    p = &f->procs[f->nprocs++];
  }
  memset(p, 0, sizeof *p);
  snprintf(p->run_dir, sizeof p->run_dir, "%s", spec->run_dir);
  snprintf(p->name, sizeof p->name, "%s", spec->name);
  snprintf(p->kernel, sizeof p->kernel, "%s", spec->kernel ? spec->kernel : "");
  snprintf(p->disk, sizeof p->disk, "%s", spec->disk ? spec->disk : "");
  snprintf(p->cmdline, sizeof p->cmdline, "%s", spec->cmdline ? spec->cmdline : "");
  p->vcpus = spec->vcpus;
  p->memory_bytes = spec->memory_bytes;
  p->nic_user = spec->nic_user;
  p->accel = spec->accel;
  snprintf(p->machine, sizeof p->machine, "%s", spec->machine ? spec->machine : "");
  p->state = f->launch_state;
  p->pid = ++f->next_pid;
  *out = handle_new_locked(f, p);
  pthread_mutex_unlock(&f->mu);
  return 0;
}

static int f_adopt(struct nc_hv *hv, const struct nc_hv_spec *spec, struct nc_hv_vm **out) {
  struct fake_hv *f = drv(hv);
  pthread_mutex_lock(&f->mu);
  f->adopts++;
  struct fake_proc *p = find_dir_locked(f, spec->run_dir);
  int rc = -ESRCH;
  if (p && p->state != NC_HV_GONE) {
    *out = handle_new_locked(f, p);
    rc = 0;
  }
  pthread_mutex_unlock(&f->mu);
  return rc;
}

static int f_query(struct nc_hv_vm *vm, enum nc_hv_state *state) {
  pthread_mutex_lock(&vm->hv->mu);
  *state = vm->p->state;
  pthread_mutex_unlock(&vm->hv->mu);
  return 0;
}

/* A QMP command on a live process: fails with rc, or -ESRCH when gone. */
static int command(struct nc_hv_vm *vm, int rc, int *counter, enum nc_hv_state from,
                   enum nc_hv_state to) {
  struct fake_hv *f = vm->hv;
  pthread_mutex_lock(&f->mu);
  (*counter)++;
  if (vm->p->state == NC_HV_GONE)
    rc = -ESRCH;
  else if (rc == 0 && (int)from >= 0 && vm->p->state == from)
    vm->p->state = to;
  pthread_mutex_unlock(&f->mu);
  return rc;
}

static int f_pause(struct nc_hv_vm *vm) {
  return command(vm, vm->hv->pause_rc, &vm->hv->pauses, NC_HV_RUNNING, NC_HV_PAUSED);
}
static int f_resume(struct nc_hv_vm *vm) {
  return command(vm, vm->hv->resume_rc, &vm->hv->resumes, NC_HV_PAUSED, NC_HV_RUNNING);
}
static int f_reboot(struct nc_hv_vm *vm) {
  return command(vm, vm->hv->reboot_rc, &vm->hv->reboots, (enum nc_hv_state)-1, NC_HV_RUNNING);
}

static int f_shutdown(struct nc_hv_vm *vm, int timeout_ms) {
  struct fake_hv *f = vm->hv;
  pthread_mutex_lock(&f->mu);
  f->shutdowns++;
  f->last_shutdown_timeout_ms = timeout_ms;
  int rc = f->shutdown_rc;
  vm->p->state = NC_HV_GONE; /* powered off, then QEMU quit */
  pthread_mutex_unlock(&f->mu);
  return rc;
}

static int f_kill(struct nc_hv_vm *vm) {
  if (!vm)
    return 0;
  struct fake_hv *f = vm->hv;
  pthread_mutex_lock(&f->mu);
  f->kills++;
  f->handles--;
  vm->p->state = NC_HV_GONE;
  pthread_mutex_unlock(&f->mu);
  free(vm);
  return 0;
}

static int f_stats(struct nc_hv_vm *vm, struct nc_hv_stats *out) {
  struct fake_hv *f = vm->hv;
  memset(out, 0, sizeof *out);
  pthread_mutex_lock(&f->mu);
  int rc = 0;
  if (vm->p->state == NC_HV_GONE) {
    rc = -ESRCH;
  } else {
    out->pid = vm->p->pid;
    out->cpu_time_ns = 1500000000ULL;
    out->memory_rss_bytes = 50ULL << 20;
    out->memory_bytes = vm->p->memory_bytes;
    out->block_rd_bytes = 4096;
    out->block_wr_bytes = 8192;
    out->net_rx_bytes = 100;
    out->net_tx_bytes = 200;
  }
  pthread_mutex_unlock(&f->mu);
  return rc;
}

static int snap(struct nc_hv_vm *vm, int *counter, int delta) {
  struct fake_hv *f = vm->hv;
  pthread_mutex_lock(&f->mu);
  (*counter)++;
  int rc = vm->p->state == NC_HV_GONE ? -ESRCH : f->snapshot_rc;
  if (rc == 0)
    vm->p->snapshots += delta;
  pthread_mutex_unlock(&f->mu);
  return rc;
}

static int f_snap_save(struct nc_hv_vm *vm, const char *tag, int timeout_ms) {
  (void)tag;
  (void)timeout_ms;
  return snap(vm, &vm->hv->snap_saves, 1);
}
static int f_snap_load(struct nc_hv_vm *vm, const char *tag, int timeout_ms) {
  (void)tag;
  (void)timeout_ms;
  return snap(vm, &vm->hv->snap_loads, 0);
}
static int f_snap_delete(struct nc_hv_vm *vm, const char *tag, int timeout_ms) {
  (void)tag;
  (void)timeout_ms;
  return snap(vm, &vm->hv->snap_deletes, -1);
}

static void f_release(struct nc_hv_vm *vm) {
  if (!vm)
    return;
  struct fake_hv *f = vm->hv;
  pthread_mutex_lock(&f->mu);
  f->releases++;
  f->handles--;
  pthread_mutex_unlock(&f->mu);
  free(vm);
}

static void f_destroy(struct nc_hv *hv) { (void)hv; }

static int f_machines(struct nc_hv *hv, const struct nc_hv_machines **out) {
  struct fake_hv *f = drv(hv);
  pthread_mutex_lock(&f->mu);
  int rc = f->machines_rc ? f->machines_rc : f->machines ? 0 : -ENOTSUP;
  if (rc == 0)
    *out = f->machines;
  pthread_mutex_unlock(&f->mu);
  return rc;
}

static const struct nc_hv_ops fake_ops = {
    .version = 2,
    .name = "fake",
    .launch = f_launch,
    .adopt = f_adopt,
    .query = f_query,
    .pause = f_pause,
    .resume = f_resume,
    .reboot = f_reboot,
    .shutdown = f_shutdown,
    .kill = f_kill,
    .stats = f_stats,
    .snapshot_save = f_snap_save,
    .snapshot_load = f_snap_load,
    .snapshot_delete = f_snap_delete,
    .release = f_release,
    .destroy = f_destroy,
    .machines = f_machines,
};

void fake_hv_init(struct fake_hv *f) {
  memset(f, 0, sizeof *f);
  f->base.ops = &fake_ops;
  pthread_mutex_init(&f->mu, NULL);
  pthread_cond_init(&f->cv, NULL);
  f->launch_state = NC_HV_RUNNING;
  f->next_pid = 4000;
}

void fake_hv_destroy(struct fake_hv *f) {
  pthread_cond_destroy(&f->cv);
  pthread_mutex_destroy(&f->mu);
}

struct fake_proc *fake_hv_proc(struct fake_hv *f, const char *name) {
  struct fake_proc *p = NULL;
  pthread_mutex_lock(&f->mu);
  for (int i = 0; i < f->nprocs; i++)
    if (strcmp(f->procs[i].name, name) == 0)
      p = &f->procs[i];
  pthread_mutex_unlock(&f->mu);
  return p;
}

void fake_hv_set_state(struct fake_hv *f, const char *name, enum nc_hv_state st) {
  pthread_mutex_lock(&f->mu);
  for (int i = 0; i < f->nprocs; i++)
    if (strcmp(f->procs[i].name, name) == 0)
      f->procs[i].state = st;
  pthread_mutex_unlock(&f->mu);
}

enum nc_hv_state fake_hv_state(struct fake_hv *f, const char *name) {
  enum nc_hv_state st = NC_HV_GONE;
  pthread_mutex_lock(&f->mu);
  for (int i = 0; i < f->nprocs; i++)
    if (strcmp(f->procs[i].name, name) == 0)
      st = f->procs[i].state;
  pthread_mutex_unlock(&f->mu);
  return st;
}

void fake_hv_close_gate(struct fake_hv *f) {
  pthread_mutex_lock(&f->mu);
  f->gate = true;
  pthread_mutex_unlock(&f->mu);
}

void fake_hv_open_gate(struct fake_hv *f) {
  pthread_mutex_lock(&f->mu);
  f->gate = false;
  pthread_cond_broadcast(&f->cv);
  pthread_mutex_unlock(&f->mu);
}

bool fake_hv_wait_launching(struct fake_hv *f, int n, int timeout_ms) {
  struct timespec dl;
  clock_gettime(CLOCK_REALTIME, &dl);
  dl.tv_sec += timeout_ms / 1000;
  dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
  if (dl.tv_nsec >= 1000000000L) {
    dl.tv_sec++;
    dl.tv_nsec -= 1000000000L;
  }
  pthread_mutex_lock(&f->mu);
  while (f->launching < n) {
    if (pthread_cond_timedwait(&f->cv, &f->mu, &dl) == ETIMEDOUT)
      break;
  }
  bool ok = f->launching >= n;
  pthread_mutex_unlock(&f->mu);
  return ok;
}

int fake_hv_count(struct fake_hv *f, const int *counter) {
  pthread_mutex_lock(&f->mu);
  int v = *counter;
  pthread_mutex_unlock(&f->mu);
  return v;
}
