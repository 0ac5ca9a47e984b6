#include "hv/proc.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "util/clock.h"
#include "util/err.h"

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

#define CMDLINE_MAX_BYTES ((size_t)1 << 20)
#define SPAWN_REPORT_TIMEOUT_MS 10000

static int64_t now_ms(void) { return nc_mono_ms(nc_clock_system()); }

static int remaining_ms(int64_t deadline) {
  if (deadline < 0)
    return -1;
  int64_t left = deadline - now_ms();
  return left <= 0 ? 0 : left > INT_MAX ? INT_MAX : (int)left;
}

void nc__proc_sleep_ms(int ms) {
  struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
  }
}

/* ---- code that runs between fork and exec: async-signal-safe only ---- */

/* What the children tell the parent over a CLOEXEC pipe. Local to one
 * process tree; never stored. */
struct spawn_note {
  int kind; /* NOTE_PID or NOTE_ERRNO */
  int value;
};
enum { NOTE_PID = 1, NOTE_ERRNO = 2 };

static void child_note(int fd, int kind, int value) {
  struct spawn_note n = {kind, value};
  ssize_t w = write(fd, &n, sizeof n); /* atomic: sizeof n < PIPE_BUF */
  (void)w;
}

static void child_reset_signals(void) {
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = SIG_DFL;
  for (int s = 1; s < NSIG; s++)
    sigaction(s, &sa, NULL); /* SIGKILL/SIGSTOP refuse; harmless */
}

/* So that none of the daemon's sockets or files leak into the child,
 * every descriptor from lowfd up is closed by exec. CLOEXEC rather than
 * closing keeps the report pipe usable until exec. */
static void child_cloexec_from(int lowfd, int max_fd) {
  if (syscall(SYS_close_range, (unsigned)lowfd, ~0U, CLOSE_RANGE_CLOEXEC) == 0)
    return;
  for (int fd = lowfd; fd < max_fd; fd++) {
    int fl = fcntl(fd, F_GETFD);
    if (fl >= 0)
      fcntl(fd, F_SETFD, fl | FD_CLOEXEC);
  }
}

static int fd_limit(void) {
  long m = sysconf(_SC_OPEN_MAX);
  return (m < 0 || m > 65536) ? 65536 : (int)m;
}

/* ---------------------------------------------------------------------- */

int nc__proc_pidfd_open(pid_t pid, int *err) {
  long fd = syscall(SYS_pidfd_open, pid, 0);
  if (fd < 0) {
    *err = -errno;
    return -1;
  }
  *err = 0;
  fcntl((int)fd, F_SETFD, FD_CLOEXEC);
  return (int)fd;
}

