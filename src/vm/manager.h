/* The VM manager: VM records, lifecycle operations and the reconciler.
 *
 * vm/ owns the desired state (what the user asked for) and the observed
 * state (what the hypervisor reports), both recorded in the store under
 * /nc/vms/<name>. Every user action becomes an operation run on its own
 * thread; one operation at a time per VM. A reconciler thread compares the
 * two states every reconcile_interval_ms and records what it sees, so a
 * QEMU that dies behind our back shows up as "failed", not as a stale
 * "running".
 *
 * At start-up the manager re-adopts every VM whose QEMU survived a daemon
 * restart (through its pid file and QMP socket) and never kills one. */
#ifndef NC_VM_MANAGER_H
#define NC_VM_MANAGER_H

#include <jansson.h>
#include <stdbool.h>

#include "hv/hv.h"
#include "store/store.h"
#include "util/clock.h"
#include "util/errinfo.h"
#include "vm/state.h"

struct nc_vmm;
struct nc_ops;
struct nc_events;
struct nc_metrics;

/* Disk operations, a vtable so tests can replace them. */
struct nc_vmm_disk_ops {
  int version; /* 1 */
  void *data;
  /* Creates a copy-on-write overlay at overlay over base. */
  int (*create_overlay)(void *data, const char *base, const char *overlay);
};

struct nc_vmm_config {
  const char *data_dir;  /* VM files go to <data_dir>/vms/<name>/ */
  const char *node_name;
  struct nc_store *store;
  struct nc_hv *hv;
  struct nc_vmm_disk_ops disk;
  struct nc_clock *clock;
  struct nc_rand *rand;
  struct nc_metrics *metrics; /* may be NULL */
  struct nc_events *events;
  struct nc_ops *ops;
  enum nc_hv_accel accel;
  int reconcile_interval_ms; /* default 1000 */
  int stop_timeout_ms;       /* default 30000: ACPI grace before quit */
  int max_running_ops;       /* default 32 */
  /* Shown in the node summary as "dwcp": {"tls", "fingerprint"} (the SHA-256
   * of this node's DWCP certificate, which peers pin); NULL: left out. */
  const char *dwcp_tls;
  const char *dwcp_fingerprint;
};

/* The config's pointers must outlive the manager. */
int nc_vmm_new(const struct nc_vmm_config *cfg, struct nc_vmm **out);
/* Loads VM records, re-adopts surviving QEMUs, starts the reconciler. */
int nc_vmm_start(struct nc_vmm *vmm);
/* Stops the reconciler, waits for running operations to end (they are
 * asked to cancel), releases hypervisor handles. VMs keep running.
 * Accepts NULL. */
void nc_vmm_free(struct nc_vmm *vmm);

void nc_vmm_set_accel(struct nc_vmm *vmm, enum nc_hv_accel accel);

/* Each returns 0 with a new JSON reference in *out, or a negative code with
 * err filled for the user. Create pins the VM's machine type: the
 * versioned type the requested one ("pc" by default) is on this node's
 * hypervisor (ops->machines, asked once per daemon), "pc" unpinned with a
 * warning when it cannot be asked; 422 on "machine" for a type it lacks. */
int nc_vmm_create(struct nc_vmm *vmm, json_t *req, json_t **out, struct nc_errinfo *err);
int nc_vmm_get(struct nc_vmm *vmm, const char *name, json_t **out, struct nc_errinfo *err);
json_t *nc_vmm_list(struct nc_vmm *vmm);
/* The same list rendered as JSON text (with a trailing newline), served
 * from a cache until a VM changes. On success *text is malloc'd and the
 * caller's. */
int nc_vmm_list_text(struct nc_vmm *vmm, char **text, size_t *len);
/* action: start stop pause resume reboot delete (anything else is 404:
 * snapshots and clones have their own calls); body may be NULL. *out is
 * {"operation": OP}. */
int nc_vmm_action(struct nc_vmm *vmm, const char *name, enum nc_vm_action action, json_t *body,
                  json_t **out, struct nc_errinfo *err);
