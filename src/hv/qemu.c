/* The QEMU driver. See qemu.h for the contract and hv.h for the vtable. */
#include "hv/qemu.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include "hv/machine.h"
#include "hv/proc.h"
#include "hv/qemu_argv.h"
#include "hv/qmp.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/log.h"

#define DEFAULT_LAUNCH_TIMEOUT_MS 15000
#define DEFAULT_QMP_TIMEOUT_MS 10000
#define DEFAULT_JOB_TIMEOUT_MS 120000
#define QUIT_WAIT_MS 3000
#define TERM_WAIT_MS 2000
#define KILL_WAIT_MS 5000
#define LOG_TAIL_BYTES 1536
#define LAST_ERROR_MAX 1024
#define SNAPSHOT_NODE "disk0"
/* After a failed `-machine help`, how long the failure stands before the
 * next call asks QEMU again. */
#define MACHINES_RETRY_MS 30000

struct nc_hv_qemu {
  struct nc_hv base; /* first: the vtable hands us struct nc_hv * */
  char qemu[PATH_MAX];
  char qemu_img[PATH_MAX];
  int launch_timeout_ms;
  int qmp_timeout_ms;
  /* `-machine help`, asked once per driver: the binary's list does not
   * change while it runs (an upgrade in place is seen after a restart). */
  pthread_mutex_t machines_mu;
  struct nc_hv_machines *machines; /* owned; NULL until asked successfully */
  int machines_rc;                 /* the last failure, 0 when none yet */
  int64_t machines_failed_ms;      /* when it failed */
};

struct nc_hv_vm {
  struct nc_hv_qemu *drv; /* borrowed; outlives every handle */
  char name[256];
  char run_dir[PATH_MAX]; /* canonical (realpath) */
  pid_t pid;
  int pidfd;           /* owned; -1 on kernels without pidfds */
  struct nc_qmp *qmp;  /* owned; NULL while disconnected */
  unsigned job_seq;
  char last_error[LAST_ERROR_MAX];
};

static int64_t now_ms(void) { return nc_mono_ms(nc_clock_system()); }

static int remaining_ms(int64_t deadline) {
  int64_t left = deadline - now_ms();
  return left <= 0 ? 0 : left > INT_MAX ? INT_MAX : (int)left;
}

static void vm_path(const struct nc_hv_vm *vm, const char *file, char *out, size_t cap) {
  snprintf(out, cap, "%s/%s", vm->run_dir, file);
}

/* Records the failure for nc_hv_qemu_vm_last_error() and logs it. */
static void vm_fail(struct nc_hv_vm *vm, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void vm_fail(struct nc_hv_vm *vm, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(vm->last_error, sizeof vm->last_error, fmt, ap);
  va_end(ap);
  nc_error("hv", "vm \"%s\": %s", vm->name, vm->last_error);
}

/* The last bytes of qemu.log on one line, for error messages. */
static void log_tail(const struct nc_hv_vm *vm, char *out, size_t cap) {
  char path[PATH_MAX + 16];
  vm_path(vm, "qemu.log", path, sizeof path);
  int n = nc__proc_read_tail(path, out, cap);
  if (n <= 0) {
    snprintf(out, cap, "(qemu.log is empty)");
    return;
  }
  while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == '\r'))
    out[--n] = '\0';
  for (int i = 0; i < n; i++)
    if (out[i] == '\n' || out[i] == '\r')
      out[i] = '|';
}

static struct nc_hv_vm *vm_new(struct nc_hv_qemu *d, const char *name, const char *run_dir) {
  struct nc_hv_vm *vm = calloc(1, sizeof *vm);
  if (!vm)
    return NULL;
  vm->drv = d;
  vm->pid = -1;
  vm->pidfd = -1;
  snprintf(vm->name, sizeof vm->name, "%s", name && *name ? name : run_dir);
  snprintf(vm->run_dir, sizeof vm->run_dir, "%s", run_dir);
  return vm;
}

static void vm_free(struct nc_hv_vm *vm) {
  if (!vm)
    return;
  nc_qmp_close(vm->qmp);
  if (vm->pidfd >= 0)
    close(vm->pidfd);
  free(vm);
}

static bool vm_alive(const struct nc_hv_vm *vm) {
  return vm->pid > 0 && nc__proc_alive(vm->pid, vm->pidfd) == 1;
}