int nc__proc_spawn_detached(char *const argv[], const char *log_path, pid_t *pid, int *pidfd) {
  *pid = -1;
  *pidfd = -1;
  int rc = 0, devnull = -1, logfd = -1, rep[2] = {-1, -1};
  devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (devnull < 0) {
    rc = -errno;
    goto out;
  }
  logfd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOCTTY, 0640);
  if (logfd < 0) {
    rc = -errno;
    goto out;
  }
  if (pipe2(rep, O_CLOEXEC) < 0) {
    rc = -errno;
    goto out;
  }
  int max_fd = fd_limit();

  pid_t mid = fork();
  if (mid < 0) {
    rc = -errno;
    goto out;
  }
  if (mid == 0) {
    /* Intermediate child: new session, fork again, leave. The grandchild
     * is not a session leader, so it can never regain a terminal, and it
     * is reparented when we exit. */
    if (setsid() < 0) {
      child_note(rep[1], NOTE_ERRNO, errno);
      _exit(1);
    }
    pid_t g = fork();
    if (g < 0) {
      child_note(rep[1], NOTE_ERRNO, errno);
      _exit(1);
    }
    if (g > 0) {
      child_note(rep[1], NOTE_PID, (int)g);
      _exit(0);
    }
    child_reset_signals();
    if (dup2(devnull, 0) < 0 || dup2(logfd, 1) < 0 || dup2(logfd, 2) < 0) {
      child_note(rep[1], NOTE_ERRNO, errno);
      _exit(127);
    }
    child_cloexec_from(3, max_fd);
    if (chdir("/") < 0) {
      child_note(rep[1], NOTE_ERRNO, errno);
      _exit(127);
    }
    execv(argv[0], argv);
    child_note(rep[1], NOTE_ERRNO, errno);
    _exit(127);
  }

  close(rep[1]);
  rep[1] = -1;
  int st;
  while (waitpid(mid, &st, 0) < 0 && errno == EINTR) {
  }

  /* EOF arrives once the grandchild has exec'd (CLOEXEC) or died. */
  pid_t child = -1;
  int child_errno = 0;
  int64_t deadline = now_ms() + SPAWN_REPORT_TIMEOUT_MS;
  for (;;) {
    struct spawn_note n;
    struct pollfd p = {.fd = rep[0], .events = POLLIN};
    int pr = poll(&p, 1, remaining_ms(deadline));
    if (pr < 0 && errno == EINTR)
      continue;
    if (pr <= 0) {
      rc = -ETIMEDOUT;
      break;
    }
    ssize_t r = read(rep[0], &n, sizeof n);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      break;
    if (r != (ssize_t)sizeof n)
      continue;
    if (n.kind == NOTE_PID)
      child = (pid_t)n.value;
    else if (n.kind == NOTE_ERRNO)
      child_errno = n.value;
  }
  if (child_errno != 0)
    rc = -child_errno;
  else if (rc == 0 && child <= 0)
    rc = -ECHILD;
  if (rc == -ETIMEDOUT && child > 0)
    kill(child, SIGKILL);
  if (rc == 0) {
    int err;
    *pid = child;
    *pidfd = nc__proc_pidfd_open(child, &err); /* -1 on old kernels: fine */
  }

out:
  if (devnull >= 0)
    close(devnull);
  if (logfd >= 0)
    close(logfd);
  if (rep[0] >= 0)
    close(rep[0]);
  if (rep[1] >= 0)
    close(rep[1]);
  return rc;
}

int nc__proc_run(char *const argv[], int timeout_ms, char *out, size_t out_cap,
                 int *exit_code) {
  if (out_cap == 0)
    return NC_E_INVALID;
  out[0] = '\0';
  *exit_code = -1;
  if (access(argv[0], X_OK) < 0)
    return -errno;
  int rc = 0, devnull = -1, pp[2] = {-1, -1};
  devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (devnull < 0 || pipe2(pp, O_CLOEXEC) < 0) {
    rc = -errno;
    goto out;
  }
  int max_fd = fd_limit();
  pid_t pid = fork();
  if (pid < 0) {
    rc = -errno;
    goto out;
  }
  if (pid == 0) {
    child_reset_signals();
    if (dup2(devnull, 0) < 0 || dup2(pp[1], 1) < 0 || dup2(pp[1], 2) < 0)
      _exit(127);
    child_cloexec_from(3, max_fd);
    execv(argv[0], argv);
    _exit(127);
  }
  close(pp[1]);
  pp[1] = -1;

  int64_t deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
  size_t used = 0;
  for (;;) {
    struct pollfd p = {.fd = pp[0], .events = POLLIN};
    int pr = poll(&p, 1, remaining_ms(deadline));
    if (pr < 0 && errno == EINTR)
      continue;
    if (pr == 0) {
      rc = -ETIMEDOUT;
      break;
    }
    char sink[4096];
    char *dst = used + 1 < out_cap ? out + used : sink;
    size_t room = used + 1 < out_cap ? out_cap - 1 - used : sizeof sink;
    ssize_t r = read(pp[0], dst, room);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      break;
    if (dst != sink)
      used += (size_t)r;
  }
  out[used] = '\0';
  if (rc == -ETIMEDOUT)
    kill(pid, SIGKILL);
  int st;
  pid_t w;
  while ((w = waitpid(pid, &st, 0)) < 0 && errno == EINTR) {
  }
  if (w < 0 && rc == 0)
    rc = -errno; /* -ECHILD when SIGCHLD is ignored by the process */
  else if (w >= 0 && rc == 0)
    *exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);

