/* Hypervisor driver interface.
 *
 * vm/ talks to hypervisors only through this vtable, so a test or a
 * simulation can put a no-op driver in QEMU's place. The QEMU driver
 * (qemu.c) is the real one.
 *
 * A VM's runtime files live in its run directory (spec->run_dir):
 *   qmp.sock     QMP control socket
 *   qemu.pid     QEMU's pid (written by QEMU itself, -pidfile)
 *   serial.sock  serial console (unix socket, connect to attach)
 *   serial.log   everything the guest printed on the serial console
 *   qemu.log     QEMU's own stderr
 * QEMU is spawned detached (own session, reparented to init), so it
 * outlives novacrond; adopt() re-attaches after a daemon restart. */
#ifndef NC_HV_HV_H
#define NC_HV_HV_H

#include <stdbool.h>
#include <stdint.h>

struct nc_hv;
struct nc_hv_vm; /* one running hypervisor instance, opaque */
struct nc_hv_machines; /* hv/machine.h */

enum nc_hv_accel { NC_ACCEL_TCG, NC_ACCEL_KVM };

/* Everything needed to launch a VM. All strings belong to the caller and
 * only need to live for the duration of the call. */
struct nc_hv_spec {
  const char *name;
  const char *run_dir;    /* exists, owned by the caller */
  const char *machine;    /* QEMU machine type ("pc-i440fx-10.0"); NULL: "pc" */
  int vcpus;
  uint64_t memory_bytes;
  const char *kernel;     /* NULL when booting from disk */
  const char *initrd;     /* may be NULL */
  const char *cmdline;    /* may be NULL */
  const char *disk;       /* qcow2 overlay path; may be NULL */
  bool nic_user;          /* user-mode networking NIC */
  enum nc_hv_accel accel;
  const char *incoming;   /* NULL, or "defer": start with -incoming defer; the
                           * guest then stays paused after the migration
                           * completes until resume() */
};

/* Observed state of a hypervisor instance. */
enum nc_hv_state {
  NC_HV_RUNNING,
  NC_HV_PAUSED,
  NC_HV_SHUTDOWN,  /* guest powered off; process still there (-no-shutdown) */
  NC_HV_INMIGRATE, /* waiting for incoming migration */
  NC_HV_OTHER,     /* any other QEMU run state (e.g. finish-migrate, postmigrate) */
  NC_HV_GONE,      /* process no longer exists */
};

struct nc_hv_stats {
  uint64_t cpu_time_ns;       /* user+system CPU of the hypervisor process */
  uint64_t memory_rss_bytes;  /* resident set of the hypervisor process */
  uint64_t memory_bytes;      /* configured guest RAM */
  uint64_t block_rd_bytes, block_wr_bytes;
  uint64_t net_rx_bytes, net_tx_bytes;
  int pid;
};

struct nc_hv_ops {
  int version; /* 1, or 2 with machines() */
  const char *name;
  /* Starts the hypervisor for spec. On success *out is the caller's
   * (release with release() or kill()). The guest may still be booting. */
  int (*launch)(struct nc_hv *hv, const struct nc_hv_spec *spec, struct nc_hv_vm **out);
  /* Re-attaches to an instance left running in spec->run_dir.
   * -ESRCH when no live process is there (stale files are left alone). */
  int (*adopt)(struct nc_hv *hv, const struct nc_hv_spec *spec, struct nc_hv_vm **out);
  int (*query)(struct nc_hv_vm *vm, enum nc_hv_state *state);
  int (*pause)(struct nc_hv_vm *vm);
  int (*resume)(struct nc_hv_vm *vm);
  int (*reboot)(struct nc_hv_vm *vm);
  /* ACPI power-down; waits up to timeout_ms for the guest to power off,
   * then quits QEMU. 0 when the process is gone. */
  int (*shutdown)(struct nc_hv_vm *vm, int timeout_ms);
  /* Ends the process at once (quit, then SIGKILL). Always leaves it gone
   * and frees the handle, whatever it returns. */
  int (*kill)(struct nc_hv_vm *vm);
  int (*stats)(struct nc_hv_vm *vm, struct nc_hv_stats *out);
  /* Internal snapshot (disk + memory) stored in the qcow2 overlay. */
  int (*snapshot_save)(struct nc_hv_vm *vm, const char *tag, int timeout_ms);
  int (*snapshot_load)(struct nc_hv_vm *vm, const char *tag, int timeout_ms);
  int (*snapshot_delete)(struct nc_hv_vm *vm, const char *tag, int timeout_ms);
  /* Frees the handle; the hypervisor process keeps running. Accepts NULL. */
  void (*release)(struct nc_hv_vm *vm);
  void (*destroy)(struct nc_hv *hv);
  /* ---- version >= 2 ---- */
  /* The machine types this hypervisor runs (hv/machine.h). On success *out
   * belongs to the driver and stays unchanged until destroy(); the first
   * call may ask the hypervisor binary (a few ms). -ENOTSUP from a driver
   * without machine types; any other error means it could not tell now
   * and may succeed later. NULL in a driver without them. */
  int (*machines)(struct nc_hv *hv, const struct nc_hv_machines **out);
};

struct nc_hv {
  const struct nc_hv_ops *ops;
};

#endif