static void remove_runtime_files(const struct nc_hv_vm *vm) {
  static const char *const files[] = {"qmp.sock", "serial.sock", "qemu.pid"};
  for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
    char path[PATH_MAX + 16];
    vm_path(vm, files[i], path, sizeof path);
    if (unlink(path) < 0 && errno != ENOENT)
      nc_warn("hv", "vm \"%s\": removing %s: %s", vm->name, path, strerror(errno));
  }
}

/* Events are not part of the vtable yet; the driver reads them only to
 * wake up early and drops them afterwards so the queue stays short. */
static void drain_events(struct nc_hv_vm *vm) {
  json_t *ev;
  while (vm->qmp && nc_qmp_next_event(vm->qmp, &ev) == 1) {
    nc_debug("hv", "vm \"%s\": event %s", vm->name,
             json_string_value(json_object_get(ev, "event")));
    json_decref(ev);
  }
}

/* Returns a usable QMP connection, reconnecting if the last one broke
 * while QEMU lives on. -ESRCH when the process is gone. */
static int vm_qmp(struct nc_hv_vm *vm, struct nc_qmp **q) {
  if (vm->qmp && !nc_qmp_broken(vm->qmp)) {
    *q = vm->qmp;
    return 0;
  }
  nc_qmp_close(vm->qmp);
  vm->qmp = NULL;
  if (!vm_alive(vm))
    return -ESRCH;
  char path[PATH_MAX + 16];
  vm_path(vm, "qmp.sock", path, sizeof path);
  int rc = nc_qmp_connect(path, NULL, vm->drv->qmp_timeout_ms, &vm->qmp);
  if (rc < 0) {
    vm_fail(vm, "cannot reconnect to QMP at %s: %s", path, nc_strerror(rc));
    return rc;
  }
  *q = vm->qmp;
  return 0;
}

/* One QMP command. On failure last_error holds QEMU's text; a dead
 * process is reported as -ESRCH whatever the socket said. */
static int vm_exec(struct nc_hv_vm *vm, const char *cmd, json_t *args, int timeout_ms,
                   json_t **ret) {
  if (ret)
    *ret = NULL;
  struct nc_qmp *q;
  int rc = vm_qmp(vm, &q);
  if (rc < 0)
    return rc;
  rc = nc_qmp_execute(q, cmd, args, timeout_ms, ret);
  if (rc < 0) {
    if (!vm_alive(vm))
      return -ESRCH;
    snprintf(vm->last_error, sizeof vm->last_error, "%s: %s", cmd, nc_qmp_error_desc(q));
  }
  return rc;
}

/* quit, then SIGTERM, then SIGKILL, each with a deadline; then the
 * runtime files go. 0 once the process is gone. */
static int end_process(struct nc_hv_vm *vm) {
  if (vm_alive(vm) && vm->qmp && !nc_qmp_broken(vm->qmp)) {
    /* QEMU may close the socket before it answers; that is success. */
    nc_qmp_execute(vm->qmp, "quit", NULL, QUIT_WAIT_MS, NULL);
    nc__proc_wait_gone(vm->pid, vm->pidfd, QUIT_WAIT_MS);
  }
  nc_qmp_close(vm->qmp);
  vm->qmp = NULL;
  if (vm_alive(vm)) {
    nc_warn("hv", "vm \"%s\": qemu pid %d ignored quit; sending SIGTERM", vm->name,
            (int)vm->pid);
    nc__proc_signal(vm->pid, vm->pidfd, SIGTERM);
    nc__proc_wait_gone(vm->pid, vm->pidfd, TERM_WAIT_MS);
  }
  if (vm_alive(vm)) {
    nc_warn("hv", "vm \"%s\": qemu pid %d ignored SIGTERM; sending SIGKILL", vm->name,
            (int)vm->pid);
    nc__proc_signal(vm->pid, vm->pidfd, SIGKILL);
    if (nc__proc_wait_gone(vm->pid, vm->pidfd, KILL_WAIT_MS) < 0) {
      vm_fail(vm, "qemu pid %d survived SIGKILL for %d ms (stuck in the kernel?)",
              (int)vm->pid, KILL_WAIT_MS);
      return -ETIMEDOUT;
    }
  }
  remove_runtime_files(vm);
  return 0;
}

/* Reads qemu.pid. -ESRCH when there is no usable pid in it. */
static int read_pid_file(const struct nc_hv_vm *vm, pid_t *pid) {
  char path[PATH_MAX + 16];
  vm_path(vm, "qemu.pid", path, sizeof path);
  return nc__proc_read_pid(path, pid);
}

