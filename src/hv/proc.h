/* Process helpers for the QEMU driver: spawning without a shell and
 * watching processes that are not our children. Internal to src/hv.
 *
 * A detached QEMU is reparented to init (or to a subreaper), and on some
 * hosts nobody reaps it: a dead QEMU can linger as a zombie whose pid
 * still answers kill(pid, 0). A pidfd (Linux >= 5.3) names the process
 * itself, not the number, so it cannot be fooled by pid reuse, and it
 * polls readable once the process has exited, zombie or not. Where
 * pidfds are missing we fall back to kill(pid, 0) plus the state letter
 * in /proc/<pid>/stat. */
#ifndef NC_HV_PROC_H
#define NC_HV_PROC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Starts argv[0] (an absolute path) detached: a double fork with setsid
 * between, so the process belongs to no session of ours and outlives us.
 * Its stdin is /dev/null, stdout and stderr go to log_path (created or
 * truncated), its cwd is "/", signal mask and dispositions are reset, and
 * no other descriptor of ours survives exec. On success *pid is the
 * process and *pidfd a pidfd for it (-1 if the kernel has none; the
 * caller closes it). Returns -errno of a failed exec (e.g. -ENOENT). */
int nc__proc_spawn_detached(char *const argv[], const char *log_path, pid_t *pid, int *pidfd);

/* Runs argv[0] (absolute path) as a child and waits for it, collecting
 * stdout and stderr together into out (at most out_cap - 1 bytes kept,
 * always NUL-terminated; the rest is read and discarded). Kills it with
 * SIGKILL after timeout_ms (< 0: no limit) and returns -ETIMEDOUT. On
 * success *exit_code is the exit status, or 128 + signal. */
int nc__proc_run(char *const argv[], int timeout_ms, char *out, size_t out_cap,
                 int *exit_code);

/* Resolves a program name through PATH (names containing '/' are taken as
 * they are). Writes an absolute or as-given path into out. -ENOENT. */
int nc__proc_find_program(const char *name, char *out, size_t out_cap);

/* pidfd for pid, or -1 with *err set (-ESRCH: no such process). */
int nc__proc_pidfd_open(pid_t pid, int *err);

/* 1 while the process runs (not a zombie), 0 once it has exited. */
int nc__proc_alive(pid_t pid, int pidfd);
/* Waits up to timeout_ms for the process to exit: 0, or -ETIMEDOUT. */
int nc__proc_wait_gone(pid_t pid, int pidfd, int timeout_ms);
/* Sends sig through the pidfd when there is one. 0, -ESRCH, -EPERM. */
int nc__proc_signal(pid_t pid, int pidfd, int sig);

/* user+system CPU time and resident set size from /proc. */
int nc__proc_cpu_ns(pid_t pid, uint64_t *ns);
int nc__proc_rss_bytes(pid_t pid, uint64_t *bytes);
/* The state letter of /proc/<pid>/stat ('R', 'S', 'Z', ...), or a
 * negative error. */
int nc__proc_state(pid_t pid);

/* 1 if any argument of the process starts with prefix, 0 if none does,
 * -ESRCH if the process is gone. Reads at most 1 MiB of cmdline. */
int nc__proc_cmdline_has_prefix(pid_t pid, const char *prefix);

/* Reads the last out_cap - 1 bytes of path into out (NUL-terminated,
 * NUL bytes replaced). Returns the length, or a negative error. */
int nc__proc_read_tail(const char *path, char *out, size_t out_cap);
/* Reads a pid file: a decimal pid > 1, optionally followed by a newline.
 * -ESRCH when the file is missing or holds anything else. */
int nc__proc_read_pid(const char *path, pid_t *pid);
/* Reads a whole small file (< out_cap bytes) into out, NUL-terminated.
 * NC_E_TOOBIG if it does not fit. Returns the length. */
int nc__proc_read_small(const char *path, char *out, size_t out_cap);

/* Sleeps for ms milliseconds (restarting after signals). */
void nc__proc_sleep_ms(int ms);

#endif
