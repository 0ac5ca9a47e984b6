/* The VM lifecycle state machine.
 *
 *   defined ──start──▶ starting ──▶ running ◀──resume── paused
 *                          │          │  └────pause────▶ │
 *                          ▼          ▼                  ▼
 *                        failed    stopping ──▶ stopped ─┘(start)
 *
 * "migrating" is entered from running/paused by the migration issue.
 * "failed" is entered from any state when the hypervisor process vanishes
 * without being asked to, or an operation fails half-way; start leaves it.
 * Every transition outside this table is refused, so the recorded history
 * can always be replayed. */
#ifndef NC_VM_STATE_H
#define NC_VM_STATE_H

#include <stdbool.h>

enum nc_vm_state {
  NC_VM_DEFINED,
  NC_VM_STARTING,
  NC_VM_RUNNING,
  NC_VM_PAUSED,
  NC_VM_STOPPING,
  NC_VM_STOPPED,
  NC_VM_MIGRATING,
  NC_VM_FAILED,
  NC_VM__COUNT
};

enum nc_vm_action {
  NC_ACT_START,
  NC_ACT_STOP,
  NC_ACT_PAUSE,
  NC_ACT_RESUME,
  NC_ACT_REBOOT,
  NC_ACT_DELETE,
  NC_ACT_SNAPSHOT,
  NC_ACT_RESTORE,
  NC_ACT_CLONE,
  NC_ACT_SNAPSHOT_DELETE,
  NC_ACT_MIGRATE,
  NC_ACT__COUNT
};

const char *nc_vm_state_name(enum nc_vm_state s);
/* -EINVAL for unknown names. */
int nc_vm_state_parse(const char *name, enum nc_vm_state *out);
const char *nc_vm_action_name(enum nc_vm_action a);
int nc_vm_action_parse(const char *name, enum nc_vm_action *out);

/* true when the lifecycle allows moving from one state to the other. */
bool nc_vm_transition_valid(enum nc_vm_state from, enum nc_vm_state to);
/* true when action may be requested while the VM is in state s. */
bool nc_vm_action_allowed(enum nc_vm_action a, enum nc_vm_state s);
/* A hint for the user when an action is refused in state s, e.g.
 * "vm is stopped; start it first". Static string. */
const char *nc_vm_action_hint(enum nc_vm_action a, enum nc_vm_state s);
/* true for states in which a hypervisor process is expected to exist. */
bool nc_vm_state_has_process(enum nc_vm_state s);

#endif