/* Finds the live QEMU of this run dir: pid file, pid alive, and its
 * command line carries our exact -qmp argument (a recycled pid does not).
 * On success vm->pid/pidfd are set. -ESRCH otherwise. */
static int find_live(struct nc_hv_vm *vm) {
  pid_t pid;
  if (read_pid_file(vm, &pid) < 0)
    return -ESRCH;
  int err;
  int pidfd = nc__proc_pidfd_open(pid, &err);
  if (pidfd < 0 && err != -ENOSYS)
    return -ESRCH;
  char qmp_arg[PATH_MAX + 64];
  int rc = nc__qemu_qmp_arg(vm->run_dir, qmp_arg, sizeof qmp_arg);
  if (rc == 0 && nc__proc_alive(pid, pidfd) != 1)
    rc = -ESRCH;
  if (rc == 0 && nc__proc_cmdline_has_prefix(pid, qmp_arg) != 1) {
    nc_warn("hv", "vm \"%s\": pid %d from qemu.pid is not this run dir's QEMU (pid reused?)",
            vm->name, (int)pid);
    rc = -ESRCH;
  }
  if (rc < 0) {
    if (pidfd >= 0)
      close(pidfd);
    return rc;
  }
  vm->pid = pid;
  vm->pidfd = pidfd;
  return 0;
}

/* Resolves path to an absolute canonical one, with a useful log line. */
static int resolve(const char *vmname, const char *what, const char *path, char *out) {
  if (realpath(path, out))
    return 0;
  int err = -errno;
  nc_error("hv", "vm \"%s\": %s \"%s\": %s", vmname, what, path, strerror(errno));
  return err;
}

static int wait_ready(struct nc_hv_vm *vm, int64_t deadline) {
  char path[PATH_MAX + 16];
  vm_path(vm, "qmp.sock", path, sizeof path);
  for (;;) {
    int rc = nc_qmp_connect(path, NULL, remaining_ms(deadline), &vm->qmp);
    if (rc == 0)
      return 0;
    bool retry = rc == -ENOENT || rc == -ECONNREFUSED || rc == -EAGAIN;
    /* QEMU listens on QMP before it loads the kernel and disks; when one
     * of those fails it drops the connection and exits. Give it a moment
     * so the failure is reported with its own words from qemu.log. */
    if (!retry)
      nc__proc_wait_gone(vm->pid, vm->pidfd, 1000);
    if (!vm_alive(vm)) {
      char tail[LOG_TAIL_BYTES];
      log_tail(vm, tail, sizeof tail);
      vm_fail(vm, "qemu exited during start-up: %s", tail);
      return NC_E_HV;
    }
    if (!retry || remaining_ms(deadline) == 0) {
      vm_fail(vm, "qemu pid %d: QMP at %s not ready: %s", (int)vm->pid, path,
              nc_strerror(retry ? -ETIMEDOUT : rc));
      return retry ? -ETIMEDOUT : rc;
    }
    nc__proc_sleep_ms(10);
  }
}