int nc_vmm_snapshot_list(struct nc_vmm *vmm, const char *name, json_t **out,
                         struct nc_errinfo *err);
int nc_vmm_snapshot_create(struct nc_vmm *vmm, const char *name, json_t *body, json_t **out,
                           struct nc_errinfo *err);
int nc_vmm_snapshot_restore(struct nc_vmm *vmm, const char *name, const char *snap,
                            json_t **out, struct nc_errinfo *err);
int nc_vmm_snapshot_delete(struct nc_vmm *vmm, const char *name, const char *snap,
                           json_t **out, struct nc_errinfo *err);
int nc_vmm_clone(struct nc_vmm *vmm, const char *name, json_t *body, json_t **out,
                 struct nc_errinfo *err);
/* Path of the serial log of a VM (for the console tail route). */
int nc_vmm_console_log_path(struct nc_vmm *vmm, const char *name, char *out, size_t len,
                            struct nc_errinfo *err);
/* The image registered on this node under name (vm/image.h): 0, -ENOENT
 * when there is none, or the store's error. */
struct nc_image;
int nc_vmm_image_get(struct nc_vmm *vmm, const char *name, struct nc_image *out);
/* Node summary: capacity, allocation, VMs by state, DWCP identity. New
 * reference. */
json_t *nc_vmm_node_json(struct nc_vmm *vmm);

/* ---- external operations ------------------------------------------------
 * A subsystem above vm/ (migrate/) runs a long operation on a VM with
 * these calls: it takes the VM (busy with one operation, like any other),
 * drives its hypervisor under the VM's lock, records states, and finishes.
 * All calls on one handle come from one thread. */
struct nc_vmm_ext;
struct nc_op;
struct nc_hv_vm;

enum nc_vmm_ext_end {
  NC_EXT_KEEP,   /* the VM stays on this node */
  NC_EXT_REMOVE, /* kill its hypervisor, delete its files and record */
};

/* Takes an existing VM for action (NC_ACT_MIGRATE). *out is {"operation":
 * OP} for the API. */
int nc_vmm_ext_begin(struct nc_vmm *vmm, const char *name, enum nc_vm_action action,
                     const char *kind, bool cancellable, struct nc_vmm_ext **x, json_t **out,
                     struct nc_errinfo *err);
/* Defines a VM arriving by migration from its stored spec (as in
 * nc_vmm_ext_spec), records it as migrating, prepares its disk overlay and
 * launches its hypervisor, with the spec's machine type, waiting for the
 * incoming stream (paused until resumed). 409 if the name exists, 422 if
 * the image is not registered, 409 machine_unsupported (field vm.machine)
 * if this node's QEMU lacks the machine type; all before anything is
 * created. */
int nc_vmm_ext_incoming(struct nc_vmm *vmm, json_t *spec, const char *kind,
                        struct nc_vmm_ext **x, struct nc_errinfo *err);
struct nc_op *nc_vmm_ext_op(struct nc_vmm_ext *x);
const char *nc_vmm_ext_name(struct nc_vmm_ext *x);
const char *nc_vmm_ext_run_dir(struct nc_vmm_ext *x);
/* The VM's stored spec (new reference). */
json_t *nc_vmm_ext_spec(struct nc_vmm_ext *x);
/* Runs fn with the VM's hypervisor handle (NULL if none) under its lock. */
int nc_vmm_ext_with_hv(struct nc_vmm_ext *x, int (*fn)(struct nc_hv_vm *hv, void *arg),
                       void *arg);
/* Records a state (through the lifecycle table) with a reason. */
int nc_vmm_ext_set_state(struct nc_vmm_ext *x, enum nc_vm_state state, const char *reason);
/* Ends the operation with rc/err and frees x. */
void nc_vmm_ext_finish(struct nc_vmm_ext *x, int rc, const struct nc_errinfo *err,
                       enum nc_vmm_ext_end end);

#endif
