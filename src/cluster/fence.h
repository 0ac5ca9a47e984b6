/* Self-fencing of HA VMs.
 *
 * A node may run its HA VMs only while it holds its cluster lease. The
 * daemon does not enforce that itself (it might be the thing that hangs or
 * dies): a small separate process, the fence guard (`novacrond
 * --fence-guard DIR`), does. The daemon writes a fence file after every
 * successful lease keep-alive; the guard reads it every
 * NC_FENCE_POLL_MS and, once the deadline in it has passed, SIGKILLs the
 * QEMU of every VM the file lists, and keeps doing so while the deadline
 * stays in the past. See docs/ha.md for the timing argument.
 *
 * The fence file (<DIR>/fence, replaced atomically; text, one item per
 * line, at most NC_FENCE_VMS_MAX vm lines of at most NC_FENCE_LINE_MAX
 * bytes):
 *   deadline <ms on CLOCK_MONOTONIC>
 *   vm <run directory of an HA VM>
 * CLOCK_MONOTONIC is one clock for every process on the host, so the
 * deadline means the same to the daemon and the guard. A missing or
 * unreadable file fences nothing (there is nothing to protect yet); a file
 * that does not parse fences every run dir it could read, because the
 * daemon never writes one. */
#ifndef NC_CLUSTER_FENCE_H
#define NC_CLUSTER_FENCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NC_FENCE_VMS_MAX 1024
#define NC_FENCE_LINE_MAX 1100
#define NC_FENCE_POLL_MS 100

struct nc_fence_file {
  int64_t deadline_ms; /* CLOCK_MONOTONIC; 0 = none given */
  size_t nvms, cap;
  char (*vms)[NC_FENCE_LINE_MAX]; /* run directories */
};

/* Parses a fence file's text (len bytes, need not be NUL-terminated).
 * On success out owns its array (nc_fence_file_clear). -EINVAL for a
 * malformed line (out then holds what parsed before it), NC_E_TOOBIG past
 * the caps. */
int nc_fence_parse(const char *text, size_t len, struct nc_fence_file *out);
void nc_fence_file_clear(struct nc_fence_file *f);

/* Writes DIR/fence atomically (temp file + rename). */
int nc_fence_write(const char *dir, int64_t deadline_ms, const char *const *run_dirs,
                   size_t n);

/* SIGKILLs the QEMU whose pid file is run_dir/qemu.pid, if that pid is a
 * live process whose command line names run_dir (so a reused pid is never
 * hit). 0 when killed, -ESRCH when nothing ran there. */
int nc_fence_kill_run_dir(const char *run_dir);

/* The guard's main loop: runs until SIGTERM. Logs each fencing. */
int nc_fence_guard_main(const char *dir);

/* Milliseconds on CLOCK_MONOTONIC. */
int64_t nc_fence_now_ms(void);

#endif