static int qemu_launch(struct nc_hv *hv, const struct nc_hv_spec *spec, struct nc_hv_vm **out) {
  struct nc_hv_qemu *d = (struct nc_hv_qemu *)hv;
  *out = NULL;
  if (!spec || !spec->name || !spec->run_dir)
    return NC_E_INVALID;
  int64_t t0 = now_ms();
  char run_dir[PATH_MAX], kernel[PATH_MAX], initrd[PATH_MAX], disk[PATH_MAX];
  struct nc_hv_spec abs = *spec;
  int rc = resolve(spec->name, "run dir", spec->run_dir, run_dir);
  if (rc == 0 && spec->kernel)
    rc = resolve(spec->name, "kernel", spec->kernel, kernel);
  if (rc == 0 && spec->initrd)
    rc = resolve(spec->name, "initrd", spec->initrd, initrd);
  if (rc == 0 && spec->disk)
    rc = resolve(spec->name, "disk", spec->disk, disk);
  if (rc < 0)
    return rc;
  abs.run_dir = run_dir;
  abs.kernel = spec->kernel ? kernel : NULL;
  abs.initrd = spec->initrd ? initrd : NULL;
  abs.disk = spec->disk ? disk : NULL;

  struct sockaddr_un sa;
  if (strlen(run_dir) + sizeof "/serial.sock" > sizeof sa.sun_path) {
    nc_error("hv", "vm \"%s\": run dir \"%s\" is too long for a unix socket path "
             "(keep it under %zu bytes)", spec->name, run_dir,
             sizeof sa.sun_path - sizeof "/serial.sock");
    return -ENAMETOOLONG;
  }

  struct nc__qemu_argv argv;
  rc = nc__qemu_argv_build(d->qemu, &abs, &argv);
  if (rc < 0) {
    nc_error("hv", "vm \"%s\": spec rejected (%s): needs 1-255 vcpus, memory a whole number of "
             "MiB >= 16 MiB, initrd/cmdline only with a kernel, incoming NULL or \"defer\"",
             spec->name, nc_strerror(rc));
    return rc;
  }

  struct nc_hv_vm *vm = vm_new(d, spec->name, run_dir);
  if (!vm) {
    nc__qemu_argv_free(&argv);
    return -ENOMEM;
  }
  if (find_live(vm) == 0) {
    vm_fail(vm, "a QEMU (pid %d) already runs in %s; adopt it or kill it first", (int)vm->pid,
            run_dir);
    rc = -EEXIST;
    goto fail_nospawn;
  }
  remove_runtime_files(vm);
  /* A new run starts a new console log (QEMU appends to it: logappend). */
  char serial[PATH_MAX + 16];
  vm_path(vm, "serial.log", serial, sizeof serial);
  if (truncate(serial, 0) < 0 && errno != ENOENT)
    nc_warn("hv", "vm \"%s\": truncating %s: %s", vm->name, serial, strerror(errno));
  vm_path(vm, "serial.log.1", serial, sizeof serial);
  unlink(serial);

  char logpath[PATH_MAX + 16];
  vm_path(vm, "qemu.log", logpath, sizeof logpath);
  rc = nc__proc_spawn_detached(argv.argv, logpath, &vm->pid, &vm->pidfd);
  if (rc < 0) {
    vm_fail(vm, "cannot start %s: %s", d->qemu, nc_strerror(rc));
    goto fail_nospawn;
  }
  nc_debug("hv", "vm \"%s\": qemu pid %d spawned", vm->name, (int)vm->pid);

  rc = wait_ready(vm, t0 + d->launch_timeout_ms);
  if (rc < 0)
    goto fail;
  pid_t filepid;
  if (read_pid_file(vm, &filepid) < 0 || filepid != vm->pid)
    nc_warn("hv", "vm \"%s\": qemu.pid does not hold pid %d", vm->name, (int)vm->pid);
  nc_info("hv", "vm \"%s\": qemu pid %d ready in %lld ms", vm->name, (int)vm->pid,
          (long long)(now_ms() - t0));
  nc__qemu_argv_free(&argv);
  *out = vm;
  return 0;

fail:
  nc_qmp_close(vm->qmp);
  vm->qmp = NULL;
  if (vm_alive(vm)) {
    nc__proc_signal(vm->pid, vm->pidfd, SIGKILL);
    nc__proc_wait_gone(vm->pid, vm->pidfd, KILL_WAIT_MS);
  }
  remove_runtime_files(vm);
fail_nospawn:
  nc__qemu_argv_free(&argv);
  vm_free(vm);
  return rc;
}

static int qemu_adopt(struct nc_hv *hv, const struct nc_hv_spec *spec, struct nc_hv_vm **out) {
  struct nc_hv_qemu *d = (struct nc_hv_qemu *)hv;
  *out = NULL;
  if (!spec || !spec->run_dir)
    return NC_E_INVALID;
  char run_dir[PATH_MAX];
  if (!realpath(spec->run_dir, run_dir))
    return errno == ENOENT ? -ESRCH : -errno;
  struct nc_hv_vm *vm = vm_new(d, spec->name, run_dir);
  if (!vm)
    return -ENOMEM;
  int rc = find_live(vm);
  if (rc < 0) {
    vm_free(vm);
    return rc;
  }
  char path[PATH_MAX + 16];
  vm_path(vm, "qmp.sock", path, sizeof path);
  rc = nc_qmp_connect(path, NULL, d->qmp_timeout_ms, &vm->qmp);
  if (rc < 0) {
    /* Alive but unreachable: QMP serves one client at a time, so another
     * holder of the socket shows up here as a timeout. */
    nc_error("hv", "vm \"%s\": qemu pid %d is alive but QMP at %s fails: %s", vm->name,
             (int)vm->pid, path, nc_strerror(rc));
    vm_free(vm);
    return rc;
  }
  nc_info("hv", "vm \"%s\": adopted qemu pid %d", vm->name, (int)vm->pid);
  *out = vm;
  return 0;
}