out:
  if (devnull >= 0)
    close(devnull);
  if (pp[0] >= 0)
    close(pp[0]);
  if (pp[1] >= 0)
    close(pp[1]);
  return rc;
}

static int is_executable_file(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

int nc__proc_find_program(const char *name, char *out, size_t out_cap) {
  if (!name || !*name)
    return NC_E_INVALID;
  if (strchr(name, '/')) {
    char abs[PATH_MAX];
    if (!realpath(name, abs))
      return -errno;
    if (!is_executable_file(abs))
      return -EACCES;
    if ((size_t)snprintf(out, out_cap, "%s", abs) >= out_cap)
      return -ENAMETOOLONG;
    return 0;
  }
  const char *path = getenv("PATH");
  if (!path || !*path)
    path = "/usr/local/bin:/usr/bin:/bin";
  const char *p = path;
  while (*p) {
    const char *end = strchr(p, ':');
    size_t n = end ? (size_t)(end - p) : strlen(p);
    if (n > 0 && p[0] == '/') {
      char cand[PATH_MAX];
      if ((size_t)snprintf(cand, sizeof cand, "%.*s/%s", (int)n, p, name) < sizeof cand &&
          is_executable_file(cand)) {
        if ((size_t)snprintf(out, out_cap, "%s", cand) >= out_cap)
          return -ENAMETOOLONG;
        return 0;
      }
    }
    p += n;
    if (*p == ':')
      p++;
  }
  return -ENOENT;
}

int nc__proc_read_small(const char *path, char *out, size_t out_cap) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return -errno;
  size_t used = 0;
  int rc = 0;
  for (;;) {
    if (used + 1 >= out_cap) {
      char c;
      ssize_t r = read(fd, &c, 1);
      rc = r > 0 ? NC_E_TOOBIG : 0;
      break;
    }
    ssize_t r = read(fd, out + used, out_cap - 1 - used);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0) {
      rc = -errno;
      break;
    }
    if (r == 0)
      break;
    used += (size_t)r;
  }
  close(fd);
  out[used] = '\0';
  return rc < 0 ? rc : (int)used;
}

int nc__proc_read_tail(const char *path, char *out, size_t out_cap) {
  if (out_cap == 0)
    return NC_E_INVALID;
  out[0] = '\0';
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return -errno;
  struct stat st;
  if (fstat(fd, &st) == 0 && st.st_size > (off_t)(out_cap - 1))
    lseek(fd, st.st_size - (off_t)(out_cap - 1), SEEK_SET);
  size_t used = 0;
  while (used + 1 < out_cap) {
    ssize_t r = read(fd, out + used, out_cap - 1 - used);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      break;
    used += (size_t)r;
  }
  close(fd);
  for (size_t i = 0; i < used; i++)
    if (out[i] == '\0')
      out[i] = '?';
  out[used] = '\0';
  return (int)used;
}

/* /proc/<pid>/stat: "pid (comm) S ppid ...". comm may hold spaces and
 * ')', so fields are counted from the last ')'. proc(5). */
static int read_stat_fields(pid_t pid, char *buf, size_t cap, const char **after) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  int rc = nc__proc_read_small(path, buf, cap);
  if (rc == -ENOENT)
    return -ESRCH;
  if (rc < 0)
    return rc;
  const char *rp = strrchr(buf, ')');
  if (!rp || rp[1] != ' ' || rp[2] == '\0')
    return NC_E_PROTO;
  *after = rp + 2; /* field 3, the state letter */
  return 0;
}

int nc__proc_state(pid_t pid) {
  char buf[4096];
  const char *f;
  int rc = read_stat_fields(pid, buf, sizeof buf, &f);
  return rc < 0 ? rc : (unsigned char)f[0];
}

int nc__proc_cpu_ns(pid_t pid, uint64_t *ns) {
  char buf[4096];
  const char *f;
  int rc = read_stat_fields(pid, buf, sizeof buf, &f);
  if (rc < 0)
    return rc;
  /* Field 3 is the state; utime is field 14 and stime field 15. */
  const char *p = f;
  for (int field = 3; field < 14; field++) {
    p = strchr(p, ' ');
    if (!p)
      return NC_E_PROTO;
    p++;
  }
  char *end;
  errno = 0;
  unsigned long long ut = strtoull(p, &end, 10);
  if (end == p || *end != ' ')
    return NC_E_PROTO;
  p = end + 1;
  unsigned long long stt = strtoull(p, &end, 10);
  if (end == p || errno)
    return NC_E_PROTO;
  long hz = sysconf(_SC_CLK_TCK);
  if (hz <= 0)
    hz = 100;
  *ns = (uint64_t)(ut + stt) * (1000000000ULL / (uint64_t)hz);
  return 0;
}

