/* An in-memory hypervisor driver for the manager and API tests.
 *
 * It implements struct nc_hv_ops the way the QEMU driver behaves (see
 * src/hv/hv.h): "processes" live in the driver, keyed by run directory, and
 * outlive handles, so a test can free a manager, build a new one and have it
 * adopt what is still "running". Switches inject failures, make a process
 * die or power off behind the manager's back, and hold launch() at a gate
 * so an operation stays in flight while the test pokes at it.
 *
 * Thread-safe: the manager calls it from operation threads and the
 * reconciler. */
#ifndef NC_TESTS_FAKE_HV_H
#define NC_TESTS_FAKE_HV_H

#include <pthread.h>
#include <stdbool.h>

#include "hv/hv.h"

#define FAKE_HV_PROCS_MAX 64

struct fake_proc {
  char run_dir[1200];
  char name[64];
  enum nc_hv_state state; /* NC_HV_GONE once ended */
  int pid;
  /* what launch() was given */
  int vcpus;
  uint64_t memory_bytes;
  char kernel[1100], disk[1200], cmdline[2200];
  bool nic_user;
  enum nc_hv_accel accel;
  char machine[64]; /* "" when launch() got NULL ("pc") */
  int snapshots; /* saved minus deleted */
};

struct fake_hv {
  struct nc_hv base; /* first: the manager is given &base */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  struct fake_proc procs[FAKE_HV_PROCS_MAX];
  int nprocs;
  int next_pid;

  /* ---- switches (set under mu, or before the manager runs) ---- */
  int launch_rc;              /* launch() fails with this when not 0 */
  const char *launch_log;     /* written to <run_dir>/qemu.log on a failed launch */
  enum nc_hv_state launch_state; /* state right after launch (default RUNNING) */
  int pause_rc, resume_rc, reboot_rc, shutdown_rc, snapshot_rc;
  bool gate;                  /* launch() blocks until the gate opens */
  /* machines(): fails with machines_rc when set, else gives machines, or
   * -ENOTSUP (a driver without machine types) when that is NULL. */
  const struct nc_hv_machines *machines;
  int machines_rc;

  /* ---- observations ---- */
  int launching;              /* launch() calls waiting at the gate */
  int launches, adopts, kills, shutdowns, releases, pauses, resumes, reboots;
  int snap_saves, snap_loads, snap_deletes;
  int last_shutdown_timeout_ms;
  int handles;                /* live handles: launch/adopt minus kill/release */
};

void fake_hv_init(struct fake_hv *f);
void fake_hv_destroy(struct fake_hv *f);

/* The process for VM name, or NULL. The pointer stays valid until destroy;
 * read its fields under f->mu (or when nothing else runs). */
struct fake_proc *fake_hv_proc(struct fake_hv *f, const char *name);
/* Changes a live process' state, e.g. NC_HV_GONE ("it crashed") or
 * NC_HV_SHUTDOWN ("the guest powered off"). */
void fake_hv_set_state(struct fake_hv *f, const char *name, enum nc_hv_state st);
enum nc_hv_state fake_hv_state(struct fake_hv *f, const char *name);
/* Gate control for launch(). */
void fake_hv_close_gate(struct fake_hv *f);
void fake_hv_open_gate(struct fake_hv *f);
/* Waits until n launch() calls sit at the gate; false after timeout_ms. */
bool fake_hv_wait_launching(struct fake_hv *f, int n, int timeout_ms);
/* Reads a counter under the lock. */
int fake_hv_count(struct fake_hv *f, const int *counter);

#endif