/* QEMU run states: qapi/run-state.json, RunState. */
static enum nc_hv_state map_status(const char *s) {
  if (strcmp(s, "running") == 0)
    return NC_HV_RUNNING;
  if (strcmp(s, "paused") == 0)
    return NC_HV_PAUSED;
  if (strcmp(s, "shutdown") == 0)
    return NC_HV_SHUTDOWN;
  if (strcmp(s, "inmigrate") == 0)
    return NC_HV_INMIGRATE;
  return NC_HV_OTHER;
}

static int qemu_query(struct nc_hv_vm *vm, enum nc_hv_state *state) {
  if (!vm_alive(vm)) {
    nc_qmp_close(vm->qmp);
    vm->qmp = NULL;
    *state = NC_HV_GONE;
    return 0;
  }
  json_t *ret;
  int rc = vm_exec(vm, "query-status", NULL, vm->drv->qmp_timeout_ms, &ret);
  if (rc == -ESRCH) {
    *state = NC_HV_GONE;
    return 0;
  }
  if (rc < 0)
    return rc;
  const char *s = json_string_value(json_object_get(ret, "status"));
  if (!s) {
    json_decref(ret);
    vm_fail(vm, "query-status returned no status");
    return NC_E_PROTO;
  }
  *state = map_status(s);
  json_decref(ret);
  drain_events(vm);
  return 0;
}

static int simple_command(struct nc_hv_vm *vm, const char *cmd) {
  int rc = vm_exec(vm, cmd, NULL, vm->drv->qmp_timeout_ms, NULL);
  if (rc < 0 && rc != -ESRCH)
    nc_error("hv", "vm \"%s\": %s", vm->name, vm->last_error);
  drain_events(vm);
  return rc;
}

static int qemu_pause(struct nc_hv_vm *vm) { return simple_command(vm, "stop"); }
static int qemu_resume(struct nc_hv_vm *vm) { return simple_command(vm, "cont"); }
static int qemu_reboot(struct nc_hv_vm *vm) { return simple_command(vm, "system_reset"); }

static int qemu_shutdown(struct nc_hv_vm *vm, int timeout_ms) {
  if (!vm_alive(vm)) {
    nc_qmp_close(vm->qmp);
    vm->qmp = NULL;
    remove_runtime_files(vm);
    return 0;
  }
  int64_t deadline = now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
  int rc = vm_exec(vm, "system_powerdown", NULL, vm->drv->qmp_timeout_ms, NULL);
  if (rc < 0 && rc != -ESRCH)
    nc_warn("hv", "vm \"%s\": %s; quitting QEMU instead", vm->name, vm->last_error);
  bool powered_off = false;
  while (rc == 0 && vm_alive(vm)) {
    json_t *ret;
    if (vm_exec(vm, "query-status", NULL, vm->drv->qmp_timeout_ms, &ret) == 0) {
      const char *s = json_string_value(json_object_get(ret, "status"));
      powered_off = s && strcmp(s, "shutdown") == 0;
      json_decref(ret);
    }
    int left = remaining_ms(deadline);
    if (powered_off || left == 0 || !vm->qmp)
      break;
    /* SHUTDOWN arrives as an event: wake on it instead of sleeping. */
    nc_qmp_wait_event(vm->qmp, left < 200 ? left : 200);
    drain_events(vm);
  }
  if (!powered_off && vm_alive(vm))
    nc_warn("hv", "vm \"%s\": guest did not power off within %d ms; quitting QEMU", vm->name,
            timeout_ms);
  return end_process(vm);
}

static void qemu_release(struct nc_hv_vm *vm) { vm_free(vm); }

static int qemu_kill(struct nc_hv_vm *vm) {
  if (!vm)
    return 0;
  int rc = end_process(vm);
  if (rc == 0)
    nc_info("hv", "vm \"%s\": qemu pid %d is gone", vm->name, (int)vm->pid);
  vm_free(vm);
  return rc;
}

static uint64_t json_u64(const json_t *obj, const char *key) {
  json_t *v = json_object_get(obj, key);
  json_int_t i = json_is_integer(v) ? json_integer_value(v) : 0;
  return i > 0 ? (uint64_t)i : 0;
}

