/* Self-fencing of HA VMs: the fence file and the guard. See fence.h. */
#include "cluster/fence.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "hv/proc.h"
#include "hv/qemu_argv.h"
#include "util/err.h"
#include "util/log.h"

#define COMPONENT "fence"
#define FENCE_FILE_MAX ((size_t)NC_FENCE_VMS_MAX * (NC_FENCE_LINE_MAX + 4) + 64)

int64_t nc_fence_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void nc_fence_file_clear(struct nc_fence_file *f) {
  if (!f)
    return;
  free(f->vms);
  memset(f, 0, sizeof *f);
}

static int parse_line(const char *l, size_t n, struct nc_fence_file *out) {
  static const char dl[] = "deadline ", vm[] = "vm ";
  if (n >= sizeof dl - 1 && memcmp(l, dl, sizeof dl - 1) == 0) {
    char num[24];
    size_t k = n - (sizeof dl - 1);
    if (k == 0 || k >= sizeof num)
      return -EINVAL;
    memcpy(num, l + sizeof dl - 1, k);
    num[k] = '\0';
    char *end = NULL;
    errno = 0;
    long long v = strtoll(num, &end, 10);
    if (errno || *end || v < 0)
      return -EINVAL;
    out->deadline_ms = v;
    return 0;
  }
  if (n > sizeof vm - 1 && memcmp(l, vm, sizeof vm - 1) == 0) {
    size_t k = n - (sizeof vm - 1);
    if (k >= NC_FENCE_LINE_MAX)
      return NC_E_TOOBIG;
    if (l[sizeof vm - 1] != '/' || memchr(l + sizeof vm - 1, '\0', k))
      return -EINVAL;
    if (out->nvms == NC_FENCE_VMS_MAX)
      return NC_E_TOOBIG;
    if (out->nvms == out->cap) {
      size_t ncap = out->cap ? out->cap * 2 : 8;
      void *v = realloc(out->vms, ncap * sizeof *out->vms);
      if (!v)
        return -ENOMEM;
      out->vms = v;
      out->cap = ncap;
    }
    memcpy(out->vms[out->nvms], l + sizeof vm - 1, k);
    out->vms[out->nvms][k] = '\0';
    out->nvms++;
    return 0;
  }
  return n == 0 ? 0 : -EINVAL;
}

int nc_fence_parse(const char *text, size_t len, struct nc_fence_file *out) {
  if (!out || (!text && len))
    return -EINVAL;
  memset(out, 0, sizeof *out);
  size_t i = 0;
  while (i < len) {
    const char *nl = memchr(text + i, '\n', len - i);
    size_t n = nl ? (size_t)(nl - (text + i)) : len - i;
    int rc = parse_line(text + i, n, out);
    if (rc < 0)
      return rc;
    i += n + (nl ? 1 : 0);
  }
  return 0;
}

int nc_fence_write(const char *dir, int64_t deadline_ms, const char *const *run_dirs,
                   size_t n) {
  if (!dir || n > NC_FENCE_VMS_MAX || (n && !run_dirs))
    return -EINVAL;
  char path[1024], tmp[1100];
  if ((size_t)snprintf(path, sizeof path, "%s/fence", dir) >= sizeof path)
    return NC_E_TOOBIG;
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *f = fopen(tmp, "w");
  if (!f)
    return -errno;
  fprintf(f, "deadline %lld\n", (long long)deadline_ms);
  for (size_t i = 0; i < n; i++) {
    if (run_dirs[i][0] != '/' || strlen(run_dirs[i]) >= NC_FENCE_LINE_MAX ||
        strchr(run_dirs[i], '\n')) {
      fclose(f);
      unlink(tmp);
      return -EINVAL;
    }
    fprintf(f, "vm %s\n", run_dirs[i]);
  }
  int rc = 0;
  if (fflush(f) != 0 || fsync(fileno(f)) != 0)
    rc = -errno;
  if (fclose(f) != 0 && rc == 0)
    rc = -errno;
  if (rc == 0 && rename(tmp, path) != 0)
    rc = -errno;
  if (rc)
    unlink(tmp);
  return rc;
}

int nc_fence_kill_run_dir(const char *run_dir) {
  char pidfile[1200], qmp_arg[1300];
  snprintf(pidfile, sizeof pidfile, "%s/qemu.pid", run_dir);
  pid_t pid = 0;
  if (nc__proc_read_pid(pidfile, &pid) != 0)
    return -ESRCH;
  if (nc__qemu_qmp_arg(run_dir, qmp_arg, sizeof qmp_arg) != 0)
    return -ESRCH;
  int err = 0;
  int pidfd = nc__proc_pidfd_open((pid_t)pid, &err);
  int rc = -ESRCH;
  if (nc__proc_alive((pid_t)pid, pidfd) == 1 &&
      nc__proc_cmdline_has_prefix((pid_t)pid, qmp_arg) == 1)
    rc = nc__proc_signal((pid_t)pid, pidfd, SIGKILL);
  if (pidfd >= 0)
    close(pidfd);
  return rc;
}

static volatile sig_atomic_t guard_stop;
static void on_term(int sig) {
  (void)sig;
  guard_stop = 1;
}

int nc_fence_guard_main(const char *dir) {
  struct sigaction sa = {.sa_handler = on_term};
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  char path[1024];
  snprintf(path, sizeof path, "%s/fence", dir);
  char *buf = malloc(FENCE_FILE_MAX + 1);
  if (!buf)
    return -ENOMEM;
  nc_info(COMPONENT, "fence guard watching %s", path);
  bool fenced_logged = false;
  while (!guard_stop) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      size_t len = 0;
      ssize_t r;
      while (len < FENCE_FILE_MAX &&
             (r = read(fd, buf + len, FENCE_FILE_MAX - len)) > 0)
        len += (size_t)r;
      close(fd);
      struct nc_fence_file ff;
      int rc = nc_fence_parse(buf, len, &ff);
      bool expired = rc < 0 || ff.deadline_ms == 0 || nc_fence_now_ms() > ff.deadline_ms;
      if (expired) {
        for (size_t i = 0; i < ff.nvms; i++)
          if (nc_fence_kill_run_dir(ff.vms[i]) == 0)
            nc_warn(COMPONENT, "cluster lease lost: fenced (killed) the HA vm in %s",
                    ff.vms[i]);
        if (!fenced_logged && ff.nvms)
          nc_warn(COMPONENT, "lease deadline passed; keeping %zu HA vm(s) down", ff.nvms);
        fenced_logged = true;
      } else {
        fenced_logged = false;
      }
      nc_fence_file_clear(&ff);
    }
    nc__proc_sleep_ms(NC_FENCE_POLL_MS);
  }
  free(buf);
  nc_info(COMPONENT, "fence guard stopping");
  return 0;
}