int nc__proc_rss_bytes(pid_t pid, uint64_t *bytes) {
  char path[64], buf[512];
  snprintf(path, sizeof path, "/proc/%d/statm", (int)pid);
  int rc = nc__proc_read_small(path, buf, sizeof buf);
  if (rc == -ENOENT)
    return -ESRCH;
  if (rc < 0)
    return rc;
  unsigned long long size_pages, rss_pages;
  if (sscanf(buf, "%llu %llu", &size_pages, &rss_pages) != 2)
    return NC_E_PROTO;
  long page = sysconf(_SC_PAGESIZE);
  *bytes = (uint64_t)rss_pages * (uint64_t)(page > 0 ? page : 4096);
  return 0;
}

int nc__proc_alive(pid_t pid, int pidfd) {
  if (pidfd >= 0) {
    struct pollfd p = {.fd = pidfd, .events = POLLIN};
    int r = poll(&p, 1, 0);
    if (r > 0)
      return 0;
    if (r == 0)
      return 1;
  }
  if (pid <= 0)
    return 0;
  if (kill(pid, 0) < 0 && errno == ESRCH)
    return 0;
  int st = nc__proc_state(pid);
  if (st == -ESRCH)
    return 0;
  return (st == 'Z' || st == 'X') ? 0 : 1;
}

int nc__proc_wait_gone(pid_t pid, int pidfd, int timeout_ms) {
  int64_t deadline = now_ms() + (timeout_ms < 0 ? 0 : timeout_ms);
  for (;;) {
    if (!nc__proc_alive(pid, pidfd))
      return 0;
    int left = remaining_ms(deadline);
    if (left == 0)
      return -ETIMEDOUT;
    if (pidfd >= 0) {
      struct pollfd p = {.fd = pidfd, .events = POLLIN};
      poll(&p, 1, left);
    } else {
      nc__proc_sleep_ms(left < 10 ? left : 10);
    }
  }
}

int nc__proc_signal(pid_t pid, int pidfd, int sig) {
  long r;
  if (pidfd >= 0) {
    r = syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0);
    if (r == 0 || errno != ENOSYS)
      return r == 0 ? 0 : -errno;
  }
  r = kill(pid, sig);
  return r == 0 ? 0 : -errno;
}

int nc__proc_cmdline_has_prefix(pid_t pid, const char *prefix) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/cmdline", (int)pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return errno == ENOENT ? -ESRCH : -errno;
  char *buf = malloc(CMDLINE_MAX_BYTES + 1);
  if (!buf) {
    close(fd);
    return -ENOMEM;
  }
  size_t used = 0;
  while (used < CMDLINE_MAX_BYTES) {
    ssize_t r = read(fd, buf + used, CMDLINE_MAX_BYTES - used);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      break;
    used += (size_t)r;
  }
  close(fd);
  buf[used] = '\0';
  size_t plen = strlen(prefix);
  int found = 0;
  for (size_t off = 0; off < used;) {
    size_t alen = strnlen(buf + off, used - off);
    if (alen >= plen && memcmp(buf + off, prefix, plen) == 0) {
      found = 1;
      break;
    }
    off += alen + 1;
  }
  free(buf);
  return found;
}

int nc__proc_read_pid(const char *path, pid_t *pid) {
  char buf[64];
  int n = nc__proc_read_small(path, buf, sizeof buf);
  if (n < 0)
    return -ESRCH;
  char *end;
  errno = 0;
  long v = strtol(buf, &end, 10);
  if (errno || end == buf || v <= 1 || v > INT_MAX || (*end && *end != '\n'))
    return -ESRCH;
  *pid = (pid_t)v;
  return 0;
}