static int qemu_stats(struct nc_hv_vm *vm, struct nc_hv_stats *out) {
  memset(out, 0, sizeof *out);
  out->pid = (int)vm->pid;
  if (!vm_alive(vm))
    return -ESRCH;
  int rc = nc__proc_cpu_ns(vm->pid, &out->cpu_time_ns);
  if (rc == 0)
    rc = nc__proc_rss_bytes(vm->pid, &out->memory_rss_bytes);
  if (rc < 0)
    return rc;

  json_t *ret;
  rc = vm_exec(vm, "query-memory-size-summary", NULL, vm->drv->qmp_timeout_ms, &ret);
  if (rc < 0)
    return rc;
  out->memory_bytes = json_u64(ret, "base-memory") + json_u64(ret, "plugged-memory");
  json_decref(ret);

  /* One entry per guest-visible drive; "stats" counts guest I/O at the
   * device, the nested "parent" entries count what reached the file. */
  rc = vm_exec(vm, "query-blockstats", NULL, vm->drv->qmp_timeout_ms, &ret);
  if (rc < 0)
    return rc;
  size_t i;
  json_t *dev;
  json_array_foreach(ret, i, dev) {
    json_t *st = json_object_get(dev, "stats");
    out->block_rd_bytes += json_u64(st, "rd_bytes");
    out->block_wr_bytes += json_u64(st, "wr_bytes");
  }
  json_decref(ret);
  /* net_rx/tx_bytes: see qemu.h; QEMU has no counters to report. */
  drain_events(vm);
  return 0;
}

/* Looks the tag up in the snapshot table of node disk0 (query-block).
 * -ENOTSUP when the VM has no such node. */
static int snapshot_exists(struct nc_hv_vm *vm, const char *tag, bool *exists) {
  *exists = false;
  json_t *ret;
  int rc = vm_exec(vm, "query-block", NULL, vm->drv->qmp_timeout_ms, &ret);
  if (rc < 0)
    return rc;
  rc = -ENOTSUP;
  size_t i, j;
  json_t *dev, *snap;
  json_array_foreach(ret, i, dev) {
    json_t *ins = json_object_get(dev, "inserted");
    const char *node = json_string_value(json_object_get(ins, "node-name"));
    if (!node || strcmp(node, SNAPSHOT_NODE) != 0)
      continue;
    rc = 0;
    json_t *snaps = json_object_get(json_object_get(ins, "image"), "snapshots");
    json_array_foreach(snaps, j, snap) {
      const char *name = json_string_value(json_object_get(snap, "name"));
      if (name && strcmp(name, tag) == 0)
        *exists = true;
    }
  }
  json_decref(ret);
  if (rc == -ENOTSUP)
    vm_fail(vm, "no qcow2 disk node \"%s\": snapshots need a disk", SNAPSHOT_NODE);
  return rc;
}

/* Status and error text of job id, from query-jobs. */
static int job_status(struct nc_hv_vm *vm, const char *id, char *status, size_t cap,
                      char *err, size_t err_cap) {
  json_t *ret;
  int rc = vm_exec(vm, "query-jobs", NULL, vm->drv->qmp_timeout_ms, &ret);
  if (rc < 0)
    return rc;
  rc = -ENOENT;
  size_t i;
  json_t *job;
  json_array_foreach(ret, i, job) {
    const char *jid = json_string_value(json_object_get(job, "id"));
    if (!jid || strcmp(jid, id) != 0)
      continue;
    const char *s = json_string_value(json_object_get(job, "status"));
    const char *e = json_string_value(json_object_get(job, "error"));
    snprintf(status, cap, "%s", s ? s : "");
    snprintf(err, err_cap, "%s", e ? e : "");
    rc = 0;
    break;
  }
  json_decref(ret);
  return rc;
}

static void job_dismiss(struct nc_hv_vm *vm, const char *id) {
  json_t *args = json_pack("{s:s}", "id", id);
  if (args && vm_exec(vm, "job-dismiss", args, vm->drv->qmp_timeout_ms, NULL) < 0)
    nc_warn("hv", "vm \"%s\": job-dismiss %s: %s", vm->name, id, vm->last_error);
  json_decref(args);
}

/* Runs a snapshot job (QEMU >= 6.0, qapi/migration.json) to its end:
 * start it, poll query-jobs (waking early on JOB_STATUS_CHANGE events)
 * until "concluded", then job-dismiss. args is the caller's; "job-id" is
 * added to it. */
