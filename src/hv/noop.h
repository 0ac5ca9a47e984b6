/* The noop hypervisor driver: struct nc_hv_ops with no hypervisor behind
 * it. No guest ever runs. It exists so that many novacrond processes can
 * run on one machine for control-plane benchmarks and simulations
 * (bench/controlplane), where QEMU's cost would drown what is measured.
 * Selected with `hypervisor = noop` (boot/config.h); never use it on a
 * real host.
 *
 * Semantics, beyond hv.h:
 * - Instances live only in the driver's memory, keyed by spec->run_dir.
 *   Nothing is written to the run dir and nothing outlives the process:
 *   after a daemon restart adopt() finds nothing (-ESRCH), exactly as if
 *   every guest had died with the host.
 * - launch: NC_E_INVALID for a spec without name or run_dir, or with 0
 *   vCPUs or 0 bytes of memory; -EEXIST if an instance is live in that run
 *   dir. The instance is RUNNING at once (INMIGRATE with incoming =
 *   "defer"; resume() then runs it).
 * - adopt: re-attaches to a live instance of this driver in spec->run_dir
 *   (one released earlier), -ESRCH otherwise.
 * - pause/resume/reboot: move between RUNNING and PAUSED (reboot keeps
 *   the state; a powered-off guest is powered on again). -ESRCH once the
 *   instance is gone.
 * - shutdown(): the instance is gone at once, whatever timeout_ms; query()
 *   then says NC_HV_GONE and the caller calls release(). kill() does the
 *   same and frees the handle.
 * - stats: every counter 0 and pid 0, except memory_bytes (the configured
 *   guest RAM).
 * - snapshots: like QEMU's, they need spec->disk (-ENOTSUP without it);
 *   only the tag is kept. save: -EEXIST if the tag exists; load/delete:
 *   -ENOENT if it does not.
 * - Thread-safe: the driver and every handle share one mutex.
 * - destroy() frees every instance; release or kill every handle first. */
#ifndef NC_HV_NOOP_H
#define NC_HV_NOOP_H

#include "hv/hv.h"

/* Creates the driver and logs, once, that no guests will run. On success
 * *out is the caller's; free it with (*out)->ops->destroy(*out). */
int nc_hv_noop_new(struct nc_hv **out);

#endif
