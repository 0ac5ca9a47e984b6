/* The QEMU driver: struct nc_hv_ops over real qemu-system-x86_64
 * processes, controlled through QMP (qmp.h), plus qemu-img helpers.
 *
 * Launch builds an argv (never a shell command line):
 *   qemu-system-x86_64 -name guest=<name> -machine <type> -accel tcg|kvm
 *     -m <MiB>M -smp <n> -nodefaults -no-user-config -display none
 *     -no-shutdown -msg timestamp=on -pidfile <run>/qemu.pid
 *     -qmp unix:<run>/qmp.sock,server=on,wait=off
 *     -chardev socket,id=ser0,path=<run>/serial.sock,server=on,wait=off,
 *              logfile=<run>/serial.log,logappend=on
 *     -serial chardev:ser0
 *     [-kernel K [-initrd I] [-append C]]
 *     [-drive file=<disk>,if=virtio,format=qcow2,node-name=disk0]
 *     [-nic user,model=virtio-net-pci] [-incoming defer]
 * <type> is spec->machine, "pc" when NULL. Paths are made absolute first and commas in option values are doubled
 * (QEMU's option syntax). QEMU is started detached (proc.h) with stdin
 * /dev/null and stdout+stderr in <run>/qemu.log, so it outlives novacrond.
 *
 * Serial console: serial.log receives everything the guest prints whether
 * or not anyone is connected to serial.sock (measured on QEMU 10.0). A
 * client that connects must keep reading: while it is connected and not
 * reading, the socket fills after ~280 one-byte writes and the guest's
 * UART stalls (and serial.log with it). The log is truncated at launch;
 * QEMU appends to it (logappend=on), so the VM manager can cap it
 * (serial.log.1 keeps the newest half, util/logcap.h).
 *
 * A VM handle is not thread-safe: use one from one thread at a time. */
#ifndef NC_HV_QEMU_H
#define NC_HV_QEMU_H

#include <sys/types.h>

#include "hv/hv.h"

struct nc_qmp;

struct nc_hv_qemu_config {
  const char *qemu_path;     /* "qemu-system-x86_64" (PATH) or a path; NULL: that */
  const char *qemu_img_path; /* "qemu-img" or a path; NULL: that */
  int launch_timeout_ms;     /* launch until QMP answers; 0: 15000 */
  int qmp_timeout_ms;        /* one ordinary QMP command; 0: 10000 */
};

/* Creates the driver. cfg's strings are copied. -ENOENT (with a log line)
 * when the QEMU binary cannot be found. On success *out is the caller's;
 * free it with (*out)->ops->destroy(*out). */
int nc_hv_qemu_new(const struct nc_hv_qemu_config *cfg, struct nc_hv **out);

/* Driver semantics, beyond hv.h:
 * - launch: -EEXIST if a live QEMU already runs in spec->run_dir; stale
 *   sockets and pid file are removed. NC_E_INVALID for a bad spec,
 *   -ENAMETOOLONG if <run_dir>/serial.sock does not fit a unix socket
 *   path. If QEMU exits during start-up, NC_E_HV and the tail of
 *   qemu.log is logged; on timeout the process is killed (-ETIMEDOUT).
 * - adopt: only spec->run_dir (and spec->name, for logs) are used. The pid
 *   from qemu.pid must be alive and its command line must carry this run
 *   dir's QMP socket, so a recycled pid is never taken for our QEMU.
 * - kill() frees the handle, whatever it returns. shutdown() does not:
 *   afterwards query() says NC_HV_GONE and the caller calls release().
 *   Both remove qmp.sock, serial.sock and qemu.pid once the process is
 *   gone and leave serial.log and qemu.log for the post-mortem.
 * - snapshots need spec->disk (the qcow2 node "disk0", which also holds
 *   the vmstate): -ENOTSUP without it. save: -EEXIST if the tag exists;
 *   load/delete: -ENOENT if it does not. A failed job is NC_E_HV and its
 *   text is in nc_hv_qemu_vm_last_error(). A load that fails after QEMU
 *   started reading the state leaves the guest stopped (QEMU's run state
 *   "restore-vm", reported as NC_HV_OTHER), because resuming a half-
 *   restored guest would run garbage.
 * - machines: `-machine help`, run once when the driver is created and
 *   cached for its life; a failure is logged and asked again at most
 *   every 30 s.
 * - stats: net_rx/tx_bytes stay 0. QEMU keeps no byte counters for a
 *   user-mode (slirp) netdev and virtio-net exposes none over QMP
 *   (query-rx-filter has filters only; query-stats covers vm/vcpu). */

/* The VM's QMP connection, borrowed for commands the vtable lacks (e.g.
 * migration). Valid until the handle is released or killed; it may be
 * replaced after a reconnect, so fetch it again after each driver call. */
struct nc_qmp *nc_hv_qemu_vm_qmp(struct nc_hv_vm *vm);
pid_t nc_hv_qemu_vm_pid(const struct nc_hv_vm *vm);
/* Text of the last failure on vm (QEMU's own words when it had any), ""
 * when none. Valid until the next call on vm. */
const char *nc_hv_qemu_vm_last_error(const struct nc_hv_vm *vm);

/* Returns 1 if KVM really boots a guest here, 0 if not. Only tries when
 * /dev/kvm opens read-write: it then starts a throwaway QEMU with -accel
 * kvm booting kernel (+ initrd, may be NULL) with the serial port in a
 * temporary file, and waits up to timeout_ms for expect to appear there.
 * The QEMU is always killed. Returns within timeout_ms + ~1 s.
 * NC_E_INVALID for NULL arguments. */
int nc_hv_qemu_probe_kvm(const char *qemu, const char *kernel, const char *initrd,
                         const char *expect, int timeout_ms);

/* Runs `<qemu_path> --version` (5 s limit) and parses "version X.Y".
 * NC_E_PROTO if the output has no version. */
int nc_hv_qemu_version(const char *qemu_path, int *major, int *minor);

struct nc_hv_machines;
/* Runs `<qemu_path> -machine help` (5 s limit) and parses its list
 * (hv/machine.h). NC_E_HV if QEMU exits with an error, NC_E_PROTO or
 * NC_E_TOOBIG for output that is not a list we take. The driver's
 * machines() calls this once and caches the answer. */
int nc_hv_qemu_machines(const char *qemu_path, struct nc_hv_machines *out);

/* Creates overlay as a qcow2 image backed by base (absolute path recorded,
 * base format detected with `qemu-img info`). Base images must never be
 * writable by guests: format detection trusts their header. -EEXIST if
 * overlay exists (qemu-img would silently replace it). Errors carry
 * qemu-img's message in the log. */
int nc_hv_qemu_create_overlay(const char *qemu_img, const char *base, const char *overlay);

/* Copies src, flattened with its whole backing chain, into a new
 * standalone qcow2 image dst (qemu-img convert; internal snapshots are not
 * copied). src must not be in use by a running guest (QEMU's image lock
 * refuses it). -EEXIST if dst exists; a partial dst is removed on failure.
 * Blocks until done: call it off the event loop. */
int nc_hv_qemu_copy_disk(const char *qemu_img, const char *src, const char *dst);

#endif