static int run_job(struct nc_hv_vm *vm, const char *cmd, json_t *args, int timeout_ms) {
  if (timeout_ms <= 0)
    timeout_ms = DEFAULT_JOB_TIMEOUT_MS;
  int64_t deadline = now_ms() + timeout_ms;
  char id[64];
  snprintf(id, sizeof id, "nc-%s-%d-%u", cmd, (int)getpid(), ++vm->job_seq);
  json_object_set_new(args, "job-id", json_string(id));

  int64_t t0 = now_ms();
  /* The snapshot runs in QEMU's main loop before the command returns,
   * so the reply itself can take as long as the job. */
  int rc = vm_exec(vm, cmd, args, remaining_ms(deadline), NULL);
  if (rc < 0) {
    nc_error("hv", "vm \"%s\": %s", vm->name, vm->last_error);
    return rc;
  }
  char status[32], err[LAST_ERROR_MAX - 64];
  for (;;) {
    rc = job_status(vm, id, status, sizeof status, err, sizeof err);
    if (rc < 0 || strcmp(status, "concluded") == 0)
      break;
    int left = remaining_ms(deadline);
    if (left == 0) {
      rc = -ETIMEDOUT;
      break;
    }
    if (vm->qmp)
      nc_qmp_wait_event(vm->qmp, left < 50 ? left : 50);
    drain_events(vm);
  }
  drain_events(vm);
  if (rc == -ENOENT) {
    vm_fail(vm, "%s: job %s vanished before it concluded", cmd, id);
    return NC_E_HV;
  }
  if (rc == -ETIMEDOUT) {
    json_t *cargs = json_pack("{s:s}", "id", id);
    if (cargs)
      vm_exec(vm, "job-cancel", cargs, vm->drv->qmp_timeout_ms, NULL);
    json_decref(cargs);
    vm_fail(vm, "%s: job %s still %s after %d ms; cancelled", cmd, id, status, timeout_ms);
    return -ETIMEDOUT;
  }
  if (rc < 0)
    return rc;
  job_dismiss(vm, id);
  if (err[0]) {
    vm_fail(vm, "%s: %s", cmd, err);
    return NC_E_HV;
  }
  nc_info("hv", "vm \"%s\": %s took %lld ms", vm->name, cmd, (long long)(now_ms() - t0));
  return 0;
}

enum snap_op { SNAP_SAVE, SNAP_LOAD, SNAP_DELETE };

static int snapshot_op(struct nc_hv_vm *vm, enum snap_op op, const char *tag, int timeout_ms) {
  static const char *const cmds[] = {"snapshot-save", "snapshot-load", "snapshot-delete"};
  vm->last_error[0] = '\0';
  if (!tag || !*tag)
    return NC_E_INVALID;
  bool exists;
  int rc = snapshot_exists(vm, tag, &exists);
  if (rc < 0)
    return rc;
  if (op == SNAP_SAVE && exists) {
    vm_fail(vm, "snapshot \"%s\" already exists; delete it first", tag);
    return -EEXIST;
  }
  if (op != SNAP_SAVE && !exists) {
    vm_fail(vm, "no snapshot \"%s\"", tag);
    return -ENOENT;
  }
  json_t *args;
  if (op == SNAP_DELETE)
    args = json_pack("{s:s, s:[s]}", "tag", tag, "devices", SNAPSHOT_NODE);
  else
    args = json_pack("{s:s, s:s, s:[s]}", "tag", tag, "vmstate", SNAPSHOT_NODE, "devices",
                     SNAPSHOT_NODE);
  if (!args)
    return -ENOMEM;
  rc = run_job(vm, cmds[op], args, timeout_ms);
  json_decref(args);
  return rc;
}

static int qemu_snapshot_save(struct nc_hv_vm *vm, const char *tag, int timeout_ms) {
  return snapshot_op(vm, SNAP_SAVE, tag, timeout_ms);
}
static int qemu_snapshot_load(struct nc_hv_vm *vm, const char *tag, int timeout_ms) {
  return snapshot_op(vm, SNAP_LOAD, tag, timeout_ms);
}
static int qemu_snapshot_delete(struct nc_hv_vm *vm, const char *tag, int timeout_ms) {
  return snapshot_op(vm, SNAP_DELETE, tag, timeout_ms);
}

static int qemu_machines(struct nc_hv *hv, const struct nc_hv_machines **out) {
  struct nc_hv_qemu *d = (struct nc_hv_qemu *)hv;
  pthread_mutex_lock(&d->machines_mu);
  int rc = 0;
  if (!d->machines) {
    if (d->machines_rc && now_ms() - d->machines_failed_ms < MACHINES_RETRY_MS) {
      rc = d->machines_rc;
      goto out;
    }
    struct nc_hv_machines *m = malloc(sizeof *m);
    rc = m ? nc_hv_qemu_machines(d->qemu, m) : -ENOMEM;
    if (rc) {
      free(m);
      d->machines_rc = rc;
      d->machines_failed_ms = now_ms();
      nc_warn("hv", "cannot list the machine types of %s (%s -machine help): %s", d->qemu,
              d->qemu, nc_strerror(rc));
      goto out;
    }
    d->machines = m;
    d->machines_rc = 0;
    const char *pc = nc_hv_machines_resolve(m, "pc");
    nc_info("hv", "%s: %zu machine types; \"pc\" is %s", d->qemu, m->n, pc ? pc : "missing");
  }
  *out = d->machines;
out:
  pthread_mutex_unlock(&d->machines_mu);
  return rc;
}

static void qemu_destroy(struct nc_hv *hv) {
  struct nc_hv_qemu *d = (struct nc_hv_qemu *)hv;
  if (!d)
    return;
  pthread_mutex_destroy(&d->machines_mu);
  free(d->machines);
  free(d);
}

static const struct nc_hv_ops qemu_ops = {
    .version = 2,
    .name = "qemu",
    .launch = qemu_launch,
    .adopt = qemu_adopt,
    .query = qemu_query,
    .pause = qemu_pause,
    .resume = qemu_resume,
    .reboot = qemu_reboot,
    .shutdown = qemu_shutdown,
    .kill = qemu_kill,
    .stats = qemu_stats,
    .snapshot_save = qemu_snapshot_save,
    .snapshot_load = qemu_snapshot_load,
    .snapshot_delete = qemu_snapshot_delete,
    .release = qemu_release,
    .destroy = qemu_destroy,
    .machines = qemu_machines,
};

int nc_hv_qemu_new(const struct nc_hv_qemu_config *cfg, struct nc_hv **out) {
  *out = NULL;
  const char *qemu = cfg && cfg->qemu_path ? cfg->qemu_path : "qemu-system-x86_64";
  const char *img = cfg && cfg->qemu_img_path ? cfg->qemu_img_path : "qemu-img";
  struct nc_hv_qemu *d = calloc(1, sizeof *d);
  if (!d)
    return -ENOMEM;
  d->base.ops = &qemu_ops;
  pthread_mutex_init(&d->machines_mu, NULL);
  int rc = nc__proc_find_program(qemu, d->qemu, sizeof d->qemu);
  if (rc < 0) {
    nc_error("hv", "qemu binary \"%s\" not found or not executable (%s); install "
             "qemu-system-x86 from bookworm-backports or set its path", qemu, nc_strerror(rc));
    pthread_mutex_destroy(&d->machines_mu);
    free(d);
    return rc;
  }
  if (nc__proc_find_program(img, d->qemu_img, sizeof d->qemu_img) < 0) {
    nc_warn("hv", "qemu-img \"%s\" not found; disk helpers will fail", img);
    snprintf(d->qemu_img, sizeof d->qemu_img, "%s", img);
  }
  d->launch_timeout_ms = cfg && cfg->launch_timeout_ms > 0 ? cfg->launch_timeout_ms
                                                           : DEFAULT_LAUNCH_TIMEOUT_MS;
  d->qmp_timeout_ms = cfg && cfg->qmp_timeout_ms > 0 ? cfg->qmp_timeout_ms
                                                     : DEFAULT_QMP_TIMEOUT_MS;
  int major, minor;
  if (nc_hv_qemu_version(d->qemu, &major, &minor) == 0) {
    if (major < 9)
      nc_warn("hv", "%s is QEMU %d.%d; 9.0 or newer is needed (older TCG corrupts guests "
              "during migration)", d->qemu, major, minor);
  } else {
    nc_warn("hv", "could not read the version of %s", d->qemu);
  }
  /* Asked now, so the first VM created does not wait for it and the log
   * says at start-up which type new VMs get. A failure is retried later. */
  const struct nc_hv_machines *ms;
  (void)qemu_machines(&d->base, &ms);
  *out = &d->base;
  return 0;
}

struct nc_qmp *nc_hv_qemu_vm_qmp(struct nc_hv_vm *vm) {
  struct nc_qmp *q = NULL;
  return vm_qmp(vm, &q) == 0 ? q : NULL;
}

pid_t nc_hv_qemu_vm_pid(const struct nc_hv_vm *vm) { return vm->pid; }

const char *nc_hv_qemu_vm_last_error(const struct nc_hv_vm *vm) { return vm->last_error; }
